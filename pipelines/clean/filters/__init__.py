"""The document steps of the clean stage: a small class per step over ``base.py``'s ``Filter`` (keep,
or drop with a reason) and ``Mapper`` (rewrite), each in its own module, with its settings in
``config.py``. Which steps exist and in which order is ``STEPS`` in pipelines/clean/config.py;
``pipelines.clean.steps.build_step(name, config)`` makes one.

This ``__init__`` imports nothing, so that reading the settings (``filters/config.py``) loads no
filter's code.
"""
