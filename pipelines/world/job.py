"""The world stage: write the tiny world (a seeded mini web crawl and its facts) into the run.

    python -m pipelines.world --config configs/tiny.yaml
    raychat world --run-dir runs/tiny --set world.num_pages=100000

No Ray is needed: one core writes several thousand pages a second, faster than a cluster would
start. Everything is a function of ``seed`` and the ``world`` settings, never of the clock, so the
same config always writes the same bytes.
"""

from __future__ import annotations

import logging
from typing import Any

from pipelines.config import RunConfig
from pipelines.runtime import RunDir
from pipelines.world.generate import generate

log = logging.getLogger("raychat")


def run(cfg: RunConfig) -> dict[str, Any]:
    out = RunDir(cfg.run_dir).world
    numbers = generate(cfg.seed, cfg.world, out)
    log.info(
        "world: %d pages in %d files (%.1f MB) in %.1fs, %s pages/s; kinds %s",
        numbers["pages"],
        len(numbers["files"]),
        numbers["warc_bytes"] / 1e6,
        numbers["seconds"],
        numbers["pages_per_second"],
        numbers["kinds"],
    )
    return numbers
