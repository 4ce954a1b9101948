"""One data-parallel rank's model, optimizer and step: the part of pretraining that knows no Ray.

Keeping this apart from the Ray Train loop (loop.py) lets a unit test train a model in-process in
seconds, lets the overhead benchmark time exactly the same step inside and outside Ray, and lets the
GPU MFU script measure the step the pipeline really runs.

Parallelism: ``ddp`` wraps the model in DistributedDataParallel (gradients all-reduced in the last
micro-step's backward); ``fsdp`` applies FSDP2's ``fully_shard`` to every decoder block and then to
the root, so parameters, gradients and optimizer state are sharded across ranks. On GPU the forward
runs under bf16 autocast (and FSDP2 also keeps its gathered parameters in bf16, reducing in fp32).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from lm.model import ModelConfig, Transformer
from pipelines.pretrain.optim import build_optimizer, build_scheduler

STATE_FILE = "state.pt"


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_model(model: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """DDP or FSDP2 around ``model`` (already on ``device``); unchanged in a single process."""
    _, world_size = _world()
    if world_size == 1:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # inv_freq (RoPE) is the only buffer and is a constant: no need to broadcast it every forward
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(device.type, (world_size,))
        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if device.type == "cuda"
            else MixedPrecisionPolicy()
        )
        for block in model.model.layers:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    raise ValueError(f"unknown strategy {strategy!r}; use ddp or fsdp")


class PretrainTrainer:
    """Model + AdamW + schedule of one rank; ``train_step`` is one optimizer step over micro-batches."""

    def __init__(
        self,
        model_config: ModelConfig,
        *,
        total_steps: int,
        lr: float,
        min_lr_ratio: float,
        warmup_steps: int,
        decay: str,
        weight_decay: float,
        betas: tuple[float, float],
        eps: float,
        grad_clip: float | None,
        seed: int,
        device: torch.device,
        strategy: str = "ddp",
        compile: bool = False,
        token_bytes: np.ndarray | None = None,
    ) -> None:
        self.rank, self.world_size = _world()
        self.device = device
        self.strategy = strategy
        self.grad_clip = grad_clip
        self.config = model_config
        torch.manual_seed(seed)
        model = Transformer(model_config)
        model.init_weights(seed)  # every rank starts from the same weights
        model.to(device)
        self.module = wrap_model(model, strategy, device)
        self.optimizer = build_optimizer(
            self.module, lr, weight_decay, tuple(betas), eps, fused=device.type == "cuda"
        )
        self.scheduler = build_scheduler(self.optimizer, warmup_steps, total_steps, min_lr_ratio, decay)
        self.forward_module = torch.compile(self.module) if compile else self.module
        self.bf16 = device.type == "cuda"
        self.token_bytes = (
            torch.tensor(np.asarray(token_bytes), dtype=torch.float64, device=device)
            if token_bytes is not None
            else None
        )

    # -- steps --------------------------------------------------------------------------------------

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.forward_module(inputs)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

    @contextlib.contextmanager
    def _gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on every micro-step but the last (accumulation)."""
        if enabled or self.world_size == 1:
            yield
        elif self.strategy == "ddp":
            with self.module.no_sync():
                yield
        else:  # FSDP2
            self.module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)

    def train_step(self, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        """Forward/backward every micro-batch, clip, step; returns the step's mean loss over all ranks."""
        self.module.train()
        lr = self.optimizer.param_groups[0]["lr"]
        total = torch.zeros((), device=self.device)
        for i, (x, y) in enumerate(batches):
            inputs, targets = self._tensor(x), self._tensor(y)
            with self._gradient_sync(i == len(batches) - 1):
                logits = self._logits(inputs)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
                (loss / len(batches)).backward()
            total += loss.detach()
        max_norm = self.grad_clip if self.grad_clip is not None else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.module.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = total / len(batches)
        if self.world_size > 1:
            dist.all_reduce(mean, op=dist.ReduceOp.SUM)
            mean /= self.world_size
        return {"loss": float(mean.item()), "grad_norm": float(grad_norm.item()), "lr": float(lr)}

    @torch.no_grad()
    def evaluate(self, batches: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
        """Mean loss (nats/token) and bits per byte over every rank's (inputs, targets, valid rows).

        Every rank must pass the same number of batches (FSDP2 gathers parameters in each forward);
        rows with ``valid`` False are padding and count nowhere.
        """
        self.module.eval()
        stats = torch.zeros(4, dtype=torch.float64, device=self.device)
        for x, y, valid in batches:
            targets = self._tensor(y).view(-1)
            logits = self._logits(self._tensor(x))
            losses = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets, reduction="none")
            weight = self._tensor(np.repeat(valid, y.shape[1])).to(torch.float64)
            losses = losses.double() * weight
            stats[0] += losses.sum()
            stats[1] += weight.sum()
            if self.token_bytes is not None:
                nbytes = self.token_bytes[targets] * weight
                stats[2] += (losses * (nbytes > 0)).sum()
                stats[3] += nbytes.sum()
        if self.world_size > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        loss = float(stats[0] / stats[1]) if stats[1] > 0 else math.nan
        bpb = float(stats[2] / (math.log(2) * stats[3])) if stats[3] > 0 else math.nan
        return {"val_loss": loss, "val_bpb": bpb}

    # -- state --------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Full (unsharded) model and optimizer state plus every rank's RNG states.

        A collective: every rank calls it; the result is complete on rank 0 (FSDP2 gathers there).
        """
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state, optim_state = get_state_dict(self.module, self.optimizer, options=options)
        rng = rng_state()
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        return {
            "model": model_state,
            "optimizer": optim_state,
            "scheduler": self.scheduler.state_dict(),
            "rng": gathered,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore from ``state()``'s output (every rank passes the full state)."""
        options = StateDictOptions(full_state_dict=True)
        set_state_dict(
            self.module,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=options,
        )
        self.scheduler.load_state_dict(state["scheduler"])
        rngs = state.get("rng") or []
        if len(rngs) == self.world_size:  # same layout: each rank continues its own streams
            set_rng_state(rngs[self.rank])

    def save(self, directory: Path, state: dict[str, Any]) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / STATE_FILE
        torch.save(state, path)
        return path

    @staticmethod
    def read(directory: Path) -> dict[str, Any]:
        return torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _numpy_state() -> list[Any]:
    """numpy's global RNG state as plain lists (``torch.load(weights_only=True)`` takes no arrays)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
