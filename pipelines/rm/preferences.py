"""Preference pairs from files, one small converter per format.

- ``hh``: Anthropic HH-RLHF, ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}``:
  both transcripts are read into turns; the prompt is their common opening, the replies what follows
  (almost always the last assistant turn);
- ``sharegpt``: LLaMA-Factory's pairs (``dpo_en_demo.json``): ``{"conversations": [{"from", "value"},
  ...], "chosen": {"from": "gpt", "value"}, "rejected": {...}, "system"?, "tools"?}``, the turns read by
  the SFT ShareGPT converter (pipelines/sft/formats.py);
- ``pairs``: TRL's preference records: ``{"prompt", "chosen", "rejected"}`` where each is text or a list
  of messages (a prompt as text is one user turn, a reply as text one assistant turn), or without
  ``prompt``, two whole conversations that share their opening (TRL's implicit prompt). The world
  pairs the reward stage writes (``<run>/rm_data/world/``) are in this format.

    pairs, report = load_preferences(PreferenceSourceConfig(path="../shared/data/preference/*.jsonl.gz"))

Bad records are skipped and counted by reason, the first few logged with their place
(``file.jsonl:12: ...``): transcripts that do not parse, a chosen reply identical to the rejected one,
an empty or white-space reply, replies that do not end with the assistant, an empty prompt (no user
turn with text) and a prompt that ends with the assistant. A source with nothing usable, or more bad
records than ``max_bad_fraction``, is a ``SourceError`` naming it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from lm.chat_messages import ChatFormatError, Message, normalize_conversation
from pipelines.records import Problem, Record, list_files, read_records
from pipelines.rm.config import PreferenceSourceConfig
from pipelines.rm.pairs import PreferencePair, make_pair
from pipelines.sft.formats import EMPTY_PROMPT, EMPTY_REPLY, RecordError, from_sharegpt, says_nothing
from pipelines.sft.sources import SourceError, SourceReport

log = logging.getLogger("raychat")

LOGGED_PROBLEMS = 5
_HH_TURN = re.compile(r"(?:^\s*|\n\n)(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def detect_format(value: Any) -> str | None:
    """The preference format a record looks like, from its keys; None when none."""
    if not isinstance(value, Mapping) or "chosen" not in value or "rejected" not in value:
        return None
    chosen = value["chosen"]
    if isinstance(value.get("conversations"), list):
        return "sharegpt"
    if isinstance(chosen, str) and "prompt" not in value and "Assistant:" in chosen:
        return "hh"
    return "pairs"


def split_replies(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[Message], list[Message]]:
    """Two conversations that share an opening as (prompt, chosen reply, rejected reply): the prompt
    is the longest common opening that ends with a user or tool turn."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if k == len(chosen) and k == len(rejected):
        raise RecordError("identical", "the chosen and rejected conversations are the same")
    while k > 0 and chosen[k - 1]["role"] not in ("user", "tool"):
        k -= 1
    if k == 0:
        raise RecordError("no_shared_prompt", "the two conversations do not open with the same question")
    return chosen[:k], chosen[k:], rejected[k:]


def _check_pair(pair: PreferencePair) -> None:
    """Refuse, when the file is read, a pair the reward stage cannot learn from, counted by reason
    with the other bad records: a prompt ending with the assistant passed loading and was dropped
    only when the stage tokenized it (a log line per pair, counted as ``ChatFormatError``); an empty
    prompt or a reply of white space was trained on as if it said something."""
    prompt = pair.prompt["messages"]
    if not any(m["role"] == "user" and not says_nothing(m) for m in prompt):
        raise RecordError(EMPTY_PROMPT, "the prompt is empty: no user turn says anything")
    if prompt[-1]["role"] == "assistant":
        raise RecordError(
            "prompt_ends_with_assistant",
            "the prompt ends with an assistant turn: the replies must follow a user or tool turn",
        )
    for name, reply in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        if not reply:
            raise RecordError(EMPTY_REPLY, f"the {name} conversation adds nothing to the prompt")
        if reply[-1]["role"] != "assistant":
            raise RecordError("reply_not_assistant", f"the {name} reply does not end with the assistant")
        if says_nothing(reply[-1]):
            raise RecordError(EMPTY_REPLY, f"the {name} reply is empty or only white space")
    if pair.chosen == pair.rejected:
        raise RecordError("identical", "the chosen and rejected replies are the same")


def _pair(
    prompt: list[Message],
    chosen: list[Message],
    rejected: list[Message],
    group: str,
    where: str,
    tools: Any = None,
) -> PreferencePair:
    try:
        pair = make_pair(prompt, chosen, rejected, group, where, tools=tools)
    except ChatFormatError as e:
        raise RecordError("bad_conversation", str(e)) from None
    _check_pair(pair)
    return pair


# -- formats ---------------------------------------------------------------------------------------


def hh_turns(transcript: Any, side: str) -> list[Message]:
    """An HH-RLHF transcript as messages."""
    if not isinstance(transcript, str):
        raise RecordError("bad_transcript", f"{side!r} is not text")
    parts = _HH_TURN.split(transcript)
    if parts[0].strip() or len(parts) < 3:
        raise RecordError("bad_transcript", f"{side!r} does not start with a 'Human:' or 'Assistant:' turn")
    return [{"role": _HH_ROLES[parts[i]], "content": parts[i + 1]} for i in range(1, len(parts), 2)]


