"""run_steps and the step registry: every document ends in exactly one place, whatever the steps do."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pipelines.clean.config import STEPS
from pipelines.clean.filters.base import Doc, Filter, Mapper, Step, run_steps
from pipelines.clean.steps import QUALITY_STEPS, build_step, step_class


class DropShort(Filter):
    name = "short"

    def decide(self, doc: Doc) -> str | None:
        return self.drop("too_short", f"{len(doc['text'])} chars") if len(doc["text"]) < 5 else None


class Upper(Mapper):
    name = "upper"

    def map(self, doc: Doc) -> None:
        doc["text"] = doc["text"].upper()
        self.counts["mapped"] += 1


class CrashOnX(Filter):
    name = "crash"

    def decide(self, doc: Doc) -> str | None:
        if "X" in doc["text"]:
            raise RuntimeError("boom")
        return None


class BatchedDropB(Step):
    """Overrides process, so it sees the batch of survivors at once."""

    name = "batched"

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []

    def process(self, docs: Sequence[Doc]) -> list[str | None]:
        self.batch_sizes.append(len(docs))
        return ["has_b" if "B" in d["text"] else None for d in docs]

    def decide(self, doc: Doc) -> str | None:
        return self.process([doc])[0]


def make(*texts: str) -> list[Doc]:
    return [{"id": str(i), "text": t} for i, t in enumerate(texts)]


def test_each_document_ends_in_exactly_one_place() -> None:
    batched = BatchedDropB()
    steps = [DropShort(), Upper(), CrashOnX(), batched]
    result = run_steps(steps, make("tiny", "a good line", "has an x in it", "a bad line", "fine words"))
    assert [d["id"] for d in result.kept] == ["1", "4"]
    assert [d["text"] for d in result.kept] == ["A GOOD LINE", "FINE WORDS"]
    assert [(d["id"], d["step"], d["reason"], d["detail"]) for d in result.rejected] == [
        ("0", "short", "too_short", "4 chars"),
        ("3", "batched", "has_b", ""),
    ]
    assert [(d["id"], d["step"], d["reason"]) for d in result.errors] == [("2", "crash", "exception")]
    assert "RuntimeError: boom" in result.errors[0]["error"]
    assert result.drops == {("short", "too_short"): 1, ("batched", "has_b"): 1, ("crash", "exception"): 1}
    assert result.counts == {("upper", "mapped"): 4}
    assert batched.batch_sizes == [3]  # the survivors of the per-document steps, in one batch
    assert steps[1].counts == {}  # counts move into the result


def test_a_batched_step_that_crashes_is_retried_per_document() -> None:
    class FailsOnBatches(BatchedDropB):
        def process(self, docs: Sequence[Doc]) -> list[str | None]:
            if len(docs) > 1 or "X" in docs[0]["text"]:
                raise ValueError("batch failed")
            return super().process(docs)

    result = run_steps([FailsOnBatches()], make("ok", "B here", "X here"))
    assert [d["id"] for d in result.kept] == ["0"]
    assert [d["id"] for d in result.rejected] == ["1"]
    assert [d["id"] for d in result.errors] == ["2"]


def test_registry_builds_every_step_with_defaults_and_dicts() -> None:
    assert QUALITY_STEPS == ["gopher_repetition", "gopher_quality", "c4", "fineweb"]
    for spec in STEPS:
        if spec.repeated or not spec.per_document:  # custom needs a function; dedup is a global pass
            continue
        step = build_step(spec.name)
        assert isinstance(step, step_class(spec.name))
        assert step.name == spec.name
        assert isinstance(getattr(step, "config", None) or step.cfg, spec.config)  # the extractor says cfg
    with pytest.raises(ValueError, match="whole dataset"):
        build_step("dedup")
    step = build_step("fineweb", {"short_line_thr": 0.5})
    assert step.config.short_line_thr == 0.5
    with pytest.raises(ValueError, match="short_line_threshold"):
        build_step("fineweb", {"short_line_threshold": 0.5})
    with pytest.raises(ValueError, match="unknown clean step 'nope'"):
        build_step("nope")
