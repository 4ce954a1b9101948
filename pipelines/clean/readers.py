"""Turn files, globs, folders and URIs into a stream of documents, and every failure into an error row.

Pure Python on purpose: the clean job wraps ``expand_inputs`` (on the driver: listing only, no reads)
and ``read_file`` (in Ray Data tasks, one file each) in Ray Data. Keeping the reading here makes every
format testable without a cluster.

The accounting rule: every *input record* (a WARC response/resource/conversion record, a JSONL line,
a JSON array element, a parquet row, an HTML file) comes out as exactly one document dict or one error
dict, and both carry ``record_index`` = that record's ordinal in its file. So for a file with ``n``
records the indices seen are exactly ``range(n)``; when a file breaks (truncated gzip), the error row
takes the index of the first record that could not be read and nothing after it is claimed.

Formats are told by the bytes, not the name: the name only chooses which files a folder contributes.
A ``.jsonl`` that is really gzip, or a ``.warc.gz`` that is not compressed, is read for what it is.
"""

from __future__ import annotations

import bz2
import codecs
import glob as globlib
import gzip
import http.client
import io
import json
import logging
import lzma
import os
import re
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydantic import Field

from lm.config_base import StrictModel

log = logging.getLogger(__name__)

MiB = 1024 * 1024

# Every document dict has exactly these keys (None where unknown), so Ray Data blocks built from
# records of different formats share one schema.
RECORD_FIELDS = (
    "id",
    "url",
    "date",
    "dump",
    "file_path",
    "content",
    "content_type",
    "source_format",
    "record_index",
    "warc_record_id",
    "language",
    "language_score",
    "encoding",
    "decode_errors",
)
ERROR_FIELDS = ("_error", "id", "url", "file_path", "record_index", "step", "reason", "error")
# Records and error rows as one schema, for a Ray Data block that holds both (arrow takes a block's
# columns from its first row, so rows with other keys would silently lose fields): see ``as_row``.
ROW_FIELDS = RECORD_FIELDS + ("_error", "step", "reason", "error")

FORMATS = ("warc", "jsonl", "json", "parquet", "html")
# name suffix (after any compression suffix) -> format
_EXT_FORMAT = {
    ".warc": "warc",
    ".wet": "warc",
    ".wat": "warc",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jl": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}
_COMPRESSION_EXT = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".xz": "xz",
    ".zst": "zstd",
    ".zstd": "zstd",
}
_GLOB_CHARS = re.compile(r"[*?\[]")
_DUMP_RE = re.compile(r"CC-MAIN-\d{4}-\d{2}")
_META_CHARSET_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:\-]{1,40})""", re.I)
_HTTP_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?\s*([a-zA-Z0-9_.:\-]{1,40})", re.I)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class ReadConfig(StrictModel):
    """How input records are read and mapped onto the FineWeb columns."""

    max_document_bytes: int = Field(
        4 * MiB,
        gt=0,
        description=(
            "documents larger than this become an error row (reason 'document_too_large', with the "
            "size) instead of a record. 4 MiB is 4x Common Crawl's 1 MiB payload cap, so no page of "
            "a web crawl reaches it; a larger 'document' is a dump, a log or binary that would cost "
            "the filters and dedup far more than it is worth. Raise it for books"
        ),
    )
    text_fields: list[str] = Field(
        default_factory=lambda: ["text", "content", "raw_content"],
        description="JSON/parquet fields holding plain text, tried in order (FineWeb/C4/Dolma: text)",
    )
    html_fields: list[str] = Field(
        default_factory=lambda: ["html"], description="JSON/parquet fields holding raw HTML, tried in order"
    )
    id_fields: list[str] = Field(default_factory=lambda: ["id", "doc_id"], description="dotted paths")
    url_fields: list[str] = Field(
        default_factory=lambda: ["url", "metadata.url", "meta.url"],
        description="dotted paths; metadata.url is Dolma's",
    )
    date_fields: list[str] = Field(
        default_factory=lambda: ["date", "timestamp", "created", "metadata.date_download"],
        description="dotted paths; timestamp is C4's, created is Dolma's",
    )
    dump_fields: list[str] = Field(
        default_factory=lambda: ["dump", "metadata.dump", "metadata.cc_segment"],
        description="dotted paths; a CC-MAIN-YYYY-WW inside the value is taken as the dump",
    )
    html_mime_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml"],
        description="WARC payload types read as HTML; other payloads (images, PDF) become error rows",
    )
    parquet_batch_rows: int = Field(1024, gt=0, description="rows per parquet read (one row group slice)")


@dataclass(frozen=True)
class InputFile:
    """One file to read. ``path`` is an absolute local path or a URI; ``format`` is the name's guess."""

    path: str
    format: str | None = None
    size: int | None = None


