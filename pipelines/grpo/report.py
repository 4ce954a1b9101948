"""The GRPO stage's report: the curves over training, the before/after table with the control, the tool
table, the sample accounting, and the headline numbers for metrics/summary.json.

``run`` calls ``write_results`` at the stage's end (numbers and ``metrics/<name>.results.md``);
``report_section`` draws the plots from what the run left (``metrics/<name>.jsonl`` and the summary),
so ``raychat report`` redraws them. Plots (``<run>/plots/<name>_*.png``): reward (mean and per component) and accuracy; the "aha" curve
(response length and the share of answers that revise themselves); KL, entropy and clip fraction;
throughput (samples/s), idle shares and the staleness histogram; held-out accuracy before, after and
of the SFT control, with standard errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lm import atomic
from lm.files import read_jsonl
from pipelines.grpo.config import GRPOConfig
from pipelines.report import pyplot, save_plot, scalars, table
from pipelines.run_dir import RunDir, read_summary


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return read_jsonl(path)


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _smooth(values: list[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def plot_curves(rows: list[dict[str, Any]], run: RunDir, name: str) -> list[str]:
    """The training curves and the throughput figure; their markdown images."""
    plt = pyplot()
    if not rows:
        return []
    steps = [r["step"] for r in rows]
    window = max(1, len(rows) // 10)

    def series(ax, key: str, label: str | None = None, **kw: Any) -> None:
        values = [r.get(key) for r in rows]
        pts = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None]
        if not pts:
            return
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, alpha=0.3, **kw)
        ax.plot(xs, _smooth(list(ys), window), label=label or key, **kw)

    out = []
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    ax = axes[0][0]
    skip = ("reward_mean", "reward_std", "reward_failed")
    components = list(dict.fromkeys(k for r in rows for k in r if k.startswith("reward_") and k not in skip))
    if len(components) == 1:  # the mean is that one reward: one line, named by it
        series(ax, "reward_mean", f"reward: {components[0].removeprefix('reward_')}", color="C0")
    else:
        series(ax, "reward_mean", "reward (weighted mean)", color="C0")
        for i, key in enumerate(components):
            series(ax, key, key.removeprefix("reward_"), color=f"C{i + 1}")
    ax.set_title("reward")
    ax.legend(fontsize=7)
    series(axes[0][1], "accuracy", color="C2")
    axes[0][1].set_title("training accuracy")
    series(axes[0][2], "response_length", color="C3")
    axes[0][2].set_title("response length (tokens)")
    series(axes[1][0], "revise_share", color="C4")
    axes[1][0].set_title("answers that revise themselves")
    series(axes[1][1], "kl", "KL to reference", color="C5")
    series(axes[1][1], "entropy", "entropy", color="C6")
    axes[1][1].set_title("KL and entropy")
    axes[1][1].legend(fontsize=7)
    series(axes[1][2], "clip_frac", "clip fraction (left)", color="C7")
    axes[1][2].set_ylabel("share of tokens clipped")
    calls = axes[1][2].twinx()  # calls per answer are counts, not shares: their own scale
    tools = {"calc": "calculator", "search": "search"}
    for i, (tool, label) in enumerate(tools.items()):
        if any(r.get(f"tool_{tool}_per_completion") for r in rows):  # a tool never called: no flat line
            series(calls, f"tool_{tool}_per_completion", f"{label} calls / answer (right)", color=f"C{8 + i}")
    calls.set_ylim(bottom=0)
    for share in (axes[1][0], axes[1][2]):  # shares start at 0, a flat 0 stays at the bottom
        share.set_ylim(0, max(0.05, share.get_ylim()[1]))
    axes[1][2].set_title("clipping and tool calls")
    lines = axes[1][2].get_lines() + calls.get_lines()
    named = [ln for ln in lines if not ln.get_label().startswith("_")]
    axes[1][2].legend(named, [ln.get_label() for ln in named], fontsize=7)
    for a in axes.flat:
        a.set_xlabel("learner step")
    fig.suptitle("GRPO over training (light: per step; dark: moving average)")
    fig.tight_layout()
    out.append(save_plot(fig, run, name, "curves", dpi=100))

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    series(axes[0], "samples_per_s", color="C0")
    axes[0].set_title("samples / s")
    series(axes[1], "idle_generators", "generators", color="C1")
    series(axes[1], "idle_learner", "learner", color="C2")
    axes[1].set_title("idle share")
    axes[1].legend(fontsize=7)
    hist: dict[int, int] = {}
    for r in rows:
        for k, v in r.get("staleness", {}).items():
            hist[int(k)] = hist.get(int(k), 0) + v
    axes[2].bar([str(k) for k in sorted(hist)], [hist[k] for k in sorted(hist)], color="C3")
    axes[2].set_title("staleness of trained groups (versions)")
    for a in axes[:2]:
        a.set_xlabel("learner step")
    fig.tight_layout()
    out.append(save_plot(fig, run, name, "throughput", dpi=100))
    return out


def plot_accuracy(bars: list[tuple[str, float, float]], run: RunDir, name: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    names = [b[0] for b in bars]
    ax.bar(
        names,
        [b[1] for b in bars],
        yerr=[2 * b[2] for b in bars],
        capsize=6,
        color=["C7", "C0", "C1"][: len(bars)],
    )
    ax.set_ylabel("held-out accuracy (+-2 s.e.)")
    ax.set_ylim(0, max(0.05, max(b[1] + 2 * b[2] for b in bars) * 1.2))
    ax.set_title("before and after GRPO, and the SFT control")
    fig.tight_layout()
    return save_plot(fig, run, name, "heldout", dpi=100)


def report_section(run: RunDir, name: str) -> str:
    """The headline numbers, the held-out bars, the curves, then the tables ``write_results`` left."""
    numbers = read_summary(run).get(name)
    if not numbers:
        return ""
    out = [table(scalars(numbers)), ""]
    bars = [
        (label, numbers[key], numbers.get(f"{key}_stderr") or 0.0)
        for label, key in (
            ("before", "heldout_accuracy_before"),
            ("after GRPO", "heldout_accuracy_after"),
            ("SFT control", "control_sft_accuracy"),
        )
        if numbers.get(key) is not None
    ]
    if bars:
        out += [plot_accuracy(bars, run, name), ""]
    out += [*plot_curves(read_metrics(run.metrics_log(name)), run, name), ""]
    results = run.fragment(name, "results")
    if results.is_file():
        out.append(results.read_text())
    return "\n".join(out)


def _components_line(
    components: dict[str, dict[str, Any]], rows: list[dict[str, Any]], cfg: GRPOConfig
) -> str:
    """Each reward's first and last steps: the rules against the reward model, side by side."""
    parts = [
        f"{k} {v['first_steps']:.3f} -> {v['last_steps']:.3f}"
        for k, v in components.items()
        if v["first_steps"] is not None and v["last_steps"] is not None
    ]
    line = f"- per reward, first steps -> last: {', '.join(parts) or '-'}"
    rm = cfg.rewards.rm
    if rm is not None:
        how = "standardised within each group" if rm.normalize == "group" else "raw"
        failed = _mean(rows, "rm_failed") or 0.0
        line += (
            f" (rm is the reward model's raw score; the reward adds {rm.weight:g} x the score {how}; "
            f"its calls failed for {failed:.1%} of the samples)"
        )
    return line


