"""The chat format: conversations to token ids with a loss mask, prompts for generation, replies back.

One rendering serves SFT, RL, distillation and serving (as nanochat's ``render_conversation`` does), so
what a model is trained on is exactly what it later sees and writes:

    from lm.chat import ChatFormat
    chat = ChatFormat(tokenizer)
    r = chat.render_conversation(conversation, max_tokens=2048)   # r.ids, r.mask (1 = trained)
    prompt = chat.render_prompt(messages, max_tokens=2048 - 256).ids  # ends with <|im_start|>assistant\\n
    results = engine.generate([prompt], SamplingParams(stop_token_ids=chat.stop_token_ids), tool_hooks=...)
    reply = chat.parse_assistant(results[0].token_ids).message     # text, search/calc calls, tool_calls

The text layout is in lm/chat_template.py (with the equivalent Jinja template); messages are described
in lm/chat_messages.py.

**What is trained** (``mask`` 1): an assistant's own tokens: its text, the search query and calculator
expression with their opening and closing tokens, its function-call text, and the ``<|im_end|>`` that
ends the turn (that is how the model learns to stop). Not trained: the ``<|endoftext|>`` start, every
role header (``<|im_start|>assistant\\n`` included: it is the prompt), the newline after
``<|im_end|>``, system/user/tool turns, tool results (``<|result_start|> ... <|result_end|>``, injected
by the tool hook at generation time, so the model never learns to write them), and assistant messages
with ``weight`` 0. ``mask[i]`` belongs to ``ids[i]``: the loss for predicting ``ids[i]`` from
``ids[:i]`` counts when ``mask[i]`` is 1 (targets ``ids[1:]`` take ``mask[1:]``).

**Injection**: every text that comes from a person, a document or a tool is encoded as plain text, so
``<|im_start|>system`` or ``<|search_start|>`` inside a message is a handful of ordinary tokens;
control tokens come only from the conversation's structure.

**Tokenization**: each text piece between control tokens is encoded on its own, and a role header
(``assistant\\n``) apart from its content, exactly as the model sees them at generation time (the prompt
ends with the header). A tokenizer that encodes the rendered text in one go (the Jinja template's
users) gets the same ids except where a content begins with whitespace that merges with the header's
newline (for example a content starting with ``\\n``); the text is the same.

**Truncation rules** (``max_tokens``), which never cut inside a turn's control tokens:

- training: whole turns are kept from the start while they fit; trailing turns that train nothing
  (a user turn, an assistant turn with weight 0) are dropped too. If not even the first trained
  assistant turn fits whole, it is cut: its header and everything before it are kept, then its
  content up to the budget, cutting text only between tokens and never inside a tool call or result
  (the turn then has no ``<|im_end|>``; ``Rendered.cut`` says so). If the tokens before that reply's
  first trained token do not fit, ``ConversationTooLong`` is raised.
- prompts: leading system messages and the last exchange (the last user message and what follows it)
  are always kept; the oldest exchanges are dropped whole until the prompt fits. If the system
  messages plus the last exchange do not fit, ``ConversationTooLong`` is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from lm.chat_messages import (
    ChatFormatError,
    Conversation,
    Message,
    normalize_conversation,
    text_of,
    tool_call_text,
)
from lm.chat_template import (
    BOS,
    CALC_END,
    CALC_START,
    IM_END,
    IM_START,
    RESULT_END,
    RESULT_START,
    SEARCH_END,
    SEARCH_START,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    TOOLS_FOOTER,
    TOOLS_HEADER,
)

__all__ = [
    "ChatFormat",
    "ChatFormatError",
    "ConversationTooLong",
    "ParsedReply",
    "Rendered",
    "normalize_conversation",
    "text_of",
]

PAD = "<|pad|>"
CALL_TOKENS = {"search": (SEARCH_START, SEARCH_END, "query"), "calc": (CALC_START, CALC_END, "expression")}


class ConversationTooLong(ChatFormatError):
    """A conversation that cannot be made to fit ``max_tokens`` by the truncation rules."""


class _Tokenizer(Protocol):
    vocab_size: int

    def token_id(self, special: str) -> int: ...
    def encode(self, text: str, allow_special: bool = False) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass
class Rendered:
    """Token ids and their loss mask (1 = trained), and what truncation did."""

    ids: list[int]
    mask: list[int]
    turns_dropped: int = 0  # messages left out by truncation
    cut: bool = False  # an assistant reply was cut inside its content

    @property
    def trained_tokens(self) -> int:
        return sum(self.mask)


@dataclass
class ParsedReply:
    """An assistant message read back from generated ids.

    ``finish``: "stop" (``<|im_end|>``), "eos" (``<|endoftext|>``) or "length" (the ids ran out first).
    ``problems`` lists what did not follow the format (stray control tokens, a call without its
    closing token, unreadable function-call JSON), each kept as text or dropped as said there.
    """

    message: Message
    finish: str
    problems: list[str] = field(default_factory=list)


@dataclass
class _Seg:
    text: str  # the text, or a special token's string
    special: bool = False
    trained: bool = False


@dataclass
class _Atom:
    """Segments truncation keeps or drops together; ``divisible`` text may be cut between tokens."""

    segs: list[_Seg]
    divisible: bool = False


class _Encoded(NamedTuple):
    ids: list[int]
    mask: list[int]
    divisible: bool


@dataclass
class _Turn:
    role: str
    atoms: list[_Atom]


class ChatFormat:
    """The ChatML-style format over one tokenizer (which must have the special tokens of
    lm/tokenizer.py; every raychat tokenizer does)."""

    def __init__(self, tokenizer: _Tokenizer) -> None:
        self.tokenizer = tokenizer
        names = (
            BOS,
            IM_START,
            IM_END,
            SEARCH_START,
            SEARCH_END,
            CALC_START,
            CALC_END,
            RESULT_START,
            RESULT_END,
        )
        self.special_ids = {name: tokenizer.token_id(name) for name in names}
        try:
            self.special_ids[PAD] = tokenizer.token_id(PAD)
        except KeyError:
            pass
        self.im_end_id = self.special_ids[IM_END]
        self.bos_id = self.special_ids[BOS]
        # generation stops at the end of the assistant's turn (the engine also stops at its EOS)
        self.stop_token_ids = [self.im_end_id]

    # -- rendering ----------------------------------------------------------------------------------

    def render_conversation(self, conversation: Any, max_tokens: int | None = None) -> Rendered:
        """Token ids and loss mask of a whole conversation, for training (see the module docstring)."""
        turns = self._turns(normalize_conversation(conversation))
        encoded = [[self._encode_atom(a) for a in t.atoms] for t in turns]
        lengths = [sum(len(a.ids) for a in atoms) for atoms in encoded]
        if max_tokens is None or 1 + sum(lengths) <= max_tokens:
            return self._join(encoded)
        if max_tokens < 2:
            raise ConversationTooLong(f"max_tokens={max_tokens} leaves no room for a conversation")
        budget, kept, used = max_tokens - 1, 0, 0
        while kept < len(turns) and used + lengths[kept] <= budget:
            used += lengths[kept]
            kept += 1
        while kept and not any(any(a.mask) for a in encoded[kept - 1]):
            kept -= 1
        if kept:
            return self._join(encoded[:kept], dropped=len(turns) - kept)
        return self._cut_first_reply(encoded, lengths, max_tokens)

    def render_prompt(
        self,
        conversation: Any,
        max_tokens: int | None = None,
        *,
        after_assistant: bool = False,
        any_arguments: bool = False,
    ) -> Rendered:
        """Ids of a conversation followed by ``<|im_start|>assistant\\n``, for generation; the mask is
        all 0. Oldest exchanges are dropped whole to fit ``max_tokens`` (module docstring).

        A conversation that ends with an assistant message is refused unless ``after_assistant``:
        a prompt for training, evaluation or a reward model must end with the turn its reply
        answers, while OpenAI's API (serving) answers such a conversation with a new assistant turn
        after it. ``any_arguments``: lm/chat_messages.py's."""
        conv = normalize_conversation(conversation, any_arguments)
        if conv["messages"][-1]["role"] == "assistant" and not after_assistant:
            raise ChatFormatError(
                "the conversation already ends with an assistant reply; nothing to prompt for"
            )
        turns = self._turns(conv)
        encoded = [[self._encode_atom(a) for a in t.atoms] for t in turns]
        encoded.append([self._encode_atom(self._header("assistant"))])
        lengths = [sum(len(a.ids) for a in atoms) for atoms in encoded]
        head = 0
        while head < len(turns) and turns[head].role == "system":
            head += 1
        starts = [i for i in range(head, len(turns)) if turns[i].role == "user"] or [head]
        if starts[0] != head:
            starts.insert(0, head)
        total = 1 + sum(lengths)
        dropped_to = head
        for nxt in starts[1:]:
            if max_tokens is None or total <= max_tokens:
                break
            total -= sum(lengths[dropped_to:nxt])
            dropped_to = nxt
        if max_tokens is not None and total > max_tokens:
            raise ConversationTooLong(
                f"the prompt needs {total} tokens even with only its system messages and last exchange, "
                f"more than max_tokens={max_tokens}"
            )
        kept = encoded[:head] + encoded[dropped_to:]
        rendered = self._join(kept, dropped=dropped_to - head)
        rendered.mask = [0] * len(rendered.ids)
        return rendered

    def render_text(self, conversation: Any, add_generation_prompt: bool = False) -> str:
        """The rendering as text (what ``CHAT_TEMPLATE`` produces for the same conversation)."""
        turns = self._turns(normalize_conversation(conversation))
        if add_generation_prompt:
            turns.append(_Turn("assistant", [self._header("assistant")]))
        return BOS + "".join(s.text for t in turns for a in t.atoms for s in a.segs)

    # -- parsing ------------------------------------------------------------------------------------

    def parse_assistant(self, ids: Sequence[int]) -> ParsedReply:
        """An assistant message from generated ids (what follows ``<|im_start|>assistant\\n``).

        Tool results in the ids (injected by the hooks) become the calls' ``result``; ids after the
        closing ``<|im_end|>`` are ignored.
        """
        sp = self.special_ids
        by_id = {v: k for k, v in sp.items()}
        ends = {sp[IM_END]: "stop", sp[BOS]: "eos"}
        opens = {sp[start]: kind for kind, (start, _, _) in CALL_TOKENS.items()}
        parts: list[dict[str, Any]] = []
        problems: list[str] = []
        text: list[int] = []
        finish = "length"
        vocab = self.tokenizer.vocab_size
        i, n = 0, len(ids)

        def until(close: int, start: int) -> tuple[list[int], int, bool]:
            j = start
            while j < n and ids[j] != close and ids[j] not in by_id:
                j += 1
            return [t for t in ids[start:j] if t < vocab], j, j < n and ids[j] == close

        while i < n:
            t = ids[i]
            if t in ends:
                finish = ends[t]
                if i + 1 < n:
                    problems.append(f"{n - i - 1} tokens after {by_id[t]} ignored")
                break
            if t in opens:
                kind = opens[t]
                _, close_name, field_name = CALL_TOKENS[kind]
                call_ids, j, closed = until(sp[close_name], i + 1)
                part: dict[str, Any] = {
                    "type": kind,
                    field_name: self.tokenizer.decode(call_ids),
                    "result": None,
                }
                if not closed:
                    problems.append(f"{kind} call at token {i} has no {close_name}")
                    i = j
                else:
                    i = j + 1
                    if i < n and ids[i] == sp[RESULT_START]:
                        result_ids, j, done = until(sp[RESULT_END], i + 1)
                        part["result"] = self.tokenizer.decode(result_ids)
                        if not done:
                            problems.append(f"{kind} result at token {i} has no {RESULT_END}")
                        i = j + 1 if done else j
                self._flush_text(text, parts)
                parts.append(part)
                continue
            if t in by_id or t >= vocab:
                what = by_id.get(t, f"id {t} (past the vocabulary)")
                problems.append(f"stray {what} at token {i} dropped")
            else:
                text.append(t)
            i += 1
        self._flush_text(text, parts)
        return ParsedReply(self._assistant_message(parts, problems), finish, problems)

    # -- internals ----------------------------------------------------------------------------------

    def _flush_text(self, text: list[int], parts: list[dict[str, Any]]) -> None:
        if text:
            parts.append({"type": "text", "text": self.tokenizer.decode(text)})
            text.clear()

    @staticmethod
    def _assistant_message(parts: list[dict[str, Any]], problems: list[str]) -> Message:
        """Function calls (``<tool_call>`` text) out of the text parts into ``tool_calls``."""
        calls: list[dict[str, Any]] = []
        out: list[dict[str, Any]] = []
        for part in parts:
            if part["type"] != "text" or TOOL_CALL_OPEN not in part["text"]:
                out.append(part)
                continue
            text, found = split_function_calls(part["text"], problems)
            calls += found
            if text:
                out.append({"type": "text", "text": text})
        message: Message = {"role": "assistant"}
        if all(p["type"] == "text" for p in out):
            message["content"] = "".join(p["text"] for p in out)
        else:
            message["content"] = out
        if calls:
            message["tool_calls"] = calls
        return message

    def _join(self, encoded: list[list[_Encoded]], dropped: int = 0) -> Rendered:
        ids, mask = [self.bos_id], [0]
        for atoms in encoded:
            for atom in atoms:
                ids += atom.ids
                mask += atom.mask
        return Rendered(ids, mask, turns_dropped=dropped)

    def _cut_first_reply(
        self, encoded: list[list[_Encoded]], lengths: list[int], max_tokens: int
    ) -> Rendered:
        first = next((i for i, atoms in enumerate(encoded) if any(any(a.mask) for a in atoms)), None)
        if first is None:
            raise ConversationTooLong(
                f"the conversation needs {1 + sum(lengths)} tokens, more than max_tokens={max_tokens}, and has no "
                "assistant reply to train"
            )
        rendered = self._join(encoded[:first], dropped=len(encoded) - first - 1)
        rendered.cut = True
        room = max_tokens - len(rendered.ids)
        for a_ids, a_mask, divisible in encoded[first]:
            if len(a_ids) <= room:
                take = len(a_ids)
            elif divisible:
                take = room
            else:
                break
            rendered.ids += a_ids[:take]
            rendered.mask += a_mask[:take]
            room -= take
            if take < len(a_ids) or not room:
                break
        if not any(rendered.mask):
            raise ConversationTooLong(
                f"the first assistant reply starts past max_tokens={max_tokens} (its turn begins at token "
                f"{1 + sum(lengths[:first])}); nothing would be trained"
            )
        return rendered

    def _turns(self, conv: Conversation) -> list[_Turn]:
        messages: list[Message] = conv["messages"]
        tools_text = None
        if conv.get("tools"):
            tools_text = (
                TOOLS_HEADER
                + "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in conv["tools"])
                + TOOLS_FOOTER
            )
        turns: list[_Turn] = []
        if tools_text is not None and messages[0]["role"] != "system":
            turns.append(self._plain_turn("system", tools_text))
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                turns.append(self._assistant_turn(m))
                continue
            text = m["content"]
            if i == 0 and m["role"] == "system" and tools_text is not None:
                text = text + "\n\n" + tools_text if text else tools_text
            turns.append(self._plain_turn(m["role"], text))
        return turns

    def _header(self, role: str) -> _Atom:
        return _Atom([_Seg(IM_START, special=True), _Seg(role + "\n")])

    def _plain_turn(self, role: str, text: str) -> _Turn:
        atoms = [self._header(role)]
        if text:
            atoms.append(_Atom([_Seg(text)]))
        atoms.append(_Atom([_Seg(IM_END, special=True), _Seg("\n")]))
        return _Turn(role, atoms)

    def _assistant_turn(self, m: Message) -> _Turn:
        trained = m.get("weight", 1) == 1
        content = m["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        atoms = [self._header("assistant")]
        for part in parts:
            if part["type"] == "text":
                if part["text"]:
                    atoms.append(_Atom([_Seg(part["text"], trained=trained)], divisible=True))
                continue
            start, end, field_name = CALL_TOKENS[part["type"]]
            segs = [
                _Seg(start, special=True, trained=trained),
                _Seg(part[field_name], trained=trained),
                _Seg(end, special=True, trained=trained),
            ]
            if part.get("result") is not None:
                segs += [
                    _Seg(RESULT_START, special=True),
                    _Seg(part["result"]),
                    _Seg(RESULT_END, special=True),
                ]
            atoms.append(_Atom(segs))
        for call in m.get("tool_calls", ()):
            text = TOOL_CALL_OPEN + tool_call_text(call) + TOOL_CALL_CLOSE
            if len(atoms) > 1:
                text = "\n" + text
            if atoms[-1].divisible:  # one text run, encoded together as the model writes it
                atoms[-1] = _Atom([_Seg(atoms[-1].segs[0].text + text, trained=trained)], divisible=True)
            else:
                atoms.append(_Atom([_Seg(text, trained=trained)], divisible=True))
        atoms.append(_Atom([_Seg(IM_END, special=True, trained=trained), _Seg("\n")]))
        return _Turn("assistant", atoms)

    def _encode_atom(self, atom: _Atom) -> _Encoded:
        ids: list[int] = []
        mask: list[int] = []
        for seg in atom.segs:
            seg_ids = [self.special_ids[seg.text]] if seg.special else self.tokenizer.encode(seg.text)
            ids += seg_ids
            mask += [int(seg.trained)] * len(seg_ids)
        return _Encoded(ids, mask, atom.divisible)


_CALL_PATTERN = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)" + re.escape(TOOL_CALL_CLOSE), re.S)


def split_function_calls(text: str, problems: list[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The text without its function calls (each ``<tool_call>`` block and the newline before it),
    and the calls in order; a block that is not a call (invalid JSON) stays in the text, noted in
    ``problems``."""
    calls: list[dict[str, Any]] = []
    kept, pos = [], 0
    for m in _CALL_PATTERN.finditer(text):
        call = _read_tool_call(m.group(1))
        if call is None:
            if problems is not None:
                problems.append(f"function call {m.group(1)[:60]!r} is not valid JSON; kept as text")
            continue
        before = text[pos : m.start()]
        kept.append(before[:-1] if before.endswith("\n") else before)
        calls.append(call)
        pos = m.end()
    kept.append(text[pos:])
    return "".join(kept), calls


def _read_tool_call(text: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, Mapping):
        return None
    return {"type": "function", "function": {"name": obj["name"], "arguments": dict(args)}}
