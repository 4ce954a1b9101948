"""Each chat-data format turned into lm/chat_messages.py's conversations, one small function per format.

- ``messages``: OpenAI chat fine-tuning JSONL, ``{"messages": [{"role", "content", "tool_calls"?,
  "weight"?}], "tools"?: [...], "meta"?: {...}}`` (``meta`` is carried along into the example's meta).
- ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}``; Stanford
  Alpaca's seed tasks (``{"instruction", "instances": [{"input", "output"}]}``) give one conversation
  per instance.
- ``sharegpt``: ``{"conversations": [{"from", "value"}], "system"?, "tools"?}`` (``items`` for
  ``conversations`` in the raw sharegpt_90k dumps) with from = human/user,
  gpt/assistant, system, function_call (an assistant's call: ``{"name", "arguments"}`` JSON, or a list
  of them) and observation (its result, a tool turn).
- ``oasst``: OpenAssistant oasst1/oasst2 message rows (``message_id``, ``parent_id``, ``role``
  prompter/assistant, ``text``, ``rank``, ...) or its tree export (``{"message_tree_id", "prompt":
  {..., "replies": [...]}}``): conversations rebuilt from the trees, see ``oasst_conversations``.
- ``gsm8k``: ``{"question", "answer"}`` with the reasoning and ``#### <number>``; the reasoning's
  ``<<48/2=24>>`` calculator annotations become calc tool calls (``calculator="tool"``), are removed
  (``"strip"``) or are left as text (``"keep"``).

A converter raises ``RecordError`` for a record it cannot use; the caller counts it by ``reason``.
A record that holds several examples (a seed task's instances) reports a bad one in ``skipped`` and
keeps the others. A user turn or an assistant reply with nothing but white space is refused in every
format by one check (``empty_turn``: ``empty_prompt``, ``empty_reply``; the preference reader's names),
since a reply of nothing is a training target like any other.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from lm.calculator import CalculatorError, evaluate, format_number
from lm.chat_messages import ChatFormatError, Conversation, normalize_conversation
from pipelines.records import Problem, Record

FORMATS = ("messages", "alpaca", "sharegpt", "oasst", "gsm8k")


class RecordError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def detect_format(value: Any) -> str | None:
    """The format a record looks like, from its keys; None when it looks like none of them."""
    if not isinstance(value, Mapping):
        return None
    turns = _turns(value)
    if isinstance(turns, list) and turns and isinstance(turns[0], Mapping):
        if "from" in turns[0] or str(turns[0].get("role", "")).lower() in _SHAREGPT_ONLY:
            return "sharegpt"  # ShareGPT's speakers (human, gpt, ...) under 'role' are ShareGPT too
        # OpenAI messages, under 'messages' or under 'conversations' (as many Hugging Face datasets
        # keep them); read as messages, whose weight, tool calls and text parts the ShareGPT reader lost
        return "messages" if "role" in turns[0] and "items" not in value else None
    if "message_id" in value and "role" in value and "parent_id" in value:
        return "oasst"
    if "message_tree_id" in value and isinstance(value.get("prompt"), Mapping):
        return "oasst"
    if "instruction" in value and ("output" in value or "instances" in value):
        return "alpaca"
    if "question" in value and "answer" in value:
        return "gsm8k"
    return None


def _turns(rec: Mapping) -> Any:
    """A conversation's turns: under 'conversations' or 'messages', or 'items' as the raw ShareGPT
    dumps (sharegpt_90k) have them."""
    for key in ("conversations", "messages", "items"):
        if key in rec:
            return rec[key]
    return None


def _json_type(value: Any) -> str:
    """A value's JSON type in words ("'output' is a number", not "is a int")."""
    for kind, words in (
        (bool, "a boolean"),
        (int | float, "a number"),
        (list, "an array"),
        (Mapping, "an object"),
    ):
        if isinstance(value, kind):
            return words
    return f"a {type(value).__name__}"


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RecordError("not_an_object", f"a record is a JSON object, got {type(value).__name__}")
    return value


def _text(rec: Mapping[str, Any], key: str, required: bool = True) -> str:
    value = rec.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "missing" if value is None else f"{_json_type(value)}, not text"
        raise RecordError(f"bad_{key}", f"{key!r} is {what}")
    return value


