"""The data every engine speaks: results, streamed token events, and a request in flight.

A prompt asked for with ``SamplingParams.n = k`` becomes k samples: k ``Request`` objects sharing the
request id, told apart by ``sample_index`` (0..k-1), and k ``GenerationResult``s.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from lm.engine.sampling import SamplingParams

if TYPE_CHECKING:
    from lm.engine.tools import ToolCall, ToolHook

FinishReason = str  # "stop" | "length" | "tool_error"


@dataclass
class GenerationResult:
    """One finished sample.

    ``token_ids`` are the output tokens only (sampled and forced, in order; a stop token that ended the
    request is included). ``logprobs`` and ``sampled_logprobs`` (when asked for) are aligned with
    ``token_ids``: the sampled token's log-probability under the model's raw distribution and under the
    distribution it was drawn from (lm/engine/sampling.py says which to use when), and 0.0 for forced
    tokens, which ``forced`` marks. ``finish_reason`` is "stop" (a stop/EOS token), "length"
    (max_tokens or the engine's max_seq_len) or "tool_error" (a tool callback raised or timed out;
    ``error`` says what). ``policy_version`` is the version of the weights that sampled the first
    token (see ``Engine.update_weights``); ``sample_index`` tells the samples of one prompt apart.
    """

    request_id: Hashable
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float] | None
    forced: list[bool]
    finish_reason: FinishReason
    stop_token_id: int | None = None
    error: str | None = None
    sample_index: int = 0
    sampled_logprobs: list[float] | None = None
    policy_version: int = 0


class TokenEvent(NamedTuple):
    """One output token as it is produced (``stream``/``step``).

    ``finish_reason`` is set on a sample's last event. A sample that ends without a new token (a tool
    callback failing after its closing token was already streamed) ends with an event whose
    ``token_id`` is None. ``logprob``/``sampled_logprob`` are None unless the request asked for them,
    and for forced tokens.
    """

    request_id: Hashable
    token_id: int | None
    logprob: float | None
    forced: bool = False
    finish_reason: FinishReason | None = None
    sample_index: int = 0
    sampled_logprob: float | None = None


@dataclass(eq=False)
class Request:
    """One sample in flight, as tool callbacks see it (read it; the engine owns it).

    ``index`` is the prompt's position in its ``generate``/``stream`` call (the id results carry, on
    every engine); ``request_id`` is the engine's own, unique across calls.
    """

    request_id: Hashable
    prompt_ids: list[int]
    params: SamplingParams
    tool_hooks: tuple[ToolHook, ...] = ()
    sample_index: int = 0
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampled_logprobs: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    index: int = -1  # position in its generate/stream call; -1 for a request added by add_request
    policy_version: int | None = None  # weights that sampled the first token
    stop_ids: frozenset[int] = frozenset()
    tool_call: ToolCall | None = None  # a tool reply being waited for (the sample is parked)
    outcome: GenerationResult | None = None  # set when the sample ended
    # TorchEngine's bookkeeping
    pending: list[int] = field(default_factory=list)  # appended, not yet in the KV cache
    cached: int = 0  # tokens of prompt + output already in the KV cache
    deferred: int = 0  # steps this request's extend was left out for lack of prefill budget
    slot: int = -1
    generator: torch.Generator | None = None
    followers: list[Request] = field(default_factory=list)  # samples that copy this one's prefill

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.token_ids)

    def append(self, token: int, logprob: float | None, sampled_logprob: float | None) -> TokenEvent:
        """Record a sampled token; its event (logprobs only when the request asked for them)."""
        self.token_ids.append(token)
        self.logprobs.append(logprob if logprob is not None else 0.0)
        self.sampled_logprobs.append(sampled_logprob if sampled_logprob is not None else 0.0)
        self.forced.append(False)
        want = self.params.logprobs
        return TokenEvent(
            self.request_id,
            token,
            logprob if want else None,
            False,
            None,
            self.sample_index,
            sampled_logprob if want else None,
        )

    def inject(self, tokens: Sequence[int]) -> list[TokenEvent]:
        """Record tokens a tool put in (forced: not sampled, no logprob); their events."""
        events = []
        for t in tokens:
            self.token_ids.append(t)
            self.logprobs.append(0.0)
            self.sampled_logprobs.append(0.0)
            self.forced.append(True)
            events.append(TokenEvent(self.request_id, t, None, True, None, self.sample_index))
        return events

    def result(
        self, reason: FinishReason, stop_token_id: int | None = None, error: str | None = None
    ) -> GenerationResult:
        want = self.params.logprobs
        return GenerationResult(
            request_id=self.request_id,
            prompt_ids=self.prompt_ids,
            token_ids=self.token_ids,
            logprobs=self.logprobs if want else None,
            forced=self.forced,
            finish_reason=reason,
            stop_token_id=stop_token_id,
            error=error,
            sample_index=self.sample_index,
            sampled_logprobs=self.sampled_logprobs if want else None,
            policy_version=self.policy_version if self.policy_version is not None else 0,
        )


class EngineLoad(NamedTuple):
    """How busy an engine is: requests waiting for slots, samples being generated, slots in all."""

    queued: int
    running: int
    capacity: int


@dataclass
class EngineCounters:
    """Running totals an engine keeps, for throughput and queue figures (the engine actor reads them)."""

    requests_added: int = 0
    requests_finished: int = 0
    requests_aborted: int = 0
    tokens_generated: int = 0  # sampled tokens (tool-injected ones not counted)
    prefill_tokens: int = 0  # tokens run through the model as prompts (prompts, tool replies, recomputes)
    steps: int = 0


def as_params(params: SamplingParams | Sequence[SamplingParams] | None, n: int) -> list[SamplingParams]:
    """One SamplingParams per prompt from None (defaults), one for all, or one each."""
    if params is None:
        return [SamplingParams()] * n
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"{len(params)} SamplingParams for {n} prompts")
    return params


def check_prompt(prompt_ids: Sequence[int], vocab_size: int, max_seq_len: int) -> list[int]:
    """The prompt as a list of ints, or a ValueError saying what is wrong with it."""
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("empty prompt: give at least one token (for example <|endoftext|>)")
    if len(prompt) >= max_seq_len:
        raise ValueError(
            f"prompt of {len(prompt)} tokens leaves no room to generate (max_seq_len {max_seq_len})"
        )
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"token id {bad[0]} outside the model's vocabulary [0, {vocab_size})")
    return prompt


def eos_token_ids_of(model_dir: str | Path) -> list[int]:
    """The EOS ids of a model directory (generation_config.json, else config.json); a corrupt file
    raises ``lm.checkpoint.CheckpointError`` naming it (the reading lives there, beside the writing)."""
    from lm.checkpoint import eos_token_ids

    return eos_token_ids(model_dir)
