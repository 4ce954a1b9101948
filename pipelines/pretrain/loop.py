"""The function every Ray Train worker runs: restore, train, evaluate, checkpoint, report.

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

from lm.model import ModelConfig
from pipelines.pretrain.config import PretrainConfig
from pipelines.pretrain.data import TokenSplit, TrainBatches, eval_batches
from pipelines.pretrain.mfu import device_peak_flops, mfu
from pipelines.pretrain.tracking import make_tracker
from pipelines.pretrain.trainer import PretrainTrainer
from pipelines.runtime import MetricsWriter, RunDir, format_seconds, setup_logging, write_json_atomic

log = logging.getLogger("raychat.pretrain")
STAGE = "pretrain"
META_FILE = "meta.json"


@dataclass
class LoopSettings:
    """What the driver resolved once (paths made absolute, vocab, step count) for every worker."""

    pretrain: PretrainConfig
    model_config: ModelConfig
    run_dir: str
    seed: int
    total_steps: int
    eval_windows: int
    token_bytes: np.ndarray
    data_fingerprint: str = ""  # of tokens/index.json and the tokenizer: which data a checkpoint saw


def fault_marker(run: RunDir, step: int) -> Path:
    return run.checkpoints / f"fault_injected_at_step_{step}"


def read_meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / META_FILE).read_text())


def check_compatible(meta: dict[str, Any], settings: LoopSettings, where: str) -> None:
    """A checkpoint made with another model, sequence length, seed or data cannot continue this run."""
    problems = []
    if meta.get("model_config") != settings.model_config.model_dump():
        problems.append(f"model {meta.get('model_config')} != {settings.model_config.model_dump()}")
    if meta.get("seq_len") != settings.pretrain.seq_len:
        problems.append(f"seq_len {meta.get('seq_len')} != {settings.pretrain.seq_len}")
    # the seed fixes the data order: another seed would silently change which batch comes next
    if meta.get("seed", settings.seed) != settings.seed:
        problems.append(f"seed {meta.get('seed')} != {settings.seed}")
    if meta.get("data_fingerprint", settings.data_fingerprint) != settings.data_fingerprint:
        problems.append("the token shards or the tokenizer changed since it was written")
    if problems:
        raise ValueError(
            f"the checkpoint in {where} was made with different settings ({'; '.join(problems)}); use another "
            f"run_dir, or delete {RunDir(settings.run_dir).checkpoints} to start over"
        )


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train
    import ray.train.torch

    setup_logging()
    settings: LoopSettings = config["settings"]
    cfg = settings.pretrain
    run = RunDir(settings.run_dir)
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)

    trainer = PretrainTrainer(
        settings.model_config,
        total_steps=settings.total_steps,
        lr=cfg.lr,
        min_lr_ratio=cfg.min_lr_ratio,
        warmup_steps=cfg.warmup_steps,
        decay=cfg.decay,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        eps=cfg.eps,
        grad_clip=cfg.grad_clip,
        seed=settings.seed,
        device=device,
        strategy=cfg.strategy,
        compile=cfg.compile,
        token_bytes=settings.token_bytes,
    )
    train = TrainBatches(
        TokenSplit.open(run.tokens, "train"),
        cfg.seq_len,
        cfg.sequences_per_step,
        cfg.micro_batch_size,
        rank,
        world_size,
        settings.seed,
    )
    val = padded_eval_batches(
        TokenSplit.open(run.tokens, "val"), cfg, settings.eval_windows, rank, world_size
    )

    step, samples_seen, last, earlier_rate = 0, 0, {}, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            meta = read_meta(Path(d))
            check_compatible(meta, settings, str(checkpoint.path))
            trainer.load_state(PretrainTrainer.read(Path(d)))
        step, samples_seen, last = meta["step"], meta["samples_seen"], meta.get("last", {})
        earlier_rate = meta.get("tokens_per_s")
        if rank == 0:
            log.info(
                "pretrain: resumed from %s at step %d (data position %d)", checkpoint.path, step, samples_seen
            )

    writer = MetricsWriter(run, STAGE) if rank == 0 else None
    tracker = None
    if writer is not None:
        if checkpoint is None:
            writer.path.write_text("")  # a fresh start: no stale curve from an abandoned run
        writer.write({"event": "start", "step": step, "world_size": world_size, "time": time.time()})
        tracker = make_tracker(cfg.tracking, run.root, STAGE, cfg.model_dump(), cfg.wandb_project)

    peak, device_name = device_peak_flops(device.type, cfg.peak_flops)
    flops_per_token = settings.model_config.flops_per_token(cfg.seq_len)
    step_times: deque[float] = deque(maxlen=20)
    rates: list[float] = []

    if step == 0:  # where the curve starts: the untrained model's validation loss
        initial = trainer.evaluate(val)
        if writer is not None:
            writer.write({"step": 0, "tokens_seen": 0, "samples_seen": 0, **initial, "time": time.time()})

    while step < settings.total_steps:
        started = time.perf_counter()
        out = trainer.train_step(train.step_batches(samples_seen))
        elapsed = time.perf_counter() - started
        step += 1
        samples_seen += cfg.sequences_per_step
        step_times.append(elapsed)
        tokens_per_s = cfg.global_batch_tokens / elapsed
        if len(step_times) > 1:  # the first step of an attempt carries warm-up (and compilation)
            rates.append(tokens_per_s)
        record: dict[str, Any] = {
            "step": step,
            "loss": out["loss"],
            "lr": out["lr"],
            "grad_norm": out["grad_norm"],
            "tokens_per_s": tokens_per_s,
            "tokens_seen": samples_seen * cfg.seq_len,
            "samples_seen": samples_seen,
            "epoch": samples_seen / train.epoch_sequences,
            "time": time.time(),
            "process_cpu_s": time.process_time(),  # CPU time of this worker, all threads (Ray's included)
        }
        util = mfu(flops_per_token, tokens_per_s, peak, world_size)
        if util is not None:
            record["mfu"] = util
        if step % cfg.eval_every == 0 or step == settings.total_steps:
            record.update(trainer.evaluate(val))
        last = {
            "loss": record["loss"],
            "val_loss": record.get("val_loss", last.get("val_loss")),
            "val_bpb": record.get("val_bpb", last.get("val_bpb")),
        }
        if writer is not None:
            writer.write(record)
            tracker.log({k: v for k, v in record.items() if k not in ("step", "time")}, step)
            if step % cfg.log_every == 0 or step == settings.total_steps:
                eta = sum(step_times) / len(step_times) * (settings.total_steps - step)
                log.info("%s", progress_line(step, settings.total_steps, record, eta))
        if cfg.fail_at_step == step and rank == cfg.fail_rank and not fault_marker(run, step).exists():
            inject_fault(run, rank, step)
        if step % cfg.checkpoint_every == 0 or step == settings.total_steps:
            mean_rate = float(np.mean(rates)) if rates else earlier_rate
            save_and_report(trainer, settings, rank, step, samples_seen, last, mean_rate)

    if tracker is not None:
        tracker.close()
    if rank != 0:
        return None
    return {
        "steps": step,
        "samples_seen": samples_seen,
        "tokens": samples_seen * cfg.seq_len,
        "final_train_loss": last.get("loss"),
        "val_loss": last.get("val_loss"),
        "val_bpb": last.get("val_bpb"),
        "tokens_per_s": float(np.mean(rates)) if rates else earlier_rate,
        "device": device_name,
        "world_size": world_size,
    }


def inject_fault(run: RunDir, rank: int, step: int) -> None:
    """Testing: die the hard way (SIGKILL: no exception, no cleanup), as an OOM kill or a lost node would.

    First wait until Ray Train has committed every checkpoint reported so far: a checkpoint counts only
    once the controller has polled every rank's report (every ~2 s), and a kill inside that window
    would make the restart begin from the checkpoint before, which is correct but not what a test of
    "resume from the latest checkpoint" wants to depend on.
    """
    import ray.train

    ray.train.get_all_reported_checkpoints()
    write_json_atomic(fault_marker(run, step), {"rank": rank, "pid": os.getpid(), "time": time.time()})
    log.warning("pretrain: fault injection: rank %d SIGKILLs itself after step %d", rank, step)
    os.kill(os.getpid(), signal.SIGKILL)


def padded_eval_batches(
    split: TokenSplit, cfg: PretrainConfig, num_windows: int, rank: int, world_size: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """This rank's validation batches, padded so every rank runs the same number of forwards."""
    mine = eval_batches(split, cfg.seq_len, num_windows, cfg.micro_batch_size, rank, world_size)
    per_rank = -(-num_windows // world_size)
    needed = -(-per_rank // cfg.micro_batch_size)
    out = [(x, y, np.ones(len(x), dtype=bool)) for x, y in mine]
    if len(out) < needed:
        x, y = eval_batches(split, cfg.seq_len, 1, 1, 0, 1)[0]
        out += [(x, y, np.zeros(1, dtype=bool))] * (needed - len(out))
    return out


def save_and_report(
    trainer: PretrainTrainer,
    settings: LoopSettings,
    rank: int,
    step: int,
    samples_seen: int,
    last: dict[str, Any],
    tokens_per_s: float | None,
) -> None:
    """Every rank: gather the state, then ``report`` (a barrier); rank 0 attaches the checkpoint."""
    import ray.train

    state = trainer.state()
    metrics = {"step": step, "samples_seen": samples_seen, **{k: v for k, v in last.items() if v is not None}}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="raychat-ckpt-", ignore_cleanup_errors=True) as tmp:
        d = Path(tmp)
        trainer.save(d, state)
        meta = {
            "step": step,
            "samples_seen": samples_seen,
            "tokens_seen": samples_seen * settings.pretrain.seq_len,
            "seq_len": settings.pretrain.seq_len,
            "sequences_per_step": settings.pretrain.sequences_per_step,
            "world_size": trainer.world_size,
            "seed": settings.seed,
            "data_fingerprint": settings.data_fingerprint,
            "model_config": settings.model_config.model_dump(),
            "last": last,
            "tokens_per_s": tokens_per_s,
        }
        (d / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint_step{step:07d}",
        )


def progress_line(step: int, total: int, record: dict[str, Any], eta_s: float) -> str:
    parts = [
        f"pretrain step {step}/{total}",
        f"loss {record['loss']:.4f}",
        f"lr {record['lr']:.2e}",
        f"{record['tokens_per_s']:,.0f} tok/s",
    ]
    if "mfu" in record:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    if "val_loss" in record:
        parts.append(f"val {record['val_loss']:.4f} ({record['val_bpb']:.3f} bpb)")
    parts.append(f"ETA {format_seconds(eta_s)}")
    return " | ".join(parts)
