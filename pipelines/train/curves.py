"""The run report's view of a training stage: its metrics JSONL read back, the loss plot and its section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.report import pyplot, save_plot, scalars, table
from pipelines.run_dir import RunDir, read_summary


def read_history(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, validation records) from metrics/<stage>.jsonl, one per step, in step order.

    A resumed run repeats the steps after its checkpoint; the last record of a step wins, which is the
    one the final model actually went through.
    """
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "loss" in record:
            train[record["step"]] = record
        if "val_loss" in record:
            evals[record["step"]] = record
    return [train[s] for s in sorted(train)], [evals[s] for s in sorted(evals)]


def loss_figure(
    train: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    title: str,
    unigram_entropy: float | None = None,
) -> Any:
    """Training and validation loss against steps, with the unigram baseline when given."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, alpha=0.8, label="train")
    if evals:
        ax.plot(
            [r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", ms=4, lw=1.5, label="validation"
        )
    if unigram_entropy is not None:
        ax.axhline(unigram_entropy, color="grey", ls="--", lw=1, label="unigram entropy (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def training_section(run: RunDir, name: str, title: str) -> str:
    """The report section of a training stage: its numbers, what its validation loss means, the
    validation curve, the loss plot (``plots/<name>_loss.png``) and any fragments it left
    (``metrics/<name>.samples.md``: samples of the model)."""
    numbers = read_summary(run).get(name)
    if not numbers:
        return ""
    train, evals = read_history(run.metrics_log(name))
    out = [table(scalars(numbers)), "", markdown(numbers, evals)]
    if train or evals:
        fig = loss_figure(train, evals, title, numbers.get("unigram_entropy"))
        out += [save_plot(fig, run, name, "loss"), ""]
    samples = run.fragment(name, "samples")
    if samples.is_file():
        out.append(samples.read_text())
    return "\n".join(out)


def markdown(numbers: dict[str, Any], evals: list[dict[str, Any]]) -> str:
    """The report fragment: what the validation loss means, and the validation curve as a table.

    The headline numbers and the loss plot are the rest of ``training_section``.
    """
    lines = []
    val, unigram = numbers.get("val_loss"), numbers.get("unigram_entropy")
    if val is not None and unigram:
        lines.append(
            f"Validation loss {val:.4f} nats/token ({numbers.get('val_bpb', float('nan')):.4f} bits per byte) "
            f"against {unigram:.4f} nats for the best context-free (unigram) model of the same tokens: "
            f"{100 * (1 - val / unigram):.1f}% lower, so the model predicts from context."
        )
        lines.append("")
    if evals:
        lines += ["| step | tokens seen | val loss | val bits/byte |", "| ---: | ---: | ---: | ---: |"]
        lines += [
            f"| {r['step']:,} | {r.get('tokens_seen', 0):,} | {r['val_loss']:.4f} | {r.get('val_bpb', float('nan')):.4f} |"
            for r in evals
        ]
        lines.append("")
    return "\n".join(lines)
