"""Reading input within a bound: compressed HTTP bodies and JSON arrays, whatever size they claim or inflate to.

Why: a record's size on disk says nothing about its size in memory. A gzip-encoded HTTP body of a few
hundred KB can inflate to gigabytes (a gzip bomb), and a JSON array file has to be parsed as a whole
by ``json.loads``. Both are decoded here piece by piece, and stop at the bound with an exception or
marker that the reader turns into an error row for that record, so the other records are kept.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024
_REPLACEMENT = "\ufffd".encode()


class TooLarge(ValueError):
    """Decoded data went past its bound; the message says which bound and how far it got."""


def inflate_body(data: bytes, coding: str, limit: int) -> bytes:
    """An HTTP body decoded from one ``Content-Encoding`` (gzip, deflate, br, zstd), at most ``limit``
    bytes of it.

    Raises ``TooLarge`` as soon as the output passes ``limit`` (nothing much beyond it is ever
    produced: a few hundred bytes of compressed data can claim gigabytes), and ``ValueError`` for a
    body that is corrupt, or in a coding we do not know. A body cut short (a crawler's size cap, a
    transfer that stopped) keeps what inflated, as a chunked body keeps the chunks that arrived; one
    cut before anything inflated is a ``ValueError``. Bytes after a complete gzip stream that are not
    another gzip member (a CRLF, padding) are left out, as gzip(1) leaves out trailing garbage.
    """
    if coding in ("gzip", "x-gzip"):
        out = _inflate_gzip(data, limit)
    elif coding == "deflate":
        out = _inflate_deflate(data, limit)
    elif coding == "br":
        out = _inflate_brotli(data, limit)
    elif coding == "zstd":
        out = _inflate_zstd(data, limit)
    else:
        raise ValueError(f"unknown Content-Encoding {coding!r}")
    if len(out) > limit:
        raise TooLarge(f"{coding}-encoded body of {len(data)} bytes inflates past max_document_bytes={limit}")
    return out


MAX_GZIP_MEMBERS = 64  # an HTTP body has one; each member copies the rest of the body (zlib's unused_data)


def _inflate_gzip(data: bytes, limit: int) -> bytes:
    out = bytearray()
    rest = data
    members = 0
    complete = False
    while rest and len(out) <= limit:  # members one after another
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise ValueError(f"gzip-encoded body of more than {MAX_GZIP_MEMBERS} gzip members")
        d = zlib.decompressobj(wbits=31)  # 31: gzip framing
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as e:
            if members > 1:  # bytes after a complete stream that are not a gzip member: left out
                break
            raise ValueError(f"gzip-encoded body does not decompress: {e}") from None
        complete = d.eof  # an empty page gzipped is complete and empty
        if len(out) > limit or not complete:  # not at the end: cut short, what inflated is kept
            break
        rest = d.unused_data.lstrip(b"\x00")  # gzip files may be padded with zeros
    if not out and data and not complete:
        raise ValueError("gzip-encoded body does not decompress: the stream ends before any of it")
    return bytes(out)


def _inflate_deflate(data: bytes, limit: int) -> bytes:
    error: Exception | None = None
    # the zlib format, as the HTTP standard says, then raw deflate, which some servers send instead
    for wbits in (zlib.MAX_WBITS, -zlib.MAX_WBITS):
        d = zlib.decompressobj(wbits=wbits)
        try:
            out = d.decompress(data, limit + 1)
        except zlib.error as e:
            error = e
            continue
        if not out and not d.eof:
            raise ValueError("deflate-encoded body does not decompress: the stream ends before any of it")
        return out  # a stream cut short keeps what inflated
    raise ValueError(f"deflate-encoded body does not decompress: {error}")


def _inflate_brotli(data: bytes, limit: int) -> bytes:
    import brotli  # fastwarc's own dependency

    d = brotli.Decompressor()
    try:
        out = d.process(data, output_buffer_limit=limit + 1)
    except brotli.error as e:
        raise ValueError(f"br-encoded body does not decompress: {e}") from None
    if not out and not d.is_finished():
        raise ValueError("br-encoded body does not decompress: the stream ends before any of it")
    return out  # a stream cut short keeps what inflated


def _inflate_zstd(data: bytes, limit: int) -> bytes:
    import pyarrow as pa

    try:
        return pa.CompressedInputStream(pa.BufferReader(data), "zstd").read(limit + 1)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"zstd-encoded body does not decompress: {e}") from None


@dataclass(frozen=True)
class Oversized:
    """A JSON array item that was not built because its text passed the bound (``size`` so far), or
    because it nests deeper than ``MAX_JSON_DEPTH`` (``deep``)."""

    size: int
    deep: bool = False


MAX_JSON_DEPTH = 256  # nesting a record may have: no crawl or chat record comes near it


class _Utf8Repairing:
    """Bytes in, valid UTF-8 bytes out (invalid sequences become U+FFFD), counting the replacements.

    Why: the JSON parser stops at the first invalid byte, and one bad byte must not cost the rest of
    the file (JSONL lines get the same treatment in readers.py). ``since_event`` counts the bytes read
    since the caller last reset it, which is how a single value too large to build is noticed.
    """

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.replaced = 0
        self.since_event = 0

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        chunk = self.stream.read(MiB if n is None or n < 0 else n)
        self.since_event += len(chunk)
        if self.since_event > self.limit:
            raise TooLarge(f"a single JSON value of more than {self.limit} bytes")
        text = self.decoder.decode(chunk, final=not chunk)
        self.replaced += text.count("\ufffd") - chunk.count(_REPLACEMENT)
        return text.encode("utf-8")


def number_overflow(e: BaseException) -> bool:
    """Whether ijson's C parser stopped at a number it cannot hold (which the Python parser reads)."""
    return "integer overflow" in str(e) or "floating point) overflow" in str(e)


