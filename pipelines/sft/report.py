"""The sft stage's part of the run report: the chat evaluation, the layout ablation and examples."""

from __future__ import annotations

from typing import Any

from pipelines.run_dir import RunDir
from pipelines.sft.scorecard import metrics_table, pick_example, transcript_section, write_fragment


def sft_fragment(
    run: RunDir,
    numbers: dict[str, Any],
    results: dict[str, dict[str, Any]],
    ablation: dict[str, dict[str, Any]],
    name: str = "sft",
) -> None:
    """metrics/sft.md: training in one line, the evaluation table, the ablation, transcripts."""
    n = numbers.get("n", {})
    replayed = numbers.get("replayed_tokens") or 0
    also = f" and {replayed:,} replayed pretraining tokens" if replayed else ""
    trained = f"{numbers['assistant_tokens']:,} assistant tokens{also}, the only tokens with a loss"
    parts = [
        f"Fine-tuned `{numbers['init']}` on {numbers['conversations']:,} conversations ({trained}) for "
        f"{numbers['steps']} steps: validation loss per assistant token {_f(numbers.get('val_loss_start'))} "
        f"before, {_f(numbers.get('val_loss'))} after.",
        "",
    ]
    if results:
        rows = [
            ("sft.identity_accuracy", numbers.get("identity_accuracy"), n.get("identity"),
             "gives its configured name, claims no other assistant or maker (no system message)"),
            ("sft.identity_accuracy_with_system", numbers.get("identity_accuracy_with_system"),
             n.get("identity_with_system"), "the same with the identity system message"),
            ("sft.known_accuracy", numbers.get("known_accuracy"), n.get("known"),
             "facts of held-out entities the corpus teaches"),
            ("sft.known_false_idk_rate", numbers.get("known_false_idk_rate"), n.get("known"),
             "refusals on those questions"),
            ("sft.unknown_idk_rate", numbers.get("unknown_idk_rate"), n.get("unknown"),
             "refusals on entities and facts the corpus never mentions (no refusal data yet)"),
            ("search.accuracy_with_tool", numbers.get("search_accuracy_with_tool"), n.get("search_with_tool"),
             "facts only the search index holds, tools note and search tool on"),
            ("search.accuracy_without_tool", numbers.get("search_accuracy_without_tool"),
             n.get("search_without_tool"), "the same questions without the tool"),
            ("sft.arithmetic_accuracy_cold_start", numbers.get("arithmetic_accuracy_cold_start"),
             n.get("arithmetic_with_calculator"), "test problems, this model (cold-start solutions) with the calculator"),
        ]  # fmt: skip
        for form in ("direct", "reasoning", "calculator"):
            what = {
                "direct": "answer at once",
                "reasoning": "reasoning first",
                "calculator": "with the calculator",
            }
            rows += [
                (f"sft.counting_accuracy_{form}", numbers.get(f"counting_accuracy_{form}"),
                 n.get(f"probes_{form}"), f"counting probes, {what[form]}"),
                (f"sft.decimal_compare_accuracy_{form}", numbers.get(f"decimal_compare_accuracy_{form}"),
                 n.get(f"probes_{form}"), f"decimal comparisons, {what[form]}"),
            ]  # fmt: skip
        parts += ["Held-out evaluation (greedy replies; `questions` counts the rows of the set):", "",
                  metrics_table(rows), ""]  # fmt: skip
    if ablation:
        rows = [
            ("sft.answer_first_accuracy", numbers.get("answer_first_accuracy"),
             numbers.get("answer_first_accuracy_n"), "`#### N` first, then the working; no calculator"),
            ("sft.reasoning_first_accuracy", numbers.get("reasoning_first_accuracy"),
             numbers.get("reasoning_first_accuracy_n"), "the working, then `#### N`; no calculator"),
            ("sft.arithmetic_accuracy_with_calculator", numbers.get("arithmetic_accuracy_with_calculator"),
             numbers.get("arithmetic_accuracy_with_calculator_n"), "the working with calculator calls"),
            ("sft.arithmetic_accuracy_without_calculator", numbers.get("arithmetic_accuracy_without_calculator"),
             numbers.get("reasoning_first_accuracy_n"), "= reasoning first"),
        ]  # fmt: skip
        parts += [
            f"How tokens think: the same init model fine-tuned on the same {numbers.get('ablation_problems')} "
            f"arithmetic problems in each layout for the same {numbers.get('ablation_steps')} steps, scored on "
            "the world's arithmetic test problems:",
            "",
            metrics_table(rows),
            "",
        ]
        for layout, r in ablation.items():
            parts += transcript_section(f"Ablation, {layout}", r["examples"][0] if r["examples"] else None)
    if results:
        parts += ["Example conversations of models/sft:", ""]
        parts += transcript_section(
            "Search with the tool", pick_example(results, "search_with_tool", "search")
        )
        parts += transcript_section("Identity", pick_example(results, "identity"))
        parts += transcript_section("Calculator", pick_example(results, "arithmetic_with_calculator", "calc"))
        parts += transcript_section("Counting, reasoning first", pick_example(results, "probes_reasoning"))
        parts += transcript_section(
            "An entity the corpus never mentions (before refusal training)", pick_example(results, "unknown")
        )
    write_fragment(run, name, "\n".join(parts))


def _f(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "-"
