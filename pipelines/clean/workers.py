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
(one error row, retried by the next run) and the other files go on. A worker lost with its node is
waited for (up to ``UNAVAILABLE_WAIT_S``, while the others keep working) and its file sent again once
it is back; a file that takes a worker down after that is the file's fault (it used to be sent 20
times, about 60 worker restarts and 2.5 minutes for one poisonous file).
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
UNAVAILABLE_WAIT_S = 600.0  # how long a lost worker may take to come back (a node being replaced)


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
        died ``RETRIES + 1`` times, or was lost holding it twice, yields ``on_failure(item, error)``."""
        import ray

        todo = list(items)
        if not todo:
            return
        self._start(len(todo))
        todo.reverse()
        idle = list(self.actors)
        # ref -> (actor, item, None) for a call, or (actor, item, deadline) for a readiness check of a
        # worker that was lost holding ``item``
        running: dict[Any, tuple[Any, Any, float | None]] = {}
        lost: dict[int, int] = {}  # item -> times a worker was lost holding it and came back
        while todo or running:
            while todo and idle:
                actor, item = idle.pop(), todo.pop()
                running[getattr(actor, method).remote(item)] = (actor, item, None)
            if not running:  # every worker is gone for good
                for item in reversed(todo):
                    yield item, on_failure(item, RuntimeError("no clean worker is left to take it"))
                return
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, item, deadline = running.pop(ref)
            if deadline is not None:
                # The worker was lost holding ``item``: its node was lost (not the item's fault), or the
                # item kills it every time (Ray has already retried it RETRIES times). Once the worker
                # is up again the item is sent once more; taking a worker down a second time is its fault.
                try:
                    ray.get(ref)
                except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError) as e:
                    if time.monotonic() < deadline:
                        time.sleep(0.5)
                        running[actor.__ray_ready__.remote()] = (actor, item, deadline)
                    else:
                        log.error(
                            "clean: the worker lost holding %s did not come back; recording it as failed",
                            item,
                        )
                        yield item, on_failure(item, e)
                    continue
                except ray.exceptions.RayActorError as e:
                    yield item, on_failure(item, e)
                    continue
                idle.append(actor)
                lost[id(item)] = times = lost.get(id(item), 0) + 1
                if times > 1:
                    log.error("clean: %s took its worker down again; recording it as failed", item)
                    yield item, on_failure(item, RuntimeError("it took its worker down twice"))
                else:
                    log.warning("clean: a worker was lost holding %s and is back; sending it again", item)
                    todo.append(item)
                continue
            try:
                result = ray.get(ref)
            except ray.exceptions.ActorUnavailableError:
                running[actor.__ray_ready__.remote()] = (actor, item, time.monotonic() + UNAVAILABLE_WAIT_S)
                continue
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                log.error("clean: a worker died %d times on %s; recording it as failed", RETRIES + 1, item)
                result = on_failure(item, e)
            idle.append(actor)  # restarted by Ray if it died
            yield item, result
