"""HTTP response blocks as crawlers store them in WARC records: the status line, headers (bare-LF
lines of older crawlers accepted), and a body de-chunked and inflated as the headers say."""

from __future__ import annotations

import email.parser
import http.client
import io
import re

from pipelines.clean.bounded import inflate_body
from pipelines.decode import compression_from_magic, http_charset, starts_like_markup

CHUNK_SIZE_LINE = re.compile(rb"[0-9a-fA-F]{1,16}[ \t]*(;[^\r\n]*)?\r?\n")
MAX_HEADER_LINE = 65536  # http.client's own limit on a line
MAX_HEADER_BYTES = 1 << 20


def split_http(block: bytes, max_body: int) -> tuple[str, str | None, bytes]:
    """(mime type, charset, body) of an HTTP response block; tolerant of LF-only header lines.

    A body in a ``Content-Encoding`` (gzip, deflate, br, zstd) is decoded to at most ``max_body``
    bytes (``TooLarge`` past it); one in a coding we do not know is a ``ValueError``.
    """
    fp = io.BytesIO(block)
    status = fp.readline(65537)
    if not status.startswith(b"HTTP/"):
        raise ValueError(f"the response record does not start with an HTTP status line: {status[:60]!r}")
    headers = _read_headers(fp)
    body = fp.read()
    transfer = _codings(headers.get("Transfer-Encoding"))
    if transfer[-1:] == ["chunked"] and CHUNK_SIZE_LINE.match(body):
        # wget and browser-based crawlers keep the body as it came over the wire; Common Crawl
        # de-chunks it and renames the header. A body that only claims to be chunked is kept as it is.
        body = _dechunk(body)
    content_type = headers.get("Content-Type", "") or ""
    # the server applied the content codings, then the transfer codings (``gzip, chunked``: the
    # gzip was left on a de-chunked body); each list is applied in order, so undone last first
    codings = _codings(headers.get("Content-Encoding")) + [c for c in transfer if c != "chunked"]
    for coding in reversed(codings):
        if not _still_encoded(body, coding):
            break
        body = inflate_body(body, coding, max_body)
    # "text/html, text/html" (a header sent twice, joined) is HTML: the first type is the one
    mime = content_type.split(";")[0].split(",")[0].strip().lower()
    return mime, http_charset(content_type), body


def _codings(header: str | None) -> list[str]:
    return [c.strip() for c in (header or "").lower().split(",") if c.strip() not in ("", "identity")]


def _still_encoded(body: bytes, coding: str) -> bool:
    """Whether ``body`` is still in ``coding``: Common Crawl stores decoded bodies (and renames the
    header), some tools decode and keep the header, and other crawlers (wget, Heritrix) keep the
    bytes as they came. gzip and zstd start with their magic bytes; deflate and brotli have none that
    can be relied on, so a body that already starts like markup is taken as decoded."""
    if coding in ("gzip", "x-gzip", "zstd"):
        return compression_from_magic(body) == coding.removeprefix("x-")
    return not starts_like_markup(body)


class _Wire:
    """What ``http.client.HTTPResponse`` reads a response from: a socket's file, here over bytes."""

    def __init__(self, data: bytes) -> None:
        self.file = io.BytesIO(data)

    def makefile(self, mode: str) -> io.BytesIO:
        return self.file


def _dechunk(body: bytes) -> bytes:
    """The payload of a chunked body, by the standard library's HTTP client; a truncated one keeps
    the chunks that arrived (a crawler may have stopped reading a page mid-transfer)."""
    response = http.client.HTTPResponse(
        _Wire(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    )
    response.begin()
    try:
        return response.read()
    except http.client.IncompleteRead as e:
        return e.partial
    except (http.client.HTTPException, OverflowError) as e:  # a chunk-size line too long, a size past 2^63
        raise ValueError(f"unreadable chunked body: {type(e).__name__}: {e}") from e


def _read_headers(fp: io.BytesIO) -> http.client.HTTPMessage:
    """The header lines up to the blank one, parsed as ``http.client`` does but without its limit of
    100 header lines: a page with many ``Set-Cookie`` or ``Link`` lines is still a page. Bounded by
    bytes instead (the block itself is bounded by ``max_document_bytes``)."""
    lines, total = [], 0
    while True:
        line = fp.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            raise ValueError(f"unreadable HTTP headers: a header line of more than {MAX_HEADER_LINE} bytes")
        total += len(line)
        if total > MAX_HEADER_BYTES:
            raise ValueError(f"unreadable HTTP headers: more than {MAX_HEADER_BYTES} bytes of them")
        if line in (b"\r\n", b"\n", b""):
            break
        lines.append(line)
    text = b"".join(lines).decode("iso-8859-1")  # what http.client decodes header bytes as
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)  # type: ignore[return-value]
