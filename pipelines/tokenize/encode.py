"""What one tokenize task does with one clean parquet file: encode it, write its token parts, and
(when the stage rewrites the clean parquet) write the file again with ``token_count`` filled.

No Ray here: the stage (job.py) runs ``tokenize_file`` as a plain Ray task per file, and the
benchmark calls ``encode_batch`` in-process. Why a task per file rather than a Ray Data pipeline:
the file is read once, and the same task that encoded its rows appends their counts and writes it
back (same columns, compression and row groups, under a temporary name then renamed), where a
Ray Data pass sent every text through the object store again, re-blocked the rows and paid for
Ray Data's executor and its actors. On 64 MB of text that was about half of the stage's CPU.

Each batch's tokens (``<|endoftext|>`` + document, per split) become one part file per split,
named by a hash of the batch's documents, so a task that Ray retries rewrites the same files
instead of adding copies; the driver merges the parts into shards (shards.py).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from lm.tokenizer import Tokenizer, load_saved
from pipelines.errors import ConfigError
from pipelines.partitions import HIVE_NULL, dictionary_encode
from pipelines.tokenize.report import HIST_EDGES
from pipelines.tokenize.shards import SPLITS, write_part

_U64 = 2**64
STAT_KEYS = ("rows", "rows_empty", "text_bytes") + tuple(
    f"{what}_{split}" for what in ("documents", "tokens") for split in SPLITS
)


def document_key(doc_id: Any, text: str) -> str:
    """What the split hash reads: the document id, or its text when it has none."""
    return str(doc_id) if doc_id is not None and doc_id != "" else text


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def is_val_bytes(key: bytes, seed: int, val_fraction: float) -> bool:
    return xxhash.xxh64_intdigest(key, seed=seed % _U64) < val_fraction * _U64


@dataclass(frozen=True)
class EncodeSettings:
    """What every task needs besides its file (one object, sent once per task)."""

    tokenizer_dir: str
    fingerprint: str  # of the tokenizer files: a retrained tokenizer at the same path is not served stale
    parts_dir: str
    text_column: str
    id_column: str
    val_fraction: float
    seed: int
    dtype: str
    batch_size: int
    num_threads: int = 1


_TOKENIZERS: dict[tuple[str, str], Tokenizer] = {}


def _worker_tokenizer(settings: EncodeSettings) -> Tokenizer:
    """Loaded once per worker process and kept for the next task."""
    key = (settings.tokenizer_dir, settings.fingerprint)
    tok = _TOKENIZERS.get(key)
    if tok is None:
        tok = _TOKENIZERS[key] = load_saved(settings.tokenizer_dir)
    return tok


def new_stats() -> dict[str, Any]:
    return {**dict.fromkeys(STAT_KEYS, 0), "hist": [0] * (len(HIST_EDGES) - 1)}


def add_stats(total: dict[str, Any], one: dict[str, Any]) -> dict[str, Any]:
    for k in STAT_KEYS:
        total[k] += one[k]
    total["hist"] = [a + b for a, b in zip(total["hist"], one["hist"], strict=True)]
    return total


def encode_batch(table: pa.Table | pa.RecordBatch, settings: EncodeSettings) -> tuple[np.ndarray, dict]:
    """Encode one batch of rows and write its part files; returns (token count per row, stats)."""
    tok = _worker_tokenizer(settings)
    text_column = table.column(settings.text_column)
    texts = [t or "" for t in text_column.to_pylist()]
    has_ids = settings.id_column in table.schema.names
    ids = table.column(settings.id_column).to_pylist() if has_ids else [None] * len(texts)
    encoded = tok.encode_batch_numpy(texts, num_threads=settings.num_threads)
    counts = np.fromiter((e.size for e in encoded), dtype=np.int64, count=len(encoded))

    digest = xxhash.xxh64()
    seed = settings.seed % _U64
    members: dict[str, tuple[list[np.ndarray], list[int]]] = {s: ([], []) for s in SPLITS}
    for doc_id, text, tokens in zip(ids, texts, encoded, strict=True):
        key = utf8(document_key(doc_id, text))
        digest.update(key + b"\0")
        if tokens.size:
            docs, hashes = members["val" if is_val_bytes(key, seed, settings.val_fraction) else "train"]
            docs.append(tokens)
            hashes.append(xxhash.xxh64_intdigest(b"order\0" + key, seed=seed))
    name = f"{digest.hexdigest()}-{len(texts)}"
    stats: dict[str, Any] = {"rows": len(texts), "rows_empty": int((counts == 0).sum())}
    for split, (docs, hashes) in members.items():
        stats[f"documents_{split}"] = len(docs)
        stats[f"tokens_{split}"] = sum(int(d.size) for d in docs) + len(docs)
        if docs:
            write_part(
                Path(settings.parts_dir) / split,
                name,
                docs,
                np.array(hashes, dtype=np.uint64),
                tok.eot_id,
                settings.dtype,
            )
    stats["text_bytes"] = int(pc.sum(pc.binary_length(text_column)).as_py() or 0)
    stats["hist"] = np.histogram(counts[counts > 0], bins=HIST_EDGES)[0].tolist()
    return counts, stats


# -- one file ------------------------------------------------------------------------------------

# what pyarrow raises on a damaged file, and on string data that is not UTF-8 (to_pylist)
UNREADABLE = (OSError, pa.ArrowException, UnicodeDecodeError)


def unreadable(path: str | os.PathLike[str], error: BaseException) -> ConfigError:
    """The one line for an input file that pyarrow cannot read (its footer, or a page)."""
    if isinstance(error, UnicodeDecodeError):  # was a traceback (from a Ray task, 48 lines)
        return ConfigError(
            f"tokenize: {path} holds text that is not valid UTF-8 ({error.reason} at byte {error.start} of a "
            "value); rerun the clean stage on it, which decodes and counts such bytes"
        )
    return ConfigError(
        f"tokenize: {path} could not be read as parquet ({type(error).__name__}: {error}); repair or "
        "remove it, or rerun the clean stage"
    )


_CODECS = {"UNCOMPRESSED": "none", "LZ4_RAW": "lz4", "LZ4": "lz4"}


def hive_values(relative: str) -> dict[str, str | None]:
    """``language=en/x.parquet`` -> {"language": "en"} (values as Arrow's hive partitioning reads them)."""
    values: dict[str, str | None] = {}
    for part in Path(relative).parts[:-1]:
        if "=" in part:
            key, value = part.split("=", 1)
            value = urllib.parse.unquote(value)
            values[key] = None if value == HIVE_NULL else value
    return values


def _compression(meta: pq.FileMetaData, names: list[str]) -> dict[str, str]:
    """Each column's codec as the input file has it (its first row group); the columns the rewrite
    adds take the codec of the file's first column (snappy for a file without row groups)."""
    found: dict[str, str] = {}
    if meta.num_row_groups:
        group = meta.row_group(0)
        for j in range(group.num_columns):
            column = group.column(j)
            codec = _CODECS.get(column.compression, column.compression.lower())
            found.setdefault(column.path_in_schema.split(".", 1)[0], codec)
    default = next(iter(found.values()), "snappy")
    return {name: found.get(name, default) for name in names}


def _with_counts(table: pa.Table, counts: np.ndarray, partition: dict[str, str | None]) -> pa.Table:
    """The rows as the rewritten clean file holds them: a partition column the file lacked is added
    (dictionary-encoded, as the clean stage writes it), then ``token_count`` set or appended."""
    for name, value in partition.items():
        if name not in table.schema.names:
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    table = dictionary_encode(table, list(partition))
    token_count = pa.array(counts, type=pa.int64())
    if "token_count" in table.schema.names:
        return table.set_column(table.schema.get_field_index("token_count"), "token_count", token_count)
    return table.append_column("token_count", token_count)


def tokenize_file(
    path: str, relative: str, clean_out: str | None, settings: EncodeSettings
) -> dict[str, Any]:
    """Encode every row of one parquet file; with ``clean_out``, also write ``<clean_out>/<relative>``:
    the same rows and columns with ``token_count`` filled, one row group per input row group, each
    column compressed as in the input. Returns the file's stats (summed by the driver)."""
    try:
        return _tokenize_file(path, relative, clean_out, settings)
    except UNREADABLE as e:  # a page that does not decode: the file's fault
        raise unreadable(path, e) from None


def _tokenize_file(path: str, relative: str, clean_out: str | None, settings: EncodeSettings) -> dict:
    with pq.ParquetFile(path) as pf:
        return _encode_and_rewrite(pf, relative, clean_out, settings)


def _encode_and_rewrite(
    pf: pq.ParquetFile, relative: str, clean_out: str | None, settings: EncodeSettings
) -> dict[str, Any]:
    stats = new_stats()
    if clean_out is None:  # shards only: read just what encoding needs, a batch at a time
        names = pf.schema_arrow.names
        columns = [c for c in (settings.text_column, settings.id_column) if c in names]
        for batch in pf.iter_batches(batch_size=settings.batch_size, columns=columns):
            add_stats(stats, encode_batch(batch, settings)[1])
        return stats

    target = Path(clean_out) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.tmp")  # a retried task writes the same one
    partition = hive_values(relative)
    writer: pq.ParquetWriter | None = None
    try:
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group)
            counts = []
            for lo in range(0, table.num_rows, settings.batch_size):
                batch_counts, batch_stats = encode_batch(table.slice(lo, settings.batch_size), settings)
                counts.append(batch_counts)
                add_stats(stats, batch_stats)
            table = _with_counts(table, np.concatenate(counts or [np.zeros(0, np.int64)]), partition)
            if writer is None:
                codecs = _compression(pf.metadata, table.schema.names)
                writer = pq.ParquetWriter(partial, table.schema, compression=codecs)
            writer.write_table(table, row_group_size=max(1, table.num_rows))
        if writer is None:  # a file with a schema and no row groups stays one
            empty = _with_counts(pf.schema_arrow.empty_table(), np.zeros(0, np.int64), partition)
            writer = pq.ParquetWriter(partial, empty.schema, compression="snappy")
        writer.close()
        writer = None
        os.replace(partial, target)
    finally:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
    return stats
