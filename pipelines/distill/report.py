"""The distill stage's part of report.md: teacher, student, control (and the logit-distilled student)
side by side (a table and a bar plot), which distillation won, what rejection sampling kept and why it
dropped the rest, the training curves at the same compute, and one kept trace."""

from __future__ import annotations

import math
from typing import Any

from pipelines.report import pyplot, save_plot
from pipelines.run_dir import RunDir, read_summary
from pipelines.sft.scorecard import metrics_table, transcript_section
from pipelines.sft.scorecard import write_fragment as write_eval_fragment

WHO = (
    ("teacher", "the teacher"),
    ("student", "the student, SFT on the kept traces + non-reasoning data"),
    ("student_sft_only", "the same student, SFT on the sft stage's mixture alone (same compute)"),
    (
        "student_logit",
        "the same student, logit distillation: KL to the teacher's tokens on the same data (same steps)",
    ),
)


def control_stage(name: str) -> str:
    """The control's own training run (its checkpoints and curve)."""
    return f"{name}_control"


def logit_stage(name: str) -> str:
    """The logit-distilled student's own training run."""
    return f"{name}_logit"


def _stderr(accuracy: float, n: int) -> float:
    """The binomial standard error of an accuracy on ``n`` problems."""
    return math.sqrt(accuracy * (1 - accuracy) / max(1, n))


def logit_verdict(numbers: dict[str, Any]) -> dict[str, Any]:
    """Which distillation won on the held-out problems, and whether the gap is beyond noise: two
    standard errors of the difference of two accuracies on ``n`` problems (binomial, unpaired; the
    problems are the same, so this is conservative)."""
    logit, seq, n = numbers["student_logit_accuracy"], numbers["student_accuracy"], numbers["n_heldout"]
    gap = logit - seq
    two_se = 2 * math.hypot(_stderr(logit, n), _stderr(seq, n))
    winner = "tie" if gap == 0 else "logit" if gap > 0 else "sequence"
    return {
        "logit_minus_sequence": round(gap, 4),
        "logit_gap_two_se": round(two_se, 4),
        "logit_winner": winner,
        "logit_gap_significant": abs(gap) > two_se,
    }


def verdict_line(numbers: dict[str, Any]) -> str:
    """One sentence: which distillation won at the same student compute, and by how much."""
    logit, seq = numbers["student_logit_accuracy"], numbers["student_accuracy"]
    gap, two_se, n = numbers["logit_minus_sequence"], numbers["logit_gap_two_se"], numbers["n_heldout"]
    if numbers["logit_winner"] == "tie":
        head = f"Logit and sequence-level distillation tie at {seq:.3f}"
    else:
        won = "Logit" if gap > 0 else "Sequence-level"
        head = f"{won} distillation won: {logit:.3f} (logit) against {seq:.3f} (sequence-level)"
    noise = "beyond" if numbers["logit_gap_significant"] else "within"
    share = numbers.get("logit_teacher_forward_share")
    cost = (
        f"; the teacher's forward on the same rows added about {100 * share:.0f}% to the student's FLOPs"
        if share is not None
        else ""
    )
    return (
        f"{head} on {n} held-out problems, same init, data, rows and {numbers.get('logit_steps')} steps; "
        f"the gap {gap:+.3f} is {noise} noise (2 standard errors: {two_se:.3f}){cost}."
    )