def json_array_items(stream: Any, limit: int, exact_numbers: bool = False) -> Iterator[tuple[Any, int]]:
    """The items of a top-level JSON array, one at a time, each with the U+FFFD replacements made in it.

    Memory stays about one item (plus the parser's buffer), never the file. An item whose strings
    and keys add up to more than ``limit`` characters is not built: it comes as ``Oversized`` and the
    items after it follow. A single value (one string) the parser cannot skip, of more than ``limit``
    plus 2 MiB bytes, raises ``TooLarge``, and the items before it have been yielded. Invalid JSON
    raises ``ijson.JSONError`` at the point where the parser stopped. (A lone surrogate escape such
    as ``"\\ud83d"`` comes out as ``?`` from ijson's C parser, where ``json.loads`` keeps it.)
    The C parser (yajl) also refuses an integer past 2^63 or a number past a double's range
    (``number_overflow``); ``exact_numbers`` parses with ijson's pure-Python parser instead, which
    reads any number (as int or Decimal), about 2.5x slower.
    """
    import ijson

    reader = _Utf8Repairing(stream, limit + 2 * MiB)
    depth = 0
    base = 0  # 1 inside a top-level array, whose items are the records; 0 between top-level values
    builder: Any = None
    size = 0
    deep = False
    # basic_parse, not parse: parse builds a prefix string per nesting level, so memory grew with the
    # square of the depth (a 200 KB file of nested brackets took 23 GB). multiple_values: what follows
    # the array (a second array, JSON lines appended after it) is read, not silently dropped.
    if exact_numbers:  # numbers as int or Decimal: exact, whatever their size
        events = ijson.get_backend("python").basic_parse(reader, multiple_values=True)
    else:
        events = ijson.basic_parse(reader, use_float=True, multiple_values=True)
    for event, value in events:
        reader.since_event = 0
        if depth == 0 and event == "start_array":  # a top-level array: its items are the records
            depth = base = 1
            continue
        if depth == 1 and base == 1 and event == "end_array":
            depth = base = 0
            continue
        if builder is None and size == 0:
            builder = ijson.ObjectBuilder()
        if event in ("start_map", "start_array"):
            depth += 1
            deep = deep or depth - base > MAX_JSON_DEPTH
        elif event in ("end_map", "end_array"):
            depth -= 1
        size += len(value) if isinstance(value, str) else 8
        if builder is not None:
            if size > limit or deep:
                builder = None  # the rest of this item is read, but no longer kept
            else:
                builder.event(event, value)
        if depth == base:  # the item is complete
            replaced, reader.replaced = reader.replaced, 0
            yield (builder.value if builder is not None else Oversized(size, deep)), replaced
            builder, size, deep = None, 0, False
