"""The reward stage's part of the run report: held-out accuracy per group with the pairs behind each
number (``metrics/rm.md``) and the training curves (``plots/rm_curves.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.runtime import RunDir
from pipelines.train.curves import read_history


def markdown(numbers: dict[str, Any], index: dict[str, Any]) -> str:
    acc, train, held = (
        numbers["accuracy_by_group"],
        numbers["train_pairs_by_group"],
        numbers["heldout_pairs_by_group"],
    )
    lines = [
        f"Held-out pairwise accuracy **{numbers['heldout_pairwise_accuracy']:.3f}** over "
        f"{numbers['heldout_pairs']:,} pairs (0.5 is chance: a reward model that cannot tell the replies "
        f"apart; a tie counts half), mean margin {numbers['heldout_margin']:.3f}, after {numbers['steps']} steps "
        f"({numbers['epochs']:.2f} passes over {numbers['mixture_pairs']:,} mixture pairs) from `{numbers['init']}`.",
        "",
        "| group | training pairs | held-out pairs | held-out accuracy |",
        "| --- | ---: | ---: | ---: |",
    ]
    for group in sorted(set(train) | set(held)):
        a = acc.get(group)
        shown = f"{a:.3f}" if a is not None else "-"
        lines.append(f"| {group} | {train.get(group, 0):,} | {held.get(group, 0):,} | {shown} |")
    skipped = [
        f"{s['name']}: {', '.join(f'{k} {v}' for k, v in s['skipped'].items())}"
        for s in index.get("sources", [])
        if s.get("skipped")
    ]
    dropped = index.get("dropped") or {}
    if skipped or dropped:
        lines += ["", "Records skipped while reading: " + ("; ".join(skipped) or "none") + "."]
        lines += [
            "Pairs dropped while tokenizing: "
            + (", ".join(f"{k} ({v})" for k, v in dropped.items()) or "none")
            + "."
        ]
    return "\n".join(lines) + "\n"


def plot_curves(history: Path, out: Path, title: str) -> Path | None:
    """Loss and pairwise accuracy: every training step (a running mean over 10) and each held-out pass."""
    train, evals = read_history(history)
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(values: list[float]) -> np.ndarray:
        v = np.asarray(values, dtype=float)
        k = min(10, len(v))
        return np.convolve(v, np.ones(k) / k, mode="valid") if k > 1 else v

    steps = [r["step"] for r in train]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    loss = smooth([r["loss"] for r in train])
    left.plot(steps[len(steps) - len(loss) :], loss, lw=1, label="train (running mean)")
    right_train = [r["accuracy"] for r in train if "accuracy" in r]
    if right_train:
        a = smooth(right_train)
        right.plot(steps[len(steps) - len(a) :], a, lw=1, label="train (running mean)")
    if evals:
        e_steps = [r["step"] for r in evals]
        left.plot(e_steps, [r["val_loss"] for r in evals], "o-", ms=4, label="held out")
        right.plot(e_steps, [r["heldout_accuracy"] for r in evals], "o-", ms=4, label="held out")
    left.axhline(np.log(2), color="grey", ls="--", lw=1, label="chance (log 2)")
    right.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    left.set(xlabel="step", ylabel="Bradley-Terry loss", title=f"{title}: loss")
    right.set(xlabel="step", ylabel="pairwise accuracy", title=f"{title}: accuracy", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_report(run: RunDir, name: str, numbers: dict[str, Any], index: dict[str, Any]) -> None:
    run.metrics.mkdir(parents=True, exist_ok=True)
    (run.metrics / f"{name}.md").write_text(markdown(numbers, index))
    plot_curves(run.metrics / f"{name}.jsonl", run.plots / f"{name}_curves.png", "reward model")
