"""The settings every gradient stage shares; a stage's config inherits them and adds its own.

``PretrainConfig(TrainingConfig)`` is ``pretrain:`` in the run config, so ``pretrain.lr``,
``pretrain.num_workers`` and ``pretrain.fail_at_step`` are these fields; a later ``sft:`` section gets the
same keys with the same meaning. Defaults are the tiny CPU demo's; a stage may override a default by
redeclaring the field.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from lm.train.config import StepConfig


class TrainingConfig(StepConfig):
    # -- the workers ---------------------------------------------------------------------------------
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL and bf16 autocast; else CPU and gloo")
    resources_per_worker: dict[str, float] | None = Field(
        None,
        description="Ray resources of each worker, e.g. {CPU: 2} (torch then uses 2 threads) or "
        "{CPU: 8, GPU: 1}; null = Ray's default ({CPU: 1}, or {GPU: 1} with use_gpu)",
    )

    # -- evaluation, checkpoints, failures -------------------------------------------------------
    eval_every: int = Field(50, ge=1, description="steps between validation passes (also at the last step)")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints (also at the last step)")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept under <run>/checkpoints")
    max_failures: int = Field(
        3, ge=0, description="worker-group restarts (from the latest checkpoint) before giving up"
    )
    log_every: int = Field(1, ge=1, description="steps between progress lines")

    # -- bookkeeping -----------------------------------------------------------------------------
    tracking: Literal["none", "tensorboard", "wandb"] = Field(
        "none",
        description="also send metrics to TensorBoard or Weights & Biases (pip install raychat[tracking])",
    )
    wandb_project: str = "raychat"
    peak_flops: float | None = Field(
        None,
        gt=0,
        description="peak FLOP/s of one device for MFU; null = the table in lm/train/mfu.py",
    )
    seed: int | None = Field(None, description="weights and data order; null = the run's seed")

    # -- testing -----------------------------------------------------------------------------------
    fail_at_step: int | None = Field(
        None,
        ge=1,
        description="testing only: the worker of rank fail_rank SIGKILLs itself when it reaches this step, "
        "on the first attempt only (a marker file under the checkpoints records that it happened), so "
        "FailureConfig's restart-and-resume path runs for real",
    )
    fail_rank: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_workers(self) -> TrainingConfig:
        if self.fail_at_step is not None and self.fail_rank >= self.num_workers:
            raise ValueError(f"fail_rank ({self.fail_rank}) must be < num_workers ({self.num_workers})")
        if (
            self.use_gpu
            and self.resources_per_worker is not None
            and not self.resources_per_worker.get("GPU")
        ):
            raise ValueError("use_gpu is set but resources_per_worker asks for no GPU")
        if self.resources_per_worker:  # {} is null: Ray's defaults
            if bad := {k: v for k, v in self.resources_per_worker.items() if not 0 <= v < math.inf}:
                raise ValueError(f"resources_per_worker: amounts must be finite and not negative ({bad})")
            if not any(self.resources_per_worker.values()):
                raise ValueError(
                    "resources_per_worker asks for nothing: give a worker at least some CPU or GPU"
                )
        return self

    def worker_resources(self) -> dict[str, float]:
        """What each worker asks Ray for (Ray's defaults when resources_per_worker is null)."""
        return dict(self.resources_per_worker or ({"GPU": 1} if self.use_gpu else {"CPU": 1}))
