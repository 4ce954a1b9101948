"""JSON lines and top-level JSON arrays (gzip, bz2, xz, zstd or plain), read as streams: a line or an
array item is kept only up to a bound, and an array is parsed item by item (ijson), so a file's size
never matters."""

from __future__ import annotations

import codecs
import json
from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

from pipelines import storage
from pipelines.clean.bounded import MAX_JSON_DEPTH, Oversized, TooLarge, json_array_items, number_overflow
from pipelines.clean.config import MiB, ReadConfig
from pipelines.clean.documents import broken, error_row, from_mapping, guarded
from pipelines.decode import BreakGuard, open_decompressed, replacements
from pipelines.inputs import InputFile


def _lines(stream: Any, limit: int) -> Iterator[tuple[bytes | None, int]]:
    """Lines without their newline, and each line's size; a line over ``limit`` comes as (None, size).

    A last line without its newline in a stream that broke (``stream.error``) is not a record: the
    caller reports the break in its place.
    """
    rest = b""
    over = 0  # size so far of a line too long to keep
    while True:
        chunk = stream.read(MiB)
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for line in parts:
            if over:
                yield None, over + len(line)
                over = 0
            elif len(line) > limit:
                yield None, len(line)
            else:
                yield line, len(line)
        if over or len(rest) > limit:
            over += len(rest)
            rest = b""
    if getattr(stream, "error", None) is not None:
        return
    if over:
        yield None, over + len(rest)
    elif rest:
        yield (None if len(rest) > limit else rest), len(rest)


def read_json(
    f: InputFile, compression: str | None, cfg: ReadConfig, from_item: int | None = None
) -> Iterator[dict[str, Any]]:
    """``from_item``: read a JSON array file again with the exact (slower) parser, from that item on."""
    with storage.open_input(f.path) as raw, open_decompressed(raw, compression) as decompressed:
        stream = BreakGuard(decompressed)
        head = stream.read(4096)
        if head.startswith(codecs.BOM_UTF8):  # not JSON: the parser would refuse the first record
            head = head[len(codecs.BOM_UTF8) :]
        first = head.lstrip()[:1]
        rest = _Prepended(head, stream)
        if first != b"[":
            yield from _read_jsonl(f, rest, cfg)
            return
        again = yield from _read_json_array(f, rest, cfg, from_item)
    if again is not None:
        yield from read_json(f, compression, cfg, again)


class _Prepended:
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = head, stream

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                out, self.head = self.head + self.stream.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.stream.read(n)

    @property
    def error(self) -> BaseException | None:
        return getattr(self.stream, "error", None)


def _json_limit(cfg: ReadConfig) -> int:
    """The most bytes of JSON text one record may take: room for escaping around the largest document."""
    return cfg.max_document_bytes * 2 + 64 * 1024


def _read_jsonl(f: InputFile, stream: Any, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    index = 0
    lines = _lines(stream, _json_limit(cfg))
    while True:
        try:
            line, size = next(lines)
        except StopIteration:
            if stream.error is not None:  # the stream broke (truncated gzip): one row, then stop
                yield broken(f, index, stream.error)
            return
        if line is not None and not line.strip():
            continue
        if line is None:
            yield error_row(f.path, index, "document_too_large", f"line of {size} bytes > the size limit")
        else:
            yield guarded(f, index, lambda line=line, index=index: _json_line(f, line, index, cfg))
        index += 1


def _json_line(f: InputFile, line: bytes, index: int, cfg: ReadConfig) -> dict[str, Any]:
    # JSON is UTF-8 by definition: decode leniently, count what had to be replaced
    try:
        text, bad = line.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        bad = replacements(text, line)
    try:
        obj = json.loads(text)
    except ValueError as e:
        return error_row(f.path, index, "invalid_json", f"line {index + 1}: {e}: {text[:80]!r}")
    return from_mapping(obj, f, index, cfg, "jsonl", bad)


def _read_json_array(
    f: InputFile, stream: Any, cfg: ReadConfig, from_item: int | None
) -> Generator[dict[str, Any], None, int | None]:
    """A top-level JSON array, item by item (memory: one item, whatever the file's size).

    An item larger than the JSONL line limit is a ``document_too_large`` row and the next items
    follow; a single value too large to skip, invalid JSON or a broken stream end the file with one
    row at the index where it stopped (the items before it are kept). A number past 2^63 or a
    double's range stops the fast parser: the index of its item is returned, to read the file again
    from there with the exact one (``from_item``), which skips the items already read.
    """
    import ijson

    index = 0
    exact = from_item is not None
    try:
        for obj, bad in json_array_items(stream, _json_limit(cfg), exact_numbers=exact):
            if index < (from_item or 0):
                index += 1
                continue
            if isinstance(obj, Oversized) and obj.deep:
                why = f"array item nested deeper than {MAX_JSON_DEPTH} levels"
                yield error_row(f.path, index, "invalid_json", why)
            elif isinstance(obj, Oversized):
                yield error_row(
                    f.path, index, "document_too_large", f"array item of more than {obj.size} bytes"
                )
            else:
                yield guarded(
                    f, index, lambda obj=obj, i=index, b=bad: from_mapping(obj, f, i, cfg, "json", b)
                )
            index += 1
    except (ijson.JSONError, TooLarge) as e:
        if not exact and number_overflow(e):
            return index
        if stream.error is not None:  # the stream broke (truncated gzip): that is the cause
            yield broken(f, index, stream.error)
        elif isinstance(e, TooLarge):
            yield error_row(f.path, index, "document_too_large", f"{e}; the rest of the file is not read")
        else:
            yield error_row(
                f.path, index, "invalid_json", f"the JSON array stops parsing at item {index}: {e}"
            )
