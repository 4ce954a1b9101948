"""GRPO on Ray actor pools: practice problems with final answers make the SFT model better at them.

    raychat grpo --config configs/tiny.yaml                       # the tiny world's arithmetic, CPU
    python -m pipelines.grpo --config configs/gpu-gsm8k-grpo.yaml  # GSM8K, vLLM generators on GPUs
    raychat grpo --config configs/tiny.yaml --set grpo.max_staleness=0 --set grpo.steps=20

What it does: evaluates the starting model on the held-out problems, starts the topology
(pipelines/grpo/launcher.py: generators, reward workers, learner ranks, reference), trains
``grpo.steps`` asynchronous GRPO steps (pipelines/grpo/rollouts.py collects, pipelines/grpo/loop.py
drives), exports the policy to ``<run>/models/rl``, evaluates it the same way, optionally trains the SFT
control for the same CPU time (pipelines/grpo/control.py), and writes the curves and tables
(pipelines/grpo/report.py). Checkpoints every ``checkpoint_every`` steps; running the same command
again resumes from the latest one (policy version, optimizer, data position, sample records).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError, RunConfig
from pipelines.runtime import RunDir, read_json, write_json_atomic

log = logging.getLogger("raychat.grpo")
STAGE = "grpo"


def init_dir(cfg: RunConfig) -> Path:
    g = cfg.grpo
    if g.init:
        return Path(g.init).resolve()
    return RunDir(Path(cfg.run_dir).resolve()).model("sft" if g.mode == "r1" else "base")


def preflight(cfg: RunConfig) -> None:
    g = cfg.grpo
    model = init_dir(cfg)
    if not (model / "config.json").is_file():
        hint = "run the sft stage" if g.mode == "r1" and not g.init else "set grpo.init to a model directory"
        raise ConfigError(
            f"grpo: no model at {model} to start from; {hint} (or grpo.mode: r1_zero for the base)"
        )
    if g.data.source == "jsonl":
        for path in (g.data.train_path, g.data.test_path):
            if path and not Path(path).is_file():
                raise ConfigError(f"grpo.data: file not found: {path}")
    if g.control.enabled and g.control.conversations and not Path(g.control.conversations).is_file():
        raise ConfigError(f"grpo.control.conversations: file not found: {g.control.conversations}")


def start_over(cfg: RunConfig) -> None:
    from pipelines.train.driver import set_aside

    set_aside(RunDir(Path(cfg.run_dir).resolve()), STAGE, "--force")


def _tools(cfg: RunConfig, tokenizer: Any, run: RunDir) -> dict[str, Any]:
    from lm.calculator import calculator_tool

    tools: dict[str, Any] = {}
    if "calculator" in cfg.grpo.tools:
        tools["calculator"] = calculator_tool(tokenizer)
    if "search" in cfg.grpo.tools:
        from actors.search import search_tool, start_search_actor

        corpus = cfg.grpo.search_corpus or str(run.world / "search_index.jsonl")
        tools["search"] = search_tool(
            tokenizer, start_search_actor(corpus=corpus, index_dir=str(run.root / "search"))
        )
    return tools


def _identity(cfg: RunConfig, model: Path) -> dict[str, Any]:
    """What a checkpoint must match to be continued."""
    g = cfg.grpo
    return {
        "init": str(model),
        "group_size": g.group_size,
        "prompts_per_step": g.prompts_per_step,
        "data": g.data.model_dump(mode="json"),
        "system": g.system(),
        "seed": g.seed if g.seed is not None else cfg.seed,
    }


def run(cfg: RunConfig) -> dict[str, Any]:

    from actors.learner import LearnerSpec
    from lm.chat import ChatFormat
    from lm.tokenizer import load_tokenizer
    from pipelines.grpo.data import PromptSource, load_problems
    from pipelines.grpo.evaluate import evaluate
    from pipelines.grpo.launcher import launch
    from pipelines.grpo.loop import Checkpoints, LoopState, push_weights, read_driver, run_loop
    from pipelines.grpo.report import write_report
    from pipelines.grpo.rollouts import RolloutCollector, SampleLog, truncate_lines

    g = cfg.grpo
    run_dir = RunDir(Path(cfg.run_dir).resolve())
    seed = g.seed if g.seed is not None else cfg.seed
    model = init_dir(cfg)
    tokenizer = load_tokenizer(model)
    chat = ChatFormat(tokenizer)
    train, test = load_problems(g, run_dir.root, seed)
    test = test[: g.eval.problems] if g.eval.problems else test
    prompts = PromptSource(train, chat, g.system(), seed, g.data.max_prompt_tokens)
    updates = g.algo.updates_per_batch * math.ceil(
        g.prompts_per_step * g.group_size / (g.algo.minibatch_size or g.prompts_per_step * g.group_size)
    )
    spec = LearnerSpec(
        init_dir=str(model),
        step=g.learner,
        algo=g.algo,
        temperature=g.temperature,
        total_steps=g.steps * updates,
        micro_batch_tokens=g.learner.micro_batch_tokens,
        norm_length=g.max_new_tokens,
        seed=seed,
        use_gpu=g.learner.num_gpus > 0,
    )
    run_dir.metrics.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir.metrics / f"{STAGE}.jsonl"
    samples_path = run_dir.metrics / f"{STAGE}_samples.jsonl"
    before_path = run_dir.metrics / f"{STAGE}_eval_before.json"
    checkpoints = Checkpoints(run_dir.checkpoints / STAGE, g.keep_checkpoints)
    identity = _identity(cfg, model)
    latest = checkpoints.latest()
    driver = read_driver(latest) if latest else None
    if driver is not None and driver.get("identity") != identity:
        changed = sorted(k for k in identity if driver.get("identity", {}).get(k) != identity[k])
        raise ConfigError(
            f"grpo: the checkpoint in {latest} was made with other settings ({', '.join(changed)}); use "
            f"another run_dir, or rerun with --force to set the checkpoints aside and start again"
        )

    started = time.perf_counter()
    topo = launch(g, spec, _tools(cfg, tokenizer, run_dir), spec.total_steps)
    try:
        cpu_start = _cpu_seconds(topo)
        if driver is None:
            metrics_path.write_text("")
            log.info("grpo: evaluating the starting model on %d held-out problems", len(test))
            before = evaluate(topo.generators, test, chat, g, seed)
            write_json_atomic(before_path, before)
            state, samples, collector_state = LoopState(), SampleLog(samples_path), None
            cpu_before = 0.0
        else:
            assert latest is not None
            log.info("grpo: resuming from %s (policy version %d)", latest, driver["loop"]["version"])
            before = read_json(before_path) or {}
            topo.learner.load(str(latest))
            truncate_lines(metrics_path, driver["metric_lines"])
            state = LoopState.from_json(driver["loop"])
            samples = SampleLog(samples_path, keep_lines=driver["sample_lines"])
            collector_state = driver["collector"]
            cpu_before = driver.get("cpu_s", 0.0)
        collector = RolloutCollector(
            topo.generators, topo.score, topo.reference, prompts, chat, g, samples, collector_state, seed
        )
        if state.version > 0:
            push_weights(topo, collector, state.version, "recompute")
        extra = {"identity": identity}

        def cpu_so_far() -> float:
            return cpu_before + _cpu_seconds(topo) - cpu_start

        try:
            state = run_loop(topo, collector, g, checkpoints, metrics_path, state, extra, cpu_so_far)
        finally:
            collector.close()
            samples.close()
        cpu_used = cpu_before + _cpu_seconds(topo) - cpu_start
        out_dir = topo.learner.export(
            str(run_dir.model(g.output_name)),
            str(model),
            {"stage": STAGE, "init": str(model), "steps": state.version, "source_run": str(run_dir.root)},
        )
        log.info("grpo: evaluating the trained policy on %d held-out problems", len(test))
        after = evaluate(topo.generators, test, chat, g, seed)
        counts = dict(collector.counts)
        if topo.rewards is not None:
            counts |= {f"reward_{k}": v for k, v in topo.rewards.counts.items()}
            counts["reward_worker_restarts"] = sum(bool(i["restarted"]) for i in topo.rewards.wait_ready())
        counts["generator_restarts"] = sum(w.restarts for w in collector.workers)
    finally:
        topo.close()
    wall = time.perf_counter() - started

    control = None
    if g.control.enabled:
        control = _run_control(cfg, model, run_dir, test, chat, cpu_used, seed)
    write_json_atomic(run_dir.metrics / f"{STAGE}_eval_after.json", after)
    return write_report(run_dir, g, before, after, control, counts, state, cpu_used, wall, out_dir)


def _cpu_seconds(topo: Any) -> float:
    """CPU seconds used so far by every process of the topology and this driver."""
    import ray

    total = topo.learner.cpu_seconds() + sum(ray.get([gen.cpu_seconds.remote() for gen in topo.generators]))
    if topo.reference is not None:
        total += ray.get(topo.reference.cpu_seconds.remote())
    if topo.rewards is not None:
        total += sum(info.get("cpu_s", 0.0) for info in topo.rewards.wait_ready())
    return total + time.process_time()


def _run_control(
    cfg: RunConfig, model: Path, run_dir: RunDir, test: list, chat: Any, cpu_used: float, seed: int
) -> dict[str, Any]:
    """The SFT control (pipelines/grpo/control.py) for GRPO's CPU time, evaluated like the policy."""
    import ray

    from actors.engine_actor import EngineActorConfig
    from actors.generator import start_generator
    from pipelines.grpo.control import cold_start_sft
    from pipelines.grpo.evaluate import evaluate

    c = cfg.grpo.control
    conversations = c.conversations or str(run_dir.root / "sft_data" / "conversations" / "arithmetic.jsonl")
    budget = c.cpu_seconds or cpu_used
    out = str(run_dir.model(f"{cfg.grpo.output_name}_control_sft"))
    log.info("grpo: the SFT control: %s on %s for %.0f CPU seconds", model, conversations, budget)
    task = ray.remote(num_cpus=c.num_cpus)(cold_start_sft)
    result = ray.get(
        task.remote(
            str(model),
            conversations,
            out,
            lr=c.lr,
            rows_per_step=c.rows_per_step,
            cpu_seconds=budget,
            seed=seed,
            threads=c.num_cpus,
        )
    )
    tools = _tools(cfg, chat.tokenizer, run_dir)
    actor = start_generator(EngineActorConfig(model_dir=out, device="cpu"), tools, num_cpus=1, max_restarts=0)
    try:
        result["eval"] = evaluate([actor], test, chat, cfg.grpo, seed)
    finally:
        ray.kill(actor, no_restart=True)
    return result


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("grpo shorthands (each is a --set grpo.<key>=...)")
    g.add_argument("--steps", type=int, help="grpo.steps")
    g.add_argument("--max-staleness", type=int, help="grpo.max_staleness (0: synchronous)")
    g.add_argument("--init", help="grpo.init (the model to start from)")
    g.add_argument("--mode", choices=["r1", "r1_zero"], help="grpo.mode")
    g.add_argument("--control", action="store_true", default=None, help="grpo.control.enabled=true")


_SHORTHANDS = {
    "steps": "grpo.steps",
    "max_staleness": "grpo.max_staleness",
    "init": "grpo.init",
    "mode": "grpo.mode",
    "control": "grpo.control.enabled",
}


def cli_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for attr, key in _SHORTHANDS.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")
    return out
