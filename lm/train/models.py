"""The model a training stage starts from: fresh weights, or the weights in a model directory.

Pretraining and the distilled student start fresh (every rank from the same seed, so the ranks agree
without a broadcast); SFT starts from ``models/base`` or any Llama-layout directory, the reward model
from a base model plus a head (its stage adds the head). Both return the module on CPU in float32,
in training mode, which is what ``Trainer`` expects.
"""

from __future__ import annotations

import os

import torch

from lm.model import ModelConfig, Transformer


def fresh_model(config: ModelConfig, seed: int) -> Transformer:
    """A ``Transformer`` with ``init_weights(seed)``; the global torch RNG is seeded as well, so
    anything a stage draws from it afterwards is the same on every rank and every run."""
    torch.manual_seed(seed)
    model = Transformer(config)
    model.init_weights(seed)
    return model.train()


def pretrained_model(path: str | os.PathLike[str]) -> Transformer:
    """The model in a model directory (ours, or an imported Llama-shaped one) in float32 for training."""
    from lm.checkpoint import load_pretrained

    model, _ = load_pretrained(path, device="cpu", dtype=torch.float32)
    return model.train()
