"""``raychat sample``: a model directory's continuations of a prompt, to see what a stage produced.

    raychat sample --model runs/tiny/models/base --prompt "The capital of" -n 5
    raychat sample --model runs/tiny/models/base --prompt "Once" --temperature 0.7 --top-k 40 --json

The prompt is encoded with the tokenizer saved in the model directory and, as in pretraining, follows an
``<|endoftext|>`` (a document start; ``--no-bos`` leaves it out). Sample i uses seed ``--seed + i``, so a
run is reproducible when ``--seed`` is given. ``--json`` prints one JSON object per sample:
``{"text", "token_ids", "finish_reason", "prompt"}`` with the generated tokens only. Prompt and reply
share the model's context (its ``max_seq_len``): when the prompt leaves fewer tokens than
``--max-tokens``, one warning line on stderr says where the replies will stop, and sampling goes on,
so that a reply cut at the context is not taken for the model's own ending.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from pathlib import Path

log = logging.getLogger("raychat")


def add_sample_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="a model directory (Hugging Face layout, with its tokenizer)"
    )
    parser.add_argument("--prompt", default="", help="text to continue (default: empty, a fresh document)")
    parser.add_argument("-n", "--num-samples", type=int, default=5, help="number of continuations")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per sample")
    parser.add_argument("--seed", type=int, default=None, help="sample i uses seed+i (default: random)")
    parser.add_argument("--json", action="store_true", help="one JSON line per sample")
    parser.add_argument("--no-bos", action="store_true", help="do not put <|endoftext|> before the prompt")
    parser.add_argument(
        "--engine", choices=["auto", "torch", "vllm"], default="auto", help="generation engine"
    )
    parser.add_argument(
        "--device", default=None, help="torch device for the torch engine (default: cuda if present)"
    )


def main_sample(args: argparse.Namespace) -> int:
    from lm.checkpoint import CheckpointError
    from lm.engine import SamplingParams, VLLMUnavailable, make_engine
    from lm.files import model_dir_problem
    from lm.tokenizer import TokenizerError, load_tokenizer

    model_dir = Path(args.model)
    if problem := model_dir_problem(model_dir):
        print(
            f"raychat sample: {problem}; give a directory written by a training stage (e.g. runs/tiny/models/base)",
            file=sys.stderr,
        )
        return 2
    if args.num_samples < 1:
        print("raychat sample: -n must be at least 1", file=sys.stderr)
        return 2
    try:
        tokenizer = load_tokenizer(model_dir)
    except TokenizerError as e:
        print(f"raychat sample: no usable tokenizer in {model_dir}: {e}", file=sys.stderr)
        return 2
    try:
        base_seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
        params = [
            SamplingParams(
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                max_tokens=args.max_tokens,
                seed=base_seed + i,
            )
            for i in range(args.num_samples)
        ]
    except ValueError as e:
        print(f"raychat sample: bad sampling settings: {_settings_problems(e)}", file=sys.stderr)
        return 2
    device_problem = _device_problem(args.device)
    if device_problem:
        print(f"raychat sample: {device_problem}", file=sys.stderr)
        return 2
    prompt_ids = ([] if args.no_bos else [tokenizer.eot_id]) + tokenizer.encode(args.prompt)
    if not prompt_ids:
        prompt_ids = [tokenizer.eot_id]
    try:
        engine = make_engine(
            model_dir,
            prefer=args.engine,
            device=args.device,
            max_batch_size=args.num_samples,
            max_seq_len=len(prompt_ids) + args.max_tokens + 1,
        )
    except (CheckpointError, VLLMUnavailable) as e:
        hint = " (here: --engine torch)" if isinstance(e, VLLMUnavailable) else ""
        print(f"raychat sample: {e}{hint}", file=sys.stderr)
        return 2
    room = engine.max_seq_len - len(prompt_ids)
    if 0 < room < args.max_tokens:  # no room at all is the engine's error below
        print(
            f"raychat sample: warning: replies stop at {room} tokens, not --max-tokens {args.max_tokens}: "
            f"the model's context is {engine.max_seq_len} tokens and the prompt takes {len(prompt_ids)}",
            file=sys.stderr,
        )
    try:
        results = engine.generate([prompt_ids] * args.num_samples, params)
    except ValueError as e:  # for example a prompt longer than the model's context
        print(f"raychat sample: {e}", file=sys.stderr)
        return 2
    for i, res in enumerate(results):
        shown = res.token_ids[:-1] if res.finish_reason == "stop" else res.token_ids
        text = _decode(tokenizer, shown)
        if args.json:
            record = {
                "text": text,
                "token_ids": res.token_ids,
                "finish_reason": res.finish_reason,
                "prompt": args.prompt,
            }
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(
                f"--- sample {i + 1} (seed {base_seed + i}, {len(res.token_ids)} tokens, {res.finish_reason}) ---"
            )
            print(args.prompt + text)
    return 0


FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "max_tokens": "--max-tokens"}


def _settings_problems(e: ValueError) -> str:
    """A pydantic error as one line naming the flags (``--top-p: Input should be ...``)."""
    errors = getattr(e, "errors", None)
    if not callable(errors):
        return str(e)
    return "; ".join(
        f"{FLAGS.get(str(err['loc'][0]), err['loc'][0]) if err['loc'] else 'settings'}: {err['msg']}"
        for err in errors()
    )


def _device_problem(device: str | None) -> str | None:
    """Why ``--device`` cannot run the torch engine here (an unknown name, no such GPU), else None."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device}: not a torch device (cpu, cuda, cuda:N, mps)"
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"--device {device}: no CUDA GPU is visible; use --device cpu"
        if dev.index is not None and dev.index >= count:
            return f"--device {device}: only {count} CUDA GPU(s) visible (cuda:0 to cuda:{count - 1})"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: MPS is not available here; use --device cpu"
    return None


def _decode(tokenizer, ids: list[int]) -> str:
    """Text of ``ids``; ids past the tokenizer's vocabulary (a model padded to a round vocabulary size
    can sample its untrained rows) show as U+FFFD instead of failing."""
    parts, run = [], []
    for t in ids:
        if t < tokenizer.vocab_size:
            run.append(t)
            continue
        parts.append(tokenizer.decode(run) + "\ufffd")
        run = []
    return "".join(parts) + tokenizer.decode(run)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m pipelines.sample", description=__doc__.split("\n\n")[0])
    add_sample_args(parser)
    sys.exit(main_sample(parser.parse_args()))
