"""Rollout collection: prompts out to the generators, groups back through rewards and the reference
model into a bounded buffer, batches out to the learner under a staleness bound.

    collector = RolloutCollector(generators, score, reference, prompts, chat, cfg, log)
    while ...:
        collector.poll()                                  # dispatch, collect, score; never blocks long
        batch = collector.take_batch(step)                # prompts_per_step groups, or None yet

**Versions and staleness.** Every sample carries the ``policy_version`` of the weights that drew its
first token (the engine sets it) and its per-token log-probs. The learner at version ``v`` trains
batch ``v`` and makes version ``v + 1``; a group drawn by version ``u`` has staleness ``v - u`` there.
Two rules keep it within ``max_staleness`` (k):
- the gate (AReaL's): groups generating, being scored or waiting in the buffer are at most
  ``(generator version + k + 1 - batches taken) x prompts_per_step``, so generators run at most k
  batches ahead of the learner. With k = 0 nothing is generated while the learner trains: the
  synchronous algorithm; with k >= 1 the generators keep producing while it trains;
- at ``take_batch``, a group staler than k is dropped, counted, recorded, and its prompt asked again.

**Sample accounting.** Every prompt has a data position (its uid), every try an attempt number, and
every sample the id ``"<position>.<attempt>.<j>"``. ``SampleLog`` writes one JSONL line per sample
when it is trained, dropped as stale, filtered (no signal) or failed, and one line per requeue; so
"no sample lost or counted twice" and the staleness bound are checked from the file.

**Faults.** A generator that dies (``max_restarts`` brings it back with its first weights) fails its
calls: their prompts are requeued (a new attempt; nothing of the lost try was recorded as trained),
the generator is probed until it answers, the current weights are pushed to it, and only then does
it get work again. Reward workers recover inside ``RewardPool`` (chunks resent); the reference actor
is restarted by Ray and its calls retried (``max_task_retries``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch

from lm.engine import GenerationResult, SamplingParams
from lm.rewards import ItemScore, RewardItem
from lm.rl.algos import compute_advantages
from lm.rl.policy_step import Completion
from pipelines.grpo.config import GRPOConfig
from pipelines.grpo.data import Prompt, PromptSource, messages
from pipelines.grpo.replies import ReplyReader

log = logging.getLogger("raychat.grpo")
ScoreFn = Callable[[list[RewardItem]], list[ItemScore]]
PROBE_EVERY_S = 0.5


class SampleLog:
    """Append-only JSONL of sample records; a checkpoint keeps its line count so a resumed run can cut
    the lines written after it."""

    def __init__(self, path: Path, keep_lines: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if keep_lines is None:
            path.write_text("")
        else:
            truncate_lines(path, keep_lines)
        self.lines = keep_lines or 0
        self._f = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self.lines += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def truncate_lines(path: Path, keep: int) -> None:
    """Keep the first ``keep`` lines of a file (what existed at a checkpoint)."""
    if not path.is_file():
        path.write_text("")
        return
    with path.open() as f:
        lines = f.readlines()[:keep]
    path.write_text("".join(lines))


@dataclass
class Group:
    """One prompt's G samples, scored: what the buffer holds and the learner trains on."""

    prompt: Prompt
    attempt: int
    results: list[GenerationResult]
    texts: list[str] = field(default_factory=list)
    scores: list[ItemScore] = field(default_factory=list)
    ref_logprobs: list[list[float]] | None = None
    advantages: list[float] = field(default_factory=list)
    tool_calls: list[dict[str, int]] = field(default_factory=list)
    revises: list[bool] = field(default_factory=list)

    @property
    def version(self) -> int:
        return min(r.policy_version for r in self.results)

    def sample_id(self, j: int) -> str:
        return f"{self.prompt.position}.{self.attempt}.{j}"

    def completions(self) -> list[Completion]:
        return [
            Completion(
                prompt_ids=r.prompt_ids,
                token_ids=r.token_ids,
                forced=r.forced,
                logprobs=r.sampled_logprobs or [0.0] * len(r.token_ids),
                advantage=self.advantages[j],
                ref_logprobs=self.ref_logprobs[j] if self.ref_logprobs is not None else None,
                version=r.policy_version,
            )
            for j, r in enumerate(self.results)
        ]


