"""The function every Ray Train worker runs for any task: restore, train, evaluate, checkpoint, report.

Contract with Ray Train V2 (see RAY-NOTES.md):
- ``ray.train.get_checkpoint()`` is the latest checkpoint of this run name, both when the same
  command is started again and when the controller restarts a failed worker group
  (``FailureConfig(max_failures=...)``); the loop restores model, optimizer, schedule, RNG and the data
  position from it, so the next batch is the one that would have come next.
- ``ray.train.report`` is a barrier, so every rank calls it at the same steps (the checkpoint steps);
  only rank 0 attaches the checkpoint directory. Per-step metrics go straight to the JSONL file from
  rank 0 instead, so reporting stays off the hot path.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lm import atomic
from lm.train.mfu import device_peak_flops, mfu
from lm.train.task import TrainTask
from lm.train.trainer import Trainer
from pipelines.console import write_status
from pipelines.run_dir import MetricsWriter, RunDir
from pipelines.runtime import format_seconds, setup_logging
from pipelines.train.config import TrainingConfig
from pipelines.train.fingerprints import TRAINING_DATA
from pipelines.train.tracking import make_tracker

log = logging.getLogger("raychat.train")
META_FILE = "meta.json"
# what the loop itself writes into every step's record; a task's progress() and metrics add to it
_STEP_KEYS = ("loss", "lr", "grad_norm")


@dataclass
class FitSpec:
    """One training run: which stage, where, with what settings, on which task (pickled to workers)."""

    stage: str
    run_dir: str  # absolute: Ray workers change directory
    config: TrainingConfig
    task: TrainTask

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def storage(self) -> Path:
        """Ray Train's storage of this run: ``<run>/checkpoints/<stage>``."""
        return self.run.checkpoints_of(self.stage)


def fault_marker(spec: FitSpec, step: int) -> Path:
    return spec.run.fault_marker(spec.stage, step)


def read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / META_FILE).read_text())


def incompatibilities(meta: dict[str, Any], task: TrainTask) -> list[str]:
    """Why a checkpoint with ``meta`` cannot continue ``task`` (empty: it can)."""
    problems = []
    if "position" not in meta:
        problems.append("it has no data position (written by an older raychat)")
    for key, value in task.identity().items():
        if meta.get(key, value) != value:
            problems.append(f"{key} {meta.get(key)} != {value}")
    fingerprint = task.data_fingerprint()
    if meta.get("data_fingerprint", fingerprint) != fingerprint:
        problems.append(f"{what_changed(meta, task)} changed since it was written")
    return problems


def what_changed(meta: dict[str, Any], task: TrainTask) -> str:
    """The inputs whose fingerprints differ between a checkpoint's ``meta`` and ``task`` ("the initial
    model"), for a checkpoint whose ``data_fingerprint`` differs. One written before checkpoints named
    their inputs gets every input the task names, joined by "or"."""
    now, then = task.fingerprint_parts(), meta.get("input_fingerprints")
    if isinstance(then, dict):
        changed = [name for name in {**then, **now} if then.get(name) != now.get(name)]
        if changed:
            return _join(changed, "and")
    return _join(list(now), "or") or TRAINING_DATA


def _join(names: list[str], word: str) -> str:
    return f"{', '.join(names[:-1])} {word} {names[-1]}" if len(names) > 1 else "".join(names)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train
    import ray.train.torch

    setup_logging()
    spec: FitSpec = config["spec"]
    cfg, task, run, stage = spec.config, spec.task, spec.run, spec.stage
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)

    trainer = Trainer(task.build_model(), cfg, total_steps=task.total_steps, device=device)
    task.setup(rank, world_size, device)

    step, position, last, earlier_rate = 0, task.start_position, {}, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            meta = read_meta(Path(d))
            problems = incompatibilities(meta, task)  # the driver checked already; this is a backstop
            if problems:
                raise ValueError(
                    f"checkpoint {checkpoint.path} cannot continue this run: {'; '.join(problems)}"
                )
            trainer.load_state(Trainer.read(Path(d)))
        step, position, last = meta["step"], meta["position"], meta.get("last", {})
        earlier_rate = meta.get("tokens_per_s")
        if rank == 0:
            log.info(
                "%s: resumed from %s at step %d (data position %s)", stage, checkpoint.path, step, position
            )

    writer = MetricsWriter(run, stage) if rank == 0 else None
    tracker = None
    if writer is not None:
        if checkpoint is None:
            writer.path.write_text("")  # a fresh start: no stale curve from an abandoned run
        writer.write({"event": "start", "step": step, "world_size": world_size, "time": time.time()})
        tracker = make_tracker(cfg.tracking, run, stage, cfg.model_dump(), cfg.wandb_project)

    peak, device_name = device_peak_flops(device.type, cfg.peak_flops)
    flops_per_token = task.flops_per_token()
    total = task.total_steps
    step_times: deque[float] = deque(maxlen=20)
    rates: list[float] = []
    status_path, status_at = run.status_file(stage), 0.0

    if step == 0:  # where the curve starts: the untrained model's validation metrics
        initial = task.evaluate(trainer)
        if writer is not None:
            writer.write({"step": 0, **task.progress(position), **initial, "time": time.time()})

    while step < total:
        started = time.perf_counter()
        batches, position = task.next_batches(position)
        out = trainer.train_step(batches, task.loss)
        elapsed = time.perf_counter() - started
        step += 1
        step_times.append(elapsed)
        tokens_per_s = out["tokens"] / elapsed
        if len(step_times) > 1:  # the first step of an attempt carries warm-up (and compilation)
            rates.append(tokens_per_s)
        record: dict[str, Any] = {
            "step": step,
            **{k: out[k] for k in _STEP_KEYS},
            "tokens_per_s": tokens_per_s,
            **task.progress(position),
            "time": time.time(),
            "process_cpu_s": time.process_time(),  # CPU time of this worker, all threads (Ray's included)
        }
        record.update({k: v for k, v in out.items() if k not in (*_STEP_KEYS, "count", "tokens")})
        if flops_per_token is not None:
            util = mfu(flops_per_token, tokens_per_s, peak, world_size)
            if util is not None:
                record["mfu"] = util
        evaluated = task.evaluate(trainer) if step % cfg.eval_every == 0 or step == total else {}
        record.update(evaluated)
        last = {**last, "loss": record["loss"], **evaluated}
        if writer is not None:
            writer.write(record)
            tracker.log({k: v for k, v in record.items() if k not in ("step", "time")}, step)
            eta = sum(step_times) / len(step_times) * (total - step)
            if step % cfg.log_every == 0 or step == total:
                log.info("%s", progress_line(stage, step, total, record, evaluated, task, eta))
            if time.monotonic() - status_at >= 1.0 or step == total:  # the driver's live line
                status_at = time.monotonic()
                write_status(status_path, progress_line(stage, step, total, record, evaluated, task, eta))
        if cfg.fail_at_step == step and rank == cfg.fail_rank and not fault_marker(spec, step).exists():
            inject_fault(spec, rank, step)
        if step % cfg.checkpoint_every == 0 or step == total:
            mean_rate = float(np.mean(rates)) if rates else earlier_rate
            save_and_report(trainer, spec, rank, step, position, last, mean_rate, device_name)

    if tracker is not None:
        tracker.close()
    if rank != 0:
        return None
    mean_rate = float(np.mean(rates)) if rates else earlier_rate
    return run_outcome(task, step, position, last, mean_rate, device_name, world_size)


