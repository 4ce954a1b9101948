"""Client-side function calls: the model's Hermes-style ``<tool_call>`` text as OpenAI ``tool_calls``.

One reading for a whole reply and for a stream, so a streamed reply adds up to the whole one: the
stream's decoder holds back call text (serving/decode.py), and at the end of each choice
``stream_ending`` sends what the whole reply would have had and the stream has not (the content
after the calls, the calls themselves).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from lm.chat import ChatFormat
from lm.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from serving.decode import Piece, ReplyDecoder


def forced_call_opening(name: str) -> str:
    """The text a reply that must call ``name`` starts with: the call's opening as the chat format
    writes it (``tool_call_text``), up to where the arguments go. It ends at the colon, a boundary
    of the tokenizer's split pattern, so the model writes `` {`` as the one token it was trained on
    (a prompt ending in the space would split it in two)."""
    return TOOL_CALL_OPEN + '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments":'


def forced_arguments(written: str) -> str:
    """The arguments of a reply made to call a function, from the text the model wrote after the
    opening: the JSON object re-serialised; text that is not one (a small model's) as written, up to
    the call's end, as OpenAI warns that arguments may not be valid JSON."""
    written = written.split(TOOL_CALL_CLOSE.strip(), 1)[0]
    try:
        value, _ = json.JSONDecoder().raw_decode(written.lstrip())
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return written.strip().removesuffix("}").rstrip()


def forced_finish(finish: str | None) -> str:
    """A forced call's finish reason: cut by the token limit, or the call made."""
    return "length" if finish == "length" else "tool_calls"


def openai_call(name: str, arguments: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}


def reply_calls(chat_format: ChatFormat | None, dec: ReplyDecoder) -> tuple[str, list[dict[str, Any]]]:
    """The reply's text without its function calls, and the calls; no calls where a stop string cut
    the reply (its call text is then content, as written)."""
    if chat_format is None or dec.stopped:
        return dec.content, []
    parsed = chat_format.parse_assistant(dec.token_ids).message
    if not parsed.get("tool_calls"):
        return dec.content, []
    content = parsed.get("content")
    if not isinstance(content, str):
        content = "".join(p["text"] for p in content or () if p.get("type") == "text")
    calls = [
        openai_call(c["function"]["name"], json.dumps(c["function"]["arguments"], ensure_ascii=False))
        for c in parsed["tool_calls"]
    ]
    return content, calls


def stream_ending(
    chat_format: ChatFormat | None, dec: ReplyDecoder, forced: str | None, finish: str | None
) -> tuple[dict[str, Any], Piece, str | None]:
    """What a streamed choice still has to send at its end, given that the decoder held back its call
    text: the delta (the rest of the content, the calls; a forced call's arguments), the piece whose
    logprobs go with it, and the finish reason, each as the whole reply has them."""
    sent = dec.content[: dec.sent]
    rest = dec.release()
    if forced:
        args = {"index": 0, "function": {"arguments": forced_arguments(dec.content)}}
        return {"tool_calls": [args]}, rest, forced_finish(finish)
    content, calls = reply_calls(chat_format, dec)
    if not calls:
        return ({"content": rest.text} if rest.text else {}), rest, finish
    delta: dict[str, Any] = {"tool_calls": [c | {"index": k} for k, c in enumerate(calls)]}
    if content.startswith(sent) and len(content) > len(sent):
        delta["content"] = content[len(sent) :]
    return delta, rest, "tool_calls"
