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
from pipelines.report import glance
from pipelines.run_dir import RunDir, read_summary
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
    if "serve" in graph:
        serve_and_ask(graph, run)
    write_report_safely(graph)  # with the samples and the smoke requests
    print("\nAt a glance:")
    for name, line, seconds in glance(graph, read_summary(run)):
        print(f"  {name:9} {line}" + ("" if seconds is None else f" ({seconds:,.0f} s)"))
    print(f"\nraychat demo finished: report at {run.at('report')}")
    return 0


def serve_and_ask(graph: Graph, run: RunDir) -> None:
    """The lifecycle's last step: every model of the run served by the serve stage's application on
    this Ray, one request to each through the OpenAI API, then the server stopped. Its numbers go to
    summary.json under ``serve`` (the stage itself is long-running and has no done marker)."""
    import socket
    import time

    import ray

    from pipelines.run_dir import update_summary
    from pipelines.runner import preflight
    from pipelines.runtime import init_ray, started_here
    from serving.job import serve_is_up, serving, smoke_requests
    from serving.resolve import api_keys, replica_resources, resolve_models, search_source

    cfg = graph.cfg
    with socket.socket() as sock:  # a free port: the demo must not fail because 8000 is taken
        sock.bind((cfg.serve.host, 0))
        cfg.serve.port = sock.getsockname()[1]
    num_cpus = cfg.ray.num_cpus
    preflight(graph, "serve")
    cfg.ray.num_cpus = num_cpus  # what the app needs is checked against this Ray below
    init_ray(cfg.ray)  # up already, unless every stage was complete and skipped
    models = resolve_models(run, cfg.serve)
    wanted = replica_resources(cfg.serve, models, search_source(run, cfg.serve) is not None)["CPU"]
    have = ray.cluster_resources().get("CPU", 0)
    if wanted > have:
        log.warning(
            "demo: not serving: the app wants %.2f CPUs and this Ray has %g (lower serve.model_defaults.num_cpus)",
            wanted, have,
        )  # fmt: skip
        return
    started = time.time()
    log.info("stage serve: starting %d models", len(models), extra={"console": True})
    keys = api_keys(cfg.serve)
    # Serve's controller and proxy outlive the app: on the demo's own Ray they end with the process
    # (shutting them down there only adds a worker-killed notice); on a cluster it joined they would
    # stay, so Serve is shut down after, unless it was up before (another app's, not the demo's)
    shutdown = not started_here() and not serve_is_up()
    with serving(cfg, "serve", shutdown=shutdown) as (url, served):
        answers = smoke_requests(url, served, keys[0] if keys else None)
    for a in answers:
        reply = repr(" ".join(str(a["reply"]).split())[:70])
        notes = [f"[{call[:40]}]" for call in a.get("tool_calls", [])]
        if a.get("finish_reason") == "length":
            notes.append("(cut at max_tokens)")
        print(f"  {a['model']:12} {'ok ' if a['ok'] else 'FAILED'} {' '.join([reply, *notes])}")
    numbers = {
        "models": ", ".join(m.name for m in served),
        "url": url,
        "smoke": answers,
        "smoke_ok": sum(1 for a in answers if a["ok"]),
        "seconds": round(time.time() - started, 1),
    }
    update_summary(run, "serve", numbers)
    log.info(
        "stage serve: %s", f"{numbers['smoke_ok']} of {len(answers)} models answered", extra={"console": True}
    )