# --------------------------------------------------------------------------------------------------
# filesystems


def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local_path(path: str) -> str:
    if path.startswith("file://"):
        parsed = urllib.parse.urlparse(path)
        return urllib.parse.unquote(parsed.path)
    return os.path.abspath(os.path.expanduser(path))


def _filesystem(uri: str) -> tuple[Any, str]:
    """A pyarrow filesystem and the path inside it; fsspec (wrapped for pyarrow) for other schemes."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def _open_raw(path: str) -> BinaryIO:
    if not _is_uri(path):
        return open(_local_path(path), "rb")  # noqa: SIM115 - the caller closes it
    fs, inner = _filesystem(path)
    return fs.open_input_stream(inner)


def _open_random_access(path: str) -> Any:
    if not _is_uri(path):
        return open(_local_path(path), "rb")  # noqa: SIM115
    fs, inner = _filesystem(path)
    return fs.open_input_file(inner)


# --------------------------------------------------------------------------------------------------
# formats: by name, and by the bytes


def format_from_name(name: str) -> str | None:
    lower = name.lower()
    stem, ext = os.path.splitext(lower)
    if ext in _COMPRESSION_EXT:
        stem, ext = os.path.splitext(stem)
    return _EXT_FORMAT.get(ext)


def _compression_from_magic(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    return None


def _format_from_head(head: bytes) -> str | None:
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


def _decompressed(raw: BinaryIO, compression: str | None) -> BinaryIO:
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


class _BreakGuard:
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
        out = bytearray()
        try:
            if n is None or n < 0:
                while chunk := (self._read1(MiB) if self._read1 else self.stream.read(MiB)):
                    out += chunk
            else:
                while len(out) < n:
                    chunk = self._read1(n - len(out)) if self._read1 else self.stream.read(n - len(out))
                    if not chunk:
                        break
                    out += chunk
        except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:
            self.error = e
        self._pos += len(out)
        return bytes(out)


def sniff(path: str) -> tuple[str | None, str | None]:
    """(compression, format) from the file's first bytes; format None when the bytes are not telling."""
    compression, fmt, _ = _sniff(path)
    return compression, fmt


def _sniff(path: str) -> tuple[str | None, str | None, bool]:
    """(compression, format, empty): empty when there is no content at all (not even compressed)."""
    with _open_raw(path) as raw:
        magic = raw.read(8)
    if not magic:
        return None, None, True
    compression = _compression_from_magic(magic)
    if compression is None:
        return None, _format_from_head(magic), False
    with _open_raw(path) as raw, _decompressed(raw, compression) as stream:
        try:
            head = stream.read(64)
        except (EOFError, OSError, lzma.LZMAError, ValueError):
            return compression, None, False
    return compression, _format_from_head(head), not head


# --------------------------------------------------------------------------------------------------
# expanding inputs


def _error_row(file_path: str, reason: str, error: str) -> dict[str, Any]:
    return {"file_path": file_path, "step": "read", "reason": reason, "error": error}


def _wanted_in_folder(name: str) -> bool:
    """Files a folder contributes: known data extensions; hidden, _SUCCESS/_metadata and docs are not."""
    if name.startswith((".", "_")):
        return False
    return format_from_name(name) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex where ``*`` stays inside one folder and ``**`` crosses folders."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j]
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _expand_local(spec: str) -> tuple[list[InputFile], list[dict[str, Any]]]:
    path = _local_path(spec)
    if _GLOB_CHARS.search(path):
        matches = sorted(globlib.glob(path, recursive=True))
        files, errors = [], []
        for m in matches:
            if os.path.isdir(m):
                sub_files, sub_errors = _expand_local(m)
                files += sub_files
                errors += sub_errors
            else:
                f, e = _local_file(m, explicit=False)
                files += f
                errors += e
        if not files and not errors:
            what = f"only non-data files ({len(matches)})" if matches else "no file"
            errors.append(_error_row(spec, "no_match", f"{what} match the pattern {spec!r}"))
        return files, errors
    if os.path.isdir(path):
        files, errors = [], []
        for root, dirs, names in os.walk(path, onerror=lambda e, errs=errors: errs.append(_unreadable(e))):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            for name in sorted(names):
                if name.startswith((".", "_")):
                    continue
                f, e = _local_file(os.path.join(root, name), explicit=False)
                files += f
                errors += e
        if not files and not errors:
            errors.append(_error_row(spec, "no_match", f"folder {spec!r} holds no data files"))
        return files, errors
    if os.path.lexists(path) or os.path.exists(path):
        return _local_file(path, explicit=True)
    return [], [_error_row(spec, "no_match", f"no such file or folder: {spec!r}")]


