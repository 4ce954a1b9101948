"""Client-side function calls: the model's Hermes-style ``<tool_call>`` text as OpenAI ``tool_calls``.

One reading for a whole reply and for a stream, so a streamed reply adds up to the whole one: the
stream's decoder holds back call text (serving/decode.py), and at the end of each choice
``stream_ending`` sends what the whole reply has and the stream has not yet sent (the content after
the calls, the calls themselves), a delta per call as OpenAI streams them.

A reply cut short (by ``max_tokens`` or a stop string) keeps the calls it completed; the call it was
writing when cut is neither content nor a call (an agent would otherwise show ``<tool_call>`` text or
run half a call), and its finish reason stays ``length`` so the client knows the turn is incomplete.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from lm.chat import split_function_calls
from lm.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from serving.decode import Piece, ReplyDecoder, tail_prefix


@dataclass(frozen=True)
class Functions:
    """How a request's replies read function calls: whether they do (the request has function
    tools), the function a forced reply calls, and whether several calls may be returned."""

    on: bool = False
    forced: str | None = None
    parallel: bool = True


def forced_call_opening(name: str) -> str:
    """The text a reply that must call ``name`` starts with: the call's opening as the chat format
    writes it (``tool_call_text``), up to where the arguments go. It ends at the colon, a boundary
    of the tokenizer's split pattern, so the model writes `` {`` as the one token it was trained on
    (a prompt ending in the space would split it in two)."""
    return TOOL_CALL_OPEN + '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments":'


def forced_call(written: str, finish: str | None) -> tuple[str, str]:
    """The arguments and finish reason of a reply made to call a function, from the text the model
    wrote after the opening: a JSON object re-serialised (the call made, even where the token limit
    came before the call's closing tag); other text (a small model's) as written, up to the call's
    end, as OpenAI warns that arguments may not be valid JSON."""
    written = written.split(TOOL_CALL_CLOSE.strip(), 1)[0]
    try:
        value, _ = json.JSONDecoder().raw_decode(written.lstrip())
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False), "tool_calls"
    return written.strip().removesuffix("}").rstrip(), "length" if finish == "length" else "tool_calls"


def openai_call(name: str, arguments: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}


def reply_calls(
    dec: ReplyDecoder, finish: str | None, parallel: bool = True
) -> tuple[str, list[dict[str, Any]], str | None]:
    """The reply's text without its function calls, the calls (only the first without
    ``parallel``), and the finish reason: ``tool_calls`` when it made one, unless it was cut by the
    token limit. The call a cut reply was writing is dropped (module docstring)."""
    content, found = split_function_calls(dec.content)
    if finish == "length" or dec.stopped:
        content = _without_unfinished_call(content)
    calls = [
        openai_call(c["function"]["name"], json.dumps(c["function"]["arguments"], ensure_ascii=False))
        for c in found[: None if parallel else 1]
    ]
    return content, calls, ("tool_calls" if calls and finish != "length" else finish)


def _without_unfinished_call(text: str) -> str:
    """``text`` less a call opened and never closed at its end (or the start of an opening)."""
    start = text.rfind(TOOL_CALL_OPEN)
    if start < 0 or TOOL_CALL_CLOSE in text[start:]:
        start = len(text) - tail_prefix(text, (TOOL_CALL_OPEN,))
    return text[:start].removesuffix("\n") if start < len(text) else text


def stream_ending(
    fn: Functions, dec: ReplyDecoder, finish: str | None
) -> tuple[list[dict[str, Any]], Piece, str | None]:
    """What a streamed choice still has to send at its end, given that the decoder held back its call
    text: the deltas (the rest of the content, then one per call; a forced call's arguments), the
    piece whose logprobs go with them, and the finish reason, each as the whole reply has them."""
    sent = dec.content[: dec.sent]
    rest = dec.release()
    if fn.forced:
        arguments, finish = forced_call(dec.content, finish)
        return [{"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}], rest, finish
    content, calls, finish = reply_calls(dec, finish, fn.parallel)
    deltas: list[dict[str, Any]] = []
    if content.startswith(sent) and len(content) > len(sent):
        deltas.append({"content": content[len(sent) :]})
    deltas += [{"tool_calls": [call | {"index": k}]} for k, call in enumerate(calls)]
    return deltas, rest, finish
