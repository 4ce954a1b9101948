"""The idk stage's part of the run report, and the post-training scorecard: every headline number of
sft, idk and search with the questions behind it, and example conversations (a search call, an
"I don't know", the calculator)."""

from __future__ import annotations

from typing import Any

from pipelines.run_dir import RunDir, read_summary
from pipelines.sft.scorecard import metrics_table, pick_example, transcript_section, write_fragment
from pipelines.storage import read_json


def idk_fragment(
    run: RunDir,
    numbers: dict[str, Any],
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    probes: list[Any],
    name: str = "idk",
) -> None:
    p = numbers["probe"]
    share = p.get("min_correct_share", 1.0)
    knows = (
        "correct in every sample, never hedged: correct and consistent, as in Llama 3"
        if share >= 1.0
        else f"correct in at least {share:g} of the samples, never hedged"
    )
    sft = read_summary(run).get("sft", {})
    n_sft = sft.get("n", {})
    rows = [
        ("sft.identity_accuracy", sft.get("identity_accuracy"), n_sft.get("identity"),
         "gives its configured name and claims no other (models/sft)"),
        ("sft.answer_first_accuracy", sft.get("answer_first_accuracy"), sft.get("answer_first_accuracy_n"),
         "arithmetic, answer written first"),
        ("sft.reasoning_first_accuracy", sft.get("reasoning_first_accuracy"), sft.get("reasoning_first_accuracy_n"),
         "arithmetic, working written first"),
        ("sft.arithmetic_accuracy_with_calculator", sft.get("arithmetic_accuracy_with_calculator"),
         sft.get("arithmetic_accuracy_with_calculator_n"), "arithmetic, working with calculator calls"),
        ("idk.unknown_idk_rate_before", numbers["unknown_idk_rate_before"], before["unknown"]["n"],
         "refusals on entities/facts never seen in pretraining nor IDK training, models/sft"),
        ("idk.unknown_idk_rate_after", numbers["unknown_idk_rate_after"], after["unknown"]["n"], "the same, after"),
        ("idk.known_false_idk_rate_after", numbers["known_false_idk_rate_after"], after["known"]["n"],
         "refusals on held-out entities seen in pretraining, never in SFT/IDK training"),
        ("idk.known_accuracy_before", numbers["known_accuracy_before"], before["known"]["n"], "accuracy on them, before"),
        ("idk.known_accuracy_after", numbers["known_accuracy_after"], after["known"]["n"], "and after"),
        ("search.accuracy_with_tool", sft.get("search_accuracy_with_tool"), n_sft.get("search_with_tool"),
         "facts only the search index holds, with the search tool (models/sft)"),
        ("search.accuracy_without_tool", sft.get("search_accuracy_without_tool"), n_sft.get("search_without_tool"),
         "the same questions without it"),
        ("idk.search_accuracy_with_tool_after", numbers["search_accuracy_with_tool_after"],
         after["search_with_tool"]["n"], "search with the tool, models/sft_idk"),
        ("idk.identity_accuracy_after", numbers["identity_accuracy_after"], after["identity"]["n"],
         "identity, models/sft_idk"),
    ]  # fmt: skip
    parts = [
        f"Probed `models/sft` on {p['questions']} questions x {p['samples'] // max(1, p['questions'])} samples: "
        f"it knows {p['known']} ({100 * p['known_share']:.1f}%: {knows}); the other {p['not_known']} "
        f"became refusal conversations ({p['conversations']} conversations written); then retrained on "
        f"{numbers['conversations']:,} conversations for {numbers['steps']} steps.",
        "",
        "Post-training scorecard (held-out questions; `questions` is the number behind each value):",
        "",
        metrics_table(rows),
        "",
        "Validation sets (probe entities kept out of the probing, and fresh names no training used): "
        "what settings are tuned on, so the held-out numbers above stay unbiased.",
        "",
        metrics_table(
            [
                (
                    f"idk.validation_{key}_{when}",
                    numbers.get(f"validation_{key}_{when}"),
                    numbers["n"].get(n),
                    "",
                )
                for key, n in (
                    ("unknown_idk_rate", "validation_unknown"),
                    ("known_false_idk_rate", "validation_known"),
                    ("known_accuracy", "validation_known"),
                )
                for when in ("before", "after")
            ]
        ),
        "",
        "Example conversations:",
        "",
    ]
    parts += transcript_section(
        "A search call (models/sft_idk)", pick_example(after, "search_with_tool", "search")
    )
    parts += transcript_section('"I don\'t know" (models/sft_idk)', pick_example(after, "unknown"))
    parts += transcript_section(
        "The same kind of question before refusal training", pick_example(before, "unknown")
    )
    parts += transcript_section("A known fact after refusal training", pick_example(after, "known"))
    sft_eval = read_json(run.metrics / "eval_sft.json") or {}
    calc = pick_example(sft_eval.get("results", {}), "arithmetic_with_calculator", "calc")
    parts += transcript_section("The calculator (models/sft)", calc)
    probe_lines = ["Some probes (k answers each, judged against the reference):", ""]
    for pr in probes[:4]:
        answers = "; ".join(a.replace("\n", " ")[:60] for a in pr.answers)
        probe_lines.append(
            f"- {pr.row['question']} (reference: {pr.row.get('short_answer')}): {answers} -> "
            f"{'knows' if pr.knows else 'refusal written'}"
        )
    write_fragment(run, name, "\n".join(parts + probe_lines))
