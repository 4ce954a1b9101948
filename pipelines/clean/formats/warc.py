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
from pipelines.decode import BreakGuard, decode_text, http_charset, open_decompressed, starts_like_markup
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
    if _bare_lf_framing(f, compression):
        yield error_row(
            f.path,
            None,
            "corrupt_input",
            "the WARC header lines end in a bare LF, not CRLF as the WARC standard requires, so records "
            "cannot be told apart; rewrite the file with CRLF header lines (e.g. warcio's `recompress`)",
        )
        return
    with storage.open_input(f.path) as raw, _inflate(raw, compression) as decompressed:
        guard = BreakGuard(decompressed)
        stream = ResyncStream(
            guard, breaks=getattr(decompressed, "breaks", ()), members=getattr(decompressed, "starts", None)
        )
        sync = _Resync(stream)
        broke: BaseException | None = None  # what ended the file early, if anything did
        reported = 0  # damaged gzip members reported so far
        headless: dict[str, Any] | None = None  # a document record whose header has no Content-Length
        while True:
            for skip in _settled_skips(decompressed)[reported:]:
                yield error_row(f.path, index, "corrupt_record", skip.describe())
                index, reported = index + 1, reported + 1
            try:
                rec = next(sync.records)
                if headless is not None:  # records follow it: its header was damaged, not cut short
                    yield headless
                    headless = None
                if (stretch := sync.found(rec)) is not None:  # the damaged stretch before it
                    yield error_row(f.path, index, "corrupt_record", stretch)
                    index += 1
                if (real_end := sync.overran(rec)) is not None:
                    yield error_row(
                        f.path,
                        index,
                        "corrupt_record",
                        f"the record at byte {rec.stream_pos} claims {rec.content_length} bytes, past the "
                        f"next gzip member's record at byte {real_end} (a wrong Content-Length)",
                        **_where(rec),
                    )
                    index += 1
                    continue
                if rec.record_type == WarcRecordType.warcinfo:
                    dump = _warcinfo_dump(rec.reader.read(64 * 1024)) or dump
                    continue
                if guard.error is not None and not _has_length(rec):
                    raise EOFError("the stream ends inside this record's headers")
                if rec.record_type in document_types and not _has_length(rec):
                    # a file cut inside this header (the usual case: told at the end) or a damaged one
                    headless = error_row(f.path, index, "corrupt_record", _NO_LENGTH, **_where(rec))
                    index += 1
                    continue
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
                        **_where(rec),
                    )
            except StopIteration:
                broke = guard.error
                if broke is None and sync.ran_past_the_end():
                    continue
                break
            except (EOFError, OSError) as e:
                if stream.paused:  # the record was cut by a damaged gzip member, counted in its row
                    continue
                if guard.error is not None or isinstance(e, EOFError):  # the stream itself broke
                    broke = guard.error or e
                    break
                if not sync.failed(e):  # a record header fastwarc cannot read: on from the next one
                    break
                continue
            except BaseException as e:  # noqa: BLE001 - this record's problem only (fastwarc panics are BaseExceptions)
                if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
                    raise
                item = error_row(f.path, index, "bad_record", f"{type(e).__name__}: {e}")
            yield item
            index += 1
        if headless is not None and sync.damage is not None:  # bytes followed: a whole, damaged header
            yield headless
        elif headless is not None:  # nothing followed: the file ends inside its header
            cut = EOFError(f"the file ends inside the WARC header of record {headless['record_index']}")
            yield broken(f, headless["record_index"], cut)  # its id and URL may be cut short too
        if sync.damage is not None:
            yield error_row(f.path, index, "corrupt_record", sync.damage.describe(None))
            index += 1
        for skip in getattr(decompressed, "skipped", [])[reported:]:
            yield error_row(f.path, index, "corrupt_record", skip.describe())
            index += 1
        if broke is not None:
            yield broken(f, index, broke)


def _bare_lf_framing(f: InputFile, compression: str | None) -> bool:
    """Whether the file's first WARC header line ends in a bare LF. fastwarc then reads each record's
    header on to the first CRLF CRLF, the end of the HTTP headers inside the next records, and whole
    records vanished into a warcinfo record's header with no row (a file of 46 pages: 29 error rows,
    17 pages never mentioned)."""
    with storage.open_input(f.path) as raw, _inflate(raw, compression) as stream:
        try:
            head = stream.read(256)
        except (EOFError, OSError, ValueError):
            return False  # damage: the reader reports it
    first, newline, _ = head.lstrip(b"\r\n").partition(b"\n")
    return first.startswith(b"WARC/") and bool(newline) and not first.endswith(b"\r")


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
    """Bytes between two readable records: what went wrong, and where the search may go on."""

    start: int
    what: str
    floor: int = 0  # a restart never goes back to a header it already failed on

    def describe(self, resumed_at: int | None) -> str:
        if resumed_at is None:
            return f"{self.what}; no record after it"
        if resumed_at > self.start:
            return f"{self.what}; bytes {self.start}-{resumed_at} skipped"
        return f"{self.what}; the next record is read"


