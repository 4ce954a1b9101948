"""Token shards: raw little-endian arrays that numpy memory-maps, and the index that lists them.

    <run>/tokens/index.json
    <run>/tokens/train/00000.bin, 00001.bin, ...
    <run>/tokens/val/00000.bin

Every document is ``<|endoftext|>`` followed by its tokens, and the documents of a split are laid end
to end across its shards (a shard may start mid-document); a shard's ``documents`` is the number of
documents that start in it. Documents are ordered by a seeded hash of their id: a deterministic
shuffle, so the same documents give byte-identical shards however the corpus was split into files,
blocks or tasks. The pretraining reader needs nothing but this module:

    from pipelines.tokenize.shards import read_index, open_split
    index = read_index("runs/tiny/tokens")
    shards = open_split("runs/tiny/tokens", "train")     # list of np.memmap, dtype from the index
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from lm import atomic
from pipelines import storage
from pipelines.runtime import Progress

FORMAT = "raychat-tokens-v1"
INDEX_FILE = "index.json"
SPLITS = ("train", "val")


class ShardInfo(BaseModel):
    file: str = Field(description="path relative to the tokens directory")
    tokens: int
    documents: int


class SplitInfo(BaseModel):
    tokens: int = 0
    documents: int = 0
    shards: list[ShardInfo] = Field(default_factory=list)


class TokenIndex(BaseModel):
    """The index file. Unknown keys are ignored on read, so newer writers stay readable."""

    format: Literal["raychat-tokens-v1"] = FORMAT
    dtype: Literal["uint16", "uint32"]
    vocab_size: int
    eot_id: int
    tokenizer: str = Field(description="the tokenizer directory, relative to the tokens directory")
    splits: dict[str, SplitInfo]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype).newbyteorder("<")


class TokenShardError(ValueError):
    """A tokens directory that is missing, incomplete or inconsistent with its index."""


def token_dtype(vocab_size: int) -> str:
    """uint16 while every id fits (vocabularies up to 65,536), else uint32."""
    if vocab_size <= 2**16:
        return "uint16"
    if vocab_size <= 2**32:
        return "uint32"
    raise ValueError(f"vocabulary of {vocab_size} ids does not fit uint32")


def write_index(tokens_dir: str | os.PathLike[str], index: TokenIndex) -> Path:
    path = Path(tokens_dir) / INDEX_FILE
    storage.write_json(str(path), index.model_dump())
    return path


def read_index(tokens_dir: str | os.PathLike[str], check_files: bool = True) -> TokenIndex:
    """Read and check ``index.json``: counts add up and every shard file has the size it claims."""
    d = Path(tokens_dir)
    path = d / INDEX_FILE
    if not path.is_file():
        raise TokenShardError(f"{path} not found: run the tokenize stage first")
    try:
        index = TokenIndex.model_validate_json(path.read_text())
    except ValueError as e:
        raise TokenShardError(f"{path} is not a valid {FORMAT} index: {e}") from None
    for name, split in index.splits.items():
        if sum(s.tokens for s in split.shards) != split.tokens:
            raise TokenShardError(f"{path}: split {name!r} shard tokens do not add up to {split.tokens}")
        if sum(s.documents for s in split.shards) != split.documents:
            raise TokenShardError(
                f"{path}: split {name!r} shard documents do not add up to {split.documents}"
            )
        if check_files:
            itemsize = index.np_dtype.itemsize
            for s in split.shards:
                f = d / s.file
                size = f.stat().st_size if f.is_file() else None
                if size != s.tokens * itemsize:
                    raise TokenShardError(
                        f"{f}: expected {s.tokens * itemsize} bytes ({s.tokens} tokens), found "
                        f"{'no file' if size is None else f'{size} bytes'}"
                    )
    return index


def open_split(tokens_dir: str | os.PathLike[str], split: str) -> list[np.memmap]:
    """Memory-map every shard of ``split`` (read-only), in order."""
    d = Path(tokens_dir)
    index = read_index(d)
    if split not in index.splits:
        raise TokenShardError(f"{d}: no split {split!r}; splits are {', '.join(index.splits)}")
    return [np.memmap(d / s.file, dtype=index.np_dtype, mode="r") for s in index.splits[split].shards]


class ShardWriter:
    """Appends token arrays to fixed-size shard files of one split.

    Shards are cut at exactly ``shard_tokens`` (documents run on into the next shard), so every
    shard but the last has the same size and a reader can address tokens without the index.
    """

    def __init__(self, tokens_dir: Path, split: str, dtype: str, shard_tokens: int, eot_id: int) -> None:
        self.tokens_dir, self.split = Path(tokens_dir), split
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.shard_tokens, self.eot_id = shard_tokens, eot_id
        self.info = SplitInfo()
        self._file = None
        self._current: ShardInfo | None = None
        (self.tokens_dir / split).mkdir(parents=True, exist_ok=True)

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        while tokens.size:
            if self._current is None or self._current.tokens >= self.shard_tokens:
                self._roll()
            assert self._current is not None and self._file is not None
            room = self.shard_tokens - self._current.tokens
            piece, tokens = tokens[:room], tokens[room:]
            piece.tofile(self._file)
            docs = int(np.count_nonzero(piece == self.eot_id))
            self._current.tokens += int(piece.size)
            self._current.documents += docs
            self.info.tokens += int(piece.size)
            self.info.documents += docs

    def _roll(self) -> None:
        self._close_file()
        rel = f"{self.split}/{len(self.info.shards):05d}.bin"
        self._current = ShardInfo(file=rel, tokens=0, documents=0)
        self.info.shards.append(self._current)
        self._file = open(self.tokens_dir / rel, "wb")  # noqa: SIM115 - closed in _close_file/close

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> SplitInfo:
        self._close_file()
        return self.info


# -- parts: what each encoding task writes, merged into shards by the driver ------------------------

# one row per document of a part, sorted by hash: where its tokens (<|endoftext|> included) lie
PART_INDEX_DTYPE = np.dtype([("hash", "<u8"), ("offset", "<i8"), ("length", "<i8")])


def write_part(
    part_dir: Path, name: str, docs: list[np.ndarray], hashes: np.ndarray, eot_id: int, dtype: str
) -> None:
    """Write one task's documents of one split, sorted by ``hashes``: ``<name>.bin`` (tokens, each
    document after ``<|endoftext|>``) and ``<name>.idx.npy`` (``PART_INDEX_DTYPE``), each written
    under a temporary name and renamed, the index last, so a listed index always has its tokens."""
    order = np.argsort(hashes, kind="stable")
    lengths = np.fromiter((docs[i].size + 1 for i in order), dtype=np.int64, count=len(docs))
    idx = np.empty(len(docs), dtype=PART_INDEX_DTYPE)
    idx["hash"] = hashes[order]
    idx["length"] = lengths
    idx["offset"] = np.cumsum(lengths) - lengths
    eot = np.array([eot_id], dtype=np.uint32)
    flat = np.concatenate([a for i in order for a in (eot, docs[i])]).astype(
        np.dtype(dtype).newbyteorder("<")
    )
    buffer = io.BytesIO()
    np.save(buffer, idx)
    atomic.write_bytes(part_dir / f"{name}.bin", flat.tobytes())
    atomic.write_bytes(part_dir / f"{name}.idx.npy", buffer.getvalue())


def merge_parts(part_dir: Path, writer: ShardWriter, memory_bytes: int = 1 << 30) -> int:
    """Write every document of ``part_dir`` to ``writer`` in hash order; returns the documents.

    Works in hash ranges sized so that one range's tokens fit ``memory_bytes``: each part holds a
    range as one contiguous slice (parts are sorted), so every pass reads each part once with one seek.
    """
    idx_files = sorted(part_dir.glob("*.idx.npy")) if part_dir.is_dir() else []
    if not idx_files:
        return 0
    total_docs = 0
    total_bytes = sum(
        (f.with_name(f.name.removesuffix(".idx.npy") + ".bin")).stat().st_size for f in idx_files
    )
    passes = max(1, -(-2 * total_bytes // memory_bytes))  # slices + merged copy in memory at once
    progress = Progress(f"merging {part_dir.name} parts into shards", passes * len(idx_files), unit="parts")
    for r in range(passes):
        lo, hi = (r << 64) // passes, ((r + 1) << 64) // passes
        slices, hashes, piece, offsets, lengths = [], [], [], [], []
        for f in idx_files:
            idx = np.load(f)
            progress.update()
            a = int(np.searchsorted(idx["hash"], np.uint64(lo), "left"))
            b = len(idx) if r == passes - 1 else int(np.searchsorted(idx["hash"], np.uint64(hi), "left"))
            if a == b:
                continue
            sel = idx[a:b]
            start = int(sel["offset"][0])
            stop = int(sel["offset"][-1] + sel["length"][-1])
            tokens = np.fromfile(
                f.with_name(f.name.removesuffix(".idx.npy") + ".bin"),
                dtype=writer.dtype,
                count=stop - start,
                offset=start * writer.dtype.itemsize,
            )
            if tokens.size != stop - start:
                raise TokenShardError(f"{f}: its tokens file is shorter than its index says")
            piece.append(np.full(len(sel), len(slices), dtype=np.int64))
            slices.append(tokens)
            hashes.append(sel["hash"])
            offsets.append(sel["offset"] - start)
            lengths.append(sel["length"])
        if not slices:
            continue
        h, p, o, n = (np.concatenate(x) for x in (hashes, piece, offsets, lengths))
        order = np.lexsort((p, h))  # by hash; equal hashes (equal ids) by part name
        writer.write(
            np.concatenate(
                [
                    slices[i][a : a + k]
                    for i, a, k in zip(p[order].tolist(), o[order].tolist(), n[order].tolist(), strict=True)
                ]
            )
        )
        total_docs += len(order)
    return total_docs
