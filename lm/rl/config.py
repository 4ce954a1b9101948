"""The RL algorithm's settings (``AlgoConfig``): plain pydantic, so that a run config that holds them
imports no torch. The functions they name are defined in lm/rl/algos.py and registered in the
registries here, which a user may add to; a name is checked against them and the built-in names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from lm.config_base import StrictModel

Aggregation = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


# the registries, filled by lm/rl/algos.py (``@register_advantage``, ``@register_policy_loss``) and users
ADVANTAGES: dict[str, Callable[..., Any]] = {}
POLICY_LOSSES: dict[str, Callable[..., Any]] = {}
# what lm/rl/algos.py registers, known here before it is imported (tests/test_rl_algos.py keeps them equal)
BUILT_IN = {"advantage": ("grpo", "dr_grpo", "rloo"), "policy_loss": ("ppo_clip", "decoupled_ppo")}


class AlgoConfig(StrictModel):
    """The learner's algorithm settings (defaults: GRPO as DeepSeekMath, token-mean as DAPO, no KL)."""

    advantage: str = Field("grpo", description="advantage estimator: grpo, dr_grpo, rloo (ADVANTAGES)")
    advantage_eps: float = Field(1e-6, gt=0, description="added to the group's std before dividing (grpo)")
    policy_loss: str = Field("ppo_clip", description="ppo_clip or decoupled_ppo (POLICY_LOSSES)")
    eps_low: float = Field(0.2, ge=0, lt=1, description="the ratio is clipped below at 1 - eps_low")
    eps_high: float = Field(0.2, ge=0, description="... and above at 1 + eps_high (DAPO's clip-higher: 0.28)")
    dual_clip: float | None = Field(
        None,
        gt=1,
        description="for negative advantages, the loss is capped at dual_clip x |A| (dual-clip PPO)",
    )
    is_cap: float | None = Field(
        2.0, gt=0, description="decoupled_ppo: cap on the behaviour importance weight proximal/generator"
    )
    is_mode: Literal["truncate", "mask"] = Field(
        "truncate", description="a weight above is_cap: truncated to it (TIS) or its token dropped (AReaL)"
    )
    kl_coef: float = Field(0.0, ge=0, description="weight of the KL penalty to the reference (0: none)")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator per token")
    entropy_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus (0: entropy only logged)")
    aggregation: Aggregation = Field("token-mean", description="how per-token losses become one number")
    norm_length: int | None = Field(
        None, ge=1, description="seq-mean-token-sum-norm's constant divisor (Dr. GRPO); default: T"
    )
    updates_per_batch: int = Field(1, ge=1, description="passes over each batch (PPO epochs)")
    minibatch_size: int | None = Field(None, ge=1, description="completions per optimizer step; default: all")

    @field_validator("advantage", "policy_loss")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        registry = ADVANTAGES if info.field_name == "advantage" else POLICY_LOSSES
        table = {*BUILT_IN[info.field_name], *registry}
        if name not in table:
            raise ValueError(f"unknown {info.field_name} {name!r}: one of {', '.join(sorted(table))}")
        return name
