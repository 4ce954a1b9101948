"""Rule rewards: plain functions ``fn(completion: str, reference: str, **args) -> float``, a registry, and
the weighted combination a run config names.

    from lm.rewards import RewardConfig, RuleScorer, RewardItem, get_reward
    get_reward("numeric_accuracy")("... so the answer is 1,000.", "#### 1000")       # 1.0
    config = RewardConfig(rules=[{"name": "numeric_accuracy"}, {"name": "r1_format", "weight": 0.1}])
    RuleScorer(config).score([RewardItem(id=0, completion=text, reference=answer)])   # [ItemScore(...)]

A rule is named by its registered name (``REWARDS``) or by ``package.module:function`` for a user's
own; ``args`` from the config are passed as keyword arguments. A scorer returns one ``ItemScore`` per
item with the weighted sum of its rules (``reward``), each rule's raw value (``components``) and a
status: ``ok``, ``error`` (a rule raised or returned something that is not a finite number) or
``timeout``. An item whose status is not ``ok`` scores 0, so a broken reward never pushes the policy
anywhere; the status lets the learner count or drop it.

``Scorer`` is what every reward source implements: ``RuleScorer`` here (in this process, with a soft
time limit per item), ``lm.reward_process.IsolatedScorer`` (the same rules in a child process that is
killed at an item's deadline) and ``lm.reward_scorer.ModelScorer`` (a trained reward model, scored
in batches). ``RewardConfig.rm`` holds the reward model's weight; ``merge_scores`` adds one scorer's
results to another's, and ``with_model_scores`` combines one GRPO group's rule and reward-model scores
(the model's score standardised within the group). The settings (``RewardConfig``, ``RuleReward``, ``ModelReward``) live in
lm/reward_config.py, which a run config imports without this module.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from lm.answers import answers_match, extract_answer, gsm8k_final, reference_answer, warm_up
from lm.plugins import registrar
from lm.reward_config import REWARDS, RewardConfig, find_reward
from lm.timelimit import TimeLimitExceeded, call_with_time_limit

RewardFn = Callable[..., float]
Status = Literal["ok", "error", "timeout"]


register_reward = registrar(REWARDS, "reward")  # @register_reward("name") adds a rule reward


def get_reward(name: str) -> RewardFn:
    """A registered reward, or a user's function named ``package.module:function``."""
    fn = find_reward(name)
    assert fn is not None  # the built-ins are registered below, as this module loads
    return fn


@register_reward("numeric_accuracy")
def numeric_accuracy(completion: str, reference: str) -> float:
    """1.0 when the completion's final answer equals the reference's, else 0.0.

    The final answer is ``<answer>...</answer>``'s contents when present, else the number after
    ``####``, else the last ``\\boxed{}``, else the last number. Numbers are compared exactly after
    normalising (``1,000``, ``$5``, ``5.0``, ``-3``, ``50%``, ``3/4``); LaTeX and expressions by
    math-verify (``\\frac{1}{2}`` equals ``0.5``). The reference may be a bare answer or a worked
    solution ending in ``#### N``."""
    return float(answers_match(extract_answer(completion), reference_answer(reference)))


@register_reward("gsm8k_accuracy")
def gsm8k_accuracy(completion: str, reference: str) -> float:
    """1.0 when the number after the completion's last ``####`` equals the reference's (GSM8K's own
    format, strict: a completion without ``#### N`` scores 0)."""
    return float(answers_match(gsm8k_final(completion), reference_answer(reference)))


# linear: one quantifier over the spaces and one split of the digits ("[ \t]*\s*" and "[\d,]*\.?\d+"
# backtracked quadratically: 42 s on "#### 5" followed by 100,000 spaces and a letter)
_GSM8K_LAST_LINE = re.compile(r"(?:\A|\n)####[ \t]*-?\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)\s*\Z")


@register_reward("gsm8k_format")
def gsm8k_format(completion: str, reference: str = "") -> float:
    """1.0 when the completion ends with its one final line ``#### N`` (working first, then the
    answer, as GSM8K and the tiny world's reasoning data are written), else 0.0: no ``####`` at all,
    two of them, or words after the answer."""
    return 1.0 if completion.count("####") == 1 and _GSM8K_LAST_LINE.search(completion) else 0.0