def write_results(
    run: RunDir,
    name: str,
    cfg: GRPOConfig,
    before: dict[str, Any],
    after: dict[str, Any],
    control: dict[str, Any] | None,
    counts: dict[str, Any],
    state: Any,
    cpu_s: float,
    wall_s: float,
    model_dir: str,
) -> dict[str, Any]:
    """``metrics/<name>.results.md`` (the tables) and the stage's headline numbers (returned, for
    summary.json)."""
    rows = read_metrics(run.metrics_log(name))

    head = rows[: max(1, min(5, len(rows) // 4))]
    tail = rows[-max(1, min(5, len(rows) // 4)) :]
    gain = after["accuracy"] - before.get("accuracy", 0.0)
    # the standard error of the gain, the difference of two estimates (unpaired: an upper bound, as
    # both are scored on the same problems), not of either estimate alone
    se = math.hypot(after["accuracy_stderr"], before.get("accuracy_stderr", 0.0))
    numbers: dict[str, Any] = {
        "mode": cfg.mode,
        "steps": state.version,
        "samples": state.samples,
        "heldout_problems": after["problems"],
        "heldout_accuracy_before": before.get("accuracy"),
        "heldout_accuracy_before_stderr": before.get("accuracy_stderr"),
        "heldout_accuracy_after": after["accuracy"],
        "heldout_accuracy_after_stderr": after["accuracy_stderr"],
        "heldout_gain": gain,
        "heldout_gain_stderr": se,
        "gain_over_two_stderr": gain > 2 * se,
        "reward_first_steps": _mean(head, "reward_mean"),
        "reward_last_steps": _mean(tail, "reward_mean"),
        "accuracy_first_steps": _mean(head, "accuracy"),
        "accuracy_last_steps": _mean(tail, "accuracy"),
        # each reward's own curve (rules by key, "rm": the reward model's raw score), first -> last steps
        "reward_components": {
            k.removeprefix("reward_"): {"first_steps": _mean(head, k), "last_steps": _mean(tail, k)}
            for k in (rows[-1] if rows else {})
            if k.startswith("reward_") and k not in ("reward_mean", "reward_std", "reward_failed")
        },
        "max_staleness": cfg.max_staleness,
        "staleness_histogram": {str(k): v for k, v in sorted(state.staleness.items())},
        "samples_per_s": state.samples / state.elapsed_s if state.elapsed_s else None,
        "idle_generators": _mean(rows, "idle_generators"),
        "idle_learner": _mean(rows, "idle_learner"),
        "counts": counts,
        "cpu_s": round(cpu_s, 1),
        "wall_s": round(wall_s, 1),
        "model_dir": model_dir,
    }
    if control:
        numbers["control_sft_accuracy"] = control["eval"]["accuracy"]
        numbers["control_sft_accuracy_stderr"] = control["eval"]["accuracy_stderr"]
        numbers["control_sft_steps"] = control["steps"]
        numbers["control_sft_cpu_s"] = round(control["cpu_s"], 1)

    lines = ["### Held-out accuracy", ""]
    lines += [
        "| model | accuracy | s.e. | calculator calls / answer | answers calling it | length | revises |"
    ]
    lines += ["| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    table = [("starting model", before), ("after GRPO", after)]
    if control:
        table.append(
            (f"SFT control ({control['steps']} steps, {control['cpu_s']:.0f} CPU s)", control["eval"])
        )
    for label, ev in table:
        if not ev:
            continue
        lines.append(
            f"| {label} | {ev['accuracy']:.3f} | {ev['accuracy_stderr']:.3f} | {ev['calc_calls_per_answer']:.2f} "
            f"| {ev['answers_calling_calc']:.2f} | {ev['response_length']:.0f} | {ev['revise_share']:.3f} |"
        )
    lines += [
        "",
        f"{after['problems']} held-out problems; gain {gain:+.3f}, standard error of the gain {se:.3f} "
        f"({'beyond' if gain > 2 * se else 'within'} two standard errors: "
        f"{'a gain' if gain > 2 * se else 'not distinguishable from noise'}).",
        "",
    ]
    lines += ["### Training", ""]
    lines += [
        f"- {state.version} learner steps, {state.samples:,} trained samples, {wall_s:.0f} s wall, "
        f"{cpu_s:.0f} CPU s over all processes; max staleness {cfg.max_staleness}, staleness of trained "
        f"samples {numbers['staleness_histogram']}",
        f"- reward {numbers['reward_first_steps']:.3f} over the first steps -> {numbers['reward_last_steps']:.3f} "
        "over the last"
        if rows
        else "- no steps",
        _components_line(numbers["reward_components"], rows, cfg),
        f"- sample accounting: {json.dumps(counts, sort_keys=True)}",
        "",
    ]
    for label, ev in table:
        for ex in (ev or {}).get("examples", [])[:1]:
            reply = ex["reply"].replace("\n", " ").replace("|", "\\|")[:300]
            lines.append(
                f"- {label}, {'right' if ex['right'] else 'wrong'}: *{ex['question'][:120]}* -> `{reply}`"
            )
    atomic.write_text(run.fragment(name, "results"), "\n".join(lines) + "\n")
    return numbers
