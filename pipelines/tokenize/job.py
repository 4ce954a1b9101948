"""The tokenize stage: train (or load) the tokenizer, then turn the clean corpus into token shards.

    python -m pipelines.tokenize --config configs/tiny.yaml
    raychat tokenize --input runs/tiny/data/clean --output runs/tiny --tokenizer train
    raychat tokenize --output runs/gpt2 --tokenizer gpt2:../shared/data/tokenizers/gpt2

1. The tokenizer: ``tokenize.tokenizer: train`` trains our byte-level BPE (lm/bpe.py) on a hash-chosen
   sample of the train split; any other value is loaded with ``lm.tokenizer.load_tokenizer``. Either
   way it is saved to ``<run>/tokenizer/`` so the run is self-contained.
2. One Ray task per parquet file (pipelines/tokenize/encode.py) reads it once, encodes its rows with
   tiktoken (``encode_to_numpy`` per document: no Python list of ints per token; threads when there
   are fewer files than CPUs), puts ``<|endoftext|>`` before every document, sends each document to
   train or val by a hash of its id, writes each batch's tokens as one part file per split, and
   writes the file again with ``token_count`` filled (same columns, compression and row groups).
3. The driver concatenates the parts, in an order fixed by their content, into fixed-size shards and
   writes ``<run>/tokens/index.json`` (pipelines/tokenize/shards.py), checks that rows, documents and
   tokens add up (``token_count`` in the rewritten files included), and swaps the new ``tokens/`` and
   ``data/clean/`` in place of the old ones.

Everything is written to temporary folders first and renamed at the end, so a rerun or a killed run
never leaves duplicated rows or half an output.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from lm import atomic
from lm.bpe import train_bpe
from lm.tokenizer import (
    DEFAULT_PATTERN,
    META_FILE,
    RANKS_FILE,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
)
from pipelines import storage
from pipelines.errors import ConfigError, StageFailed
from pipelines.run_dir import MetricsWriter, RunDir
from pipelines.runtime import Progress, init_ray
from pipelines.tokenize.config import TokenizeConfig
from pipelines.tokenize.encode import (
    UNREADABLE,
    EncodeSettings,
    add_stats,
    document_key,
    is_val_bytes,
    new_stats,
    tokenize_file,
    unreadable,
    utf8,
)
from pipelines.tokenize.report import HIST_EDGES, histogram_file, report_section
from pipelines.tokenize.shards import SPLITS, ShardWriter, TokenIndex, merge_parts, token_dtype, write_index

if TYPE_CHECKING:
    from pipelines.config import RunConfig

log = logging.getLogger("raychat")
# the numbers the console shows when the stage ends (pipelines/console.py)
HEADLINE = ("vocab_size", "tokens", "bytes_per_token", "tokens_per_second")
# the stage's interface (pipelines/stages.py)
__all__ = ["add_cli_args", "cli_overrides", "report_section", "run"]


# -- CLI ------------------------------------------------------------------------------------------


def summary_line(n: dict[str, Any]) -> str:
    return (
        f"{n['tokens']:,} tokens with a {n['vocab_size']:,}-token vocabulary "
        f"({n['bytes_per_token']:.2f} bytes per token)"
    )


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", help="clean parquet folder (default: <run>/data/clean)")
    parser.add_argument("--output", help="run directory to write tokenizer/ and tokens/ into (= --run-dir)")
    parser.add_argument(
        "--tokenizer", help="train | gpt2:<dir> | tiktoken:<file> | a tokenizer or model directory"
    )
    parser.add_argument(
        "--vocab-size", type=int, help="vocabulary of a trained tokenizer (specials included)"
    )


def cli_overrides(args: argparse.Namespace) -> list[str]:
    # values are JSON strings, which YAML reads back verbatim (paths with ':' or spaces stay strings)
    out = []
    if args.input is not None:  # '' is refused, not the default <run>/data/clean
        out.append(f"tokenize.input={json.dumps(args.input)}")
    if args.output is not None:  # '' is refused, not the default runs/tiny
        out.append(f"run_dir={json.dumps(args.output)}")
    if args.tokenizer:
        out.append(f"tokenize.tokenizer={json.dumps(args.tokenizer)}")
    if args.vocab_size is not None:
        out.append(f"tokenize.vocab_size={args.vocab_size}")
    return out


# -- the split and the training sample -----------------------------------------------------------

_U64 = 2**64


def is_val(key: str, seed: int, val_fraction: float) -> bool:
    """Deterministic train/val assignment: the same id lands in the same split on every run and node."""
    return is_val_bytes(utf8(key), seed, val_fraction)


def _in_sample(key: str, seed: int, fraction: float) -> bool:
    return xxhash.xxh64_intdigest(b"sample\0" + utf8(key), seed=seed % _U64) < fraction * _U64


def parquet_files(directory: Path) -> list[Path]:
    """Parquet files under ``directory`` in a stable order (hidden and temporary files skipped)."""
    return sorted(
        p
        for p in directory.rglob("*.parquet")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
    )


def hive_partition_columns(directory: Path) -> list[str]:
    """The ``key=value`` folder levels under ``directory`` (e.g. ``language=en/`` -> ["language"])."""
    cols: list[str] = []
    level = directory
    while True:
        subdirs = sorted(
            p for p in level.iterdir() if p.is_dir() and "=" in p.name and not p.name.startswith(".")
        )
        if not subdirs:
            return cols
        cols.append(subdirs[0].name.split("=", 1)[0])
        level = subdirs[0]


# BPE training time grows with the square of a pre-token's length: one document of 2,000,000 letters
# took about 25 minutes (200,000: 14 s), in Rust, where no signal stops it. Runs without white space
# are cut to this length in the training sample only; encoding reads every text whole.
MAX_TRAINING_RUN = 1000
_LONG_RUN = re.compile(rf"\S{{{MAX_TRAINING_RUN + 1},}}")


def training_sample(files: list[Path], tc: TokenizeConfig) -> Iterator[str]:
    """Texts to train the tokenizer on: train-split documents picked by a hash (so the sample is
    spread over the whole corpus and the same on every run), until the document or byte cap."""
    total_rows = _input_rows(files, tc)
    expected_train = max(1.0, total_rows * (1 - tc.val_fraction))
    fraction = 1.0 if tc.train_max_documents is None else min(1.0, tc.train_max_documents / expected_train)
    max_docs = tc.train_max_documents or total_rows
    max_bytes = tc.train_max_bytes or float("inf")
    docs = nbytes = 0
    progress = Progress("tokenizer training sample", min(max_docs, total_rows), unit="docs")
    for f in files:
        for batch in _text_batches(f, tc):
            try:
                texts = batch.column(tc.text_column).to_pylist()
            except UnicodeDecodeError as e:  # string data that is not UTF-8
                raise unreadable(f, e) from None
            has_ids = tc.id_column in batch.schema.names
            ids = batch.column(tc.id_column).to_pylist() if has_ids else [None] * len(texts)
            picked = 0
            for doc_id, text in zip(ids, texts, strict=True):
                if not text:
                    continue
                key = document_key(doc_id, text)
                if is_val(key, tc.seed, tc.val_fraction) or not _in_sample(key, tc.seed, fraction):
                    continue
                yield _LONG_RUN.sub(lambda m: m.group(0)[:MAX_TRAINING_RUN], text)
                picked += 1
                docs += 1
                nbytes += len(utf8(text))
                if docs >= max_docs or nbytes >= max_bytes:
                    progress.update(picked, f"{nbytes / 1e6:.1f} MB")
                    return
            progress.update(picked, f"{nbytes / 1e6:.1f} MB")


def _text_batches(f: Path, tc: TokenizeConfig) -> Iterator[pa.RecordBatch]:
    """The text (and id) column of one file, 4,096 rows at a time; a page that does not decode is
    one line naming the file (the column's presence was checked with the footers)."""
    try:
        with pq.ParquetFile(f) as pf:
            columns = [c for c in (tc.text_column, tc.id_column) if c in pf.schema_arrow.names]
            yield from pf.iter_batches(batch_size=4096, columns=columns)
    except UNREADABLE as e:
        raise unreadable(f, e) from None


def prepare_tokenizer(tc: TokenizeConfig, files: list[Path], into: Path) -> Tokenizer:
    """Train or load the tokenizer and save it to ``into``: the staged folder that replaces
    ``<run>/tokenizer`` together with the token shards, so a run that fails later leaves the old
    tokenizer beside the old shards (a new one beside old shards made pretraining export a model whose
    tokenizer had ids its embedding lacked)."""
    if tc.tokenizer == "train":
        pattern = tc.pattern or DEFAULT_PATTERN
        log.info("training a byte-level BPE tokenizer, vocab_size=%d, pattern=%s", tc.vocab_size, pattern)
        tok = train_bpe(
            training_sample(files, tc),
            vocab_size=tc.vocab_size,
            pattern=pattern,
            min_frequency=tc.min_frequency,
            show_progress=False,
        )
        if tok.vocab_size < tc.vocab_size:
            # expected on a small corpus (the tiny world's): said once, on the console, not as a warning
            log.info(
                "tokenize: the corpus has no more pairs seen %d times: vocabulary is %d, not %d",
                tc.min_frequency,
                tok.vocab_size,
                tc.vocab_size,
                extra={"console": True},
            )
    else:
        try:
            tok = load_tokenizer(tc.tokenizer, pattern=tc.pattern)
        except TokenizerError as e:  # a wrong path or file is the config's fault: say which key
            raise ConfigError(f"tokenize.tokenizer: {e}") from None
    tok.save(into)
    log.info("tokenizer %s (%d ids) prepared", tok.name, tok.vocab_size)
    return tok


def tokenizer_fingerprint(directory: Path) -> str:
    h = hashlib.sha256()
    for name in (META_FILE, RANKS_FILE):
        h.update((directory / name).read_bytes())
    return h.hexdigest()[:16]


# -- the stage ----------------------------------------------------------------------------------


def _resolve_input(tc: TokenizeConfig, run: RunDir) -> Path:
    input_dir = Path(tc.input) if tc.input else run.clean
    if not input_dir.is_dir():
        raise ConfigError(
            f"tokenize: no clean parquet folder at {input_dir}: run the clean stage first or pass "
            "--input (tokenize.input)"
        )
    inside = input_dir.resolve() != run.clean.resolve() and input_dir.resolve().is_relative_to(
        run.clean.resolve()
    )
    if tc.write_clean and inside:
        raise ConfigError(
            f"tokenize.input {input_dir} is a part of {run.clean}: rewriting the clean parquet from it would "
            "drop the rest; tokenize the whole folder or set tokenize.write_clean=false"
        )
    return input_dir


def preflight(cfg: RunConfig, name: str = "tokenize") -> None:
    """The input folder and a tokenizer to load (not one to train), before Ray starts."""
    tc = getattr(cfg, name)
    _resolve_input(tc, RunDir(cfg.run_dir))
    if tc.tokenizer != "train":
        from lm.tokenizer import TokenizerError, load_tokenizer

        try:
            load_tokenizer(tc.tokenizer, pattern=tc.pattern)
        except TokenizerError as e:  # the same words as when it is loaded for the run
            raise ConfigError(f"tokenize.tokenizer: {e}") from None


def run(cfg: RunConfig, name: str = "tokenize") -> dict[str, Any]:
    tc: TokenizeConfig = getattr(cfg, name)
    run_dir = RunDir(cfg.run_dir)
    for target in (run_dir.clean, run_dir.tokens, run_dir.tokenizer):  # a swap cut short by a kill
        if atomic.recover_dir(target):
            log.warning("restored %s from an interrupted earlier run", target)
    input_dir = _resolve_input(tc, run_dir)
    files = parquet_files(input_dir)
    if not files:
        raise ConfigError(f"tokenize: no .parquet files under {input_dir}")
    partition_cols = hive_partition_columns(input_dir)
    input_rows = _input_rows(files, tc)
    log.info(
        "tokenize: %d parquet files, %d rows, partitioned by %s",
        len(files),
        input_rows,
        partition_cols or "-",
    )

    parts = atomic.fresh_dir(run_dir.scratch(name, "parts"))
    with contextlib.ExitStack() as swaps:  # the new outputs replace the old ones only if all went well
        new_tokenizer = swaps.enter_context(atomic.staged_dir(run_dir.tokenizer))  # replaced last
        started = time.time()
        tok = prepare_tokenizer(tc, files, new_tokenizer)
        tokenizer_seconds = time.time() - started
        dtype = token_dtype(tok.vocab_size)
        new_tokens = swaps.enter_context(atomic.staged_dir(run_dir.tokens))
        new_clean = swaps.enter_context(atomic.staged_dir(run_dir.clean)) if tc.write_clean else None
        if new_clean is not None and tc.input and Path(tc.input).resolve() != run_dir.clean.resolve():
            log.warning("%s will be replaced by the tokenized copy of %s", run_dir.clean, tc.input)
        encode_started = time.time()
        stats = _encode_files(tc, cfg, input_dir, files, input_rows, new_tokenizer, parts, dtype, new_clean)
        ray_seconds = time.time() - encode_started
        index = _assemble(parts, new_tokens, tok, dtype, tc, run_dir)
        encode_seconds = time.time() - encode_started
        log.info(
            "tokenize: encode pass %.1fs, shard assembly %.1fs", ray_seconds, encode_seconds - ray_seconds
        )
        _check_counts(stats, index, input_rows, new_clean)
    shutil.rmtree(run_dir.scratch(name), ignore_errors=True)

    numbers = _headline(tok, index, stats, encode_seconds, tokenizer_seconds)
    storage.write_json(
        str(histogram_file(run_dir, name)), {"edges": HIST_EDGES[:-1].tolist(), "counts": stats["hist"]}
    )
    MetricsWriter(run_dir, name).write({"time": time.time(), **numbers})
    return numbers


def _input_rows(files: list[Path], tc: TokenizeConfig) -> int:
    """Rows of every input file, from the footers: a file that is not parquet, or lacks the text
    column, stops the stage here with one line naming it, before Ray starts and before any output."""
    rows = 0
    for f in files:
        try:
            with pq.ParquetFile(f) as pf:
                rows += pf.metadata.num_rows
                schema = pf.schema_arrow
        except UNREADABLE as e:
            raise unreadable(f, e) from None
        if tc.text_column not in schema.names:
            raise ConfigError(
                f"tokenize: {f} has no column {tc.text_column!r} (tokenize.text_column); columns: {schema.names}"
            )
        kind = schema.field(tc.text_column).type
        if pa.types.is_dictionary(kind):  # a pandas categorical: its values are what counts
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
            raise ConfigError(  # bytes reached str methods in a Ray task: a traceback
                f"tokenize: column {tc.text_column!r} of {f} is {kind}, not text; the clean stage writes text "
                "(it decodes a binary column's bytes, charset detected): clean it first"
            )
    return rows


def _encode_files(
    tc: TokenizeConfig,
    cfg: RunConfig,
    input_dir: Path,
    files: list[Path],
    input_rows: int,
    tokenizer_dir: Path,
    parts: Path,
    dtype: str,
    new_clean: Path | None,
) -> dict[str, Any]:
    """One Ray task per file (encode.tokenize_file); returns the summed stats of every file.

    With fewer files than CPUs, each task encodes on several threads (tiktoken drops the GIL) and
    asks Ray for that many CPUs, at most one node's: a small corpus in one file still uses the
    machine, with one worker process instead of one per CPU.
    """
    import ray

    init_ray(cfg.ray)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    node_cpus = max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]), default=1)
    threads = tc.num_threads or max(1, min(node_cpus, cpus // len(files)))
    settings = EncodeSettings(
        tokenizer_dir=str(tokenizer_dir.resolve()),
        fingerprint=tokenizer_fingerprint(tokenizer_dir),
        parts_dir=str(parts.resolve()),
        text_column=tc.text_column,
        id_column=tc.id_column,
        val_fraction=tc.val_fraction,
        seed=tc.seed,
        dtype=dtype,
        batch_size=tc.batch_size,
        num_threads=threads,
    )
    # never more CPUs than a node has: Ray would wait forever for such a node
    task = ray.remote(tokenize_file).options(num_cpus=min(threads, node_cpus), max_retries=2)
    shared = ray.put(settings)
    clean_out = str(new_clean.resolve()) if new_clean is not None else None
    pending = {task.remote(str(f), f.relative_to(input_dir).as_posix(), clean_out, shared): f for f in files}
    total = new_stats()
    progress = Progress("tokenizing", input_rows, unit="docs")
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.pop(done[0])
            one = ray.get(done[0])
            add_stats(total, one)
            progress.update(one["rows"], f"{total['text_bytes'] / 1e6:,.0f} MB")
    except ray.exceptions.RayTaskError as e:  # a file that cannot be read is the input's fault: one line
        if isinstance(e.cause, ConfigError):
            raise e.cause from None
        raise
    finally:
        for ref in pending:
            ray.cancel(ref)
    return total


def _assemble(
    parts: Path, out: Path, tok: Tokenizer, dtype: str, tc: TokenizeConfig, run: RunDir
) -> TokenIndex:
    """Merge each split's parts into fixed-size shards in document-hash order (see shards.py)."""
    splits = {}
    for split in SPLITS:
        writer = ShardWriter(out, split, dtype, tc.shard_tokens, tok.eot_id)
        docs = merge_parts(parts / split, writer, memory_bytes=tc.merge_memory_mb * 1024 * 1024)
        splits[split] = writer.close()
        log.info(
            "tokenize: %s split: %d documents, %d tokens, %d shards",
            split,
            docs,
            splits[split].tokens,
            len(splits[split].shards),
        )
    index = TokenIndex(
        dtype=dtype,
        vocab_size=tok.vocab_size,
        eot_id=tok.eot_id,
        tokenizer=os.path.relpath(run.tokenizer, run.tokens),
        splits=splits,
    )
    write_index(out, index)
    return index


def _check_counts(stats: dict[str, Any], index: TokenIndex, input_rows: int, new_clean: Path | None) -> None:
    """Every input row was encoded exactly once and every token landed in a shard, or we stop."""
    problems = []
    if stats.get("rows", 0) != input_rows:
        problems.append(f"encoded {stats.get('rows', 0)} rows but the input has {input_rows}")
    for split in SPLITS:
        info = index.splits[split]
        if info.documents != stats.get(f"documents_{split}", 0) or info.tokens != stats.get(
            f"tokens_{split}", 0
        ):
            problems.append(
                f"{split}: shards hold {info.documents} documents / {info.tokens} tokens, batches reported "
                f"{stats.get(f'documents_{split}', 0)} / {stats.get(f'tokens_{split}', 0)}"
            )
    if new_clean is not None:
        counts = pa.concat_arrays(
            [
                pq.read_table(f, columns=["token_count"]).column(0).combine_chunks()
                for f in parquet_files(new_clean)
            ]
            or [pa.array([], pa.int64())]
        ).to_numpy(zero_copy_only=False)
        docs = sum(index.splits[s].documents for s in SPLITS)
        tokens = sum(index.splits[s].tokens for s in SPLITS)
        if len(counts) != input_rows:
            problems.append(f"the rewritten clean parquet has {len(counts)} rows, the input {input_rows}")
        if int((counts > 0).sum()) != docs or int(counts.sum()) + docs != tokens:
            problems.append("token_count in the rewritten clean parquet disagrees with the shards")
    if problems:
        raise StageFailed(
            "tokenize: counts do not add up (outputs left unchanged; rerun the stage): " + "; ".join(problems)
        )


def _headline(
    tok: Tokenizer, index: TokenIndex, stats: dict[str, Any], encode_seconds: float, tokenizer_seconds: float
) -> dict[str, Any]:
    train, val = index.splits["train"], index.splits["val"]
    tokens = train.tokens + val.tokens
    documents = train.documents + val.documents
    text_tokens = tokens - documents  # without the <|endoftext|> separators
    return {
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "dtype": index.dtype,
        "documents": documents,
        "documents_train": train.documents,
        "documents_val": val.documents,
        "rows_empty": stats.get("rows_empty", 0),
        "tokens": tokens,
        "tokens_train": train.tokens,
        "tokens_val": val.tokens,
        "shards": len(train.shards) + len(val.shards),
        "text_bytes": stats.get("text_bytes", 0),
        "bytes_per_token": round(stats.get("text_bytes", 0) / text_tokens, 4) if text_tokens else 0.0,
        "tokens_per_second": round(tokens / encode_seconds, 1) if encode_seconds > 0 else 0.0,
        "encode_seconds": round(encode_seconds, 2),
        "tokenizer_seconds": round(tokenizer_seconds, 2),
    }
