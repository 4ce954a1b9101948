"""Weights from the learner to the generators by a collective broadcast, not through the object store.

    group = WeightBroadcast(host, port, rank, world_size, backend="nccl")   # rank 0: the learner
    group.send(model_state.items())                                         # on the learner
    named = group.receive(spec, device="cuda")                              # on each generator

A process group of its own (``torch.distributed.ProcessGroupGloo`` / ``ProcessGroupNCCL`` built on a
``TCPStore``), apart from the learner ranks' default group, so the learner's DDP/FSDP2 ranks and the
generators never have to share one ``init_process_group`` (OpenRLHF's and vLLM's "stateless" weight
group; the explicit ``init_process_group`` / ``update_weight`` interface DESIGN.md asks for). The
tensors go in one flat buffer per dtype, so a model is a handful of broadcasts, not one per tensor.
NCCL on GPUs; gloo works the same way on CPU, which is how the tests check this path without a GPU.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

WeightSpec = list[tuple[str, tuple[int, ...], str]]  # (name, shape, dtype name), in sending order


def weight_spec(named: Iterable[tuple[str, Tensor]]) -> WeightSpec:
    """What a receiver must know to allocate the buffers: names, shapes, dtypes, in order."""
    return [(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named]


class WeightBroadcast:
    """One member of a broadcast group; rank 0 sends, every other rank receives."""

    def __init__(
        self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo", timeout_s: float = 300
    ) -> None:
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be gloo or nccl, got {backend!r}")
        timeout = datetime.timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(host, port, world_size, rank == 0, timeout=timeout)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        if backend == "gloo":
            self.group = dist.ProcessGroupGloo(self.store, rank, world_size, timeout)
        else:
            self.group = dist.ProcessGroupNCCL(self.store, rank, world_size)

    def _broadcast(self, tensor: Tensor) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.group.broadcast([tensor], opts).wait()

    def send(self, named: Iterable[tuple[str, Tensor]], device: str | torch.device = "cpu") -> WeightSpec:
        """Broadcast the tensors (rank 0), one flat buffer per dtype; returns what was sent."""
        pairs = [(k, t.detach()) for k, t in named]
        for dtype, items in _by_dtype(pairs):
            flat = torch.cat([t.reshape(-1).to(device) for _, t in items]) if items else None
            assert flat is not None and flat.dtype == dtype
            self._broadcast(flat)
        return weight_spec(pairs)

    def receive(self, spec: Sequence[tuple[str, Sequence[int], str]], device: str | torch.device = "cpu"):
        """The tensors rank 0 sends, as (name, tensor) pairs on ``device``, in ``spec``'s order."""
        shaped = [(name, tuple(shape), getattr(torch, dtype)) for name, shape, dtype in spec]
        out: dict[str, Tensor] = {}
        for dtype, items in _by_dtype([(n, torch.empty(0, dtype=d)) for n, _, d in shaped]):
            sizes = {n: s for n, s, _ in shaped}
            numels = [_numel(sizes[n]) for n, _ in items]
            flat = torch.empty(sum(numels), dtype=dtype, device=device)
            self._broadcast(flat)
            for (name, _), piece in zip(items, flat.split(numels), strict=True):
                out[name] = piece.view(sizes[name])
        return [(name, out[name]) for name, _, _ in shaped]


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _by_dtype(pairs: list[tuple[str, Tensor]]) -> list[tuple[torch.dtype, list[tuple[str, Tensor]]]]:
    """Pairs grouped by dtype, groups in first-seen order (the same on both sides of the broadcast)."""
    groups: dict[torch.dtype, list[tuple[str, Tensor]]] = {}
    for name, t in pairs:
        groups.setdefault(t.dtype, []).append((name, t))
    return list(groups.items())
