"""Pretraining on Ray Train: the token shards become the base model, ``<run>/models/base``.

    python -m pipelines.pretrain --config configs/tiny.yaml
    raychat pretrain --run-dir runs/tiny --max-steps 300 --num-workers 2
    ray job submit --working-dir . -- python -m pipelines.pretrain --config configs/gpu-124m.yaml

The topology, in one place: one ``TorchTrainer`` with ``pretrain.num_workers`` workers (each
``pretrain.resources_per_worker``, CPU+gloo or GPU+NCCL), every worker running
``loop.train_loop_per_worker`` on its own slice of the memory-mapped shards. Checkpoints go to
``<run>/checkpoints/pretrain/`` (Ray Train's storage), so running the same command again resumes from
the latest one, and ``FailureConfig(max_failures)`` restarts a failed worker group from it by itself.
The driver does what needs the whole picture once: vocabulary and bytes per token from the tokenizer,
the unigram baseline, and at the end the export, the loss plot and the report fragment.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import ConfigError, RunConfig
from pipelines.pretrain.curves import markdown, plot_losses, read_history
from pipelines.pretrain.data import (
    TokenSplit,
    eval_targets,
    eval_windows,
    token_byte_lengths,
    unigram_entropy,
)
from pipelines.pretrain.loop import META_FILE, STAGE, LoopSettings, read_meta, train_loop_per_worker
from pipelines.pretrain.tracking import TrackingUnavailable, check_tracking_available
from pipelines.runtime import RunDir, init_ray

log = logging.getLogger("raychat.pretrain")
TRAIN_RUN_NAME = "pretrain"  # Ray Train's run name: checkpoints live in <run>/checkpoints/pretrain


def prepare(cfg: RunConfig) -> tuple[LoopSettings, Any, dict[str, Any]]:
    """Everything the workers need, resolved and checked before any of them starts.

    Returns (settings, tokenizer, facts about the data). Config and data problems raise ConfigError.
    """
    from lm.tokenizer import TokenizerError, load_tokenizer
    from pipelines.tokenize.shards import TokenShardError, read_index

    p = cfg.pretrain
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
    settings = LoopSettings(
        pretrain=p,
        model_config=model_config,
        run_dir=str(run.root),
        seed=p.seed if p.seed is not None else cfg.seed,
        total_steps=p.total_steps,
        eval_windows=n_eval,
        token_bytes=token_byte_lengths(tokenizer, model_config.vocab_size),
        data_fingerprint=data_fingerprint(run.tokens, run.tokens / index.tokenizer),
    )
    facts = {
        "train_tokens": train.num_tokens,
        "epoch_sequences": windows,
        "unigram_entropy": unigram_entropy(eval_targets(val, p.seq_len, n_eval), model_config.vocab_size),
    }
    return settings, tokenizer, facts


def data_fingerprint(tokens_dir: Path, tokenizer_dir: Path) -> str:
    """Which token shards and tokenizer a checkpoint was trained on (index.json names every shard with
    its token and document counts; the tokenizer's ranks and specials fix what the ids mean)."""
    h = hashlib.sha256((tokens_dir / "index.json").read_bytes())
    for path in sorted(p for p in tokenizer_dir.iterdir() if p.is_file()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def start_over(cfg: RunConfig) -> None:
    """``--force``: the next run trains from step 0 (the old checkpoints are set aside, not deleted)."""
    _set_aside(RunDir(Path(cfg.run_dir).resolve()), "--force")


def set_aside_stale_checkpoints(run: RunDir, fingerprint: str) -> Path | None:
    """Move away checkpoints of other data, so that redoing tokenize (or clean) retrains from scratch.

    Ray Train resumes from whatever its storage holds; weights trained on the old shards would be
    continued on, or exported with, a tokenizer they never saw. They are renamed, not deleted.
    """
    metas = sorted((run.checkpoints / TRAIN_RUN_NAME).glob(f"checkpoint_*/{META_FILE}"))
    if not metas:
        return None
    seen = read_meta(metas[-1].parent).get("data_fingerprint")
    if seen is None or seen == fingerprint:
        return None
    return _set_aside(run, "the token shards changed since they were written")


def _set_aside(run: RunDir, why: str) -> Path | None:
    """Rename Ray Train's storage of this run (checkpoints and its own state) so training starts anew."""
    root = run.checkpoints / TRAIN_RUN_NAME
    if not root.is_dir():
        return None
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    aside = run.checkpoints / f"{TRAIN_RUN_NAME}.stale-{stamp}"
    root.rename(aside)
    log.warning("pretrain: %s: moved the checkpoints in %s to %s; training from step 0", why, root, aside)
    return aside


def run(cfg: RunConfig) -> dict[str, Any]:
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as TrainRunConfig
    from ray.train.torch import TorchTrainer

    settings, tokenizer, facts = prepare(cfg)
    p, model_config = settings.pretrain, settings.model_config
    run = RunDir(settings.run_dir)
    log.info(
        "pretrain: %s parameters (%s), %d steps of %s tokens on %d %s worker(s), %s, grad accumulation %d",
        f"{model_config.num_params():,}", _describe(model_config), settings.total_steps,
        f"{p.global_batch_tokens:,}", p.num_workers, "GPU" if p.use_gpu else "CPU", p.strategy, p.grad_accum_steps,
    )  # fmt: skip
    set_aside_stale_checkpoints(run, settings.data_fingerprint)
    init_ray(cfg.ray)
    warn_if_cluster_too_small(p)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"settings": settings},
        scaling_config=ScalingConfig(
            num_workers=p.num_workers, use_gpu=p.use_gpu, resources_per_worker=p.resources_per_worker
        ),
        run_config=TrainRunConfig(
            name=TRAIN_RUN_NAME,
            storage_path=str(run.checkpoints),
            checkpoint_config=CheckpointConfig(num_to_keep=p.keep_checkpoints),
            failure_config=FailureConfig(max_failures=p.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"pretrain: training ended without a checkpoint under {run.checkpoints}")
    outcome = result.return_value or {}

    with result.checkpoint.as_directory() as d:
        model, meta = load_checkpoint_model(Path(d), model_config)
    from lm.checkpoint import save_pretrained

    out_dir = save_pretrained(
        model,
        run.model(p.output_name),
        tokenizer=tokenizer,
        meta={
            "stage": STAGE,
            "step": meta["step"],
            "tokens_seen": meta["tokens_seen"],
            "source_run": str(run.root),
            "val_loss": meta["last"].get("val_loss"),
            "val_bpb": meta["last"].get("val_bpb"),
        },
    )

    train_history, evals = read_history(run.metrics / f"{STAGE}.jsonl")
    plot_losses(train_history, evals, run.plots / f"{STAGE}_loss.png", facts["unigram_entropy"])
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
    run.metrics.mkdir(parents=True, exist_ok=True)
    (run.metrics / f"{STAGE}.md").write_text(markdown(numbers, evals))
    log.info(
        "pretrain: done: step %d, val loss %.4f (unigram entropy %.4f), %.4f bits/byte -> %s",
        numbers["steps"], numbers["val_loss"], numbers["unigram_entropy"], numbers["val_bpb"], out_dir,
    )  # fmt: skip
    return numbers


def warn_if_cluster_too_small(p) -> None:
    """Ray Train waits (silently, to a newcomer) for resources the cluster does not have; say so up front.

    Only a warning: on an autoscaling cluster the nodes may be on their way.
    """
    import ray

    per_worker = dict(p.resources_per_worker or ({"GPU": 1} if p.use_gpu else {"CPU": 1}))  # Ray's defaults
    available = ray.cluster_resources()
    for name, amount in per_worker.items():
        need, have = amount * p.num_workers, available.get(name, 0)
        if need > have:
            log.warning(
                "pretrain: %d workers x %s %s = %s, but the cluster has %s %s now; training waits until "
                "an autoscaler adds them (lower pretrain.num_workers or resources_per_worker otherwise)",
                p.num_workers, amount, name, need, have, name,
            )  # fmt: skip


def load_checkpoint_model(directory: Path, model_config):
    """The Transformer (CPU, float32) and meta.json of a checkpoint directory written by the loop."""
    from lm.model import Transformer
    from pipelines.pretrain.loop import read_meta
    from pipelines.pretrain.trainer import PretrainTrainer

    meta = read_meta(directory)
    state = PretrainTrainer.read(directory)["model"]
    model = Transformer(model_config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied_only = set(missing) <= ({"lm_head.weight"} if model_config.tie_embeddings else set())
    if not tied_only or unexpected:
        raise RuntimeError(
            f"checkpoint {directory} does not fit the model: missing {missing}, unexpected {unexpected}"
        )
    return model, meta


def _describe(c) -> str:
    return (
        f"{c.num_layers} layers x {c.hidden_size}, {c.num_heads} heads / {c.num_kv_heads} kv, "
        f"vocab {c.vocab_size:,}"
    )


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("pretrain shorthands (each is a --set pretrain.<key>=...)")
    g.add_argument("--max-steps", type=int, help="pretrain.max_steps")
    g.add_argument("--num-workers", type=int, help="pretrain.num_workers")
    g.add_argument("--depth", type=int, help="pretrain.model.depth (the model size dial)")
    g.add_argument("--strategy", choices=["ddp", "fsdp"], help="pretrain.strategy")
    g.add_argument("--gpu", action="store_true", default=None, help="pretrain.use_gpu=true")
    g.add_argument("--compile", action="store_true", default=None, help="pretrain.compile=true")
    g.add_argument("--tracking", choices=["none", "tensorboard", "wandb"], help="pretrain.tracking")


_SHORTHANDS = {
    "max_steps": "pretrain.max_steps",
    "num_workers": "pretrain.num_workers",
    "depth": "pretrain.model.depth",
    "strategy": "pretrain.strategy",
    "gpu": "pretrain.use_gpu",
    "compile": "pretrain.compile",
    "tracking": "pretrain.tracking",
}


def cli_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for attr, key in _SHORTHANDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return out
