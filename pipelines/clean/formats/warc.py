"""WARC, WET and WAT files (fastwarc): response, resource and conversion records; HTTP headers parsed with
the standard library; a gzip-encoded body inflated to a bound."""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterator
from typing import Any

from pipelines import storage
from pipelines.clean.bounded import TooLarge, inflate_gzip
from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import DUMP_RE, broken, document, error_row, html_document
from pipelines.decode import BreakGuard, decode_text, http_charset, open_decompressed
from pipelines.inputs import InputFile


def read_warc(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
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
    with storage.open_input(f.path) as raw, open_decompressed(raw, compression) as decompressed:
        stream = BreakGuard(decompressed)
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
                    yield broken(f, index, stream.error)
                return
            except (EOFError, OSError) as e:  # the stream itself broke: one row, then stop
                yield broken(f, index, e)
                return
            except BaseException as e:  # noqa: BLE001 - this record's problem only (fastwarc panics are BaseExceptions)
                if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
                    raise
                item = error_row(f.path, index, "bad_record", f"{type(e).__name__}: {e}")
            yield item
            index += 1


def _warcinfo_dump(block: bytes) -> str | None:
    m = DUMP_RE.search(block.decode("utf-8", "replace"))
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
        return error_row(
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
        return document(content=text, content_type="text", encoding=encoding, decode_errors=bad, **common)
    charset = None
    warc_type = (headers.get("Content-Type") or "").lower()
    if rec.record_type == WarcRecordType.response and "application/http" in warc_type:
        try:
            mime, charset, body = _split_http(block, cfg.max_document_bytes)
        except TooLarge as e:  # a gzip bomb, or just a page too large once inflated
            return error_row(f.path, index, "document_too_large", str(e), **where)
        except ValueError as e:
            return error_row(f.path, index, "bad_http_response", str(e), **where)
    else:
        mime, body = warc_type.split(";")[0].strip(), block
        charset = http_charset(warc_type)
    if not mime:
        mime = (headers.get("WARC-Identified-Payload-Type") or "").lower()
    if not mime and body.lstrip()[:1] == b"<":
        mime = "text/html"
    if mime not in html_types:
        return error_row(
            f.path, index, "non_html_payload", f"payload type {mime or 'unknown'!r} is not HTML", **where
        )
    return html_document(body, charset, **common)


def _split_http(block: bytes, max_body: int) -> tuple[str, str | None, bytes]:
    """(mime type, charset, body) of an HTTP response block; tolerant of LF-only header lines.

    A gzip-encoded body is inflated to at most ``max_body`` bytes (``TooLarge`` past it).
    """
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
        body = inflate_gzip(body, max_body)
    return content_type.split(";")[0].strip().lower(), http_charset(content_type), body
