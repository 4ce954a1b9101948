"""Supervised fine-tuning on Ray Train: the base model becomes a chat model, ``<run>/models/sft``.

    python -m pipelines.sft --config configs/tiny.yaml
    raychat sft --run-dir runs/tiny --set sft.epochs=5
    raychat sft --run-dir runs/mine --set sft.init=/models/my-llama --set sft.world_kinds=[] \\
        --set 'sft.sources=[{path: my_chats.jsonl}]'

On the shared trainer (pipelines/train/: checkpoints under ``<run>/checkpoints/sft/`` that the same
command resumes from, FailureConfig, metrics, progress with ETA) it fine-tunes ``sft.init`` (default
``models/base``; any Llama-layout model directory with a raychat tokenizer) on a mixture of
conversations: the tiny world's post-training data when the run has a world (built here into
``<run>/sft_data``, pipelines/sft/world_data.py; ``sft.world_kinds`` picks the kinds) and any chat
data in ``sft.sources`` (pipelines/sft/sources.py). The loss is on assistant tokens only, per
assistant token, over packed rows with document masks (pipelines/sft/data.py, task.py).

Then, when the world's held-out sets exist, it scores the model (pipelines/chat_eval.py): identity,
known facts and refusals on unknown entities (the "before" of the idk stage, since models/sft has
no refusal data), search with the tool and without, arithmetic with the calculator, and the
counting and decimal probes directly, reasoning first and with the calculator; and it runs the
arithmetic layout ablation (pipelines/sft/ablation.py). Numbers go to summary.json under "sft" (and
"search"), tables and example conversations to the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig
from pipelines.console import number
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir, update_summary
from pipelines.shorthands import TRAINING

log = logging.getLogger("raychat.sft")
# the numbers the console shows when the stage ends (pipelines/console.py)
NO_EVAL = "no held-out evaluation (no tiny world in this run, or sft.eval off; raychat eval judges any model)"
HEADLINE = ("val_loss", "identity_accuracy", "search_accuracy_with_tool", "reasoning_first_accuracy")
STAGE = "sft"
EVAL_CONDITIONS = [
    "identity",
    "identity_with_system",
    "known",
    "unknown",
    "search_with_tool",
    "search_without_tool",
    "arithmetic_with_calculator",
    "probes_direct",
    "probes_reasoning",
    "probes_calculator",
]


def summary_line(n: dict[str, Any]) -> str:
    def f(key: str) -> str:
        return number(n, key, 2)

    if n.get("identity_accuracy") is None:  # a run without the tiny world (a user's own data) or eval off
        return f"chat model: validation loss {f('val_loss_start')} -> {f('val_loss')}; {NO_EVAL}"
    return (
        f"chat model: validation loss {f('val_loss_start')} -> {f('val_loss')}; identity {f('identity_accuracy')}, "
        f"search {f('search_accuracy_with_tool')} with the tool / {f('search_accuracy_without_tool')} without, "
        f"arithmetic reasoning first {f('reasoning_first_accuracy')} / answer first {f('answer_first_accuracy')}"
    )


def build_world_data(cfg: RunConfig, run: RunDir, needed: bool) -> Path | None:
    """The tiny world's post-training data under ``<run>/sft_data`` (rebuilt: seconds, deterministic),
    when the run has a world and ``needed``; None otherwise."""
    from pipelines.sft.scorecard import world_data_dir
    from pipelines.sft.world_data import build_world_sft_data
    from pipelines.sft.world_splits import WorldDataError

    if not needed or not (run.world / "facts.json").is_file():
        return None
    out = world_data_dir(run)
    try:
        build_world_sft_data(str(run.world), str(out), cfg.sft_data)
    except WorldDataError as e:
        raise ConfigError(f"sft: {e}") from None
    return out


def load_conversations(
    cfg: RunConfig, data_dir: Path | None, kinds: list[str], extra_paths: list[str] = (), name: str = STAGE
) -> tuple[list[Any], dict[str, Any]]:
    """The shuffled mixture: world ``kinds`` from ``data_dir``, ``sft.sources`` and ``extra_paths``
    (messages JSONL, e.g. the idk stage's refusals)."""
    from pipelines.sft.sources import MixtureConfig, SourceConfig, SourceError, build_mixture
    from pipelines.sft.world_data import mixture_sources

    settings = getattr(cfg, name)
    sources = (
        mixture_sources(str(data_dir), tuple(kinds), getattr(settings, "world_epochs", None))
        if data_dir is not None and kinds
        else []
    )
    sources += list(settings.sources)
    sources += [SourceConfig(path=p, format="messages", name=Path(p).stem) for p in extra_paths]
    if not sources:
        raise ConfigError(
            f"{name}: no training data: the run has no tiny world (<run>/world) and sft.sources is empty; "
            "give sft.sources (chat data files) or run the world stage"
        )
    seed = settings.seed if settings.seed is not None else cfg.seed
    try:
        mix = build_mixture(MixtureConfig(sources=sources, size=settings.mixture_size, seed=seed))
    except SourceError as e:
        raise ConfigError(f"sft: {e}") from None
    return mix.conversations, mix.summary()


def preflight(cfg: RunConfig, name: str = STAGE) -> None:
    """A model to start from and a tokenizer with the chat tokens, checked before Ray starts. (Run
    after the stages before it, so models/base exists by then in ``raychat run``.)"""
    from pipelines.records import require_source_files
    from pipelines.sft.train import ChatModelSource

    run = RunDir(Path(cfg.run_dir).resolve())
    settings = getattr(cfg, name)
    ChatModelSource.resolve(run, settings)
    require_source_files(f"{name}.sources", settings.sources)
    if not settings.sources and not (settings.world_kinds and (run.world / "facts.json").is_file()):
        raise ConfigError(
            f"{name}: no training data: give {name}.sources, or run the world stage for the tiny world's"
        )


def start_over(cfg: RunConfig, name: str = STAGE) -> None:
    """``--force``: the fine-tunes train from step 0 (their old checkpoints are set aside)."""
    from pipelines.sft.ablation import ablation_stage
    from pipelines.train.driver import set_aside

    run = RunDir(Path(cfg.run_dir).resolve())
    for stage in [name, *(ablation_stage(x) for x in getattr(cfg, name).ablation.layouts)]:
        set_aside(run, stage, "--force")


def report_section(run: RunDir, name: str = STAGE) -> str:
    from pipelines.sft.scorecard import chat_report_section

    return chat_report_section(run, name, "supervised fine-tuning")


def run(cfg: RunConfig, name: str = STAGE) -> dict[str, Any]:
    from pipelines.sft.scorecard import evaluate_model
    from pipelines.sft.train import ChatModelSource, split_validation, train_chat_model

    run_dir = RunDir(Path(cfg.run_dir).resolve())
    settings = getattr(cfg, name)
    source = ChatModelSource.resolve(run_dir, settings)
    data_dir = build_world_data(cfg, run_dir, needed=bool(settings.world_kinds))
    conversations, mixture = load_conversations(cfg, data_dir, settings.world_kinds, name=name)
    seed = settings.seed if settings.seed is not None else cfg.seed
    train, val = split_validation(conversations, settings.val_conversations, seed)
    numbers = train_chat_model(cfg, name, settings, train, val, settings.output_name, source)
    numbers["mixture"] = {s["name"]: s["examples"] for s in mixture["sources"]}

    results: dict[str, dict[str, Any]] = {}
    ablation: dict[str, dict[str, Any]] = {}
    if data_dir is not None and settings.eval.enabled:
        results = evaluate_model(cfg, numbers["model_dir"], EVAL_CONDITIONS, label=settings.output_name)
        numbers |= headline(results)
        update_summary(
            run_dir,
            "search",
            {
                "accuracy_with_tool": numbers.get("search_accuracy_with_tool"),
                "accuracy_without_tool": numbers.get("search_accuracy_without_tool"),
                "n": numbers["n"].get("search_with_tool"),
                "model": numbers["model_dir"],
            },
        )
    if data_dir is not None and settings.ablation.enabled and settings.eval.enabled:
        from pipelines.sft.ablation import run_ablation

        extra, ablation = run_ablation(cfg, run_dir, source, data_dir, name)
        numbers |= extra
    from pipelines.sft.report import sft_fragment

    sft_fragment(run_dir, numbers, results, ablation, name)
    if results:
        log.info(
            "sft: done: %d steps, val loss %s -> %s, identity %s, search %s with the tool / %s without -> %s",
            numbers["steps"], _r(numbers.get("val_loss_start")), _r(numbers.get("val_loss")),
            _r(numbers.get("identity_accuracy")), _r(numbers.get("search_accuracy_with_tool")),
            _r(numbers.get("search_accuracy_without_tool")), numbers["model_dir"],
        )  # fmt: skip
    else:
        log.info("sft: done: %d steps, val loss %s -> %s; %s -> %s", numbers["steps"],
                 _r(numbers.get("val_loss_start")), _r(numbers.get("val_loss")), NO_EVAL, numbers["model_dir"])  # fmt: skip
    return numbers


def _r(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def headline(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary's numbers from the evaluation (and ``n``: questions behind each condition)."""
    from pipelines.sft.scorecard import score

    out: dict[str, Any] = {
        "identity_accuracy": score(results, "identity"),
        "identity_accuracy_with_system": score(results, "identity_with_system"),
        "identity_claims_other_share": score(results, "identity", "claims_other_share"),
        "known_accuracy": score(results, "known"),
        "known_false_idk_rate": score(results, "known", "refusal_share"),
        "unknown_idk_rate": score(results, "unknown"),
        "search_accuracy_with_tool": score(results, "search_with_tool"),
        "search_accuracy_without_tool": score(results, "search_without_tool"),
        "arithmetic_accuracy_cold_start": score(results, "arithmetic_with_calculator"),
    }
    for form in ("direct", "reasoning", "calculator"):
        name = f"probes_{form}"
        out[f"counting_accuracy_{form}"] = score(results, name, "counting_accuracy")
        out[f"decimal_compare_accuracy_{form}"] = score(results, name, "decimal_compare_accuracy")
        out[f"decimal_trap_accuracy_{form}"] = score(results, name, "decimal_trap_accuracy")
    out["n"] = {name: r["n"] for name, r in results.items()}
    return {k: v for k, v in out.items() if v is not None}


SHORTHANDS = TRAINING  # --init, --max-steps, --epochs, --num-workers, --gpu (pipelines/shorthands.py)
