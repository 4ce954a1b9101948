"""MFU of pretraining a ~124M and a ~500M parameter model in bf16 on one GPU (one prepared script).

    python benchmarks/gpu_mfu.py                    # both sizes, 150 measured steps each, ~6-8 min on an H100/H200
    python benchmarks/gpu_mfu.py --quick            # 40 measured steps each
    python benchmarks/gpu_mfu.py --sizes 124M --steps 300 --micro-batch 16
    python benchmarks/gpu_mfu.py --tokens runs/x/tokens   # real token shards instead of random ids
    python benchmarks/gpu_mfu.py --dry-run          # no GPU: the plan, parameter counts, FLOPs per token

Ours: ``PretrainTrainer.train_step`` - the exact step the pretrain stage's Ray workers run (bf16
autocast, ``torch.compile``, fused AdamW, gradient clipping, one ``.item()`` per step), here in one
process, since the Ray overhead is what benchmarks/train_overhead.py measures. Baseline: a minimal
nanoGPT-style loop (compile, autocast, fused AdamW, clip) on the same model, batch and tokens. MFU
uses ``ModelConfig.flops_per_token`` (6 x matmul weights + attention, nanochat's formula) and the
device's dense bf16 peak from pipelines/pretrain/mfu.py (``--peak-flops`` overrides). The first
``--warmup`` steps (compilation, allocator warm-up) are not timed. The bar (issue 3): 45% on an H200;
nanochat reports ~48% on H100s.

Sizes: "124M" is GPT-2 small's shape (depth 12, width 768, 12 heads, MHA, tied embeddings, GPT-2's
vocabulary padded to 50,304); "500M" is the depth-20 dial (width 1280, GQA 20/5, untied), ~476M.
The last line is the JSON summary: ours = MFU of the largest size run, baseline = the plain loop's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lm.model import ModelConfig, Transformer  # noqa: E402
from pipelines.pretrain.mfu import device_peak_flops  # noqa: E402

VOCAB = 50304  # GPT-2's 50,257 ids padded to a multiple of 64 (nanoGPT), so the head's matmul tiles
SIZES: dict[str, dict] = {
    "124M": {"depth": 12, "num_kv_heads": 12, "tie_embeddings": True},
    "500M": {"depth": 20},
}
TARGET_MFU = 0.45


def model_config(name: str, seq_len: int) -> ModelConfig:
    spec = dict(SIZES[name])
    depth = spec.pop("depth")
    return ModelConfig.from_depth(depth, VOCAB, max_seq_len=seq_len, **spec)


def plan(args: argparse.Namespace) -> list[dict]:
    rows = []
    for name in args.sizes:
        config = model_config(name, args.seq_len)
        rows.append(
            {
                "name": name,
                "params": config.num_params(),
                "layers": config.num_layers,
                "hidden": config.hidden_size,
                "flops_per_token": config.flops_per_token(args.seq_len),
                "seq_len": args.seq_len,
                "micro_batch": args.micro_batch,
                "grad_accum": args.grad_accum,
                "tokens_per_step": args.micro_batch * args.seq_len * args.grad_accum,
                "steps": args.warmup + args.steps,
            }
        )
    return rows


class Batches:
    """(inputs, targets) micro-batches: random ids, or windows of real shards when --tokens is given."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = np.random.default_rng(0)
        self.split = None
        if args.tokens:
            from pipelines.pretrain.data import TokenSplit

            self.split = TokenSplit.open(args.tokens, "train")

    def micro_batches(self) -> list[tuple[np.ndarray, np.ndarray]]:
        a = self.args
        out = []
        for _ in range(a.grad_accum):
            if self.split is None:
                rows = self.rng.integers(0, 50257, size=(a.micro_batch, a.seq_len + 1), dtype=np.int64)
            else:
                starts = self.rng.integers(0, self.split.num_tokens - a.seq_len - 1, size=a.micro_batch)
                rows = np.stack([self.split.read(int(s), a.seq_len + 1) for s in starts])
            out.append((rows[:, :-1], rows[:, 1:]))
        return out


def time_steps(step, batches: Batches, warmup: int, steps: int) -> tuple[float, float]:
    """(tokens/s over the timed steps, last loss); ``step`` returns the loss as a float (a sync)."""
    loss = math.nan
    for _ in range(warmup):
        loss = step(batches.micro_batches())
    torch.cuda.synchronize()
    tokens = 0
    started = time.perf_counter()
    for _ in range(steps):
        micro = batches.micro_batches()
        loss = step(micro)
        tokens += sum(x.size for x, _ in micro)
    torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started), loss


