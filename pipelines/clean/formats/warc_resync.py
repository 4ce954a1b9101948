"""A WARC stream that can restart parsing at the next record after a header fastwarc cannot read.

fastwarc ends a file at the first record header it cannot parse (``OSError: Invalid WARC header``),
and by then it has read up to 64 KiB past it, so every good record after one damaged header (a
crawler's partial write, a spliced file, a flipped byte in a length) would be lost. This stream keeps
the chunks it handed out recently (references to them, no copy) so that the reader can go back to
where the last good record ended, look for the next line that starts a WARC header and parse again
from there; the damaged stretch becomes one counted error row.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

# a line that starts a record: "WARC/1.0", "WARC/1.1", or ClueWeb09's "WARC/0.18"
HEADER_LINE = re.compile(rb"(?m)^WARC/\d{1,3}\.\d{1,3}\r?\n")
# at least this much stays held: fastwarc's read-ahead (64 KiB) plus the start of the record it last gave
KEEP_BYTES = 1 << 20
HEADER_WINDOW = 1 << 16  # a record's own WARC header lines are looked for this far from its start
SCAN_CHUNK = 1 << 20


class ResyncStream:
    """Reads like ``stream``; ``record_end`` and ``restart`` let the reader skip a damaged stretch."""

    def __init__(self, stream: Any, keep: int = KEEP_BYTES) -> None:
        self.stream = stream
        self.keep = keep
        self._held: deque[bytes] = deque()  # the last chunks handed out, oldest first
        self._held_bytes = 0
        self._held_start = 0  # stream offset of the first held byte
        self._pos = 0  # stream offset of the next byte handed out
        self._replay = b""  # bytes to hand out again (after a restart) before reading the stream

    def tell(self) -> int:  # fastwarc takes each record's stream position from here
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if self._replay:
            if n is None or n < 0:
                out, self._replay = self._replay + self.stream.read(), b""
            else:
                out, self._replay = self._replay[:n], self._replay[n:]
        else:
            out = self.stream.read(n)
        if out:
            self._held.append(out)
            self._held_bytes += len(out)
            while self._held_bytes - len(self._held[0]) >= self.keep:
                dropped = self._held.popleft()
                self._held_bytes -= len(dropped)
                self._held_start += len(dropped)
            self._pos += len(out)
        return out

    def record_end(self, start: int, content_length: int) -> int | None:
        """Where the record that starts at ``start`` ends: after its headers, its block and the blank line.

        None when its start is no longer held or its headers do not end within the window.
        """
        for size in (4096, HEADER_WINDOW):  # most headers are under 1 KiB: copy little
            window = self._held_slice(start, start + size)
            if window is None:
                return None
            crlf, lf = window.find(b"\r\n\r\n"), window.find(b"\n\n")
            ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
            if ends:
                return start + min(ends) + content_length
        return None

    def restart(self, after: int) -> int | None:
        """Go back to the first WARC header line at or after ``after`` (or the oldest byte held).

        Returns where parsing resumes, or None when the file has no further record; a new
        ArchiveIterator over this stream then reads on from there.
        """
        begin = max(after, self._held_start)
        buf = b"".join(self._held) + self._replay
        base = self._held_start
        found = HEADER_LINE.search(buf, begin - base)
        while found is None:
            more = self.stream.read(SCAN_CHUNK)
            if not more:
                self._held.clear()
                self._held_bytes, self._replay = 0, b""
                self._held_start = self._pos = base + len(buf)
                return None
            tail = buf[-32:]  # a header line split between two reads
            base += len(buf) - len(tail)
            buf = tail + more
            found = HEADER_LINE.search(buf, max(begin - base, 0))
        self._replay = buf[found.start() :]
        self._held.clear()
        self._held_bytes = 0
        self._held_start = self._pos = base + found.start()
        return self._pos

    def _held_slice(self, start: int, stop: int) -> bytes | None:
        if start < self._held_start or start >= self._held_start + self._held_bytes:
            return None
        parts, offset = [], self._held_start
        for chunk in self._held:
            lo, hi = max(start - offset, 0), min(stop - offset, len(chunk))
            if lo < hi:
                parts.append(chunk[lo:hi])
            offset += len(chunk)
            if offset >= stop:
                break
        return b"".join(parts)
