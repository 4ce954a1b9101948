"""The GRPO learner as Ray actors (one per data-parallel rank), and the frozen reference model.

    group = LearnerGroup(spec, num_workers=2, options_per_rank=[...])     # ranks join one process group
    metrics = group.train(completions)                                    # every rank, its share
    ref = group.weights_ref()                                             # rank 0's ray.put of the weights
    group.save(checkpoint_dir); group.load(checkpoint_dir); group.export(model_dir, meta)

Why actors and not Ray Train's TorchTrainer: an asynchronous learner is driven step by step from
outside - it pulls each batch from the rollout buffer when one is ready, and after each step hands its
weights to the generators (through the object store, or a broadcast group it joins with them). A
TorchTrainer runs one closed training function whose only exits are ``report`` barriers, which fits
stages that read a dataset to the end, not a learner that waits on a buffer and talks to generators
between steps. So, as verl and OpenRLHF do, the ranks are plain actors that call
``torch.distributed.init_process_group`` themselves (gloo on CPU, NCCL on GPU) and run lm/train's
``Trainer`` (DDP or FSDP2) - the same per-rank code every other gradient stage runs under Ray Train.

The reference model is its own actor (``ReferenceActor``): it is frozen, needs no optimizer and no
process group, and scoring each group's completions as they arrive - while the learner trains on the
previous batch - keeps it off the learner's critical path. The config places it (its own CPUs, or a
GPU share beside the learner); with ``kl_coef`` 0 and KL logging off it is not started at all.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from lm.rl.algos import AlgoConfig
from lm.rl.policy_step import Completion, PolicyStep
from lm.train.config import StepConfig


@dataclass
class LearnerSpec:
    init_dir: str  # absolute: actors do not share the driver's working directory
    step: StepConfig
    algo: AlgoConfig
    temperature: float
    total_steps: int  # optimizer steps, for the schedule
    micro_batch_tokens: int
    norm_length: int
    seed: int
    use_gpu: bool = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LearnerActor:
    """One rank: a Trainer over the policy and the GRPO step (lm/rl/policy_step.py)."""

    def __init__(self, spec: LearnerSpec, rank: int, world_size: int) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.step: PolicyStep | None = None
        self.broadcast: Any = None
        self.busy_s = 0.0

    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port()

    def setup(self, master: tuple[str, int] | None) -> dict[str, Any]:
        """Join the ranks' process group (when there are several), build the model and the Trainer."""
        import torch.distributed as dist

        from lm.train.models import pretrained_model
        from lm.train.trainer import Trainer

        if self.spec.use_gpu:
            device = torch.device("cuda", 0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if self.world_size > 1:
            assert master is not None
            dist.init_process_group(
                "nccl" if self.spec.use_gpu else "gloo",
                init_method=f"tcp://{master[0]}:{master[1]}",
                rank=self.rank,
                world_size=self.world_size,
            )
        torch.manual_seed(self.spec.seed)
        model = pretrained_model(self.spec.init_dir)
        trainer = Trainer(model, self.spec.step, total_steps=self.spec.total_steps, device=device)
        pad = model.config.vocab_size - 1
        self.step = PolicyStep(
            trainer,
            self.spec.algo,
            temperature=self.spec.temperature,
            micro_batch_tokens=self.spec.micro_batch_tokens,
            pad_id=pad,
            norm_length=self.spec.norm_length,
            seed=self.spec.seed,
        )
        return {
            "pid": os.getpid(),
            "device": str(device),
            "params": sum(p.numel() for p in model.parameters()),
        }

    def train(self, completions: list[Completion]) -> dict[str, float]:
        assert self.step is not None, "setup() first"
        started = time.perf_counter()
        metrics = self.step.train(completions)
        metrics["learner_s"] = time.perf_counter() - started
        return metrics

    # -- weights ------------------------------------------------------------------------------------

    def _state(self) -> dict[str, torch.Tensor]:
        assert self.step is not None
        return self.step.trainer.model_state()  # a collective under FSDP2: every rank calls it

    def weights_ref(self) -> list[ray.ObjectRef] | None:
        """Rank 0: ``[ray.put(full weights)]`` (in a list, so Ray hands the ref itself to the driver)."""
        state = self._state()
        return [ray.put(state)] if self.rank == 0 else None

    def weight_spec(self) -> list[tuple[str, tuple[int, ...], str]]:
        from lm.rl.broadcast import weight_spec

        return weight_spec(self._state().items())

    def join_weight_group(self, port: int, world_size: int, backend: str) -> None:
        """Rank 0 opens the weight broadcast group (lm/rl/broadcast.py) as its rank 0."""
        from lm.rl.broadcast import WeightBroadcast

        if self.rank == 0:
            self.broadcast = WeightBroadcast("0.0.0.0", port, 0, world_size, backend)

    def broadcast_weights(self) -> None:
        state = self._state()
        if self.rank == 0:
            device = "cuda" if self.spec.use_gpu else "cpu"
            self.broadcast.send(state.items(), device=device)

    # -- checkpoints and export -----------------------------------------------------------------------

    def save(self, directory: str) -> None:
        """Model, optimizer, schedule and RNG (a collective; rank 0 writes)."""
        from lm.train.trainer import Trainer

        assert self.step is not None
        state = self.step.trainer.state()
        state["policy_generator"] = self.step.generator.get_state()
        if self.rank == 0:
            Trainer.save(Path(directory), state)

    def load(self, directory: str) -> None:
        from lm.train.trainer import Trainer

        assert self.step is not None
        state = Trainer.read(Path(directory))
        self.step.trainer.load_state(state)
        if "policy_generator" in state:
            self.step.generator.set_state(state["policy_generator"])

    def optimizer_steps_taken(self) -> int:
        """AdamW's step count (what a resumed run must continue from)."""
        assert self.step is not None
        states = self.step.trainer.optimizer.state.values()
        return max((int(s["step"]) for s in states if "step" in s), default=0)

    def export(self, out_dir: str, tokenizer_dir: str, meta: dict[str, Any]) -> str | None:
        from lm.checkpoint import eos_token_ids, load_pretrained, save_pretrained
        from lm.tokenizer import load_tokenizer

        assert self.step is not None
        state = self._state()
        if self.rank != 0:
            return None
        model, _ = load_pretrained(self.spec.init_dir, device="cpu", dtype=torch.float32)
        model.load_state_dict(state)
        out = save_pretrained(
            model,
            out_dir,
            tokenizer=load_tokenizer(tokenizer_dir),
            meta=meta,
            eos_token_ids=eos_token_ids(self.spec.init_dir),
        )
        return str(out)

    def cpu_seconds(self) -> float:
        return time.process_time()


class ReferenceActor:
    """The frozen reference policy: log-probs of given tokens (lm/scoring.py), at the sampling
    temperature, so the KL to it is 0 before the first update."""

    def __init__(self, model_dir: str, temperature: float, use_gpu: bool = False) -> None:
        from lm.checkpoint import load_pretrained

        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        dtype = torch.bfloat16 if use_gpu else torch.float32
        self.model, _ = load_pretrained(model_dir, device=self.device, dtype=dtype)
        self.model.eval().requires_grad_(False)
        self.temperature = temperature

    def score(self, prompt_ids: list[int], completions: list[list[int]]) -> list[list[float]]:
        """For each completion of one prompt, the log-prob of each of its tokens."""
        from lm.scoring import sequence_logprobs

        seqs = [prompt_ids + c for c in completions]
        scores = sequence_logprobs(self.model, seqs, temperature=self.temperature, device=self.device)
        start = len(prompt_ids) - 1
        return [s[start:].tolist() for s in scores]

    def cpu_seconds(self) -> float:
        return time.process_time()


class LearnerGroup:
    """The driver's handle on the learner ranks: calls go to every rank, results come from rank 0."""

    def __init__(self, spec: LearnerSpec, num_workers: int, options_per_rank: list[dict[str, Any]]) -> None:
        cls = ray.remote(LearnerActor)
        self.ranks = [
            cls.options(**options_per_rank[r]).remote(spec, r, num_workers) for r in range(num_workers)
        ]
        master = ray.get(self.ranks[0].address.remote()) if num_workers > 1 else None
        self.info = ray.get([r.setup.remote(master) for r in self.ranks])

    def _all(self, method: str, *args: Any) -> list[Any]:
        return ray.get([getattr(r, method).remote(*args) for r in self.ranks])

    def train_async(self, completions_ref: Any) -> list[ray.ObjectRef]:
        """Start a step on every rank (the batch put once); the caller waits on the refs."""
        return [r.train.remote(completions_ref) for r in self.ranks]

    def weights_ref(self) -> ray.ObjectRef:
        return self._all("weights_ref")[0][0]

    def save(self, directory: str) -> None:
        self._all("save", directory)

    def load(self, directory: str) -> None:
        self._all("load", directory)

    def export(self, out_dir: str, tokenizer_dir: str, meta: dict[str, Any]) -> str:
        return self._all("export", out_dir, tokenizer_dir, meta)[0]

    def cpu_seconds(self) -> float:
        return sum(self._all("cpu_seconds"))

    def close(self) -> None:
        for r in self.ranks:
            ray.kill(r, no_restart=True)
