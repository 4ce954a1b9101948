"""Conversations as data: what a message may hold, checked and put in one canonical shape.

A conversation is a list of messages, or a dict ``{"messages": [...], "tools": [...]}`` (OpenAI's
request shape; ``tools`` declares functions, other keys such as ``meta`` are carried along). A message
is a dict in OpenAI's shape:

    {"role": "system" | "user" | "assistant" | "tool", "content": str}

with these additions, so that a tool call is part of the message rather than text that merely looks
like one:

- an assistant's ``content`` may be a list of parts, rendered in order:
  ``{"type": "text", "text": ...}``, ``{"type": "search", "query": ..., "result": ... | None}`` and
  ``{"type": "calc", "expression": ..., "result": ... | None}``. The query and the expression are
  the model's own tokens (trained); the result is what the tool injected (never trained).
- an assistant may carry OpenAI ``tool_calls`` (``{"type": "function", "function": {"name",
  "arguments"}}``), answered by ``tool`` messages, and a ``weight`` of 0 or 1 (OpenAI fine-tuning's:
  0 = not trained).

``normalize_conversation`` accepts what people send (a ``developer`` role, text-part lists, arguments
as a JSON string) and returns the canonical form; anything else is a ``ChatFormatError`` naming the
message and what is wrong. A call's ``arguments`` are a JSON object in the canonical form; with
``any_arguments`` (the serving API's reading: OpenAI's accepts any string there) a string that is not
one is kept as given and rendered as written. Training data keeps the check: a model trained on such
calls would learn to write broken ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lm.chat_template import TEXT_PARTS_SEPARATOR

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {"developer": "system"}
TOOL_PARTS = {"search": "query", "calc": "expression"}  # part type -> the field the model writes

Message = dict[str, Any]
Conversation = dict[str, Any]


class ChatFormatError(ValueError):
    """A conversation or message that cannot be rendered, described for a person."""


def _json_only(value: Any, what: str) -> None:
    """Refuse what cannot be rendered as JSON text (a parquet file's dates and bytes, NaN): the chat
    format writes tools and arguments as JSON, and the model would learn whatever came out."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ChatFormatError(f"{what} holds a value that is not JSON ({e})") from None


def normalize_conversation(conversation: Any, any_arguments: bool = False) -> Conversation:
    """The canonical form of a conversation (a new dict; the input is not changed); ``any_arguments``:
    the module docstring's."""
    if isinstance(conversation, list):
        conversation = {"messages": conversation}
    if not isinstance(conversation, Mapping):
        raise ChatFormatError(
            f"a conversation is a list of messages or a dict with 'messages', got {type(conversation).__name__}"
        )
    messages = conversation.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("a conversation needs a non-empty 'messages' list")
    out: Conversation = {k: v for k, v in conversation.items() if k not in ("messages", "tools")}
    out["messages"] = [normalize_message(m, i, any_arguments) for i, m in enumerate(messages)]
    tools = conversation.get("tools")
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
            raise ChatFormatError("'tools' must be a list of function descriptions (JSON objects)")
        out["tools"] = [dict(t) for t in tools]
        _json_only(out["tools"], "'tools'")
    _check_tool_turns(out["messages"])
    return out


def normalize_message(message: Any, index: int = 0, any_arguments: bool = False) -> Message:
    where = f"message {index}"
    if not isinstance(message, Mapping):
        raise ChatFormatError(f"{where}: a message is a JSON object, got {type(message).__name__}")
    if message.get("role") is None:
        raise ChatFormatError(f"{where}: 'role' is missing (roles: {', '.join(ROLES)})")
    role = message.get("role")
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        raise ChatFormatError(f"{where}: unknown role {message.get('role')!r} (roles: {', '.join(ROLES)})")
    content = message.get("content")
    out: Message = {"role": role}
    if role == "assistant":
        out["content"] = _assistant_content(content, where)
        calls = message.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise ChatFormatError(f"{where}: 'tool_calls' must be a list")
            out["tool_calls"] = [
                _tool_call(c, f"{where}, tool call {j}", any_arguments) for j, c in enumerate(calls)
            ]
        if message.get("weight") is not None:  # null is absent: a parquet file fills every key
            weight = message["weight"]
            if isinstance(weight, str) or weight not in (0, 1):
                raise ChatFormatError(f"{where}: 'weight' must be 0 or 1, got {weight!r}")
            out["weight"] = int(weight)
        if not out["content"] and not out.get("tool_calls") and content is None:
            raise ChatFormatError(f"{where}: an assistant message needs 'content' or 'tool_calls'")
        return out
    if message.get("weight") is not None:
        raise ChatFormatError(f"{where}: only assistant messages take a 'weight'")
    out["content"] = _plain_content(content, where)
    if role == "tool":
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                out[key] = message[key]
    return out


def _plain_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise ChatFormatError(f"{where}: 'content' is missing")
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ChatFormatError(
                    f"{where}: content part {j} is {kind!r}; only text parts ({{'type': 'text', 'text': ...}}) "
                    "are supported here"
                )
            if not isinstance(part.get("text"), str):
                got = type(part.get("text")).__name__ if "text" in part else "missing"
                raise ChatFormatError(f"{where}: content part {j}: 'text' must be a string, got {got}")
            texts.append(part["text"])
        return TEXT_PARTS_SEPARATOR.join(texts)
    raise ChatFormatError(f"{where}: 'content' must be text or a list of parts, got {type(content).__name__}")


def _assistant_content(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A string when the reply is only text; otherwise its parts, adjacent text parts merged."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ChatFormatError(
            f"{where}: 'content' must be text or a list of parts, got {type(content).__name__}"
        )
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise ChatFormatError(f"{where}: content part {j} is a {type(part).__name__}, not an object")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ChatFormatError(f"{where}: text part {j} needs a string 'text'")
            if parts and parts[-1]["type"] == "text":
                parts[-1] = {"type": "text", "text": parts[-1]["text"] + text}
            elif text:
                parts.append({"type": "text", "text": text})
        elif isinstance(kind, str) and kind in TOOL_PARTS:  # ["text"] as a type: a clear error, not TypeError
            field = TOOL_PARTS[kind]
            call, result = part.get(field), part.get("result")
            if not isinstance(call, str) or not call:
                raise ChatFormatError(f"{where}: {kind} part {j} needs a non-empty string {field!r}")
            if result is not None and not isinstance(result, str):
                raise ChatFormatError(f"{where}: {kind} part {j}: 'result' must be a string or null")
            parts.append({"type": kind, field: call, "result": result})
        else:
            raise ChatFormatError(
                f"{where}: content part {j} has type {kind!r}; an assistant's parts are text, search and calc"
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _tool_call(call: Any, where: str, any_arguments: bool = False) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        raise ChatFormatError(f"{where}: a tool call is a JSON object")
    fn = call.get("function", call)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ChatFormatError(f"{where}: needs a function 'name'")
    args = _arguments(fn.get("arguments", {}), where, any_arguments)
    out: dict[str, Any] = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _arguments(args: Any, where: str, any_string: bool) -> dict[str, Any] | str:
    """A call's arguments as a dict, or (``any_string``) a string that is no JSON object, as given."""
    if isinstance(args, str):
        try:
            parsed = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            if any_string:
                return args
            raise ChatFormatError(f"{where}: 'arguments' is not valid JSON ({e.msg})") from None
        if any_string and not isinstance(parsed, Mapping):
            return args
        args = parsed
    if not isinstance(args, Mapping):
        raise ChatFormatError(f"{where}: 'arguments' must be a JSON object, got {type(args).__name__}")
    _json_only(args, f"{where}: 'arguments'")
    return dict(args)


def _check_tool_turns(messages: list[Message]) -> None:
    for i, m in enumerate(messages):
        if m["role"] != "tool":
            continue
        prev = messages[i - 1] if i else None
        if prev is None or not (prev["role"] == "tool" or prev.get("tool_calls")):
            raise ChatFormatError(
                f"message {i}: a tool message must follow an assistant message with tool_calls (or another "
                "tool message)"
            )


def tool_call_text(call: Mapping[str, Any]) -> str:
    """The JSON the model writes for a function call (the Jinja template builds the same string)."""
    fn = call["function"]
    args = fn["arguments"]
    args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return '{"name": ' + json.dumps(fn["name"], ensure_ascii=False) + ', "arguments": ' + args_text + "}"


def text_of(message: Mapping[str, Any]) -> str:
    """The message's own text: text parts only (no tool queries or results, no function calls); what
    a reward or a grader reads as the answer."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content or () if p.get("type") == "text")
