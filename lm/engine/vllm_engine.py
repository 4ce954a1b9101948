"""``VLLMEngine``: the ``Engine`` interface on vLLM's request loop, for GPU machines.

vLLM is fed token ids only (``skip_tokenizer_init=True``, ``TokensPrompt``, ``detokenize=False``), so
tiktoken stays the one tokenizer. Our exports are plain ``LlamaForCausalLM`` directories, which vLLM
loads as they are. The engine drives ``LLM.llm_engine`` (vLLM's ``LLMEngine``) request by request:
``add_request`` with ``RequestOutputKind.DELTA``, ``step`` returning each step's new tokens, and
``abort_request``, so streaming is token by token and the engine actor (actors/engine_actor.py) drives
this engine exactly as it drives ``TorchEngine``. How our interface maps onto vLLM 0.29:
- EOS: without a tokenizer vLLM knows no EOS, so the engine's EOS ids are passed as stop tokens;
- ``n``: vLLM's own ``n`` (child requests sharing the prompt's KV blocks through prefix caching;
  child j is seeded ``seed + j``, as TorchEngine seeds its samples); vLLM refuses ``n > 1`` with
  greedy sampling, so greedy samples go as one request each (identical, as on TorchEngine);
- logprobs: ``logprobs=0`` returns the sampled token's logprob. vLLM computes one kind per engine
  (``logprobs_mode``), so ``logprobs="sampled"`` (the default, ``processed_logprobs``: temperature,
  top-k and top-p applied, what RL needs) fills ``sampled_logprobs`` and leaves ``logprobs`` None, and
  ``logprobs="raw"`` (``raw_logprobs``) the other way round;
- tool hooks: closing tokens are extra stop tokens; a sample that stops on one waits for the
  callback's tokens (marked forced) and is resubmitted with prompt + output so far, its remaining
  token budget and a seed derived from its own, until it finishes;
- ``update_weights``: ``collective_rpc("reload_weights", weights_iterator=...)`` on every worker
  (vLLM's in-place reload through the model's ``load_weights``, checkpoint names), then
  ``reset_prefix_cache()`` so no KV block computed with the old weights is reused, and
  ``update_weight_version``. "finish" holds new requests back until vLLM has none running;
  "recompute" aborts the running ones and resubmits them with their tokens so far. The weights travel
  through vLLM's RPC to its workers: right for models that fit a host's memory; for large models on
  many GPUs, vLLM's NCCL weight-transfer engine (``LLM.init_weight_transfer_engine``) is the path.

Honest limits: vLLM is GPU-only and not installed on the CPU test machines, so this module runs only
in tests/test_vllm_gpu.py on a GPU (the README gives the command); on CPU the suite tests the
parameter mapping, the choice in ``make_engine`` and the weight-name checks. Seeded samples match
TorchEngine's distributionally, not token for token (different random streams).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from lm.engine.base import Engine
from lm.engine.sampling import SamplingParams
from lm.engine.types import (
    EngineLoad,
    FinishReason,
    GenerationResult,
    Request,
    TokenEvent,
    eos_token_ids_of,
)

log = logging.getLogger(__name__)
LogprobsKind = Literal["sampled", "raw"]
ROUND_SEED_STRIDE = 1_000_003  # a resubmitted sample's seed moves by this much per round


class VLLMUnavailable(RuntimeError):
    """vLLM (or a GPU for it) is missing; the message says how to get it or what to use instead."""


def vllm_available() -> bool:
    """True when vLLM is importable and torch sees a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def check_vllm() -> None:
    """Raise VLLMUnavailable, saying what to do, unless vLLM and a GPU are there."""
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailable(
            "vLLM is not installed: `pip install -e '.[gpu]'` on a CUDA machine, or use TorchEngine "
            "(make_engine(..., prefer='torch'))"
        )
    import torch

    if not torch.cuda.is_available():
        raise VLLMUnavailable("vLLM needs a CUDA GPU and none is visible; use TorchEngine on CPU")


