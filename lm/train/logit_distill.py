"""Logit distillation: the student learns the teacher's whole next-token distribution, not only the
token the teacher happened to sample (Hinton et al. 2015; Kim & Rush 2016 for sequence models).

The loss of one micro-batch, summed over the trained (assistant) positions like every loss of the
trainer (lm/train/losses.py), so the step divides once by the step's count:

    weight * T^2 * KL(teacher_T || student_T)  +  (1 - weight) * CE(student, trace token)

- ``KL`` is the forward KL from the teacher's distribution at temperature ``T`` to the student's at
  the same ``T``, over the full vocabulary, or over the teacher's ``top_k`` tokens and one bucket for
  the rest (lm/scoring.py ``top_k_kl_divergence``). ``T^2`` keeps the gradient's size independent of
  ``T`` (Hinton's correction), so ``weight`` means the same at any temperature.
- ``CE`` is the next-token loss on the trace itself (sequence-level distillation's whole loss).
- Positions whose target is IGNORE_INDEX (prompts, role headers, tool results, padding) count nowhere,
  and only the positions that count go through either model's output layer.

The teacher runs in the same process as the student (a frozen copy on the rank's device, no
gradients), on the very packed rows the student sees. Why not score the traces once beforehand with
lm/scoring.py and store the result: a full distribution is ``positions x vocab`` floats (a top-k
cache loses the rest), a second pass over the data is one more Ray job, and the teacher, which fits
beside the student, costs one forward per row (a third of a training step of its size). Both must share the tokenizer
(the same ids mean the same tokens); the distill stage checks that before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm.scoring import kl_divergence, log_softmax_rows, log_softmax_tempered, top_k_kl_divergence
from lm.train.losses import IGNORE_INDEX, Loss


@dataclass(frozen=True)
class LogitDistillation:
    """Where the teacher is and how its distribution enters the loss (see the module docstring)."""

    teacher_dir: str  # absolute: a model directory (Ray workers change directory)
    weight: float = 0.5
    temperature: float = 1.0
    top_k: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"logit distillation weight must be in [0, 1], not {self.weight}")
        if self.temperature <= 0:
            raise ValueError(f"logit distillation temperature must be > 0, not {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"logit distillation top_k must be >= 1 or null, not {self.top_k}")


def load_teacher(path: str, device: torch.device) -> nn.Module:
    """The teacher, frozen, in eval mode on ``device`` (bf16 on GPU: it is only ever run forward)."""
    from lm.train.models import pretrained_model

    teacher = pretrained_model(path).eval().requires_grad_(False)
    if device.type == "cuda":
        teacher = teacher.to(torch.bfloat16)
    return teacher.to(device)


def token_kl(teacher_logprobs: Tensor, student_logprobs: Tensor, top_k: int | None = None) -> Tensor:
    """KL(teacher || student) per position, over the full vocabulary or the teacher's ``top_k``."""
    if top_k is None:
        return kl_divergence(teacher_logprobs, student_logprobs)
    return top_k_kl_divergence(teacher_logprobs, student_logprobs, top_k)


def logit_distillation_loss(
    student: nn.Module, teacher: nn.Module, batch: dict[str, Tensor], settings: LogitDistillation
) -> Loss:
    """The mixed loss above for one micro-batch (``input_ids``, ``targets``, optional ``document_ids``
    and ``target_index``, as ``next_token_loss`` takes them). ``Loss.sums`` carries the summed ``kl``
    (at temperature T, without the T^2 factor) and ``ce``, so the step's record shows both per token."""
    inputs, targets = batch["input_ids"], batch["targets"]
    documents = batch.get("document_ids")
    index = batch.get("target_index")
    if index is None:
        index = torch.nonzero(targets.reshape(-1) != IGNORE_INDEX).squeeze(-1)
    t = settings.temperature
    logits = student(inputs, document_ids=documents, output_index=index).float()
    with torch.no_grad():
        teacher_logprobs = log_softmax_rows(
            teacher, inputs, document_ids=documents, output_index=index, temperature=t
        )
    if teacher_logprobs.size(-1) != logits.size(-1):
        raise ValueError(
            f"teacher and student score different vocabularies ({teacher_logprobs.size(-1)} and "
            f"{logits.size(-1)} logits): logit distillation needs the same tokenizer and output size"
        )
    kl = token_kl(teacher_logprobs, log_softmax_tempered(logits, t), settings.top_k).sum()
    ce = F.cross_entropy(logits, targets.reshape(-1)[index], reduction="sum")
    total = settings.weight * t * t * kl + (1.0 - settings.weight) * ce
    return Loss(total, index.numel(), tokens=inputs.numel(), sums={"kl": kl.detach(), "ce": ce.detach()})
