"""The lifecycle's stages in order, and where each one's job lives.

A stage job module defines ``run(cfg: RunConfig) -> dict`` (its headline numbers) and may define
``add_cli_args(parser)`` plus ``cli_overrides(args) -> list[str]`` for flags that are shorthands for
config keys (``raychat clean --input X`` is ``--set clean.inputs=[X]``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (job module, one line for --help)
STAGES: dict[str, tuple[str, str]] = {
    "world": ("pipelines.world.job", "write the tiny world: a seeded mini web crawl (WARC) and its facts"),
    "clean": ("pipelines.clean.job", "extract, filter, de-identify and deduplicate crawl data (Ray Data)"),
    "tokenize": ("pipelines.tokenize.job", "train or load the tokenizer and write token shards (Ray Data)"),
    "pretrain": ("pipelines.pretrain.job", "pretrain the base model on the token shards (Ray Train)"),
    "rm": ("pipelines.rm.job", "train the reward model on preference pairs, Bradley-Terry (Ray Train)"),
}


def stage_module(name: str) -> ModuleType:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    return importlib.import_module(STAGES[name][0])
