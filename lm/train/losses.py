"""What a task's loss returns, and the next-token loss that pretraining, SFT and the student share.

A loss is a *sum* over its targets plus the number of targets. The trainer adds both up over the
micro-batches of a step and over the ranks and divides once (lm/train/trainer.py), so every target of
the step weighs the same: a micro-batch with 3 assistant tokens counts 3 tokens' worth, not as much as
one with 300, which is what averaging each micro-batch first would do (the known gradient-accumulation
bug of per-micro-batch means).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100  # a target that counts nowhere (prompt tokens, padding, tool output)


@dataclass
class Loss:
    """One micro-batch's contribution to a step.

    ``total``: the summed loss (what ``backward`` runs on). ``count``: how many targets it sums over
    (tokens; pairs for a reward model; whatever the task normalises by). ``tokens``: tokens that went
    through the model, for tokens/s and MFU (default ``count``). ``sums``: more quantities summed over
    the same targets (accuracy, KL, clipped fraction, ...), reported divided by the step's count.
    """

    total: Tensor
    count: Tensor | int | float
    tokens: Tensor | int | float | None = None
    sums: dict[str, Tensor | float] = field(default_factory=dict)


def next_token_loss(model: nn.Module, batch: dict[str, Tensor]) -> Loss:
    """Cross-entropy (float32) summed over ``targets`` != IGNORE_INDEX.

    ``batch``: ``input_ids`` and ``targets`` ``[B, T]``, ``document_ids`` for packed rows, and
    optionally ``target_index``: the flat positions (into ``B x T``) of every target that is not
    IGNORE_INDEX, computed with the batch (``target_index(targets)``). With it only those positions go
    through the output layer and the softmax, which is most of a small model's compute when few
    tokens are trained (SFT's assistant tokens); the loss is the same.
    """
    inputs, targets = batch["input_ids"], batch["targets"]
    index = batch.get("target_index")
    if index is not None:
        logits = model(inputs, document_ids=batch.get("document_ids"), output_index=index)
        total = F.cross_entropy(logits.float(), targets.reshape(-1)[index], reduction="sum")
        return Loss(total, index.numel(), tokens=inputs.numel())
    logits = model(inputs, document_ids=batch.get("document_ids"))
    total = F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = (targets != IGNORE_INDEX).sum()
    return Loss(total, count, tokens=inputs.numel())


def target_index(targets: np.ndarray) -> np.ndarray:
    """The flat positions of ``targets`` that count (not IGNORE_INDEX), for ``next_token_loss``."""
    return np.flatnonzero(targets.reshape(-1) != IGNORE_INDEX)
