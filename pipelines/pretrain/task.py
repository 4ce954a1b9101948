"""Pretraining as a ``TrainTask``: next-token prediction on the memory-mapped token shards.

Everything else (workers, checkpoints, resume, failures, metrics, MFU) is the shared driver's
(pipelines/train/). The data position is ``samples_seen``, the sequences consumed so far: the order is
a pure function of (seed, position) (pipelines/pretrain/data.py), so a restarted run, with any number
of workers, computes the very batch that would have come next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm.model import ModelConfig, Transformer
from lm.train.losses import next_token_loss
from lm.train.models import fresh_model
from lm.train.task import TrainTask
from pipelines.pretrain.config import PretrainConfig
from pipelines.pretrain.data import TokenSplit, TrainBatches, eval_batches

if TYPE_CHECKING:
    from lm.train.trainer import Trainer


@dataclass
class PretrainTask(TrainTask):
    pretrain: PretrainConfig
    model_config: ModelConfig
    tokens_dir: str  # absolute: Ray workers change directory
    seed: int
    eval_windows: int
    epoch_sequences: int  # windows in the train split: one epoch
    token_bytes: np.ndarray  # UTF-8 bytes per token id, for bits per byte
    fingerprint: str = ""  # of tokens/index.json and the tokenizer: which data a checkpoint saw

    def __post_init__(self) -> None:
        self.total_steps = self.pretrain.total_steps
        self.start_position = 0
        self._train: TrainBatches | None = None
        self._val: list[dict[str, np.ndarray]] = []
        self._token_bytes: Tensor | None = None

    # -- the model and the data ----------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        return fresh_model(self.model_config, self.seed)  # every rank starts from the same weights

    def setup(self, rank: int, world_size: int, device: torch.device) -> None:
        p = self.pretrain
        split = TokenSplit.open(self.tokens_dir, "train")
        self._train = TrainBatches(
            split, p.seq_len, p.sequences_per_step, p.micro_batch_size, rank, world_size, self.seed
        )
        val = TokenSplit.open(self.tokens_dir, "val")
        self._val = padded_eval_batches(val, p, self.eval_windows, rank, world_size)
        self._token_bytes = torch.tensor(np.asarray(self.token_bytes), dtype=torch.float64, device=device)

    def next_batches(self, position: int) -> tuple[list[dict[str, np.ndarray]], int]:
        assert self._train is not None, "setup() first"
        batches = [{"input_ids": x, "targets": y} for x, y in self._train.step_batches(position)]
        return batches, position + self.pretrain.sequences_per_step

    # the summed next-token cross-entropy over every target (benchmarks/gpu_mfu.py times this very loss)
    loss = staticmethod(next_token_loss)

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        """Mean loss (nats/token) and bits per byte over every rank's validation windows."""
        sums = trainer.eval_sums(self._val, self._eval_sums)
        loss = sums["loss"] / sums["tokens"] if sums["tokens"] > 0 else float("nan")
        bpb = sums["byte_loss"] / (np.log(2) * sums["bytes"]) if sums["bytes"] > 0 else float("nan")
        return {"val_loss": float(loss), "val_bpb": float(bpb)}

    def _eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rows with ``valid`` False are padding (ranks run the same number of forwards) and count nowhere;
        special tokens encode no bytes, so bits per byte leaves them out of both sums."""
        targets = batch["targets"].reshape(-1)
        logits = model(batch["input_ids"])
        losses = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets, reduction="none").double()
        weight = batch["valid"].to(torch.float64).repeat_interleave(batch["targets"].shape[1])
        losses = losses * weight
        nbytes = self._token_bytes[targets] * weight
        return {
            "loss": losses.sum(),
            "tokens": weight.sum(),
            "byte_loss": (losses * (nbytes > 0)).sum(),
            "bytes": nbytes.sum(),
        }

    def eval_summary(self, metrics: dict[str, float]) -> str:
        return f"val {metrics['val_loss']:.4f} ({metrics['val_bpb']:.3f} bpb)"

    # -- bookkeeping ---------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        # the seed fixes the data order: another seed would silently change which batch comes next
        return {
            "model_config": self.model_config.model_dump(),
            "seq_len": self.pretrain.seq_len,
            "seed": self.seed,
        }

    def data_fingerprint(self) -> str | None:
        return self.fingerprint

    def progress(self, position: int) -> dict[str, Any]:
        return {
            "tokens_seen": position * self.pretrain.seq_len,
            "samples_seen": position,
            "epoch": position / self.epoch_sequences,
        }

    def flops_per_token(self) -> float | None:
        return self.model_config.flops_per_token(self.pretrain.seq_len)

    def empty_model(self) -> Transformer:
        """The module a checkpoint's weights are loaded into for the export."""
        return Transformer(self.model_config)


def padded_eval_batches(
    split: TokenSplit, cfg: PretrainConfig, num_windows: int, rank: int, world_size: int
) -> list[dict[str, np.ndarray]]:
    """This rank's validation batches, padded so every rank runs the same number of forwards."""
    mine = eval_batches(split, cfg.seq_len, num_windows, cfg.micro_batch_size, rank, world_size)
    per_rank = -(-num_windows // world_size)
    needed = -(-per_rank // cfg.micro_batch_size)
    out = [{"input_ids": x, "targets": y, "valid": np.ones(len(x), dtype=bool)} for x, y in mine]
    if len(out) < needed:
        x, y = eval_batches(split, cfg.seq_len, 1, 1, 0, 1)[0]
        out += [{"input_ids": x, "targets": y, "valid": np.zeros(1, dtype=bool)}] * (needed - len(out))
    return out
