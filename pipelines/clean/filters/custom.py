"""User-written filters and mappers, named in the config by a dotted path ``package.module:function``.

The contract (the function gets a whole batch, so it can use vectorised or batched code):

* ``kind: filter`` -- ``fn(docs: list[dict], **args) -> list[None | bool | str]``, one answer per
  document, in order: ``None`` or ``True`` keeps it, ``False`` drops it (reason ``"rejected"``), a
  string drops it with that string as the reason (keep reasons few and stable, e.g. ``"too_many_ads"``).
* ``kind: mapper`` -- ``fn(docs: list[dict], **args) -> list[dict]``, one document per input, in
  order: the (possibly modified, possibly new) document that replaces it. Mappers never drop.

Documents are plain dicts with at least ``text``, usually ``id`` and ``url``. ``args`` come from the
config. An exception, or an answer of the wrong length, sends the batch through again one document at
a time, and the documents that still fail go to the errors output (``run_steps`` does this).

Example (``myfilters.py`` on the Python path)::

    def no_shouting(docs, max_caps=0.3):
        return ["shouting" if sum(c.isupper() for c in d["text"]) > max_caps * len(d["text"]) else None
                for d in docs]

and in the run config: ``{function: "myfilters:no_shouting", kind: filter, args: {max_caps: 0.2}}``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from lm.plugins import import_function
from pipelines.clean.filters.base import Doc, Step, config_key
from pipelines.clean.filters.config import CustomStepConfig


def check_args(function: Callable[..., Any], path: str, args: dict[str, Any]) -> None:
    """Bind ``args`` to the function's signature now, so a misspelt keyword is a config error naming
    it, not a TypeError in every batch that sends every document to the errors output."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin or extension function without a signature: cannot check
        return
    try:
        signature.bind([], **args)
    except TypeError as e:
        error = ValueError(f"{path}{signature} does not take these args: {e}")
        unknown = [k for k in args if k not in signature.parameters]
        has_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        key = f"args.{unknown[0]}" if unknown and not has_kwargs else "args"
        raise config_key(error, key) from None


class CustomStep(Step):
    """Applies a user function to batches of documents (see the module docstring for the contract)."""

    name = "custom"

    def __init__(self, config: CustomStepConfig) -> None:
        super().__init__()
        self.config = config
        try:
            self.function = import_function(config.function, "custom step")
        except ValueError as e:
            raise config_key(e, "function") from None
        self.name = config.name or config.function.rpartition(":")[2]
        check_args(self.function, config.function, config.args)

    def process(self, docs: Sequence[Doc]) -> list[str | None]:
        answers = list(self.function(list(docs), **self.config.args))
        if len(answers) != len(docs):
            raise ValueError(
                f"custom step {self.name!r}: {self.config.function} returned {len(answers)} answers "
                f"for {len(docs)} documents"
            )
        if self.config.kind == "mapper":
            for doc, new in zip(docs, answers, strict=True):
                if not isinstance(new, dict) or not isinstance(new.get("text"), str):
                    raise TypeError(
                        f"custom mapper {self.name!r}: expected a dict with a str 'text', got {type(new).__name__}"
                    )
                if new is not doc:
                    # the pipeline's own bookkeeping ("_key" and friends) survives a mapper that
                    # builds a fresh dict from the fields it knows
                    kept = {k: v for k, v in doc.items() if k.startswith("_") and k not in new}
                    doc.clear()
                    doc.update(new)
                    doc.update(kept)
            return [None] * len(docs)
        return [self._reason(answer) for answer in answers]

    def decide(self, doc: Doc) -> str | None:
        return self.process([doc])[0]

    def _reason(self, answer: object) -> str | None:
        if answer is None or answer is True:
            return None
        if answer is False:
            return "rejected"
        if isinstance(answer, str):
            return answer
        raise TypeError(
            f"custom filter {self.name!r}: answers must be None, a bool or a reason string, "
            f"got {type(answer).__name__}"
        )
