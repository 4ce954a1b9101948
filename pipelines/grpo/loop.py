"""The GRPO driver loop: batches from the rollout buffer to the learner, weights back to the generators,
one metrics line per step, checkpoints, and the testing faults.

    outcome = run_loop(topology, collector, cfg, checkpoints, metrics, start)

The learner trains while the collector keeps the generators busy (``collector.poll`` between checks):
the learner gets batch ``v`` as soon as it is idle and the buffer holds enough fresh groups; when its
step returns, version ``v + 1`` goes to every generator that is up (one ``ray.put`` of the full
weights for all of them, or one broadcast), the collector's gate opens for the next batch, and every
``checkpoint_every`` steps the learner state and the collector's data position are saved.

Each step's metrics line holds: reward (mean, std, per component: ``reward_<rule>`` and, with a
reward model, ``reward_rm``, its raw score, beside ``rm_failed``, the share of samples it could not
score), accuracy, KL, entropy, response length, clip fraction, the policy loss and gradient norm, tool calls per completion, the share of
answers that revise themselves, the staleness histogram of the batch and the groups dropped since the
last step, samples per second, and the idle share of the generators and of the learner over the step.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from lm import atomic
from pipelines.grpo.config import GRPOConfig
from pipelines.grpo.launcher import Topology
from pipelines.grpo.rollouts import Group, RolloutCollector
from pipelines.runtime import format_seconds
from pipelines.storage import read_json

log = logging.getLogger("raychat.grpo")
DRIVER_FILE = "driver.json"


class InjectedCrash(RuntimeError):
    """grpo.faults.crash_at_step: the run stops here once; rerunning the command resumes it."""


@dataclass
class Checkpoints:
    root: Path
    keep: int

    def latest(self) -> Path | None:
        done = sorted(p for p in self.root.glob("step_*") if (p / DRIVER_FILE).is_file())
        return done[-1] if done else None

    def fault_marker(self, name: str, step: int) -> Path:
        return self.root / f"fault_{name}_{step}.done"

    def once(self, name: str, step: int | None, now: int) -> bool:
        """A fault fires once per run directory, at its step (a marker says it happened)."""
        if step is None or now != step or self.fault_marker(name, step).exists():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        self.fault_marker(name, step).write_text("")
        return True

    def save(self, topo: Topology, step: int, driver: dict[str, Any]) -> Path:
        directory = self.root / f"step_{step:06d}"
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        topo.learner.save(str(directory))
        atomic.write_json(directory / DRIVER_FILE, driver)  # last: a directory with it is complete
        for old in sorted(p for p in self.root.glob("step_*") if (p / DRIVER_FILE).is_file())[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return directory


@dataclass
class LoopState:
    """What the loop carries across steps (and a checkpoint carries across runs)."""

    version: int = 0
    elapsed_s: float = 0.0
    samples: int = 0
    staleness: Counter[int] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "elapsed_s": self.elapsed_s,
            "samples": self.samples,
            "staleness": {str(k): v for k, v in self.staleness.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LoopState:
        return cls(
            d["version"],
            d["elapsed_s"],
            d["samples"],
            Counter({int(k): v for k, v in d["staleness"].items()}),
        )


def push_weights(topo: Topology, collector: RolloutCollector, version: int, in_flight: str) -> None:
    """The learner's weights, tagged ``version``, to every generator that is up: one broadcast, or
    one ``ray.put`` read by all of them (also kept for generators that come back later). A broadcast
    needs every member, so after a generator was lost the object store carries the weights. A
    generator found dead here is handed to the collector, which brings it back."""
    up = [i for i, w in enumerate(collector.workers) if w.up]
    weights = None
    if topo.weight_sync == "collective" and len(up) == len(collector.workers):
        calls = [r.broadcast_weights.remote() for r in topo.learner.ranks]
        ray.get(calls + [collector.workers[i].handle.receive_weights.remote(version, in_flight) for i in up])
    else:
        if topo.weight_sync == "collective":
            log.warning("grpo: a generator was lost; weights go through the object store from now on")
            topo.weight_sync = "object_store"
        weights = topo.learner.weights_ref()
        calls = {
            i: collector.workers[i].handle.update_weights.remote(weights, version, in_flight) for i in up
        }
        for i, call in calls.items():
            try:
                ray.get(call)
            except ray.exceptions.RayActorError as e:
                collector.worker_lost(i, e)
    collector.set_weights(version, weights)


def batch_metrics(groups: list[Group], cfg: GRPOConfig, step: int) -> dict[str, Any]:
    """What the batch says about the policy (rewards, accuracy, lengths, tools, self-revision)."""
    scores = [s for g in groups for s in g.scores]
    results = [r for g in groups for r in g.results]
    n = len(scores)
    rewards = [s.reward for s in scores]
    mean = sum(rewards) / n
    out: dict[str, Any] = {
        "reward_mean": mean,
        "reward_std": (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5,
    }
    keys = sorted({k for s in scores for k in s.components})
    for k in keys:  # over the samples that have it: a failed score has none (counted below)
        values = [s.components[k] for s in scores if k in s.components]
        out[f"reward_{k}"] = sum(values) / len(values)
    acc_key = cfg.accuracy_key()
    out["accuracy"] = sum(s.components.get(acc_key, 0.0) >= 0.5 for s in scores) / n
    out["reward_failed"] = sum(s.status != "ok" for s in scores) / n
    if cfg.rewards.rm is not None:  # a failed reward-model call: the sample kept its rule rewards
        out["rm_failed"] = sum("rm" not in s.components for s in scores) / n
    out["response_length"] = sum(len(r.token_ids) for r in results) / n
    out["truncated_share"] = sum(r.finish_reason == "length" for r in results) / n
    for tool in ("calc", "search"):
        out[f"tool_{tool}_per_completion"] = sum(c.get(tool, 0) for g in groups for c in g.tool_calls) / n
    out["revise_share"] = sum(x for g in groups for x in g.revises) / n
    out["informative_groups"] = sum(len({s.reward for s in g.scores}) > 1 for g in groups) / len(groups)
    out["staleness"] = dict(Counter(step - g.version for g in groups))
    return out


def run_loop(
    topo: Topology,
    collector: RolloutCollector,
    cfg: GRPOConfig,
    checkpoints: Checkpoints,
    metrics_path: Path,
    state: LoopState,
    driver_extra: dict[str, Any],
    cpu_seconds: Callable[[], float],
) -> LoopState:
    """Train until ``cfg.steps``; returns the final state (version == cfg.steps)."""
    in_flight = cfg.generators.in_flight
    started = time.monotonic() - state.elapsed_s
    resumed_at = state.version
    learner_calls: list[ray.ObjectRef] | None = None
    learner_started = time.monotonic()
    batch: list[Group] = []
    learner_busy = 0.0
    step_started = time.monotonic()
    gen_busy_at_start = sum(collector.busy_seconds())
    learner_busy_at_start = 0.0
    dropped_at_start = Counter(collector.dropped_since)
    faults = Faults(topo, collector, cfg, checkpoints)
    with metrics_path.open("a") as metrics_file:
        while state.version < cfg.steps:
            collector.poll()
            faults.while_polling()
            now = time.monotonic()
            if learner_calls is None:
                batch = collector.take_batch(state.version) or []
                if batch:
                    completions = ray.put([c for g in batch for c in g.completions()])
                    learner_calls = topo.learner.train_async(completions)
                    learner_started = now
                continue
            done, _ = ray.wait(learner_calls, num_returns=len(learner_calls), timeout=0)
            if len(done) < len(learner_calls):
                continue
            learner_metrics = ray.get(learner_calls)[0]
            learner_calls = None
            learner_busy += time.monotonic() - learner_started
            state.version += 1
            push_weights(topo, collector, state.version, in_flight)
            now = time.monotonic()
            interval = now - step_started
            record = {"step": state.version, "time_s": now - started, "step_s": interval}
            record |= batch_metrics(batch, cfg, state.version - 1)
            record |= {k: v for k, v in learner_metrics.items()}
            samples = sum(len(g.results) for g in batch)
            state.samples += samples
            state.staleness.update({int(k): v * cfg.group_size for k, v in record["staleness"].items()})
            record["samples_per_s"] = samples / interval
            gen_busy = sum(collector.busy_seconds())
            record["idle_generators"] = 1 - (gen_busy - gen_busy_at_start) / (
                interval * len(collector.workers)
            )
            record["idle_learner"] = 1 - (learner_busy - learner_busy_at_start) / interval
            dropped = collector.dropped_since - dropped_at_start
            record["dropped_stale_groups"] = dropped.get("stale", 0)
            record["filtered_groups"] = dropped.get("filtered", 0)
            record["generator_version"] = collector.generator_version
            record["cpu_s"] = cpu_seconds()  # every process of the topology and the driver, so far
            step_started, gen_busy_at_start, learner_busy_at_start = now, gen_busy, learner_busy
            dropped_at_start = Counter(collector.dropped_since)
            state.elapsed_s = now - started
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            log.info(  # the stage's live line on the console (pipelines/console.py)
                "%s",
                progress_line(record, cfg, state, resumed_at, now - started),
                extra={
                    "progress": True,
                    "progress_key": f"grpo:{cfg.output_name}",
                    "final": state.version == cfg.steps,
                },
            )

            if state.version % cfg.checkpoint_every == 0 or state.version == cfg.steps:
                collector.samples.flush()
                driver = {
                    **driver_extra,
                    "loop": state.to_json(),
                    "collector": collector.state(),
                    "sample_lines": collector.samples.lines,
                    "metric_lines": _line_count(metrics_path),
                    "cpu_s": record["cpu_s"],
                }
                checkpoints.save(topo, state.version, driver)
            faults.after_step(state.version)
    return state


class Faults:
    """grpo.faults (testing only), each fired once per run directory at its step. A reward worker is
    killed while a group is being scored, so its work is really in flight when it dies."""

    def __init__(self, topo: Topology, collector: RolloutCollector, cfg: GRPOConfig, ck: Checkpoints) -> None:
        self.topo, self.collector, self.f, self.ck = topo, collector, cfg.faults, ck
        self.reward_kill_pending = False

    def after_step(self, step: int) -> None:
        if self.ck.once("kill_generator", self.f.kill_generator_at_step, step):
            log.warning("grpo: fault injection: killing generator 0 at step %d", step)
            ray.kill(self.collector.workers[0].handle, no_restart=False)
        if self.ck.once("kill_reward_worker", self.f.kill_reward_worker_at_step, step):
            self.reward_kill_pending = self.topo.rewards is not None
        if self.ck.once("crash", self.f.crash_at_step, step):
            raise InjectedCrash(
                f"grpo.faults.crash_at_step={step}: stopping; run the command again to resume"
            )

    def while_polling(self) -> None:
        if self.reward_kill_pending and self.collector.scoring:
            assert self.topo.rewards is not None
            log.warning("grpo: fault injection: killing reward worker 0 while it scores")
            ray.kill(self.topo.rewards.workers[0], no_restart=False)
            self.reward_kill_pending = False


def _line_count(path: Path) -> int:
    with path.open() as f:
        return sum(1 for _ in f)


def progress_line(
    record: dict[str, Any], cfg: GRPOConfig, state: LoopState, resumed_at: int, elapsed: float
) -> str:
    done = state.version - resumed_at
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (cfg.steps - state.version) / rate if rate > 0 else float("inf")
    stale = " ".join(f"{k}:{v}" for k, v in sorted(record["staleness"].items()))
    kl = f"{record['kl']:.4f}" if "kl" in record else "-"
    rm = f" rm {record['reward_rm']:.3f}" if "reward_rm" in record else ""
    return (
        f"grpo step {state.version}/{cfg.steps} | reward {record['reward_mean']:.3f}{rm} acc {record['accuracy']:.3f} "
        f"| kl {kl} ent {record.get('entropy', 0.0):.3f} clip {record.get('clip_frac', 0.0):.3f} "
        f"| len {record['response_length']:.0f} | {record['samples_per_s']:.1f} samples/s | staleness {stale} "
        f"| idle gen {record['idle_generators']:.0%} learner {record['idle_learner']:.0%} | ETA {format_seconds(eta)}"
    )


def read_driver(directory: Path) -> dict[str, Any]:
    data = read_json(directory / DRIVER_FILE)
    if not isinstance(data, dict):
        raise ValueError(f"{directory / DRIVER_FILE} is not a checkpoint's driver state")
    return data
