"""Bytes to what they are: compression and format from the first bytes, streams that decompress and
survive a break, and text from bytes in whatever charset, with every replacement counted.

Shared by the clean stage's readers (pipelines/clean/) and the record reader of the chat data and
search corpora (pipelines/records.py), so both tell a file by its bytes, not its name: a ``.jsonl``
that is really gzip, or a ``.warc.gz`` that is not compressed, is read for what it is.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import lzma
import re
import zlib
from collections.abc import Iterable
from typing import Any, BinaryIO

from pipelines import storage

MiB = 1024 * 1024
STEP = 64 * 1024  # the most BreakGuard asks of a decompressing stream at once

_META_CHARSET_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]{1,40})""", re.I)


_HTTP_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?\s*([a-zA-Z0-9_.:\-]{1,40})", re.I)


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


# ---- compression and format ---------------------------------------------------------------------


def compression_from_magic(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def format_from_head(head: bytes) -> str | None:
    """What the first decompressed bytes say; None when they say nothing we know."""
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.lstrip(codecs.BOM_UTF8).lstrip()
    if text.startswith(b"WARC/"):
        return "warc"
    if text.startswith(b"{"):
        return "jsonl"
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"<"):
        return "html"
    return None


def open_decompressed(raw: BinaryIO, compression: str | None) -> BinaryIO:
    if compression is None:
        return raw
    if compression == "gzip":
        # Python's gzip (not fastwarc's) because it raises EOFError on a truncated stream instead of
        # stopping quietly, which is how a broken file becomes an error row that says where.
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    if compression == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    import pyarrow as pa

    return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")  # type: ignore[return-value]


class BreakGuard:
    """Reads like the stream, but a broken stream (truncated compression) reads as its end.

    Every byte that could be decompressed is handed out first, and the exception is kept in
    ``error``: the reader then finishes the records it has and reports the break once, at the index
    where it happened. Without this, a parser reading ahead in blocks (fastwarc) would lose the
    whole last block of good records to the exception.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.error: BaseException | None = None
        self._read1 = getattr(stream, "read1", None)
        self._pos = 0

    def tell(self) -> int:  # fastwarc records each record's stream position
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if self.error is not None:
            return b""
        # chunks joined once at the end (a single chunk is returned as it is): growing a bytearray and
        # copying it out cost two copies of every byte of the file
        chunks: list[bytes] = []
        got = 0
        # at most STEP a call: what the call that meets the break had decompressed is lost with it
        # (pyarrow's zstd stream loses the whole request), so a smaller step loses less
        try:
            if n is None or n < 0:
                while chunk := (self._read1(STEP) if self._read1 else self.stream.read(STEP)):
                    chunks.append(chunk)
            else:
                while got < n:
                    step = min(n - got, STEP)
                    chunk = self._read1(step) if self._read1 else self.stream.read(step)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    got += len(chunk)
        except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:
            self.error = e
        out = b"".join(chunks)
        self._pos += len(out)
        return out


def sniff(path: str) -> tuple[str | None, str | None]:
    """(compression, format) from the file's first bytes; format None when the bytes are not telling."""
    compression, fmt, _ = sniff_file(path)
    return compression, fmt


def sniff_file(path: str) -> tuple[str | None, str | None, bool]:
    """(compression, format, empty): empty when there is no content at all (not even compressed)."""
    with storage.open_input(path) as raw:
        magic = raw.read(8)
    if not magic:
        return None, None, True
    compression = compression_from_magic(magic)
    if compression is None:
        return None, format_from_head(magic), False
    with storage.open_input(path) as raw, open_decompressed(raw, compression) as stream:
        try:
            head = stream.read(64)
        except (EOFError, OSError, lzma.LZMAError, ValueError, zlib.error):
            return compression, None, False  # the name then says the format; the reader reports the damage
    return compression, format_from_head(head), not head


# ---- text -------------------------------------------------------------------------------------------


def valid_utf8(value: str) -> tuple[str, int]:
    """``value`` with every lone surrogate replaced by U+FFFD, and how many there were.

    Why: a JSON string may legally spell a lone surrogate (``"\\ud83d"``) and ``json.loads`` keeps it,
    but such a string has no UTF-8 form, so Arrow (every parquet output) refuses it and one such
    record would fail the whole file. Replacing it here, like an invalid byte, keeps the record.
    """
    if value.isascii():
        return value, 0
    try:
        value.encode("utf-8")  # in C, about 3x faster than the search below on long pages
    except UnicodeEncodeError:
        return _SURROGATE_RE.subn("\ufffd", value)
    return value, 0


