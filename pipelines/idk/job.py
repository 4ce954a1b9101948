""" "I don't know" training: probe models/sft, write refusals where it does not know, retrain, measure.

    python -m pipelines.idk --config configs/tiny.yaml
    raychat idk --run-dir runs/tiny --set idk.samples=8

The stage graph: ``idk`` consumes the sft stage's model (``models/sft``, trained without refusal
data) and its data (``<run>/sft_data``), and produces ``idk_data/probed.jsonl`` and a new chat model,
``models/sft_idk``: the one later stages and serving should use.

1. **Probe** (pipelines/idk/probe.py, the Llama 3 recipe): ``models/sft`` answers each ``idk_probe``
   question (facts of entities the corpus teaches, never fine-tuned on) ``idk.samples`` times through
   Ray Data batch generation on the engine actor; each answer is judged against the reference; what
   it does not answer correctly and consistently becomes a refusal conversation, what it does an
   answer.
2. **Retrain** (pipelines/sft/train.py): the same fine-tune as the sft stage (same init, settings
   and epochs) on the SFT mixture plus the refusal data: the world's refusals about thousands of
   fresh names and never-stated facts, failed searches, and the probed conversations.
   (``idk.init: sft`` continues from models/sft instead.)
3. **Measure** on held-out questions, before (models/sft) and after: the share of "I don't know" on
   entities neither pretraining nor IDK training ever saw (``unknown_idk_rate``), refusals on facts of
   held-out known entities (``known_false_idk_rate``) and accuracy on them (``known_accuracy``,
   which must not collapse), plus search and identity after, so the refusals' side effects show.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig
from pipelines.console import number
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir
from pipelines.storage import write_json

log = logging.getLogger("raychat.idk")
# the numbers the console shows when the stage ends (pipelines/console.py)
HEADLINE = ("unknown_idk_rate_before", "unknown_idk_rate_after", "known_accuracy_after")
STAGE = "idk"
BEFORE_CONDITIONS = ["known", "unknown"]
AFTER_CONDITIONS = ["known", "unknown", "search_with_tool", "search_without_tool", "identity"]


def summary_line(n: dict[str, Any]) -> str:
    def f(key: str) -> str:
        return number(n, key, 2)

    return (
        f"'I don't know' on unknown entities {f('unknown_idk_rate_before')} -> {f('unknown_idk_rate_after')}, "
        f"wrongly on known ones {f('known_false_idk_rate_before')} -> {f('known_false_idk_rate_after')}; "
        f"known accuracy {f('known_accuracy_before')} -> {f('known_accuracy_after')}"
    )


def _paths(cfg: RunConfig) -> tuple[RunDir, Path, Path]:
    from pipelines.sft.scorecard import world_data_dir

    run = RunDir(Path(cfg.run_dir).resolve())
    return run, run.model(cfg.sft.output_name), world_data_dir(run)


def preflight(cfg: RunConfig, name: str = STAGE) -> None:
    """The SFT model to probe and the world's splits must be there (the sft stage makes both)."""
    run, sft_dir, data_dir = _paths(cfg)
    if not (sft_dir / "config.json").is_file():
        raise ConfigError(f"idk: no SFT model at {sft_dir}; run the sft stage first")
    if not (data_dir / "splits" / "idk_probe.jsonl").is_file():
        raise ConfigError(
            f"idk: no probe questions ({data_dir}/splits/idk_probe.jsonl); the idk stage needs the tiny "
            "world's data, which the sft stage builds when the run has a world"
        )


def start_over(cfg: RunConfig, name: str = STAGE) -> None:
    from pipelines.train.driver import set_aside

    set_aside(RunDir(Path(cfg.run_dir).resolve()), name, "--force")


def report_section(run: RunDir, name: str = STAGE) -> str:
    from pipelines.sft.scorecard import chat_report_section

    return chat_report_section(run, name, "fine-tuning to say I don't know")


