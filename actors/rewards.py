"""Reward workers: a pool of Ray actors that score batches of completions.

    from actors.rewards import RewardPool, RewardPoolConfig
    from lm.rewards import RewardConfig, RewardItem
    pool = RewardPool.for_rules(RewardConfig(rules=[{"name": "numeric_accuracy"}]), RewardPoolConfig(num_workers=4))
    batch = pool.score([RewardItem(id=i, completion=c, reference=r) for i, (c, r) in enumerate(pairs)])
    batch.rewards        # [1.0, 0.0, ...] in the order given
    batch.counts         # {"ok": 62, "error": 1, "timeout": 1, "retried_chunks": 0, ...}
    pool.close()

The client cuts a batch into chunks and keeps every worker busy with at most ``in_flight`` chunks,
gathering the scores back into the order given, each with its status (``ok``, ``error``,
``timeout``; see lm/rewards.py). Nothing a reward does stops the run:

* a reward that raises scores 0 (``error``); one that runs past ``RewardConfig.time_limit_s`` scores
  0 (``timeout``). Rule rewards run in a child process inside each worker
  (lm/reward_process.py) that is killed at an item's deadline, so the limit holds for any code, C
  extensions included, on any thread (no ``signal.alarm``), and the worker itself never hangs;
* a worker that dies (node lost, OOM, killed) is restarted by Ray (``max_restarts``); it gets no
  work until a probe says it is back (a restarting actor refuses tasks at once), and the chunks it
  held are sent again, to whichever worker is up (``max_attempts`` times at most, then their items
  are ``error``; with no worker up for ``revive_wait_s``, the rest are ``error`` too). Results are
  kept per chunk and a chunk's results are taken once: every item comes back exactly once (a
  retried chunk is scored again from the start, harmless for rewards, pure functions of their input);
* a worker that does not answer within its chunk's deadline (``time_limit_s`` x items + ``grace_s``:
  something the per-item limit did not cover, such as a hung reward model) is killed and restarted,
  and that chunk's items are ``timeout``.

Any ``lm.rewards.Scorer`` runs in the pool: ``RewardPool(make_scorer, config)`` with a picklable
factory (``functools.partial(MyScorer, ...)``); ``for_rules`` is the rule-reward pool and ``for_model``
the reward model's (``lm.reward_scorer.ModelScorer``: each actor loads the model once and scores its
chunks in padded batches; ``num_gpus`` puts it on a GPU). ``score_with(pools, items)`` scores a batch
with several pools at once and adds their rewards per item, so the rules' and the reward model's
weights from ``RewardConfig`` combine::

    rules = RewardPool.for_rules(rewards, RewardPoolConfig(num_workers=4))
    rm = RewardPool.for_model(rewards, "runs/tiny/models/rm", RewardPoolConfig(num_workers=1, num_gpus=1))
    batch = score_with([rules, rm], items)   # reward = sum(w_rule * rule) + rewards.rm.weight * rm
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray
from pydantic import Field

from lm.config_base import StrictModel
from lm.reward_process import IsolatedScorer
from lm.rewards import (
    ItemScore,
    RewardConfig,
    RewardItem,
    RuleScorer,
    Scorer,
    Status,
    failed_score,
    merge_scores,
)

log = logging.getLogger("raychat")

_WORKER_LOST = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.ObjectLostError,
)


class RewardPoolConfig(StrictModel):
    num_workers: int = Field(2, ge=1, description="reward actors")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per actor (its scoring process included)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (a reward-model scorer)")
    chunk_size: int | None = Field(
        None, ge=1, description="items per task; default: a batch spread as about 2 chunks per worker"
    )
    in_flight: int = Field(
        2, ge=1, description="chunks queued at a worker at once (one scoring, one waiting)"
    )
    isolate: bool = Field(
        True,
        description="rule rewards in a child process with a hard per-item time limit (False: in the actor)",
    )
    max_restarts: int = Field(-1, ge=-1, description="restarts of a dead actor (-1: always)")
    max_attempts: int = Field(
        3, ge=1, description="tries of a chunk whose worker died, then its items are errors"
    )
    grace_s: float = Field(120.0, gt=0, description="added to a chunk's deadline (a worker's start-up)")
    revive_wait_s: float = Field(
        300.0, gt=0, description="how long items wait for a lost worker when no worker is up, then are errors"
    )


class ScorerWorker:
    """The actor's body: one scorer, built in the actor (a plain class, testable without Ray)."""

    def __init__(self, make_scorer: Callable[[], Scorer]) -> None:
        self.scorer = make_scorer()
        start = getattr(self.scorer, "start", None)
        if callable(start):
            start()  # a scorer that cannot start fails the actor's creation, with its reason

    def score(self, items: list[RewardItem]) -> list[ItemScore]:
        return self.scorer.score(items)

    def info(self) -> dict[str, Any]:
        context = ray.get_runtime_context()
        return {
            "pid": os.getpid(),
            "node": context.get_node_id(),
            "restarted": context.was_current_actor_reconstructed,
            "cpu_s": time.process_time(),  # this process only, not its scoring child
            "stats": dict(getattr(self.scorer, "stats", {})),
        }


