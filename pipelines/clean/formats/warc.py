"""WARC, WET and WAT files (fastwarc): response, resource and conversion records, read on past a
damaged record or gzip member; the HTTP response inside a record is split by http_block.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pipelines import storage
from pipelines.clean.bounded import TooLarge
from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import DUMP_RE, broken, document, error_row, html_document
from pipelines.clean.formats.gzip_members import MemberGzip, Skipped
from pipelines.clean.formats.http_block import split_http
from pipelines.clean.formats.warc_resync import ResyncStream
from pipelines.decode import BreakGuard, decode_text, http_charset, open_decompressed
from pipelines.inputs import InputFile


def read_warc(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    from fastwarc.warc import WarcRecordType

    document_types = (  # a tuple: fastwarc's record types are not hashable
        WarcRecordType.response,
        WarcRecordType.resource,
        WarcRecordType.conversion,
    )
    html_types = {t.lower() for t in cfg.html_mime_types}
    dump: str | None = None
    index = 0
    with storage.open_input(f.path) as raw, _inflate(raw, compression) as decompressed:
        guard = BreakGuard(decompressed)
        stream = ResyncStream(guard)
        records = _records(stream)
        last: tuple[int, int] | None = None  # (stream position, content length) of the last record read
        damage: _Damage | None = None  # a stretch fastwarc could not read, reported once it ends
        broke: BaseException | None = None  # what ended the file early, if anything did
        reported = 0  # damaged gzip members reported so far
        while True:
            for skip in _settled_skips(decompressed)[reported:]:
                yield error_row(f.path, index, "corrupt_record", skip.describe())
                index, reported = index + 1, reported + 1
            try:
                rec = next(records)
                last = (rec.stream_pos, rec.content_length)
                if damage is not None:
                    yield damage.row(f, index, rec.stream_pos)
                    index, damage = index + 1, None
                if rec.record_type == WarcRecordType.warcinfo:
                    dump = _warcinfo_dump(rec.reader.read(64 * 1024)) or dump
                    continue
                if (
                    guard.error is not None
                    and not (rec.headers.get("Content-Length") or "").strip().isdigit()
                ):
                    raise EOFError("the stream ends inside this record's headers")
                if rec.record_type in document_types:
                    item = _warc_record(f, rec, index, dump, html_types, cfg)
                elif rec.headers.get("WARC-Type"):  # request, metadata, revisit, ...: not documents
                    continue
                else:
                    item = error_row(
                        f.path,
                        index,
                        "bad_record",
                        "the record has no WARC-Type header (a damaged header?)",
                        id=rec.headers.get("WARC-Record-ID"),
                        url=rec.headers.get("WARC-Target-URI"),
                    )
            except StopIteration:
                broke = guard.error
                break
            except (EOFError, OSError) as e:
                if guard.error is not None or isinstance(e, EOFError):  # the stream itself broke
                    broke = guard.error or e
                    break
                # a record header fastwarc cannot read: parse again from the next one
                if damage is None:
                    # damage starts where the last record ends (or a bound below, if it was too long to hold)
                    start = 0 if last is None else stream.record_end(*last) or sum(last)
                    damage = _Damage(start, f"{type(e).__name__}: {e}")
                resumed = stream.restart(max(damage.start, damage.floor))
                if resumed is None:
                    break
                damage.floor = resumed + 1
                records = _records(stream)
                continue
            except BaseException as e:  # noqa: BLE001 - this record's problem only (fastwarc panics are BaseExceptions)
                if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
                    raise
                item = error_row(f.path, index, "bad_record", f"{type(e).__name__}: {e}")
            yield item
            index += 1
        if damage is not None:
            yield damage.row(f, index, None)
            index += 1
        for skip in getattr(decompressed, "skipped", [])[reported:]:
            yield error_row(f.path, index, "corrupt_record", skip.describe())
            index += 1
        if broke is not None:
            yield broken(f, index, broke)


def _inflate(raw: BinaryIO, compression: str | None) -> BinaryIO:
    """A gzip-compressed WARC is read member by member, so a damaged member costs only its records."""
    if compression == "gzip":
        return MemberGzip(raw)  # type: ignore[return-value]
    return open_decompressed(raw, compression)


def _settled_skips(decompressed: Any) -> list[Skipped]:
    """The damaged gzip stretches whose end is known (the last one may still grow)."""
    return decompressed.settled() if isinstance(decompressed, MemberGzip) else []


@dataclass
class _Damage:
    """Bytes between two readable records: what made fastwarc stop, and where the search may go on."""

    start: int
    error: str
    floor: int = 0  # a restart never goes back to a header it already failed on

    def row(self, f: InputFile, index: int, resumed_at: int | None) -> dict[str, Any]:
        where = f"bytes {self.start}-{resumed_at} skipped" if resumed_at is not None else "no record after it"
        return error_row(
            f.path,
            index,
            "corrupt_record",
            f"unreadable WARC record after byte {self.start} ({self.error}); {where}",
        )


def _records(stream: ResyncStream) -> Iterator[Any]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    # every type, filtered in read_warc: fastwarc's own filter also drops records whose WARC-Type line
    # was damaged, which must be counted, not vanish.
    # parse_http=False: HTTP headers are parsed below with the standard library, which accepts the
    # bare-LF header lines of older crawlers (ClueWeb09) that fastwarc's parser reads as garbage.
    return iter(
        ArchiveIterator(stream, parse_http=False, strict_mode=False, record_types=WarcRecordType.any_type)
    )


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
            mime, charset, body = split_http(block, cfg.max_document_bytes)
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
