"""GRPO on Ray actor pools: practice problems with final answers make the SFT model better at them.

    raychat grpo --config configs/tiny.yaml                       # the tiny world's arithmetic, CPU
    python -m pipelines.grpo --config configs/gpu-gsm8k-grpo.yaml  # GSM8K, vLLM generators on GPUs
    raychat grpo --config configs/tiny.yaml --set grpo.max_staleness=0 --set grpo.steps=20

What it does: evaluates the starting model on the held-out problems, starts the topology
(pipelines/grpo/launcher.py: generators, reward workers, the reward model when ``rewards.rm`` is set,
learner ranks, reference), trains
``grpo.steps`` asynchronous GRPO steps (pipelines/grpo/rollouts.py collects, pipelines/grpo/loop.py
drives), exports the policy to ``<run>/models/rl``, evaluates it the same way, optionally trains the SFT
control for the same CPU time (pipelines/grpo/control.py), and writes the curves and tables
(pipelines/grpo/report.py). Checkpoints every ``checkpoint_every`` steps under
``<run>/checkpoints/<name>``; running the same command again resumes from the latest one (policy
version, optimizer, data position, sample records).

``name`` is the stage's name in the run (``grpo``, or a declared instance such as R1's ``grpo_final``):
its settings are ``cfg.<name>``, and its checkpoints, metrics, plots and summary entry carry the name.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from lm import atomic
from pipelines.config import RunConfig
from pipelines.console import number
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir
from pipelines.shorthands import Shorthand
from pipelines.storage import read_json

log = logging.getLogger("raychat.grpo")
STAGE = "grpo"


def summary_line(n: dict[str, Any]) -> str:
    def f(key: str) -> str:
        return number(n, key, 3)

    within = "" if n.get("gain_over_two_stderr", True) else ", within noise"
    line = (
        f"held-out accuracy {f('heldout_accuracy_before')} -> {f('heldout_accuracy_after')} "
        f"({n.get('heldout_problems', '-')} problems, standard error of the gain "
        f"{f('heldout_gain_stderr')}{within}); "
        f"training reward {f('reward_first_steps')} -> {f('reward_last_steps')} over {n.get('steps', '-')} steps"
    )
    # the gain means little without what plain SFT would have done with the same CPU time
    if "control_sft_accuracy" in n:
        line += f"; the SFT control for the same CPU time {f('control_sft_accuracy')}"
    return line


def _run(cfg: RunConfig) -> RunDir:
    return RunDir(Path(cfg.run_dir).resolve())


def init_dir(cfg: RunConfig, name: str = STAGE) -> Path:
    """The model to start from: ``init`` (``{run_dir}/...`` allowed), else models/sft (R1) or models/base."""
    g = getattr(cfg, name)
    run = _run(cfg)
    if g.init:
        return run.model_setting(g.init)
    return run.model("sft" if g.mode == "r1" else "base")


def reward_model_dir(cfg: RunConfig, name: str = STAGE) -> Path | None:
    """The reward model ``rewards.rm`` names: its ``model`` (``{run_dir}/...`` or ``models/...`` under the
    run, as the stage graph reads it), else the run's models/rm; None without ``rewards.rm``."""
    rm = getattr(cfg, name).rewards.rm
    if rm is None:
        return None
    run = _run(cfg)
    if rm.model is None:
        return run.model("rm")
    return run.model_setting(rm.model)


