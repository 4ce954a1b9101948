"""Generated tokens/s of TorchEngine against Hugging Face ``generate`` on the same exported model.

    .venv/bin/python benchmarks/generate_throughput.py            # the default: a ~5M model, 32 requests
    .venv/bin/python benchmarks/generate_throughput.py --quick    # fewer tokens, for CI smoke runs
    .venv/bin/python benchmarks/generate_throughput.py --depth 8 --vocab 32768 --threads 2
    python benchmarks/generate_throughput.py --device cuda --dtype bfloat16 --depth 12 --vocab 50304  # a GPU

One model (random init, exported with lm.checkpoint.save_pretrained and loaded back by each side from
that directory, outside the timer), 32 prompts of different lengths, greedy decoding of the same number
of new tokens (EOS ignored on both sides).

What is timed, alike on both sides: everything a caller waits for from "here are the prompts" to "here
are the tokens". Ours: building a ``TorchEngine`` over the loaded model (this allocates its KV cache,
sized for the model's full context, and fuses the projection weights) and one ``generate`` call
(continuous batching over 32 slots). Baseline: one ``LlamaForCausalLM.generate`` call, left-padded with
an attention mask, which allocates its (dynamic) KV cache inside the call, as its users run it.
Each figure is the median of ``--repeats`` timed runs after one untimed warm-up run of the same work on
each side; the range (min-max) is printed beside it. Wall time and this process's CPU time are both
measured; ``--cpu-time`` makes CPU time the headline (fairer on a loaded shared machine with
``--threads 1``: waiting for a core is not counted against either side).

Also measured the same way: one request alone (latency), and "mixed lengths", where every request asks
for its own number of new tokens (as EOS makes real outputs differ), which one transformers batch can
only serve by running to the longest; only the tokens asked for are counted there.

Outputs are compared in every case (ours against transformers' greedy tokens, prefixes where lengths
differ): any difference makes the result ``"ok": false`` and the exit status 1, since a speed of
different outputs is not worth reporting.

Prints a details line, then as the LAST line the benchmark JSON object (ratio = ours / baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lm.checkpoint import load_pretrained, save_pretrained
from lm.engine import SamplingParams, TorchEngine
from lm.model import ModelConfig, Transformer


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], repeats: int) -> tuple[dict[str, list[float]], object]:
    """One untimed warm-up call, then ``repeats`` timed calls: wall and CPU seconds of each, and the
    warm-up's output (every call computes the same thing)."""
    out = fn()
    times: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(repeats):
        _sync()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        _sync()
        times["wall"].append(time.perf_counter() - wall)
        times["cpu"].append(time.process_time() - cpu)
    return times, out


def summary(times: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


def hf_generate(hf, prompts: list[list[int]], new_tokens: int, pad_id: int) -> list[list[int]]:
    device = next(hf.parameters()).device
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.inference_mode():
        out = hf.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )
    return out[:, width:].tolist()