def _unreadable(e: OSError) -> dict[str, Any]:
    return _error_row(str(getattr(e, "filename", "") or ""), "unreadable", f"{type(e).__name__}: {e}")


def _local_file(path: str, explicit: bool) -> tuple[list[InputFile], list[dict[str, Any]]]:
    """One local file: readable and of a format we know (by name, or by its bytes when the name has none)."""
    try:
        st = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as e:
        return [], [_error_row(path, "unreadable", f"{type(e).__name__}: {e}")]
    fmt = format_from_name(os.path.basename(path))
    if fmt is None:
        name = os.path.basename(path)
        if not explicit and "." in name:
            log.info("skipping %s: not a data file by its name", path)
            return [], []
        try:
            _, fmt = sniff(path)
        except OSError as e:
            return [], [_error_row(path, "unreadable", f"{type(e).__name__}: {e}")]
        if fmt is None:
            if not explicit:
                log.info("skipping %s: neither its name nor its first bytes say a data format", path)
                return [], []
            return [], [
                _error_row(
                    path,
                    "unknown_format",
                    f"neither the name nor the first bytes of {path!r} match one of {', '.join(FORMATS)}",
                )
            ]
    return [InputFile(path=path, format=fmt, size=st.st_size)], []


def _expand_uri(spec: str) -> tuple[list[InputFile], list[dict[str, Any]]]:
    base, sep, query = spec.partition("?")
    query = sep + query
    if _GLOB_CHARS.search(base):
        # pyarrow has no glob: list the part before the first wildcard and match the rest.
        cut = _GLOB_CHARS.search(base).start()  # type: ignore[union-attr]
        prefix = base[: base.rfind("/", 0, cut) + 1]
        try:
            fs, inner = _filesystem(prefix + query)
        except Exception as e:  # noqa: BLE001 - any failure to reach the store is this input's error
            return [], [_error_row(spec, "unreadable", f"{type(e).__name__}: {e}")]
        regex = _glob_regex(inner.rstrip("/") + "/" + base[len(prefix) :])
        infos = _list_uri(fs, inner)
        if isinstance(infos, dict):
            return [], [infos | {"file_path": spec}]
        files = [
            InputFile(_join_uri(prefix, inner, i.path) + query, fmt, i.size)
            for i in infos
            if regex.match(i.path) and (fmt := format_from_name(i.base_name))
        ]
        if not files:
            return [], [_error_row(spec, "no_match", f"no file matches the pattern {spec!r}")]
        return files, []
    try:
        import pyarrow.fs as pafs

        fs, inner = _filesystem(spec)
        info = fs.get_file_info(inner)
    except Exception as e:  # noqa: BLE001
        return [], [_error_row(spec, "unreadable", f"{type(e).__name__}: {e}")]
    if info.type == pafs.FileType.NotFound:
        return [], [_error_row(spec, "no_match", f"no such file or folder: {spec!r}")]
    if info.type == pafs.FileType.File:
        fmt = format_from_name(info.base_name)
        if fmt is None:
            try:
                _, fmt = sniff(spec)
            except Exception as e:  # noqa: BLE001
                return [], [_error_row(spec, "unreadable", f"{type(e).__name__}: {e}")]
        if fmt is None:
            return [], [_error_row(spec, "unknown_format", f"cannot tell the format of {spec!r}")]
        return [InputFile(spec, fmt, info.size)], []
    infos = _list_uri(fs, inner)
    if isinstance(infos, dict):
        return [], [infos | {"file_path": spec}]
    files = [
        InputFile(_join_uri(base, inner, i.path) + query, format_from_name(i.base_name), i.size)
        for i in infos
        if _wanted_in_folder(i.base_name)
        and not any(part.startswith((".", "_")) for part in i.path[len(inner) :].split("/")[:-1])
    ]
    if not files:
        return [], [_error_row(spec, "no_match", f"folder {spec!r} holds no data files")]
    return files, []