def preflight(cfg: RunConfig, name: str = STAGE) -> None:
    """The starting model, the reward model, the data files and the control's conversations, before
    Ray starts."""
    g = getattr(cfg, name)
    model = init_dir(cfg, name)
    if not (model / "config.json").is_file():
        hint = (
            "run the sft stage" if g.mode == "r1" and not g.init else f"set {name}.init to a model directory"
        )
        raise ConfigError(
            f"{name}: no model at {model} to start from; {hint} (or {name}.mode: r1_zero for the base)"
        )
    from pydantic import ValidationError

    from lm.rewards import RewardConfig  # the built-in rules registered: their args are checked now

    try:
        RewardConfig.model_validate(g.rewards.model_dump())
    except ValidationError as e:
        raise ConfigError(f"{name}.rewards: {e.errors()[0]['msg']}") from None
    rm_dir = reward_model_dir(cfg, name)
    if rm_dir is not None:
        from lm.checkpoint import is_reward_model

        if not (rm_dir / "config.json").is_file():
            raise ConfigError(
                f"{name}.rewards.rm: no reward model at {rm_dir}; run the rm stage (raychat rm) or set "
                f"{name}.rewards.rm.model to a reward model directory"
            )
        if not is_reward_model(rm_dir):
            raise ConfigError(
                f"{name}.rewards.rm: {rm_dir} is not a reward model (its config.json names no "
                "*ForSequenceClassification architecture); point rewards.rm.model at the rm stage's models/rm"
            )
    if g.data.source == "jsonl":
        for path in (g.data.train_path, g.data.test_path):
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}.data: file not found: {path}")
    if g.control.enabled and g.control.conversations and not Path(g.control.conversations).is_file():
        raise ConfigError(f"{name}.control.conversations: file not found: {g.control.conversations}")


def start_over(cfg: RunConfig, name: str = STAGE) -> None:
    """``--force``: the policy trains from step 0 (the old checkpoints are set aside)."""
    from pipelines.train.driver import set_aside

    set_aside(_run(cfg), name, "--force")


def report_section(run: RunDir, name: str = STAGE) -> str:
    from pipelines.grpo.report import report_section as section

    return section(run, name)


def _tools(g: Any, tokenizer: Any, run: RunDir) -> dict[str, Any]:
    from lm.calculator import calculator_tool

    tools: dict[str, Any] = {}
    if "calculator" in g.tools:
        tools["calculator"] = calculator_tool(tokenizer)
    if "search" in g.tools:
        from actors.search import search_tool, start_search_actor

        corpus = g.search_corpus or str(run.world / "search_index.jsonl")
        tools["search"] = search_tool(
            tokenizer, start_search_actor(corpus=corpus, index_dir=str(run.search_index))
        )
    return tools


def _identity(cfg: RunConfig, g: Any, model: Path) -> dict[str, Any]:
    """What a checkpoint must match to be continued."""
    return {
        "init": str(model),
        "group_size": g.group_size,
        "prompts_per_step": g.prompts_per_step,
        "data": g.data.model_dump(mode="json"),
        "system": g.system(),
        "seed": g.seed if g.seed is not None else cfg.seed,
    }


def _inputs(model: Path, rm_dir: Path | None, train: list[Any]) -> dict[str, str]:
    """What the policy is trained from, as fingerprints by name. ``_identity`` holds settings (another
    value is a mistake to report); these are files an earlier stage rewrites at the same path (redoing
    SFT, the world's splits, the rm stage), so a checkpoint of other inputs is set aside, not continued
    into a policy that never saw them."""
    from pipelines.train.fingerprints import INITIAL_MODEL, TRAINING_DATA, fingerprint, model_fingerprint

    inputs = {
        INITIAL_MODEL: model_fingerprint(model),
        TRAINING_DATA: fingerprint(*_problem_keys(train)),
    }
    if rm_dir is not None:
        inputs["the reward model"] = model_fingerprint(rm_dir)
    return inputs


def _held_out_stamp(test: list[Any], g: Any) -> str:
    """The held-out problems and evaluation settings a "before" score was made on: a resumed run whose
    ``eval`` settings changed scores the starting model again, so before and after stay comparable."""
    from pipelines.train.fingerprints import fingerprint

    return fingerprint(g.eval.model_dump_json(), *_problem_keys(test))


def _problem_keys(problems: list[Any]) -> list[str]:
    """What a problem is, for a fingerprint: its id, question and reference."""
    return [f"{p.id}\t{p.question}\t{p.reference}" for p in problems]


