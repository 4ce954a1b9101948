"""``raychat eval``'s results kept: every reply with its verdict, the numbers in the run's summary
under ``eval`` (one entry per ``<model>:<task>``, the latest evaluation of each), and a table in
report.md, so evaluations made before and after the stages sit beside the stages' own numbers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lm.engine import SamplingParams
from pipelines.evaluation.tasks import Task
from pipelines.run_dir import RunDir, read_summary, update_summary

SUMMARY_KEY = "eval"


def ks_for(n: int) -> tuple[int, ...]:
    """pass@k for k = 1, 2, 4, ... and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return (*ks, n)


def record(
    run: RunDir,
    task: Task,
    model: str,
    source: str,
    replies: list[list[str]],
    params: SamplingParams,
    seconds: float,
) -> dict[str, Any]:
    """Judge the replies, write them and the numbers; return the numbers."""
    from lm.evaluation import summarize

    correct: list[list[bool]] = []
    missing = 0
    for item, texts in zip(task.items, replies, strict=True):
        if not texts:  # a server that answered with no choice: every sample of the problem failed
            missing += 1
            correct.append([False] * params.n)
            continue
        correct.append([task.judge(item, t) for t in texts])
    numbers: dict[str, Any] = dict(summarize(correct, ks_for(params.n)))
    numbers |= {
        "model": model,
        "source": source,
        "task": task.name,
        "temperature": params.temperature,
        "max_tokens": params.max_tokens,
        "seconds": round(seconds, 2),
        **({"problems_without_reply": missing} if missing else {}),
        **task.notes,
    }
    name = f"{_safe(model)}__{task.name}"
    out_dir = run.metrics / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    replies_file = out_dir / f"{name}.jsonl"
    with replies_file.open("w", encoding="utf-8") as f:
        for item, texts, right in zip(task.items, replies, correct, strict=True):
            reference = item.reference if isinstance(item.reference, str) else _short(item.reference)
            row = {
                "id": item.id,
                "messages": item.messages,
                "reference": reference,
                "replies": texts,
                "right": right,
            }
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    numbers["replies_file"] = str(replies_file)
    entries = dict(read_summary(run).get(SUMMARY_KEY) or {})
    entries[f"{model}:{task.name}"] = numbers
    update_summary(run, SUMMARY_KEY, entries)
    return numbers


def _short(row: Any) -> Any:
    """A world row's answer fields, not the whole row."""
    if isinstance(row, dict):
        return {k: row[k] for k in ("short_answer", "final", "answer", "entity") if k in row} or row
    return row


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def report_section(entries: dict[str, Any]) -> str:
    """The run's evaluations as one table (report.md's ``eval`` section)."""
    lines = [
        "`raychat eval` results (the latest of each model and task; replies in `metrics/eval/`).",
        "",
        "| model | task | problems | samples each | accuracy | pass@k | temperature |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for key in sorted(entries):
        n = entries[key]
        if not isinstance(n, dict) or "accuracy" not in n:
            continue
        per = n["samples"] // max(1, n["problems"])
        passes = ", ".join(
            f"{k} {n[k]:.3f}"
            for k in sorted(n, key=_k)
            if k.startswith("pass@") and k[5:].isdigit() and k != "pass@1"
        )
        lines.append(
            f"| {n.get('model', key)} | {n.get('task', '')} | {n['problems']:,} | {per} | "
            f"{n['accuracy']:.3f} +- {n['accuracy_stderr']:.3f} | {passes or '-'} | {n.get('temperature', '')} |"
        )
    return "\n".join(lines)


def _k(key: str) -> int:
    tail = key[5:]
    return int(tail) if tail.isdigit() else 0
