"""Which clean steps exist, in which order they run, and how each is built from the config.

``extract`` is special: it is how an HTML record gets any text at all, so HTML records are always
extracted, also when ``clean.steps`` leaves it out (``--steps pii`` on a WARC masks PII in the
extracted text; without extraction every page would be an empty document). Text records (JSONL,
parquet, WET) pass through the extractor unchanged, so implying it costs them nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.clean.config import CleanConfig
    from pipelines.clean.filters.base import Step

# FineWeb's order; "quality" is shorthand for the four quality filters, "dedup" is the global pass.
STEP_ORDER = [
    "url",
    "extract",
    "language",
    "gopher_repetition",
    "gopher_quality",
    "c4",
    "fineweb",
    "pii",
    "custom",
    "dedup",
]
ALIASES = {"quality": ["gopher_repetition", "gopher_quality", "c4", "fineweb"], "all": STEP_ORDER}


class StepBuildError(ValueError):
    """A step that cannot be built from its settings; ``key`` is the run-config key at fault."""

    def __init__(self, key: str, error: BaseException) -> None:
        super().__init__(f"{key}: {error}")
        self.key = key


def resolve_steps(names: list[str]) -> list[str]:
    """Expand aliases and check names; the result is always in pipeline order."""
    wanted: set[str] = set()
    for raw in names:
        name = raw.strip()
        if name in ALIASES:
            wanted.update(ALIASES[name])
        elif name in STEP_ORDER:
            wanted.add(name)
        else:
            known = ", ".join([*STEP_ORDER, *ALIASES])
            raise ValueError(f"unknown clean step {name!r}; steps are: {known}")
    return [s for s in STEP_ORDER if s in wanted]


def implied_steps(names: list[str]) -> list[str]:
    """Steps that run although ``names`` does not select them: ``extract``, for HTML records."""
    return [] if "extract" in resolve_steps(names) else ["extract"]


def running_steps(names: list[str]) -> list[str]:
    """The steps that really run for ``clean.steps = names``, in pipeline order."""
    wanted = set(resolve_steps(names)) | set(implied_steps(names))
    return [s for s in STEP_ORDER if s in wanted]


def build_steps(cfg: CleanConfig) -> list[Step]:
    """Instantiate the per-document steps (everything but the global dedup pass), implied ones included."""
    from pipelines.clean.extract import HtmlExtractor
    from pipelines.clean.filters import STEP_CLASSES
    from pipelines.clean.filters.custom import CustomStep

    steps: list[Step] = []
    for name in running_steps(cfg.steps):
        if name == "dedup":
            continue
        if name == "extract":
            steps.append(_build("extract", lambda: HtmlExtractor(cfg.extract)))
        elif name == "custom":
            for i, c in enumerate(cfg.custom):
                steps.append(_build(f"custom[{i}]", lambda c=c: CustomStep(c)))
        else:
            step_class = STEP_CLASSES[name][1]
            steps.append(_build(name, lambda n=name, k=step_class: k(getattr(cfg, n))))
    return steps


def _build(section: str, make: Callable[[], Step]) -> Step:
    """``make()``, or a StepBuildError naming ``clean.<section>[.<setting>]`` and what is wrong."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - any failure to build is a config problem to report
        setting = getattr(e, "config_key", None)
        raise StepBuildError(f"clean.{section}.{setting}" if setting else f"clean.{section}", e) from e