# Outside the tags: whitespace only. Inside: anything but another think/answer tag, so a second
# <think> block, nested tags or an answer before the thinking do not pass.
_NO_TAG = r"(?:(?!</?think>|</?answer>).)*"
R1_PATTERN = rf"\s*<think>{_NO_TAG}</think>\s*<answer>{_NO_TAG}</answer>\s*"


@register_reward("r1_format")
def r1_format(completion: str, reference: str = "", pattern: str = R1_PATTERN) -> float:
    """1.0 when the whole completion is ``<think>...</think>`` then ``<answer>...</answer>`` (DeepSeek-R1's
    format; whitespace around the blocks allowed), else 0.0. ``pattern`` replaces the default: a
    regular expression that must match the whole completion (dot matches newlines)."""
    return 1.0 if re.fullmatch(pattern, completion, re.DOTALL) else 0.0


@register_reward("world_arithmetic")
def world_arithmetic(completion: str, reference: str) -> float:
    """The tiny world's arithmetic word problems (pipelines/world/arithmetic.py): their references are
    GSM8K-style worked answers with a whole-number ``#### N``, and a completion is right when its final
    answer (as ``numeric_accuracy`` finds it: ``<answer>``, ``####``, ``\\boxed{}`` or the last number)
    is that number."""
    return numeric_accuracy(completion, reference)


@dataclass
class RewardItem:
    """One completion to score. ``id`` comes back on its score. Reward models read the conversation
    before the completion: ``messages`` when given (system turns, earlier exchanges), else ``prompt`` as
    one user message."""

    id: Hashable
    completion: str
    reference: str = ""
    prompt: str = ""
    messages: list[dict[str, Any]] | None = None


@dataclass
class ItemScore:
    id: Hashable
    reward: float
    status: Status = "ok"
    components: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


def failed_score(item_id: Hashable, status: Status, error: str, seconds: float = 0.0) -> ItemScore:
    return ItemScore(id=item_id, reward=0.0, status=status, error=error[:500], seconds=seconds)


class Scorer(Protocol):
    """A source of rewards: one ``ItemScore`` per item, in order, for any input (never raises)."""

    def score(self, items: Sequence[RewardItem]) -> list[ItemScore]: ...


def merge_scores(a: ItemScore, b: ItemScore) -> ItemScore:
    """One item's scores from two scorers (rules and a reward model) as one: rewards add, components
    join, and a failure in either makes the item score 0 with that status."""
    if a.id != b.id:
        raise ValueError(f"cannot merge scores of different items ({a.id!r}, {b.id!r})")
    worst = next((s for s in (a, b) if s.status == "timeout"), None) or next(
        (s for s in (a, b) if s.status == "error"), None
    )
    components = a.components | b.components
    seconds = a.seconds + b.seconds
    if worst is not None:
        return ItemScore(a.id, 0.0, worst.status, components, worst.error, seconds)
    total = a.reward + b.reward
    if not math.isfinite(total):
        return ItemScore(a.id, 0.0, "error", components, f"the combined reward is {total}", seconds)
    return ItemScore(a.id, total, "ok", components, None, seconds)


# Differences in a reward model's raw scores below this are not its judgement (a Bradley-Terry margin
# of 1e-3 is a preference of 50.025%) but float noise, e.g. the same text scored in two batches: the
# group's spread is floored here so noise is not standardised into a full +-1 signal.
RM_MIN_STD = 1e-3