def from_hh(value: Mapping[str, Any], group: str, where: str) -> PreferencePair:
    prompt, chosen, rejected = split_replies(
        hh_turns(value.get("chosen"), "chosen"), hh_turns(value.get("rejected"), "rejected")
    )
    return _pair(prompt, chosen, rejected, group, where)


def _sharegpt_turns(value: Any, side: str) -> list[Any]:
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise RecordError("bad_reply", f"{side!r} must be a turn or a list of turns")


def from_sharegpt_pair(value: Mapping[str, Any], group: str, where: str) -> PreferencePair:
    extra = {k: value[k] for k in ("system", "tools") if value.get(k)}
    turns = value.get("conversations") or []
    chosen = from_sharegpt({"conversations": turns + _sharegpt_turns(value["chosen"], "chosen"), **extra})[0]
    rejected = from_sharegpt(
        {"conversations": turns + _sharegpt_turns(value["rejected"], "rejected"), **extra}
    )[0]
    prompt, good, bad = split_replies(chosen["messages"], rejected["messages"])
    return _pair(prompt, good, bad, group, where, tools=chosen.get("tools"))


def _messages(value: Any, role: str, field: str) -> list[Any]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, list) and value:
        return list(value)
    raise RecordError(f"bad_{field}", f"{field!r} must be text, a message or a non-empty list of messages")


def _canonical(messages: list[Any]) -> list[Message]:
    try:
        return normalize_conversation(messages)["messages"]
    except ChatFormatError as e:
        raise RecordError("bad_conversation", str(e)) from None


def from_pairs(value: Mapping[str, Any], group: str, where: str) -> PreferencePair:
    tools = value.get("tools")
    chosen = _messages(value["chosen"], "assistant", "chosen")
    rejected = _messages(value["rejected"], "assistant", "rejected")
    if value.get("prompt") is None:  # implicit prompt: two whole conversations sharing their opening
        prompt, chosen, rejected = split_replies(_canonical(chosen), _canonical(rejected))
    else:
        prompt = _messages(value["prompt"], "user", "prompt")
    return _pair(prompt, chosen, rejected, group, where, tools)


CONVERTERS: dict[str, Callable[[Mapping[str, Any], str, str], PreferencePair]] = {
    "hh": from_hh,
    "sharegpt": from_sharegpt_pair,
    "pairs": from_pairs,
}


# -- a source --------------------------------------------------------------------------------------


def load_preferences(
    cfg: PreferenceSourceConfig, max_bad_fraction: float = 1.0
) -> tuple[list[PreferencePair], SourceReport]:
    """Every pair of one source, in file order, and the report of what was read and skipped
    (``report.conversations`` counts pairs)."""
    report = SourceReport(name=cfg.label)
    files, missing = list_files(cfg.path)
    if not files:
        raise SourceError(
            f"source {cfg.label!r}: no data files found ({'; '.join(map(str, missing)) or 'no match'})"
        )
    for p in missing:
        _skip(report, p)
    report.files = files
    out: list[PreferencePair] = []
    for path in files:
        records = []
        for item in read_records(path):
            if isinstance(item, Record):
                records.append(item)
            else:
                _skip(report, item)
        report.records += len(records)
        if not records:
            continue
        fmt = cfg.format if cfg.format != "auto" else _detect(path, records)
        report.formats[path] = fmt
        convert = CONVERTERS[fmt]
        for rec in records:
            if not isinstance(rec.value, Mapping) or "chosen" not in rec.value or "rejected" not in rec.value:
                _skip(report, Problem(rec.where, "not_a_pair", "a record needs 'chosen' and 'rejected'"))
                continue
            try:
                out.append(convert(rec.value, cfg.label, rec.where))
            except RecordError as e:
                _skip(report, Problem(rec.where, e.reason, str(e)))
            except Exception as e:  # noqa: BLE001 - a record that breaks a converter is that record's problem
                _skip(report, Problem(rec.where, "unexpected", f"{type(e).__name__}: {e}"))
            if cfg.max_pairs is not None and len(out) >= cfg.max_pairs:
                break
        if cfg.max_pairs is not None and len(out) >= cfg.max_pairs:
            break
    report.conversations = len(out)
    bad = sum(report.skipped.values())
    reasons = ", ".join(f"{k}: {v}" for k, v in report.skipped.most_common(5)) or "no records"
    if not out:
        raise SourceError(
            f"source {cfg.label!r}: no usable preference pairs ({reasons}); is the format right?"
        )
    if bad > max_bad_fraction * (bad + len(out)):
        raise SourceError(
            f"source {cfg.label!r}: {bad} of {bad + len(out)} records are unusable ({reasons}); is the format right?"
        )
    if bad:
        log.warning("source %s: %d records skipped (%s)", cfg.label, bad, reasons)
    return out, report


def _detect(path: str, records: list[Record]) -> str:
    seen = [f for f in (detect_format(r.value) for r in records[:20]) if f]
    if not seen:
        raise SourceError(f"{path}: no record has 'chosen' and 'rejected'; is it a preference file?")
    counts = Counter(seen)
    return max(counts, key=lambda f: (counts[f], f))  # a tie decided by name: the same on every run


def _skip(report: SourceReport, p: Problem) -> None:
    report.skipped[p.reason] += 1
    if len(report.problems) < LOGGED_PROBLEMS:
        report.problems.append(p)
        log.warning("source %s: %s", report.name, p)
