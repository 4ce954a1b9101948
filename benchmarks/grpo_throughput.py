"""Samples/s of asynchronous GRPO (staleness 1 and 4) against the synchronous algorithm (staleness 0),
with the same resources, model, prompts and settings.

    python benchmarks/grpo_throughput.py                          # CPU: 1 generator + 1 learner rank
    python benchmarks/grpo_throughput.py --model runs/x/models/sft --steps 8 --repeats 3
    python benchmarks/grpo_throughput.py --gpu --model DIR --generators 2 --learners 1   # a GPU machine
    python benchmarks/grpo_throughput.py --quick                  # a smoke run, not a number to quote

Each side is one real ``raychat grpo`` run (pipelines/grpo/job.py) in one Ray session, differing only in
``grpo.max_staleness``: 0 is the synchronous algorithm (the generators wait while the learner trains,
the learner waits for the whole batch), 1 and 4 let the generators run that many policy versions
ahead. Rates come from the per-step records of metrics/grpo.jsonl over the steps after
``--warmup-steps``: trained samples per wall second and per CPU second of every process of the
topology (generators, learner, reward worker, reference) and the driver, so Ray's start, the actors'
model loading, the held-out evaluations and the export are outside the window on every side alike.
The sides alternate order each repetition (benchmarks/harness.py ``interleave``); the headline is the
median of ``--repeats``, with the range. Outputs compared: every run must train exactly
steps x prompts x G samples, each prompt once, within its staleness bound (from the sample records),
or the JSON says ``"ok": false``.

Prompts are real: GSM8K training questions from ``shared/data/gsm8k``. The model is ``--model`` (an SFT
model answers and stops, so lengths vary as in real RL, which is where a synchronous batch waits for
its longest sample), or a fresh random model with GPT-2's tokenizer (every completion runs to
``--max-new-tokens``). The published anchors, on large clusters: AReaL 2.77x and verl 2.35x over
synchronous; on a 2-core CPU the most an overlap of one generator and one learner can give is 2x.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import SHARED, fail, finish, interleave, load_average, spread  # noqa: E402

BENCHMARK = "grpo_throughput"
UNIT = "trained samples/s"
BASELINE = "synchronous GRPO (max_staleness 0), same pools and model"
TARGET = 1.0  # on CPU the figure is what it is; the anchors are in the JSON


def random_model(root: Path, depth: int) -> Path:
    """A fresh model with GPT-2's tokenizer (real vocabulary, random weights)."""
    from lm.checkpoint import save_pretrained
    from lm.model import ModelConfig
    from lm.tokenizer import load_tokenizer
    from lm.train.models import fresh_model

    tok = load_tokenizer(f"gpt2:{SHARED / 'tokenizers' / 'gpt2'}")
    model = fresh_model(ModelConfig.from_depth(depth, tok.vocab_size, max_seq_len=512), seed=0)
    return save_pretrained(model, root / "random", tokenizer=tok)


