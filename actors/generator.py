"""A GRPO generator: the engine actor (actors/engine_actor.py) plus the learner-to-generator weight path.

    gen = start_generator(EngineActorConfig(model_dir=...), tools={"calculator": hook}, num_cpus=1)
    gen.generate.remote([prompt], SamplingParams(n=8, logprobs=True), request_ids=[uid], tools=["calculator"])
    gen.update_weights.remote(weights_ref, version)                       # through the object store
    gen.join_weight_group.remote(host, port, rank, world, "nccl", spec)   # or a broadcast group ...
    gen.receive_weights.remote(version)                                   # ... and one update per version

The two weight paths are OpenRLHF's explicit interface (``init_process_group`` / ``update_weight``):
the object store (one ``ray.put`` by the learner, read by every generator: right on CPU and for small
models) and a broadcast group with the learner's rank 0 (lm/rl/broadcast.py: NCCL between GPUs, so
weights never leave the devices). The broadcast is received in a worker thread, so the actor keeps
generating while the weights arrive; the update itself is applied between engine steps, with the
engine's semantics for samples in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from actors.engine_actor import EngineActor, EngineActorConfig
from lm.engine import InFlight, ToolHook


class GeneratorActor(EngineActor):
    """An engine actor that can also join a weight broadcast group and report its CPU time."""

    def __init__(self, config: EngineActorConfig, tools: Mapping[str, ToolHook] | None = None) -> None:
        super().__init__(config, tools)
        self._group: Any = None
        self._spec: list[tuple[str, Sequence[int], str]] = []
        device = getattr(self.engine, "device", None)
        self._device = (
            device
            if isinstance(device, torch.device)
            else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )

    async def join_weight_group(
        self, host: str, port: int, rank: int, world_size: int, backend: str, spec: list
    ) -> None:
        from lm.rl.broadcast import WeightBroadcast

        def join() -> Any:
            return WeightBroadcast(host, port, rank, world_size, backend)

        self._group = await asyncio.to_thread(join)
        self._spec = spec

    async def receive_weights(self, version: int, in_flight: InFlight = "finish") -> int:
        """Receive one broadcast of the learner's weights and load them as ``version``."""
        if self._group is None:
            raise RuntimeError("join_weight_group first")
        named = await asyncio.to_thread(self._group.receive, self._spec, self._device)
        return await self.update_weights(named, version, in_flight)

    async def cpu_seconds(self) -> float:
        return time.process_time()

    async def weight_sums(self) -> dict[str, float]:
        """Each weight's sum, in float64 (a check that an update arrived; TorchEngine only)."""
        model = getattr(self.engine, "model", None)
        if model is None:
            raise NotImplementedError(f"{type(self.engine).__name__} does not expose its weights")
        return {k: float(v.double().sum()) for k, v in model.state_dict().items()}


def start_generator(
    config: EngineActorConfig,
    tools: Mapping[str, ToolHook] | None = None,
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_restarts: int = -1,
    **options: Any,
):
    """A generator actor handle; ``options`` are Ray's (``scheduling_strategy`` for a placement group).
    A restarted generator comes back with ``config.model_dir``'s weights (version 0): the rollout
    collector pushes the current ones before it gets work again."""
    import ray

    cls = ray.remote(GeneratorActor)
    return cls.options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts, max_concurrency=1000, **options
    ).remote(config, tools)
