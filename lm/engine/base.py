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
from typing import Literal

from torch import Tensor

from lm.engine.sampling import SamplingParams
from lm.engine.tools import ToolHook
from lm.engine.types import EngineCounters, EngineLoad, GenerationResult, TokenEvent, as_params

InFlight = Literal["finish", "recompute"]
Weights = Mapping[str, Tensor] | Iterable[tuple[str, Tensor]]


class Engine(abc.ABC):
    """Generation over token ids; what every stage above the model uses."""

    eos_token_ids: tuple[int, ...]

    def __init__(self) -> None:
        self.finished: dict[Hashable, list[GenerationResult]] = {}
        self.counters = EngineCounters()
        self._ids = itertools.count()

    # -- the request loop ---------------------------------------------------------------------------

    @abc.abstractmethod
    def add_request(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        request_id: Hashable | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> Hashable:
        """Queue a request (``params.n`` samples of one prompt); a ValueError says what is wrong with it."""

    @abc.abstractmethod
    def step(self) -> list[TokenEvent]:
        """One scheduling round: admit, run the model, sample; the token events it produced."""

    @abc.abstractmethod
    def abort(self, request_id: Hashable) -> None:
        """Drop a queued or running request, all its samples, without a result (a client went away)."""

    @abc.abstractmethod
    def has_unfinished(self) -> bool:
        """Whether any request is queued or running."""

    @abc.abstractmethod
    def load(self) -> EngineLoad:
        """Requests waiting for a slot, samples running, and how many samples can run at once."""

    @property
    @abc.abstractmethod
    def policy_version(self) -> int:
        """The version of the weights new samples are drawn from (0 until the first update)."""

    @abc.abstractmethod
    def update_weights(self, weights: Weights, version: int, in_flight: InFlight = "finish") -> None:
        """Load new weights (the model's parameter names, e.g. a learner's ``state_dict()``) tagged
        ``version``; the module docstring says what happens to samples in flight. Bad names or shapes
        raise ValueError before anything changes."""

    def take_results(self, request_id: Hashable) -> list[GenerationResult]:
        """The results of a finished request, one per sample in sample order (removed from the engine)."""
        return self.finished.pop(request_id)

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
            self._drop(ids)
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
            self._drop(ids)  # results were streamed; keep neither them nor what the caller dropped

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
            self._drop(ids)
            raise
        return ids

    @abc.abstractmethod
    def _set_index(self, request_id: Hashable, index: int) -> None:
        """Tell a queued request's samples their prompt's position in its call (tool callbacks read it)."""

    def _drop(self, ids: Iterable[Hashable]) -> None:
        for rid in ids:
            self.finished.pop(rid, None)
            self.abort(rid)
