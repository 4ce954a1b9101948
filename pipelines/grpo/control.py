"""Supervised training on worked solutions: the control beside the GRPO result, and a cold start.

    python -m pipelines.grpo.control --init runs/x/models/base --conversations runs/x/sft_data/conversations/arithmetic.jsonl \\
        --out runs/x/models/sft --steps 300            # a cold-start SFT model from a base model

The control answers "would more SFT on the cold-start solutions have done as well?": the starting
model is trained further on the same worked solutions for the CPU time the GRPO run used (summed over
its processes), and evaluated the same way. It is plain next-token loss on the assistant's tokens
(lm/chat.py's mask: tool results and prompts untrained), packed rows, on lm/train's Trainer in one
process; the CPU budget is that process's own ``time.process_time``.

Why not the sft stage's own training (pipelines/sft/train.py): the control is budgeted in CPU
seconds of one process, which a Ray Train run (step-based, several processes) cannot stop at; so it
is a short loop over the same pieces (lm/chat.py's rendering and mask, lm/train's packing, Trainer
and ``next_token_loss``). The same function makes a cold-start model for experiments (``--steps``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from pipelines.console import write_status
from pipelines.runtime import format_seconds

log = logging.getLogger("raychat.grpo")
STATUS_EVERY_S = 2.0  # how often the control writes its progress line


def read_conversations(path: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    if not rows:
        raise ValueError(f"{path}: no conversations")
    return rows


def cold_start_sft(
    init_dir: str,
    conversations: str,
    out_dir: str,
    *,
    lr: float = 3e-4,
    rows_per_step: int = 16,
    cpu_seconds: float | None = None,
    max_steps: int | None = None,
    max_seq_len: int = 512,
    seed: int = 0,
    stage: str = "grpo_control",
    threads: int | None = None,
    status_file: str | None = None,
) -> dict[str, Any]:
    """Train ``init_dir``'s model on ``conversations`` (messages JSONL) until ``cpu_seconds`` of this
    process or ``max_steps``, whichever comes first; save it to ``out_dir``; return what happened.
    ``status_file``: where its progress line goes every few seconds (the console's live line: the
    control trains for minutes inside a Ray task, whose own output stays off the console)."""
    import torch

    from lm.chat import ChatFormat
    from lm.checkpoint import eos_token_ids, save_pretrained
    from lm.tokenizer import load_tokenizer
    from lm.train.config import StepConfig
    from lm.train.losses import IGNORE_INDEX, next_token_loss
    from lm.train.models import pretrained_model
    from lm.train.packing import pack
    from lm.train.trainer import Trainer
    from pipelines.evaluation.contamination import TRAINED_ON, trained_on_record

    if cpu_seconds is None and max_steps is None:
        raise ValueError("give a CPU budget or a number of steps")
    if threads is not None:
        torch.set_num_threads(threads)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(init_dir)
    chat = ChatFormat(tokenizer)
    model = pretrained_model(init_dir)
    if model.config.max_seq_len < max_seq_len:  # positions past the base's length are what SFT teaches
        model.config = model.config.model_copy(update={"max_seq_len": max_seq_len})
    examples = []
    for conv in read_conversations(conversations):
        r = chat.render_conversation(conv, max_tokens=model.config.max_seq_len)
        targets = [t if m else IGNORE_INDEX for t, m in zip(r.ids[1:], r.mask[1:], strict=True)]
        examples.append((r.ids[:-1], targets))
    row_len = max(len(e[0]) for e in examples)
    steps_cap = max_steps or 10**9
    step_cfg = StepConfig(lr=lr, warmup_steps=0, decay="constant", weight_decay=0.0)
    trainer = Trainer(model, step_cfg, total_steps=steps_cap, device=torch.device("cpu"))
    rng = random.Random(seed)
    order: list[int] = []
    losses, steps, seen = [], 0, 0
    shown = time.perf_counter()
    while steps < steps_cap and (cpu_seconds is None or time.process_time() - cpu_start < cpu_seconds):
        if len(order) < rows_per_step:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        chosen, order = order[:rows_per_step], order[rows_per_step:]
        rows, _ = pack([examples[i] for i in chosen], row_len)
        losses.append(trainer.train_step([rows.batch()], next_token_loss)["loss"])
        steps += 1
        seen += len(chosen)
        if status_file is not None and time.perf_counter() - shown >= STATUS_EVERY_S:
            shown = time.perf_counter()
            cpu_used, wall = time.process_time() - cpu_start, shown - wall_start
            write_status(
                Path(status_file), _status_line(stage, steps, losses[-1], cpu_used, wall, cpu_seconds)
            )
    out = save_pretrained(
        trainer.model,
        out_dir,
        tokenizer=tokenizer,
        meta={
            "stage": stage,
            "init": init_dir,
            "steps": steps,
            "conversations": conversations,
            TRAINED_ON: trained_on_record([conversations]),  # raychat eval's contamination warning
        },
        eos_token_ids=eos_token_ids(init_dir),
    )
    return {
        "model_dir": str(out),
        "steps": steps,
        "epochs": seen / len(examples),
        "first_loss": losses[0] if losses else math.nan,
        "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "cpu_s": time.process_time() - cpu_start,
        "wall_s": time.perf_counter() - wall_start,
    }


def _status_line(
    stage: str, steps: int, loss: float, cpu_used: float, wall: float, budget: float | None
) -> str:
    """``grpo_control step 40 | loss 0.9100 | CPU 120/356 s | ETA 1m10s``: the budget is CPU time, so
    the ETA is the CPU left at the CPU-seconds-per-second seen so far."""
    line = f"{stage} step {steps} | loss {loss:.4f}"
    if budget:
        rate = cpu_used / max(wall, 1e-9)
        eta = max(budget - cpu_used, 0.0) / rate if rate > 0 else float("inf")
        line += f" | CPU {cpu_used:.0f}/{budget:.0f} s | ETA {format_seconds(eta)}"
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.grpo.control", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="the model to start from")
    p.add_argument("--conversations", required=True, help="worked solutions, messages JSONL")
    p.add_argument("--out", required=True, help="where the trained model goes")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--cpu-seconds", type=float, help="CPU budget of this process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--rows-per-step", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = cold_start_sft(
        args.init,
        args.conversations,
        args.out,
        lr=args.lr,
        rows_per_step=args.rows_per_step,
        cpu_seconds=args.cpu_seconds,
        max_steps=args.steps,
        seed=args.seed,
        stage="sft_cold_start",
        threads=args.threads,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