EMPTY_REPLY = "empty_reply"
EMPTY_PROMPT = "empty_prompt"
# the turns that must say something, with the reason one that says nothing is counted under
_MUST_SAY = {"assistant": (EMPTY_REPLY, "the assistant's reply"), "user": (EMPTY_PROMPT, "the user's turn")}


def says_nothing(message: Mapping[str, Any]) -> bool:
    """A canonical message with nothing but white space: no text, no tool parts, no tool calls."""
    content = message["content"]  # canonical: parts only when a tool part is among them
    return isinstance(content, str) and not content.strip() and not message.get("tool_calls")


def empty_turn(message: Mapping[str, Any], where: str) -> RecordError | None:
    """The error that refuses a user turn or an assistant reply of only white space (``where``
    names it), else None. Every token of a reply is a training target, so an empty one teaches the
    model to answer with nothing (or a newline), and a reply to an empty turn teaches it to answer a
    question nobody asked. A system or tool turn may be empty (no system prompt; a function that
    returned nothing)."""
    if message["role"] not in _MUST_SAY or not says_nothing(message):
        return None
    reason, what = _MUST_SAY[message["role"]]
    return RecordError(reason, f"{where}: {what} is empty or only white space")


def finish(conversation: Conversation) -> Conversation:
    """Check a converted conversation (canonical form, no user or assistant turn of only white space,
    at least one assistant reply to learn from) and return it normalized."""
    try:
        conv = normalize_conversation(conversation)
    except ChatFormatError as e:
        raise RecordError("bad_conversation", str(e)) from None
    for i, m in enumerate(conv["messages"]):
        if error := empty_turn(m, f"message {i}"):
            raise error
    if not any(m["role"] == "assistant" and m.get("weight", 1) for m in conv["messages"]):
        raise RecordError("no_reply", "no assistant reply to learn from")
    return conv


# -- messages ------------------------------------------------------------------------------------


def from_messages(value: Any, **_: Any) -> list[Conversation]:
    rec = _mapping(value)
    messages = rec.get("messages", rec.get("conversations"))
    if not isinstance(messages, list) or not messages:
        raise RecordError("bad_messages", "'messages' is missing or not a non-empty list")
    system = rec.get("system") if isinstance(rec.get("system"), str) else None  # as ShareGPT records have
    if system and not (
        isinstance(messages[0], Mapping) and messages[0].get("role") in ("system", "developer")
    ):
        messages = [{"role": "system", "content": system}, *messages]
    conv: Conversation = {"messages": messages}
    if rec.get("tools"):
        conv["tools"] = _tools(rec["tools"])
    out = finish(conv)
    if isinstance(rec.get("meta"), Mapping):  # e.g. the kind of a generated example, kept for reports
        out["meta"] = dict(rec["meta"])
    return [out]


def _tools(tools: Any) -> list[Any]:
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as e:
            raise RecordError("bad_tools", f"'tools' is not valid JSON ({e.msg})") from None
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
        raise RecordError("bad_tools", "'tools' must be a list of function descriptions")
    return tools


# -- alpaca --------------------------------------------------------------------------------------


def from_alpaca(
    value: Any, skipped: list[tuple[str, RecordError]] | None = None, **_: Any
) -> list[Conversation]:
    """One conversation, or one per instance of a Stanford seed task. A task's instances are
    independent examples of one instruction, so a bad one (an empty output) costs only itself: it is
    put in ``skipped`` as ``("instance i", error)`` for the caller to count, and the task's good
    instances are kept. Without ``skipped``, the first bad instance raises, as a bad record does."""
    rec = _mapping(value)
    instruction = _text(rec, "instruction")
    if "instances" not in rec or "output" in rec:
        return [_alpaca_one(instruction, rec, rec)]
    instances = rec["instances"]  # Stanford Alpaca's seed tasks
    if not isinstance(instances, list) or not instances:
        raise RecordError("bad_instances", "'instances' must be a non-empty list")
    out: list[Conversation] = []
    for i, inst in enumerate(instances):
        try:
            out.append(_alpaca_one(instruction, _mapping(inst), rec))
        except RecordError as e:
            if skipped is None:
                raise
            skipped.append((f"instance {i}", e))
    return out


