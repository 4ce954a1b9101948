"""The ``Engine`` interface: what RL, batch generation and serving use, whichever engine runs.

Two levels, both on every engine:
- whole calls: ``generate(prompts, params, tool_hooks)`` returns results, ``stream(...)`` yields token
  events; a call's requests are numbered by prompt index, and a prompt with ``params.n = k`` gives k
  results (prompt-major: all samples of prompt 0, then of prompt 1, ...), told apart by
  ``sample_index``;
- the request loop a server or an actor drives: ``add_request`` (queue), ``step`` (one scheduling
  round, returns the token events it produced), ``abort``, ``take_results`` (the finished samples of a
  request, once all of them finished), ``load`` and ``counters`` (queue depth and totals).
``generate`` and ``stream`` are written once, here, over the request loop.

Weights change in place with ``update_weights(weights, version, in_flight)``; every result carries the
``policy_version`` of the weights that sampled its first token. ``in_flight`` says what happens to
samples already generating when the update arrives:
- "finish" (the default): they finish on the old weights and carry the old version. The engine admits
  no new request until they are done, then loads the new weights; requests queued meanwhile run on the
  new ones. No sample ever mixes two policies, at the cost of a drain.
- "recompute": the new weights load at once; every running sample's KV cache is recomputed under them
  from its prompt and the tokens it has so far, and it continues on the new weights. Tokens sampled
  before the update keep the logprobs of the weights that drew them (so importance ratios stay exact
  per token), and the result keeps the old version (its oldest tokens'), so staleness checks stay
  conservative.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED
from concurrent.futures import wait as wait_futures
from typing import Literal

from torch import Tensor

from lm.engine.sampling import SamplingParams
from lm.engine.tools import ToolError, ToolHook, start_tool_call
from lm.engine.types import (
    EngineCounters,
    EngineLoad,
    FinishReason,
    GenerationResult,
    Request,
    TokenEvent,
    as_params,
    check_prompt,
)

InFlight = Literal["finish", "recompute"]
# while every running sample waits for a tool, a step waits this long for a reply before returning
TOOL_WAIT_S = 0.01
Weights = Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]


class Engine(abc.ABC):
    """Generation over token ids; what every stage above the model uses.

    The request bookkeeping (validation, one ``Request`` per sample, results collected per request,
    ``abort``) and the weight-update protocol are here; an engine adds how samples are queued and run
    (``_queue``, ``step``, ``_drop``) and how weights are loaded (``_swap_weights``).
    """

    eos_token_ids: tuple[int, ...]
    vocab_size: int
    max_seq_len: int

    def __init__(self) -> None:
        self.finished: dict[Hashable, list[GenerationResult]] = {}
        self.counters = EngineCounters()
        self._ids = itertools.count()
        self._open: dict[Hashable, list[Request]] = {}  # samples of the requests not yet finished
        self._version = 0
        self._pending_update: tuple[list[tuple[str, Tensor]], int] | None = None
        self._parked: list[Request] = []  # samples waiting for a tool's reply

    # -- the request loop ---------------------------------------------------------------------------

    def add_request(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        request_id: Hashable | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> Hashable:
        """Queue a request (``params.n`` samples of one prompt); a ValueError says what is wrong with it."""
        params = params or SamplingParams()
        prompt = check_prompt(prompt_ids, self.vocab_size, self.max_seq_len)
        self._check_params(params)
        rid = request_id if request_id is not None else next(self._ids)
        if rid in self.finished or rid in self._open:
            raise ValueError(f"request id {rid!r} is already in use")
        eos = frozenset() if params.ignore_eos else frozenset(self.eos_token_ids)
        stop = frozenset(params.stop_token_ids) | eos
        samples = [
            Request(rid, prompt, params, tuple(tool_hooks), sample_index=j, stop_ids=stop)
            for j in range(params.n)
        ]
        self._open[rid] = samples
        self.counters.requests_added += 1
        self._queue(samples)
        return rid

    @abc.abstractmethod
    def step(self) -> list[TokenEvent]:
        """One scheduling round: admit, run the model, sample; the token events it produced."""

    def abort(self, request_id: Hashable) -> None:
        """Drop a queued or running request, all its samples, without a result (a client went away)."""
        samples = self._open.pop(request_id, None)
        if samples is not None:
            self._parked = [r for r in self._parked if r.request_id != request_id]
            self._drop(request_id, samples)
            self.counters.requests_aborted += 1

    def has_unfinished(self) -> bool:
        """Whether any request is queued or running."""
        return bool(self._open)

    @abc.abstractmethod
    def load(self) -> EngineLoad:
        """Requests waiting for a slot, samples running, and how many samples can run at once."""

    def take_results(self, request_id: Hashable) -> list[GenerationResult]:
        """The results of a finished request, one per sample in sample order (removed from the engine)."""
        return self.finished.pop(request_id)

    @abc.abstractmethod
    def _queue(self, samples: list[Request]) -> None:
        """Take a new request's samples (validated, registered) into the engine's queue."""

    @abc.abstractmethod
    def _drop(self, request_id: Hashable, samples: list[Request]) -> None:
        """Forget an aborted request's samples wherever they are (queue, slots, tool waits)."""

    @abc.abstractmethod
    def _finish(
        self, req: Request, reason: FinishReason, stop_token_id: int | None = None, error: str | None = None
    ) -> TokenEvent:
        """End a sample (``_record`` it, free what it held); the event that ends it without a token."""

    def _out_of_room(self, req: Request) -> bool:
        return len(req.token_ids) >= req.params.max_tokens or req.length >= self.max_seq_len

    def _check_params(self, params: SamplingParams) -> None:  # noqa: B027 - a hook, no-op by default
        """Refuse settings this engine cannot run (ValueError)."""

    def _record(
        self, req: Request, reason: FinishReason, stop_token_id: int | None = None, error: str | None = None
    ) -> None:
        """A sample ended; once all samples of its request have, the request's results are ready."""
        req.outcome = self._result(req, reason, stop_token_id, error)
        samples = self._open.get(req.request_id)
        if samples is not None and all(r.outcome is not None for r in samples):
            self.finished[req.request_id] = [r.outcome for r in samples]  # type: ignore[misc]
            del self._open[req.request_id]
            self.counters.requests_finished += 1

    def _result(
        self, req: Request, reason: FinishReason, stop_token_id: int | None, error: str | None
    ) -> GenerationResult:
        return req.result(reason, stop_token_id, error)

    # -- tool calls ---------------------------------------------------------------------------------

    def _call_tool(self, req: Request, token: int, events: list[TokenEvent]) -> bool:
        """Whether ``token`` (just appended) closed a call of one of ``req``'s hooks; if so the call
        is started and the sample waits, outside the batch, until ``_poll_tools`` sees the reply."""
        req.tool_call = start_tool_call(req, token)
        if req.tool_call is None:
            return False
        self._parked.append(req)
        self._poll_tools(events, [req])  # a reply given at once goes in at once
        return True

    def _poll_tools(self, events: list[TokenEvent], reqs: list[Request] | None = None) -> None:
        """Inject the replies that came (forced tokens) and resume those samples; end failed calls."""
        for req in list(self._parked if reqs is None else reqs):
            assert req.tool_call is not None
            try:
                injected = req.tool_call.poll(self.vocab_size)
            except ToolError as e:
                self._unpark(req)
                events.append(self._finish(req, "tool_error", error=str(e)))
                continue
            if injected is None:
                continue
            self._unpark(req)
            injected = injected[
                : min(req.params.max_tokens - len(req.token_ids), self.max_seq_len - req.length)
            ]
            events += req.inject(injected)
            events += self._resume(req, injected)

    def _unpark(self, req: Request) -> None:
        req.tool_call = None
        self._parked.remove(req)

    def _wait_for_tools(self) -> None:
        """When every running sample waits for a tool, wait a little for a reply rather than spin."""
        futures = [r.tool_call.future for r in self._parked if r.tool_call and r.tool_call.future is not None]
        if futures:
            wait_futures(futures, timeout=TOOL_WAIT_S, return_when=FIRST_COMPLETED)

    @abc.abstractmethod
    def _resume(self, req: Request, injected: list[int]) -> list[TokenEvent]:
        """Continue a sample after a tool's tokens were appended; events if that ends it."""

    # -- weights ------------------------------------------------------------------------------------

    @property
    def policy_version(self) -> int:
        """The version of the weights new samples are drawn from (0 until the first update)."""
        return self._version

    def update_weights(self, weights: Weights, version: int, in_flight: InFlight = "finish") -> None:
        """Load new weights (the model's parameter names, e.g. a learner's ``state_dict()``, or
        ``(name, tensor)`` pairs) tagged ``version``; the module docstring says what happens to samples
        in flight. Bad names or shapes raise ValueError before anything changes. Weights kept for
        later ("finish" while samples run) are copied, so the caller may go on changing its tensors."""
        if in_flight not in ("finish", "recompute"):
            raise ValueError(f"in_flight must be 'finish' or 'recompute', got {in_flight!r}")
        named = check_weights(weights, self._weight_shapes())
        if in_flight == "finish" and self._busy():
            self._pending_update = ([(k, t.detach().clone()) for k, t in named], version)
            return
        self._pending_update = None
        self._swap_weights(named, version, recompute=in_flight == "recompute")
        self._version = version

    def _load_pending(self) -> None:
        """Load weights kept back by "finish" once nothing runs on the old ones any more."""
        if self._pending_update is not None and not self._busy():
            named, version = self._pending_update
            self._pending_update = None
            self._swap_weights(named, version, recompute=False)
            self._version = version

    @abc.abstractmethod
    def _weight_shapes(self) -> Mapping[str, tuple[int, ...]]:
        """The parameter names ``update_weights`` accepts, with their shapes."""

    @abc.abstractmethod
    def _busy(self) -> bool:
        """Whether any sample is generating (on the current weights)."""

    @abc.abstractmethod
    def _swap_weights(self, named: list[tuple[str, Tensor]], version: int, recompute: bool) -> None:
        """Load checked weights now; with ``recompute``, running samples continue on them."""

    # -- whole calls, over the request loop -----------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> list[GenerationResult]:
        """Every sample of every prompt, prompt-major (request ids are the prompts' indices)."""
        ids = self._add_all(prompts, params, tool_hooks)
        try:
            while any(rid not in self.finished for rid in ids):
                self.step()
        except BaseException:
            self._forget(ids)
            raise
        results: list[GenerationResult] = []
        for i, rid in enumerate(ids):
            results += [dataclasses.replace(r, request_id=i) for r in self.take_results(rid)]
        return results

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> Iterator[TokenEvent]:
        """Tokens of every sample as they are produced (request ids are the prompts' indices). Closing
        the iterator early aborts what is left."""
        ids = self._add_all(prompts, params, tool_hooks)
        index = {rid: i for i, rid in enumerate(ids)}
        try:
            while any(rid not in self.finished for rid in ids):
                for event in self.step():
                    if event.request_id in index:
                        yield event._replace(request_id=index[event.request_id])
        finally:
            self._forget(ids)  # results were streamed; keep neither them nor what the caller dropped

    def _add_all(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None,
        tool_hooks: Sequence[ToolHook],
    ) -> list[Hashable]:
        per_prompt = as_params(params, len(prompts))
        base = next(self._ids)
        # ids unique within this engine, ordered like the prompts; seeds derive from them when unset
        ids: list[Hashable] = [(base, i) for i in range(len(prompts))]
        try:
            for i, (rid, prompt, p) in enumerate(zip(ids, prompts, per_prompt, strict=True)):
                self.add_request(prompt, p, request_id=rid, tool_hooks=tool_hooks)
                self._set_index(rid, i)
        except BaseException:
            self._forget(ids)
            raise
        return ids

    def _set_index(self, request_id: Hashable, index: int) -> None:
        """Tell a queued request's samples their prompt's position in its call (tool callbacks read it)."""
        for req in self._open[request_id]:
            req.index = index

    def _forget(self, ids: Iterable[Hashable]) -> None:
        for rid in ids:
            self.finished.pop(rid, None)
            self.abort(rid)


def check_weights(weights: Weights, shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[str, Tensor]]:
    """The (name, tensor) pairs of ``weights``, or a ValueError naming the first unknown or misshapen one."""
    named = list(weights.items() if isinstance(weights, Mapping) else weights)
    for name, tensor in named:
        if name not in shapes:
            raise ValueError(
                f"weight name {name!r} is not one of the model's (expected names such as "
                f"{next(iter(shapes), 'model.embed_tokens.weight')!r})"
            )
        if tuple(tensor.shape) != tuple(shapes[name]):
            raise ValueError(
                f"weight {name!r} has shape {tuple(tensor.shape)}, the model's is {tuple(shapes[name])}"
            )
    return named