def run(cfg: RunConfig, name: str = STAGE) -> dict[str, Any]:

    from actors.learner import LearnerSpec
    from lm.chat import ChatFormat
    from lm.tokenizer import load_tokenizer
    from pipelines.evaluation.contamination import TRAINED_ON, trained_on_record
    from pipelines.grpo.data import PromptSource, load_problems, problem_files, world_splits
    from pipelines.grpo.evaluate import evaluate
    from pipelines.grpo.launcher import launch
    from pipelines.grpo.loop import Checkpoints, LoopState, push_weights, read_driver, run_loop
    from pipelines.grpo.report import write_results
    from pipelines.grpo.rollouts import RolloutCollector, SampleLog, truncate_lines

    g = getattr(cfg, name)
    run_dir = _run(cfg)
    seed = g.seed if g.seed is not None else cfg.seed
    model = init_dir(cfg, name)
    tokenizer = load_tokenizer(model)
    chat = ChatFormat(tokenizer)
    world_data = world_splits(cfg, run_dir) if g.data.source == "world" else None
    train, test = load_problems(g, world_data, seed)
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
    metrics_path = run_dir.metrics_log(name)
    samples_path = run_dir.metrics_log(f"{name}_samples")
    before_path, after_path = (run_dir.metrics / f"{name}_eval_{when}.json" for when in ("before", "after"))
    checkpoints = Checkpoints(run_dir.checkpoints_of(name), g.keep_checkpoints)
    identity = _identity(cfg, g, model)
    rm_dir = reward_model_dir(cfg, name)
    inputs = _inputs(model, rm_dir, train)
    latest = checkpoints.latest()
    driver = read_driver(latest) if latest else None
    if driver is not None and driver.get("identity") != identity:
        changed = sorted(k for k in identity if driver.get("identity", {}).get(k) != identity[k])
        raise ConfigError(
            f"{name}: the checkpoint in {latest} was made with other settings ({', '.join(changed)}); use "
            f"another run_dir, or rerun with --force to set the checkpoints aside and start again"
        )
    if driver is not None and driver.get("inputs", inputs) != inputs:  # older checkpoints: no record
        from pipelines.train.driver import set_aside

        changed = [k for k in inputs if driver["inputs"].get(k) != inputs[k]]
        set_aside(run_dir, name, f"{' and '.join(changed)} changed since they were written")
        latest, driver = None, None

    started = time.perf_counter()
    topo = launch(g, spec, _tools(g, tokenizer, run_dir), spec.total_steps, str(rm_dir) if rm_dir else None)
    try:
        tally = _CpuTally()
        cpu_start = _cpu_seconds(topo, tally)
        held_out = _held_out_stamp(test, g)

        def evaluate_start() -> dict[str, Any]:
            """The starting model's score (the generators hold it until weights are pushed)."""
            log.info("grpo: evaluating the starting model on %d held-out problems", len(test))
            before = evaluate(topo.generators, test, chat, g, seed, label=model.name) | {"held_out": held_out}
            atomic.write_json(before_path, before)
            return before

        if driver is None:
            metrics_path.write_text("")
            before = evaluate_start()
            state, samples, collector_state = LoopState(), SampleLog(samples_path), None
            cpu_before = 0.0
        else:
            assert latest is not None
            log.info("grpo: resuming from %s (policy version %d)", latest, driver["loop"]["version"])
            before = read_json(before_path) or {}
            if before.get("held_out") != held_out:  # eval settings changed: before and after alike
                before = evaluate_start()
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
        extra = {"identity": identity, "inputs": inputs}

        def cpu_so_far() -> float:
            return cpu_before + _cpu_seconds(topo, tally) - cpu_start

        try:
            state = run_loop(topo, collector, g, checkpoints, metrics_path, state, extra, cpu_so_far)
        finally:
            collector.close()
            samples.close()
        cpu_used = cpu_before + _cpu_seconds(topo, tally) - cpu_start
        out_dir = topo.learner.export(
            str(run_dir.model(g.output_name)),
            str(model),
            {
                "stage": name,
                "init": str(model),
                "steps": state.version,
                "source_run": str(run_dir.root),
                TRAINED_ON: trained_on_record(problem_files(g, world_data)),  # raychat eval's warning
            },
        )
        log.info("grpo: evaluating the trained policy on %d held-out problems", len(test))
        after = evaluate(topo.generators, test, chat, g, seed, label=g.output_name)
        counts = dict(collector.counts)
        if topo.rewards is not None:
            counts |= {f"reward_{k}": v for k, v in topo.rewards.counts.items()}
            counts["reward_worker_restarts"] = sum(bool(i["restarted"]) for i in topo.rewards.wait_ready())
        if topo.reward_model is not None:  # e.g. rm_ok, rm_error, rm_timeout, rm_retried_chunks
            counts |= {f"rm_{k}": v for k, v in topo.reward_model.counts.items()}
            counts["rm_worker_restarts"] = sum(bool(i["restarted"]) for i in topo.reward_model.wait_ready())
        counts["generator_restarts"] = sum(w.restarts for w in collector.workers)
    finally:
        topo.close()
    wall = time.perf_counter() - started

    control = None
    if g.control.enabled:
        control = _run_control(g, name, model, run_dir, test, chat, cpu_used, seed)
    atomic.write_json(after_path, after)
    return write_results(run_dir, name, g, before, after, control, counts, state, cpu_used, wall, out_dir)


