"""The distill stage's part of report.md: teacher, student and control side by side (a table and a
bar plot), what rejection sampling kept and why it dropped the rest, the training curves of student
and control at the same compute, and one kept trace."""

from __future__ import annotations

from typing import Any

from pipelines.report import pyplot, save_plot
from pipelines.run_dir import RunDir, read_summary
from pipelines.sft.scorecard import metrics_table, transcript_section
from pipelines.sft.scorecard import write_fragment as write_eval_fragment

WHO = (
    ("teacher", "the teacher"),
    ("student", "the student, SFT on the kept traces + non-reasoning data"),
    ("student_sft_only", "the same student, SFT on the sft stage's mixture alone (same compute)"),
)


def control_stage(name: str) -> str:
    """The control's own training run (its checkpoints and curve)."""
    return f"{name}_control"


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
    lines = [
        f"Teacher `{numbers['teacher']}` ({numbers['teacher_params']:,} parameters) answered "
        f"{counts['problems']:,} problems x {counts['samples'] // max(1, counts['problems'])} samples; "
        f"rejection sampling kept {counts['kept']:,} of {counts['samples']:,} replies "
        f"({100 * counts['keep_rate']:.1f}%, {counts['problems_with_a_kept_reply']:,} problems), rejected: "
        f"{rejected}. The student ({numbers['student_params']:,} parameters, fresh weights) trained on "
        f"{counts['traces']:,} traces + {counts['other']:,} non-reasoning conversations for {numbers['steps']} "
        f"steps ({numbers['compute_tokens']:,} token positions); the control for the same steps on the "
        "sft stage's mixture.",
        "",
        "Held-out accuracy (`questions`: problems behind each value):",
        "",
        metrics_table(rows),
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
    bars = left.bar(labels, values, color=["#4c72b0", "#dd8452", "#8c8c8c"][: len(labels)])
    left.bar_label(bars, fmt="%.3f")
    left.set_ylim(0, max([*values, 0.05]) * 1.25)
    left.set_ylabel("held-out accuracy")
    left.set_title(f"accuracy on {numbers.get('n_heldout')} held-out problems")
    reasons = {"kept": numbers.get("kept", 0), **numbers.get("rejected", {})}
    right.barh(list(reasons), list(reasons.values()), color=["#55a868"] + ["#c44e52"] * (len(reasons) - 1))
    right.invert_yaxis()
    right.set_xlabel("teacher replies")
    right.set_title("rejection sampling")
    fig.tight_layout()
    return fig


def _loss_figure(run: RunDir, name: str) -> Any | None:
    from pipelines.train.curves import read_history

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    drawn = False
    for stage, label in ((name, "student (distilled data)"), (control_stage(name), "control (SFT mixture)")):
        train, _ = read_history(run.metrics_log(stage))
        points = [(r["step"], r["loss"]) for r in train if r.get("loss") is not None]
        if points:
            ax.plot(*zip(*points, strict=True), label=label)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (per assistant token)")
    ax.set_title("student and control, same steps")
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
    loss = _loss_figure(run, name)
    if loss is not None:
        out += [save_plot(loss, run, name, "loss"), ""]
    return "\n".join(out)
