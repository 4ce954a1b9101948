"""The reward settings of a run config (``rewards:``): which rules, their weights and arguments, a reward
model's share, the time limit. Plain pydantic so that reading a config imports no reward code until
a user's rule is named. A rule's name is resolved and its ``args`` checked when the config loads, so a
typo fails there, naming the rule (a built-in's ``args`` once lm/rewards.py is loaded: a stage's
preflight validates its rewards again then).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lm.config_base import StrictModel

# the registry of rule rewards, filled by lm/rewards.py (``@register_reward``) and by a user's modules
REWARDS: dict[str, Callable[..., float]] = {}
# what lm/rewards.py registers, known here before it is imported (tests/test_rewards.py keeps them equal)
BUILT_IN_REWARDS = ("numeric_accuracy", "gsm8k_accuracy", "gsm8k_format", "r1_format", "world_arithmetic")


def find_reward(name: str) -> Callable[..., float] | None:
    """The registered function, a user's ``package.module:function`` (imported now), or None for a
    built-in whose module is not loaded yet; an unknown name is a ValueError."""
    if name in REWARDS:
        return REWARDS[name]
    if ":" in name:
        from lm.plugins import import_function

        return import_function(name, "reward")
    if name in BUILT_IN_REWARDS:
        return None
    known = ", ".join(sorted({*REWARDS, *BUILT_IN_REWARDS}))
    raise ValueError(f"unknown reward {name!r}: use one of {known} or 'package.module:function'")


class RuleReward(StrictModel):
    name: str = Field(description="a registered reward (lm/rewards.py REWARDS) or 'package.module:function'")
    weight: float = Field(1.0, description="its weight in the item's reward (negative penalises)")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the function")
    label: str | None = Field(None, description="its key in an item's components; default: name")

    @property
    def key(self) -> str:
        return self.label or self.name

    @model_validator(mode="after")
    def _resolves(self) -> RuleReward:
        if self.name == "r1_format" and isinstance(self.args.get("pattern"), str):  # a bad one scored 0
            try:
                re.compile(self.args["pattern"])
            except re.error as e:
                raise ValueError(
                    f"reward {self.name!r}: args.pattern is not a regular expression: {e}"
                ) from None
        fn = find_reward(self.name)  # an unknown name or a path that does not import fails here
        if fn is None:  # a built-in, checked in full once lm.rewards is loaded (the stages' preflight)
            return self
        try:
            inspect.signature(fn).bind("completion", "reference", **self.args)
        except TypeError as e:
            raise ValueError(f"reward {self.name!r} does not take args {sorted(self.args)}: {e}") from None
        except ValueError:
            pass  # a builtin without a signature: it will tell at call time
        return self


class ModelReward(StrictModel):
    """The reward model's share of the reward; it is scored by the reward-model pool (models/rm).

    ``normalize`` is how its score enters a group's reward (``lm.rewards.with_model_scores``): a
    Bradley-Terry model's scalar has an arbitrary offset and scale (the loss sees only differences),
    so ``group`` (the default) standardises it within the prompt's G samples, the comparison GRPO makes:
    ``weight`` then means the same for any reward model (0.5 weighs the model's ordering of a group like
    a 0/1 rule that splits it in half, +-0.5 around its mean), and the offset, which group advantages
    cancel anyway, leaves the logged reward mean the rules' own. ``none`` adds the raw score times
    ``weight`` (TRL's way: then the weight must match the model's scale)."""

    weight: float = Field(1.0, description="its weight in the item's reward")
    model: str | None = Field(
        None, description="reward model directory ({run_dir}/... allowed); default: <run>/models/rm"
    )
    normalize: Literal["group", "none"] = Field(
        "group", description="group: its score standardised within each prompt's samples; none: raw"
    )


class RewardConfig(StrictModel):
    rules: list[RuleReward] = Field(
        default_factory=lambda: [RuleReward(name="numeric_accuracy")],
        description="rule rewards, summed with their weights",
    )
    rm: ModelReward | None = Field(None, description="a reward model's score, added with its weight")
    time_limit_s: float = Field(
        5.0, gt=0, description="per item, all rules together; past it the item scores 0"
    )

    @field_validator("rules")
    @classmethod
    def _distinct_keys(cls, rules: list[RuleReward]) -> list[RuleReward]:
        if not rules:  # every item would score 0 (or the reward model alone) and nothing says right
            raise ValueError("needs at least one rule reward: a rule says whether an answer is right")
        keys = [r.key for r in rules]
        repeated = sorted({k for k in keys if keys.count(k) > 1} | ({"rm"} & set(keys)))
        if repeated:
            raise ValueError(f"rule keys must be distinct and not 'rm' (give a label): {repeated}")
        return rules

    def combine(self, components: dict[str, float]) -> float:
        """The weighted sum of whichever components are present (rules by key, the reward model as 'rm')."""
        total = sum(r.weight * components[r.key] for r in self.rules if r.key in components)
        if self.rm is not None and "rm" in components:
            total += self.rm.weight * components["rm"]
        return float(total)
