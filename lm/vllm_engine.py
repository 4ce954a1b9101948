"""``VLLMEngine``: the ``Engine`` interface on vLLM, for GPU machines; ``make_engine`` picks one.

    engine = make_engine("runs/big/models/sft")            # vLLM if importable and a GPU is present
    engine = make_engine("runs/tiny/models/base", prefer="torch")

vLLM is fed token ids only (``skip_tokenizer_init=True``, ``TokensPrompt``, ``detokenize=False``), so
tiktoken stays the one tokenizer. Our exports are plain ``LlamaForCausalLM`` directories, which vLLM
loads as they are. Mapping onto vLLM's offline ``LLM.generate``:
- EOS: without a tokenizer vLLM knows no EOS, so the engine's EOS ids are passed as stop tokens;
- logprobs: ``logprobs=0`` returns the sampled token's logprob, with ``logprobs_mode="raw_logprobs"``
  (the model's raw distribution, the same definition as TorchEngine's, lm/sampling.py);
- tool hooks: closing tokens are extra stop tokens; a request that stops on one is given the
  callback's tokens (marked forced) and resubmitted with prompt + output so far, its remaining token
  budget and a seed derived from its own, until it finishes;
- streaming: vLLM's offline API returns whole outputs, so ``stream`` yields each round's tokens when
  the round ends (not token by token); the token sequence is the same.

Honest limits: this module is not exercised by the test suite (no GPU and no vLLM on the CPU test
machines); only the parameter mapping and ``make_engine``'s choice are tested. Seeded samples match
TorchEngine's distributionally, not token for token (different random streams).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lm.engine import TorchEngine
from lm.generation import Engine, GenerationResult, TokenEvent, ToolHook, _as_params, eos_token_ids_of
from lm.sampling import SamplingParams

log = logging.getLogger(__name__)


class VLLMUnavailable(RuntimeError):
    """vLLM (or a GPU for it) is missing; the message says how to get it or what to use instead."""


def vllm_available() -> bool:
    """True when vLLM is importable and torch sees a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def vllm_sampling_kwargs(
    params: SamplingParams,
    eos_token_ids: Sequence[int],
    tool_close_ids: Sequence[int],
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` equivalent to ours (seed and budget per round)."""
    stops = set(params.stop_token_ids) | set(tool_close_ids)
    if not params.ignore_eos:
        stops |= set(eos_token_ids)
    return {
        "n": 1,
        "temperature": params.temperature,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "top_p": params.top_p,
        "max_tokens": max_tokens if max_tokens is not None else params.max_tokens,
        "stop_token_ids": sorted(stops),
        "ignore_eos": True,  # vLLM's own EOS is unknown without a tokenizer; ours are in stop_token_ids
        "seed": params.seed,
        "logprobs": 0 if params.logprobs else None,
        "detokenize": False,
    }


class VLLMEngine(Engine):
    """The Engine interface over ``vllm.LLM`` (token ids in and out)."""

    def __init__(
        self,
        model_dir: str | Path,
        eos_token_ids: Sequence[int] | None = None,
        max_seq_len: int | None = None,
        max_batch_size: int | None = None,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        """``max_batch_size`` is vLLM's ``max_num_seqs``; ``llm_kwargs`` go to ``vllm.LLM`` (e.g.
        ``gpu_memory_utilization``, ``tensor_parallel_size``, ``dtype``)."""
        from lm.checkpoint import check_model_files

        check_model_files(model_dir)  # a corrupt file fails here, by name, not deep inside vLLM
        if importlib.util.find_spec("vllm") is None:
            raise VLLMUnavailable(
                "vLLM is not installed: `pip install -e '.[gpu]'` on a CUDA machine, or use TorchEngine "
                "(make_engine(..., prefer='torch'))"
            )
        import torch

        if not torch.cuda.is_available():
            raise VLLMUnavailable("vLLM needs a CUDA GPU and none is visible; use TorchEngine on CPU")
        from vllm import LLM

        self.model_dir = str(model_dir)
        self.eos_token_ids = tuple(
            eos_token_ids if eos_token_ids is not None else eos_token_ids_of(model_dir)
        )
        self._seed = seed
        kwargs: dict[str, Any] = {"skip_tokenizer_init": True, "seed": seed, "logprobs_mode": "raw_logprobs"}
        if max_seq_len is not None:  # as TorchEngine: never past what the model was built for
            kwargs["max_model_len"] = min(max_seq_len, _model_max_len(model_dir) or max_seq_len)
        if max_batch_size is not None:
            kwargs["max_num_seqs"] = max_batch_size
        kwargs.update(llm_kwargs)
        self.llm = LLM(model=self.model_dir, **kwargs)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> list[GenerationResult]:
        results: dict[Hashable, GenerationResult] = {}
        for event_batch in self._rounds(prompts, params, tool_hooks, results):
            del event_batch
        return [results[i] for i in range(len(prompts))]

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> Iterator[TokenEvent]:
        for event_batch in self._rounds(prompts, params, tool_hooks, {}):
            yield from event_batch

    def _rounds(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None,
        tool_hooks: Sequence[ToolHook],
        results: dict[Hashable, GenerationResult],
    ) -> Iterator[list[TokenEvent]]:
        """Run rounds of ``LLM.generate`` until every request finished; yield each round's events."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        per_prompt = _as_params(params, len(prompts))
        closes = {h.close_token_id: h for h in tool_hooks}
        state = {
            i: {"prompt": [int(t) for t in p], "out": [], "lp": [], "forced": [], "round": 0}
            for i, p in enumerate(prompts)
        }
        live = list(state)
        while live:
            batch_prompts, batch_params = [], []
            for i in live:
                s, p = state[i], per_prompt[i]
                seed = None if p.seed is None else p.seed + 1_000_003 * s["round"]
                kw = vllm_sampling_kwargs(p, self.eos_token_ids, list(closes), p.max_tokens - len(s["out"]))
                kw["seed"] = seed
                batch_prompts.append(TokensPrompt(prompt_token_ids=s["prompt"] + s["out"]))
                batch_params.append(VLLMSamplingParams(**kw))
            outputs = self.llm.generate(batch_prompts, batch_params, use_tqdm=False)
            events: list[TokenEvent] = []
            still: list[int] = []
            for i, output in zip(live, outputs, strict=True):
                s, p = state[i], per_prompt[i]
                done = output.outputs[0]
                tokens = list(done.token_ids)
                lps = [
                    _sampled_logprob(entry, t) for entry, t in zip(done.logprobs or [], tokens, strict=False)
                ]
                lps += [0.0] * (len(tokens) - len(lps))
                stop_reason = done.stop_reason if isinstance(done.stop_reason, int) else None
                if done.finish_reason == "stop" and stop_reason is not None and tokens[-1:] != [stop_reason]:
                    tokens.append(stop_reason)  # keep the stop token in the output, as TorchEngine does
                    lps.append(0.0)
                s["out"] += tokens
                s["lp"] += lps
                s["forced"] += [False] * len(tokens)
                events.extend(
                    TokenEvent(i, t, lp if p.logprobs else None) for t, lp in zip(tokens, lps, strict=True)
                )
                reason, error = self._after_round(i, s, p, done.finish_reason, stop_reason, closes, events)
                if reason is None:
                    s["round"] += 1
                    still.append(i)
                    continue
                if events and events[-1].request_id == i and events[-1].token_id is not None:
                    events[-1] = events[-1]._replace(finish_reason=reason)
                else:
                    events.append(TokenEvent(i, None, None, False, reason))
                results[i] = GenerationResult(
                    request_id=i,
                    prompt_ids=s["prompt"],
                    token_ids=s["out"],
                    logprobs=s["lp"] if p.logprobs else None,
                    forced=s["forced"],
                    finish_reason=reason,
                    stop_token_id=stop_reason if reason == "stop" else None,
                    error=error,
                )
            live = still
            yield events

    def _after_round(
        self,
        i: int,
        s: dict[str, Any],
        p: SamplingParams,
        finish_reason: str | None,
        stop_reason: int | None,
        closes: dict[int, ToolHook],
        events: list[TokenEvent],
    ) -> tuple[str | None, str | None]:
        """(finish reason, error) of a request after a round; (None, None) to resubmit it."""
        real_stops = set(p.stop_token_ids) | (set() if p.ignore_eos else set(self.eos_token_ids))
        if finish_reason == "stop" and stop_reason in closes and stop_reason not in real_stops:
            hook = closes[stop_reason]
            seq = s["prompt"] + s["out"]
            ends = (hook.open_token_id, hook.close_token_id)
            open_at = next((j for j in range(len(seq) - 2, -1, -1) if seq[j] in ends), None)
            if open_at is not None and seq[open_at] == hook.open_token_id:
                try:
                    injected = [int(t) for t in hook.callback(_RequestView(i, s, p), seq[open_at + 1 : -1])]
                except Exception as e:  # a tool failure ends this request only
                    log.warning("tool callback failed for request %r: %s", i, e)
                    return "tool_error", f"{type(e).__name__}: {e}"
                injected = injected[: p.max_tokens - len(s["out"])]
                s["out"] += injected
                s["lp"] += [0.0] * len(injected)
                s["forced"] += [True] * len(injected)
                events.extend(TokenEvent(i, t, None, True) for t in injected)
            if len(s["out"]) >= p.max_tokens:
                return "length", None
            return None, None  # resubmit; a stray closing token just continues
        if finish_reason == "stop":
            return "stop", None
        return "length", None


class _RequestView:
    """What a tool callback reads of a request (the same attribute names as lm.engine.Request)."""

    def __init__(self, request_id: int, state: dict[str, Any], params: SamplingParams) -> None:
        self.request_id = request_id
        self.index = request_id  # VLLMEngine numbers a call's requests by prompt index already
        self.prompt_ids = state["prompt"]
        self.token_ids = state["out"]
        self.params = params


def _sampled_logprob(entry: Any, token: int) -> float:
    """vLLM returns per position a dict token id -> Logprob (the sampled token is always in it)."""
    if entry is None or token not in entry:
        return 0.0
    value = entry[token]
    return float(getattr(value, "logprob", value))


def _model_max_len(model_dir: str | Path) -> int | None:
    """The model's context length from its config.json (vLLM refuses a longer max_model_len)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("max_position_embeddings")
    return int(value) if value else None


def make_engine(
    model_dir: str | Path, prefer: str = "auto", device: Any = None, **kwargs: Any
) -> TorchEngine | VLLMEngine:
    """An engine over a model directory: ``prefer`` is "auto" (vLLM when available, else ours), "torch"
    or "vllm" (an error if unavailable). ``device`` is a string or ``torch.device``; vLLM takes only
    the default GPU (it picks devices through CUDA_VISIBLE_DEVICES), so "auto" with another device
    uses ours. ``kwargs`` go to the chosen engine's constructor."""
    if prefer not in ("auto", "torch", "vllm"):
        raise ValueError(f"prefer must be 'auto', 'torch' or 'vllm', got {prefer!r}")
    vllm_device = device is None or str(device) in ("cuda", "cuda:0")
    if prefer == "vllm" or (prefer == "auto" and vllm_device and vllm_available()):
        if not vllm_device:
            raise VLLMUnavailable(
                f"vLLM runs on the default CUDA device only, not {str(device)!r} (choose GPUs with "
                "CUDA_VISIBLE_DEVICES); use prefer='torch' for another device"
            )
        return VLLMEngine(model_dir, **kwargs)
    import torch

    dev = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.startswith("cuda") else None
    return TorchEngine.from_pretrained(model_dir, device=dev, dtype=dtype, **kwargs)
