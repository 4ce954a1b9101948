"""Conversation builders for post-training data, in lm/chat_messages.py's message structure.

Each builder turns one row (a question about a fact, a search result, a passage, an arithmetic
problem) into one conversation ``{"messages": [...], "meta": {"kind": ..., ...}}``; the caller adds a
system message where wanted (``with_system``). Every reply is written the way the evaluation reads
it back: answers state the reference (pipelines/idk/judge.py credits them), refusals use phrasings the
judge counts as refusals, arithmetic ends with one final answer. Tests check both directions.

- ``qa_conversation``: a question about a known fact and its short answer ("1698.") or sentence;
- ``idk_conversation``: the same question refused, in many phrasings (``refusal``), worded for an
  entity nobody knows, an unknown attribute of a known entity, or a fact the model got wrong (rows
  without the world's indirect form, such as real question/answer pairs, get plain refusals);
- ``search_trace``: the question, a search call with a query, the tool's result (not trained), and the
  answer copied from it (also about made-up entities: pipelines/sft/search_fresh.py);
  ``search_miss``: the search finds nothing about the name, then a refusal;
- ``passage_conversation``: a passage in the user message, the answer read from it, or "the passage
  does not say" when it does not;
- ``arithmetic_conversation``: a GSM8K-style solution in one of three layouts: ``reasoning_calc``
  (steps with calculator calls, then the answer), ``reasoning`` (the same steps worked in the head),
  ``answer_first`` (the answer, then the working); GSM8K's ``#### N`` or R1's ``<think>`` /
  ``<answer>`` tags.
"""

from __future__ import annotations

import random
import re
from typing import Any

from lm.chat_messages import Conversation, normalize_conversation
from pipelines.sft.formats import from_gsm8k

REFUSALS_ANY = (
    "I don't know {what}.",
    "I'm sorry, but I don't know {what}.",
    "I'm not sure {what}, so I won't guess.",
    "Sorry, I don't know {what}.",
    "I can't answer that: I don't know {what}.",
    "I don't have reliable information on {what}.",
    "I'm not certain {what}, and I'd rather not guess.",
)
REFUSALS_PLAIN = (  # for questions without the indirect form (real question/answer data)
    "I don't know.",
    "I'm sorry, but I don't know the answer to that.",
    "I'm not sure, so I won't guess.",
    "I don't know the answer to that question.",
    "I don't have reliable information on that, so I can't answer it.",
)
REFUSALS_ENTITY = (
    "I don't know anything about {name}, so I can't tell you {what}.",
    "I'm not familiar with {name}, so I don't know {what}.",
    "I have never heard of {name}. I don't know {what}.",
    "I have no information about {name}.",
)
REFUSALS_FACT = (
    "I know of {name}, but I don't know {what}.",
    "I don't have that detail about {name}: I don't know {what}.",
)
SEARCH_MISSES = (
    "The search results do not mention {name}, so I don't know {what}.",
    "I couldn't find anything about {name}. I don't know {what}.",
    "The search found nothing about {name}; I don't know {what}.",
)
UNANSWERABLE = (
    "The passage does not say {what}.",
    "The text doesn't mention {what}.",
    "The passage doesn't say, so I don't know {what}.",
)
PASSAGE_PROMPTS = (
    "Read the passage and answer the question.\n\n{passage}\n\nQuestion: {question}",
    "{passage}\n\nBased on the text above: {question}",
    "Here is a passage:\n\n{passage}\n\n{question}",
    "Answer from this text only.\n\n{passage}\n\n{question}",
)
SEARCH_LEADS = ("", "", "Let me look that up. ", "I'll search for that. ")

