"""What a clean reader yields: a document dict (FineWeb's columns and where it came from) or an error
row, one per input record, and the mapping of FineWeb, C4 and Dolma shaped records onto those columns.

The accounting rule: every *input record* (a WARC response/resource/conversion record, a JSONL line,
a JSON array element, a parquet row, an HTML file) comes out as exactly one document dict or one error
dict, and both carry ``record_index`` = that record's ordinal in its file. So for a file with ``n``
records the indices seen are exactly ``range(n)``; when a file breaks (truncated gzip), the error row
takes the index of the first record that could not be read and nothing after it is claimed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pipelines.clean.config import ReadConfig
from pipelines.decode import binary_kind, decode_text, meta_charset, valid_utf8_fields
from pipelines.inputs import InputFile

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


DUMP_RE = re.compile(r"CC-MAIN-\d{4}-\d{2}")
# a record's own language is kept when it looks like a language tag ("en", "zh-Hans", "sr_Latn"): the
# clean output is partitioned by it (language=xx/), and 300 characters or a "/" made a folder name fail
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:[_-][A-Za-z0-9]{1,8}){0,4}", re.ASCII)


def error_row(
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


def document(**fields: Any) -> dict[str, Any]:
    rec = dict.fromkeys(RECORD_FIELDS)
    rec.update(fields)
    rec, bad = valid_utf8_fields(rec)
    if bad:
        rec["decode_errors"] = (rec.get("decode_errors") or 0) + bad
    return rec


def broken(f: InputFile, index: int, e: BaseException) -> dict[str, Any]:
    """The one error row of a file that breaks: where, and why."""
    if isinstance(e, EOFError) or "truncated" in str(e).lower():  # pyarrow's zstd: OSError("Truncated ...")
        # "the file", not "the compressed stream": a plain .warc is cut short too
        reason, what = "truncated_input", "the file ends early"
    else:
        reason, what = "corrupt_input", "the file cannot be read further"
    return error_row(f.path, index, reason, f"{what} at record {index}: {type(e).__name__}: {e}")


def binary_error(kind: str, **fields: Any) -> dict[str, Any]:
    return error_row(
        fields["file_path"],
        fields.get("record_index"),
        "non_html_payload",
        f"the payload is {kind}, not HTML",
        id=fields.get("id"),
        url=fields.get("url"),
    )


def html_document(data: bytes, header_charset: str | None, **fields: Any) -> dict[str, Any]:
    """An HTML record, or a ``non_html_payload`` error when the bytes are binary (for every source).

    Text that UTF-8 decoding made skips ``document``'s lone-surrogate check: Python's UTF-8 decoder
    never yields one (it rejects or replaces encoded surrogates), and the check encodes the whole
    page only to throw the bytes away (about 0.15 ms a page). Other codecs' text is checked.
    """
    if kind := binary_kind(data):
        return binary_error(kind, **fields)
    text, encoding, bad = decode_text(data, (header_charset, meta_charset(data)))
    if encoding != "utf-8":
        return document(content=text, content_type="html", encoding=encoding, decode_errors=bad, **fields)
    rec = document(content_type="html", encoding=encoding, decode_errors=bad, **fields)
    rec["content"] = text
    return rec


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


def from_mapping(
    obj: Any, f: InputFile, index: int, cfg: ReadConfig, source_format: str, decode_errors: int = 0
) -> dict[str, Any]:
    """A FineWeb, C4 or Dolma shaped record onto the FineWeb columns."""
    if not isinstance(obj, dict):
        return error_row(f.path, index, "not_a_record", f"expected a JSON object, got {type(obj).__name__}")
    _, raw_id = _first(obj, cfg.id_fields)
    _, url = _first(obj, cfg.url_fields)
    where = {"id": None if raw_id is None else str(raw_id), "url": None if url is None else str(url)}
    content_type = "text"
    _, content = _first(obj, cfg.text_fields)
    encoding, html_bytes = "utf-8", None
    if isinstance(content, bytes):  # a parquet binary column of text: decoded like a page's bytes
        if kind := binary_kind(content):
            return binary_error(kind, file_path=f.path, record_index=index, **where)
        content, encoding, bad = decode_text(content)
        decode_errors += bad
    if not isinstance(content, str):
        content_type = "html"
        _, content = _first(obj, cfg.html_fields)
        if isinstance(content, bytes):  # a parquet binary column: raw page bytes
            html_bytes = content
            content, encoding, bad = decode_text(content, (meta_charset(content),))
            decode_errors += bad
    if content_type == "html" and isinstance(content, str):
        if kind := binary_kind(html_bytes if html_bytes is not None else content):
            return binary_error(kind, file_path=f.path, record_index=index, **where)
    if not isinstance(content, str):
        tried = ", ".join(cfg.text_fields + cfg.html_fields)
        return error_row(f.path, index, "no_text", f"none of the fields {tried} holds a string", **where)
    size = (
        len(content)
        if len(content) * 4 <= cfg.max_document_bytes
        else len(content.encode("utf-8", "replace"))
    )
    if size > cfg.max_document_bytes:
        return error_row(
            f.path,
            index,
            "document_too_large",
            f"{size} bytes > max_document_bytes={cfg.max_document_bytes}",
            **where,
        )
    dump_field, dump = _first(obj, cfg.dump_fields)
    if dump is not None and dump_field != "dump":
        m = DUMP_RE.search(str(dump))
        dump = m.group(0) if m else None
    _, date = _first(obj, cfg.date_fields)
    language = _lookup(obj, "language") or _lookup(obj, "metadata.language")
    score = _lookup(obj, "language_score")
    if score is None:
        score = _lookup(obj, "metadata.language_score")
    own_path = obj.get("file_path")
    file_path = own_path if isinstance(own_path, str) and own_path else f.path
    record_id = where["id"] or stable_id(f.path, index)
    return document(
        id=record_id,
        url=where["url"],
        date=None if date is None else str(date),
        dump=None if dump is None else str(dump),
        file_path=file_path,
        content=content,
        content_type=content_type,
        source_format=source_format,
        record_index=index,
        language=language if isinstance(language, str) and LANGUAGE_TAG.fullmatch(language) else None,
        language_score=_score(score),
        encoding=encoding,
        decode_errors=decode_errors,
    )


def guarded(f: InputFile, index: int, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record ``build`` makes, or a ``bad_record`` row for it: one record's surprise must not end
    the rest of its file (a parquet file lost its remaining rows to one page's charset label)."""
    try:
        return build()
    except Exception as e:  # noqa: BLE001 - this record's problem only
        return error_row(f.path, index, "bad_record", f"{type(e).__name__}: {e}")


def _score(value: Any) -> float | None:
    """A record's own language score, or None when it is not a number a float can hold."""
    if not isinstance(value, int | float | Decimal) or isinstance(value, bool):  # Decimal: exact JSON parse
        return None
    try:
        score = float(value)
    except OverflowError:  # an integer of 400 digits
        return None
    return score if math.isfinite(score) else None


def is_error(item: dict[str, Any]) -> bool:
    return bool(item.get("_error"))


def as_row(item: dict[str, Any]) -> dict[str, Any]:
    """A record or an error row with every key of ``ROW_FIELDS`` (``_error`` False for records)."""
    row = dict.fromkeys(ROW_FIELDS)
    row.update(item)
    row["_error"] = bool(item.get("_error"))
    return row
