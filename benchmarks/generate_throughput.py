"""Generated tokens/s of TorchEngine against Hugging Face ``generate`` on the same exported model.

    .venv/bin/python benchmarks/generate_throughput.py            # the default: a ~5M model, 32 requests
    .venv/bin/python benchmarks/generate_throughput.py --quick    # fewer tokens, for CI smoke runs
    .venv/bin/python benchmarks/generate_throughput.py --depth 8 --vocab 32768 --threads 2
    python benchmarks/generate_throughput.py --device cuda --dtype bfloat16 --depth 12 --vocab 50304  # a GPU

One model (random init, exported with lm.checkpoint.save_pretrained), 32 prompts of different lengths,
greedy decoding of the same number of new tokens (EOS ignored on both sides). Ours: one
``TorchEngine.generate`` call (continuous batching over 32 slots). Baseline: transformers'
``LlamaForCausalLM.generate`` on the same directory, one batched call, left-padded with an attention mask.
Also the latency of one request alone on each, and a "mixed lengths" figure: every request asks for
its own number of new tokens (as EOS makes real outputs differ), which one transformers batch can only
serve by running to the longest; only the tokens asked for are counted there. The headline (last line)
is the fixed-length case, where both sides do exactly the same arithmetic. Each measurement is the best of ``--repeats`` runs
(the machine is shared; the best run is the least disturbed). The greedy outputs of both are compared
too: they must agree, or the speed is not worth reporting.

Prints a details line, then as the LAST line the benchmark JSON object (ratio = ours / baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from lm.checkpoint import save_pretrained
from lm.engine import SamplingParams, TorchEngine
from lm.model import ModelConfig, Transformer

CLOCK = time.perf_counter


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        _sync()
        start = CLOCK()
        out = fn()
        _sync()
        best = min(best, CLOCK() - start)
    return best, out


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--depth", type=int, default=4, help="model size by ModelConfig.from_depth (4: ~5M params)"
    )
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary (the tiny demo's is 4096)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides")
    ap.add_argument("--quick", action="store_true", help="16 new tokens, 2 repeats")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    ap.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="weights of both sides"
    )
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with this process's CPU time instead of wall time (fairer on a loaded shared machine "
        "with --threads 1: waiting for a core is not counted against either side)",
    )
    args = ap.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    if args.quick:
        args.new_tokens, args.repeats = 16, 2
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()

    config = ModelConfig.from_depth(args.depth, args.vocab, max_seq_len=512, init_std=0.1)
    model = Transformer(config)
    model.init_weights(0)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 65, (args.requests,), generator=g).tolist()
    prompts = [torch.randint(1, args.vocab, (n,), generator=g).tolist() for n in lengths]
    n = args.new_tokens

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_pretrained(model, Path(tmp) / "model")
        dtype = getattr(torch, args.dtype)
        engine = TorchEngine.from_pretrained(
            model_dir, device=args.device, dtype=dtype, max_batch_size=args.requests, max_seq_len=512
        )
        hf = transformers.LlamaForCausalLM.from_pretrained(model_dir, dtype=dtype).to(args.device).eval()

    params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    engine.generate(prompts[:4], params)  # warm-up both
    hf_generate(hf, prompts[:4], 4, pad_id=0)

    ours_s, ours_out = best_time(lambda: engine.generate(prompts, params), args.repeats)
    hf_s, hf_out = best_time(lambda: hf_generate(hf, prompts, n, pad_id=0), args.repeats)
    ours_one_s, _ = best_time(lambda: engine.generate(prompts[:1], params), args.repeats)
    hf_one_s, _ = best_time(lambda: hf_generate(hf, prompts[:1], n, pad_id=0), args.repeats)

    # Mixed lengths: each request wants its own number of tokens (as EOS makes real outputs differ).
    # One HF batch must run to the longest; we count only the tokens each request asked for.
    wanted = torch.randint(max(1, n // 8), n + 1, (len(prompts),), generator=g).tolist()
    mixed_params = [params.model_copy(update={"max_tokens": w}) for w in wanted]
    ours_mixed_s, _ = best_time(lambda: engine.generate(prompts, mixed_params), args.repeats)
    hf_mixed_s, _ = best_time(lambda: hf_generate(hf, prompts, max(wanted), pad_id=0), args.repeats)

    ours_tokens = [r.token_ids for r in ours_out]
    agree = sum(a == b for a, b in zip(ours_tokens, hf_out, strict=True)) / len(prompts)
    total = len(prompts) * n
    ours_tps, hf_tps = total / ours_s, total / hf_s
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
        "clock": "process CPU time" if args.cpu_time else "wall",
        "ours_tokens_per_s": round(ours_tps, 1),
        "hf_tokens_per_s": round(hf_tps, 1),
        "ours_single_request_s": round(ours_one_s, 4),
        "hf_single_request_s": round(hf_one_s, 4),
        "single_request_speedup": round(hf_one_s / ours_one_s, 2),
        "greedy_outputs_identical": agree,
        "mixed_lengths": {
            "wanted_tokens": [min(wanted), max(wanted)],
            "ours_tokens_per_s": round(sum(wanted) / ours_mixed_s, 1),
            "hf_useful_tokens_per_s": round(sum(wanted) / hf_mixed_s, 1),
            "ratio": round(hf_mixed_s / ours_mixed_s, 3),
        },
    }
    print(json.dumps(details))
    if agree < 0.9:
        print(f"warning: only {agree:.0%} of greedy outputs agree with transformers", file=sys.stderr)
    result = {
        "benchmark": "generate_throughput",
        "unit": f"generated tokens/s ({len(prompts)} concurrent requests, greedy, {args.device}, {args.dtype})",
        "ours": round(ours_tps, 1),
        "baseline": round(hf_tps, 1),
        "baseline_name": f"transformers {transformers.__version__} LlamaForCausalLM.generate (batched, left-padded)",
        "ratio": round(ours_tps / hf_tps, 3),
        "target": 2.0,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
