"""The run's report card: every stage's section, in graph order, in one markdown file (report.md).

Each stage renders its own section (its job module's ``report_section(run, name)``, from what it left
in the run directory); a stage without one gets a table of its headline numbers from
metrics/summary.json. This module only assembles them and offers the helpers sections share (tables,
plots), so adding a stage never means editing a report template. The runner writes the report after
every stage, so ``raychat <stage>`` alone refreshes it too; it works on URI run directories as well
(the file and the plots are written through pipelines/storage.py).
"""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.report_terms import terms_section
from pipelines.run_dir import RunDir, read_summary

if TYPE_CHECKING:
    from pipelines.stages import Graph

log = logging.getLogger("raychat")


def table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("metric", "value")) -> str:
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


def scalars(numbers: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in numbers.items() if isinstance(v, int | float | str | bool)]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (no display on a cluster node)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plot(fig: Any, run: RunDir, stage: str, name: str, dpi: int = 110) -> str:
    """Write ``fig`` to ``plots/<stage>_<name>.png`` (local or URI) and return its markdown image."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    location, link = run.plot(stage, name)
    storage.write_bytes_atomic(location, buffer.getvalue())
    return f"![{stage}_{name}]({link})"


def write_report(graph: Graph) -> str:
    """Write ``<run>/report.md`` for the stages of ``graph`` that have numbers; return its location."""
    run = RunDir(graph.cfg.run_dir)
    summary = read_summary(run)
    parts = [f"# raychat run report: `{run.location}`", "", at_a_glance(graph, summary), ""]
    for stage in graph:
        if stage.name not in summary:
            continue
        module = stage.module()
        body = module.report_section(run, stage.name) if hasattr(module, "report_section") else ""
        if not body and isinstance(summary[stage.name], dict):
            body = table(scalars(summary[stage.name]))
        parts += [f"## {stage.name}", "", body.strip(), ""]
    extra = {k: v for k, v in summary.items() if k not in graph}
    if isinstance(extra.get("eval"), dict):  # raychat eval's results, not a stage's
        from pipelines.evaluation.report import report_section as eval_section

        parts += ["## eval", "", eval_section(extra.pop("eval")), ""]
    for key in [k for k, v in extra.items() if isinstance(v, dict)]:  # e.g. sft's `search` numbers
        parts += [f"## {key}", "", table(scalars(extra.pop(key))), ""]
    if extra:
        parts += ["## other", "", "```json", json.dumps(extra, indent=2, default=str), "```", ""]
    text = "\n".join(parts)
    terms = terms_section(text)  # the glossary of the terms this report uses
    if terms:
        text += "\n" + terms
    location = run.at("report")
    storage.write_bytes_atomic(location, text.encode("utf-8"))
    log.info("report: %s", location)
    return location


def glance(graph: Graph, summary: dict[str, Any]) -> list[tuple[str, str, float | None]]:
    """(stage, what it did to its number, seconds) for each stage of ``graph`` that ran. A stage
    module's ``summary_line(numbers)`` says it in words; else its headline numbers."""
    from pipelines.console import headline

    rows = []
    for stage in graph:
        numbers = summary.get(stage.name)
        if not isinstance(numbers, dict):
            continue
        module = stage.module()
        try:
            if hasattr(module, "summary_line"):
                line = module.summary_line(numbers)
            else:
                line = headline(numbers, getattr(module, "HEADLINE", ()))
        except (KeyError, TypeError, ValueError) as e:  # an older run's numbers: show what there is
            line = f"({type(e).__name__}: {e})"
        seconds = numbers.get("seconds")
        rows.append((stage.name, line, seconds if isinstance(seconds, int | float) else None))
    return rows


def at_a_glance(graph: Graph, summary: dict[str, Any]) -> str:
    """The one-screen summary at the top of report.md (``glance``, as a table)."""
    rows = ["## At a glance", "", "| stage | what it did | seconds |", "| --- | --- | ---: |"]
    for name, line, seconds in glance(graph, summary):
        rows.append(f"| {name} | {line} | {'' if seconds is None else f'{seconds:,.0f}'} |")
    return "\n".join(rows)
