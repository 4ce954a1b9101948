"""What every engine shares: the ``Engine`` interface over token ids and the types it speaks.

``TorchEngine`` (lm/engine.py) and ``VLLMEngine`` (lm/vllm_engine.py) implement ``Engine``; everything
above them (RL, distillation, "I don't know" probing, serving) uses only the names defined here and
``lm.sampling.SamplingParams``, so either engine can be swapped in.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import torch

from lm.sampling import SamplingParams

FinishReason = str  # "stop" | "length" | "tool_error"


@dataclass
class GenerationResult:
    """One finished request.

    ``token_ids`` are the output tokens only (sampled and forced, in order; a stop token that ended the
    request is included). ``logprobs`` (when asked for) are aligned with ``token_ids``: the sampled
    token's log-probability under the model's raw distribution (lm/sampling.py), and 0.0 for forced
    tokens, which ``forced`` marks. ``finish_reason`` is "stop" (a stop/EOS token), "length"
    (max_tokens or the engine's max_seq_len) or "tool_error" (a tool callback raised; ``error`` says
    what).
    """

    request_id: Hashable
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float] | None
    forced: list[bool]
    finish_reason: FinishReason
    stop_token_id: int | None = None
    error: str | None = None


class TokenEvent(NamedTuple):
    """One output token as it is produced (``stream``/``step``).

    ``finish_reason`` is set on a request's last event. A request that ends without a new token (a tool
    callback failing after its closing token was already streamed) ends with an event whose
    ``token_id`` is None.
    """

    request_id: Hashable
    token_id: int | None
    logprob: float | None
    forced: bool = False
    finish_reason: FinishReason | None = None


@dataclass
class Request:
    """A request in flight, as tool callbacks see it (read it; the engine owns it).

    ``index`` is the prompt's position in its ``generate``/``stream`` call (the id results carry, on
    every engine); ``request_id`` is the engine's own, unique across calls.
    """

    request_id: Hashable
    prompt_ids: list[int]
    params: SamplingParams
    tool_hooks: tuple[ToolHook, ...] = ()
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    index: int = -1  # position in its generate/stream call; -1 for a request added by add_request
    # engine bookkeeping
    pending: list[int] = field(default_factory=list)  # appended, not yet in the KV cache
    cached: int = 0  # tokens of prompt + output already in the KV cache
    deferred: int = 0  # steps this request's extend was left out for lack of prefill budget
    slot: int = -1
    generator: torch.Generator | None = None
    stop_ids: frozenset[int] = frozenset()

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.token_ids)


@dataclass(frozen=True)
class ToolHook:
    """Intercept a tool call: ``<open> ... <close>`` in the output triggers ``callback``.

    ``callback(request, ids_between)`` gets the tokens strictly between the latest ``open_token_id`` and
    the ``close_token_id`` just sampled, and returns the tokens to append (for example
    ``<|result_start|> ... <|result_end|>``); they are not sampled and are marked forced. A closing token
    with no opening token before it (since the previous closing token) is an ordinary token. If the
    callback raises, the request ends with finish_reason "tool_error".
    """

    open_token_id: int
    close_token_id: int
    callback: Callable[[Request, list[int]], Sequence[int]]


class _Tokenizes(Protocol):
    def token_id(self, special: str) -> int: ...
    def encode(self, text: str, allow_special: bool = False) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


def text_tool(
    tokenizer: _Tokenizes,
    open_token: str,
    close_token: str,
    answer: Callable[[str], str],
    result_tokens: tuple[str, str] | None = ("<|result_start|>", "<|result_end|>"),
) -> ToolHook:
    """A ``ToolHook`` that speaks text: ``answer`` gets the decoded text between the special tokens
    ``open_token`` and ``close_token`` and returns the tool's reply as text, which is encoded and, when
    ``result_tokens`` names a pair, wrapped in them (``<|result_start|> ... <|result_end|>``).

        search = text_tool(tok, "<|search_start|>", "<|search_end|>", lambda q: index.lookup(q))
        engine.generate(prompts, params, tool_hooks=[search])

    Special tokens inside the reply are encoded as plain text, so a tool can never forge them.
    """
    wrap = (
        ([tokenizer.token_id(result_tokens[0])], [tokenizer.token_id(result_tokens[1])])
        if result_tokens
        else ([], [])
    )

    def callback(request: Request, between: list[int]) -> list[int]:
        return wrap[0] + tokenizer.encode(answer(tokenizer.decode(between))) + wrap[1]

    return ToolHook(tokenizer.token_id(open_token), tokenizer.token_id(close_token), callback)


def _as_params(params: SamplingParams | Sequence[SamplingParams] | None, n: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * n
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"{len(params)} SamplingParams for {n} prompts")
    return params


class Engine(abc.ABC):
    """Generation over token ids; what every stage above the model uses."""

    eos_token_ids: tuple[int, ...]

    @abc.abstractmethod
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> list[GenerationResult]:
        """One result per prompt, in order (request ids are the prompts' indices)."""

    @abc.abstractmethod
    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> Iterator[TokenEvent]:
        """Tokens of all prompts as they are produced (request ids are the prompts' indices)."""


def eos_token_ids_of(model_dir: str | Path) -> list[int]:
    """The EOS ids of a model directory (generation_config.json, else config.json); a corrupt file
    raises ``lm.checkpoint.CheckpointError`` naming it (the reading lives there, beside the writing)."""
    from lm.checkpoint import eos_token_ids

    return eos_token_ids(model_dir)
