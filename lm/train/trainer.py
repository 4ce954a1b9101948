"""One data-parallel rank's model, optimizer and step, for every stage that takes gradient steps.

Keeping this apart from Ray (pipelines/train/loop.py drives it inside Ray Train) lets a unit test train
a model in-process in seconds, lets an RL learner that set up ``torch.distributed`` itself use the
same step, lets the overhead benchmark time exactly this step inside and outside Ray, and lets the GPU
MFU script measure the step the pipeline really runs.

The step: every micro-batch's loss is a sum over its targets (lm/train/losses.py); gradients of the
sums accumulate, then one all-reduce of ``[loss sum, target count, tokens, ...]`` gives the step's
count over all micro-batches and ranks, and the gradients are scaled by ``1 / count`` in the same pass
that clips them. So the gradient is that of the mean over every target of the step, however the
targets fall into micro-batches and ranks.

Parallelism: ``ddp`` wraps the model in DistributedDataParallel (gradients all-reduced in the last
micro-step's backward); ``fsdp`` applies FSDP2's ``fully_shard`` to every decoder block and then to
the root, so parameters, gradients and optimizer state are sharded across ranks. On GPU the forward
runs under bf16 autocast (and FSDP2 also keeps its gathered parameters in bf16, reducing in fp32);
``precision: bf16`` asks for autocast on CPU too, where a CPU with bf16 units halves a small model's
step (weights, gradients and AdamW's state stay fp32 either way, as on GPU).
Both average gradients over the ranks, which the scale above accounts for.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from lm.train.config import StepConfig
from lm.train.losses import Loss
from lm.train.optim import build_optimizer, build_scheduler

STATE_FILE = "state.pt"
LossFn = Callable[[nn.Module, Any], Loss]


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks FSDP2 shards one by one: ``model.model.layers`` (the Llama layout) when present."""
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    return list(layers) if layers is not None else []


def wrap_model(model: nn.Module, strategy: str, device: torch.device, bf16: bool = False) -> nn.Module:
    """DDP or FSDP2 around ``model`` (already on ``device``); unchanged in a single process. ``bf16`` on
    GPU: FSDP2 gathers the parameters in bf16 (reducing gradients in fp32), as autocast would cast them;
    on CPU it gathers fp32 (gloo's bf16 collectives are not to be relied on) and autocast casts."""
    _, world_size = world()
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
            if bf16 and device.type == "cuda"
            else MixedPrecisionPolicy()
        )
        for block in decoder_blocks(model):
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    raise ValueError(f"unknown strategy {strategy!r}; use ddp or fsdp")


class StepStats:
    """A step's sums over all ranks ``[loss, count, tokens, *extra]`` and gradient norm, still on the
    device: ``values()`` reads them with one host sync."""

    def __init__(self, sums: Tensor, grad_norm: Tensor, keys: list[str]) -> None:
        self.sums, self.grad_norm, self.keys = sums, grad_norm, keys

    def values(self) -> dict[str, float]:
        count = self.sums[1].clamp(min=1)
        per_target = torch.cat([self.sums[:1], self.sums[3:]]) / count
        flat = torch.cat([per_target, self.grad_norm.double().view(1), self.sums[1:3]]).tolist()
        loss, extra = flat[0], flat[1 : 1 + len(self.keys)]
        grad_norm, total, tokens = flat[1 + len(self.keys) :]
        out = {
            "loss": loss if total > 0 else math.nan,
            "grad_norm": grad_norm,
            "count": total,
            "tokens": tokens,
        }
        out.update(zip(self.keys, extra, strict=True))
        return out


def _local(t: Tensor) -> Tensor:
    """The local shard of an FSDP2 DTensor (a view: scaling it in place scales the DTensor)."""
    return t.to_local() if hasattr(t, "to_local") else t