def ours(config: ModelConfig, args: argparse.Namespace) -> tuple[float, float]:
    from pipelines.pretrain.trainer import PretrainTrainer

    trainer = PretrainTrainer(
        config,
        total_steps=args.warmup + args.steps,
        lr=6e-4,
        min_lr_ratio=0.1,
        warmup_steps=10,
        decay="cosine",
        weight_decay=0.1,
        betas=(0.9, 0.95),
        eps=1e-8,
        grad_clip=1.0,
        seed=0,
        device=torch.device("cuda"),
        compile=not args.no_compile,
    )
    return time_steps(lambda micro: trainer.train_step(micro)["loss"], Batches(args), args.warmup, args.steps)


def plain_loop(config: ModelConfig, args: argparse.Namespace) -> tuple[float, float]:
    """The baseline: what a from-scratch single-GPU script does (nanoGPT's train.py, minus DDP)."""
    model = Transformer(config).cuda()
    model.init_weights(0)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True
    )
    forward = model if args.no_compile else torch.compile(model)

    def step(micro: list[tuple[np.ndarray, np.ndarray]]) -> float:
        total = 0.0
        for x, y in micro:
            inputs = torch.from_numpy(np.ascontiguousarray(x)).cuda(non_blocking=True)
            targets = torch.from_numpy(np.ascontiguousarray(y)).cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = forward(inputs)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
            (loss / len(micro)).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(total / len(micro))

    return time_steps(step, Batches(args), args.warmup, args.steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--steps", type=int, default=150, help="timed optimizer steps per size and loop")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps first (compilation, allocator)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward")
    p.add_argument("--grad-accum", type=int, default=2, help="micro-batches per optimizer step")
    p.add_argument("--tokens", help="a tokens directory (pipelines/tokenize shards) instead of random ids")
    p.add_argument("--peak-flops", type=float, help="peak dense bf16 FLOP/s of the GPU (default: the table)")
    p.add_argument("--no-compile", action="store_true", help="eager mode (to see what torch.compile buys)")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain loop (halves the time)")
    p.add_argument("--quick", action="store_true", help="40 timed steps, 8 warm-up")
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan, parameter counts and FLOPs; no GPU"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 40, 8

    rows = plan(args)
    if args.dry_run:
        for r in rows:
            print(
                f"{r['name']}: {r['params'] / 1e6:.1f}M parameters, {r['layers']} layers x {r['hidden']}, "
                f"{r['flops_per_token'] / 1e9:.2f} GFLOP/token at seq {r['seq_len']}, "
                f"{r['tokens_per_step']:,} tokens/step x {r['steps']} steps"
            )
        print(json.dumps({"benchmark": "gpu_mfu", "dry_run": True, "sizes": rows}))
        return 0
    if not torch.cuda.is_available():
        print(
            "gpu_mfu.py needs a CUDA GPU (torch.cuda.is_available() is False here); "
            "run it on a GPU machine, or use --dry-run to see the plan",
            file=sys.stderr,
        )
        return 2

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    peak, device_name = device_peak_flops("cuda", args.peak_flops)
    if peak is None:
        print(f"no peak FLOP/s known for {device_name!r}; pass --peak-flops", file=sys.stderr)
        return 2
    print(f"device: {device_name}, peak dense bf16 {peak / 1e12:.0f} TFLOP/s, torch {torch.__version__}")
    results = []
    for r in rows:
        config = model_config(r["name"], args.seq_len)
        rate, loss = ours(config, args)
        row = {**r, "tokens_per_s": rate, "mfu": r["flops_per_token"] * rate / peak, "loss": loss}
        torch.cuda.empty_cache()
        if not args.no_baseline:
            base_rate, _ = plain_loop(config, args)
            row |= {
                "baseline_tokens_per_s": base_rate,
                "baseline_mfu": r["flops_per_token"] * base_rate / peak,
            }
            torch.cuda.empty_cache()
        row["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        results.append(row)
        base = f", plain loop {100 * row['baseline_mfu']:.1f}%" if "baseline_mfu" in row else ""
        print(
            f"{r['name']} ({r['params'] / 1e6:.0f}M): MFU {100 * row['mfu']:.1f}%{base} | "
            f"{rate:,.0f} tokens/s | peak memory {row['max_memory_gb']:.1f} GiB | loss {loss:.3f}",
            flush=True,
        )
    last = results[-1]
    summary = {
        "benchmark": "gpu_mfu",
        "unit": "MFU (model FLOPs / peak dense bf16)",
        "ours": last["mfu"],
        "baseline": last.get("baseline_mfu"),
        "baseline_name": "plain single-GPU torch loop (compile, bf16 autocast, fused AdamW), same model and batch",
        "ratio": last["mfu"] / last["baseline_mfu"] if last.get("baseline_mfu") else None,
        "target": TARGET_MFU,
        "target_applies_to": "ours (absolute MFU; the bar on an H200)",
        "device": device_name,
        "per_size": {r["name"]: {"mfu": r["mfu"], "baseline_mfu": r.get("baseline_mfu")} for r in results},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
