"""Deterministic gzipped WARC/1.0 files, written with warcio.

warcio builds the records (headers, digests, lengths); we gzip each record as its own member, as
Common Crawl does, so readers can seek to any record. warcio would stamp each record with the
current time and a random UUID, so the record IDs and dates are passed in: they are derived from
the world seed, and the same seed gives byte-identical files. zlib's gzip header carries no
timestamp (mtime 0), which keeps the bytes stable too.
"""

from __future__ import annotations

import io
import uuid
import zlib
from datetime import UTC, datetime
from email.utils import format_datetime
from hashlib import blake2b
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


def record_id(*parts: object) -> str:
    digest = blake2b(":".join(map(str, parts)).encode(), digest_size=16).digest()
    return f"<urn:uuid:{uuid.UUID(bytes=digest, version=4)}>"


def warc_date(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(when: datetime) -> str:
    return format_datetime(when.replace(tzinfo=UTC), usegmt=True)


class WarcFile:
    """One .warc.gz being written: a warcinfo record first, then responses."""

    def __init__(
        self,
        path: Path,
        info: dict[str, str],
        when: datetime,
        info_id: str,
        level: int = 6,
        filename: str | None = None,
    ) -> None:
        """``filename``: the name the warcinfo record gives (default ``path``'s; the file's final name
        when ``path`` is a temporary one)."""
        self.path = path
        self.level = level
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._buffer = io.BytesIO()
        self._writer = WARCWriter(self._buffer, gzip=False, warc_version="1.0")
        self.info_id = info_id
        self.bytes = 0
        payload = "".join(f"{k}: {v}\r\n" for k, v in info.items()).encode("utf-8")
        headers = StatusAndHeaders(
            "",
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Record-ID", info_id),
                ("WARC-Date", warc_date(when)),
                ("WARC-Filename", filename or path.name),
            ],
            protocol="WARC/1.0",
        )
        record = self._writer.create_warc_record(
            "",
            "warcinfo",
            payload=io.BytesIO(payload),
            length=len(payload),
            warc_headers=headers,
            warc_content_type="application/warc-fields",
        )
        self._write(record)

    def _write(self, record) -> None:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.write_record(record)
        gz = zlib.compressobj(self.level, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        data = gz.compress(self._buffer.getvalue()) + gz.flush()
        self._file.write(data)
        self.bytes += len(data)

    def write_response(
        self,
        url: str,
        status: int,
        reason: str,
        http_headers: list[tuple[str, str]],
        payload: bytes,
        when: datetime,
        rec_id: str,
    ) -> None:
        headers = StatusAndHeaders(f"{status} {reason}", http_headers, protocol="HTTP/1.1")
        record = self._writer.create_warc_record(
            url,
            "response",
            payload=io.BytesIO(payload),
            length=len(payload),
            http_headers=headers,
            warc_headers_dict={
                "WARC-Record-ID": rec_id,
                "WARC-Date": warc_date(when),
                "WARC-Warcinfo-ID": self.info_id,
            },
        )
        self._write(record)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> WarcFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