def settings(args: argparse.Namespace, model: Path, staleness: int, run_dir: Path) -> list[str]:
    gpu = 1 if args.gpu else 0
    grpo = {
        "init": str(model),
        "tools": [] if args.no_tools else ["calculator"],
        "data": {
            "source": "jsonl",
            "train_path": str(SHARED / "gsm8k" / "train.jsonl"),
            "heldout_from_train": 8,
            "max_prompt_tokens": 256,
        },
        "rewards": {"rules": [{"name": "gsm8k_accuracy"}]},
        "steps": args.warmup_steps + args.steps,
        "prompts_per_step": args.prompts,
        "group_size": args.group,
        "max_new_tokens": args.max_new_tokens,
        "max_staleness": staleness,
        "generators": {
            "num": args.generators,
            "num_cpus": args.cpus_per_side / args.generators if not gpu else 4,
            "num_gpus": gpu,
            "max_batch_size": max(args.group * 8, 64),
            "prompts_in_flight": max(2, args.prompts // args.generators),
        },
        "learner": {
            "num_workers": args.learners,
            "num_cpus": args.cpus_per_side / args.learners if not gpu else 4,
            "num_gpus": gpu,
        },
        "reward_pool": {"num_workers": 1, "num_cpus": 0.01 if not gpu else 1},
        "reference": {"enabled": "off"},
        "eval": {"problems": 1},
        "checkpoint_every": 10_000,
    }
    return [f"run_dir={json.dumps(str(run_dir))}"] + [f"grpo.{k}={json.dumps(v)}" for k, v in grpo.items()]


def one_run(args: argparse.Namespace, model: Path, staleness: int, scratch: Path) -> dict:
    from pipelines.config import load_config
    from pipelines.grpo.job import run
    from pipelines.grpo.report import read_metrics

    run_dir = Path(tempfile.mkdtemp(prefix=f"s{staleness}-", dir=scratch))
    run(load_config(None, settings(args, model, staleness, run_dir)))
    rows = read_metrics(run_dir / "metrics" / "grpo.jsonl")
    w = args.warmup_steps
    first, last = rows[w - 1], rows[-1]
    samples = args.prompts * args.group * (len(rows) - w)
    records = [json.loads(x) for x in (run_dir / "metrics" / "grpo_samples.jsonl").read_text().splitlines()]
    trained = [r for r in records if r.get("status") == "trained"]
    positions = {r["position"] for r in trained}
    ok = (
        len(trained) == len(rows) * args.prompts * args.group
        and len(positions) == len(rows) * args.prompts
        and all(r["staleness"] <= staleness for r in trained)
    )
    return {
        "per_s": samples / (last["time_s"] - first["time_s"]),
        "per_cpu_s": samples / max(1e-9, last["cpu_s"] - first["cpu_s"]),
        "idle_generators": mean(r["idle_generators"] for r in rows[w:]),
        "idle_learner": mean(r["idle_learner"] for r in rows[w:]),
        "ok": ok,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a model directory (default: a random model with GPT-2's tokenizer)")
    p.add_argument("--depth", type=int, default=2, help="the random model's depth")
    p.add_argument("--steps", type=int, default=8, help="timed learner steps per run")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--staleness", type=int, nargs="+", default=[1, 4], help="the asynchronous sides")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="G")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--generators", type=int, default=1)
    p.add_argument("--learners", type=int, default=1)
    p.add_argument(
        "--cpus-per-side", type=float, default=0.9, help="CPU: CPUs of the generators / the learner"
    )
    p.add_argument("--gpu", action="store_true", help="generators and learner ranks on their own GPUs")
    p.add_argument("--no-tools", action="store_true")
    p.add_argument("--num-cpus", type=int, default=None, help="the local Ray's CPUs")
    p.add_argument("--quick", action="store_true", help="2 + 1 steps, 1 repeat: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.steps, args.warmup_steps, args.repeats, args.max_new_tokens = 2, 1, 1, 32
    import ray

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    scratch = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    model = Path(args.model).resolve() if args.model else random_model(scratch, args.depth)
    sides = {f"staleness_{k}": (lambda k=k: one_run(args, model, k, scratch)) for k in [0, *args.staleness]}
    try:
        results = interleave(sides, warmup=0, repeats=args.repeats)
    except Exception as e:  # noqa: BLE001 - a crashed side is ok=false, with the reason
        fail(BENCHMARK, UNIT, BASELINE, TARGET, e)
    finally:
        ray.shutdown()
    table = {}
    print(
        f"{'side':<14} {'samples/s (median, range)':>28} {'per CPU-s':>12} {'idle gen':>9} {'idle learner':>13}"
    )
    for name, runs in results.items():
        rate, rng = spread([r["per_s"] for r in runs])
        cpu_rate, cpu_rng = spread([r["per_cpu_s"] for r in runs])
        table[name] = {
            "per_s": rate,
            "per_s_range": rng,
            "per_cpu_s": cpu_rate,
            "per_cpu_s_range": cpu_rng,
            "idle_generators": mean(r["idle_generators"] for r in runs),
            "idle_learner": mean(r["idle_learner"] for r in runs),
            "ok": all(r["ok"] for r in runs),
        }
        t = table[name]
        print(
            f"{name:<14} {rate:>10.2f} ({rng[0]:.2f}-{rng[1]:.2f}) {cpu_rate:>12.2f} "
            f"{t['idle_generators']:>9.0%} {t['idle_learner']:>13.0%}"
        )
    sync = table["staleness_0"]
    ours_key = f"staleness_{args.staleness[0]}"
    ratios = {name: t["per_s"] / sync["per_s"] for name, t in table.items() if name != "staleness_0"}
    for name, r in ratios.items():
        print(
            f"{name} / synchronous: {r:.2f}x (per CPU-second {table[name]['per_cpu_s'] / sync['per_cpu_s']:.2f}x)"
        )
    ours = table[ours_key]
    finish(
        {
            "benchmark": BENCHMARK,
            "unit": UNIT,
            "ours": ours["per_s"],
            "baseline": sync["per_s"],
            "baseline_name": BASELINE,
            "ratio": ratios[ours_key],
            "target": TARGET,
            "met": ratios[ours_key] >= TARGET,
            "ok": all(t["ok"] for t in table.values()),
            "ours_range": ours["per_s_range"],
            "baseline_range": sync["per_s_range"],
            "statistic": f"median of {args.repeats}, {args.steps} steps after {args.warmup_steps} warm-up steps",
            "ratios": ratios,
            "ratios_per_cpu_s": {n: table[n]["per_cpu_s"] / sync["per_cpu_s"] for n in ratios},
            "sides": table,
            "published": {"AReaL": 2.77, "verl": 2.35},
            "device": "gpu" if args.gpu else "cpu",
            "model": str(model),
            "load_avg": load_average(),
        }
    )


if __name__ == "__main__":
    main()