def with_model_scores(
    config: RewardConfig, rules: Sequence[ItemScore], model: Sequence[ItemScore]
) -> list[ItemScore]:
    """One group's rewards (the G samples of one prompt) from the rules' scores and the reward model's
    scores of the same items, in the same order: ``reward = rules' weighted sum + rm.weight * s``, where
    ``s`` is the model's raw score (``rm.normalize: none``) or its standard score within the group
    (``group``: (raw - mean) / max(std, RM_MIN_STD) over the items the model scored; the reasons are
    in ``ModelReward``'s docstring). ``components["rm"]`` keeps the raw score: what the model thinks of
    the policy, logged per step.

    Failures: an item whose rules failed scores 0 with their status, as always. An item the reward
    model could not score (``error`` or ``timeout``: a batch that broke, a worker that hung or was lost)
    has no ``"rm"`` component and an rm term of 0 (the group's mean in ``group`` units: neutral, neither
    rewarded nor penalised), keeps its rule rewards and says why in ``error``; callers count it from the
    missing component. Unlike ``merge_scores``, a reward model that fails does not wipe out a verified
    answer's reward."""
    if config.rm is None:
        raise ValueError("with_model_scores needs rewards.rm (the reward model's weight)")
    if len(rules) != len(model):
        raise ValueError(f"{len(rules)} rule scores and {len(model)} reward-model scores for one group")
    raw = {i: m.components["rm"] for i, m in enumerate(model) if m.status == "ok" and "rm" in m.components}
    term = dict(raw)
    if config.rm.normalize == "group" and raw:
        mean = sum(raw.values()) / len(raw)
        std = (sum((v - mean) ** 2 for v in raw.values()) / len(raw)) ** 0.5
        term = {i: (v - mean) / max(std, RM_MIN_STD) for i, v in raw.items()}
    out = []
    for i, (r, m) in enumerate(zip(rules, model, strict=True)):
        if r.id != m.id:
            raise ValueError(f"cannot combine scores of different items ({r.id!r}, {m.id!r})")
        components, error = dict(r.components), r.error
        if i in raw:
            components["rm"] = raw[i]
        elif error is None:
            error = f"reward model {m.status}: {m.error or 'no score'}"[:500]
        reward = r.reward + config.rm.weight * term.get(i, 0.0) if r.status == "ok" else 0.0
        out.append(ItemScore(r.id, reward, r.status, components, error, r.seconds + m.seconds))
    return out


class RuleScorer:
    """The config's rule rewards, in this process. ``time_limit_s`` is enforced by
    ``lm.timelimit`` (any thread; it stops Python code, not one long C call: for a hard limit run
    the rules through ``lm.reward_process.IsolatedScorer``)."""

    def __init__(self, config: RewardConfig | dict[str, Any], time_limit_s: float | None = None) -> None:
        self.config = config if isinstance(config, RewardConfig) else RewardConfig.model_validate(config)
        self.rules = [(r.key, get_reward(r.name), r.args) for r in self.config.rules]
        self.time_limit_s = self.config.time_limit_s if time_limit_s is None else time_limit_s
        warm_up()

    def score_one(self, item: RewardItem) -> ItemScore:
        started = time.perf_counter()
        try:
            return call_with_time_limit(lambda: self._score(item, started), self.time_limit_s)
        except TimeLimitExceeded:
            elapsed = time.perf_counter() - started
            return failed_score(item.id, "timeout", f"no reward after {self.time_limit_s:g} s", elapsed)

    def _score(self, item: RewardItem, started: float) -> ItemScore:
        components: dict[str, float] = {}
        for key, fn, args in self.rules:
            try:
                value = float(fn(item.completion, item.reference, **args))
                if not math.isfinite(value):
                    raise ValueError(f"returned {value}")
            except Exception as e:  # noqa: BLE001 - a user's reward may fail any way; it scores 0
                return failed_score(
                    item.id, "error", f"{key}: {type(e).__name__}: {e}", time.perf_counter() - started
                )
            components[key] = value
        combined = self.config.combine(components)
        if not math.isfinite(combined):  # finite parts, weighted past a float (1e308 x 2): NaN advantages
            return failed_score(
                item.id, "error", f"the combined reward is {combined}", time.perf_counter() - started
            )
        return ItemScore(item.id, combined, "ok", components, None, time.perf_counter() - started)

    def score(self, items: Sequence[RewardItem]) -> list[ItemScore]:
        return [self.score_one(item) for item in items]

    def close(self) -> None:
        """Nothing to end (``IsolatedScorer``'s counterpart ends its process)."""
