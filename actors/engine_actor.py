"""The engine actor: one engine behind a Ray actor that many callers feed at once.

    actor = start_engine_actor(EngineActorConfig(model_dir="runs/tiny/models/sft"), name="generator-0")
    results = ray.get(actor.generate.remote(prompts, SamplingParams(n=8, logprobs=True), request_ids=ids))
    for ref in actor.stream.remote(prompt, params):
        for event in ray.get(ref):                          # each item: one step's TokenEvents
            ...
    actor.update_weights.remote(ray.put(learner.state_dict()), version=3)
    ray.get(actor.stats.remote())                           # queue depth, running, tokens/s, version

GRPO's generators, Ray Data batch generation (pipelines/batch_generate.py) and Ray Serve replicas all
use this one class: ``TorchEngine`` on CPU, ``VLLMEngine`` on a GPU with vLLM (lm/engine/factory.py
picks). How it works:
- It is an async actor. One background task, the step loop, owns the engine: it applies what callers
  asked for (add, abort, update weights) between steps, runs ``engine.step()`` in a worker thread (so
  the event loop keeps accepting callers and cancellations while the model runs), and routes each
  step's token events to the waiting callers. Nothing else touches the engine, so the engine needs no
  locks.
- ``generate`` returns a call's results (one per sample; ``request_id`` is the caller's id, so a caller
  whose actor died can requeue exactly what was lost). ``stream`` is an async generator (Ray's
  streaming generator for the caller); it yields one list of ``TokenEvent`` per engine step.
- A caller that goes away frees its slot: ``ray.cancel`` on a stream (what a Serve replica does when
  its client disconnects) or on a generate call cancels the call's asyncio task here, and the request
  is aborted in the engine at once. A streaming caller whose process dies is noticed through the
  stream's backpressure (``STREAM_BACKPRESSURE``): Ray closes the stream, which aborts the request. A
  dead caller's ``generate`` call runs to its end (bounded by ``max_tokens``) and its results are
  dropped.
- The queue is bounded: requests beyond ``max_batch_size`` running and ``max_queued`` waiting are
  refused with ``EngineOverloaded`` (a server answers 429/503), and ``stats()`` shows the queue depth,
  what runs, tokens/s over the last ``THROUGHPUT_WINDOW_S`` seconds and the policy version.
- Tools are configured on the actor by name (``tools={"search": hook}``; hooks travel with
  cloudpickle, so a hook may hold a tokenizer or another actor's handle) and requests name the tools
  they may call. A tool that calls another actor returns ``ref.future()`` (lm/engine/tools.py): only
  that sample waits for the reply, the loop keeps stepping the others, and the hook's ``timeout_s``
  ends the sample with "tool_error" if the reply never comes. The event loop itself never blocks.
- ``update_weights(weights, version, in_flight)``: a state dict (through the object store on CPU;
  pass an ``ObjectRef`` from ``ray.put`` once for many actors) applied between steps with the
  engine's semantics for requests in flight (lm/engine/base.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import ray
from pydantic import Field

from lm.config_base import StrictModel
from lm.engine import (
    Engine,
    EngineLoad,
    GenerationResult,
    InFlight,
    SamplingParams,
    TokenEvent,
    ToolHook,
    Weights,
    make_engine,
)
from lm.engine.types import as_params

log = logging.getLogger(__name__)
THROUGHPUT_WINDOW_S = 10.0
# a stream pauses when this many of its items are unread; Ray then notices a caller that died and
# closes the stream (checked with Ray 2.60: without backpressure a dead caller's stream runs on)
STREAM_BACKPRESSURE = 16


class EngineOverloaded(RuntimeError):
    """The engine actor's queue is full; try again later (a server answers 429 or 503)."""


class RequestAborted(RuntimeError):
    """The request was aborted by ``abort(request_id)`` before it finished."""


