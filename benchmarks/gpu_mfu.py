"""MFU of pretraining a ~124M and a ~500M parameter model in bf16 on one GPU (one prepared script).

    python benchmarks/gpu_mfu.py                    # both sizes, 150 measured steps each, ~6-8 min on an H100/H200
    python benchmarks/gpu_mfu.py --quick            # 40 measured steps each
    python benchmarks/gpu_mfu.py --sizes 124M --steps 300 --micro-batch 16
    python benchmarks/gpu_mfu.py --tokens runs/x/tokens   # real token shards instead of random ids
    python benchmarks/gpu_mfu.py --dry-run          # no GPU: the plan, parameter counts, FLOPs per token

Ours: ``Trainer.train_step`` with ``PretrainTask.loss`` (lm/train/trainer.py, pipelines/pretrain/task.py)
- the exact step the pretrain stage's Ray workers run (bf16 autocast, ``torch.compile``, fused AdamW
with the warmup/cosine schedule, the summed loss normalised by the step's target count, gradient
clipping, one host sync per step), here in one process, since the Ray overhead is what
benchmarks/train_overhead.py measures. Baseline: a minimal nanoGPT-style loop (compile, autocast,
fused AdamW on the same decay groups, the same warmup/cosine lr set by hand, per-micro-batch mean
loss, clip) on the same model, weights, batches and tokens.

Both sides alike: the same ``--warmup`` untimed steps (compilation, allocator warm-up), then
``--steps`` timed steps, each ending in a host sync (the loss as a float); the statistic is the median
step time (tokens/s = tokens per step / median, the range over steps printed). Outputs compared: the
first step's loss (same weights, same batch: equal up to reduction order) and the mean loss of the
last 10 steps; a mismatch sets ``"ok": false`` in the JSON and the exit status to 1.
MFU uses ``ModelConfig.flops_per_token`` (6 x matmul weights + attention, nanochat's formula) and the
device's dense bf16 peak from lm/train/mfu.py (``--peak-flops`` overrides). The bar (issue 3): 45% on
an H200; nanochat reports ~48% on H100s.

Sizes: "124M" is GPT-2 small's shape (depth 12, width 768, 12 heads, MHA, tied embeddings, GPT-2's
vocabulary padded to 50,304); "500M" is the depth-20 dial (width 1280, GQA 20/5, untied), ~476M;
"tiny" (depth 2) exists so that the measuring code itself can be tested on a CPU
(``--device cpu --peak-flops X``). The last line is the JSON summary: ours = MFU of the largest size
run, baseline = the plain loop's; a dry run prints the same keys with null where nothing was measured.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lm.model import ModelConfig  # noqa: E402
from lm.train.mfu import device_peak_flops  # noqa: E402

VOCAB = 50304  # GPT-2's 50,257 ids padded to a multiple of 64 (nanoGPT), so the head's matmul tiles
SIZES: dict[str, dict] = {
    "124M": {"depth": 12, "num_kv_heads": 12, "tie_embeddings": True},
    "500M": {"depth": 20},
    "tiny": {"depth": 2},  # for testing this script on a CPU only
}
DEFAULT_SIZES = ["124M", "500M"]
TARGET_MFU = 0.45
LR, WARMUP_STEPS, MIN_LR_RATIO, WEIGHT_DECAY, BETAS, GRAD_CLIP = 6e-4, 10, 0.1, 0.1, (0.9, 0.95), 1.0
FIRST_LOSS_RTOL = 2e-3  # same weights and batch; only the order of the reduction differs
FINAL_LOSS_RTOL = 3e-2  # after many bf16 steps the two runs drift apart by rounding


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
    """One step's micro-batches (``input_ids``/``targets``): random ids, or windows of real shards.

    Seeded, so both sides see the same sequence of batches.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = np.random.default_rng(0)
        self.split = None
        if args.tokens:
            from pipelines.pretrain.data import TokenSplit

            self.split = TokenSplit.open(args.tokens, "train")

    def micro_batches(self) -> list[dict[str, np.ndarray]]:
        a = self.args
        out = []
        for _ in range(a.grad_accum):
            if self.split is None:
                rows = self.rng.integers(0, 50257, size=(a.micro_batch, a.seq_len + 1), dtype=np.int64)
            else:
                starts = self.rng.integers(0, self.split.num_tokens - a.seq_len - 1, size=a.micro_batch)
                rows = np.stack([self.split.read(int(s), a.seq_len + 1) for s in starts])
            out.append({"input_ids": rows[:, :-1], "targets": rows[:, 1:]})
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, args: argparse.Namespace, device: torch.device) -> dict:
    """Run ``warmup`` untimed then ``steps`` timed steps; ``step(micro)`` returns the loss as a float."""
    batches = Batches(args)
    losses, seconds = [], []
    for i in range(args.warmup + args.steps):
        micro = batches.micro_batches()
        sync(device)
        started = time.perf_counter()
        losses.append(step(micro))
        sync(device)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - started)
    tokens = args.micro_batch * args.seq_len * args.grad_accum
    median = statistics.median(seconds)
    return {
        "tokens_per_s": tokens / median,
        "tokens_per_s_range": [tokens / max(seconds), tokens / min(seconds)],
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-10:])),
    }