def valid_utf8_fields(row: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``row`` with ``valid_utf8`` applied to every string value, and the replacements made."""
    out, replaced = {}, 0
    for name, value in row.items():
        if isinstance(value, str):
            value, n = valid_utf8(value)
            replaced += n
        out[name] = value
    return out, replaced


# WHATWG Encoding: the codec a browser uses for a label, where Python's codec of the same name is a
# narrower standard. A Shift_JIS page with one NEC/IBM character (①, ㈱, №) is cp932 to every browser;
# Python's strict shift_jis refused the whole page, which then went to detection (and came out as a
# Baltic single-byte charset, garbage with nothing counted). Keys are codecs.lookup names or labels
# Python does not know; values are Python codecs.
_WHATWG_CODECS = {
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "euc_kr": "cp949",
    "big5": "cp950",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "tis-620": "cp874",
    "iso8859-11": "cp874",
    "windows-874": "cp874",
    "iso8859-9": "cp1254",
    "iso8859-1": "cp1252",
    "iso-8859-8-i": "iso8859-8",
    "x-mac-cyrillic": "mac-cyrillic",
    "macintosh": "mac-roman",
}
# WHATWG's windows-1252 reads the five bytes Python's cp1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90,
# 0x9D) as the C1 controls of the same number, as latin-1 does: no page labelled latin-1 fails
codecs.register_error("raychat-c1", lambda e: (chr(e.object[e.start]), e.start + 1))
_STRICT = {"cp1252": "raychat-c1"}
# a declared charset decoded with this share of its characters replaced is still the page's charset
# (one character outside even the WHATWG table), rather than a detector's guess that decodes every
# byte into the wrong letters and counts nothing
_FEW_REPLACED = 0.01


def decode_text(data: bytes, declared: Iterable[str | None] = ()) -> tuple[str, str, int]:
    """Bytes to text: (text, encoding used, number of bytes that had to be replaced).

    UTF-8 first when the bytes are (nearly) valid UTF-8, because a declared charset is often wrong
    in that direction (iso-8859-1 headers on UTF-8 pages); then the declared charsets (HTTP header,
    <meta>) read as browsers read them (``_WHATWG_CODECS``), windows-1252 last among them because
    any bytes decode as windows-1252 and servers send iso-8859-1 by default; a declared charset that
    leaves a character or two undecodable (``_FEW_REPLACED``); then resiliparse's detector; last the
    reading with the fewest replacements, every one counted, so that nothing is lost silently.
    """
    for bom, enc in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if data.startswith(bom):
            text = data[len(bom) :].decode(enc, "replace")
            return text, enc, replacements(text, data)
    try:
        return data.decode("utf-8"), "utf-8", 0
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", "replace")
    bad = replacements(lenient, data)
    # characters above ASCII, counted in C (a per-character loop cost ms per legacy-charset page)
    non_ascii = len(lenient) - len(lenient.encode("ascii", "ignore")) - bad - data.count(b"\xef\xbf\xbd")
    if non_ascii > bad:
        # mostly valid UTF-8 with a few broken bytes: keep UTF-8, do not re-read it as a legacy charset
        return lenient, "utf-8", bad
    readings = [(bad, lenient, "utf-8")]  # (replaced, text, codec): the fallbacks, fewest replaced wins
    codecs_declared = sorted(dict.fromkeys(filter(None, map(_codec, declared))), key=lambda c: c == "cp1252")
    for codec in codecs_declared:
        try:
            return data.decode(codec, _STRICT.get(codec, "strict")), codec, 0
        except UnicodeError:  # a codec refusing these bytes wholesale raises UnicodeError too
            text = data.decode(codec, "replace")
            readings.append((replacements(text, data), text, codec))
    few, text, codec = min(readings[1:], default=readings[0], key=lambda r: r[0])
    if codec != "utf-8" and few <= _FEW_REPLACED * len(text):
        return text, codec, few
    guess = _codec(_detected(data))
    if guess is not None and guess not in codecs_declared:
        with contextlib.suppress(UnicodeError):
            return data.decode(guess, _STRICT.get(guess, "strict")), guess, 0
    few, text, codec = min(readings, key=lambda r: r[0])
    return text, codec, few


def _codec(label: str | None) -> str | None:
    """The Python codec a browser's reading of ``label`` needs; None for no charset (or UTF-8, tried
    first). Python's "hex", "base64", "zlib", "rot13" are codecs, not charsets: a page labelled so lost
    its record (LookupError), and a parquet file the rest of its rows."""
    if not label:
        return None
    label = label.strip().lower()
    if label in _WHATWG_CODECS:
        return _WHATWG_CODECS[label]
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    # "ascii" says nothing about the bytes above 127 (a cp1251 page labelled us-ascii): the detector does
    if info.name in ("utf-8", "ascii", "undefined") or not getattr(info, "_is_text_encoding", True):
        return None
    return _WHATWG_CODECS.get(info.name, info.name)


def _detected(data: bytes) -> str | None:
    """resiliparse's guess, only asked for when no declared charset reads the bytes (detection costs
    about as much as the rest of reading a page)."""
    try:
        from resiliparse.parse.encoding import detect_encoding

        return detect_encoding(data[: 64 * 1024])
    except Exception:  # noqa: BLE001 - detection is a hint; UTF-8 with replacement always works
        return None


def replacements(text: str, data: bytes) -> int:
    return text.count("\ufffd") - data.count(b"\xef\xbf\xbd")


def starts_like_markup(data: bytes) -> bool:
    """Whether the bytes open with ``<`` after whitespace and a UTF-8 byte-order mark (a page saved
    with a BOM was taken for an encoded body, or for no page at all)."""
    return data.lstrip().removeprefix(codecs.BOM_UTF8).lstrip()[:1] == b"<"


def meta_charset(data: bytes) -> str | None:
    m = _META_CHARSET_RE.search(data[:4096])
    return m.group(1).decode("ascii", "replace") if m else None


def http_charset(content_type: str) -> str | None:
    m = _HTTP_CHARSET_RE.search(content_type)
    return m.group(1) if m else None


# ---- binary payloads ----------------------------------------------------------------------------------


# Binary formats by their first bytes (what a crawl mislabels as HTML: images, fonts, archives, PDF).
_BINARY_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG image",
    b"GIF87a": "GIF image",
    b"GIF89a": "GIF image",
    b"\xff\xd8\xff": "JPEG image",
    b"II*\x00": "TIFF image",
    b"MM\x00*": "TIFF image",
    b"\x00\x00\x01\x00": "icon",
    b"%PDF-": "PDF",
    b"PK\x03\x04": "zip archive",
    b"\x1f\x8b": "gzip data",
    b"\x28\xb5\x2f\xfd": "zstd data",
    b"\xfd7zXZ\x00": "xz data",
    b"7z\xbc\xaf\x27\x1c": "7z archive",
    b"Rar!\x1a\x07": "rar archive",
    b"\x7fELF": "executable",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "MS Office file",
    b"wOFF": "web font",
    b"wOF2": "web font",
    b"OTTO\x00": "font",
    b"\x00\x01\x00\x00\x00": "font",
    b"OggS": "Ogg media",
    b"ID3\x02": "MP3 audio",
    b"ID3\x03": "MP3 audio",
    b"ID3\x04": "MP3 audio",
    b"fLaC": "FLAC audio",
    b"\x1aE\xdf\xa3": "Matroska/WebM video",
}


# C0 controls that never occur in text (tab, newlines, form feed and ESC - ISO-2022-JP - are text)
_CONTROL_BYTES = bytes([*range(0, 9), 11, *range(14, 27), *range(28, 32), 127])


_CONTROL_CHARS = frozenset(chr(b) for b in _CONTROL_BYTES)


_BINARY_SAMPLE = 8192


# Random or compressed bytes are about 11% such controls; real pages have none (0 on the real crawl
# samples), a stray NUL or two at most. 1% separates the two with a wide margin on both sides.
_MAX_CONTROL_SHARE = 0.01


def binary_kind(data: bytes | str) -> str | None:
    """What binary data this is ("PNG image", "binary data (23% control bytes)"), or None for text.

    Why: a server that labels an image as text/html, a ``.html`` file that is really a PNG, or an
    ``html`` field holding bytes would otherwise be decoded as text and rejected as an empty
    extraction, i.e. counted as a bad document instead of as what it is: a non-HTML payload.
    Strings (JSON fields) are judged by their code points below 256, as the bytes they came from.
    """
    if isinstance(data, str):
        sample_text = data[:_BINARY_SAMPLE]
        head = sample_text[:16].lstrip("\ufeff")
        head_bytes = head.encode("latin-1", "replace")
        controls = sum(1 for ch in sample_text if ch in _CONTROL_CHARS)
        size = len(sample_text)
    else:
        for bom in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            if data.startswith(bom):
                return None  # UTF-16 text: its NUL bytes are half of every ASCII character
        sample = data[:_BINARY_SAMPLE]
        head_bytes = sample[:16]
        controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
        size = len(sample)
    for magic, kind in _BINARY_MAGIC.items():
        if head_bytes.startswith(magic):
            return kind
    if head_bytes[4:8] == b"ftyp":
        return "MP4/QuickTime media"
    if size and controls / size > _MAX_CONTROL_SHARE:
        return f"binary data ({controls / size:.0%} control bytes)"
    return None
