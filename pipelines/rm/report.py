"""The reward stage's part of the run report: its numbers, held-out accuracy per group with the pairs
behind each number (``metrics/<stage>.pairs.md``, written when the stage ends, since it needs what
reading the pairs skipped) and the training curves (``plots/<stage>_curves.png``, drawn with the report)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lm import atomic
from pipelines.report import pyplot, save_plot, scalars, table
from pipelines.run_dir import RunDir, read_summary
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


def curves_figure(train: list[dict[str, Any]], evals: list[dict[str, Any]], title: str) -> Any:
    """Loss and pairwise accuracy: every training step (a running mean over 10) and each held-out pass."""
    plt = pyplot()

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
    return fig


def write_fragment(run: RunDir, name: str, numbers: dict[str, Any], index: dict[str, Any]) -> None:
    """``metrics/<name>.pairs.md``: the per-group table and what was skipped or dropped."""
    atomic.write_text(run.fragment(name, "pairs"), markdown(numbers, index))


def rm_report_section(run: RunDir, name: str) -> str:
    """The stage's numbers, its per-group table and the curves (``plots/<name>_curves.png``)."""
    numbers = read_summary(run).get(name)
    if not numbers:
        return ""
    out = [table(scalars(numbers)), ""]
    pairs = run.fragment(name, "pairs")
    if pairs.is_file():
        out += [pairs.read_text(), ""]
    train, evals = read_history(run.metrics_log(name))
    if train:
        out.append(save_plot(curves_figure(train, evals, "reward model"), run, name, "curves"))
    return "\n".join(out)