def disagreements(ours: list[list[int]], theirs: list[list[int]]) -> int:
    """Requests whose tokens differ from the baseline's (compared over ours' length)."""
    return sum(a != b[: len(a)] for a, b in zip(ours, theirs, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--depth", type=int, default=4, help="model size by ModelConfig.from_depth (4: ~5M params)"
    )
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary (the tiny demo's is 4096)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    ap.add_argument("--quick", action="store_true", help="16 new tokens, 3 repeats")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    ap.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="weights of both sides"
    )
    ap.add_argument(
        "--cpu-time", action="store_true", help="headline figures from process CPU time instead of wall time"
    )
    args = ap.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 16, 3
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    clock = "cpu" if args.cpu_time else "wall"

    config = ModelConfig.from_depth(args.depth, args.vocab, max_seq_len=512, init_std=0.1)
    model = Transformer(config)
    model.init_weights(0)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 65, (args.requests,), generator=g).tolist()
    prompts = [torch.randint(1, args.vocab, (n,), generator=g).tolist() for n in lengths]
    n = args.new_tokens
    wanted = torch.randint(max(1, n // 8), n + 1, (len(prompts),), generator=g).tolist()

    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_pretrained(model, Path(tmp) / "model")
        ours_model, _ = load_pretrained(model_dir, device=args.device, dtype=dtype)
        hf = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()

    params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    mixed_params = [params.model_copy(update={"max_tokens": w}) for w in wanted]

    def ours(batch: list[list[int]], p) -> list[list[int]]:
        engine = TorchEngine(ours_model, max_batch_size=args.requests, device=args.device)
        return [r.token_ids for r in engine.generate(batch, p)]

    cases = {
        "batch": (lambda: ours(prompts, params), lambda: hf_generate(hf, prompts, n, pad_id=0)),
        "single": (lambda: ours(prompts[:1], params), lambda: hf_generate(hf, prompts[:1], n, pad_id=0)),
        "mixed": (
            lambda: ours(prompts, mixed_params),
            lambda: hf_generate(hf, prompts, max(wanted), pad_id=0),
        ),
    }
    timings: dict[str, dict[str, dict[str, list[float]]]] = {}
    mismatched: dict[str, int] = {}
    for name, (ours_fn, hf_fn) in cases.items():
        ours_times, ours_out = measure(ours_fn, args.repeats)
        hf_times, hf_out = measure(hf_fn, args.repeats)
        timings[name] = {"ours": ours_times, "hf": hf_times}
        mismatched[name] = disagreements(ours_out, hf_out)

    def med(case: str, side: str, which: str = clock) -> float:
        return statistics.median(timings[case][side][which])

    total = len(prompts) * n
    ours_tps, hf_tps = total / med("batch", "ours"), total / med("batch", "hf")
    ok = not any(mismatched.values())
    details = {
        "model_params": config.num_params(),
        "depth": args.depth,
        "vocab": args.vocab,
        "requests": len(prompts),
        "prompt_lengths": [min(lengths), max(lengths)],
        "new_tokens": n,
        "threads": args.threads,
        "device": args.device,
        "dtype": args.dtype,
        "headline_clock": "process CPU time" if args.cpu_time else "wall",
        "repeats": args.repeats,
        "warmup_runs": 1,
        "statistic": "median",
        "timed": "ours: TorchEngine construction (KV cache allocation, weight fusing) + generate; "
        "baseline: LlamaForCausalLM.generate (allocates its cache inside the call); "
        "models loaded outside the timer on both sides",
        "times": {
            case: {side: {c: summary(t) for c, t in clocks.items()} for side, clocks in sides.items()}
            for case, sides in timings.items()
        },
        "ours_tokens_per_s": round(ours_tps, 1),
        "hf_tokens_per_s": round(hf_tps, 1),
        "single_request_speedup": round(med("single", "hf") / med("single", "ours"), 2),
        "mixed_lengths": {
            "wanted_tokens": [min(wanted), max(wanted)],
            "ours_tokens_per_s": round(sum(wanted) / med("mixed", "ours"), 1),
            "hf_useful_tokens_per_s": round(sum(wanted) / med("mixed", "hf"), 1),
            "ratio": round(med("mixed", "hf") / med("mixed", "ours"), 3),
        },
        "requests_with_different_outputs": mismatched,
    }
    print(json.dumps(details))
    if not ok:
        print(f"error: greedy outputs differ from transformers' ({mismatched})", file=sys.stderr)
    result = {
        "benchmark": "generate_throughput",
        "unit": f"generated tokens/s ({len(prompts)} concurrent requests, greedy, {args.device}, "
        f"{args.dtype}, {details['headline_clock']}, median of {args.repeats})",
        "ours": round(ours_tps, 1),
        "baseline": round(hf_tps, 1),
        "baseline_name": f"transformers {transformers.__version__} LlamaForCausalLM.generate "
        "(batched, left-padded)",
        "ratio": round(ours_tps / hf_tps, 3),
        "target": 2.0,
        "ours_range_s": [min(timings["batch"]["ours"][clock]), max(timings["batch"]["ours"][clock])],
        "baseline_range_s": [min(timings["batch"]["hf"][clock]), max(timings["batch"]["hf"][clock])],
        "ok": ok,
    }
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