def _alpaca_one(instruction: str, pair: Mapping[str, Any], rec: Mapping[str, Any]) -> Conversation:
    extra = _text(pair, "input", required=False)
    output = _text(pair, "output")  # empty, or an empty instruction: refused by finish()
    messages: list[dict[str, Any]] = []
    system = _text(rec, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    history = rec.get("history") or []
    if not isinstance(history, list) or not all(
        isinstance(h, list | tuple) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in history
    ):
        raise RecordError("bad_history", "'history' must be a list of [question, answer] pairs of text")
    for q, a in history:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    # the instruction, then the input after a blank line; either alone when the other is blank
    prompt = "\n\n".join(x for x in (instruction, extra) if x.strip()) or instruction
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return finish({"messages": messages})


# -- sharegpt ------------------------------------------------------------------------------------

_OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool"}
# ShareGPT speakers no OpenAI message has: a turn with one under 'role' is a ShareGPT turn
_SHAREGPT_ONLY = {
    "human",
    "gpt",
    "chatgpt",
    "bard",
    "bing",
    "model",
    "function_call",
    "observation",
    "function",
}
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    "function_call": "call",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}


def from_sharegpt(value: Any, **_: Any) -> list[Conversation]:
    rec = _mapping(value)
    turns = _turns(rec)
    if not isinstance(turns, list) or not turns:
        raise RecordError("bad_conversations", "'conversations' is missing or not a non-empty list")
    messages: list[dict[str, Any]] = []
    system = _text(rec, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            raise RecordError("bad_turn", f"turn {i} is not an object")
        if "from" not in turn and str(turn.get("role", "")).lower() in _OPENAI_ROLES:  # an OpenAI message:
            # kept whole (its weight, tool calls and parts)
            messages.append(dict(turn))
            continue
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        role = SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise RecordError("bad_role", f"turn {i}: unknown speaker {speaker!r}")
        if not isinstance(text, str):
            raise RecordError("bad_turn", f"turn {i}: 'value' is missing or not text")
        if role != "call":
            messages.append({"role": role, "content": text})
            continue
        calls = _function_calls(text, i)
        prev = messages[-1] if messages else None
        if prev and prev["role"] == "assistant" and not prev.get("tool_calls"):
            prev["tool_calls"] = calls  # text, then the call, in one assistant turn
        else:
            messages.append({"role": "assistant", "content": "", "tool_calls": calls})
    conv: Conversation = {"messages": messages}
    if rec.get("tools"):
        conv["tools"] = _tools(rec["tools"])
    out = finish(conv)
    if isinstance(rec.get("meta"), Mapping):  # e.g. the kind of a generated example, kept for reports
        out["meta"] = dict(rec["meta"])
    return [out]


def _function_calls(text: str, turn: int) -> list[dict[str, Any]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(
            "bad_function_call", f"turn {turn}: the function call is not valid JSON ({e.msg})"
        ) from None
    calls = obj if isinstance(obj, list) else [obj]
    if not calls or not all(isinstance(c, Mapping) and isinstance(c.get("name"), str) for c in calls):
        raise RecordError("bad_function_call", f"turn {turn}: a function call needs a 'name'")
    return [
        {"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
        for c in calls
    ]


# -- gsm8k ---------------------------------------------------------------------------------------

CALCULATOR_MODES = ("tool", "strip", "keep")
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?|-?\.\d+", re.ASCII)  # "٣" is not a GSM8K answer


def from_gsm8k(
    value: Any, calculator: str = "tool", stats: dict[str, int] | None = None, **_: Any
) -> list[Conversation]:
    rec = _mapping(value)
    question, answer = _text(rec, "question"), _text(rec, "answer")
    if "####" not in answer:
        raise RecordError("no_final_answer", "the answer has no '#### <number>' line")
    reasoning, final = answer.rsplit("####", 1)
    number = final.strip().replace(",", "").replace("$", "")
    if not _NUMBER.fullmatch(number):
        raise RecordError("bad_final_answer", f"the final answer {final.strip()!r} is not a number")
    if error := empty_turn({"role": "user", "content": question}, "'question'"):
        raise error  # before the calculator notes count its annotations
    stats = stats if stats is not None else {}
    content = _annotated(reasoning, calculator, stats) + [{"type": "text", "text": "####" + final}]
    conv = finish(
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": content}]}
    )
    conv["meta"] = {"answer": number}
    return [conv]


def _annotated(text: str, mode: str, stats: dict[str, int]) -> list[dict[str, Any]]:
    """The reasoning as parts; ``<<expr=result>>`` turned into a calc call (its result recomputed by
    our calculator, so training shows what the tool will answer), removed, or kept."""
    if mode == "keep":
        return [{"type": "text", "text": text}]
    parts: list[dict[str, Any]] = []
    pos = 0
    for m in _ANNOTATION.finditer(text):
        parts.append({"type": "text", "text": text[pos : m.start()]})
        pos = m.end()
        if mode == "strip":
            continue
        expression, annotated = m.group(1).strip(), m.group(2).strip()
        try:
            value = evaluate(expression)
        except CalculatorError:
            stats["calc_unreadable"] = stats.get("calc_unreadable", 0) + 1
            continue
        if not _agrees(value, annotated):
            stats["calc_disagrees"] = stats.get("calc_disagrees", 0) + 1
            continue  # the text goes on with the annotation's number: a call would contradict it
        stats["calc_calls"] = stats.get("calc_calls", 0) + 1
        parts.append({"type": "calc", "expression": expression, "result": format_number(value)})
    parts.append({"type": "text", "text": text[pos:]})
    return parts


def _agrees(value: Any, annotated: str) -> bool:
    """The annotation's number is the value, or the value rounded to the annotation's decimals."""
    try:
        target = float(annotated.replace(",", ""))
    except ValueError:
        return False
    x = float(value)
    decimals = len(annotated.split(".")[1]) if "." in annotated else 0
    return math.isclose(x, target, rel_tol=1e-9, abs_tol=1e-9) or round(x, decimals) == target


# -- oasst ---------------------------------------------------------------------------------------


def oasst_conversations(
    records: list[Record], languages: list[str] | None = None
) -> tuple[list[tuple[str, Conversation]], list[Problem], dict[str, int]]:
    """Conversations rebuilt from OpenAssistant message rows (or tree exports).

    Each tree gives one conversation: from the root prompt, at every step the best reply is taken
    (the lowest ``rank``, as oasst ranks siblings from 0 = best; unranked replies after ranked ones,
    then more reviews, then the earliest), until a message has no replies; a trailing prompter
    message is dropped. Deleted messages and those that failed review are left out with the branch
    below them (counted as a note: oasst's own moderation), and so is a message of only white space
    (a skipped row, ``empty_reply`` or ``empty_prompt``): refusing the branch rather than the tree
    lets the conversation go on through the next-best sibling. ``languages`` keeps trees whose root
    prompt's ``lang`` is listed. Returns (where, conversation) pairs, the rows that could not be used,
    and counts of what was left out.
    """
    rows: dict[str, tuple[str, Mapping[str, Any]]] = {}
    problems: list[Problem] = []
    counts: dict[str, int] = defaultdict(int)
    for rec in records:
        for where, row in _oasst_rows(rec, problems):
            mid = row.get("message_id")
            if not isinstance(mid, str) or not mid:
                problems.append(Problem(where, "bad_message_id", "'message_id' is missing or not text"))
            elif row.get("role") not in ("prompter", "assistant"):
                problems.append(
                    Problem(where, "bad_role", f"role {row.get('role')!r} is not prompter/assistant")
                )
            elif not isinstance(row.get("text"), str):
                problems.append(Problem(where, "bad_text", "'text' is missing or not text"))
            elif mid in rows:
                problems.append(Problem(where, "duplicate_message", f"message {mid} appears twice"))
            else:
                rows[mid] = (where, row)
    children: dict[str | None, list[str]] = defaultdict(list)
    for mid, (where, row) in rows.items():
        if row.get("deleted") is True or row.get("review_result") is False:
            counts["deleted_or_failed_review"] += 1
            continue
        parent = row.get("parent_id")
        if parent is not None and not isinstance(parent, str):
            problems.append(Problem(where, "bad_parent_id", "'parent_id' is not text"))
            continue
        if parent is not None and parent not in rows:
            problems.append(Problem(where, "orphan_message", f"its parent {parent} is not in the data"))
            continue
        if error := empty_turn(_oasst_message(row), f"message {mid}"):
            problems.append(Problem(where, error.reason, f"{error}; left out with the replies below it"))
            continue
        children[parent].append(mid)
    reached = _reached(children)
    for mid, (where, _) in rows.items():
        if mid not in reached and _on_a_cycle(mid, rows):
            problems.append(
                Problem(
                    where, "not_in_a_tree", "its parents go round in a cycle and never reach a first prompt"
                )
            )
    out: list[tuple[str, Conversation]] = []
    for root in children[None]:
        where, row = rows[root]
        if row["role"] != "prompter":
            problems.append(Problem(where, "bad_root", "a tree's first message must be a prompter's"))
            continue
        if languages and row.get("lang") not in languages:
            counts["other_language"] += 1
            continue
        path = [root]
        while children.get(path[-1]):
            path.append(min(children[path[-1]], key=lambda m: _reply_order(rows[m][1])))
        if rows[path[-1]][1]["role"] == "prompter":
            path.pop()
        if len(path) < 2:
            counts["no_reply"] += 1
            continue
        try:
            conv = finish({"messages": [_oasst_message(rows[m][1]) for m in path]})
        except RecordError as e:
            problems.append(Problem(where, e.reason, str(e)))
            continue
        conv["meta"] = {"message_tree_id": row.get("message_tree_id", root), "lang": row.get("lang")}
        out.append((where, conv))
    return out, problems, dict(counts)


def _oasst_message(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"role": "user" if row["role"] == "prompter" else "assistant", "content": row["text"]}


def _reached(children: Mapping[str | None, list[str]]) -> set[str]:
    """The messages below the roots (parent None): the ones a conversation can be built through."""
    reached: set[str] = set()
    todo = list(children.get(None, []))
    while todo:
        mid = todo.pop()
        if mid not in reached:
            reached.add(mid)
            todo += children.get(mid, [])
    return reached


def _on_a_cycle(mid: str, rows: Mapping[str, tuple[str, Mapping[str, Any]]]) -> bool:
    """Whether following parents from ``mid`` comes round again (other unreached rows are below a
    deleted or orphaned message, already counted there)."""
    seen: set[str] = set()
    while isinstance(mid, str) and mid in rows and mid not in seen:
        seen.add(mid)
        mid = rows[mid][1].get("parent_id")
    return isinstance(mid, str) and mid in seen


def _number(value: Any) -> float:
    """A count or rank as written, or 0 when it is not a number (a hand-made export's "3")."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    return value if ok else 0


def _reply_order(row: Mapping[str, Any]) -> tuple[Any, ...]:
    rank = row.get("rank")
    ranked = isinstance(rank, int | float) and not (isinstance(rank, float) and math.isnan(rank))
    return (
        0 if ranked else 1,
        rank if ranked else 0,
        -_number(row.get("review_count")),
        str(row.get("created_date") or ""),
    )


def _oasst_rows(rec: Record, problems: list[Problem]) -> list[tuple[str, Mapping[str, Any]]]:
    """A row as itself; a tree export as its messages, each with its parent's id."""
    value = rec.value
    if not isinstance(value, Mapping):
        problems.append(Problem(rec.where, "not_an_object", "a record is a JSON object"))
        return []
    if "prompt" not in value or "message_id" in value:
        return [(rec.where, value)]
    out: list[tuple[str, Mapping[str, Any]]] = []
    stack: list[tuple[Any, str | None]] = [(value["prompt"], None)]
    while stack:
        node, parent = stack.pop()
        if not isinstance(node, Mapping):
            problems.append(Problem(rec.where, "bad_tree", "a reply in the tree is not an object"))
            continue
        row = {k: v for k, v in node.items() if k != "replies"}
        row["parent_id"] = parent
        row.setdefault("message_tree_id", value.get("message_tree_id"))
        out.append((f"{rec.where} (message {node.get('message_id')})", row))
        replies = node.get("replies") or []
        # the replies of a message without an id hang from a parent no row has: orphans, counted,
        # rather than roots of conversations that lost their context
        mid = node.get("message_id") or f"(a message without an id under {parent or 'the root'})"
        stack += [(r, mid) for r in replies] if isinstance(replies, list) else []
    return out


CONVERTERS: dict[str, Callable[..., list[Conversation]]] = {
    "messages": from_messages,
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "gsm8k": from_gsm8k,
}