class _CpuTally:
    """CPU seconds of actors that may be killed and restarted mid-run (the fault tests, a lost node):
    an actor that cannot answer right now counts what it said last, and a restarted one, whose process
    counts from zero again, keeps what its earlier process used."""

    def __init__(self) -> None:
        self.last: dict[Any, float] = {}
        self.earlier: dict[Any, float] = {}

    def read(self, key: Any, fetch: Any) -> float:
        import ray

        try:
            now = float(fetch())
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            now = None
        last = self.last.get(key, 0.0)
        if now is None:
            return self.earlier.get(key, 0.0) + last
        if now < last:  # a new process: what the old one used stays counted
            self.earlier[key] = self.earlier.get(key, 0.0) + last
        self.last[key] = now
        return self.earlier.get(key, 0.0) + now


def _cpu_seconds(topo: Any, tally: _CpuTally) -> float:
    """CPU seconds used so far by every process of the topology and this driver."""
    import ray

    total = tally.read("learner", topo.learner.cpu_seconds)
    for i, gen in enumerate(topo.generators):
        total += tally.read(("generator", i), lambda gen=gen: ray.get(gen.cpu_seconds.remote()))
    if topo.reference is not None:
        total += tally.read("reference", lambda: ray.get(topo.reference.cpu_seconds.remote()))
    for pool in (topo.rewards, topo.reward_model):
        if pool is not None:
            total += sum(info.get("cpu_s", 0.0) for info in pool.wait_ready())
    return total + time.process_time()


def _run_control(
    g: Any, stage: str, model: Path, run_dir: RunDir, test: list, chat: Any, cpu_used: float, seed: int
) -> dict[str, Any]:
    """The SFT control (pipelines/grpo/control.py) for GRPO's CPU time, evaluated like the policy."""
    import ray

    from actors.engine_actor import EngineActorConfig
    from actors.generator import start_generator
    from pipelines.grpo.control import cold_start_sft
    from pipelines.grpo.evaluate import evaluate
    from pipelines.sft.scorecard import world_data_dir

    c = g.control
    conversations = c.conversations or str(world_data_dir(run_dir) / "conversations" / "arithmetic.jsonl")
    budget = c.cpu_seconds or cpu_used
    out = str(run_dir.model(g.control_name))
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
            status_file=str(run_dir.status_file(stage)),  # the stage's live line on the console
        )
    )
    tools = _tools(g, chat.tokenizer, run_dir)
    actor = start_generator(EngineActorConfig(model_dir=out, device="cpu"), tools, num_cpus=1, max_restarts=0)
    try:
        result["eval"] = evaluate([actor], test, chat, g, seed, label=g.control_name)
    finally:
        ray.kill(actor, no_restart=True)
    return result


SHORTHANDS = (  # pipelines/shorthands.py
    Shorthand("--steps", "steps", "GRPO steps", int),
    Shorthand("--max-staleness", "max_staleness", "policy versions a sample may lag (0: synchronous)", int),
    Shorthand("--init", "init", "the model to start from"),
    Shorthand(
        "--mode", "mode", "r1 (from the SFT model) or r1_zero (from the base)", choices=("r1", "r1_zero")
    ),
    Shorthand("--control", "control.enabled", "train the SFT control beside it", switch=True),
)