def vllm_sampling_kwargs(
    params: SamplingParams,
    eos_token_ids: Sequence[int],
    tool_close_ids: Sequence[int],
    max_tokens: int | None = None,
    n: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` equivalent to ours (``max_tokens``, ``n`` and
    ``seed`` override the request's for a resubmitted round)."""
    stops = set(params.stop_token_ids) | set(tool_close_ids)
    if not params.ignore_eos:
        stops |= set(eos_token_ids)
    return {
        "n": n if n is not None else params.n,
        "temperature": params.temperature,
        "top_k": params.top_k,  # 0 = off on both
        "top_p": params.top_p,
        "max_tokens": max_tokens if max_tokens is not None else params.max_tokens,
        "stop_token_ids": sorted(stops),
        "ignore_eos": True,  # vLLM's own EOS is unknown without a tokenizer; ours are in stop_token_ids
        "seed": seed if seed is not None else params.seed,
        "logprobs": 0 if params.logprobs else None,
        "detokenize": False,
    }


def checkpoint_weight_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a model directory's safetensors files (what ``load_weights``
    accepts), with ``lm_head.weight`` added for tied embeddings, which the export stores once."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                shapes[name] = tuple(f.get_slice(name).get_shape())
    if "lm_head.weight" not in shapes and "model.embed_tokens.weight" in shapes:
        shapes["lm_head.weight"] = shapes["model.embed_tokens.weight"]
    return shapes


class VLLMEngine(Engine):
    """The Engine interface over ``vllm.LLM``'s engine (token ids in and out)."""

    def __init__(
        self,
        model_dir: str | Path,
        eos_token_ids: Sequence[int] | None = None,
        max_seq_len: int | None = None,
        max_batch_size: int | None = None,
        seed: int = 0,
        logprobs: LogprobsKind = "sampled",
        **llm_kwargs: Any,
    ) -> None:
        """``max_batch_size`` is vLLM's ``max_num_seqs``; ``logprobs`` picks which kind vLLM reports
        (module docstring); ``llm_kwargs`` go to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``,
        ``tensor_parallel_size``, ``dtype``)."""
        if logprobs not in ("sampled", "raw"):
            raise ValueError(f"logprobs must be 'sampled' or 'raw', got {logprobs!r}")
        from lm.checkpoint import check_model_files

        check_model_files(model_dir)  # a corrupt file fails here, by name, not deep inside vLLM
        check_vllm()
        from vllm import LLM

        super().__init__()
        self.model_dir = str(model_dir)
        self.eos_token_ids = tuple(
            eos_token_ids if eos_token_ids is not None else eos_token_ids_of(model_dir)
        )
        config = json.loads((Path(model_dir) / "config.json").read_text())
        model_len = int(config.get("max_position_embeddings") or max_seq_len or 2048)
        self.max_seq_len = min(max_seq_len or model_len, model_len)
        self.vocab_size = int(config["vocab_size"])
        self.logprobs_kind = logprobs
        self._shapes = checkpoint_weight_shapes(model_dir)
        kwargs: dict[str, Any] = {
            "skip_tokenizer_init": True,
            "seed": seed,
            "logprobs_mode": "processed_logprobs" if logprobs == "sampled" else "raw_logprobs",
            "max_model_len": self.max_seq_len,
        }
        if max_batch_size is not None:
            kwargs["max_num_seqs"] = max_batch_size
        kwargs.update(llm_kwargs)
        self.llm = LLM(model=self.model_dir, **kwargs)
        self._core = self.llm.llm_engine
        sched = getattr(getattr(self._core, "vllm_config", None), "scheduler_config", None)
        self.max_batch_size = int(getattr(sched, "max_num_seqs", max_batch_size or 256))
        self._keys = itertools.count()
        self._live: dict[str, tuple[Hashable, int | None]] = {}  # vLLM id -> (request, its sample or all)
        self._vid: dict[Request, str] = {}  # the vLLM request producing a sample's tokens now
        self._round: dict[Request, int] = {}  # how often a sample was resubmitted
        self._held: deque[list[Request]] = deque()  # new requests held back while an update drains

    # -- the request API ----------------------------------------------------------------------------

    def _queue(self, samples: list[Request]) -> None:
        if self._pending_update is not None:
            self._held.append(samples)
        else:
            self._submit(samples)

    def load(self) -> EngineLoad:
        running = sum(len(samples) for samples in self._open.values()) - sum(len(g) for g in self._held)
        return EngineLoad(queued=len(self._held), running=running, capacity=self.max_batch_size)

    def _drop(self, request_id: Hashable, samples: list[Request]) -> None:
        live = [vid for vid, (rid, _) in self._live.items() if rid == request_id]
        if live:
            self._core.abort_request(live)
        for vid in live:
            del self._live[vid]
        self._held = deque(g for g in self._held if g is not samples)
        for r in samples:
            self._vid.pop(r, None)
            self._round.pop(r, None)

    def _result(
        self, req: Request, reason: FinishReason, stop_token_id: int | None, error: str | None
    ) -> GenerationResult:
        result = req.result(reason, stop_token_id, error)
        if not req.params.logprobs:
            return result
        missing = "logprobs" if self.logprobs_kind == "sampled" else "sampled_logprobs"
        return replace(result, **{missing: None})  # vLLM reports one kind (module docstring)

    # -- weights ------------------------------------------------------------------------------------

    def _weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return self._shapes

    def _busy(self) -> bool:
        return bool(self._live or self._parked)

    def _swap_weights(self, named: list[tuple[str, Tensor]], version: int, recompute: bool) -> None:
        running = list(self._vid)  # only with recompute: "finish" swaps when nothing runs
        if running:
            self._core.abort_request(sorted(set(self._vid.values())))
            self._live.clear()
            self._vid.clear()
        # host tensors: vLLM's RPC serialises them to its worker processes, which copy them to the GPU
        host = [(k, t.detach().to("cpu")) for k, t in named]
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": host, "is_checkpoint_format": True}
        )
        self.llm.reset_prefix_cache()  # no KV block computed with the old weights may be reused
        self.llm.update_weight_version(str(version))
        while self._held:
            self._submit(self._held.popleft())
        for req in running:  # recomputed under the new weights from their tokens so far
            self._continue(req)

    # -- the step -------------------------------------------------------------------------------------

    def step(self) -> list[TokenEvent]:
        events: list[TokenEvent] = []
        if self._parked:
            self._poll_tools(events)
        self._load_pending()
        if not self._core.has_unfinished_requests():
            self._wait_for_tools()
            return events
        self.counters.steps += 1
        for output in self._core.step():
            self._on_output(output, events)
        self._load_pending()  # as soon as the last old-weights sample is done
        return events

    def _submit(self, samples: list[Request], prompt: list[int] | None = None) -> None:
        """Send samples to vLLM: a new request's samples as one request with n (shared prompt), or one
        sample's continuation (``prompt`` = its prompt and tokens so far)."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        first = samples[0]
        p = first.params
        if prompt is None and len(samples) > 1 and p.greedy:
            for req in samples:  # vLLM refuses n > 1 with greedy sampling: one request per sample
                self._round[req] = 0
                self._submit([req], prompt=req.prompt_ids)
            return
        closes = [h.close_token_id for h in first.tool_hooks]
        if prompt is None:
            kw = vllm_sampling_kwargs(p, self.eos_token_ids, closes, n=len(samples))
            vid, which = f"{next(self._keys)}", None
        else:
            j, rounds = first.sample_index, self._round.get(first, 0)
            seed = None if p.seed is None else p.seed + j + ROUND_SEED_STRIDE * rounds
            left = p.max_tokens - len(first.token_ids)
            kw = vllm_sampling_kwargs(p, self.eos_token_ids, closes, max_tokens=left, n=1, seed=seed)
            vid, which = f"{next(self._keys)}.{j}.{rounds}", j
        sp = VLLMSamplingParams(**kw)
        sp.output_kind = RequestOutputKind.DELTA
        self._core.add_request(vid, TokensPrompt(prompt_token_ids=prompt or first.prompt_ids), sp)
        self._live[vid] = (first.request_id, which)
        for req in samples:
            self._vid[req] = vid

    def _resume(self, req: Request, injected: list[int]) -> list[TokenEvent]:
        return self._continue(req)

    def _continue(self, req: Request) -> list[TokenEvent]:
        """Resubmit a sample after a tool reply or a weight update, or end it if no room is left."""
        if self._out_of_room(req):
            return [self._finish(req, "length")]
        self._round[req] = self._round.get(req, 0) + 1
        self._submit([req], prompt=req.prompt_ids + req.token_ids)
        return []

    def _on_output(self, output: Any, events: list[TokenEvent]) -> None:
        """One vLLM RequestOutput (DELTA: the tokens new since the last one) into our samples."""
        owner = self._live.get(output.request_id)
        if owner is None:
            return  # aborted meanwhile
        rid, which = owner
        samples = self._open[rid]
        for done in output.outputs:
            req = samples[which if which is not None else done.index]
            tokens = list(done.token_ids)
            values = [
                _sampled_logprob(entry, t) for entry, t in zip(done.logprobs or [], tokens, strict=False)
            ]
            values += [None] * (len(tokens) - len(values))
            stop_reason = done.stop_reason if isinstance(done.stop_reason, int) else None
            finished = done.finish_reason is not None
            if finished and done.finish_reason == "stop" and stop_reason is not None:
                if (req.token_ids + tokens)[-1:] != [stop_reason]:
                    tokens.append(stop_reason)  # keep the stop token in the output, as TorchEngine does
                    values.append(None)
            if tokens and req.policy_version is None:
                req.policy_version = self._version
            self.counters.tokens_generated += len(tokens)
            new = [self._event(req.append(t, *self._kinds(v))) for t, v in zip(tokens, values, strict=True)]
            tail = []
            if finished:
                self._vid.pop(req, None)
                tail = self._after_round(req, done.finish_reason, stop_reason, new)  # may mark new[-1]
            events += new + tail
        if output.finished:
            self._live.pop(output.request_id, None)

    def _kinds(self, value: float | None) -> tuple[float | None, float | None]:
        return (None, value) if self.logprobs_kind == "sampled" else (value, None)

    def _event(self, event: TokenEvent) -> TokenEvent:
        if self.logprobs_kind == "sampled":
            return event._replace(logprob=None)
        return event._replace(sampled_logprob=None)

    def _after_round(
        self, req: Request, finish_reason: str, stop_reason: int | None, new: list[TokenEvent]
    ) -> list[TokenEvent]:
        """End a sample, call its tool, or resubmit it, after vLLM finished its current round."""
        if finish_reason == "abort":
            return []
        if finish_reason == "stop" and stop_reason is not None and stop_reason not in req.stop_ids:
            events: list[TokenEvent] = []  # a closing token, not a real stop
            if self._call_tool(req, stop_reason, events):
                return events
            return self._continue(req)  # a stray closing token: generation just continues
        reason = "stop" if finish_reason == "stop" else "length"
        final = self._finish(req, reason, stop_token_id=stop_reason if reason == "stop" else None)
        if new and new[-1].token_id is not None:  # the finish reason rides on the last token's event
            new[-1] = new[-1]._replace(finish_reason=reason)
            return []
        return [final]

    def _finish(
        self, req: Request, reason: FinishReason, stop_token_id: int | None = None, error: str | None = None
    ) -> TokenEvent:
        """Record a finished sample; the event that ends it (no token)."""
        self._round.pop(req, None)
        self._record(req, reason, stop_token_id, error)
        return TokenEvent(req.request_id, None, None, False, reason, req.sample_index)


def _sampled_logprob(entry: Any, token: int) -> float | None:
    """vLLM returns per position a dict token id -> Logprob (the sampled token is always in it)."""
    if entry is None or token not in entry:
        return None
    value = entry[token]
    return float(getattr(value, "logprob", value))