RewardWorker = ray.remote(ScorerWorker)


@dataclass
class ScoredBatch:
    scores: list[ItemScore]
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.scores]


@dataclass
class _Chunk:
    start: int
    items: list[RewardItem]
    attempts: int = 0


@dataclass
class _Health:
    """A worker that lost a chunk is "down" until a probe (``info``) answers: a restarting actor
    refuses tasks at once, and chunks sent to it would only use up their attempts."""

    down_since: float | None = None
    failed_probes: int = 0
    next_probe: float = 0.0

    def lost(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        self.failed_probes = 0
        self.next_probe = time.monotonic()

    def probe_failed(self) -> None:
        self.failed_probes += 1
        self.next_probe = time.monotonic() + min(0.25 * 2**self.failed_probes, 5.0)  # 0.5 s ... 5 s

    def up(self) -> None:
        self.down_since, self.failed_probes = None, 0


class RewardPool:
    """``num_workers`` reward actors and the client that spreads batches over them (module docstring)."""

    def __init__(
        self,
        make_scorer: Callable[[], Scorer],
        config: RewardPoolConfig | None = None,
        item_time_limit_s: float = 5.0,
        runtime_env: dict[str, Any] | None = None,
        name: str = "rewards",
        worker_options: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """``worker_options``: more Ray options for each worker (a placement group's
        ``scheduling_strategy``, one dict per worker)."""
        self.config = config or RewardPoolConfig()
        self.item_time_limit_s = item_time_limit_s
        self.counts: Counter[str] = Counter()  # over the pool's life
        self._counts_lock = threading.Lock()
        options: dict[str, Any] = {
            "num_cpus": self.config.num_cpus,
            "num_gpus": self.config.num_gpus,
            "max_restarts": self.config.max_restarts,
            "max_task_retries": 0,  # the client resends a lost chunk itself, and counts it
        }
        if runtime_env:
            options["runtime_env"] = runtime_env
        extra = list(worker_options or [{}] * self.config.num_workers)
        if len(extra) != self.config.num_workers:
            raise ValueError(f"{len(extra)} worker_options for {self.config.num_workers} workers")
        self.workers = [RewardWorker.options(**options, **more).remote(make_scorer) for more in extra]
        self.name = name
        self.health = [_Health() for _ in self.workers]

    @classmethod
    def for_rules(
        cls,
        rewards: RewardConfig,
        config: RewardPoolConfig | None = None,
        runtime_env: dict[str, Any] | None = None,
        worker_options: Sequence[dict[str, Any]] | None = None,
    ) -> RewardPool:
        """A pool scoring ``rewards.rules`` (each item within ``rewards.time_limit_s``)."""
        config = config or RewardPoolConfig()
        scorer_cls = IsolatedScorer if config.isolate else RuleScorer
        make = functools.partial(scorer_cls, rewards.model_dump())
        return cls(make, config, rewards.time_limit_s, runtime_env, worker_options=worker_options)

    @classmethod
    def for_model(
        cls,
        rewards: RewardConfig,
        model_dir: str | None = None,
        config: RewardPoolConfig | None = None,
        runtime_env: dict[str, Any] | None = None,
        batch_tokens: int = 16384,
        worker_options: Sequence[dict[str, Any]] | None = None,
    ) -> RewardPool:
        """A pool scoring with the reward model in ``model_dir`` (default ``rewards.rm.model``), each
        score weighted by ``rewards.rm.weight``; its chunks get ``rewards.time_limit_s`` per item.
        ``worker_options`` as in ``__init__``."""
        if rewards.rm is None:
            raise ValueError("rewards.rm is not set: give the reward model's weight (rewards.rm.weight)")
        model = model_dir or rewards.rm.model
        if not model:
            raise ValueError("no reward model directory: set rewards.rm.model (e.g. <run>/models/rm)")
        from lm.reward_scorer import ModelScorer  # torch: only for a pool that runs a model

        config = config or RewardPoolConfig(num_workers=1)
        make = functools.partial(
            ModelScorer,
            model,
            weight=rewards.rm.weight,
            batch_tokens=batch_tokens,
            threads=max(1, int(config.num_cpus)),
        )
        return cls(
            make, config, rewards.time_limit_s, runtime_env, name="rm-rewards", worker_options=worker_options
        )

    def wait_ready(self, timeout_s: float = 300.0) -> list[dict[str, Any]]:
        """Every worker's info once all have started (or come back from a restart). Raises
        ``ray.exceptions.ActorDiedError`` naming the reason when a worker cannot start (a reward module
        the workers cannot import, say): call it before the first batch."""
        deadline = time.monotonic() + timeout_s
        infos = []
        for worker in self.workers:
            while True:
                try:
                    infos.append(ray.get(worker.info.remote(), timeout=max(0.0, deadline - time.monotonic())))
                    break
                except ray.exceptions.ActorUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.25)  # restarting: it refuses calls until it is back
        return infos

    def _chunks(self, items: Sequence[RewardItem]) -> list[_Chunk]:
        size = self.config.chunk_size or max(1, math.ceil(len(items) / (2 * len(self.workers))))
        return [_Chunk(start, list(items[start : start + size])) for start in range(0, len(items), size)]

    def score(self, items: Sequence[RewardItem]) -> ScoredBatch:
        """Scores of ``items`` in their order; never raises for what a reward or a worker does. Several
        threads may call it at once (an asynchronous driver scoring each group as it is generated):
        their chunks share the workers."""
        started = time.perf_counter()
        run = _Run(self, self._chunks(items), len(items))
        while run.queue or run.running:
            run.step()
        scores = [s for s in run.results if s is not None]
        assert len(scores) == len(items), "every item is scored exactly once"
        run.counts.update(s.status for s in scores)
        with self._counts_lock:
            self.counts.update(run.counts)
        return ScoredBatch(scores, run.counts, time.perf_counter() - started)

    def close(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []


def score_with(pools: Sequence[RewardPool], items: Sequence[RewardItem]) -> ScoredBatch:
    """``items`` scored by every pool at once (one thread each), merged per item with
    ``lm.rewards.merge_scores``: rewards add, components join, a failure in any pool makes the item 0."""
    if not pools:
        raise ValueError("score_with needs at least one pool")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(pools)) as ex:
        batches = list(ex.map(lambda pool: pool.score(items), pools))
    scores = batches[0].scores
    counts: Counter[str] = Counter()
    for pool, batch in zip(pools, batches, strict=True):
        counts.update({f"{pool.name}.{k}": v for k, v in batch.counts.items()})
    for batch in batches[1:]:
        scores = [merge_scores(a, b) for a, b in zip(scores, batch.scores, strict=True)]
    counts.update(s.status for s in scores)
    return ScoredBatch(scores, counts, time.perf_counter() - started)


class _Run:
    """One ``RewardPool.score`` call: chunks queued, running and done, and the workers' probes."""

    def __init__(self, pool: RewardPool, chunks: list[_Chunk], n_items: int) -> None:
        self.pool, self.config = pool, pool.config
        self.queue = deque(chunks)
        self.results: list[ItemScore | None] = [None] * n_items
        self.counts: Counter[str] = Counter(chunks=len(chunks))
        self.running: dict[ray.ObjectRef, tuple[_Chunk, int, float]] = {}  # ref -> chunk, worker, deadline
        self.probes: dict[ray.ObjectRef, int] = {}
        self.load = [0] * len(pool.workers)
        self.tail = [0.0] * len(pool.workers)  # the latest deadline of a chunk at each worker

    def finish(self, chunk: _Chunk, scores: list[ItemScore]) -> None:
        for offset, score in enumerate(scores):
            self.results[chunk.start + offset] = score

    def fail(self, chunk: _Chunk, status: Status, reason: str) -> None:
        self.finish(chunk, [failed_score(it.id, status, reason) for it in chunk.items])

    def step(self) -> None:
        now = time.monotonic()
        health = self.pool.health
        probing = set(self.probes.values())
        for w, h in enumerate(health):
            if h.down_since is not None and w not in probing and h.next_probe <= now:
                self.probes[self.pool.workers[w].info.remote()] = w
        self.dispatch()
        if self.queue and not self.running and all(h.down_since is not None for h in health):
            if now - min(h.down_since for h in health) > self.config.revive_wait_s:  # type: ignore[type-var]
                reason = f"no reward worker came back within {self.config.revive_wait_s:g} s"
                while self.queue:
                    self.counts["failed_chunks"] += 1
                    self.fail(self.queue.popleft(), "error", reason)
                return
        wake = [d for _, _, d in self.running.values()]
        wake += [h.next_probe for w, h in enumerate(health) if h.down_since is not None and w not in probing]
        wait_s = min(max(0.0, min(wake, default=now + 1.0) - now), 1.0)
        refs = [*self.running, *self.probes]
        ready = ray.wait(refs, num_returns=1, timeout=wait_s)[0] if refs else []
        if not refs:
            time.sleep(wait_s)
        for ref in ready:
            if ref in self.probes:
                self.probe_answered(ref)
            else:
                self.collect(ref)
        self.check_deadlines()

    def dispatch(self) -> None:
        """Chunks to the least-loaded workers that are up and have room."""
        while self.queue:
            free = [
                w
                for w, h in enumerate(self.pool.health)
                if h.down_since is None and self.load[w] < self.config.in_flight
            ]
            if not free:
                return
            worker = min(free, key=self.load.__getitem__)
            chunk = self.queue.popleft()
            chunk.attempts += 1
            # a chunk queued behind others at the worker starts when they end: its clock starts then too
            budget = self.pool.item_time_limit_s * len(chunk.items) + self.config.grace_s
            deadline = max(time.monotonic(), self.tail[worker]) + budget
            ref = self.pool.workers[worker].score.remote(chunk.items)
            self.running[ref] = (chunk, worker, deadline)
            self.tail[worker] = deadline
            self.load[worker] += 1

    def probe_answered(self, ref: ray.ObjectRef) -> None:
        worker = self.probes.pop(ref)
        try:
            ray.get(ref)
            self.pool.health[worker].up()
        except _WORKER_LOST:
            self.pool.health[worker].probe_failed()

    def collect(self, ref: ray.ObjectRef) -> None:
        chunk, worker, _ = self.running.pop(ref)
        self.load[worker] -= 1
        try:
            scores = ray.get(ref)
        except _WORKER_LOST as e:
            self.counts["worker_lost"] += 1
            self.pool.health[worker].lost()
            if chunk.attempts < self.config.max_attempts:
                self.counts["retried_chunks"] += 1
                self.queue.appendleft(chunk)
                log.warning(
                    "%s: worker %d was lost (%s); its chunk is sent again",
                    self.pool.name,
                    worker,
                    type(e).__name__,
                )
            else:
                self.counts["failed_chunks"] += 1
                self.fail(chunk, "error", f"reward worker lost {chunk.attempts} times: {type(e).__name__}")
            return
        except Exception as e:  # noqa: BLE001 - a scorer that broke its contract: its items are errors
            self.counts["failed_chunks"] += 1
            self.fail(chunk, "error", f"{type(e).__name__}: {e}")
            return
        if len(scores) != len(chunk.items):
            self.counts["failed_chunks"] += 1
            self.fail(
                chunk, "error", f"the scorer returned {len(scores)} scores for {len(chunk.items)} items"
            )
            return
        self.finish(chunk, scores)

    def check_deadlines(self) -> None:
        """A worker past a chunk's deadline is killed and restarted; that chunk's items time out and
        the chunks queued behind it are sent again."""
        now = time.monotonic()
        for ref in [r for r, (_, _, deadline) in self.running.items() if now >= deadline]:
            if ref not in self.running:
                continue  # resent with an earlier hung chunk of the same worker
            chunk, worker, _ = self.running.pop(ref)
            self.counts["hung_workers"] += 1
            log.warning("%s: worker %d gave no answer in time; restarting it", self.pool.name, worker)
            ray.kill(self.pool.workers[worker], no_restart=False)
            self.pool.health[worker].lost()
            for other in [r for r, (_, w, _) in self.running.items() if w == worker]:
                self.queue.appendleft(self.running.pop(other)[0])
                self.counts["retried_chunks"] += 1
            self.load[worker] = 0
            self.fail(
                chunk, "timeout", f"the reward worker gave no answer for {len(chunk.items)} items in time"
            )
