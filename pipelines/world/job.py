"""The world stage: write the tiny world (a seeded mini web crawl and its facts) into the run.

    python -m pipelines.world --config configs/tiny.yaml
    raychat world --run-dir runs/tiny --set world.num_pages=100000 --set world.workers=4

No Ray is needed: a process writes a couple of thousand pages a second, sooner than a cluster
would start, and ``world.workers`` spreads the WARC files over more processes. Everything is a
function of ``seed`` and the ``world`` settings, never of the clock, so the same config always
writes the same bytes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipelines.run_dir import RunDir, read_summary
from pipelines.world.generate import generate

if TYPE_CHECKING:
    from pipelines.config import RunConfig

log = logging.getLogger("raychat")
__all__ = ["report_section", "run"]  # the stage's interface (pipelines/stages.py)


def run(cfg: RunConfig, name: str = "world") -> dict[str, Any]:
    run_dir = RunDir(cfg.run_dir)
    numbers = generate(cfg.seed, getattr(cfg, name), run_dir.world)
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


def report_section(run: RunDir, name: str = "world") -> str:
    """What the crawl holds and what the question sets ask."""
    numbers = read_summary(run).get(name)
    if not numbers:
        return ""
    lines = [
        f"{numbers['pages']:,} pages in {len(numbers['files'])} WARC files ({numbers['warc_bytes'] / 1e6:.1f} MB), "
        f"written in {numbers['seconds']:.1f} s; {numbers['entities']} fictional entities.",
        "",
        "| kind | pages |",
        "|---|---:|",
        *(f"| {k} | {n:,} |" for k, n in numbers["kinds"].items()),
        "",
        "| facts | count |",
        "|---|---:|",
        *(f"| {k} | {n:,} |" for k, n in numbers["facts"].items()),
        "",
        "| question set | questions |",
        "|---|---:|",
        *(f"| {k} | {n:,} |" for k, n in numbers["questions"].items()),
        "",
    ]
    return "\n".join(lines)
