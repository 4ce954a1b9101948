"""``raychat demo``: the tiny lifecycle on an embedded local Ray, on a laptop CPU, in minutes.

    make demo                      # or: raychat demo --run-dir runs/demo

It writes the tiny world (a seeded mini web crawl), cleans it, trains a tokenizer and token shards,
pretrains a small base model, samples a few continuations from it, and writes <run>/report.md.
Stages whose outputs are complete are skipped, so a second run only redoes what is missing.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pipelines.config import RunConfig
from pipelines.runtime import RunDir

log = logging.getLogger("raychat")
DEMO_STAGES = ["world", "clean", "tokenize", "pretrain", "rm"]


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


def write_samples(run: RunDir, model_dir: Path, prompts: list[str], per_prompt: int = 2) -> list[dict]:
    """Sample continuations from the base model and leave them for the report."""
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
    (run.metrics / "pretrain_samples.md").write_text("\n".join(lines) + "\n")
    return rows


def run_demo(cfg: RunConfig, force: bool = False) -> int:
    from pipelines.cli import run_stages
    from pipelines.report import write_report

    run = RunDir(cfg.run_dir)
    run_stages(cfg, DEMO_STAGES, force=force)
    model_dir = run.model("base")
    prompts = sample_prompts(run)
    if prompts and (model_dir / "config.json").is_file():
        for row in write_samples(run, model_dir, prompts):
            print(f"  {row['prompt']!r} -> {row['continuation']!r}")
    report = write_report(run)
    print(f"\nraychat demo finished: report at {report}")
    return 0
