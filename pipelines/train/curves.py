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
        bpb = numbers.get("val_bpb")
        lines.append(
            f"Validation loss {val:.4f} nats/token{f' ({bpb:.4f} bits per byte)' if bpb is not None else ''} "
            f"against {unigram:.4f} nats for the best context-free (unigram) model of the same tokens: "
            f"{100 * (1 - val / unigram):.1f}% lower, so the model predicts from context."
        )
        lines.append("")
    if evals:
        # a column only where the stage records it (SFT counts examples, not tokens, and has no bits/byte)
        columns = [("step", "step", "{:,}"), ("tokens_seen", "tokens seen", "{:,}")]
        columns += [("examples_seen", "examples seen", "{:,}"), ("val_loss", "val loss", "{:.4f}")]
        columns += [("val_bpb", "val bits/byte", "{:.4f}")]
        shown = [c for c in columns if any(r.get(c[0]) is not None for r in evals)]
        if "tokens_seen" in {c[0] for c in shown}:
            shown = [c for c in shown if c[0] != "examples_seen"]
        lines.append("| " + " | ".join(title for _, title, _ in shown) + " |")
        lines.append("|" + " ---: |" * len(shown))
        for r in evals:
            cells = [fmt.format(r[key]) if r.get(key) is not None else "" for key, _, fmt in shown]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