def ours(config: ModelConfig, args: argparse.Namespace, device: torch.device) -> dict:
    from lm.train.config import StepConfig
    from lm.train.models import fresh_model
    from lm.train.trainer import Trainer
    from pipelines.pretrain.task import PretrainTask

    step_config = StepConfig(
        compile=not args.no_compile,
        lr=LR,
        min_lr_ratio=MIN_LR_RATIO,
        warmup_steps=WARMUP_STEPS,
        decay="cosine",
        weight_decay=WEIGHT_DECAY,
        betas=BETAS,
        grad_clip=GRAD_CLIP,
    )
    total = args.warmup + args.steps
    trainer = Trainer(fresh_model(config, 0), step_config, total_steps=total, device=device)
    return time_steps(lambda micro: trainer.train_step(micro, PretrainTask.loss)["loss"], args, device)


def plain_loop(config: ModelConfig, args: argparse.Namespace, device: torch.device) -> dict:
    """The baseline: what a from-scratch single-GPU script does (nanoGPT's train.py, minus DDP)."""
    from lm.model import Transformer
    from lm.train.optim import lr_factor

    model = Transformer(config).to(device)
    model.init_weights(0)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, fused=cuda or None)
    forward = model if args.no_compile else torch.compile(model)
    total = args.warmup + args.steps
    it = 0

    def step(micro: list[dict[str, np.ndarray]]) -> float:
        nonlocal it
        for group in optimizer.param_groups:
            group["lr"] = LR * lr_factor(it, WARMUP_STEPS, total, MIN_LR_RATIO, "cosine")
        loss_sum = torch.zeros((), device=device)
        for batch in micro:
            inputs = torch.from_numpy(np.ascontiguousarray(batch["input_ids"])).to(device, non_blocking=True)
            targets = torch.from_numpy(np.ascontiguousarray(batch["targets"])).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = forward(inputs)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))
            (loss / len(micro)).backward()
            loss_sum += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        it += 1
        return float(loss_sum / len(micro))

    return time_steps(step, args, device)


def compare(ours_run: dict, base_run: dict) -> list[str]:
    """Why the two loops' outputs differ (empty when they agree)."""
    problems = []
    for key, rtol in (("first_loss", FIRST_LOSS_RTOL), ("final_loss", FINAL_LOSS_RTOL)):
        a, b = ours_run[key], base_run[key]
        if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > rtol * abs(b):
            problems.append(f"{key}: ours {a:.5f} vs plain loop {b:.5f} (tolerance {rtol:.0e} relative)")
    return problems


def summary_json(results: list[dict], device_name: str | None, measured: bool, problems: list[str]) -> dict:
    last = results[-1] if results else {}
    ours_mfu, base_mfu = last.get("mfu"), last.get("baseline_mfu")
    return {
        "benchmark": "gpu_mfu",
        "unit": "MFU (model FLOPs / peak dense bf16)",
        "ours": ours_mfu,
        "baseline": base_mfu,
        "baseline_name": "plain single-GPU torch loop (nanoGPT-style: compile, bf16 autocast, fused AdamW, "
        "warmup/cosine lr, clip), same model, weights and batches",
        "ratio": ours_mfu / base_mfu if ours_mfu and base_mfu else None,
        "target": TARGET_MFU,
        "target_applies_to": "ours (absolute MFU; the bar on an H200)",
        "statistic": "median step time over the timed steps (same warm-up and steps on both sides)",
        "measured": measured,
        "ok": measured and not problems,
        "mismatch": problems,
        "device": device_name,
        "per_size": {
            r["name"]: {k: r.get(k) for k in ("mfu", "baseline_mfu", "tokens_per_s", "baseline_tokens_per_s")}
            for r in results
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, choices=list(SIZES))
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
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: only to test this script")
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
        print(json.dumps({**summary_json([], None, False, []), "dry_run": True, "sizes": rows}))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_mfu.py needs a CUDA GPU (torch.cuda.is_available() is False here); "
            "run it on a GPU machine, or use --dry-run to see the plan",
            file=sys.stderr,
        )
        return 2

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak, device_name = device_peak_flops(device.type, args.peak_flops)
    if peak is None:
        print(f"no peak FLOP/s known for {device_name!r}; pass --peak-flops", file=sys.stderr)
        return 2
    print(f"device: {device_name}, peak dense bf16 {peak / 1e12:.0f} TFLOP/s, torch {torch.__version__}")
    results, problems = [], []
    for r in rows:
        config = model_config(r["name"], args.seq_len)
        run = ours(config, args, device)
        row = {**r, **run, "mfu": r["flops_per_token"] * run["tokens_per_s"] / peak}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not args.no_baseline:
            base = plain_loop(config, args, device)
            row |= {
                "baseline_tokens_per_s": base["tokens_per_s"],
                "baseline_tokens_per_s_range": base["tokens_per_s_range"],
                "baseline_mfu": r["flops_per_token"] * base["tokens_per_s"] / peak,
                "baseline_first_loss": base["first_loss"],
                "baseline_final_loss": base["final_loss"],
            }
            problems += [f"{r['name']}: {m}" for m in compare(run, base)]
        if device.type == "cuda":
            row["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        results.append(row)
        lo, hi = row["tokens_per_s_range"]
        base_text = (
            f", plain loop {100 * row['baseline_mfu']:.1f}% ({row['baseline_tokens_per_s']:,.0f} tokens/s)"
            if "baseline_mfu" in row
            else ""
        )
        print(
            f"{r['name']} ({r['params'] / 1e6:.0f}M): MFU {100 * row['mfu']:.1f}%{base_text} | ours "
            f"{row['tokens_per_s']:,.0f} tokens/s (median; range {lo:,.0f}-{hi:,.0f}) | "
            f"peak memory {row.get('max_memory_gb', float('nan')):.1f} GiB | loss {row['first_loss']:.3f} -> "
            f"{row['final_loss']:.3f}",
            flush=True,
        )
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    print(json.dumps(summary_json(results, device_name, True, problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
