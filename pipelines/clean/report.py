"""The clean stage's section of report.md: counts, drops per step and reason, languages, a funnel plot."""

from __future__ import annotations

from typing import Any

from pipelines import storage
from pipelines.report import pyplot, save_plot, table
from pipelines.run_dir import RunDir

HEADLINE = (
    "records",
    "clean",
    "rejected",
    "record_errors",
    "file_errors",
    "counts_add_up",
    "documents_per_second",
    "seconds",
)


def report_section(run: RunDir, name: str = "clean") -> str:
    stats = storage.read_json(run.at("stats"))
    if not stats:
        return ""
    out = [
        table([(k, stats[k]) for k in HEADLINE if k in stats]),
        "",
        "Dropped documents per step and reason:",
        "",
    ]
    rows = [
        (f"{step} / {reason}", n)
        for step, reasons in stats.get("drops", {}).items()
        for reason, n in reasons.items()
    ]
    out.append(table(rows, ("step / reason", "documents")) if rows else "(none)")
    if stats.get("counts"):
        rows = [
            (f"{step} / {what}", n) for step, names in stats["counts"].items() for what, n in names.items()
        ]
        out += [
            "",
            "Changes that kept the document (e.g. PII replaced):",
            "",
            table(rows, ("step / what", "count")),
        ]
    if stats.get("languages"):
        out += [
            "",
            "Clean documents per language:",
            "",
            table(sorted(stats["languages"].items()), ("language", "documents")),
        ]
    if plot := _funnel(run, name, stats):
        out += ["", plot]
    return "\n".join(out)


def _funnel(run: RunDir, name: str, stats: dict[str, Any]) -> str:
    """Where the crawl's documents went: kept, or dropped by which step."""
    per_step = {step: sum(reasons.values()) for step, reasons in stats.get("drops", {}).items()}
    if not per_step:
        return ""
    plt = pyplot()
    labels = ["clean", *per_step]
    values = [stats.get("clean", 0), *per_step.values()]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh(labels[::-1], values[::-1], color=["#4c72b0"] * len(per_step) + ["#55a868"])
    ax.set_xlabel("documents")
    ax.set_title("Where the crawl's documents went")
    fig.tight_layout()
    return save_plot(fig, run, name, "funnel")