def write_fragment(
    run: RunDir,
    name: str,
    numbers: dict[str, Any],
    counts: dict[str, Any],
    results: dict[str, dict[str, Any]],
) -> None:
    """``metrics/<name>.eval.md``: the accuracy table, the rejection counts and an example each."""
    n = numbers["n_heldout"]
    rows = [
        (f"{name}.{who}_accuracy", numbers.get(f"{who}_accuracy"), n, what)
        for who, what in WHO
        if f"{who}_accuracy" in numbers
    ]
    rejected = ", ".join(f"{k} {v}" for k, v in counts["rejected"].items() if v) or "none"
    start = f"starting from `{numbers['student_init']}`" if numbers.get("student_init") else "fresh weights"
    lines = [
        f"Teacher `{numbers['teacher']}` ({numbers['teacher_params']:,} parameters) answered "
        f"{counts['problems']:,} problems x {counts['samples'] // max(1, counts['problems'])} samples; "
        f"rejection sampling kept {counts['kept']:,} of {counts['samples']:,} replies "
        f"({100 * counts['keep_rate']:.1f}%, {counts['problems_with_a_kept_reply']:,} problems), rejected: "
        f"{rejected}. The student ({numbers['student_params']:,} parameters, {start}) trained on "
        f"{counts['traces']:,} traces + {counts['other']:,} non-reasoning conversations for {numbers['steps']} "
        f"steps ({numbers['compute_tokens']:,} token positions)"
        + (
            "; the control for the same steps on the sft stage's mixture"
            if "control_steps" in numbers
            else ""
        )
        + ("; the logit-distilled student on the same data and steps" if "logit_steps" in numbers else "")
        + ".",
        "",
        "Held-out accuracy (`questions`: problems behind each value):",
        "",
        metrics_table(rows),
        "",
    ]
    if "logit_winner" in numbers:
        s = numbers["logit_settings"]
        over = "the full vocabulary" if s["top_k"] is None else f"the teacher's top-{s['top_k']} + the rest"
        lines += [
            f"Logit distillation (KL weight {s['weight']}, temperature {s['temperature']}, over {over}): "
            f"{verdict_line(numbers)}",
            "",
        ]
    for who, _ in WHO:
        if who in results and results[who]["examples"]:
            lines += transcript_section(f"{who}", results[who]["examples"][0])
    write_eval_fragment(run, name, "\n".join(lines))


def _accuracy_figure(numbers: dict[str, Any]) -> Any:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [who for who, _ in WHO if numbers.get(f"{who}_accuracy") is not None]
    values = [numbers[f"{who}_accuracy"] for who in labels]
    colors = {
        "teacher": "#4c72b0",
        "student": "#dd8452",
        "student_sft_only": "#8c8c8c",
        "student_logit": "#937860",
    }
    n = numbers.get("n_heldout") or 0
    errors = [2 * _stderr(v, n) if n else 0.0 for v in values]
    bars = left.bar(labels, values, yerr=errors, capsize=5, color=[colors[who] for who in labels])
    left.bar_label(bars, fmt="%.3f", padding=2)
    left.set_ylim(0, max([*(v + e for v, e in zip(values, errors, strict=True)), 0.05]) * 1.25)
    left.set_ylabel("held-out accuracy (+-2 s.e.)")
    left.set_title(f"accuracy on {numbers.get('n_heldout')} held-out problems")
    reasons = {"kept": numbers.get("kept", 0), **numbers.get("rejected", {})}
    right.barh(list(reasons), list(reasons.values()), color=["#55a868"] + ["#c44e52"] * (len(reasons) - 1))
    right.invert_yaxis()
    right.set_xlabel("teacher replies")
    right.set_title("rejection sampling")
    fig.tight_layout()
    return fig


def _loss_figure(run: RunDir, name: str, numbers: dict[str, Any]) -> Any | None:
    """The training curves of the students this run trained (an older run's curves are left out)."""
    from pipelines.train.curves import read_history

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    drawn = False
    curves = [
        (name, "loss", "student (distilled data)", True),
        (control_stage(name), "loss", "control (SFT mixture)", "control_steps" in numbers),
        (
            logit_stage(name),
            "ce",
            "logit-distilled student (its cross-entropy term)",
            "logit_steps" in numbers,
        ),
    ]
    for stage, key, label, trained in curves:
        if not trained:
            continue
        train, _ = read_history(run.metrics_log(stage))
        points = [(r["step"], r[key]) for r in train if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), label=label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (per assistant token)")
    ax.set_title("the students, same steps")
    ax.legend()
    fig.tight_layout()
    return fig


def distill_section(run: RunDir, name: str) -> str:
    numbers = read_summary(run).get(name)
    if not numbers:
        return ""
    if not numbers.get("student_trained", True):
        rejected = ", ".join(f"{k} {v}" for k, v in numbers.get("rejected", {}).items() if v)
        return (
            f"The teacher `{numbers.get('teacher')}` got none of its {numbers.get('samples')} replies right and "
            f"well formatted (rejected: {rejected}), so no student was trained."
        )
    out = []
    fragment = run.fragment(name, "eval")
    if fragment.is_file():
        out.append(fragment.read_text())
    out += [save_plot(_accuracy_figure(numbers), run, name, "accuracy"), ""]
    loss = _loss_figure(run, name, numbers)
    if loss is not None:
        out += [save_plot(loss, run, name, "loss"), ""]
    return "\n".join(out)
