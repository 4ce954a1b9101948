"""A WARC stream that can restart parsing at the next record after a header fastwarc cannot read.

fastwarc ends a file at the first record header it cannot parse (``OSError: Invalid WARC header``),
and by then it has read up to 64 KiB past it, so every good record after one damaged header (a
crawler's partial write, a spliced file, a flipped byte in a length) would be lost. This stream keeps
the chunks it handed out recently (references to them, no copy) so that the reader can go back to
where the last good record ended, look for the next line that starts a WARC header and parse again
from there; the damaged stretch becomes one counted error row.

It also stops at a *break*: a place where the decompressed stream skipped a gzip member it could not
inflate. The member's record was handed out only in part, and without the stop fastwarc would read
its ``Content-Length`` on into the next members' records and lose them too (all the rest of the file
when that ran past its end). At a break fastwarc sees the end of the file; the reader then drops the
record in flight (the skipped member's row counts it) and parses again from the next member.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

# what starts a record: "WARC/1.0", "WARC/1.1", or ClueWeb09's "WARC/0.18", then a header field's
# name. Not only at a line's start: zero padding or a torn write before a record leaves no newline in
# front of it. The field name keeps out runs of bare version lines, which fastwarc reads as one header
# of up to 32 KiB each time before it gives up (a restart per line: 8 µs a byte of such garbage).
HEADER_LINE = re.compile(rb"WARC/\d{1,3}\.\d{1,3}\r?\n(?=[!-9;-~]{1,256}:)")
LINE_MAX = 512  # the most a HEADER_LINE match (and what it looks ahead at) may need from the next piece
# a record's end and the next one's start: a WARC header line right after a blank line
BOUNDARY = re.compile(rb"\r?\n\r?\n(" + HEADER_LINE.pattern + rb")")
BLANK_LINE = re.compile(rb"\r?\n\r?\n")  # the end of a header: fastwarc's (CRLF CRLF) or looser
HEADER_MAX = 32768  # fastwarc gives up on a header longer than this ("Maximum header length exceeded")
# at least this much stays held: fastwarc's read-ahead (64 KiB) plus the start of the record it last gave
KEEP_BYTES = 1 << 20
HEADER_WINDOW = 1 << 16  # a record's own WARC header lines are looked for this far from its start
SCAN_CHUNK = 1 << 20
PEEK_STEP = 1 << 16  # what ``overrun`` reads ahead at a time, as fastwarc reads


class ResyncStream:
    """Reads like ``stream``; ``record_end`` and ``restart`` let the reader skip a damaged stretch, and
    the stream stops at each of ``breaks`` until ``skip_to_break`` passes it. A break is (where the
    damaged member's bytes begin, where the stream goes on), in increasing order, a list that may
    grow while the stream is read (gzip_members.py)."""

    def __init__(
        self,
        stream: Any,
        keep: int = KEEP_BYTES,
        breaks: Sequence[tuple[int, int]] = (),
        members: deque[int] | None = None,
    ) -> None:
        self.stream = stream
        self.keep = keep
        self.breaks = breaks
        self.members = members  # where each gzip member starts (gzip_members.py), if the file has them
        self._passed = 0  # breaks[:_passed] are behind the reader
        self._held: deque[bytes] = deque()  # the last chunks handed out, oldest first
        self._held_bytes = 0
        self._held_start = 0  # stream offset of the first held byte
        self._pos = 0  # stream offset of the next byte handed out
        # bytes read from the stream but not handed out yet (after a restart or at a break): views, so
        # that a restart, however many there are, copies no more than the piece it starts in
        self._ahead: deque[memoryview] = deque()
        self._scan_end = 0  # stream offset after the last piece a seek looked at

    def tell(self) -> int:  # fastwarc takes each record's stream position from here
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes, fewer only at the end of the stream or at a break: fastwarc takes a short
        read for the end of the file."""
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(SCAN_CHUNK), b""))
        parts: list[bytes | memoryview] = []
        got = 0
        while got < n:
            stop = self._stop()
            room = n - got if stop is None else min(n - got, stop - self._pos - got)
            if room <= 0:
                break  # at a break: fastwarc sees the end of the file
            if self._ahead:
                piece: bytes | memoryview = self._ahead[0][:room]
                if len(self._ahead[0]) > room:
                    self._ahead[0] = self._ahead[0][room:]
                else:
                    self._ahead.popleft()
            else:
                piece = self.stream.read(room)
                if not piece:
                    break
                stop = self._stop()  # the read may have met a damaged gzip member
                if stop is not None and self._pos + got + len(piece) > stop:
                    self._ahead.append(memoryview(piece)[stop - self._pos - got :])
                    piece = piece[: stop - self._pos - got]
            parts.append(piece)
            got += len(piece)
        out = b"".join(parts)  # one part: that very object, no copy
        if out:
            self._held.append(out)
            self._held_bytes += len(out)
            while self._held_bytes - len(self._held[0]) >= self.keep:
                dropped = self._held.popleft()
                self._held_bytes -= len(dropped)
                self._held_start += len(dropped)
            self._pos += len(out)
        return out

    @property
    def paused(self) -> bool:
        """Whether the stream stands at a break: fastwarc's end of the file is not the file's."""
        stop = self._stop()
        return stop is not None and stop <= self._pos

    def cut_short(self, start: int, content_length: int) -> bool:
        """Whether a break comes before the end of the record at ``start`` (or its header's end), or
        the record lies in the damaged member's bytes (garbage inflated before zlib noticed)."""
        stop = self._stop()
        if stop is None:
            return False
        end = self.record_end(start, content_length)
        return end is None or end > stop or start >= self.breaks[self._passed][0]

    def overrun(self, start: int, end: int) -> int | None:
        """Where the record at ``start`` really ends, when it claims to end at ``end`` but the next gzip
        member starts before that, with a record header: its ``Content-Length`` is wrong (a flipped
        digit), and fastwarc would read the records after it as its block, or skip them all when the
        length runs past the end of the file. Only a record that starts a member is checked, as a WARC
        writer puts one record in each; to see where that member ends, up to ``keep`` bytes are read
        ahead of fastwarc."""
        starts = self.members
        if starts is None:
            return None
        while starts and starts[0] < start:
            starts.popleft()
        if not starts or starts[0] != start:
            return None
        read_to = self._pos + sum(map(len, self._ahead))
        while len(starts) < 2 and read_to < min(end, self._pos + self.keep):
            chunk = self.stream.read(PEEK_STEP)
            if not chunk:
                break
            self._ahead.append(memoryview(chunk))
            read_to += len(chunk)
        if len(starts) < 2 or not start < starts[1] < end:
            return None
        if (stop := self._stop()) is not None and stop <= starts[1]:
            return None  # the member failed: its record is cut at the break, and counted with it
        head = self._slice(starts[1], starts[1] + LINE_MAX)
        return starts[1] if head is not None and HEADER_LINE.match(head) else None

    def boundary_inside(self, start: int, end: int) -> int | None:
        """Where the next record starts inside the record at ``start``, which claims to end at ``end``:
        a header line within its own header (a write cut short there glued the next header to it) or
        after a blank line within its block (its Content-Length is too long: a partial write, a
        deleted byte). None when there is none, or the record is no longer held."""
        block_start = self.record_end(start, 0)
        window = None if block_start is None else self._slice(start + 1, end + LINE_MAX)
        if block_start is None or window is None:
            return None
        glued = HEADER_LINE.search(window, 0, block_start - start - 1)
        found = glued.start() if glued else None
        if found is None and (after := BOUNDARY.search(window, block_start - start - 5)) is not None:
            found = after.start(1)
        return None if found is None or start + 1 + found >= end else start + 1 + found

    def skip_to_break(self) -> int:
        """Drop what is left before the next break and go on after it; nothing before it is held
        any more, so no restart goes back into the damaged member's record. Returns the break."""
        stop = self._stop()
        assert stop is not None, "no break ahead"
        while self._pos < stop:  # bytes up to the break are all ahead: they were read before it was met
            view = self._ahead[0]
            take = min(len(view), stop - self._pos)
            if take == len(view):
                self._ahead.popleft()
            else:
                self._ahead[0] = view[take:]
            self._pos += take
        self._passed += 1
        self._held.clear()
        self._held_bytes, self._held_start = 0, self._pos
        return stop

    def record_end(self, start: int, content_length: int) -> int | None:
        """Where the record that starts at ``start`` ends: after its headers, its block and the blank line.

        None when its start is no longer held or its headers do not end within the window.
        """
        for size in (4096, HEADER_WINDOW):  # most headers are under 1 KiB: copy little
            window = self._slice(start, start + size)
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
        return self._seek(after, HEADER_LINE)

    def past_long_header(self, start: int) -> int | None:
        """Where a header may start that fastwarc reads, after it gave up on the one at ``start`` for
        being longer than HEADER_MAX. Every header line up to HEADER_MAX before the next blank line
        starts a header as long, since its lines run on to that same blank line: trying them one by
        one cost fastwarc 32 KiB of parsing each (8 µs a byte of such a stretch). None when no blank
        line follows: no header after ``start`` can end."""
        blank = self._seek(start, BLANK_LINE, back=HEADER_MAX)
        return None if blank is None else max(start, blank + 2 - HEADER_MAX)

    def _seek(self, after: int, pattern: re.Pattern[bytes], back: int = 0) -> int | None:
        """Find the first ``pattern`` at or after ``after`` and stand ``back`` bytes before it (not
        before ``after``), or at the end of the file when there is none. Each piece of the stream is
        searched where it lies, without joining them: a stretch of many header lines that fail
        costs one small search for each, not a copy of all that is held."""
        begin = max(after, self._held_start)
        pieces, end = [], self._held_start  # (stream offset, piece): what was read already
        for chunk in (*self._held, *self._ahead):
            pieces.append((end, memoryview(chunk)))
            end += len(chunk)
        self._scan_end = end
        fresh: deque[tuple[int, memoryview]] = deque()  # new reads: the last ones, where a match can be
        found = _search(chain(pieces, self._reads(end, fresh, back)), begin, pattern)
        self._held.clear()
        self._held_bytes = 0
        self._ahead.clear()
        self._pos = self._scan_end if found is None else max(found - back, begin)
        if found is not None:
            for at, piece in chain(pieces, fresh):
                if at + len(piece) > self._pos:
                    self._ahead.append(piece[max(self._pos - at, 0) :])
        self._held_start = self._pos
        while self._passed < len(self.breaks) and self.breaks[self._passed][1] <= self._pos:
            self._passed += 1  # a damaged member before the header found is behind the reader now
        return found

    def _reads(
        self, at: int, fresh: deque[tuple[int, memoryview]], back: int
    ) -> Iterator[tuple[int, memoryview]]:
        """The stream read on from offset ``at``, as (offset, piece); each piece is also kept in ``fresh``
        with those within ``back`` + LINE_MAX bytes before it (where a match, and what the seek keeps
        before it, can start): a long stretch without a match is not held."""
        for chunk in iter(lambda: self.stream.read(SCAN_CHUNK), b""):
            item = (at, memoryview(chunk))
            fresh.append(item)
            while len(fresh) > 1 and fresh[1][0] + LINE_MAX + back <= at:
                fresh.popleft()
            at += len(chunk)
            self._scan_end = at
            yield item

    def _stop(self) -> int | None:
        return self.breaks[self._passed][1] if self._passed < len(self.breaks) else None

    def _slice(self, start: int, stop: int) -> bytes | None:
        """The stream's bytes [start, stop) as far as they are held or read ahead; None when ``start``
        is not among them."""
        pieces = [*self._held, *self._ahead]
        i, offset = len(pieces), self._pos + sum(map(len, self._ahead))
        if start < self._held_start or start >= offset:
            return None
        while offset > start:  # the piece holding `start`, newest first: a record just read is near the end
            i -= 1
            offset -= len(pieces[i])
        parts = []
        while i < len(pieces) and offset < stop:
            parts.append(pieces[i][max(start - offset, 0) : stop - offset])
            offset += len(pieces[i])
            i += 1
        return b"".join(parts)


def _search(pieces: Iterable[tuple[int, memoryview]], begin: int, pattern: re.Pattern[bytes]) -> int | None:
    """Stream offset of the first match at or after ``begin`` in consecutive pieces, a match across
    two included."""
    tail, tail_at = b"", 0  # the last bytes of what was searched, for a match split between pieces
    for at, whole in pieces:
        if at + len(whole) <= begin:
            continue
        piece = whole[max(begin - at, 0) :]
        at = max(at, begin)
        if tail:
            m = pattern.search(tail + bytes(piece[:LINE_MAX]))
            if m and m.start() < len(tail):
                return tail_at + m.start()
        m = pattern.search(piece)
        if m:
            return at + m.start()
        tail = (tail + bytes(piece[-LINE_MAX:]))[-LINE_MAX:]
        tail_at = at + len(piece) - len(tail)
    return None
