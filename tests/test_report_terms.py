"""The report's glossary lists the terms a report uses, and only those."""

from __future__ import annotations

from pipelines.report_terms import TERMS, terms_section


def test_only_the_terms_a_report_uses_are_explained() -> None:
    text = "| heldout_accuracy_after | 0.555 |\n| heldout_accuracy_after_stderr | 0.035 |\nval bpb 1.2"
    section = terms_section(text)
    names = [line.split("**")[1] for line in section.splitlines() if line.startswith("- **")]
    assert names == ["held-out", "s.e. (standard error)", "bits per byte (bpb)"]
    assert "KL" not in section and terms_section("# raychat run report\n\nnothing technical") == ""


def test_every_term_is_found_by_its_own_name() -> None:
    """A term whose pattern misses its own name would never be explained where it is shown."""
    examples = {name: name for name, _, _ in TERMS} | {"calculator / search calls": "the calculator"}
    missing = [name for name, _, _ in TERMS if name not in terms_section(examples[name])]
    assert missing == []