@dataclass
class _Worker:
    """A generator as the collector sees it: calls in flight, health, busy time."""

    handle: Any
    in_flight: int = 0
    up: bool = True
    probe: ray.ObjectRef | None = None
    push: ray.ObjectRef | None = None
    next_probe: float = 0.0
    busy_s: float = 0.0
    restarts: int = 0


class RolloutCollector:
    """See the module docstring. ``score`` scores reward items (a RewardPool's or in-process);
    ``reference`` is a ReferenceActor handle or None; ``state`` continues a checkpointed run."""

    def __init__(
        self,
        generators: Sequence[Any],
        score: ScoreFn,
        reference: Any,
        prompts: PromptSource,
        chat: Any,
        cfg: GRPOConfig,
        samples: SampleLog,
        state: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.workers = [_Worker(g) for g in generators]
        self.score, self.reference, self.prompts, self.chat, self.cfg = score, reference, prompts, chat, cfg
        self.samples = samples
        self.seed = seed
        self.reader = ReplyReader(chat, cfg.self_correction_markers)
        self.tools = list(cfg.tools)
        self.system = cfg.system()
        self.params = SamplingParams(
            temperature=cfg.temperature,
            max_tokens=cfg.max_new_tokens,
            n=cfg.group_size,
            logprobs=True,
            stop_token_ids=list(chat.stop_token_ids),
        )
        state = state or {}
        self.next_position: int = state.get("next_position", 0)
        self.requeue: deque[tuple[int, int]] = deque(
            (p, a + 1) for p, a in state.get("outstanding", [])
        )  # (position, attempt) asked again first
        self.batches_taken: int = state.get("batches_taken", 0)
        self.generator_version: int = state.get("batches_taken", 0)
        self.counts: Counter[str] = Counter(state.get("counts", {}))
        self.generating: dict[ray.ObjectRef, tuple[int, Prompt, int]] = {}  # ref -> worker, prompt, attempt
        self.scoring: list[tuple[Group, Future, ray.ObjectRef | None]] = []
        self.buffer: list[Group] = []
        self.pool = ThreadPoolExecutor(
            max_workers=max(2, 2 * len(self.workers)), thread_name_prefix="rewards"
        )
        self.weights: Any = None  # the latest weights' ObjectRef, for generators that come back
        self._last = time.monotonic()
        self.dropped_since: Counter[str] = Counter()

    # -- bookkeeping ----------------------------------------------------------------------------------

    @property
    def live(self) -> int:
        return len(self.generating) + len(self.scoring) + len(self.buffer)

    def limit(self) -> int:
        ahead = self.generator_version + self.cfg.max_staleness + 1 - self.batches_taken
        return max(0, ahead) * self.cfg.prompts_per_step

    def outstanding(self) -> list[tuple[int, int]]:
        """Prompts handed out and not yet consumed: asked again after a resume."""
        out = list(self.requeue)
        out += [(p.position, a) for _, p, a in self.generating.values()]
        out += [(g.prompt.position, g.attempt) for g, _, _ in self.scoring]
        out += [(g.prompt.position, g.attempt) for g in self.buffer]
        return sorted(out)

    def state(self) -> dict[str, Any]:
        return {
            "next_position": self.next_position,
            "outstanding": self.outstanding(),
            "batches_taken": self.batches_taken,
            "counts": dict(self.counts),
        }

    def set_weights(self, version: int, weights: Any) -> None:
        """Every generator that is up now has ``version`` (pushed by the caller)."""
        self.generator_version, self.weights = version, weights

    # -- the loop -------------------------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.02) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        for w in self.workers:
            if w.in_flight:
                w.busy_s += dt
        self._dispatch()
        refs = list(self.generating)
        refs += [w.probe for w in self.workers if w.probe is not None]
        refs += [w.push for w in self.workers if w.push is not None]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
        if not refs:
            time.sleep(timeout_s)
        for ref in ready:
            if ref in self.generating:
                self._collect(ref)
            else:
                self._health(ref)
        self._probe_down_workers()
        self._finish_scoring()

    def _dispatch(self) -> None:
        while self.live < self.limit():
            free = [
                i for i, w in enumerate(self.workers)
                if w.up and w.in_flight < self.cfg.generators.prompts_in_flight
            ]  # fmt: skip
            if not free:
                return
            i = min(free, key=lambda k: self.workers[k].in_flight)
            if self.requeue:
                position, attempt = self.requeue.popleft()
            else:
                position, attempt = self.next_position, 0
                self.next_position += 1
            prompt = self.prompts.at(position)
            params = self.params.model_copy(
                update={"seed": (self.seed * 1_000_003 + position) * 64 + attempt * 8}
            )
            ref = self.workers[i].handle.generate.remote(
                [prompt.ids], params, request_ids=[f"{position}.{attempt}"], tools=self.tools
            )
            self.generating[ref] = (i, prompt, attempt)
            self.workers[i].in_flight += 1
            self.counts["dispatched"] += 1

    def _collect(self, ref: ray.ObjectRef) -> None:
        i, prompt, attempt = self.generating.pop(ref)
        worker = self.workers[i]
        worker.in_flight -= 1
        try:
            results: list[GenerationResult] = ray.get(ref)
        except ray.exceptions.RayActorError as e:
            self._lost(i, prompt, attempt, e)
            return
        except Exception as e:  # noqa: BLE001 - a request the engine refused: counted, not retried
            self.counts["failed_groups"] += 1
            self.samples.write(
                {"kind": "failed", "position": prompt.position, "attempt": attempt, "error": str(e)[:300]}
            )
            log.warning("grpo: prompt %d failed: %s", prompt.position, e)
            return
        group = Group(prompt, attempt, results)
        reward_future = self.pool.submit(self.score, self.read_replies(group))
        ref_call = None
        if self.reference is not None:
            ref_call = self.reference.score.remote(prompt.ids, [r.token_ids for r in results])
        self.scoring.append((group, reward_future, ref_call))

    def read_replies(self, group: Group) -> list[RewardItem]:
        """The group's replies read (texts, tool calls, self-revision) and made into reward items. A
        reward model reads the conversation the policy answered, system turn included, as it trained."""
        problem = group.prompt.problem
        conversation = messages(problem.question, self.system) if self.cfg.rewards.rm else None
        items = []
        for j, r in enumerate(group.results):
            reply = self.reader.read(r.token_ids)
            group.texts.append(reply.text)
            group.tool_calls.append(reply.tool_calls)
            group.revises.append(reply.revises)
            items.append(
                RewardItem(group.sample_id(j), reply.text, problem.reference, problem.question, conversation)
            )
        return items

    def worker_lost(self, i: int, error: Exception) -> None:
        """Generator ``i`` died: no work until it answers a probe and has the current weights."""
        worker = self.workers[i]
        if worker.up:
            worker.up, worker.restarts = False, worker.restarts + 1
            worker.next_probe = time.monotonic()
            self.counts["generator_lost"] += 1
            log.warning("grpo: generator %d was lost (%s); requeueing its prompts", i, type(error).__name__)

    def _lost(self, i: int, prompt: Prompt, attempt: int, error: Exception) -> None:
        self.worker_lost(i, error)
        self.requeue.append((prompt.position, attempt + 1))
        self.counts["requeued"] += 1
        self.samples.write(
            {"kind": "requeued", "position": prompt.position, "attempt": attempt, "reason": "generator_lost"}
        )

    def _probe_down_workers(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            if not w.up and w.probe is None and w.push is None and now >= w.next_probe:
                w.probe = w.handle.stats.remote()

    def _health(self, ref: ray.ObjectRef) -> None:
        for i, w in enumerate(self.workers):
            if ref is w.probe:
                w.probe = None
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError:
                    w.next_probe = time.monotonic() + PROBE_EVERY_S
                    return
                if self.generator_version == 0:  # its own weights are the current ones
                    w.up = True
                    log.info("grpo: generator %d is back", i)
                elif self.weights is None:  # broadcast so far: it gets the next push's object-store copy
                    w.next_probe = time.monotonic() + PROBE_EVERY_S
                else:
                    w.push = w.handle.update_weights.remote(self.weights, self.generator_version)
                return
            if ref is w.push:
                w.push = None
                try:
                    ray.get(ref)
                    w.up = True
                    log.info("grpo: generator %d is back with version %d", i, self.generator_version)
                except ray.exceptions.RayActorError:
                    w.next_probe = time.monotonic() + PROBE_EVERY_S
                return

    def _finish_scoring(self) -> None:
        still = []
        for group, reward_future, ref_call in self.scoring:
            if not reward_future.done() or (ref_call is not None and not _ready(ref_call)):
                still.append((group, reward_future, ref_call))
                continue
            group.scores = reward_future.result()
            if ref_call is not None:
                group.ref_logprobs = ray.get(ref_call)
            rewards = torch.tensor([s.reward for s in group.scores], dtype=torch.float64)
            advantages = compute_advantages(
                self.cfg.algo, rewards, torch.zeros(len(rewards), dtype=torch.long)
            )
            group.advantages = advantages.tolist()
            if self.cfg.drop_uninformative and float(rewards.std()) == 0.0:
                self.counts["filtered_groups"] += 1
                self.dropped_since["filtered"] += 1
                self._record(group, "filtered", step=self.batches_taken)
                continue
            self.buffer.append(group)
        self.scoring = still

    # -- batches ---------------------------------------------------------------------------------------

    def take_batch(self, step: int) -> list[Group] | None:
        """The groups of learner step ``step`` (0-based: the learner is at version ``step``), or None
        while fewer than prompts_per_step fresh groups are ready. Stale groups are dropped here."""
        fresh = []
        for g in self.buffer:
            if step - g.version > self.cfg.max_staleness:
                self.counts["stale_groups"] += 1
                self.counts["stale_samples"] += len(g.results)
                self.dropped_since["stale"] += 1
                self._record(g, "stale", step=step)
                self.requeue.append((g.prompt.position, g.attempt + 1))
            else:
                fresh.append(g)
        self.buffer = fresh
        if len(fresh) < self.cfg.prompts_per_step:
            return None
        fresh.sort(key=lambda g: (g.version, g.prompt.position))
        batch, self.buffer = fresh[: self.cfg.prompts_per_step], fresh[self.cfg.prompts_per_step :]
        self.batches_taken += 1
        for g in batch:
            self._record(g, "trained", step=step + 1, staleness=step - g.version)
        self.samples.flush()
        return batch

    def _record(self, g: Group, status: str, step: int, staleness: int | None = None) -> None:
        for j, r in enumerate(g.results):
            s = g.scores[j] if g.scores else None
            self.samples.write(
                {
                    "kind": "sample",
                    "id": g.sample_id(j),
                    "position": g.prompt.position,
                    "problem": g.prompt.problem.id,
                    "attempt": g.attempt,
                    "status": status,
                    "step": step,
                    "version": r.policy_version,
                    "staleness": staleness,
                    "reward": s.reward if s else None,
                    "reward_status": s.status if s else None,
                    "components": s.components if s else {},
                    "advantage": g.advantages[j] if g.advantages else None,
                    "length": len(r.token_ids),
                    "sampled_tokens": len(r.token_ids) - sum(r.forced),
                    "finish": r.finish_reason,
                    "tool_calls": g.tool_calls[j],
                    "revises": g.revises[j],
                }
            )

    def busy_seconds(self) -> list[float]:
        return [w.busy_s for w in self.workers]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _ready(ref: ray.ObjectRef) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
