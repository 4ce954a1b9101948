"""What ``raychat chat`` prints while a reply streams: text as it comes, and a marker for each tool call.

The printer reads the engine's token events, the same ids ``ChatFormat.parse_assistant`` later reads
back, so what the terminal shows and what the history keeps cannot disagree:

    Let me look that up.
    [search: "Noril Clock inventor"]
    [result: [1] The Noril Clock: The Noril Clock was invented by Velimir Talwright ...]
    It was Velimir Talwright. A clock costs [calc: 12*4 = 48] 48 coins.

Text is decoded byte by byte with an incremental UTF-8 decoder: a character split across tokens (a
byte-level BPE splits many non-ASCII characters) is printed once it is whole, never as two
replacement characters. Markers go on lines of their own; on a terminal they are coloured (the result
dimmed), otherwise plain.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import Any, TextIO

from lm.chat_template import (
    BOS,
    CALC_END,
    CALC_START,
    IM_END,
    RESULT_END,
    RESULT_START,
    SEARCH_END,
    SEARCH_START,
)

RESET = "\x1b[0m"
REPLACEMENT = "\ufffd"  # shown for an id past the tokenizer's vocabulary (a padded model's untrained rows)


@dataclass(frozen=True)
class Style:
    """ANSI styling on a terminal, nothing otherwise (``NO_COLOR`` and ``--no-color`` turn it off)."""

    color: bool

    @classmethod
    def for_stream(cls, stream: TextIO, no_color: bool = False) -> Style:
        tty = hasattr(stream, "isatty") and stream.isatty()
        return cls(tty and not no_color and os.environ.get("NO_COLOR") is None)

    def _wrap(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.color and text else text

    def marker(self, text: str) -> str:
        return self._wrap("\x1b[36m", text)  # cyan: a tool call

    def dim(self, text: str) -> str:
        return self._wrap("\x1b[2m", text)

    def warn(self, text: str) -> str:
        return self._wrap("\x1b[33m", text)

    def prompt(self, text: str) -> str:
        """The input prompt, bold; the codes are wrapped in \\001/\\002 so readline measures the line right."""
        return f"\001\x1b[1m\002{text}\001{RESET}\002" if self.color else text


class ReplyPrinter:
    """Prints one reply from its token ids as they arrive (``feed``), then ``finish``.

    ``out`` is flushed after every token, so text appears as it is generated.
    """

    def __init__(self, tokenizer: Any, special_ids: dict[str, int], out: TextIO, style: Style) -> None:
        self.tokenizer = tokenizer
        self.out = out
        self.style = style
        self.opens = {special_ids[SEARCH_START]: "search", special_ids[CALC_START]: "calc"}
        self.closes = {special_ids[SEARCH_END]: "search", special_ids[CALC_END]: "calc"}
        self.result_start, self.result_end = special_ids[RESULT_START], special_ids[RESULT_END]
        self.ends = {special_ids[IM_END], special_ids[BOS]}
        self.specials = set(special_ids.values())
        self.vocab_size = tokenizer.vocab_size
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.mode = "text"  # text | call (inside a call) | called (call closed) | result
        self.kind = ""  # the tool of the call in progress
        self.buffer: list[int] = []  # the call's or the result's ids
        self.call = ""  # the closed call's text, until its result is shown
        self.at_line_start = True
        self.wrote_anything = False

    def feed(self, token_id: int) -> None:
        if self.mode == "call":
            if self.closes.get(token_id) == self.kind:
                self.call = self._decode(self.buffer)
                self.mode = "called"
                if self.kind == "search":  # shown at once: a search may take a moment
                    self._line(self.style.marker(f'[search: "{self.call}"]'))
            elif token_id in self.specials:  # a call the model never closed: shown, then dropped
                self._line(self.style.marker(f"[{self.kind}: {self._decode(self.buffer)} (not closed)]"))
                self.mode = "text"
                self.feed(token_id)
            else:
                self.buffer.append(token_id)
            return
        if self.mode == "called" and token_id == self.result_start:
            self.mode, self.buffer = "result", []
            return
        if self.mode == "result":
            if token_id == self.result_end:
                self._show_result(self._decode(self.buffer))
                self.mode = "text"
            else:
                self.buffer.append(token_id)
            return
        if self.mode == "called":  # a call with no result: only a failed tool does that
            self._show_result(None)
            self.mode = "text"
        if token_id in self.opens:
            self._flush_text()
            self.mode, self.kind, self.buffer = "call", self.opens[token_id], []
        elif token_id in self.ends or token_id in self.specials:
            pass  # the end of the turn, or a stray control token (parse_assistant drops it too)
        elif token_id >= self.vocab_size:
            self._write(self.decoder.decode(b"", final=True) + REPLACEMENT)
        else:
            self._write(self.decoder.decode(self.tokenizer.token_bytes(token_id)))

    def finish(self) -> None:
        """The reply ended (or was stopped): show what is pending and end the line."""
        if self.mode == "call":
            self._line(self.style.marker(f"[{self.kind}: {self._decode(self.buffer)} (not closed)]"))
        elif self.mode in ("called", "result"):
            self._show_result(self._decode(self.buffer) if self.mode == "result" else None)
        self.mode = "text"
        self._flush_text()
        if not self.at_line_start:
            self._write("\n")

    # -- internals ----------------------------------------------------------------------------------

    def _show_result(self, result: str | None) -> None:
        if self.kind == "calc":
            if result is None:
                shown = f"[calc: {self.call}]"
            elif result.startswith("error:"):
                shown = f"[calc: {self.call} -> {result}]"
            else:
                shown = f"[calc: {self.call} = {result}]"
            self._line(self.style.marker(shown))
        elif result is not None:
            lines = result.splitlines() or [""]
            self._line(self.style.dim("[result: " + "\n         ".join(lines) + "]"))

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t < self.vocab_size])

    def _flush_text(self) -> None:
        self._write(self.decoder.decode(b"", final=True))

    def _line(self, text: str) -> None:
        if not self.at_line_start:
            self._write("\n")
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.write(text)
        self.out.flush()
        self.at_line_start = text.endswith("\n")
        self.wrote_anything = True
