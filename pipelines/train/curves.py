"""The run report's view of a training stage: its metrics JSONL read back, loss curves (PNG) and a
markdown fragment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def plot_losses(
    train: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    out: Path,
    title: str,
    unigram_entropy: float | None = None,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def markdown(numbers: dict[str, Any], evals: list[dict[str, Any]]) -> str:
    """The report fragment: what the validation loss means, and the validation curve as a table.

    The headline numbers themselves are in summary.json (the report prints them), and the loss plot
    is plots/pretrain_loss.png (the report embeds it), so neither is repeated here.
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
