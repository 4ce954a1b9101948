"""The reward model as a ``TrainTask``: Bradley-Terry on packed chosen/rejected pairs.

Everything else (workers, checkpoints, resume, failures, metrics, the progress line) is the shared
driver's (pipelines/train/). The loss is ``lm.reward_model.bradley_terry_loss``: -log sigmoid(r_chosen -
r_rejected) summed over a micro-batch's pairs with the count of pairs, so the trainer averages over
every pair of a step whatever micro-batch or rank it fell in. The data position is the number of
mixture pairs consumed (pipelines/rm/data.py). The evaluation scores every held-out pair: the loss,
the pairwise accuracy (a tie counts half, so a reward model that cannot tell scores 0.5), the mean
margin, and the accuracy of each group (a source, or a kind of world pair).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm.model import ModelConfig
from lm.reward_model import RewardModel, bradley_terry_loss, sequence_rewards
from lm.train.task import TrainTask
from pipelines.rm.config import RMConfig
from pipelines.rm.data import PairBatches, PairSet, eval_batches
from pipelines.train.fingerprints import NamedInputs

if TYPE_CHECKING:
    from lm.train.trainer import Trainer

EVAL_BATCH_PAIRS = 64


@dataclass
class RMTask(NamedInputs, TrainTask):
    rm: RMConfig
    model_config: ModelConfig
    init_dir: str  # absolute: Ray workers change directory
    init_is_reward_model: bool
    data_dir: str  # <run>/rm_data, absolute
    groups: list[str]
    mixture_pairs: int
    seq_len: int
    pad_id: int
    seed: int
    fingerprints: dict[str, str] = field(default_factory=dict)  # the pairs and the initial model

    def __post_init__(self) -> None:
        steps = self.rm.max_steps or -(-int(self.rm.epochs * self.mixture_pairs) // self.rm.batch_pairs)
        self.total_steps = max(1, steps)
        self.start_position = 0
        self._train: PairBatches | None = None
        self._heldout: list[dict[str, np.ndarray]] = []

    # -- the model and the data ----------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """The init model's body with a fresh head (seeded: the same on every rank), or the init reward
        model as it is."""
        from lm.checkpoint import load_reward_model
        from lm.train.models import pretrained_model

        if self.init_is_reward_model:
            model, _ = load_reward_model(self.init_dir, dtype=torch.float32)
        else:
            model = RewardModel.from_base(pretrained_model(self.init_dir), seed=self.seed)
        model.config = self.model_config  # the same sizes; max_seq_len raised to seq_len where asked
        return model.train()

    def setup(self, rank: int, world_size: int, device: torch.device) -> None:
        r = self.rm
        train = PairSet.open(self.data_dir, "train")
        mixture = np.load(f"{self.data_dir}/train.mixture.npy", mmap_mode="r")
        self._train = PairBatches(
            train,
            mixture,
            r.batch_pairs,
            r.micro_batch_pairs,
            rank,
            world_size,
            self.seed,
            self.seq_len,
            self.pad_id,
        )
        heldout = PairSet.open(self.data_dir, "heldout")
        self._heldout = eval_batches(heldout, EVAL_BATCH_PAIRS, rank, world_size, self.seq_len, self.pad_id)

    def next_batches(self, position: int) -> tuple[list[dict[str, np.ndarray]], int]:
        assert self._train is not None, "setup() first"
        return self._train.step_batches(position), position + self.rm.batch_pairs

    loss = staticmethod(bradley_terry_loss)

    # -- evaluation ----------------------------------------------------------------------------------

    def evaluate(self, trainer: Trainer) -> dict[str, float]:
        sums = trainer.eval_sums(self._heldout, self._eval_sums)
        pairs = sums["pairs"]
        out = {
            "val_loss": sums["loss"] / pairs,
            "heldout_accuracy": sums["correct"] / pairs,
            "heldout_margin": sums["margin"] / pairs,
        }
        for g, name in enumerate(self.groups):
            n = sums[f"pairs/{g}"]
            if n:
                out[f"heldout_accuracy/{name}"] = sums[f"correct/{g}"] / n
        return out

    def _eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        scores = model(batch["input_ids"], document_ids=batch["document_ids"])
        margin = sequence_rewards(scores, batch["chosen_last"]) - sequence_rewards(
            scores, batch["rejected_last"]
        )
        margin = margin.double()
        weight = batch["valid"].double()
        correct = ((margin > 0).double() + 0.5 * (margin == 0).double()) * weight
        sums = {
            "pairs": weight.sum(),
            "loss": (-F.logsigmoid(margin) * weight).sum(),
            "correct": correct.sum(),
            "margin": (margin * weight).sum(),
        }
        onehot = F.one_hot(batch["group"], len(self.groups)).double()  # [pairs, groups]
        per_pairs, per_correct = weight @ onehot, correct @ onehot
        for g in range(len(self.groups)):
            sums[f"pairs/{g}"] = per_pairs[g]
            sums[f"correct/{g}"] = per_correct[g]
        return sums

    def eval_summary(self, metrics: dict[str, float]) -> str:
        return f"held-out accuracy {metrics['heldout_accuracy']:.3f} (loss {metrics['val_loss']:.4f})"

    # -- bookkeeping ---------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        return {"model_config": self.model_config.model_dump(), "seq_len": self.seq_len, "seed": self.seed}

    def progress(self, position: int) -> dict[str, Any]:
        return {"pairs_seen": position, "epoch": position / self.mixture_pairs}

    def flops_per_token(self) -> float | None:
        c = self.model_config
        return c.flops_per_token(self.seq_len) - 6.0 * (c.vocab_size - 1) * c.hidden_size  # a 1-wide head

    def empty_model(self) -> RewardModel:
        """The module a checkpoint's weights are loaded into for the export."""
        return RewardModel(self.model_config)
