"""Generation over token ids: the ``Engine`` interface and ``TorchEngine``, ours, on CPU and GPU.

    engine = TorchEngine.from_pretrained("runs/tiny/models/base")
    results = engine.generate([[1, 2, 3], [4, 5]], SamplingParams(temperature=0.8, max_tokens=32, seed=1))
    for event in engine.stream(prompts, SamplingParams(temperature=0)):
        print(event.request_id, event.token_id, event.logprob)

Everything above the engine (RL, distillation, "I don't know" probing, serving) sees only ``Engine``,
``SamplingParams``, ``GenerationResult``, ``TokenEvent`` and ``ToolHook`` (defined in lm/generation.py,
importable from here), so ``VLLMEngine`` (lm/vllm_engine.py) can replace ``TorchEngine`` where vLLM and
a GPU are present.

How ``TorchEngine`` works:
- The KV cache is preallocated: per layer ``[max_batch_size slots, kv_heads, max_seq_len + 1, head_dim]``.
  The extra last position is a scratch row that padded positions write to, so padding never touches a
  real key. A request owns one slot from admission to its end.
- Continuous batching: ``add_request`` queues; every ``step`` first admits queued requests into free
  slots, then runs (1) one batched "extend" forward for every request with more than one token not yet
  in the cache (a new prompt, or a tool's injected tokens), right-padded, and (2) one decode forward of
  one token for every other running request, with per-slot positions and a mask over each slot's
  length. Both produce one row of logits per request; one vectorised sampler draws all next tokens.
- Per-request sampling settings and a per-request seeded ``torch.Generator`` (see lm/sampling.py):
  a request's samples do not depend on what else is in the batch.
- The decode forward covers slots ``0..highest busy slot`` as a view of the cache (no gather); new
  requests take the lowest free slot so that range stays dense.
- The forward is lm/fused_forward.py's (fused projections, no module calls; the same math as
  lm/model.py), or with ``fused=False`` the model's own ``hidden_states`` through the ``KVCache``
  protocol (for a Transformer subclass with different math).
- Tool hooks: when a request's newest token is a hook's closing token, the hook's callback gets the
  tokens since the latest opening token and returns tokens that are appended unsampled (``forced``)
  and then run through the model like a prompt, so the cache stays exact.

Not thread-safe: one engine per thread/actor.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import zlib
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lm.fused_forward import FusedForward
from lm.generation import (
    Engine,
    FinishReason,
    GenerationResult,
    Request,
    TokenEvent,
    ToolHook,
    _as_params,
    eos_token_ids_of,
    text_tool,
)
from lm.model import Transformer
from lm.sampling import SamplingParams, sample

__all__ = [
    "Engine",
    "GenerationResult",
    "Request",
    "SamplingParams",
    "TokenEvent",
    "ToolHook",
    "TorchEngine",
    "eos_token_ids_of",
    "text_tool",
]

log = logging.getLogger(__name__)

# an extend (prefill) group may hold up to this many padded positions per real token (see _extend_groups)
PAD_SLACK = 1.25


class _CacheView:
    """The ``KVCache`` protocol over the engine's slot cache for one forward call.

    ``rows`` selects slots, either a slice (decode: a view, no copy) or an index tensor (extend:
    gathered). ``write_pos`` ``[B, T]`` are the cache positions of this call's tokens (padding goes to
    the scratch position); ``mask`` ``[B, 1, T, S]`` says which of the first S positions each query
    may attend to.
    """

    def __init__(
        self, engine: TorchEngine, rows: slice | Tensor, write_pos: Tensor, span: int, mask: Tensor
    ) -> None:
        self.k, self.v = engine._k, engine._v
        self.rows = rows
        self.row_index = (
            torch.arange(rows.start, rows.stop, device=write_pos.device) if isinstance(rows, slice) else rows
        )[:, None]
        self.write_pos = write_pos
        self.span = span
        self.mask = mask

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        kc, vc = self.k[layer_idx], self.v[layer_idx]
        kc[self.row_index, :, self.write_pos] = k.transpose(1, 2).to(kc.dtype)
        vc[self.row_index, :, self.write_pos] = v.transpose(1, 2).to(vc.dtype)
        return kc[self.rows, :, : self.span], vc[self.rows, :, : self.span], self.mask


class TorchEngine(Engine):
    """Our engine: KV cache, continuous batching, per-request sampling, logprobs, streaming, tools."""

    def __init__(
        self,
        model: Transformer,
        eos_token_ids: Iterable[int] = (),
        max_batch_size: int = 32,
        max_seq_len: int | None = None,
        device: str | torch.device | None = None,
        seed: int = 0,
        max_prefill_tokens: int = 8192,
        fused: bool = True,
    ) -> None:
        """``max_seq_len`` (default: the model's) bounds prompt + output per request and sizes the
        cache; ``max_prefill_tokens`` bounds the prompt tokens prefilled in one step, so a burst of
        long prompts is prefilled over several steps. ``fused`` selects lm/fused_forward.py's forward
        (it re-points the model's q/k/v and gate/up weights into shared tensors, values unchanged);
        False runs the model's own modules through the KVCache protocol. The model is put in eval mode."""
        self.model = model.eval()
        cfg = model.config
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if next(model.parameters()).device != self.device:
            self.model = model.to(self.device)
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.max_batch_size = max_batch_size
        self.max_seq_len = min(max_seq_len or cfg.max_seq_len, cfg.max_seq_len)
        self.max_prefill_tokens = max_prefill_tokens
        self.vocab_size = cfg.vocab_size
        dtype = next(model.parameters()).dtype
        shape = (max_batch_size, cfg.num_kv_heads, self.max_seq_len + 1, cfg.head_dim)
        self._k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(cfg.num_layers)]
        self._v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(cfg.num_layers)]
        self._scratch = self.max_seq_len  # the cache position padding writes to
        self._slots: list[Request | None] = [None] * max_batch_size
        self._waiting: deque[Request] = deque()
        self._ids = itertools.count()
        self._seed = seed
        self.finished: dict[Hashable, GenerationResult] = {}
        # per-slot sampling settings, set on admission, so a step builds no tensors from Python lists
        self._temperature = torch.zeros(max_batch_size, device=self.device)
        self._top_k = torch.zeros(max_batch_size, dtype=torch.long, device=self.device)
        self._top_p = torch.ones(max_batch_size, device=self.device)
        # note: fusing re-points the model's q/k/v and gate/up weights into shared tensors (see there)
        self._fused = FusedForward(self.model, self._k, self._v, self.max_seq_len + 1) if fused else None

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> TorchEngine:
        """An engine over a model directory; EOS tokens from its generation_config.json."""
        from lm.checkpoint import load_pretrained

        model, _ = load_pretrained(model_dir, device=device, dtype=dtype)
        kwargs.setdefault("eos_token_ids", eos_token_ids_of(model_dir))
        return cls(model, device=device, **kwargs)

    # -- the request API ----------------------------------------------------------------------------

    def add_request(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams | None = None,
        request_id: Hashable | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> Hashable:
        """Queue a request; it joins the running batch at the next ``step`` with a free slot."""
        params = params or SamplingParams()
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("empty prompt: give at least one token (for example <|endoftext|>)")
        if len(prompt) >= self.max_seq_len:
            raise ValueError(
                f"prompt of {len(prompt)} tokens leaves no room to generate (max_seq_len {self.max_seq_len})"
            )
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} outside the model's vocabulary [0, {self.vocab_size})")
        rid = request_id if request_id is not None else next(self._ids)
        if rid in self.finished or any(r.request_id == rid for r in self._requests()):
            raise ValueError(f"request id {rid!r} is already in use")
        seed = params.seed if params.seed is not None else zlib.crc32(repr((self._seed, rid)).encode())
        stop = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.eos_token_ids))
        req = Request(
            request_id=rid,
            prompt_ids=prompt,
            params=params,
            tool_hooks=tuple(tool_hooks),
            pending=list(prompt),
            generator=torch.Generator().manual_seed(seed),
            stop_ids=frozenset(stop),
        )
        self._waiting.append(req)
        return rid

    def has_unfinished(self) -> bool:
        return bool(self._waiting) or any(r is not None for r in self._slots)

    def take_result(self, request_id: Hashable) -> GenerationResult:
        return self.finished.pop(request_id)

    def abort(self, request_id: Hashable) -> None:
        """Drop a queued or running request without a result (a client went away)."""
        self._waiting = deque(r for r in self._waiting if r.request_id != request_id)
        for i, r in enumerate(self._slots):
            if r is not None and r.request_id == request_id:
                self._slots[i] = None

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Admit queued requests, run one extend and/or one decode forward, sample, return the events."""
        self._admit()
        running = [r for r in self._slots if r is not None]
        if not running:
            return []
        extend_groups = self._extend_groups([r for r in running if len(r.pending) > 1])
        decode = [r for r in running if len(r.pending) == 1]
        parts: list[Tensor] = []
        rows: list[Request] = []
        for group in extend_groups:
            parts.append(self._forward_extend(group))
            rows += group
        if decode:
            parts.append(self._forward_decode(decode))
            rows += decode
        logits = parts[0] if len(parts) == 1 else torch.cat(parts)
        slots = torch.tensor([r.slot for r in rows], device=self.device)
        uniforms = torch.tensor(
            [0.0 if r.params.greedy else float(torch.rand((), generator=r.generator)) for r in rows],
            device=self.device,
        )
        want_logprobs = any(r.params.logprobs for r in rows)
        tokens, logprobs = sample(
            logits, self._temperature[slots], self._top_k[slots], self._top_p[slots], uniforms, want_logprobs
        )
        token_list = tokens.tolist()
        logprob_list = logprobs.tolist() if logprobs is not None else [None] * len(rows)
        events: list[TokenEvent] = []
        for req, tok, lp in zip(rows, token_list, logprob_list, strict=True):
            self._advance(req, tok, lp, events)
        return events

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> list[GenerationResult]:
        ids = self._add_all(prompts, params, tool_hooks)
        while any(i not in self.finished for i in ids):
            self.step()
        # the Engine interface numbers a call's requests by prompt index, as VLLMEngine does
        return [dataclasses.replace(self.take_result(rid), request_id=i) for i, rid in enumerate(ids)]

    def stream(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        tool_hooks: Sequence[ToolHook] = (),
    ) -> Iterator[TokenEvent]:
        ids = self._add_all(prompts, params, tool_hooks)
        index = {rid: i for i, rid in enumerate(ids)}
        try:
            while any(i not in self.finished for i in ids):
                for event in self.step():
                    if event.request_id in index:
                        yield event._replace(request_id=index[event.request_id])
        finally:
            for i in ids:  # results were streamed; do not keep them, nor requests the caller dropped
                self.finished.pop(i, None)
                self.abort(i)

    def _add_all(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams] | None,
        tool_hooks: Sequence[ToolHook],
    ) -> list[Hashable]:
        per_prompt = _as_params(params, len(prompts))
        base = next(self._ids)
        # ids unique within this engine, ordered like the prompts; seeds derive from them when unset
        ids = [(base, i) for i in range(len(prompts))]
        for i, (rid, prompt, p) in enumerate(zip(ids, prompts, per_prompt, strict=True)):
            self.add_request(prompt, p, request_id=rid, tool_hooks=tool_hooks)
            self._waiting[-1].index = i
        return ids

    # -- scheduling ---------------------------------------------------------------------------------

    def _requests(self) -> Iterator[Request]:
        yield from self._waiting
        yield from (r for r in self._slots if r is not None)

    def _admit(self) -> None:
        for slot in range(self.max_batch_size):
            if not self._waiting:
                break
            if self._slots[slot] is None:
                self._place(self._waiting.popleft(), slot)
        if not self._waiting:
            self._compact()

    def _place(self, req: Request, slot: int) -> None:
        req.slot = slot
        self._slots[slot] = req
        p = req.params
        self._temperature[slot] = p.temperature
        self._top_k[slot] = p.top_k
        self._top_p[slot] = p.top_p

    def _compact(self) -> None:
        """Move the highest running requests into lower free slots, so the decode range stays dense
        while the batch drains (copying a cache slot once beats computing an idle row every step)."""
        while True:
            busy = [i for i, r in enumerate(self._slots) if r is not None]
            free = [i for i, r in enumerate(self._slots) if r is None]
            if not busy or not free or free[0] > busy[-1]:
                return
            src, dst = busy[-1], free[0]
            req = self._slots[src]
            assert req is not None
            n = req.cached
            for kc, vc in zip(self._k, self._v, strict=True):
                kc[dst, :, :n] = kc[src, :, :n]
                vc[dst, :, :n] = vc[src, :, :n]
            self._slots[src] = None
            self._place(req, dst)

    def _extend_groups(self, candidates: list[Request]) -> list[list[Request]]:
        """The requests needing an extend this step, in groups of similar length.

        Together the groups hold at most ``max_prefill_tokens`` real tokens (at least one request runs).
        Requests left out before go first, so a long prompt is not starved by a stream of short ones;
        the rest fill the budget shortest first. Sorted by pending length, a new group starts when
        padding would exceed ``PAD_SLACK`` of the group's real tokens, so a burst of short and long
        prompts is not all padded to the longest.
        """
        chosen: list[Request] = []
        budget = 0
        for req in sorted(candidates, key=lambda r: (-r.deferred, len(r.pending))):
            n = len(req.pending)
            if chosen and budget + n > self.max_prefill_tokens:
                req.deferred += 1
                continue
            req.deferred = 0  # its priority was for this wait only, not for later extends
            chosen.append(req)
            budget += n
        groups: list[list[Request]] = []
        group: list[Request] = []
        real = 0
        for req in sorted(chosen, key=lambda r: len(r.pending)):
            n = len(req.pending)  # the widest so far, as the list is sorted
            if group and n * (len(group) + 1) > PAD_SLACK * (real + n):
                groups.append(group)
                group, real = [], 0
            group.append(req)
            real += n
        if group:
            groups.append(group)
        return groups

    def _run(
        self, ids: Tensor, positions: Tensor, rows: slice | Tensor, write_pos: Tensor, span: int, mask: Tensor
    ) -> Tensor:
        """Final hidden states of one forward over cache slots ``rows`` (see FusedForward)."""
        if self._fused is not None:
            return self._fused(ids, positions, rows, write_pos, span, mask)
        return self.model.hidden_states(ids, positions, _CacheView(self, rows, write_pos, span, mask))

    def _forward_extend(self, reqs: list[Request]) -> Tensor:
        """Run each request's pending tokens (right-padded) through the model; last-position logits."""
        dev = self.device
        n = torch.tensor([len(r.pending) for r in reqs], device=dev)
        start = torch.tensor([r.cached for r in reqs], device=dev)
        width = int(n.max())
        ids = torch.zeros(len(reqs), width, dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, : len(r.pending)] = torch.tensor(r.pending)
        offs = torch.arange(width, device=dev)[None, :]
        positions = start[:, None] + offs
        valid = offs < n[:, None]
        write_pos = torch.where(valid, positions, self._scratch)
        span = int((start + n).max())
        keys = torch.arange(span, device=dev)[None, None, :]
        mask = (keys <= positions[:, :, None])[:, None]  # causal over cache + new tokens
        slots = torch.tensor([r.slot for r in reqs], device=dev)
        hidden = self._run(
            ids.to(dev), positions.clamp(max=self.max_seq_len - 1), slots, write_pos, span, mask
        )
        last = hidden[torch.arange(len(reqs), device=dev), n - 1]
        for r in reqs:
            r.cached += len(r.pending)
            r.pending = []
        return F.linear(last, self.model.lm_head.weight)

    def _forward_decode(self, reqs: list[Request]) -> Tensor:
        """One token for every decoding request, over the dense slot range ``0..highest busy slot``."""
        dev = self.device
        hi = max(r.slot for r in reqs) + 1
        token_list, length_list, active_list = [0] * hi, [0] * hi, [False] * hi
        for r in reqs:
            token_list[r.slot], length_list[r.slot], active_list[r.slot] = r.pending[0], r.cached, True
        tokens = torch.tensor(token_list, device=dev)
        lengths = torch.tensor(length_list, device=dev)
        active = torch.tensor(active_list, device=dev)
        span = int(lengths.max()) + 1
        write_pos = torch.where(active, lengths, self._scratch)[:, None]
        keys = torch.arange(span, device=dev)[None, :]
        # an idle slot in the range attends to position 0 only (its output is discarded)
        mask = ((keys <= lengths[:, None]) & active[:, None]) | (keys == 0)
        hidden = self._run(
            tokens[:, None], lengths[:, None], slice(0, hi), write_pos, span, mask[:, None, None, :]
        )
        for r in reqs:
            r.cached += 1
            r.pending = []
        rows = torch.tensor([r.slot for r in reqs], device=dev)
        return F.linear(hidden[rows, 0], self.model.lm_head.weight)

    def _advance(self, req: Request, token: int, logprob: float | None, events: list[TokenEvent]) -> None:
        """Append a sampled token, then apply the stop rules and the tool hooks."""
        req.token_ids.append(token)
        req.logprobs.append(logprob if logprob is not None else 0.0)
        req.forced.append(False)
        req.pending = [token]
        reported = logprob if req.params.logprobs else None
        if token in req.stop_ids:
            events.append(TokenEvent(req.request_id, token, reported, False, "stop"))
            self._finish(req, "stop", stop_token_id=token)
        elif self._out_of_room(req):
            events.append(TokenEvent(req.request_id, token, reported, False, "length"))
            self._finish(req, "length")
        else:
            events.append(TokenEvent(req.request_id, token, reported, False, None))
            hook = next((h for h in req.tool_hooks if h.close_token_id == token), None)
            if hook is not None:
                self._run_tool(req, hook, events)

    def _out_of_room(self, req: Request) -> bool:
        return len(req.token_ids) >= req.params.max_tokens or req.length >= self.max_seq_len

    def _run_tool(self, req: Request, hook: ToolHook, events: list[TokenEvent]) -> None:
        """Append the callback's tokens (forced) after a closing token, or end the request on failure."""
        seq = req.prompt_ids + req.token_ids
        open_at = None
        for i in range(len(seq) - 2, -1, -1):
            if seq[i] == hook.close_token_id:
                break  # a stray closing token: the latest call was already answered
            if seq[i] == hook.open_token_id:
                open_at = i
                break
        if open_at is None:
            return
        try:
            injected = [int(t) for t in hook.callback(req, seq[open_at + 1 : -1])]
            bad = [t for t in injected if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(
                    f"tool returned token id {bad[0]} outside the vocabulary [0, {self.vocab_size})"
                )
        except Exception as e:  # a tool failure ends this request only
            log.warning("tool callback failed for request %r: %s", req.request_id, e)
            events.append(TokenEvent(req.request_id, None, None, False, "tool_error"))
            self._finish(req, "tool_error", error=f"{type(e).__name__}: {e}")
            return
        room = min(req.params.max_tokens - len(req.token_ids), self.max_seq_len - req.length)
        for t in injected[:room]:
            req.token_ids.append(t)
            req.logprobs.append(0.0)
            req.forced.append(True)
            req.pending.append(t)
            events.append(TokenEvent(req.request_id, t, None, True, None))
        if self._out_of_room(req):
            events.append(TokenEvent(req.request_id, None, None, False, "length"))
            self._finish(req, "length")

    def _finish(
        self, req: Request, reason: FinishReason, stop_token_id: int | None = None, error: str | None = None
    ) -> None:
        self._slots[req.slot] = None
        self.finished[req.request_id] = GenerationResult(
            request_id=req.request_id,
            prompt_ids=req.prompt_ids,
            token_ids=req.token_ids,
            logprobs=req.logprobs if req.params.logprobs else None,
            forced=req.forced,
            finish_reason=reason,
            stop_token_id=stop_token_id,
            error=error,
        )
