"""Generated token ids to what a client sees, incrementally: text, server tool uses, stop strings.

One ``ReplyDecoder`` per choice is fed the engine's token events as they come and returns what to
send; a non-streaming response is the same decoder fed everything, so streamed and whole replies
always agree.

- Text is decoded as bytes arrive (a character split over two tokens comes out once complete).
- Chat mode reads the chat format's control tokens as lm/chat.py's ``parse_assistant`` does:
  ``<|search_start|>q<|search_end|><|result_start|>r<|result_end|>`` (and the calculator's) become a
  ``ToolUse`` (reported when the call closes, and again when its result is in); ``<|im_end|>`` and
  ``<|endoftext|>`` end the reply; any other control token is dropped. Raw mode (``/v1/completions``)
  shows every token's text but the control (special) tokens': those are dropped, as vLLM's
  ``skip_special_tokens`` does by default (a chat model's ``m<|calc_end|>l`` came out as such text;
  ``return_token_ids`` still gives every id). In both modes the content, which stop strings are
  matched on and the stream is cut from, is exactly the text returned.
- Function calls (``calls``: the request has function tools): text from a ``<tool_call>`` opening on
  (with the newline before it) is held back, as is text that could be the start of one, so that a
  stream never sends as content what the whole reply returns as ``tool_calls``; the caller decides
  at the end what the held text was (``release``). ``in_call``: the reply starts inside a call (the
  prompt ended with its opening), so nothing is handed out as content.
- Stop strings are matched on the decoded content. Text that could be the start of one is held back
  until it cannot, so a client never receives text that is then taken back; on a match the content
  is cut before it and ``stopped`` is set (the caller aborts the request to free its slot). A stop
  string does not match across a tool call.
- Logprobs: one ``TokenLogprob`` per content token, sent with the text it produced (control tokens,
  tokens of tool calls and results, and the final stop token have none), so a client's logprobs always spell exactly
  the text it got, chunk by chunk: with logprobs on, held text is handed out only up to the start of
  a token whose text is not all out yet, and a stop string that begins inside a token cuts that
  token's text and bytes at the cut (its logprob stays the whole token's: the only number there
  is). Without this a reply cut at " keeper" by ``stop="keeper"`` reported a last token " keeper".
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lm.chat_template import (
    BOS,
    CALC_END,
    CALC_START,
    IM_END,
    RESULT_END,
    RESULT_START,
    SEARCH_END,
    SEARCH_START,
    TOOL_CALL_OPEN,
)

# what may precede a function call's opening in a reply: the whole reply drops one newline before it
_CALL_OPENINGS = ("\n" + TOOL_CALL_OPEN, TOOL_CALL_OPEN)


def tail_prefix(text: str, strings: Sequence[str], start: int = 0) -> int:
    """How many characters at the end of ``text`` (after ``start``) could begin one of ``strings``:
    text that is held back until the next characters say whether it becomes one."""
    for k in range(min(max((len(s) for s in strings), default=1) - 1, len(text) - start), 0, -1):
        if any(s.startswith(text[-k:]) for s in strings):
            return k
    return 0


# the tool kinds as the API names them, with the request field the model wrote
TOOL_KINDS = {
    "search": (SEARCH_START, SEARCH_END, "query"),
    "calculator": (CALC_START, CALC_END, "expression"),
}


class _Tokenizer(Protocol):
    vocab_size: int

    @property
    def special_tokens(self) -> dict[str, int]: ...

    def token_id(self, special: str) -> int: ...
    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...
    def token_bytes(self, token_id: int) -> bytes: ...


@dataclass
class ToolUse:
    """A server-side tool call in a reply: what the model asked and what it got back."""

    index: int
    type: str
    input: str
    offset: int  # characters of content before the call
    result: str | None = None

    def start_delta(self) -> dict[str, Any]:
        field_name = TOOL_KINDS[self.type][2]
        return {"index": self.index, "type": self.type, field_name: self.input, "offset": self.offset}

    def as_dict(self) -> dict[str, Any]:
        return self.start_delta() | {"result": self.result}

    def as_part(self) -> dict[str, Any]:
        """The lm/chat_messages.py content part, to send the reply back in a later request."""
        kind = "calc" if self.type == "calculator" else self.type
        return {"type": kind, TOOL_KINDS[self.type][2]: self.input, "result": self.result}


@dataclass
class TokenLogprob:
    """One content token's logprob and where its text lies in the content: ``content[start:end]``,
    the characters this token completed (a character split over tokens belongs to the token with its
    last byte), so the ``text`` of a reply's tokens joined is exactly its content."""

    logprob: float
    data: bytes  # the token's bytes (cut at a stop string that begins inside it)
    start: int
    end: int
    lead: bytes = b""  # bytes of a character an earlier token began and this one completes
    text: str = ""  # content[start:end], set when handed out

    def entry(self) -> dict[str, Any]:
        """The chat API's entry: the token's own text and bytes (joined bytes decode to the content)."""
        token = self.data.decode("utf-8", errors="replace")
        return {"token": token, "logprob": self.logprob, "bytes": list(self.data), "top_logprobs": []}

    def cut(self, chars: int) -> None:
        """Keep the token's first ``chars`` characters: the bytes that make them, found by decoding
        byte by byte after ``lead`` (a character is one to four bytes; the replacement character
        of an invalid byte is one)."""
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        utf8.decode(self.lead)
        made = 0
        for n in range(len(self.data)):
            made += len(utf8.decode(self.data[n : n + 1]))
            if made >= chars:
                self.data = self.data[: n + 1]
                break
        self.end = self.start + chars


