"""The post-training stages' evaluations, kept and shown: run a model through pipelines/chat_eval.py,
store the full results under ``metrics/eval_<model>.json``, and write report tables and transcripts.

A stored evaluation is reused only while what it scored is unchanged: the model directory (its
raychat.json and weights files), the questions (the world's held-out splits, or the rows a caller
gives, such as distill's held-out file) and the search corpus. So the "I don't know" stage reads the
SFT model's scores instead of generating them again, while a retrained model, a redone world or an
edited held-out file is always scored anew.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig
from pipelines.run_dir import RunDir
from pipelines.storage import read_json, write_json

log = logging.getLogger("raychat.sft")


def world_data_dir(run: RunDir) -> Path:
    """Where the sft stage writes the tiny world's post-training data (pipelines/sft/world_data.py)."""
    return run.local("sft_data")


def _stamp(model_dir: str | Path, run: RunDir, rows_by_set: dict[str, list[dict[str, Any]]] | None) -> str:
    """What the scores were computed from besides the settings, as one short hash."""
    from pipelines.train.fingerprints import file_stamp, fingerprint, model_fingerprint

    parts: list[str | bytes] = [model_fingerprint(Path(model_dir))]
    if rows_by_set is not None:
        parts.append(json.dumps(rows_by_set, sort_keys=True, ensure_ascii=False))
    for split in sorted((world_data_dir(run) / "splits").glob("*.json*")):  # a few MB: read, not timed
        parts += [split.name, split.read_bytes()]
    corpus = run.world / "search_index.jsonl"
    if corpus.is_file():
        parts.append(file_stamp(corpus))
    return fingerprint(*parts)


def evaluate_model(
    cfg: RunConfig,
    model_dir: str | Path,
    names: list[str],
    label: str | None = None,
    rows_by_set: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``names`` (chat_eval CONDITIONS) scored for ``model_dir`` on the run's held-out sets (or on
    ``rows_by_set``: give those a ``label`` of their own); results already stored under the label for
    the same model and conditions are reused."""
    from pipelines.chat_eval import ChatSession, evaluate

    run = RunDir(Path(cfg.run_dir).resolve())
    label = label or Path(model_dir).name
    path = run.metrics / f"eval_{label}.json"
    stored = read_json(path) or {}
    stamp = _stamp(model_dir, run, rows_by_set)
    if stored.get("stamp") == stamp and stored.get("settings") == _settings(cfg):
        have = stored.get("results", {})
        if all(n in have for n in names):
            log.info("eval: %s already scored on %s (%s)", model_dir, ", ".join(names), path)
            return {n: have[n] for n in names}
    else:
        stored = {}
    corpus = run.world / "search_index.jsonl"
    with ChatSession(model_dir, cfg.sft.eval, search_corpus=corpus, search=cfg.sft_data) as session:
        results = evaluate(
            session, names, world_data_dir(run), cfg.sft_data, cfg.sft.eval, cfg.seed, rows_by_set
        )
    merged = {**stored.get("results", {}), **results}
    write_json(
        path,
        {
            "model_dir": str(model_dir),
            "stamp": stamp,
            "settings": _settings(cfg),
            "results": merged,
        },
    )
    for name, r in results.items():
        log.info("eval: %s %s: %s = %s (n=%d)", label, name, _primary_name(name), r["primary"], r["n"])
    return results


def _settings(cfg: RunConfig) -> dict[str, Any]:
    """What changes the scores besides the model: the eval settings and the data's seed and sizes."""
    return {"eval": cfg.sft.eval.model_dump(mode="json"), "data": cfg.sft_data.model_dump(mode="json")}


def _primary_name(name: str) -> str:
    from pipelines.chat_eval import CONDITIONS

    return CONDITIONS[name].primary


def score(results: dict[str, dict[str, Any]], name: str, key: str | None = None) -> Any:
    """One number of one condition (its primary one by default); None when not evaluated."""
    r = results.get(name)
    if r is None:
        return None
    return r["primary"] if key is None else r["scores"].get(key)


# -- the report --------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def metrics_table(rows: list[tuple[str, Any, Any, str]]) -> str:
    """``(metric, value, questions, what it is)`` rows as a markdown table."""
    lines = ["| metric | value | questions | what |", "| --- | ---: | ---: | --- |"]
    lines += [f"| `{m}` | {_fmt(v)} | {_fmt(n)} | {what} |" for m, v, n, what in rows]
    return "\n".join(lines)


def transcript_section(title: str, example: dict[str, Any] | None) -> list[str]:
    from pipelines.chat_eval import transcript

    if example is None:
        return []
    ref = example.get("reference")
    notes = [f"reference: {ref}"] if ref is not None else []
    scores = {k: v for k, v in example.get("scores", {}).items() if k != "n" and isinstance(v, int | float)}
    if scores:  # the grader's verdict: a reader should not have to judge the reply by eye
        notes.append("judged: " + ", ".join(f"{k} {v:g}" for k, v in scores.items()))
    lines = [f"**{title}**" + (f" ({'; '.join(notes)})" if notes else ""), ""]
    return [*lines, transcript(example["messages"], example["reply"]), ""]


def pick_example(results: dict[str, dict[str, Any]], name: str, part: str | None = None, good: bool = True):
    """The first stored example of condition ``name`` whose reply has a ``part`` (search/calc) and
    whose headline score is ``good``; else its first example."""
    r = results.get(name)
    if not r or not r["examples"]:
        return None
    primary = _primary_name(name)
    for ex in r["examples"]:
        content = ex["reply"].get("content")
        has = part is None or (
            not isinstance(content, str) and any(p.get("type") == part for p in content or ())
        )
        if has and bool(ex["scores"].get(primary)) == good:
            return ex
    return r["examples"][0]


def write_fragment(run: RunDir, name: str, text: str) -> Path:
    """``metrics/<stage>.eval.md``: the evaluation part of a chat stage's report section."""
    from lm import atomic

    return atomic.write_text(run.fragment(name, "eval"), text.rstrip() + "\n")


def chat_report_section(run: RunDir, name: str, title: str) -> str:
    """A chat-training stage's report section: the trainer's numbers and loss plot, then its evaluation."""
    from pipelines.train.curves import training_section

    body = training_section(run, name, title)
    evaluation = run.fragment(name, "eval")
    return "\n".join([body, evaluation.read_text()]) if evaluation.is_file() else body


def dump(results: dict[str, Any]) -> str:
    return json.dumps(results, indent=2, default=str)
