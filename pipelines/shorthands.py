"""Command-line flags that are shorthands for a stage's config keys: ``raychat sft --max-steps 50`` is
``raychat sft --set sft.max_steps=50``. A job module lists its own as ``SHORTHANDS`` (the training
stages share ``TRAINING``); pipelines/cli.py adds them to the stage's parser and turns the flags given
into ``--set`` overrides of the stage's own section, so another instance of a kind gets them too."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shorthand:
    flag: str  # "--max-steps"
    key: str  # under the stage's section: "max_steps", "model.depth"
    help: str
    type: Any = str
    choices: tuple[str, ...] | None = None
    switch: bool = False  # a flag without a value: the key set to true

    @property
    def dest(self) -> str:
        return "shorthand_" + self.key.replace(".", "_")


TRAINING = (
    Shorthand("--init", "init", "the model directory to start from"),
    Shorthand("--max-steps", "max_steps", "optimizer steps", int),
    Shorthand("--epochs", "epochs", "passes over the data (without max_steps)", float),
    Shorthand("--num-workers", "num_workers", "Ray Train workers", int),
    Shorthand("--gpu", "use_gpu", "one GPU per worker", switch=True),
)


def add_shorthands(parser: argparse.ArgumentParser, section: str, shorthands: Sequence[Shorthand]) -> None:
    group = parser.add_argument_group(f"{section} shorthands (each is a --set {section}.<key>=...)")
    for s in shorthands:
        help_text = f"{section}.{s.key}: {s.help}"
        if s.switch:
            group.add_argument(s.flag, dest=s.dest, action="store_true", default=None, help=help_text)
        else:
            group.add_argument(
                s.flag,
                dest=s.dest,
                type=s.type,
                choices=s.choices,
                metavar=s.key.split(".")[-1].upper(),
                help=help_text,
            )


def shorthand_overrides(args: argparse.Namespace, section: str, shorthands: Sequence[Shorthand]) -> list[str]:
    """``--set`` overrides for the flags given (those left unset give nothing)."""
    out = []
    for s in shorthands:
        value = getattr(args, s.dest, None)
        if value is None:
            continue
        text = "true" if value is True else json.dumps(value) if isinstance(value, str) else str(value)
        out.append(f"{section}.{s.key}={text}")
    return out
