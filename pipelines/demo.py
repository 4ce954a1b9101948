"""``raychat demo``: the tiny lifecycle on an embedded local Ray, on a laptop CPU, in minutes.

    make demo                      # or: raychat demo --run-dir runs/demo

It writes the tiny world (a seeded mini web crawl), cleans it, trains a tokenizer and token shards,
pretrains a small base model, samples a few continuations from it, fine-tunes it into a chat model
(with the arithmetic layout ablation), trains it to say "I don't know", and writes <run>/report.md.
Stages whose outputs are complete are skipped, so a second run only redoes what is missing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from lm import atomic
from pipelines.run_dir import RunDir
from pipelines.runner import run_stages, write_report_safely
from pipelines.stages import Graph

if TYPE_CHECKING:
    from pipelines.config import RunConfig

log = logging.getLogger("raychat")


def sample_prompts(run: RunDir, n: int = 4, words: int = 6) -> list[str]:
    """Openings of a few clean documents: the base model should continue them in the corpus's style."""
    import pyarrow.dataset as pads

    if not run.clean.is_dir():
        return []
    table = pads.dataset(
        str(run.clean), format="parquet", partitioning=pads.HivePartitioning.discover(infer_dictionary=True)
    ).head(200, columns=["text"])
    prompts = []
    for text in table.column("text").to_pylist():
        first = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0].split()
        if len(first) > words:
            prompts.append(" ".join(first[:words]))
        if len(prompts) == n:
            break
    return prompts


def write_samples(
    run: RunDir, stage: str, model_dir: Path, prompts: list[str], per_prompt: int = 2
) -> list[dict]:
    """Sample continuations from the base model and leave them for ``stage``'s report section."""
    from lm.engine import SamplingParams, TorchEngine
    from lm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    engine = TorchEngine.from_pretrained(model_dir, max_batch_size=8)
    rows = []
    for i, prompt in enumerate(prompts):
        ids = [tokenizer.eot_id, *tokenizer.encode(prompt)]  # as in training: documents follow <|endoftext|>
        params = [
            SamplingParams(temperature=0.8, top_k=50, max_tokens=40, seed=1000 * i + j)
            for j in range(per_prompt)
        ]
        for result in engine.generate([ids] * per_prompt, params):
            shown = result.token_ids[:-1] if result.finish_reason == "stop" else result.token_ids
            rows.append({"prompt": prompt, "continuation": tokenizer.decode(shown)})
    lines = ["Sampled continuations of the base model (temperature 0.8, top-k 50):", ""]
    lines += ["| prompt | continuation |", "| --- | --- |"]
    for row in rows:
        cont = row["continuation"].replace("\n", " ").replace("|", "\\|").strip()
        lines.append(f"| {row['prompt']} | {cont} |")
    atomic.write_text(run.fragment(stage, "samples"), "\n".join(lines) + "\n")
    return rows


def run_demo(cfg: RunConfig, force: bool = False) -> int:
    """Every stage of the run but the long-running ones, then samples of the base model."""
    graph = Graph(cfg)
    run = RunDir(cfg.run_dir)
    run_stages(graph, [s.name for s in graph if not s.long_running], force=force)
    model_dir = run.model(cfg.pretrain.output_name)
    prompts = sample_prompts(run)
    if prompts and (model_dir / "config.json").is_file():
        for row in write_samples(run, "pretrain", model_dir, prompts):
            print(f"  {row['prompt']!r} -> {row['continuation']!r}")
    for line in post_training_lines(run):
        print(line)
    write_report_safely(graph)  # with the samples and the post-training numbers
    print(f"\nraychat demo finished: report at {run.at('report')}")
    return 0


def post_training_lines(run: RunDir) -> list[str]:
    """The post-training headline numbers, one line each, for the terminal."""
    from pipelines.run_dir import read_summary

    summary = read_summary(run)
    sft, idk, search = (summary.get(k, {}) for k in ("sft", "idk", "search"))

    def f(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else "-"

    lines = []
    if sft:
        lines.append(
            f"  sft: identity {f(sft.get('identity_accuracy'))}, search {f(search.get('accuracy_with_tool'))} "
            f"with the tool / {f(search.get('accuracy_without_tool'))} without, arithmetic reasoning first "
            f"{f(sft.get('reasoning_first_accuracy'))} / answer first {f(sft.get('answer_first_accuracy'))}"
        )
    if idk:
        lines.append(
            f"  idk: 'I don't know' on unknown entities {f(idk.get('unknown_idk_rate_before'))} -> "
            f"{f(idk.get('unknown_idk_rate_after'))}, on known ones {f(idk.get('known_false_idk_rate_after'))}; "
            f"known accuracy {f(idk.get('known_accuracy_before'))} -> {f(idk.get('known_accuracy_after'))}"
        )
    return lines
