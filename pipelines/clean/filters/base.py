"""What every clean step shares: a decision per document, counted per reason.

A step sees a batch of documents (plain dicts with at least ``text``) and answers, for each, ``None``
(keep; the step may have changed the dict in place, e.g. PII masking or adding ``language``) or a
short reason string (drop). The counting, the routing of dropped documents to ``rejected`` and of
crashes to ``errors`` live here once, so no step repeats that code (datatrove's lesson).

Reasons should be stable, low-cardinality strings (``"too_few_words"``, not ``"12 words < 50"``) so
they can be counted; put numbers in ``detail`` via ``Step.drop(reason, detail)`` when useful.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)

Doc = dict[str, Any]


def config_key(error: BaseException, key: str) -> BaseException:
    """Tag an error raised while a step is built with the setting at fault (within the step's section).

    Why: a step's constructor knows which setting is wrong (a missing blocklist folder, a model file
    that is not a model), but not where its section lives in the run config; ``build_steps`` adds
    that, so the job can say ``clean.url.blocklists: ...`` before any work starts.
    """
    error.config_key = key  # type: ignore[attr-defined]
    return error


class Drop(str):
    """A drop reason that can carry a human-readable detail (kept out of the counted reason)."""

    detail: str

    def __new__(cls, reason: str, detail: str = "") -> Drop:
        obj = super().__new__(cls, reason)
        obj.detail = detail
        return obj


class Step(ABC):
    """One clean step. Subclasses set ``name`` and implement ``decide`` (or ``process`` for batching)."""

    name: ClassVar[str]

    def __init__(self) -> None:
        # counts that are not drops, e.g. PII replacements: {"email": 3}
        self.counts: Counter[str] = Counter()

    def process(self, docs: Sequence[Doc]) -> list[str | None]:
        """Decide a whole batch. Override when the step is faster batched (language ID)."""
        return [self.decide(doc) for doc in docs]

    @abstractmethod
    def decide(self, doc: Doc) -> str | None:
        """None to keep (possibly after changing ``doc``), or a drop reason."""

    @staticmethod
    def drop(reason: str, detail: str = "") -> Drop:
        return Drop(reason, detail)


class Filter(Step):
    """A step that only keeps or drops."""


class Mapper(Step):
    """A step that changes documents and never drops them."""

    def decide(self, doc: Doc) -> None:
        self.map(doc)
        return None

    @abstractmethod
    def map(self, doc: Doc) -> None: ...


@dataclass
class StepResult:
    kept: list[Doc] = field(default_factory=list)
    rejected: list[Doc] = field(default_factory=list)  # each with "step", "reason", "detail"
    errors: list[Doc] = field(default_factory=list)  # each with "step", "reason", "error"
    drops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (step, reason) -> n
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (step, counter) -> n


def run_steps(steps: Sequence[Step], docs: Sequence[Doc]) -> StepResult:
    """Run the steps in order over a batch; each document ends in exactly one of kept/rejected/errors.

    Consecutive steps that decide one document at a time run document by document (a document goes
    through all of them before the next one starts), so statistics one filter computes on a text are
    still cached when the next filter asks for them; steps that override ``process`` get the whole
    batch of survivors. The outcome is the same either way. A step that raises costs only the
    document it raised on: a batched step that fails is retried one document at a time.
    """
    result = StepResult()
    live = list(docs)
    i = 0
    while i < len(steps) and live:
        if _is_batched(steps[i]):
            live = _run_batched(steps[i], live, result)
            i += 1
        else:
            j = i
            while j < len(steps) and not _is_batched(steps[j]):
                j += 1
            live = _run_per_document(steps[i:j], live, result)
            i = j
    for step in steps:
        for key, n in step.counts.items():
            result.counts[(step.name, key)] += n
        step.counts.clear()
    result.kept = live
    return result


def _is_batched(step: Step) -> bool:
    return type(step).process is not Step.process


def _run_batched(step: Step, live: list[Doc], result: StepResult) -> list[Doc]:
    try:
        decisions: list[str | None] = list(step.process(live))
        if len(decisions) != len(live):
            raise ValueError(
                f"step {step.name!r} returned {len(decisions)} decisions for {len(live)} documents"
            )
    except Exception:
        decisions = []
        for doc in live:
            try:
                decisions.append(step.process([doc])[0])
            except Exception as e:  # noqa: BLE001 - any crash is this document's error
                decisions.append(_Crash(f"{type(e).__name__}: {e}"))
    survivors = []
    for doc, decision in zip(live, decisions, strict=True):
        if decision is None:
            survivors.append(doc)
        else:
            _record(step, doc, decision, result)
    return survivors


def _run_per_document(steps: Sequence[Step], live: list[Doc], result: StepResult) -> list[Doc]:
    survivors = []
    for doc in live:
        for step in steps:
            try:
                decision = step.decide(doc)
            except Exception as e:  # noqa: BLE001 - any crash is this document's error
                decision = _Crash(f"{type(e).__name__}: {e}")
            if decision is not None:
                _record(step, doc, decision, result)
                break
        else:
            survivors.append(doc)
    return survivors


def _record(step: Step, doc: Doc, decision: str, result: StepResult) -> None:
    if isinstance(decision, _Crash):
        doc.update(step=step.name, reason="exception", error=str(decision)[:2000])
        result.errors.append(doc)
        result.drops[(step.name, "exception")] += 1
    else:
        doc.update(step=step.name, reason=str(decision), detail=getattr(decision, "detail", ""))
        result.rejected.append(doc)
        result.drops[(step.name, str(decision))] += 1


class _Crash(str):
    pass
