"""``TrainTask``: everything a stage supplies to the one trainer and the one Ray Train driver.

A new gradient stage is a config (inheriting pipelines/train/config.py's ``TrainingConfig``), a
subclass of this, and a call to ``pipelines.train.driver.fit``. The driver handles the rest: workers,
checkpoints with resume, FailureConfig, metrics JSONL, the progress line with ETA, MFU, tracking.

The task object is built on the driver and pickled to every worker, so ``__init__`` only records
settings (paths, sizes, seeds); ``setup`` opens the data on the worker.

The data position: ``next_batches(position)`` returns this rank's micro-batches of one optimizer step
and the position after it. A position is a small JSON value (pretraining: sequences consumed so far)
that checkpoints record, so a restarted run - with any number of workers, if the task allows it -
continues with the very batch that would have come next. It must not depend on the rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

TRAINING_DATA = "the training data"  # what a data fingerprint covers unless a task names more inputs

if TYPE_CHECKING:
    import torch

    from lm.train.losses import Loss
    from lm.train.trainer import Trainer


class TrainTask:
    """Override ``build_model``, ``setup``, ``next_batches``, ``loss`` and ``evaluate``; the rest is optional."""

    #: optimizer steps the run takes (the schedule decays over them)
    total_steps: int = 1
    #: the data position of a fresh run
    start_position: Any = 0

    # -- required -----------------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """The model to train, on CPU in float32 (lm/train/models.py); the same weights on every rank."""
        raise NotImplementedError

    def setup(self, rank: int, world_size: int, device: torch.device) -> None:
        """Open this rank's data (called once per worker, before the first step)."""
        raise NotImplementedError

    def next_batches(self, position: Any) -> tuple[list[Any], Any]:
        """This rank's micro-batches of the step that starts at ``position``, and the next position.

        Every rank returns the same number of micro-batches. A batch is anything ``loss`` takes; numpy
        arrays and tensors in it (also inside dicts, lists, tuples) are moved to the device first.
        """
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> Loss:
        """A sum over the batch's targets and their count (lm/train/losses.py); ``model`` is the
        wrapped module (call its forward, so DDP/FSDP2 see it), run under bf16 autocast on GPU."""
        raise NotImplementedError

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """Validation metrics over every rank (a collective; ``trainer.eval_sums`` does the sums)."""
        raise NotImplementedError

    # -- optional -----------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to continue this run (model sizes, sequence length, seed...).

        A checkpoint whose values differ is refused on the driver with the differences listed.
        """
        return {}

    def data_fingerprint(self) -> str | None:
        """Which data a checkpoint was trained on; checkpoints of other data are set aside, not resumed."""
        return None

    def fingerprint_parts(self) -> dict[str, str]:
        """What ``data_fingerprint`` covers, by name ("the initial model": its hash), recorded in every
        checkpoint so that one set aside is said to be stale because of the input that changed. A task
        whose fingerprint covers more than its data names the parts; by default it is all data."""
        fingerprint = self.data_fingerprint()
        return {} if fingerprint is None else {TRAINING_DATA: fingerprint}

    def progress(self, position: Any) -> dict[str, Any]:
        """What the position means, for metrics and checkpoint meta (e.g. tokens_seen, epoch)."""
        return {}

    def flops_per_token(self) -> float | None:
        """Training FLOPs per token for MFU (``ModelConfig.flops_per_token``); None: no MFU."""
        return None

    def eval_summary(self, metrics: dict[str, float]) -> str:
        """The progress line's view of ``evaluate``'s metrics."""
        return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