# search words per relation, after the entity's name ("Noril Clock inventor")
QUERY_WORDS: dict[str, tuple[str, ...]] = {
    "occupation": ("occupation", "profession"),
    "birth_year": ("born", "birth year"),
    "death_year": ("died", "death"),
    "birthplace": ("birthplace", "born in"),
    "employer": ("employer", "worked for"),
    "known_for": ("known for", "famous for"),
    "award": ("award", "prize"),
    "children": ("children",),
    "country": ("country",),
    "population": ("population", "inhabitants"),
    "founded_year": ("founded", "founding year"),
    "river": ("river",),
    "landmark": ("landmark",),
    "twin_town": ("twin town", "twinned with"),
    "elevation": ("elevation", "above sea level"),
    "org_type": ("organisation", "type"),
    "founder": ("founder", "founded by"),
    "headquarters": ("headquarters", "based in"),
    "members": ("members", "size"),
    "field": ("field", "focus"),
    "thing_type": ("type", "what is"),
    "inventor": ("inventor", "invented by"),
    "year": ("invented", "year"),
    "material": ("made of", "material"),
    "purpose": ("used for", "purpose"),
    "weight": ("weight", "kilograms"),
    "location": ("kept", "location"),
}


def with_system(conversation: Conversation, texts: list[str]) -> Conversation:
    """The conversation with a system message of ``texts`` (one per line) first; unchanged if none."""
    texts = [t for t in texts if t]
    if not texts:
        return conversation
    return {
        **conversation,
        "messages": [{"role": "system", "content": "\n".join(texts)}, *conversation["messages"]],
    }


def _conv(
    question: str, reply: Any, kind: str, row: dict[str, Any] | None = None, **meta: Any
) -> Conversation:
    keep = ("fact_id", "entity", "relation", "short_answer")
    info = {k: row[k] for k in keep if row and k in row}
    return {
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
        "meta": {"kind": kind, **info, **meta},
    }


def short_answer(value: str) -> str:
    """'the Ashwell Museum' -> 'The Ashwell Museum.'"""
    text = value.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def qa_conversation(
    row: dict[str, Any], question: str, style: str = "short", kind: str = "qa"
) -> Conversation:
    """A question about a known fact answered with its short answer or the world's one sentence."""
    reply = short_answer(row["short_answer"]) if style == "short" or "answer" not in row else row["answer"]
    return _conv(question, reply, kind, row, style=style)


def refusal(row: dict[str, Any], rng: random.Random) -> str:
    """A refusal of ``row``'s question, worded for why nobody (or the model) knows it."""
    if not row.get("what"):
        return rng.choice(REFUSALS_PLAIN)
    reason = row.get("reason", "")
    templates = REFUSALS_ANY
    if reason.startswith("entity never mentioned"):
        templates = REFUSALS_ANY + REFUSALS_ENTITY
    elif reason.startswith("fact never mentioned"):
        templates = REFUSALS_ANY + REFUSALS_FACT
    return rng.choice(templates).format(what=row["what"], name=row["entity_name"])


def idk_conversation(row: dict[str, Any], rng: random.Random, question: str | None = None) -> Conversation:
    """``row``'s question (or ``question``, another phrasing) answered with a refusal."""
    q = question or row["question"]
    name = row.get("entity_name", "")
    return _conv(q, refusal(row, rng), "idk", row, reason=row.get("reason", ""), name=name)


def queries(row: dict[str, Any]) -> list[str]:
    """Search queries for ``row``'s fact: the entity's name and words for the relation."""
    name = row["entity_name"]
    bare = name[4:] if name.lower().startswith("the ") else name
    return [f"{bare} {w}" for w in QUERY_WORDS.get(row["relation"], (row["relation"].replace("_", " "),))]


def search_trace(
    row: dict[str, Any], query: str, result: str, rng: random.Random, kind: str = "search"
) -> Conversation:
    """Question -> search call -> the tool's result -> the answer, copied from the result."""
    answer = row["answer"] if "answer" in row else short_answer(row["short_answer"])
    if rng.random() < 0.5 and answer.startswith("The "):
        answer = "The search results say that t" + answer[1:]
    lead = rng.choice(SEARCH_LEADS)
    parts = ([{"type": "text", "text": lead}] if lead else []) + [
        {"type": "search", "query": query, "result": result},
        {"type": "text", "text": answer},
    ]
    return _conv(row["question"], parts, kind, row, query=query, reason=row.get("reason", ""))


