"""Rejection sampling: of the teacher's replies, keep only the finished, well-formatted, correct ones,
each problem's distinct replies, at most ``per_prompt`` of them (DeepSeek-R1's filter, by rule rewards).

    chooser = TraceFilter(cfg.distill.rejection, final_style="gsm8k")
    selection = chooser.select(candidates)          # candidates: problem-major, in sample order
    selection.kept, selection.counts()              # {"samples", "kept", "rejected": {reason: n}, ...}

A reply is judged once, by the first test it fails, in this order (the reasons counted):

- ``unfinished``: it did not end with ``<|im_end|>`` (cut at the token limit, a tool error, a refused
  prompt) - a cut reply is not a trace to imitate even when its last number happens to be right;
- ``malformed``: it cannot be written as a ``messages`` record (a tool call with an empty expression
  or query, which a small teacher does write): the student's data would not load;
- ``scoring_error``: a rule raised or timed out (lm/rewards.py scores such an item 0);
- ``bad_format``: the format rule scored below ``min_reward`` (``gsm8k_format``: working, then one
  final line ``#### N``; ``r1_format``: ``<think>...</think><answer>...</answer>``);
- ``wrong``: the correctness rule scored below ``min_reward``;
- ``heldout``: it names an entity the evaluation holds out (only with the tiny world's list);
- ``duplicate``: its text and tool calls equal a reply kept for the same problem;
- ``over_cap``: the problem already has ``per_prompt`` kept replies.

The rules score the reply's own text (``lm.chat_messages.text_of``: no tool queries or results), the
text a reader sees, as GRPO's rewards do.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lm.chat_messages import ChatFormatError, normalize_conversation, text_of
from lm.reward_config import RewardConfig, RuleReward
from lm.reward_process import scorer_for
from lm.rewards import RewardItem
from pipelines.distill.config import RejectionConfig
from pipelines.distill.prompts import Problem

REASONS = (
    "unfinished",
    "malformed",
    "scoring_error",
    "bad_format",
    "wrong",
    "heldout",
    "duplicate",
    "over_cap",
)
FORMAT_RULES = {"gsm8k": "gsm8k_format", "r1": "r1_format"}


@dataclass
class Candidate:
    """One reply of the teacher to one problem."""

    problem: Problem
    messages: list[dict[str, Any]]  # the prompt it answered
    reply: dict[str, Any]  # the assistant message (tool calls as content parts)
    finish_reason: str  # "stop" when it ended with <|im_end|>
    sample_index: int = 0
    error: str | None = None

    @property
    def text(self) -> str:
        return text_of(self.reply)

    def conversation(self, meta: dict[str, Any]) -> dict[str, Any]:
        """An SFT conversation in the OpenAI ``messages`` layout (with raychat's tool-call parts)."""
        return {
            "messages": [*self.messages, self.reply],
            "meta": {
                "kind": "distill",
                "problem": self.problem.id,
                "sample_index": self.sample_index,
                **meta,
            },
        }


@dataclass
class Selection:
    kept: list[Candidate]
    rejected: list[tuple[Candidate, str]]  # (reply, reason)

    def counts(self) -> dict[str, Any]:
        problems = Counter(c.problem.id for c in self.kept)
        asked = {c.problem.id for c in self.kept} | {c.problem.id for c, _ in self.rejected}
        by_reason = Counter(reason for _, reason in self.rejected)
        return {
            "samples": len(self.kept) + len(self.rejected),
            "kept": len(self.kept),
            "rejected": {r: by_reason.get(r, 0) for r in REASONS},
            "problems": len(asked),
            "problems_with_a_kept_reply": len(problems),
            "keep_rate": round(len(self.kept) / max(1, len(self.kept) + len(self.rejected)), 4),
        }


def _same_reply_key(reply: dict[str, Any]) -> str:
    """What makes two replies the same: their parts with whitespace runs collapsed."""
    return re.sub(r"\s+", " ", json.dumps(reply.get("content"), sort_keys=True, ensure_ascii=False)).strip()


class TraceFilter:
    """The rejection rules of one run (module docstring)."""

    def __init__(
        self,
        cfg: RejectionConfig,
        final_style: str = "gsm8k",
        heldout_mentions: Callable[[str], list[str]] | None = None,
    ) -> None:
        fmt = cfg.format or FORMAT_RULES[final_style]
        self.rules = RewardConfig(
            rules=[
                RuleReward(name=cfg.correctness, args=cfg.correctness_args, label="correct"),
                RuleReward(name=fmt, args=cfg.format_args if cfg.format else {}, label="format"),
            ]
        )
        self.scorer = scorer_for(self.rules)
        self.cfg = cfg
        self.heldout_mentions = heldout_mentions

    def select(self, candidates: Sequence[Candidate]) -> Selection:
        unfit = [self._unfit(c) for c in candidates]  # "unfinished", "malformed" or None
        finished = [c for c, why in zip(candidates, unfit, strict=True) if why is None]
        scores = iter(
            self.scorer.score(
                [
                    RewardItem(id=i, completion=c.text, reference=c.problem.reference)
                    for i, c in enumerate(finished)
                ]
            )
        )
        kept: list[Candidate] = []
        rejected: list[tuple[Candidate, str]] = []
        seen: dict[str, list[str]] = defaultdict(list)  # kept replies' keys
        for c, why in zip(candidates, unfit, strict=True):
            if why is not None:
                rejected.append((c, why))
                continue
            reason = self._reason(c, next(scores), seen[c.problem.id])
            if reason is None:
                kept.append(c)
                seen[c.problem.id].append(_same_reply_key(c.reply))
            else:
                rejected.append((c, reason))
        return Selection(kept, rejected)

    def _unfit(self, c: Candidate) -> str | None:
        if c.finish_reason != "stop" and self.cfg.require_finished:
            return "unfinished"
        try:
            normalize_conversation(c.conversation({}))
        except ChatFormatError:
            return "malformed"
        return None

    def _reason(self, c: Candidate, score: Any, kept_keys: list[str]) -> str | None:
        if score.status != "ok":
            return "scoring_error"
        if score.components["format"] < self.cfg.min_reward:
            return "bad_format"
        if score.components["correct"] < self.cfg.min_reward:
            return "wrong"
        if self.heldout_mentions is not None and self.heldout_mentions(c.text):
            return "heldout"
        if self.cfg.dedup and _same_reply_key(c.reply) in kept_keys:
            return "duplicate"
        if len(kept_keys) >= self.cfg.per_prompt:
            return "over_cap"
        return None
