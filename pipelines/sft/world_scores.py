"""The tiny world's held-out sets asked and scored the way the training data was written.

    from pipelines.sft.world_scores import eval_messages, score_set
    rows = read_jsonl("<run>/sft_data/splits/known_eval.jsonl")
    prompts = [eval_messages("known_eval", r, cfg) for r in rows]            # list of message lists
    replies = [text_of(chat.parse_assistant(ids).message) for ids in generated]
    score_set("known_eval", rows, replies, cfg)      # {"n", "accuracy", "refusal_share", "wrong_share"}

The prompts follow the training conventions (pipelines/sft/world_data.py): ``tools=True`` adds the
tools note as a system message (the caller also installs the tool hooks), the probe sets add their
form's instruction, and nothing else is added, so "with the tool" and "without" differ only there.
Scores use one judge for every set (pipelines/idk/judge.py), the arithmetic final-answer reader and
the probe scorer, so a number here means what the training data taught.

| set | numbers |
|---|---|
| ``known_eval`` | accuracy, refusal_share (false refusals), wrong_share |
| ``unknown_eval`` | idk_share (refusals), and per reason: entity never mentioned / fact never mentioned |
| ``search_eval`` | accuracy, refusal_share, per reason: entity / fact only in the index |
| ``identity_eval`` | accuracy (gives its name and claims no other), gives_name_share, claims_other_share |
| ``arithmetic_test`` | accuracy (the first ``#### N`` or ``<answer>N</answer>``) |
| ``probes_test`` | counting_accuracy, decimal_compare_accuracy, decimal_trap_accuracy |
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pipelines.idk.judge import judge
from pipelines.sft.conversations import final_answer
from pipelines.sft.identity import check_identity
from pipelines.sft.world_config import SFTDataConfig
from pipelines.world.probes import prompt as probe_prompt
from pipelines.world.probes import score as probe_score

EVAL_SETS = ("known_eval", "unknown_eval", "search_eval", "identity_eval", "arithmetic_test", "probes_test")


def eval_messages(
    set_name: str, row: dict[str, Any], cfg: SFTDataConfig, tools: bool = False, form: str = "direct"
) -> list[dict[str, str]]:
    """The messages that ask ``row`` (``form`` is the probe sets' direct / reasoning / calculator)."""
    if set_name not in EVAL_SETS:
        raise ValueError(f"unknown eval set {set_name!r}; sets: {', '.join(EVAL_SETS)}")
    user = (
        probe_prompt(row, form)
        if set_name == "probes_test"
        else [{"role": "user", "content": row["question"]}]
    )
    if tools and cfg.tools_note:
        return [{"role": "system", "content": cfg.tools_note}, *user]
    return user


def _share(flags: Sequence[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def score_set(
    set_name: str, rows: Sequence[dict[str, Any]], replies: Sequence[str], cfg: SFTDataConfig | None = None
) -> dict[str, Any]:
    """The numbers of one held-out set (module docstring), from one reply text per row."""
    if len(rows) != len(replies):
        raise ValueError(f"{set_name}: {len(rows)} rows but {len(replies)} replies")
    cfg = cfg or SFTDataConfig()
    out: dict[str, Any] = {"n": len(rows)}
    if set_name in ("known_eval", "search_eval", "unknown_eval"):
        labels: list[str] = []
        by_reason: dict[str, list[str]] = defaultdict(list)
        for row, reply in zip(rows, replies, strict=True):
            label = judge(reply, row.get("short_answer"), row["question"]).label
            labels.append(label)
            if row.get("reason"):
                by_reason[row["reason"]].append(label)
        if set_name == "unknown_eval":
            out["idk_share"] = _share([x == "refusal" for x in labels])
            out["idk_share_by_reason"] = {
                k: _share([x == "refusal" for x in v]) for k, v in sorted(by_reason.items())
            }
            return out
        out["accuracy"] = _share([x == "correct" for x in labels])
        out["refusal_share"] = _share([x == "refusal" for x in labels])
        if set_name == "known_eval":
            out["wrong_share"] = _share([x == "wrong" for x in labels])
        else:
            out["accuracy_by_reason"] = {
                k: _share([x == "correct" for x in v]) for k, v in sorted(by_reason.items())
            }
        return out
    if set_name == "identity_eval":
        checks = [
            check_identity(r, cfg.identity, row["question"]) for row, r in zip(rows, replies, strict=True)
        ]
        out["accuracy"] = _share([c.gives_name and c.ok for c in checks])  # its name, no other claimed
        out["gives_name_share"] = _share([c.gives_name for c in checks])
        out["claims_other_share"] = _share([not c.ok for c in checks])
        return out
    if set_name == "arithmetic_test":
        finals = [final_answer(r) for r in replies]
        out["accuracy"] = _share([f == str(row["final"]) for f, row in zip(finals, rows, strict=True)])
        return out
    if set_name == "probes_test":
        right = [probe_score(row, r) for row, r in zip(rows, replies, strict=True)]
        counting = [ok for ok, row in zip(right, rows, strict=True) if row["kind"] != "decimal_compare"]
        decimal = [ok for ok, row in zip(right, rows, strict=True) if row["kind"] == "decimal_compare"]
        traps = [ok for ok, row in zip(right, rows, strict=True) if row.get("case") == "trap"]
        out |= {
            "counting_accuracy": _share(counting),
            "decimal_compare_accuracy": _share(decimal),
            "decimal_trap_accuracy": _share(traps),
        }
        return out
    raise ValueError(f"unknown eval set {set_name!r}; sets: {', '.join(EVAL_SETS)}")
