"""Pretraining on Ray Train: the token shards become the base model, ``<run>/models/base``.

    python -m pipelines.pretrain --config configs/tiny.yaml
    raychat pretrain --run-dir runs/tiny --max-steps 300 --num-workers 2
    ray job submit --working-dir . -- python -m pipelines.pretrain --config configs/gpu-124m.yaml

Pretraining is the first user of the shared training driver (pipelines/train/driver.py: one
``TorchTrainer`` with ``pretrain.num_workers`` workers, checkpoints under ``<run>/checkpoints/pretrain/``
that the same command resumes from, ``FailureConfig(max_failures)``); the task itself - batches from
the memory-mapped shards, the next-token loss, validation loss and bits per byte - is
pipelines/pretrain/task.py. This module does what needs the whole picture once: vocabulary and bytes
per token from the tokenizer, the unigram baseline, and at the end the export, the loss plot and the
report fragment.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.errors import ConfigError
from pipelines.pretrain.data import (
    TokenSplit,
    eval_targets,
    eval_windows,
    token_byte_lengths,
    unigram_entropy,
)
from pipelines.run_dir import RunDir
from pipelines.shorthands import TRAINING, Shorthand
from pipelines.train.curves import read_history, training_section
from pipelines.train.tracking import TrackingUnavailable, check_tracking_available

if TYPE_CHECKING:  # torch: imported only when a stage runs, not when the CLI reads a config
    from pipelines.config import RunConfig
    from pipelines.pretrain.task import PretrainTask

log = logging.getLogger("raychat.pretrain")
# the numbers the console shows when the stage ends (pipelines/console.py)
HEADLINE = ("steps", "val_loss", "val_bpb", "tokens_per_s")
# the stage's interface (pipelines/stages.py); ``name`` (default "pretrain") is also Ray Train's run
# name: checkpoints live in <run>/checkpoints/<name>
__all__ = ["report_section", "run", "start_over"]


def summary_line(n: dict[str, Any]) -> str:
    unigram = n.get("unigram_entropy")
    versus = f" (a unigram model: {unigram:.2f})" if isinstance(unigram, float) else ""
    return (
        f"{n['params']:,}-parameter base model, {n['steps']:,} steps: validation loss "
        f"{n['val_loss']:.2f}{versus}, {n['val_bpb']:.3f} bits per byte"
    )


def prepare(cfg: RunConfig, name: str = "pretrain") -> tuple[PretrainTask, Any, dict[str, Any]]:
    """Everything the workers need, resolved and checked before any of them starts.

    Returns (the PretrainTask, the tokenizer, facts about the data). Config and data problems raise
    ConfigError.
    """
    from lm.tokenizer import TokenizerError, load_tokenizer
    from pipelines.pretrain.task import PretrainTask
    from pipelines.tokenize.shards import TokenShardError, read_index

    p = getattr(cfg, name)
    run = RunDir(Path(cfg.run_dir).resolve())  # Ray workers change directory: hand them absolute paths
    try:
        index = read_index(run.tokens)
        tokenizer = load_tokenizer((run.tokens / index.tokenizer).resolve())  # errors name a plain path
        model_config = p.model.build(index.vocab_size, p.seq_len)
        check_tracking_available(p.tracking)
    except (TokenShardError, TokenizerError, TrackingUnavailable, ValueError) as e:
        raise ConfigError(f"pretrain: {e}") from None
    for split in ("train", "val"):
        if split not in index.splits or index.splits[split].tokens == 0:
            raise ConfigError(f"pretrain: {run.tokens} has no {split} tokens; rerun the tokenize stage")
    train, val = TokenSplit.open(run.tokens, "train"), TokenSplit.open(run.tokens, "val")
    windows = (train.num_tokens - 1) // p.seq_len
    if windows < p.sequences_per_step:
        raise ConfigError(
            f"pretrain: the train split has {train.num_tokens:,} tokens ({windows} sequences of {p.seq_len}), "
            f"fewer than one step's {p.sequences_per_step}; lower pretrain.global_batch_tokens or seq_len"
        )
    try:
        n_eval = eval_windows(val, p.seq_len, p.eval_tokens)
    except ValueError as e:
        raise ConfigError(f"pretrain: {e}") from None
    task = PretrainTask(
        pretrain=p,
        model_config=model_config,
        tokens_dir=str(run.tokens),
        seed=p.seed if p.seed is not None else cfg.seed,
        eval_windows=n_eval,
        epoch_sequences=windows,
        token_bytes=token_byte_lengths(tokenizer, model_config.vocab_size),
        fingerprint=data_fingerprint(run.tokens, run.tokens / index.tokenizer),
    )
    facts = {
        "train_tokens": train.num_tokens,
        "epoch_sequences": windows,
        "unigram_entropy": unigram_entropy(eval_targets(val, p.seq_len, n_eval), model_config.vocab_size),
    }
    return task, tokenizer, facts


def preflight(cfg: RunConfig, name: str = "pretrain") -> None:
    """The token shards, tokenizer and settings, before Ray starts (pipelines/runner.py): a run dir
    without tokens is one line, and no run dir is left behind for a mistyped one."""
    prepare(cfg, name)


def data_fingerprint(tokens_dir: Path, tokenizer_dir: Path) -> str:
    """Which token shards and tokenizer a checkpoint was trained on (index.json names every shard with
    its token and document counts; the tokenizer's ranks and specials fix what the ids mean)."""
    h = hashlib.sha256((tokens_dir / "index.json").read_bytes())
    for path in sorted(p for p in tokenizer_dir.iterdir() if p.is_file()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def start_over(cfg: RunConfig, name: str = "pretrain") -> None:
    """``--force``: the next run trains from step 0 (the old checkpoints are set aside, not deleted)."""
    from pipelines.train.driver import set_aside

    set_aside(RunDir(Path(cfg.run_dir).resolve()), name, "--force")


def report_section(run: RunDir, name: str = "pretrain") -> str:
    return training_section(run, name, "pretraining")


def run(cfg: RunConfig, name: str = "pretrain") -> dict[str, Any]:
    from lm.checkpoint import save_pretrained
    from pipelines.train.driver import fit, load_trained
    from pipelines.train.loop import FitSpec

    task, tokenizer, facts = prepare(cfg, name)
    p, model_config = getattr(cfg, name), task.model_config
    run = RunDir(Path(cfg.run_dir).resolve())
    log.info(
        "pretrain: %s parameters (%s), %d steps of %s tokens on %d %s worker(s), %s, grad accumulation %d",
        f"{model_config.num_params():,}", _describe(model_config), task.total_steps,
        f"{p.global_batch_tokens:,}", p.num_workers, "GPU" if p.use_gpu else "CPU", p.strategy, p.grad_accum_steps,
    )  # fmt: skip
    result = fit(FitSpec(stage=name, run_dir=str(run.root), config=p, task=task), cfg.ray)
    outcome = result.return_value or {}

    with result.checkpoint.as_directory() as d:
        model, meta = load_trained(Path(d), task.empty_model())
    out_dir = save_pretrained(
        model,
        run.model(p.output_name),
        tokenizer=tokenizer,
        meta={
            "stage": name,
            "step": meta["step"],
            "tokens_seen": meta["tokens_seen"],
            "source_run": str(run.root),
            "val_loss": meta["last"].get("val_loss"),
            "val_bpb": meta["last"].get("val_bpb"),
        },
    )

    train_history, _ = read_history(run.metrics_log(name))
    mfus = [r["mfu"] for r in train_history[1:] if "mfu" in r]
    numbers = {
        "params": model_config.num_params(),
        "steps": meta["step"],
        "tokens": meta["tokens_seen"],
        "epochs": meta["samples_seen"] / facts["epoch_sequences"],
        "final_train_loss": meta["last"].get("loss"),
        "val_loss": meta["last"].get("val_loss"),
        "val_bpb": meta["last"].get("val_bpb"),
        "unigram_entropy": facts["unigram_entropy"],
        "tokens_per_s": outcome.get("tokens_per_s", meta.get("tokens_per_s")),
        "mfu": float(np.mean(mfus)) if mfus else None,
        "world_size": outcome.get("world_size", p.num_workers),
        "device": outcome.get("device"),
        "model_dir": str(out_dir),
        "checkpoint": str(result.checkpoint.path),
    }
    log.info(
        "pretrain: done: step %d, val loss %.4f (unigram entropy %.4f), %.4f bits/byte -> %s",
        numbers["steps"], numbers["val_loss"], numbers["unigram_entropy"], numbers["val_bpb"], out_dir,
    )  # fmt: skip
    return numbers


def _describe(c) -> str:
    return (
        f"{c.num_layers} layers x {c.hidden_size}, {c.num_heads} heads / {c.num_kv_heads} kv, "
        f"vocab {c.vocab_size:,}"
    )


SHORTHANDS = (  # pipelines/shorthands.py
    *(s for s in TRAINING if s.key in ("max_steps", "num_workers", "use_gpu")),
    Shorthand("--depth", "model.depth", "the model size dial", int),
    Shorthand("--strategy", "strategy", "data parallel (ddp) or sharded (fsdp)", choices=("ddp", "fsdp")),
    Shorthand("--compile", "compile", "torch.compile the model", switch=True),
    Shorthand(
        "--tracking", "tracking", "metrics to TensorBoard or W&B", choices=("none", "tensorboard", "wandb")
    ),
)