def _list_uri(fs: Any, inner: str) -> list[Any] | dict[str, Any]:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(inner.rstrip("/"), recursive=True, allow_not_found=True))
    except Exception as e:  # noqa: BLE001
        return _error_row(inner, "unreadable", f"{type(e).__name__}: {e}")
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def _join_uri(uri_base: str, inner_base: str, inner_path: str) -> str:
    """The URI of ``inner_path``, given that ``uri_base`` addresses ``inner_base`` on the same store."""
    uri_base, inner_base = uri_base.rstrip("/"), inner_base.rstrip("/")
    rel = inner_path[len(inner_base) :] if inner_path.startswith(inner_base) else "/" + inner_path
    if uri_base.endswith("://"):
        return uri_base + rel.lstrip("/")
    return uri_base + rel


def expand_inputs(inputs: Iterable[str]) -> tuple[list[InputFile], list[dict[str, Any]]]:
    """Files, globs (``**`` crosses folders) and folders (recursive), local or URIs, into files to read.

    Returns the files (each once, in input order then sorted within a folder) and one error row per
    input that matched nothing, could not be listed, or is a file of no format we know. Only names
    are looked at here (plus the first bytes of extension-less files), so the driver does no reading.
    """
    files: list[InputFile] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec in inputs:
        spec = str(spec)
        got, errs = _expand_uri(spec) if _is_uri(spec) else _expand_local(spec)
        errors += errs
        for f in got:
            if f.path not in seen:
                seen.add(f.path)
                files.append(f)
    return files, errors


# --------------------------------------------------------------------------------------------------
# records