@dataclass
class Piece:
    """What one feed produced: new content text (with its tokens' logprobs), tool calls made and
    tool results received."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tools_started: list[ToolUse] = field(default_factory=list)
    tools_done: list[ToolUse] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.text or self.logprobs or self.tools_started or self.tools_done)


class ReplyDecoder:
    """Decode one choice's tokens (module docstring); ``chat`` selects chat or raw mode."""

    def __init__(
        self,
        tokenizer: _Tokenizer,
        chat: bool,
        stops: Sequence[str] = (),
        logprobs: bool = False,
        calls: bool = False,
        in_call: bool = False,
    ):
        self.tok = tokenizer
        self.chat = chat
        self.stops = [s for s in stops if s]
        self.want_logprobs = logprobs
        self.content = ""  # decoded content so far (held text included)
        self.sent = 0  # characters of content already handed out
        self.token_ids: list[int] = []
        self.tool_uses: list[ToolUse] = []
        self.stopped = False  # a stop string matched: no more content
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lp: list[TokenLogprob] = []
        self._lp_sent = 0  # entries of _lp handed out
        self._mode = "text"  # text | call | await (a result) | result
        self._call: list[int] = []
        self._call_kind = ""
        self._result: list[int] = []
        self._special: dict[int, str] = {}
        self._controls = frozenset(tokenizer.special_tokens.values())  # never text (module docstring)
        self.calls = calls or in_call
        self.call_at: int | None = 0 if in_call else None  # where held function-call text begins
        if chat:
            names = [BOS, IM_END, RESULT_START, RESULT_END] + [
                t for s, e, _ in TOOL_KINDS.values() for t in (s, e)
            ]
            self._special = {tokenizer.token_id(n): n for n in names}
            self._opens = {tokenizer.token_id(s): kind for kind, (s, _, _) in TOOL_KINDS.items()}

    # -- feeding -------------------------------------------------------------------------------------

    def feed(self, token: int, logprob: float | None = None, is_stop: bool = False) -> Piece:
        """One generated token (``is_stop``: the stop/EOS token that ended the sample)."""
        piece = Piece()
        self.token_ids.append(token)
        if self.stopped or is_stop:
            return piece
        if self.chat:
            self._feed_chat(token, logprob, piece)
        else:
            self._add_text(token, logprob, piece)
        return piece

    def finish(self) -> Piece:
        """The end of the sample: hand out the held text (no stop string can complete any more),
        but for function-call text, which the caller reads first (``release``)."""
        piece = Piece()
        if not self.stopped:
            self._flush_utf8()
            self._emit(len(self.content), piece)
            self._hand_out(len(self._lp), piece)  # a token with no text at the very end, if any
        return piece

    def release(self) -> Piece:
        """Everything still held, text and logprobs: at the end of a reply whose held call text the
        caller found was no call after all (or to send a call's logprobs)."""
        piece = Piece()
        self.calls, self.call_at = False, None
        if len(self.content) > self.sent:  # after finish(): every character is complete
            piece.text, self.sent = self.content[self.sent :], len(self.content)
        self._hand_out(len(self._lp), piece)
        return piece

    def _feed_chat(self, token: int, logprob: float | None, piece: Piece) -> None:
        name = self._special.get(token)
        if self._mode == "call":
            _, close, _ = TOOL_KINDS[self._call_kind]
            if name == close:
                use = ToolUse(
                    len(self.tool_uses), self._call_kind, self._decode(self._call), len(self.content)
                )
                self.tool_uses.append(use)
                piece.tools_started.append(use)
                self._mode = "await"
                return
            if name is None:
                self._call.append(token)
                return
            # another control token abandons the call (the engine runs none whose body holds one, and
            # lm/chat.py's parse_assistant reads it so); that token is read as in text: an opening
            # token starts a new call, any other is dropped
            self._mode = "text"
        if self._mode == "await":
            if name == RESULT_START:
                self._mode, self._result = "result", []
                return
            self._mode = "text"  # no result follows (the tool is not enabled): the reply goes on
        if self._mode == "result":
            if name == RESULT_END:
                use = self.tool_uses[-1]
                use.result = self._decode(self._result)
                piece.tools_done.append(use)
                self._mode = "text"
            elif name is None:
                self._result.append(token)
            return
        if token in self._opens:
            self._flush_utf8()
            # a stop string does not span a tool call, nor does a function call's opening
            self._emit(len(self.content), piece, partial_call=False)
            self._mode, self._call_kind, self._call = "call", self._opens[token], []
            return
        if name is not None or token >= self.tok.vocab_size:
            return  # <|im_end|> / <|endoftext|> end the reply (the engine stops there); strays dropped
        self._add_text(token, logprob, piece)

    def _add_text(self, token: int, logprob: float | None, piece: Piece) -> None:
        if token >= self.tok.vocab_size or token in self._controls:
            return
        data = self.tok.token_bytes(token)
        start, lead = len(self.content), self._utf8.getstate()[0]
        self.content += self._utf8.decode(data)
        if self.want_logprobs:
            lp = logprob if logprob is not None else 0.0
            self._lp.append(TokenLogprob(lp, data, start, len(self.content), lead))
        self._check_stops(piece)

    def _check_stops(self, piece: Piece) -> None:
        if not self.stops:
            self._emit(len(self.content), piece)
            return
        # a match can only start at or after ``sent``: text before it was handed out because no stop
        # string could start there (and one never spans a tool call, where everything is handed out)
        hits = [i for i in (self.content.find(s, self.sent) for s in self.stops) if i >= 0]
        if hits:
            self._cut(min(hits), piece)
            return
        self._emit(len(self.content) - self._held(), piece)

    def _held(self) -> int:
        """Characters at the end of the content that could begin a stop string (held back)."""
        return tail_prefix(self.content, self.stops, self.sent)

    def _emit(self, end: int, piece: Piece, partial_call: bool = True) -> None:
        """Hand out the content up to ``end`` (or to the start of a token whose text is not all
        there yet, or of a function call's text) and the logprobs of the tokens it holds."""
        self._send_to(self._token_start_before(min(end, self._call_limit(partial_call))), piece)

    def _send_to(self, end: int, piece: Piece) -> None:
        """Hand out the content up to ``end`` and the logprobs of the tokens whose text it begins."""
        if end > self.sent:
            piece.text += self.content[self.sent : end]
            self.sent = end
        n = self._lp_sent
        while n < len(self._lp) and self._lp[n].start < self.sent:
            n += 1
        self._hand_out(n, piece)

    def _call_limit(self, partial: bool = True) -> int:
        """Where held function-call text begins (the content's end when there is none): a call's
        opening with the newline before it, or (``partial``) a tail that could still become one."""
        if not self.calls:
            return len(self.content)
        if self.call_at is None:
            found = [i for i in (self.content.find(o, self.sent) for o in _CALL_OPENINGS) if i >= 0]
            if found:
                self.call_at = min(found)
        if self.call_at is not None:
            return self.call_at
        return len(self.content) - (tail_prefix(self.content, _CALL_OPENINGS, self.sent) if partial else 0)

    def _token_start_before(self, end: int) -> int:
        """``end``, or the start of the first token not handed out whose text goes past ``end`` or
        may still grow (the last one, while its character's bytes are incomplete)."""
        if self._lp_sent == len(self._lp):
            return end
        open_last = bool(self._utf8.getstate()[0])
        for i in range(self._lp_sent, len(self._lp)):
            t = self._lp[i]
            if t.start >= end:
                break
            if t.end > end or (open_last and i == len(self._lp) - 1):
                return t.start
        return end

    def _hand_out(self, n: int, piece: Piece) -> None:
        for t in self._lp[self._lp_sent : n]:
            t.text = self.content[t.start : t.end]
            piece.logprobs.append(t)
        self._lp_sent = max(self._lp_sent, n)

    def _cut(self, cut: int, piece: Piece) -> None:
        """A stop string starts at ``cut``: the content ends there, and so do the logprobs (tokens
        after it dropped, the token it begins inside cut to its characters before it)."""
        self.content = self.content[:cut]
        self.stopped = True
        self._lp = [t for t in self._lp if t.start < cut]
        if self._lp and self._lp[-1].end > cut:
            self._lp[-1].cut(cut - self._lp[-1].start)
        self._send_to(min(cut, self._call_limit()), piece)  # held call text stays held (release)

    def _flush_utf8(self) -> None:
        tail = self._utf8.decode(b"", final=True)  # a character left incomplete: U+FFFD
        self.content += tail
        if tail and self._lp:
            self._lp[-1].end = len(self.content)  # the token whose bytes it had

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode_bytes([t for t in ids if t < self.tok.vocab_size]).decode("utf-8", "replace")

    # -- reading -------------------------------------------------------------------------------------

    @property
    def logprobs(self) -> list[TokenLogprob]:
        return list(self._lp)

    def parts(self) -> list[dict[str, Any]]:
        """The reply as lm/chat_messages.py content parts (text and tool calls in order)."""
        out: list[dict[str, Any]] = []
        pos = 0
        for use in self.tool_uses:
            if use.offset > pos:
                out.append({"type": "text", "text": self.content[pos : use.offset]})
            out.append(use.as_part())
            pos = use.offset
        if len(self.content) > pos:
            out.append({"type": "text", "text": self.content[pos:]})
        return out