class Trainer:
    """Model + AdamW + schedule of one rank; ``train_step`` is one optimizer step over micro-batches.

    ``model`` is the stage's module on CPU in float32 (lm/train/models.py builds it); the trainer moves
    it to ``device``, wraps it for the process group that is already set up (none: one process), and
    builds the optimizer and schedule from ``config``. Every rank must construct it with the same
    weights (the same seed or the same model directory).
    """

    def __init__(
        self, model: nn.Module, config: StepConfig, *, total_steps: int, device: torch.device
    ) -> None:
        self.rank, self.world_size = world()
        self.device = device
        self.config = config
        self.bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
        self.model = model.to(device)  # the unwrapped module (FSDP2 shards it in place)
        self.module = wrap_model(self.model, config.strategy, device, self.bf16)
        self.optimizer = build_optimizer(
            self.module,
            config.lr,
            config.weight_decay,
            tuple(config.betas),
            config.eps,
            fused=device.type == "cuda",
        )
        self.scheduler = build_scheduler(
            self.optimizer, config.warmup_steps, total_steps, config.min_lr_ratio, config.decay
        )
        self.forward_module = torch.compile(self.module) if config.compile else self.module

    # -- steps --------------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def to_device(self, batch: Any) -> Any:
        """numpy arrays and tensors (also inside dicts, lists and tuples) on this rank's device."""
        if isinstance(batch, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        if isinstance(batch, Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, Mapping):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, list | tuple):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    @contextlib.contextmanager
    def _gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on every micro-step but the last (accumulation)."""
        if enabled or self.world_size == 1:
            yield
        elif self.config.strategy == "ddp":
            with self.module.no_sync():
                yield
        else:  # FSDP2
            self.module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)

    def train_step(self, batches: Sequence[Any], loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step: ``compute_gradients``, then AdamW and the schedule.

        ``loss_fn(model, batch)`` returns a ``Loss`` (a sum and its count); every rank passes the same
        number of micro-batches. Returns the step's ``loss`` (summed loss / count, over all ranks),
        ``grad_norm`` (before clipping), ``lr``, ``count`` and ``tokens`` over all ranks, and each of
        the loss's extra ``sums`` divided by the count.
        """
        lr = self.optimizer.param_groups[0]["lr"]
        stats = self.compute_gradients(batches, loss_fn)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"lr": float(lr), **stats.values()}

    def compute_gradients(self, batches: Sequence[Any], loss_fn: LossFn) -> StepStats:
        """Forward/backward every micro-batch, then leave in ``.grad`` the gradient of the mean loss over
        every target of every micro-batch on every rank, clipped. (``train_step`` without the update.)"""
        if not batches:
            raise ValueError("a step needs at least one micro-batch")
        self.module.train()
        stats: Tensor | None = None
        keys: list[str] = []
        for i, batch in enumerate(batches):
            with self._gradient_sync(i == len(batches) - 1):
                with self.autocast():
                    out = loss_fn(self.forward_module, self.to_device(batch))
                out.total.backward()
            if stats is None:
                keys = sorted(out.sums)
            row = self._stats_row(out, keys)
            stats = row if stats is None else stats + row
        assert stats is not None
        if self.world_size > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        grad_norm = self._normalise_and_clip(stats[1])
        return StepStats(stats, grad_norm, keys)

    def _stats_row(self, out: Loss, keys: list[str]) -> Tensor:
        if sorted(out.sums) != keys:
            raise ValueError(
                f"every micro-batch's Loss.sums must have the same keys: {keys} != {sorted(out.sums)}"
            )
        tokens = out.count if out.tokens is None else out.tokens
        parts = [out.total.detach(), out.count, tokens, *(out.sums[k] for k in keys)]
        return torch.stack([self._scalar(p) for p in parts])

    def _scalar(self, value: Tensor | float) -> Tensor:
        """A float64 0-d tensor on the device. A Python number is copied with ``non_blocking``: a blocking
        host-to-GPU copy would wait for the GPU to finish every kernel queued so far."""
        if isinstance(value, Tensor):
            return value.detach().to(self.device, torch.float64).reshape(())
        return torch.tensor(float(value), dtype=torch.float64).to(self.device, non_blocking=True)

    @torch.no_grad()
    def _normalise_and_clip(self, count: Tensor) -> Tensor:
        """Scale the summed gradients to the mean over ``count`` targets and clip them, in one pass.

        DDP and FSDP2 have averaged the ranks' sums, hence ``world_size / count``. Returns the norm of
        the normalised gradient before clipping (what ``clip_grad_norm_`` returns).
        """
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        scale = self.world_size / count.clamp(min=1)
        if not grads:
            return torch.zeros((), device=self.device)
        norm = nn.utils.get_total_norm(grads, norm_type=2.0)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor partial over the ranks
            norm = norm.full_tensor()
        norm = norm.double() * scale
        coef = scale
        if self.config.grad_clip is not None:
            coef = scale * torch.clamp(self.config.grad_clip / (norm + 1e-6), max=1.0)
        locals_ = [_local(g) for g in grads]
        for dtype in {g.dtype for g in locals_}:
            same = [g for g in locals_ if g.dtype == dtype]
            torch._foreach_mul_(same, coef.to(dtype))
        return norm

    @torch.no_grad()
    def eval_sums(
        self, batches: Sequence[Any], fn: Callable[[nn.Module, Any], dict[str, Tensor]]
    ) -> dict[str, float]:
        """``fn(model, batch)``'s sums, added up over this rank's batches and then over every rank.

        Every rank must pass the same number of batches, at least one (FSDP2 gathers parameters in each
        forward): pad a short rank with batches whose weights are zero.
        """
        if not batches:
            raise ValueError(
                "eval_sums needs at least one batch on every rank (pad with zero-weight batches)"
            )
        self.module.eval()
        keys: list[str] = []
        total: Tensor | None = None
        for batch in batches:
            with self.autocast():
                sums = fn(self.forward_module, self.to_device(batch))
            if total is None:
                keys = sorted(sums)
            row = torch.stack([self._scalar(sums[k]) for k in keys])
            total = row if total is None else total + row
        assert total is not None
        if self.world_size > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return dict(zip(keys, total.tolist(), strict=True))

    # -- weights and state --------------------------------------------------------------------------

    def model_state(self) -> dict[str, Tensor]:
        """The full (unsharded) model weights on CPU: what an export or a generator's update needs.

        A collective under FSDP2: every rank calls it; the result is complete on every rank's CPU.
        """
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.module, options=options)

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

    @staticmethod
    def save(directory: Path, state: dict[str, Any]) -> Path:
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
