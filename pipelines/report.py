"""The run's report card: every stage's headline numbers and plots in one markdown file.

Stages leave their numbers in metrics/summary.json, and optionally a markdown fragment
(metrics/<stage>.md) and plots (plots/<stage>_*.png); this module only assembles them, so adding a
stage never means editing a giant report template.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipelines.runtime import RunDir, read_json
from pipelines.stages import STAGES

log = logging.getLogger("raychat")


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("metric", "value")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | ---: |"]
    for key, value in rows:
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, float):
            value = f"{value:,.4g}"
        elif isinstance(value, int):
            value = f"{value:,}"
        lines.append(f"| {key} | {value} |")
    return "\n".join(lines)


def _scalars(numbers: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in numbers.items() if isinstance(v, int | float | str | bool)]


def clean_section(run: RunDir) -> str:
    stats = read_json(run.stats)
    if not stats:
        return ""
    out = [
        _table(
            [
                (k, stats[k])
                for k in (
                    "records",
                    "clean",
                    "rejected",
                    "record_errors",
                    "file_errors",
                    "counts_add_up",
                    "documents_per_second",
                    "seconds",
                )
                if k in stats
            ]
        ),
        "",
        "Dropped documents per step and reason:",
        "",
    ]
    rows = [
        (f"{step} / {reason}", n)
        for step, reasons in stats.get("drops", {}).items()
        for reason, n in reasons.items()
    ]
    out.append(_table(rows, ("step / reason", "documents")) if rows else "(none)")
    if stats.get("counts"):
        rows = [
            (f"{step} / {name}", n) for step, names in stats["counts"].items() for name, n in names.items()
        ]
        out += [
            "",
            "Changes that kept the document (e.g. PII replaced):",
            "",
            _table(rows, ("step / what", "count")),
        ]
    if stats.get("languages"):
        out += [
            "",
            "Clean documents per language:",
            "",
            _table(sorted(stats["languages"].items()), ("language", "documents")),
        ]
    _plot_clean(run, stats)
    return "\n".join(out)


def _plot_clean(run: RunDir, stats: dict[str, Any]) -> None:
    per_step = {step: sum(reasons.values()) for step, reasons in stats.get("drops", {}).items()}
    if not per_step:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run.plots.mkdir(parents=True, exist_ok=True)
    labels = ["clean", *per_step]
    values = [stats.get("clean", 0), *per_step.values()]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(labels[::-1], values[::-1], color=["#4c72b0"] * len(per_step) + ["#55a868"])
    ax.set_xlabel("documents")
    ax.set_title("Where the crawl's documents went")
    fig.tight_layout()
    fig.savefig(run.plots / "clean_funnel.png", dpi=110)
    plt.close(fig)


SECTIONS = {"clean": clean_section}


def write_report(run: RunDir) -> Path:
    summary = read_json(run.summary, {}) or {}
    parts = [f"# raychat run report: `{run.root}`", ""]
    for stage in STAGES:
        if stage not in summary and not any(run.metrics.glob(f"{stage}*.md")):
            continue
        parts += [f"## {stage}", ""]
        special = SECTIONS.get(stage)
        body = special(run) if special else ""
        if not body and stage in summary:
            body = _table(_scalars(summary[stage]))
        parts.append(body)
        for fragment in sorted(run.metrics.glob(f"{stage}*.md")) if run.metrics.is_dir() else []:
            parts += ["", fragment.read_text().strip()]
        for plot in sorted(run.plots.glob(f"{stage}_*.png")) if run.plots.is_dir() else []:
            parts += ["", f"![{plot.stem}](plots/{plot.name})"]
        parts.append("")
    extra = {k: v for k, v in summary.items() if k not in STAGES}
    if extra:
        parts += ["## other", "", "```json", json.dumps(extra, indent=2, default=str), "```", ""]
    run.root.mkdir(parents=True, exist_ok=True)
    run.report.write_text("\n".join(parts))
    log.info("report: %s", run.report)
    return run.report
