"""Tokens/s of the pretrain stage's 1-worker Ray Train loop against a plain single-process torch loop.

    .venv/bin/python benchmarks/train_overhead.py            # 60 timed steps per side, a few minutes
    .venv/bin/python benchmarks/train_overhead.py --quick    # 25 timed steps per side
    .venv/bin/python benchmarks/train_overhead.py --threads 2 --depth 4

Ours: ``pipelines.pretrain.job.run`` - a ``TorchTrainer`` with one worker (``{"CPU": threads}``, so
torch uses ``threads`` threads) running the real ``train_loop_per_worker``: batches read from
memory-mapped shards, the step, a JSONL record and a progress line per step. Its rate is taken from
the per-step wall-clock timestamps of metrics/pretrain.jsonl over the steady-state steps, so Ray's
start-up, the worker's model build, the first (warm-up) steps, the final validation, checkpoint and
export are all excluded - what is compared is the cost of a training step inside Ray Train.
Baseline: a plain loop in this process with ``torch.set_num_threads(threads)``: the same model, the
same AdamW/clipping, the same batch shape and gradient accumulation, random byte ids from memory.
Both sides skip the same warm-up steps. On a shared machine the wall-clock rate drifts with other
people's load, so the baseline runs before and after ours and its mean is used, and the summary also
gives the ratio of tokens per CPU-second of the training process (all its threads, Ray's included),
which that load barely moves. The last line is the JSON summary; target ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TARGET = 0.9


def make_run(root: Path, tokens: int, vocab: int, seed: int = 0) -> None:
    """A run directory with a byte-level tokenizer and random token shards (the content is irrelevant)."""
    from lm.tokenizer import Tokenizer, split_pattern
    from pipelines.tokenize.shards import ShardWriter, TokenIndex, write_index

    tok = Tokenizer.from_ranks("bytes", split_pattern("cl100k"), {bytes([b]): b for b in range(256)})
    tok.save(root / "tokenizer", hf=False)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", tokens), ("val", 20_000)):
        writer = ShardWriter(root / "tokens", split, "uint16", 1_000_000, tok.eot_id)
        writer.write(rng.integers(0, vocab, size=n))
        splits[split] = writer.close()
    index = TokenIndex(
        dtype="uint16", vocab_size=tok.vocab_size, eot_id=tok.eot_id, tokenizer="../tokenizer", splits=splits
    )
    write_index(root / "tokens", index)


def settings(args: argparse.Namespace, root: Path) -> list[str]:
    return [
        f"run_dir={json.dumps(str(root))}",
        f"pretrain.model.depth={args.depth}",
        f"pretrain.model.vocab_size={args.vocab}",
        f"pretrain.seq_len={args.seq_len}",
        f"pretrain.global_batch_tokens={args.batch_tokens}",
        f"pretrain.micro_batch_size={args.micro_batch}",
        f"pretrain.max_steps={args.warmup + args.steps}",
        f"pretrain.eval_every={args.warmup + args.steps}",
        f"pretrain.checkpoint_every={args.warmup + args.steps}",
        "pretrain.eval_tokens=2048",
        f"pretrain.resources_per_worker={{CPU: {args.threads}}}",
    ]


def ours(args: argparse.Namespace, root: Path) -> tuple[float, float]:
    """Steady-state tokens/s of the Ray Train loop, wall-clock and per CPU-second of the worker process."""
    from pipelines.config import load_config
    from pipelines.pretrain import job
    from pipelines.train.curves import read_history

    cfg = load_config(None, settings(args, root))
    job.run(cfg)
    history, _ = read_history(root / "metrics" / "pretrain.jsonl")
    # record k is written right after step k, so steps warmup+1 .. warmup+steps-1 lie between these two
    # (the last step, which also runs the final validation, is left out)
    first, last = history[args.warmup - 1], history[args.warmup + args.steps - 2]
    tokens = (last["step"] - first["step"]) * args.batch_tokens
    return tokens / (last["time"] - first["time"]), tokens / (last["process_cpu_s"] - first["process_cpu_s"])


def baseline(args: argparse.Namespace) -> tuple[float, float]:
    """The same model and step, written as the few lines anyone would write without Ray."""
    from lm.model import ModelConfig, Transformer

    torch.set_num_threads(args.threads)
    config = ModelConfig.from_depth(args.depth, args.vocab, max_seq_len=args.seq_len)
    model = Transformer(config)
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)
    accum = args.batch_tokens // (args.micro_batch * args.seq_len)

    def step() -> float:
        total = 0.0
        for _ in range(accum):
            rows = torch.from_numpy(rng.integers(0, 256, size=(args.micro_batch, args.seq_len + 1)))
            logits = model(rows[:, :-1])
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), rows[:, 1:].reshape(-1))
            (loss / accum).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(total / accum)

    for _ in range(args.warmup):
        step()
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(args.steps - 1):  # the same number of timed steps as ours
        step()
    tokens = (args.steps - 1) * args.batch_tokens
    return tokens / (time.perf_counter() - started), tokens / (time.process_time() - cpu_started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first, on both sides")
    p.add_argument("--threads", type=int, default=1, help="torch threads (and the worker's CPUs)")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="25 timed steps per side")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = 25
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from pipelines.runtime import setup_logging

    setup_logging()
    with tempfile.TemporaryDirectory(prefix="raychat-train-overhead-") as tmp:
        root = Path(tmp)
        make_run(root, tokens=(args.warmup + args.steps) * args.batch_tokens * 2, vocab=256)
        # address="local": a cluster of our own even when someone ran `ray start` on this machine
        ray.init(
            address="local",
            num_cpus=max(2, args.threads),
            object_store_memory=300 * 1024 * 1024,
            include_dashboard=False,
        )
        try:
            before = baseline(args)
            print(
                f"plain loop (before): {before[0]:,.0f} tokens/s, {before[1]:,.0f} per CPU-second", flush=True
            )
            ray_rate = ours(args, root)
            print(
                f"Ray Train, 1 worker: {ray_rate[0]:,.0f} tokens/s, {ray_rate[1]:,.0f} per CPU-second "
                "(steady state, Ray start-up excluded)",
                flush=True,
            )
            after = baseline(args)
            print(
                f"plain loop (after):  {after[0]:,.0f} tokens/s, {after[1]:,.0f} per CPU-second", flush=True
            )
        finally:
            ray.shutdown()
    base = [(b + a) / 2 for b, a in zip(before, after, strict=True)]
    print(
        json.dumps(
            {
                "benchmark": "train_overhead",
                "unit": "tokens/s (steady-state training steps, Ray start-up excluded)",
                "ours": ray_rate[0],
                "baseline": base[0],
                "baseline_name": "plain single-process torch loop, same model/batch/steps/threads",
                "ratio": ray_rate[0] / base[0],
                "target": TARGET,
                "ratio_per_cpu_second": ray_rate[1] / base[1],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