class _Resync:
    """Where parsing stands, and how it goes on past damage: the last record read, the damaged stretch
    being skipped, and fastwarc's records from the latest restart on."""

    def __init__(self, stream: ResyncStream) -> None:
        self.stream = stream
        self.records = _Records(stream)
        self.last: tuple[int, int] | None = None  # (stream position, content length) of the last record
        self.base = 0  # where parsing last started over: a search for the next record never goes before
        self.damage: _Damage | None = None  # a stretch fastwarc could not read, reported once it ends

    def found(self, rec: Any) -> str | None:
        """Note a record fastwarc read; the damaged stretch it ends, described, if there was one."""
        self.last = (rec.stream_pos, rec.content_length)
        if self.damage is None:
            return None
        stretch, self.damage = self.damage.describe(rec.stream_pos), None
        return stretch

    def overran(self, rec: Any) -> int | None:
        """Where the record really ended, when its Content-Length runs into the next gzip member's
        record (warc_resync.py); parsing then starts over there and the record is dropped."""
        end = self.stream.record_end(rec.stream_pos, rec.content_length)
        real_end = None if end is None else self.stream.overrun(rec.stream_pos, end)
        if real_end is not None:
            self._start_over(real_end)
        return real_end

    def failed(self, e: BaseException) -> bool:
        """fastwarc cannot read a record header: go on from the next header line; False when none
        follows."""
        if self.damage is None:
            self.damage = self._damage_after_last(f"{type(e).__name__}: {e}")
        if self.damage.floor and "Maximum header length" in str(e):  # at the header resumed at
            past = self.stream.past_long_header(self.damage.floor - 1)
            if past is None:
                return False
            self.damage.floor = max(self.damage.floor, past)
        return self._resume()

    def _damage_after_last(self, error: str) -> _Damage:
        """The damage starts where the last record ends (or a bound below, if it is no longer held);
        or, when a record header follows a blank line inside its block, its Content-Length was too
        long and the next record starts there (it was lost with this one)."""
        if self.last is None:
            return _Damage(self.base, f"unreadable WARC record after byte {self.base} ({error})")
        start, length = self.last
        end = self.stream.record_end(start, length) or start + length
        inside = self.stream.boundary_inside(start, end)
        if inside is None:
            return _Damage(end, f"unreadable WARC record after byte {end} ({error})")
        what = f"the record at byte {start} claims {length} bytes, past the next record at byte {inside}"
        return _Damage(inside, f"{what} (a wrong Content-Length; it was read with them)")

    def ran_past_the_end(self) -> bool:
        """At the end of the stream: whether the last record claimed bytes past it. A Content-Length
        of 10^15 made fastwarc skip all the rest of the file as its block, without a word; the search
        goes back over what is still held of it (at least the last MiB)."""
        if self.last is None:
            return False
        start, length = self.last
        if (self.stream.record_end(start, length) or start + length) <= self.stream.tell():
            return False
        self.last = None
        what = f"the record at byte {start} claims {length} bytes, past the end of the file"
        what += f" at byte {self.stream.tell()}"
        self.damage = _Damage(start, what, floor=start + 1)
        return self._resume()

    def _resume(self) -> bool:
        assert self.damage is not None
        resumed = self.stream.restart(max(self.damage.start, self.damage.floor))
        if resumed is None:
            return False
        self.damage.floor = resumed + 1
        self.records = _Records(self.stream)
        return True

    def _start_over(self, at: int) -> None:
        self.stream.restart(at)
        self.records = _Records(self.stream)
        self.last, self.base = None, at


class _Records:
    """fastwarc's records, read on across the breaks of a damaged gzip member.

    At a break fastwarc sees the end of the file (warc_resync.py). The record it stopped in, which
    is only part of one, is dropped: the skipped member's row counts it. Parsing goes on with a new
    ArchiveIterator after the break, where the next member starts a record.
    """

    def __init__(self, stream: ResyncStream) -> None:
        self.stream = stream
        self._it = _archive(stream)

    def __iter__(self) -> _Records:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                rec = next(self._it)
            except (StopIteration, EOFError, OSError):
                if not self.stream.paused:
                    raise
            else:
                if not self.stream.cut_short(rec.stream_pos, rec.content_length):
                    return rec
            self.stream.skip_to_break()
            self._it = _archive(self.stream)


def _archive(stream: ResyncStream) -> Iterator[Any]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    # every type, filtered in read_warc: fastwarc's own filter also drops records whose WARC-Type line
    # was damaged, which must be counted, not vanish.
    # parse_http=False: HTTP headers are parsed below with the standard library, which accepts the
    # bare-LF header lines of older crawlers (ClueWeb09) that fastwarc's parser reads as garbage.
    return iter(
        ArchiveIterator(stream, parse_http=False, strict_mode=False, record_types=WarcRecordType.any_type)
    )


_NO_LENGTH = "the record's WARC header has no Content-Length (damaged): its block cannot be read"


def _has_length(rec: Any) -> bool:
    return (rec.headers.get("Content-Length") or "").strip().isdigit()


def _where(rec: Any) -> dict[str, str | None]:
    """The record's id and URL, as every row about it names them."""
    return {"id": rec.headers.get("WARC-Record-ID"), "url": rec.headers.get("WARC-Target-URI")}


def _warcinfo_dump(block: bytes) -> str | None:
    m = DUMP_RE.search(block.decode("utf-8", "replace"))
    return m.group(0) if m else None


def _warc_record(
    f: InputFile, rec: Any, index: int, dump: str | None, html_types: set[str], cfg: ReadConfig
) -> dict[str, Any]:
    from fastwarc.warc import WarcRecordType

    headers = rec.headers
    where = _where(rec)
    record_id, url = where["id"], where["url"]
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
    # a response record holds an HTTP message when it says so, or when it says nothing (its Content-Type
    # is a SHOULD of the WARC spec; ClueWeb-style writers leave it out) and its block starts like one:
    # read as a page, the status line and headers became text and the body's encoding was never undone
    is_http = "application/http" in warc_type or (not warc_type and block.lstrip()[:5] == b"HTTP/")
    if rec.record_type == WarcRecordType.response and is_http:
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
    if not mime and starts_like_markup(body):
        mime = "text/html"
    if mime not in html_types:
        return error_row(
            f.path, index, "non_html_payload", f"payload type {mime or 'unknown'!r} is not HTML", **where
        )
    return html_document(body, charset, **common)