def run_outcome(
    task: TrainTask,
    step: int,
    position: Any,
    last: dict[str, Any],
    tokens_per_s: float | None,
    device: str | None,
    world_size: int | None,
) -> dict[str, Any]:
    """What a run returns to its stage (Ray Train's ``return_value``): where it stands and its last numbers."""
    return {
        "steps": step,
        "position": position,
        **task.progress(position),
        "final_train_loss": last.get("loss"),
        **{k: v for k, v in last.items() if k != "loss"},
        "tokens_per_s": tokens_per_s,
        "device": device,
        "world_size": world_size,
    }


def inject_fault(spec: FitSpec, rank: int, step: int) -> None:
    """Testing: die the hard way (SIGKILL: no exception, no cleanup), as an OOM kill or a lost node would.

    First wait until Ray Train has committed every checkpoint reported so far: a checkpoint counts only
    once the controller has polled every rank's report (every ~2 s), and a kill inside that window
    would make the restart begin from the checkpoint before, which is correct but not what a test of
    "resume from the latest checkpoint" wants to depend on.
    """
    import ray.train

    ray.train.get_all_reported_checkpoints()
    atomic.write_json(fault_marker(spec, step), {"rank": rank, "pid": os.getpid(), "time": time.time()})
    log.warning("%s: fault injection: rank %d SIGKILLs itself after step %d", spec.stage, rank, step)
    os.kill(os.getpid(), signal.SIGKILL)


def save_and_report(
    trainer: Trainer,
    spec: FitSpec,
    rank: int,
    step: int,
    position: Any,
    last: dict[str, Any],
    tokens_per_s: float | None,
    device: str | None = None,
) -> None:
    """Every rank: gather the state, then ``report`` (a barrier); rank 0 attaches the checkpoint."""
    import ray.train

    task = spec.task
    state = trainer.state()
    progress = task.progress(position)
    metrics = {"step": step, **progress, **{k: v for k, v in last.items() if v is not None}}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="raychat-ckpt-", ignore_cleanup_errors=True) as tmp:
        d = Path(tmp)
        trainer.save(d, state)
        meta = checkpoint_meta(spec, step, position, trainer.world_size, last, tokens_per_s, device)
        (d / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_step{step:07d}",
        )


def checkpoint_meta(
    spec: FitSpec,
    step: int,
    position: Any,
    world_size: int,
    last: dict[str, Any],
    tokens_per_s: float | None,
    device: str | None = None,
) -> dict[str, Any]:
    """A checkpoint's ``meta.json``: where training stands, and what the next run is compared with
    (``incompatibilities``; the driver's set-aside of checkpoints whose inputs changed)."""
    task = spec.task
    return {
        "stage": spec.stage,
        "step": step,
        "total_steps": task.total_steps,
        "position": position,
        **task.progress(position),
        "world_size": world_size,
        **task.identity(),
        "data_fingerprint": task.data_fingerprint(),
        "input_fingerprints": task.fingerprint_parts(),
        "last": last,
        "tokens_per_s": tokens_per_s,
        "device": device,
    }


def progress_line(
    stage: str,
    step: int,
    total: int,
    record: dict[str, Any],
    evaluated: dict[str, float],
    task: TrainTask,
    eta_s: float,
) -> str:
    parts = [
        f"{stage} step {step}/{total}",
        f"loss {record['loss']:.4f}",
        f"lr {record['lr']:.2e}",
        f"{record['tokens_per_s']:,.0f} tok/s",
    ]
    if "mfu" in record:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    if evaluated:
        parts.append(task.eval_summary(evaluated))
    parts.append(f"ETA {format_seconds(eta_s)}")
    return " | ".join(parts)