class EngineActorConfig(StrictModel):
    """What the engine actor runs; every field has a default that works for the tiny demo."""

    model_dir: str = Field(description="a model directory (Hugging Face layout)")
    engine: Literal["auto", "torch", "vllm"] = Field(
        "auto", description="auto (vLLM when installed with a GPU, else ours), torch or vllm"
    )
    device: str | None = Field(
        None, description="torch device for the torch engine (default: cuda if present)"
    )
    max_batch_size: int = Field(32, ge=1, description="samples generated at once (KV cache slots)")
    max_seq_len: int | None = Field(
        None, ge=2, description="prompt + output per request (default: the model's)"
    )
    max_queued: int = Field(
        256, ge=0, description="requests waiting beyond the running ones; more are refused"
    )
    seed: int = Field(0, description="seed of requests that bring none")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="more engine constructor arguments"
    )


@dataclasses.dataclass(eq=False)
class _Waiter:
    """One caller's request: where its events and results go."""

    caller_id: Hashable
    events: asyncio.Queue | None  # streaming callers; None for generate
    done: asyncio.Future
    engine_id: int = -1


class EngineActor:
    """Run with ``start_engine_actor`` (or ``ray.remote(EngineActor)``); see the module docstring."""

    def __init__(
        self,
        config: EngineActorConfig,
        tools: Mapping[str, ToolHook] | None = None,
        engine: Engine | None = None,
    ) -> None:
        """``engine`` replaces the one ``config`` describes (for tests and custom engines)."""
        self.config = config
        self.engine = engine or make_engine(
            config.model_dir,
            prefer=config.engine,
            device=config.device,
            max_batch_size=config.max_batch_size,
            max_seq_len=config.max_seq_len,
            seed=config.seed,
            **config.engine_kwargs,
        )
        self.tools = dict(tools or {})
        self._load = self.engine.load()
        self._version = self.engine.policy_version
        self._inbox: list[tuple[Callable[[], Any], asyncio.Future | None]] = []
        self._waiters: dict[int, _Waiter] = {}  # by engine request id
        self._ids = itertools.count()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.Task | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of recent steps
        self._refused = 0
        self._pending_adds = 0  # requests accepted whose add has not reached the engine yet
        self._started = time.monotonic()

    # -- what callers call ------------------------------------------------------------------------------

    async def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        request_ids: Sequence[Hashable] | None = None,
        tools: Sequence[str] = (),
    ) -> list[GenerationResult]:
        """Every sample of every prompt, prompt-major; ``request_id`` is the caller's id (default: the
        prompt's index). EngineOverloaded when the queue is full, ValueError for a bad request."""
        waiters = await self._submit(prompts, params, request_ids, tools, stream=False)
        try:
            groups = await asyncio.gather(*(w.done for w in waiters))
        except BaseException:  # cancelled (the caller went away) or failed: free the slots
            self._abort(waiters)
            raise
        return [r for group in groups for r in group]

    @ray.method(num_returns="streaming", _generator_backpressure_num_objects=STREAM_BACKPRESSURE)
    async def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams | None = None,
        request_id: Hashable | None = None,
        tools: Sequence[str] = (),
    ) -> AsyncIterator[list[TokenEvent]]:
        """One list of TokenEvents per engine step until every sample finished (``finish_reason`` on
        each sample's last event); ``actor.stream.remote(...)`` returns Ray's streaming generator."""
        (waiter,) = await self._submit(
            [prompt], params, [request_id if request_id is not None else 0], tools, True
        )
        assert waiter.events is not None
        try:
            while True:
                item = await waiter.events.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not waiter.done.done():  # cancelled, or the caller stopped reading: free the slots
                self._abort([waiter])

    async def abort(self, request_id: Hashable) -> int:
        """Abort every outstanding request with this caller id (its ``generate`` or ``stream`` raises
        RequestAborted); how many there were."""
        waiters = [w for w in self._waiters.values() if w.caller_id == request_id]
        self._abort(waiters, RequestAborted(f"request {request_id!r} was aborted"))
        return len(waiters)

    async def update_weights(self, weights: Weights, version: int, in_flight: InFlight = "finish") -> int:
        """Load new weights between steps (ValueError for bad names or shapes); the version new
        samples are drawn from once this returns (the old one while "finish" drains running samples)."""
        await self._call(lambda: self.engine.update_weights(weights, version, in_flight))
        return self._version

    async def stats(self) -> dict[str, Any]:
        """Queue depth, running samples, throughput and totals, for dashboards and autoscaling."""
        now = time.monotonic()
        self._trim(now)
        window = min(THROUGHPUT_WINDOW_S, now - self._started)
        tokens = sum(n for _, n in self._recent)
        c = self.engine.counters
        return {
            "engine": type(self.engine).__name__,
            "policy_version": self._version,
            "queued": self._load.queued + self._pending_adds,
            "running": self._load.running,
            "capacity": self._load.capacity,
            "max_queued": self.config.max_queued,
            "outstanding_requests": len(self._waiters),
            "requests_added": c.requests_added,
            "requests_finished": c.requests_finished,
            "requests_aborted": c.requests_aborted,
            "requests_refused": self._refused,
            "tokens_generated": c.tokens_generated,
            "prefill_tokens": c.prefill_tokens,
            "tokens_per_s": round(tokens / window, 1) if window > 0 else 0.0,
            "uptime_s": round(now - self._started, 1),
        }

    # -- admission -------------------------------------------------------------------------------------

    async def _submit(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None,
        request_ids: Sequence[Hashable] | None,
        tools: Sequence[str],
        stream: bool,
    ) -> list[_Waiter]:
        per = as_params(params, len(prompts))
        ids = list(request_ids) if request_ids is not None else list(range(len(prompts)))
        if len(ids) != len(prompts):
            raise ValueError(f"{len(ids)} request ids for {len(prompts)} prompts")
        unknown = [t for t in tools if t not in self.tools]
        if unknown:
            raise ValueError(
                f"unknown tool {unknown[0]!r}; this engine actor has {sorted(self.tools) or 'none'}"
            )
        hooks = [self.tools[t] for t in tools]
        limit = self._load.capacity + self.config.max_queued
        if len(self._waiters) + len(prompts) > limit:
            self._refused += len(prompts)
            raise EngineOverloaded(
                f"engine actor full: {len(self._waiters)} requests outstanding, {len(prompts)} more would "
                f"exceed {self._load.capacity} running + {self.config.max_queued} queued; retry later"
            )
        loop = asyncio.get_running_loop()
        waiters = []
        for caller_id in ids:
            w = _Waiter(caller_id, asyncio.Queue() if stream else None, loop.create_future(), next(self._ids))
            w.done.add_done_callback(_consume_exception)
            self._waiters[w.engine_id] = w
            waiters.append(w)
        prompts = [list(p) for p in prompts]
        self._pending_adds += len(prompts)

        def add_all() -> None:
            self._pending_adds -= len(prompts)
            added = []
            try:
                for w, prompt, p in zip(waiters, prompts, per, strict=True):
                    self.engine.add_request(prompt, p, request_id=w.engine_id, tool_hooks=hooks)
                    added.append(w)
            except BaseException:
                for w in added:
                    self.engine.abort(w.engine_id)
                raise

        try:
            await self._call(add_all)
        except BaseException:
            for w in waiters:
                self._waiters.pop(w.engine_id, None)
            raise
        return waiters

    def _abort(self, waiters: Sequence[_Waiter], error: Exception | None = None) -> None:
        """Free the waiters' slots; ``error`` goes to callers still waiting (none: they went away)."""
        gone = [w for w in waiters if self._waiters.pop(w.engine_id, None) is not None]
        for w in gone:
            if w.done.done():
                continue
            if error is None:
                w.done.cancel()
            else:
                w.done.set_exception(error)
                if w.events is not None:
                    w.events.put_nowait(error)
        if gone:
            self._post(lambda: [self.engine.abort(w.engine_id) for w in gone])

    # -- the step loop -------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the engine between steps; its result (or exception) comes back here."""
        future = asyncio.get_running_loop().create_future()
        self._post(fn, future)
        return await future

    def _post(self, fn: Callable[[], Any], future: asyncio.Future | None = None) -> None:
        self._inbox.append((fn, future))
        if self._loop is None or self._loop.done():
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._apply_inbox()
            if not self.engine.has_unfinished():
                self._wake.clear()
                if not self._inbox:
                    await self._wake.wait()
                continue
            try:
                events = await asyncio.to_thread(self.engine.step)
            except Exception as e:  # noqa: BLE001 - the loop must survive; the callers hear of it
                log.exception("engine step failed; failing the requests in flight")
                self._fail_all(RuntimeError(f"engine step failed: {type(e).__name__}: {e}"))
                continue
            self._after_step(events)

    def _apply_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for fn, future in inbox:
            try:
                value = fn()
            except Exception as e:  # noqa: BLE001 - handed to the caller that asked
                if future is not None and not future.done():
                    future.set_exception(e)
                continue
            if future is not None and not future.done():
                future.set_result(value)
        self._snapshot()

    def _snapshot(self) -> None:
        """What stats and admission read, taken while no step runs (the engine is not thread-safe)."""
        self._load: EngineLoad = self.engine.load()
        self._version = self.engine.policy_version

    def _after_step(self, events: list[TokenEvent]) -> None:
        self._snapshot()
        now = time.monotonic()
        sampled = sum(1 for e in events if e.token_id is not None and not e.forced)
        if sampled:
            self._recent.append((now, sampled))
            self._trim(now)
        by_request: dict[Hashable, list[TokenEvent]] = {}
        for e in events:
            by_request.setdefault(e.request_id, []).append(e)
        for engine_id, mine in by_request.items():
            w = self._waiters.get(engine_id)
            if w is not None and w.events is not None:
                w.events.put_nowait([e._replace(request_id=w.caller_id) for e in mine])
        for engine_id in list(self.engine.finished):
            results = self.engine.take_results(engine_id)
            w = self._waiters.pop(engine_id, None)
            if w is None:
                continue  # its caller went away
            if not w.done.done():
                w.done.set_result([dataclasses.replace(r, request_id=w.caller_id) for r in results])
            if w.events is not None:
                w.events.put_nowait(None)

    def _fail_all(self, error: Exception) -> None:
        waiters = list(self._waiters.values())
        self._waiters.clear()
        for w in waiters:
            self.engine.abort(w.engine_id)
            if not w.done.done():
                w.done.set_exception(error)
            if w.events is not None:
                w.events.put_nowait(error)
        self._snapshot()

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - THROUGHPUT_WINDOW_S:
            self._recent.popleft()


def _consume_exception(future: asyncio.Future) -> None:
    """Mark a waiter's exception as seen (a stream's waiter is read through its queue instead)."""
    if not future.cancelled():
        future.exception()


def start_engine_actor(
    config: EngineActorConfig,
    tools: Mapping[str, ToolHook] | None = None,
    *,
    name: str | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_restarts: int = 0,
    **options: Any,
):
    """An engine actor handle (Ray options as keyword arguments, e.g. ``scheduling_strategy`` for a
    placement group). ``max_restarts`` > 0 brings a killed actor back with fresh weights from
    ``config.model_dir``; its callers see their calls fail and requeue them by request id, and push
    the current weights again."""
    import ray

    cls = ray.remote(EngineActor)
    opts: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": max_restarts,
        **options,
    }
    if name is not None:
        opts["name"] = name
    return cls.options(**opts).remote(config, tools)
