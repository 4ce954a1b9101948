"""The document steps of the clean stage, by name, so the pipeline can build them from a config.

``STEP_CLASSES[name] = (ConfigClass, StepClass)``; ``build_step(name, config)`` makes one. Steps run in
FineWeb's order: url, (extraction, elsewhere), language, the QUALITY_STEPS, pii, then custom steps.
"""

from __future__ import annotations

from typing import Any

from lm.config_base import StrictModel
from pipelines.clean.filters.base import Doc, Drop, Filter, Mapper, Step, StepResult, run_steps
from pipelines.clean.filters.c4 import C4Config, C4QualityFilter
from pipelines.clean.filters.custom import CustomStep, CustomStepConfig
from pipelines.clean.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipelines.clean.filters.gopher import (
    GopherQualityConfig,
    GopherQualityFilter,
    GopherRepetitionConfig,
    GopherRepetitionFilter,
)
from pipelines.clean.filters.language import LanguageConfig, LanguageFilter
from pipelines.clean.filters.pii import PIIConfig, PIIMasker
from pipelines.clean.filters.url import UrlFilter, UrlFilterConfig

STEP_CLASSES: dict[str, tuple[type[StrictModel], type[Step]]] = {
    "url": (UrlFilterConfig, UrlFilter),
    "language": (LanguageConfig, LanguageFilter),
    "gopher_repetition": (GopherRepetitionConfig, GopherRepetitionFilter),
    "gopher_quality": (GopherQualityConfig, GopherQualityFilter),
    "c4": (C4Config, C4QualityFilter),
    "fineweb": (FineWebQualityConfig, FineWebQualityFilter),
    "pii": (PIIConfig, PIIMasker),
    "custom": (CustomStepConfig, CustomStep),
}

# FineWeb's quality filters, in the order FineWeb ran them
QUALITY_STEPS = ["gopher_repetition", "gopher_quality", "c4", "fineweb"]


def build_step(name: str, config: StrictModel | dict[str, Any] | None = None) -> Step:
    """The step called ``name`` with ``config`` (a config object, a dict validated into one, or defaults)."""
    if name not in STEP_CLASSES:
        raise ValueError(f"unknown clean step {name!r}; known: {', '.join(STEP_CLASSES)}")
    config_class, step_class = STEP_CLASSES[name]
    if config is None:
        config = config_class()
    elif isinstance(config, dict):
        config = config_class.model_validate(config)
    elif not isinstance(config, config_class):
        raise TypeError(f"step {name!r} takes a {config_class.__name__}, got {type(config).__name__}")
    return step_class(config)


__all__ = [
    "QUALITY_STEPS",
    "STEP_CLASSES",
    "C4Config",
    "C4QualityFilter",
    "CustomStep",
    "CustomStepConfig",
    "Doc",
    "Drop",
    "FineWebQualityConfig",
    "FineWebQualityFilter",
    "Filter",
    "GopherQualityConfig",
    "GopherQualityFilter",
    "GopherRepetitionConfig",
    "GopherRepetitionFilter",
    "LanguageConfig",
    "LanguageFilter",
    "Mapper",
    "PIIConfig",
    "PIIMasker",
    "Step",
    "StepResult",
    "UrlFilter",
    "UrlFilterConfig",
    "build_step",
    "run_steps",
]