def search_miss(row: dict[str, Any], query: str, result: str, rng: random.Random) -> Conversation:
    """A question about a name nobody knows: the search finds nothing about it, then a refusal."""
    reply = rng.choice(SEARCH_MISSES).format(name=row["entity_name"], what=row["what"])
    parts = [{"type": "search", "query": query, "result": result}, {"type": "text", "text": reply}]
    return _conv(row["question"], parts, "search_miss", row, query=query, name=row["entity_name"])


def passage_conversation(
    passage: str, row: dict[str, Any], answerable: bool, rng: random.Random, style: str = "short"
) -> Conversation:
    """A passage and a question in the user message; the answer read from it, or that it is not there."""
    question = rng.choice(row["questions"][:2])
    prompt = rng.choice(PASSAGE_PROMPTS).format(passage=passage, question=question)
    if answerable:
        reply = (
            row["answer"] if style == "sentence" and "answer" in row else short_answer(row["short_answer"])
        )
    else:
        reply = rng.choice(UNANSWERABLE).format(what=row["what"])
    return _conv(prompt, reply, "passage", row, answerable=answerable)


# -- arithmetic ---------------------------------------------------------------------------------

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


_TIMES_ONE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[*/]\s*1|1\s*\*\s*\d+(?:\.\d+)?)\s*")


def _mental(expression: str, limit: int) -> bool:
    """A step a careful person works in the head: every number in it at most ``limit``, or a
    multiplication or division by 1."""
    if limit <= 0:
        return False
    return all(float(n) <= limit for n in _NUMBER.findall(expression)) or bool(
        _TIMES_ONE.fullmatch(expression)
    )


def arithmetic_conversation(
    problem: dict[str, Any], layout: str, final_style: str = "gsm8k", mental_limit: int = 12
) -> Conversation:
    """A world arithmetic problem (GSM8K format) as an SFT conversation in ``layout``."""
    answer = problem["answer"]
    if layout == "reasoning_calc":
        answer = _ANNOTATION.sub(lambda m: "" if _mental(m.group(1), mental_limit) else m.group(0), answer)
    mode = "tool" if layout == "reasoning_calc" else "strip"
    conv = from_gsm8k({"question": problem["question"], "answer": answer}, calculator=mode)[0]
    content = conv["messages"][-1]["content"]
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    last = parts[-1]["text"]
    working, final = last.rsplit("####", 1)
    final = final.strip()
    parts[-1] = {"type": "text", "text": working.rstrip("\n")}
    if not parts[-1]["text"]:
        parts.pop()
    if layout == "answer_first":
        text = "".join(p["text"] for p in parts)
        head = f"<answer>{final}</answer>" if final_style == "r1" else f"#### {final}"
        reply: Any = f"{head}\n{text}"
    elif final_style == "r1":
        reply = [
            {"type": "text", "text": "<think>\n"},
            *parts,
            {"type": "text", "text": f"\n</think>\n<answer>{final}</answer>"},
        ]
    else:
        reply = [*parts, {"type": "text", "text": f"\n#### {final}"}]
    return normalize_conversation(
        {
            "messages": [conv["messages"][0], {"role": "assistant", "content": reply}],
            "meta": {"kind": "arithmetic", "layout": layout, "final_style": final_style, "answer": final},
        }
    )


_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)|<answer>\s*(-?[\d,]*\.?\d+)\s*</answer>")


def final_answer(text: str) -> str | None:
    """The final answer a reply commits to: the first ``#### N`` or ``<answer>N</answer>`` (the
    answer-first layout states it before the working, so the first one is the commitment)."""
    m = _FINAL.search(text)
    if m is None:
        return None
    return (m.group(1) or m.group(2)).replace(",", "")