def _error(
    file_path: str,
    record_index: int | None,
    reason: str,
    error: str,
    id: str | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    row = {
        "_error": True,
        "id": id,
        "url": url,
        "file_path": file_path,
        "record_index": record_index,
        "step": "read",
        "reason": reason,
        "error": error[:2000],
    }
    return valid_utf8_fields(row)[0]  # an error row must be writable too


def stable_id(file_path: str, record_index: int) -> str:
    """The id of a record that brings none: where it came from, so reruns give the same id."""
    return f"{file_path}#{record_index}"


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


def _record(**fields: Any) -> dict[str, Any]:
    rec = dict.fromkeys(RECORD_FIELDS)
    rec.update(fields)
    rec, bad = valid_utf8_fields(rec)
    if bad:
        rec["decode_errors"] = (rec.get("decode_errors") or 0) + bad
    return rec


def decode_text(data: bytes, declared: Iterable[str | None] = ()) -> tuple[str, str, int]:
    """Bytes to text: (text, encoding used, number of bytes that had to be replaced).

    UTF-8 first when the bytes are (nearly) valid UTF-8, because a declared charset is often wrong
    in that direction (iso-8859-1 headers on UTF-8 pages); then the declared charsets (HTTP header,
    <meta>), then resiliparse's detector; last UTF-8 with invalid bytes replaced by U+FFFD and counted,
    so that nothing is lost silently.
    """
    for bom, enc in (
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if data.startswith(bom):
            text = data[len(bom) :].decode(enc, "replace")
            return text, enc, _replacements(text, data)
    try:
        return data.decode("utf-8"), "utf-8", 0
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", "replace")
    bad = _replacements(lenient, data)
    # characters above ASCII, counted in C (a per-character loop cost ms per legacy-charset page)
    non_ascii = len(lenient) - len(lenient.encode("ascii", "ignore")) - bad - data.count(b"\xef\xbf\xbd")
    if non_ascii > bad:
        # mostly valid UTF-8 with a few broken bytes: keep UTF-8, do not re-read it as a legacy charset
        return lenient, "utf-8", bad
    for enc in _charset_candidates(data, declared):
        try:
            name = codecs.lookup(enc).name
        except LookupError:
            continue
        if name in ("utf-8", "ascii"):
            continue
        if name == "iso8859-1":
            name = "cp1252"  # browsers read a latin-1 label as windows-1252 (WHATWG Encoding)
        for codec in (name, "latin-1") if name == "cp1252" else (name,):
            try:
                return data.decode(codec), codec, 0
            except UnicodeDecodeError:
                continue
    return lenient, "utf-8", bad


def _charset_candidates(data: bytes, declared: Iterable[str | None]) -> Iterator[str]:
    """The declared charsets, then resiliparse's guess, which is only computed when none of them
    decodes the bytes (detection costs about as much as the rest of reading a page)."""
    yield from (c for c in declared if c)
    try:
        from resiliparse.parse.encoding import detect_encoding

        guess = detect_encoding(data[: 64 * 1024])
    except Exception:  # noqa: BLE001 - detection is a hint; UTF-8 with replacement always works
        return
    yield guess


def _replacements(text: str, data: bytes) -> int:
    return text.count("\ufffd") - data.count(b"\xef\xbf\xbd")


def _meta_charset(data: bytes) -> str | None:
    m = _META_CHARSET_RE.search(data[:4096])
    return m.group(1).decode("ascii", "replace") if m else None


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


def _binary_error(kind: str, **fields: Any) -> dict[str, Any]:
    return _error(
        fields["file_path"],
        fields.get("record_index"),
        "non_html_payload",
        f"the payload is {kind}, not HTML",
        id=fields.get("id"),
        url=fields.get("url"),
    )


def _html_record(data: bytes, header_charset: str | None, **fields: Any) -> dict[str, Any]:
    """An HTML record, or a ``non_html_payload`` error when the bytes are binary (for every source)."""
    if kind := binary_kind(data):
        return _binary_error(kind, **fields)
    text, encoding, bad = decode_text(data, (header_charset, _meta_charset(data)))
    return _record(content=text, content_type="html", encoding=encoding, decode_errors=bad, **fields)


def read_file(f: InputFile, cfg: ReadConfig | None = None) -> Iterator[dict[str, Any]]:
    """Stream the documents of one file as dicts (``RECORD_FIELDS``) or error dicts (``_error``: True).

    Never raises for bad data: an unopenable file is one error row (record_index None), a file that
    breaks mid-way keeps the records before the break and adds one error row saying where it broke,
    and a file without a single record (0 bytes, or only blank lines) is one ``empty_file`` row.
    """
    cfg = cfg or ReadConfig()
    try:
        compression, sniffed, empty = _sniff(f.path)
    except Exception as e:  # noqa: BLE001 - an unopenable file is this file's error, nothing more
        yield _error(f.path, None, "unreadable", f"{type(e).__name__}: {e}")
        return
    if empty:  # reported, not skipped: an empty input is usually a failed download or export
        what = (
            "the file is empty (0 bytes)"
            if compression is None
            else f"the {compression} stream holds no data"
        )
        yield _error(f.path, None, "empty_file", what)
        return
    fmt = sniffed or f.format
    if sniffed and f.format and sniffed != f.format and {sniffed, f.format} != {"json", "jsonl"}:
        log.warning(
            "%s: the name says %s but the bytes say %s; reading it as %s", f.path, f.format, sniffed, sniffed
        )
    if fmt is None:
        yield _error(f.path, None, "unknown_format", "neither the name nor the first bytes tell the format")
        return
    reader = {
        "warc": _read_warc,
        "jsonl": _read_json,
        "json": _read_json,
        "parquet": _read_parquet,
        "html": _read_html,
    }[fmt]
    if fmt == "parquet" and compression:
        yield _error(
            f.path, None, "unknown_format", f"parquet inside {compression} is not readable; decompress it"
        )
        return
    count = 0
    try:
        for item in reader(f, compression, cfg):
            count += 1
            yield item
    except BaseException as e:  # noqa: BLE001 - a reader bug must not lose the other files
        if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        yield _error(f.path, None, "read_failed", f"{type(e).__name__}: {e} (after {count} items)")
        return
    if count == 0:  # bytes, but not one record: blank lines, [], a parquet without rows, a bare warcinfo
        what = (
            "no response, resource or conversion records (a WAT, request-only or warcinfo-only file "
            "has nothing to clean)"
            if fmt == "warc"
            else "no records"
        )
        yield _error(f.path, None, "empty_file", f"the {fmt} file holds {what}")


def _broken(f: InputFile, index: int, e: BaseException) -> dict[str, Any]:
    """The one error row of a file that breaks: where, and why."""
    if isinstance(e, EOFError):
        reason, what = "truncated_input", "the compressed stream ends early"
    else:
        reason, what = "corrupt_input", "the file cannot be read further"
    return _error(f.path, index, reason, f"{what} at record {index}: {type(e).__name__}: {e}")


# ---- WARC ----------------------------------------------------------------------------------------


def _read_warc(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    wanted = (
        WarcRecordType.response
        | WarcRecordType.resource
        | WarcRecordType.conversion
        | WarcRecordType.warcinfo
    )
    html_types = {t.lower() for t in cfg.html_mime_types}
    dump: str | None = None
    index = 0
    with _open_raw(f.path) as raw, _decompressed(raw, compression) as decompressed:
        stream = _BreakGuard(decompressed)
        # parse_http=False: HTTP headers are parsed below with the standard library, which accepts the
        # bare-LF header lines of older crawlers (ClueWeb09) that fastwarc's parser reads as garbage.
        records = iter(ArchiveIterator(stream, parse_http=False, strict_mode=False, record_types=wanted))
        while True:
            try:
                rec = next(records)
                if rec.record_type == WarcRecordType.warcinfo:
                    dump = _warcinfo_dump(rec.reader.read(64 * 1024)) or dump
                    continue
                if (
                    stream.error is not None
                    and not (rec.headers.get("Content-Length") or "").strip().isdigit()
                ):
                    raise EOFError("the stream ends inside this record's headers")
                item = _warc_record(f, rec, index, dump, html_types, cfg)
            except StopIteration:
                if stream.error is not None:
                    yield _broken(f, index, stream.error)
                return
            except (EOFError, OSError) as e:  # the stream itself broke: one row, then stop
                yield _broken(f, index, e)
                return
            except BaseException as e:  # noqa: BLE001 - this record's problem only (fastwarc panics are BaseExceptions)
                if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
                    raise
                item = _error(f.path, index, "bad_record", f"{type(e).__name__}: {e}")
            yield item
            index += 1


def _warcinfo_dump(block: bytes) -> str | None:
    m = _DUMP_RE.search(block.decode("utf-8", "replace"))
    return m.group(0) if m else None


def _warc_record(
    f: InputFile, rec: Any, index: int, dump: str | None, html_types: set[str], cfg: ReadConfig
) -> dict[str, Any]:
    from fastwarc.warc import WarcRecordType

    headers = rec.headers
    record_id = headers.get("WARC-Record-ID")
    url = headers.get("WARC-Target-URI")
    where = {"id": record_id, "url": url}
    length = rec.content_length
    if length > cfg.max_document_bytes:
        return _error(
            f.path,
            index,
            "document_too_large",
            f"{length} bytes > max_document_bytes={cfg.max_document_bytes}",
            **where,
        )
    block = rec.reader.read()
    if len(block) < length:
        raise EOFError(f"record {record_id} has {len(block)} of its {length} bytes")
    common = dict(
        id=record_id,
        url=url,
        date=headers.get("WARC-Date"),
        dump=dump,
        file_path=f.path,
        source_format="warc",
        record_index=index,
        warc_record_id=record_id,
    )
    if rec.record_type == WarcRecordType.conversion:  # WET: the text is already extracted
        text, encoding, bad = decode_text(block)
        return _record(content=text, content_type="text", encoding=encoding, decode_errors=bad, **common)
    charset = None
    warc_type = (headers.get("Content-Type") or "").lower()
    if rec.record_type == WarcRecordType.response and "application/http" in warc_type:
        try:
            mime, charset, body = _split_http(block)
        except ValueError as e:
            return _error(f.path, index, "bad_http_response", str(e), **where)
    else:
        mime, body = warc_type.split(";")[0].strip(), block
        charset = _charset_of(warc_type)
    if not mime:
        mime = (headers.get("WARC-Identified-Payload-Type") or "").lower()
    if not mime and body.lstrip()[:1] == b"<":
        mime = "text/html"
    if mime not in html_types:
        return _error(
            f.path, index, "non_html_payload", f"payload type {mime or 'unknown'!r} is not HTML", **where
        )
    return _html_record(body, charset, **common)


def _charset_of(content_type: str) -> str | None:
    m = _HTTP_CHARSET_RE.search(content_type)
    return m.group(1) if m else None


def _split_http(block: bytes) -> tuple[str, str | None, bytes]:
    """(mime type, charset, body) of an HTTP response block; tolerant of LF-only header lines."""
    fp = io.BytesIO(block)
    status = fp.readline(65537)
    if not status.startswith(b"HTTP/"):
        raise ValueError(f"the response record does not start with an HTTP status line: {status[:60]!r}")
    try:
        headers = http.client.parse_headers(fp)
    except http.client.HTTPException as e:
        raise ValueError(f"unreadable HTTP headers: {e}") from e
    body = fp.read()
    content_type = headers.get("Content-Type", "") or ""
    encoding = (headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip") and body[:2] == b"\x1f\x8b":
        # Common Crawl stores decoded bodies (and renames the header); other crawlers keep the gzip.
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as e:
            raise ValueError(f"gzip-encoded body does not decompress: {e}") from e
    return content_type.split(";")[0].strip().lower(), _charset_of(content_type), body


# ---- JSON / JSONL --------------------------------------------------------------------------------


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


def _read_json(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    with _open_raw(f.path) as raw, _decompressed(raw, compression) as decompressed:
        stream = _BreakGuard(decompressed)
        head = stream.read(4096)
        first = head.lstrip(codecs.BOM_UTF8).lstrip()[:1]
        rest = _Prepended(head, stream)
        if first == b"[":
            yield from _read_json_array(f, rest, cfg)
        else:
            yield from _read_jsonl(f, rest, cfg)


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


def _read_jsonl(f: InputFile, stream: Any, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    # room for JSON escaping around a document of the largest allowed size
    limit = cfg.max_document_bytes * 2 + 64 * 1024
    index = 0
    lines = _lines(stream, limit)
    while True:
        try:
            line, size = next(lines)
        except StopIteration:
            if stream.error is not None:  # the stream broke (truncated gzip): one row, then stop
                yield _broken(f, index, stream.error)
            return
        if line is not None and not line.strip():
            continue
        if line is None:
            yield _error(f.path, index, "document_too_large", f"line of {size} bytes > the size limit")
        else:
            try:
                item = _json_line(f, line, index, cfg)
            except Exception as e:  # noqa: BLE001 - this line's problem only
                item = _error(f.path, index, "bad_record", f"{type(e).__name__}: {e}")
            yield item
        index += 1


def _json_line(f: InputFile, line: bytes, index: int, cfg: ReadConfig) -> dict[str, Any]:
    # JSON is UTF-8 by definition: decode leniently, count what had to be replaced
    try:
        text, bad = line.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        bad = _replacements(text, line)
    try:
        obj = json.loads(text)
    except ValueError as e:
        return _error(f.path, index, "invalid_json", f"line {index + 1}: {e}: {text[:80]!r}")
    return _from_mapping(obj, f, index, cfg, "jsonl", bad)


def _read_json_array(f: InputFile, stream: Any, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    # A JSON array has to be parsed whole; fine for the small files that use it (JSONL scales).
    data = stream.read()
    if stream.error is not None:
        yield _broken(f, 0, stream.error)
        return
    text = data.decode("utf-8", "replace")
    bad = _replacements(text, data)
    try:
        items = json.loads(text)
    except ValueError as e:
        yield _error(f.path, 0, "invalid_json", f"the JSON array does not parse: {e}")
        return
    if not isinstance(items, list):
        items = [items]
    for index, obj in enumerate(items):
        yield _from_mapping(obj, f, index, cfg, "json", bad if index == 0 else 0)


def _lookup(obj: dict[str, Any], dotted: str) -> Any:
    if "." not in dotted:
        return obj.get(dotted)
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _first(obj: dict[str, Any], fields: list[str]) -> tuple[str | None, Any]:
    for name in fields:
        value = _lookup(obj, name)
        if value is not None and value != "":
            return name, value
    return None, None


def _from_mapping(
    obj: Any, f: InputFile, index: int, cfg: ReadConfig, source_format: str, decode_errors: int = 0
) -> dict[str, Any]:
    """A FineWeb, C4 or Dolma shaped record onto the FineWeb columns."""
    if not isinstance(obj, dict):
        return _error(f.path, index, "not_a_record", f"expected a JSON object, got {type(obj).__name__}")
    _, raw_id = _first(obj, cfg.id_fields)
    _, url = _first(obj, cfg.url_fields)
    where = {"id": None if raw_id is None else str(raw_id), "url": None if url is None else str(url)}
    content_type = "text"
    _, content = _first(obj, cfg.text_fields)
    encoding, html_bytes = "utf-8", None
    if not isinstance(content, str):
        content_type = "html"
        _, content = _first(obj, cfg.html_fields)
        if isinstance(content, bytes):  # a parquet binary column: raw page bytes
            html_bytes = content
            content, encoding, bad = decode_text(content, (_meta_charset(content),))
            decode_errors += bad
    if content_type == "html" and isinstance(content, str):
        if kind := binary_kind(html_bytes if html_bytes is not None else content):
            return _binary_error(kind, file_path=f.path, record_index=index, **where)
    if not isinstance(content, str):
        tried = ", ".join(cfg.text_fields + cfg.html_fields)
        return _error(f.path, index, "no_text", f"none of the fields {tried} holds a string", **where)
    size = (
        len(content)
        if len(content) * 4 <= cfg.max_document_bytes
        else len(content.encode("utf-8", "replace"))
    )
    if size > cfg.max_document_bytes:
        return _error(
            f.path,
            index,
            "document_too_large",
            f"{size} bytes > max_document_bytes={cfg.max_document_bytes}",
            **where,
        )
    dump_field, dump = _first(obj, cfg.dump_fields)
    if dump is not None and dump_field != "dump":
        m = _DUMP_RE.search(str(dump))
        dump = m.group(0) if m else None
    _, date = _first(obj, cfg.date_fields)
    language = _lookup(obj, "language") or _lookup(obj, "metadata.language")
    score = _lookup(obj, "language_score")
    if score is None:
        score = _lookup(obj, "metadata.language_score")
    own_path = obj.get("file_path")
    file_path = own_path if isinstance(own_path, str) and own_path else f.path
    record_id = where["id"] or stable_id(f.path, index)
    return _record(
        id=record_id,
        url=where["url"],
        date=None if date is None else str(date),
        dump=None if dump is None else str(dump),
        file_path=file_path,
        content=content,
        content_type=content_type,
        source_format=source_format,
        record_index=index,
        language=language if isinstance(language, str) else None,
        language_score=float(score) if isinstance(score, int | float) else None,
        encoding=encoding,
        decode_errors=decode_errors,
    )


# ---- parquet -------------------------------------------------------------------------------------


def _read_parquet(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    index = 0
    with _open_random_access(f.path) as handle:
        try:
            pf = pq.ParquetFile(handle)
        except Exception as e:  # noqa: BLE001 - not a parquet file after all, or its footer is gone
            yield _error(
                f.path, None, "corrupt_input", f"not a readable parquet file: {type(e).__name__}: {e}"
            )
            return
        wanted = {
            name.split(".")[0]
            for name in [
                *cfg.text_fields,
                *cfg.html_fields,
                *cfg.id_fields,
                *cfg.url_fields,
                *cfg.date_fields,
            ]
            + [*cfg.dump_fields, "file_path", "language", "language_score", "metadata"]
        }
        columns = [c for c in pf.schema_arrow.names if c in wanted]
        batches = pf.iter_batches(batch_size=cfg.parquet_batch_rows, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - a damaged row group: one row, then stop
                yield _broken(f, index, e)
                return
            for row in batch.to_pylist():
                yield _from_mapping(row, f, index, cfg, "parquet")
                index += 1


# ---- HTML files ----------------------------------------------------------------------------------


def _read_html(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    where = {"id": stable_id(f.path, 0)}
    with _open_raw(f.path) as raw, _decompressed(raw, compression) as decompressed:
        stream = _BreakGuard(decompressed)
        data = stream.read(cfg.max_document_bytes + 1)
    if stream.error is not None:
        yield _broken(f, 0, stream.error)
        return
    if len(data) > cfg.max_document_bytes:
        yield _error(
            f.path, 0, "document_too_large", f"more than max_document_bytes={cfg.max_document_bytes}", **where
        )
        return
    yield _html_record(data, None, id=where["id"], file_path=f.path, source_format="html", record_index=0)


def is_error(item: dict[str, Any]) -> bool:
    return bool(item.get("_error"))


def as_row(item: dict[str, Any]) -> dict[str, Any]:
    """A record or an error row with every key of ``ROW_FIELDS`` (``_error`` False for records)."""
    row = dict.fromkeys(ROW_FIELDS)
    row.update(item)
    row["_error"] = bool(item.get("_error"))
    return row
