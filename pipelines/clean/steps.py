"""Building the clean steps from their settings: the code side of ``STEPS`` (pipelines/clean/config.py).

Which steps exist, in which order and with which settings is the registry in the config module; this
module imports a step's code only when the step is built (in the pass-1 workers, and once on the
driver to check the settings before any work).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lm.config_base import StrictModel
from pipelines.clean.config import (
    QUALITY_STEPS,
    implied_steps,
    resolve_steps,
    running_steps,
    step_spec,
)

if TYPE_CHECKING:
    from pipelines.clean.config import CleanConfig
    from pipelines.clean.filters.base import Step

__all__ = [
    "QUALITY_STEPS",
    "StepBuildError",
    "build_step",
    "build_steps",
    "implied_steps",
    "resolve_steps",
    "running_steps",
]


class StepBuildError(ValueError):
    """A step that cannot be built from its settings; ``key`` is the run-config key at fault."""

    def __init__(self, key: str, error: BaseException) -> None:
        super().__init__(f"{key}: {error}")
        self.key = key


def step_class(name: str) -> Any:
    """The code of step ``name`` (its ``StepSpec.code``), imported now."""
    module, attr = step_spec(name).code.split(":")
    return getattr(importlib.import_module(module), attr)


def build_step(name: str, config: StrictModel | dict[str, Any] | None = None) -> Step:
    """The step called ``name`` with ``config`` (a config object, a dict validated into one, or defaults)."""
    spec = step_spec(name)
    if not spec.per_document:
        raise ValueError(f"clean step {name!r} is a pass over the whole dataset, not a document step")
    if config is None:
        config = spec.config()
    elif isinstance(config, dict):
        config = spec.config.model_validate(config)
    elif not isinstance(config, spec.config):
        raise TypeError(f"step {name!r} takes a {spec.config.__name__}, got {type(config).__name__}")
    return step_class(name)(config)


def build_steps(cfg: CleanConfig) -> list[Step]:
    """Instantiate the per-document steps (everything but the global dedup pass), implied ones included."""
    steps: list[Step] = []
    for name in running_steps(cfg.steps):
        spec = step_spec(name)
        if not spec.per_document:
            continue
        settings = getattr(cfg, name)
        if spec.repeated:
            for i, one in enumerate(settings):
                steps.append(_build(f"{name}[{i}]", lambda n=name, c=one: build_step(n, c)))
        else:
            steps.append(_build(name, lambda n=name, c=settings: build_step(n, c)))
    return steps


def _build(section: str, make: Callable[[], Step]) -> Step:
    """``make()``, or a StepBuildError naming ``clean.<section>[.<setting>]`` and what is wrong."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - any failure to build is a config problem to report
        setting = getattr(e, "config_key", None)
        raise StepBuildError(f"clean.{section}.{setting}" if setting else f"clean.{section}", e) from e
