"""AdamW and its learning-rate schedule: linear warmup, then cosine or linear decay to a floor.

Weight decay goes on the matrices only (linear layers and embeddings), not on RMSNorm gains, as in
GPT-3/Llama/nanoGPT: decaying a gain toward 0 fights the normalisation it is there to undo.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float, decay: str) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based: the step about to be taken)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif decay == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"unknown decay {decay!r}; use cosine, linear or constant")
    return min_ratio + (1.0 - min_ratio) * shape


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    fused: bool = False,
) -> torch.optim.AdamW:
    """AdamW with two groups: matrices (decayed) and vectors (not). ``fused`` on CUDA is the fast path."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float, decay: str
) -> torch.optim.lr_scheduler.LambdaLR:
    factor = partial(
        lr_factor, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio, decay=decay
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
