"""How tokens think, measured: the same model fine-tuned on the same arithmetic problems in each layout.

The talk's claim: a model computes a fixed amount per token and reads left to right, so it needs its
working *before* its answer; an answer written first is a guess the working can only justify. The
ablation makes that a number. From the same init model, with the same settings and the same number
of optimizer steps, it fine-tunes one model per layout of pipelines/sft/world_data.py's ablation
files (the same problems in each):

- ``answer_first``: ``#### N`` first, then the working (no calculator);
- ``reasoning``: the working, then ``#### N`` (no calculator);
- ``reasoning_calc``: the working with calculator calls for the steps a careful person would not do
  in the head, then ``#### N``;

and scores each on the world's arithmetic test problems: the first two without tools, the third with
the calculator. Numbers: ``answer_first_accuracy``, ``reasoning_first_accuracy`` (= accuracy without
the calculator) and ``arithmetic_accuracy_with_calculator``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig
from pipelines.run_dir import RunDir
from pipelines.sft.sources import SourceConfig, load_source
from pipelines.sft.train import ChatModelSource, split_validation, train_chat_model

log = logging.getLogger("raychat.sft")

# layout -> (the condition it is scored on, the summary's name for its accuracy)
SCORED = {
    "answer_first": ("arithmetic_without_calculator", "answer_first_accuracy"),
    "reasoning": ("arithmetic_without_calculator", "reasoning_first_accuracy"),
    "reasoning_calc": ("arithmetic_with_calculator", "arithmetic_accuracy_with_calculator"),
}
VAL_CONVERSATIONS = 50


def ablation_stage(layout: str) -> str:
    return f"sft_ablation_{layout}"


def run_ablation(
    cfg: RunConfig, run: RunDir, source: ChatModelSource, data_dir: Path, name: str = "sft"
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Train and score one model per layout; (numbers for the summary, evaluation results by layout)."""
    from lm.chat import ChatFormat
    from pipelines.sft.data import ExampleStream, count_steps, render_examples
    from pipelines.sft.scorecard import evaluate_model

    sft = getattr(cfg, name)
    abl = sft.ablation
    seed = sft.seed if sft.seed is not None else cfg.seed
    data: dict[str, tuple[list, list]] = {}
    steps = 0
    chat = ChatFormat(source.tokenizer)
    for layout in abl.layouts:
        path = data_dir / "ablation" / f"arithmetic_{layout}.jsonl"
        convs, _ = load_source(SourceConfig(path=str(path), format="messages", name=f"ablation-{layout}"))
        train, val = split_validation(convs, VAL_CONVERSATIONS, seed)
        data[layout] = (train, val)
        examples = render_examples(train, chat, sft.seq_len)
        stream = ExampleStream(len(examples), seed)
        until = round(abl.epochs * len(examples))
        steps = max(steps, count_steps(examples.lengths, stream, until, sft.batch_rows, sft.seq_len))
    # the same compute for every layout: the step count of the longest one
    # no pretraining replay here: the layouts compare arithmetic data alone, step for step
    settings = sft.model_copy(
        update={"max_steps": max(1, steps), "lr": abl.lr or sft.lr, "pretrain_replay": 0.0}
    )
    numbers: dict[str, Any] = {
        "ablation_steps": max(1, steps),
        "ablation_problems": len(data[abl.layouts[0]][0]),
    }
    results: dict[str, dict[str, Any]] = {}
    for layout, (train, val) in data.items():
        stage = ablation_stage(layout)
        trained = train_chat_model(
            cfg, stage, settings, train, val, stage, source, meta={"ablation_layout": layout}
        )
        condition, key = SCORED[layout]
        out = evaluate_model(cfg, trained["model_dir"], [condition], label=stage)
        results[layout] = out[condition]
        numbers[key] = out[condition]["primary"]
        numbers[f"{key}_n"] = out[condition]["n"]
        numbers[f"ablation_{layout}_val_loss"] = trained["val_loss"]
        log.info("ablation: %s -> %s %s", layout, key, numbers[key])
    if "reasoning_first_accuracy" in numbers:
        numbers["arithmetic_accuracy_without_calculator"] = numbers["reasoning_first_accuracy"]
    return numbers, results
