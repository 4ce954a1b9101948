"""How one rank takes an optimizer step: the part of every training config that the trainer reads.

The run configs of the gradient stages inherit this (through pipelines/train/config.py's
``TrainingConfig``), so ``pretrain.lr`` and a later ``sft.lr`` are the same field with the same
meaning, and ``Trainer(model, cfg, ...)`` takes any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lm.config_base import StrictModel


class StepConfig(StrictModel):
    # -- parallelism -------------------------------------------------------------------------------
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicate the model; fsdp: shard it with FSDP2 (fully_shard per block)"
    )
    compile: bool = Field(
        False, description="torch.compile the model (worth it on GPU; slow to start on CPU)"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description=(
            "auto: bf16 autocast on GPU, fp32 on CPU; bf16: autocast on CPU too (about 2x faster steps"
            " where the CPU has AVX-512 BF16 or AMX, slower where it must emulate it); fp32: never"
        ),
    )

    # -- optimizer and schedule (AdamW; warmup, then decay to min_lr_ratio x lr) -------------------
    lr: float = Field(
        3e-3, gt=0, description="peak learning rate (tiny models take ~3e-3; GPT-2 small ~6e-4)"
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="final lr / peak lr (Chinchilla-style 10x decay)"
    )
    warmup_steps: int = Field(15, ge=0, description="linear warmup from 0 to lr")
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(
        0.1, ge=0, description="AdamW decay on matrices (GPT-3/Llama: 0.1); none on norms"
    )
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas (GPT-3/Llama: 0.9, 0.95)")
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; null = no clipping")