def run(cfg: RunConfig, name: str = STAGE) -> dict[str, Any]:
    from pipelines.chat_eval import ChatSession, read_set
    from pipelines.idk.probe import probe, probe_conversations, split_validation_entities
    from pipelines.idk.report import idk_fragment
    from pipelines.sft.config import IDK_KINDS
    from pipelines.sft.job import load_conversations
    from pipelines.sft.scorecard import evaluate_model, score
    from pipelines.sft.train import ChatModelSource, split_validation, train_chat_model
    from pipelines.sft.world_data import load_heldout

    preflight(cfg, name)
    run_dir, sft_dir, data_dir = _paths(cfg)
    c = getattr(cfg, name)
    seed = cfg.sft.seed if cfg.sft.seed is not None else cfg.seed

    before = evaluate_model(cfg, sft_dir, BEFORE_CONDITIONS, label=cfg.sft.output_name)

    rows, val_known = split_validation_entities(read_set(data_dir, "idk_probe"), c.validation_entities, seed)
    if c.max_probe_questions is not None and len(rows) > c.max_probe_questions:
        rows = random.Random(f"idk-probe-sample:{seed}").sample(rows, c.max_probe_questions)
    validation = {"known_eval": val_known, "unknown_eval": _fresh_validation(run_dir, data_dir, c, seed)}
    log.info("idk: probing %s with %d questions x %d samples", sft_dir, len(rows), c.samples)
    with ChatSession(sft_dir, cfg.sft.eval) as session:
        probes = probe(session, rows, c, seed)
    convs, probe_stats = probe_conversations(probes, load_heldout(str(data_dir)), seed, c.known_answers)
    probe_stats["min_correct_share"] = c.min_correct_share  # what "knows" meant (the report says it)
    out_dir = run_dir.local("idk_data")
    out_dir.mkdir(parents=True, exist_ok=True)
    probed = out_dir / "probed.jsonl"
    probed.write_text("".join(json.dumps(x, ensure_ascii=False, sort_keys=True) + "\n" for x in convs))
    write_json(
        out_dir / "probes.json",
        [{"question": p.row["question"], "reference": p.row.get("short_answer"), "answers": p.answers,
          "verdicts": p.summary.as_dict(), "knows": p.knows} for p in probes],
    )  # fmt: skip
    log.info(
        "idk: the SFT model knows %d of %d probed facts (%.1f%%); %d conversations -> %s",
        probe_stats["known"], len(probes), 100 * probe_stats["known_share"], len(convs), probed,
    )  # fmt: skip

    kinds = list(dict.fromkeys([*cfg.sft.world_kinds, *IDK_KINDS]))
    conversations, mixture = load_conversations(cfg, data_dir, kinds, [str(probed)] if convs else [])
    train, val = split_validation(conversations, cfg.sft.val_conversations, seed)
    init = str(sft_dir) if c.init == "sft" else None
    source = ChatModelSource.resolve(run_dir, cfg.sft, init=init)
    numbers = train_chat_model(
        cfg, name, cfg.sft, train, val, c.output_name, source, meta={"probed_from": str(sft_dir)}
    )
    after = evaluate_model(cfg, numbers["model_dir"], AFTER_CONDITIONS, label=c.output_name)
    val = {
        when: evaluate_model(
            cfg,
            model,
            ["known", "unknown"],
            label=f"{Path(model).name}_idk_validation",
            rows_by_set=validation,
        )
        for when, model in (("before", sft_dir), ("after", numbers["model_dir"]))
    }

    numbers |= {
        "mixture": {s["name"]: s["examples"] for s in mixture["sources"]},
        "probe": probe_stats,
        "unknown_idk_rate_before": score(before, "unknown"),
        "unknown_idk_rate_after": score(after, "unknown"),
        "known_false_idk_rate_before": score(before, "known", "refusal_share"),
        "known_false_idk_rate_after": score(after, "known", "refusal_share"),
        "known_accuracy_before": score(before, "known"),
        "known_accuracy_after": score(after, "known"),
        "unknown_idk_rate_by_reason_after": score(after, "unknown", "idk_share_by_reason"),
        "search_accuracy_with_tool_after": score(after, "search_with_tool"),
        "search_accuracy_without_tool_after": score(after, "search_without_tool"),
        "identity_accuracy_after": score(after, "identity"),
        "n": {
            "unknown": after["unknown"]["n"],
            "known": after["known"]["n"],
            "search": after["search_with_tool"]["n"],
        },
    }
    for when in ("before", "after"):
        numbers[f"validation_unknown_idk_rate_{when}"] = score(val[when], "unknown")
        numbers[f"validation_known_false_idk_rate_{when}"] = score(val[when], "known", "refusal_share")
        numbers[f"validation_known_accuracy_{when}"] = score(val[when], "known")
    numbers["n"] |= {
        "validation_known": len(val_known),
        "validation_unknown": len(validation["unknown_eval"]),
    }
    numbers["idk_gap_after"] = _gap(numbers)
    idk_fragment(run_dir, numbers, before, after, probes, name)
    log.info(
        "idk: done: unknown IDK rate %.3f -> %.3f, known false IDK %.3f -> %.3f, known accuracy %.3f -> %.3f",
        numbers["unknown_idk_rate_before"], numbers["unknown_idk_rate_after"], numbers["known_false_idk_rate_before"],
        numbers["known_false_idk_rate_after"], numbers["known_accuracy_before"], numbers["known_accuracy_after"],
    )  # fmt: skip
    return numbers


def _fresh_validation(run: RunDir, data_dir: Path, c: Any, seed: int) -> list[dict[str, Any]]:
    """Fresh names for validation, none of them the world's or a training draw's."""
    from pipelines.chat_eval import read_set
    from pipelines.idk.probe import validation_fresh_rows

    facts = json.loads((run.world / "facts.json").read_text())
    taken = [e["name"] for e in facts["entities"]]
    for name in ("fresh_idk", "fresh_search_miss"):
        if (data_dir / "splits" / f"{name}.jsonl").is_file():
            taken += [r["entity_name"] for r in read_set(data_dir, name)]
    return validation_fresh_rows(c.validation_fresh, seed, taken)


def _gap(numbers: dict[str, Any]) -> float | None:
    """IDK rate on unknown entities minus false refusals on known ones (the quality bar: >= 0.4)."""
    a, b = numbers.get("unknown_idk_rate_after"), numbers.get("known_false_idk_rate_after")
    return round(a - b, 4) if a is not None and b is not None else None
