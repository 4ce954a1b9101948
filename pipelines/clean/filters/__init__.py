"""The document steps of the clean stage: a small class per step over ``base.py``'s ``Filter`` (keep,
or drop with a reason) and ``Mapper`` (rewrite), each in its own module, with its settings in
``config.py``. Which steps exist and in which order is ``STEPS`` in pipelines/clean/config.py;
``pipelines.clean.steps.build_step(name, config)`` makes one.

Only the base classes are imported here (no filter's code), so that reading the settings stays cheap.
"""

from pipelines.clean.filters.base import Doc, Drop, Filter, Mapper, Step, StepResult, run_steps

__all__ = ["Doc", "Drop", "Filter", "Mapper", "Step", "StepResult", "run_steps"]
