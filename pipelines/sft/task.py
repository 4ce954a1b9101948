"""Supervised fine-tuning as a ``TrainTask``: packed chat rows, loss on assistant tokens only.

Everything else (workers, checkpoints, resume, failures, metrics, progress, MFU) is the shared
driver's (pipelines/train/). The examples were rendered on the driver into one ``.npz`` file
(pipelines/sft/data.py); the data position is the number of examples consumed, so a restarted run
packs the very step that would have come next.

With ``logit`` set (the distill stage's logit-distilled student) the same rows are trained against a
teacher's token distributions as well (lm/train/logit_distill.py): the teacher is loaded on each
rank in ``setup`` and the loss mixes KL to it with the cross-entropy; the validation loss stays the
cross-entropy, comparable with a plain fine-tune's, and ``val_kl`` is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from lm.model import ModelConfig, Transformer
from lm.train.logit_distill import LogitDistillation, load_teacher, logit_distillation_loss
from lm.train.losses import Loss, next_token_loss
from lm.train.models import pretrained_model
from lm.train.task import TrainTask
from pipelines.sft.data import Examples, ExampleStream, eval_rows, pack_step, rows_for_rank
from pipelines.train.fingerprints import NamedInputs

if TYPE_CHECKING:
    from lm.train.trainer import Trainer


@dataclass
class SFTTask(NamedInputs, TrainTask):
    init_dir: str  # absolute: Ray workers change directory
    model_config: ModelConfig  # the init model's, with max_seq_len at least seq_len
    train_file: str
    val_file: str
    seq_len: int
    batch_rows: int
    micro_batch_rows: int
    steps: int
    seed: int
    pad_id: int
    num_examples: int
    # what it trains from, by name ("the initial model": its fingerprint); in this order they make
    # ``data_fingerprint``, and the one that changed is named when old checkpoints are set aside
    fingerprints: dict[str, str] = field(default_factory=dict)
    logit: LogitDistillation | None = None  # train against this teacher's distributions too

    def __post_init__(self) -> None:
        self.total_steps = self.steps
        self.start_position = 0
        self._train: Examples | None = None
        self._stream: ExampleStream | None = None
        self._val: list[dict[str, np.ndarray]] = []
        self._rank, self._world = 0, 1
        self._teacher: nn.Module | None = None

    def build_model(self) -> nn.Module:
        model = pretrained_model(self.init_dir)
        model.config = self.model_config  # positions past the base's length are what SFT teaches
        return model

    def setup(self, rank: int, world_size: int, device: torch.device) -> None:
        self._rank, self._world = rank, world_size
        if self.logit is not None:
            self._teacher = load_teacher(self.logit.teacher_dir, device)
        self._train = Examples.load(self.train_file)
        self._stream = ExampleStream(len(self._train), self.seed)
        val = Examples.load(self.val_file)
        self._val = eval_rows(val, self.seq_len, rank, world_size, self.micro_batch_rows, self.pad_id)

    def next_batches(self, position: int) -> tuple[list[dict[str, np.ndarray]], int]:
        assert self._train is not None and self._stream is not None, "setup() first"
        packed, after = pack_step(
            self._train, self._stream, position, self.batch_rows, self.seq_len, self.pad_id
        )
        return rows_for_rank(packed, self._rank, self._world, self.micro_batch_rows), after

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Loss:
        """Summed cross-entropy over the assistant tokens (the targets that are not IGNORE_INDEX), or
        with a teacher, the logit-distillation mix over the same tokens."""
        if self._teacher is None:
            return next_token_loss(model, batch)
        assert self.logit is not None
        return logit_distillation_loss(model, self._teacher, batch, self.logit)

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """Mean loss per assistant token over the validation conversations (none: no metric); with a
        teacher also the mean KL to it (``val_kl``, at the loss's temperature)."""
        if not self._val:
            return {}
        sums = trainer.eval_sums(self._val, self._eval_sums)
        count = sums["count"]
        out = {"val_loss": sums["loss"] / count if count else float("nan")}
        if "kl" in sums:
            out["val_kl"] = sums["kl"] / count if count else float("nan")
        return out

    def _eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.loss(model, batch)
        sums = {k: torch.as_tensor(v) for k, v in out.sums.items() if k == "kl"}
        loss = torch.as_tensor(out.sums.get("ce", out.total))  # the cross-entropy alone
        return {"loss": loss, "count": torch.as_tensor(out.count, dtype=torch.float64), **sums}

    def eval_summary(self, metrics: dict[str, float]) -> str:
        parts = [f"val {metrics['val_loss']:.4f}"] if "val_loss" in metrics else []
        if "val_kl" in metrics:
            parts.append(f"val KL {metrics['val_kl']:.4f}")
        return " ".join(parts)

    def identity(self) -> dict[str, Any]:
        return {
            "model_config": self.model_config.model_dump(),
            "seq_len": self.seq_len,
            "batch_rows": self.batch_rows,
            "seed": self.seed,
        }

    def progress(self, position: int) -> dict[str, Any]:
        return {"examples_seen": position, "epoch": position / self.num_examples}

    def flops_per_token(self) -> float | None:
        return self.model_config.flops_per_token(self.seq_len)

    def empty_model(self) -> Transformer:
        return Transformer(self.model_config)
