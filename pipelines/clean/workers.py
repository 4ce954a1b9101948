"""The clean stage's workers: Ray actors that run pass 1, one input file per call, and pass 2's merges.

Why plain actors and not a Ray Data actor pool: pass 1's unit of work is a whole input file (that is
the unit of resume), so Ray Data has nothing to stream or fuse here, while it costs a fixed price
that a crawl of a few thousand pages feels: its streaming executor polling on the driver, and a
stats actor, an autoscaling requester and an actor-location tracker, each a Ray worker process of its
own (4.9 CPU-seconds in a 3,000-page run here, and pass 2's Ray Data read + write 4 more in fresh
worker processes, of about 57 in all). Without a dedup step, pass 2 merely gathers the per-file
outputs (pipelines/clean/merge.py), and the same actors, already started, do that too, so such a run
starts no Ray Data execution at all.

A worker that dies mid-file (the OOM killer, a crash in a C extension) is restarted by Ray and the
call retried ``RETRIES`` times; a file that still kills its worker is recorded as a failed file
(one error row, retried by the next run) and the other files go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pipelines.clean.config import CleanConfig
from pipelines.clean.pipeline import FileProcessor

log = logging.getLogger("raychat.clean")

RETRIES = 2  # calls retried on a restarted worker before the item counts as failed
UNAVAILABLE_RETRIES = 20  # sends of one item to workers that could not be reached (a node being replaced)


class CleanWorker:
    """One worker process: builds the steps once, then cleans whole files and writes merged outputs."""

    def __init__(self, cfg_json: str, files: list[Any], work_dir: str) -> None:
        from pipelines.runtime import setup_logging

        setup_logging()
        cfg = CleanConfig.model_validate_json(cfg_json)
        if cfg.extract.timeout_mode == "auto":
            # the sandbox process: a parser that crashes or eats the memory costs one page, not the
            # worker and the file it holds (its cost, a pipe round trip, is ~1% of a page's extraction)
            cfg.extract.timeout_mode = "process"
        self.processor = FileProcessor(cfg.model_dump_json(), files, work_dir)

    def process(self, index: int) -> dict[str, Any]:
        return self.processor.process(index)

    def merge(self, job: Any) -> int:
        from pipelines.clean.merge import run_merge

        return run_merge(job)


class WorkerPool:
    """Up to ``size`` CleanWorker actors, started on first use and killed by ``close``."""

    def __init__(self, cfg: CleanConfig, files: list[Any], work_dir: str) -> None:
        self.cfg = cfg
        self.files = files
        self.work_dir = work_dir
        self.actors: list[Any] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self, wanted: int) -> None:
        import ray

        if self.actors:
            return
        size = self.cfg.num_workers or max(1, int(ray.available_resources().get("CPU", 1)))
        size = max(1, min(size, wanted))
        remote = ray.remote(CleanWorker).options(
            num_cpus=self.cfg.cpus_per_worker, max_restarts=-1, max_task_retries=RETRIES
        )
        cfg_json = self.cfg.model_dump_json()
        self.actors = [remote.remote(cfg_json, self.files, self.work_dir) for _ in range(size)]
        log.info("clean: %d workers", size)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def run(
        self,
        method: str,
        items: Iterable[Any],
        on_failure: Callable[[Any, BaseException], Any],
    ) -> Iterator[tuple[Any, Any]]:
        """``(item, result)`` of ``actor.<method>(item)`` for every item, as they finish (each actor
        holds one item at a time, so a slow file never holds back the others); an item whose worker
        died ``RETRIES + 1`` times yields ``on_failure(item, error)`` instead."""
        import ray

        todo = list(items)
        if not todo:
            return
        self._start(len(todo))
        todo.reverse()
        idle = list(self.actors)
        running: dict[Any, tuple[Any, Any]] = {}
        unavailable: dict[int, int] = {}  # item -> times its worker could not be reached
        while todo or running:
            while todo and idle:
                actor, item = idle.pop(), todo.pop()
                running[getattr(actor, method).remote(item)] = (actor, item)
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, item = running.pop(ref)
            idle.append(actor)  # restarted by Ray if it died
            try:
                result = ray.get(ref)
            except ray.exceptions.ActorUnavailableError as e:
                # the actor is being restarted (its node was lost, its process is coming back): not the
                # item's fault, so it is sent again, after a pause that grows, a bounded number of times
                unavailable[id(item)] = tries = unavailable.get(id(item), 0) + 1
                if tries > UNAVAILABLE_RETRIES:
                    log.error("clean: no worker could take %s %d times; recording it as failed", item, tries)
                    yield item, on_failure(item, e)
                    continue
                log.warning(
                    "clean: a worker was unavailable (%s); sending %s again", e.__class__.__name__, item
                )
                time.sleep(min(5.0, 0.5 * tries))
                todo.append(item)
                continue
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                log.error("clean: a worker died %d times on %s; recording it as failed", RETRIES + 1, item)
                result = on_failure(item, e)
            yield item, result
