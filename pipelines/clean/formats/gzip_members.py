"""A multi-member gzip stream that skips a member it cannot inflate and reads on from the next one.

A ``.warc.gz`` is one gzip member per record (the WARC standard recommends it, and every crawler we
know writes it so): a member damaged by a bad disk block or a partial write holds one record, yet
Python's ``gzip`` module ends the whole file there. This reader inflates member by member with
``zlib``, and where a member fails (or bytes that are no member sit between two) it looks for the
next gzip header and goes on, keeping a list of the stretches it skipped so they can be counted.
A file that ends inside a member raises ``EOFError`` as ``gzip`` does, after handing out every byte
that came before.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1, ID2 and CM=deflate: the start of every gzip member
RAW_CHUNK = 128 * 1024
# a member's compressed bytes are kept up to this many, to look for the next member from its start
# when it fails (a record's member is well under it: Common Crawl caps a payload at 1 MiB)
MEMBER_KEEP = 4 << 20


@dataclass
class Skipped:
    """Compressed bytes [start, resumed) that could not be inflated; resumed is None at the file's end."""

    start: int
    resumed: int | None
    error: str

    def describe(self) -> str:
        where = (
            f"bytes {self.start}-{self.resumed}" if self.resumed is not None else f"from byte {self.start} on"
        )
        return f"a gzip member that cannot be inflated ({self.error}): compressed {where} skipped"


class MemberGzip:
    """Reads like ``gzip.GzipFile``; ``skipped`` lists the damaged stretches passed over.

    ``breaks`` holds, for each, the offsets in the inflated stream where the member that failed began
    and where the stream goes on: what came in between is suspect (a member may have handed out part
    of its record, or garbage, before zlib noticed) and does not belong with what follows, which the
    WARC reader needs to know to stop parsing there (warc_resync.py). ``starts``
    holds the inflated offset of each member's start (the reader drops those behind it): a record
    that begins a member ends with it, which tells a wrong ``Content-Length``.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.skipped: list[Skipped] = []
        self.breaks: list[tuple[int, int]] = []
        self.starts: deque[int] = deque()
        self._out = 0  # bytes inflated so far, those of the read in progress included
        self._pending = b""  # compressed bytes not yet inflated
        self._pending_at = 0  # file offset of _pending[0]
        self._member: zlib._Decompress | None = None  # type: ignore[name-defined]
        self._member_at = 0  # file offset of the member's first byte
        self._member_out = 0  # and the inflated offset of its first byte
        self._kept: list[bytes] | None = None  # the compressed bytes read since then, unless too many
        self._kept_bytes = 0
        self._inflated_since_skip = True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        out: list[bytes] = []
        got = 0
        while got < n:
            if self._member is None and not self._start_member():
                break
            if not self._pending and not self._read_raw():
                if self._kept is not None and b"".join(self._kept).find(GZIP_MAGIC, 1) >= 0:
                    self._skip("it runs on to the end of the file")  # through the members after it
                    continue
                if got:  # hand out what came before the break; the next call raises
                    break
                raise EOFError(f"the file ends inside a gzip member (compressed byte {self._pending_at})")
            assert self._member is not None
            try:
                data = self._member.decompress(self._pending, n - got)
            except zlib.error as e:
                self._skip(f"zlib.error: {e}")
                continue
            if self._member.eof:
                rest = self._member.unused_data
                self._member, self._kept = None, None
            else:
                rest = self._member.unconsumed_tail
            self._pending_at += len(self._pending) - len(rest)
            self._pending = rest
            if data:
                out.append(data)
                got += len(data)
                self._out += len(data)
                self._inflated_since_skip = True
        return b"".join(out)

    def settled(self) -> list[Skipped]:
        """The stretches whose end is known: the last one may still grow until something inflates."""
        return self.skipped if self._inflated_since_skip else self.skipped[:-1]

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> MemberGzip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_raw(self) -> bool:
        chunk = self.raw.read(RAW_CHUNK)
        self._pending += chunk
        if self._kept is not None and chunk:
            self._kept.append(chunk)
            self._kept_bytes += len(chunk)
            if self._kept_bytes > MEMBER_KEEP:
                self._kept = None  # too long to search again from its start: from where it fails
        return bool(chunk)

    def _start_member(self) -> bool:
        """Begin the next member; False at the end of the file."""
        while True:
            stripped = self._pending.lstrip(b"\0")  # gzip(1) allows zero padding after a member
            self._pending_at += len(self._pending) - len(stripped)
            self._pending = stripped
            if len(self._pending) < len(GZIP_MAGIC) and self._read_raw():
                continue
            if not self._pending:
                return False
            if self._pending.startswith(GZIP_MAGIC):
                self._member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._member_at, self._member_out = self._pending_at, self._out
                if self.starts and self.starts[-1] == self._out:
                    self.starts.pop()  # the member before gave nothing (it failed at once)
                self.starts.append(self._out)
                self._kept, self._kept_bytes = [self._pending], len(self._pending)
                return True
            self._skip("bytes that are not a gzip member")
            if not self._pending:
                return False

    def _skip(self, error: str) -> None:
        """Drop compressed bytes up to the next gzip header after the first byte of the member that
        failed (of ``_pending`` when there is none, or it is no longer kept).

        From the member's start, not from where inflating failed: a member damaged near its end can
        read on through the members after it, zlib taking their bytes for its own, before it fails or
        the file ends; those members are whole, and each holds a record.
        """
        if self._member is not None and self._kept is not None:
            self._pending, self._pending_at = b"".join(self._kept), self._member_at
        start = self._pending_at
        suspect = self._out if self._member is None else self._member_out  # its output is not to be trusted
        self._member, self._kept = None, None
        begin = 1  # not the header of the member that failed
        while (found := self._pending.find(GZIP_MAGIC, begin)) < 0:
            keep = len(GZIP_MAGIC) - 1  # a header split between two reads
            dropped = max(len(self._pending) - keep, begin) if self._pending else 0
            begin = 0
            self._pending_at += dropped
            self._pending = self._pending[dropped:]
            if not self._read_raw():
                self._pending_at += len(self._pending)
                self._pending = b""
                self._record(Skipped(start, None, error), suspect)
                return
        self._pending_at += found
        self._pending = self._pending[found:]
        self._record(Skipped(start, self._pending_at, error), suspect)

    def _record(self, skip: Skipped, suspect: int) -> None:
        """One entry per damaged stretch: a false header inside the damage extends the last entry."""
        if self.skipped and not self._inflated_since_skip:
            self.skipped[-1].resumed = skip.resumed
        else:
            self.skipped.append(skip)
            self.breaks.append((suspect, self._out))
        self._inflated_since_skip = False
