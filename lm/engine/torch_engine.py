"""``TorchEngine``: the ``Engine`` interface (lm/engine/base.py) on our own torch forward, CPU and GPU.

    engine = TorchEngine.from_pretrained("runs/tiny/models/base")
    results = engine.generate([[1, 2, 3], [4, 5]], SamplingParams(temperature=0.8, max_tokens=32, seed=1))
    for event in engine.stream(prompts, SamplingParams(temperature=0)):
        print(event.request_id, event.token_id, event.logprob)

How it works:
- The KV cache is preallocated: per layer ``[max_batch_size slots, kv_heads, max_seq_len + 1, head_dim]``.
  The extra last position is a scratch row that padded positions write to, so padding never touches a
  real key. A sample owns one slot from admission to its end.
- Continuous batching: ``add_request`` queues; every ``step`` first admits queued requests into free
  slots, then runs (1) one batched "extend" forward for every sample with more than one token not yet
  in the cache (a new prompt, a tool's injected tokens, a recompute after a weight update),
  right-padded, and (2) one decode forward of one token for every other running sample, with per-slot
  positions and a mask over each slot's length. Both produce one row of logits per sample; one
  vectorised sampler draws all next tokens.
- ``n`` samples of one prompt are admitted together into n slots; the first runs the prompt, and the
  others copy its cache rows and its last logits row, then draw their own first token: one prefill.
  Requests are admitted in arrival order: one whose n samples do not fit the free slots waits, and so
  do those behind it, so a large group is never starved by small requests.
- Per-request sampling settings and a per-sample seeded ``torch.Generator`` (lm/engine/sampling.py):
  a sample's tokens do not depend on what else is in the batch.
- The decode forward covers slots ``0..highest busy slot`` as a view of the cache (no gather); new
  requests take the lowest free slots so that range stays dense.
- The forward is lm/engine/fused_forward.py's (fused projections, no module calls; the same math as
  lm/model.py), or with ``fused=False`` the model's own ``hidden_states`` through the ``KVCache``
  protocol (for a Transformer subclass with different math).
- Tool hooks (lm/engine/tools.py): a sample whose newest token closes a call waits, outside the batch,
  for the reply; the reply's tokens are appended (forced) and run through the model like a prompt.

Not thread-safe: one engine per thread/actor (actors/engine_actor.py runs one for many callers).
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lm.engine.base import Engine
from lm.engine.fused_forward import FusedForward
from lm.engine.sampling import SamplingParams, sample
from lm.engine.types import (
    EngineLoad,
    FinishReason,
    Request,
    TokenEvent,
    eos_token_ids_of,
)
from lm.model import Transformer

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
    """Our engine: KV cache, continuous batching, per-request sampling, logprobs, streaming, tools,
    ``n`` samples sharing one prefill, in-place weight updates."""

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
        cache; ``max_batch_size`` is the number of samples generated at once (a request with ``n``
        samples takes n slots); ``max_prefill_tokens`` bounds the prompt tokens prefilled in one step,
        so a burst of long prompts is prefilled over several steps. ``fused`` selects
        lm/engine/fused_forward.py's forward (it re-points the model's q/k/v and gate/up weights into
        shared tensors, values unchanged); False runs the model's own modules through the KVCache
        protocol. The model is put in eval mode."""
        super().__init__()
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
        self._waiting: deque[list[Request]] = deque()  # requests: each the list of its samples
        self._sharing: list[Request] = []  # admitted samples whose followers wait for their prefill
        self._seed = seed
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

    def _check_params(self, params: SamplingParams) -> None:
        if params.n > self.max_batch_size:
            raise ValueError(
                f"n={params.n} samples run at once and need {params.n} slots; this engine has "
                f"max_batch_size {self.max_batch_size}"
            )

    def _queue(self, samples: list[Request]) -> None:
        """The request joins the running batch at the next ``step`` with ``n`` free slots."""
        for req in samples:
            req.generator = torch.Generator().manual_seed(self._sample_seed(req))
        self._waiting.append(samples)

    def _sample_seed(self, req: Request) -> int:
        if req.params.seed is not None:
            return req.params.seed + req.sample_index  # as vLLM seeds the samples of a request with n > 1
        key = (
            (self._seed, req.request_id)
            if req.sample_index == 0
            else (self._seed, req.request_id, req.sample_index)
        )
        return zlib.crc32(repr(key).encode())

    def load(self) -> EngineLoad:
        running = sum(r is not None for r in self._slots)
        return EngineLoad(queued=len(self._waiting), running=running, capacity=self.max_batch_size)

    def _drop(self, request_id: Hashable, samples: list[Request]) -> None:
        self._waiting = deque(g for g in self._waiting if g is not samples)
        for r in samples:
            if r.slot >= 0 and self._slots[r.slot] is r:
                self._slots[r.slot] = None
        self._sharing = [r for r in self._sharing if r.request_id != request_id]

    # -- weights ------------------------------------------------------------------------------------

    def _weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.model.state_dict().items()}

    def _busy(self) -> bool:
        return any(r is not None for r in self._slots)

    def _swap_weights(self, named: list[tuple[str, Tensor]], version: int, recompute: bool) -> None:
        # in-place copies: the fused projection tensors share storage with the parameters; ordinary
        # (not inference-mode) updates even when called from a step, so the weights stay trainable
        with torch.inference_mode(False), torch.no_grad():
            self.model.load_state_dict(dict(named), strict=False)
        if recompute:
            for r in self._slots:
                if r is not None and r.cached > 0:  # its cache came from the old weights
                    r.pending = r.prompt_ids + r.token_ids
                    r.cached = 0

    # -- the step -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """Admit queued requests, run one extend and/or one decode forward, sample, return the events."""
        events: list[TokenEvent] = []
        if self._parked:
            self._poll_tools(events)
        self._load_pending()
        self._admit()
        running = [r for r in self._slots if r is not None and r.pending and r.tool_call is None]
        if not running:
            self._wait_for_tools()
            return events
        self.counters.steps += 1
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
        if self._sharing:
            logits = self._share_prefills(rows, logits)
        slots = torch.tensor([r.slot for r in rows], device=self.device)
        uniforms = torch.tensor(
            [0.0 if r.params.greedy else float(torch.rand((), generator=r.generator)) for r in rows],
            device=self.device,
        )
        want_logprobs = any(r.params.logprobs for r in rows)
        drawn = sample(
            logits, self._temperature[slots], self._top_k[slots], self._top_p[slots], uniforms, want_logprobs
        )
        tokens = drawn.tokens.tolist()
        none = [None] * len(rows)
        raw = drawn.logprobs.tolist() if drawn.logprobs is not None else none
        processed = drawn.sampled_logprobs.tolist() if drawn.sampled_logprobs is not None else none
        self.counters.tokens_generated += len(rows)
        for req, tok, lp, slp in zip(rows, tokens, raw, processed, strict=True):
            self._advance(req, tok, lp, slp, events)
        self._load_pending()  # as soon as the last old-weights sample is done
        return events

    # -- scheduling ---------------------------------------------------------------------------------

    def _admit(self) -> None:
        if self._pending_update is not None:
            return  # draining: nothing new starts on the old weights
        free = [i for i, r in enumerate(self._slots) if r is None]
        while self._waiting and len(self._waiting[0]) <= len(free):
            samples = self._waiting.popleft()
            for req in samples:
                self._place(req, free.pop(0))
            first = samples[0]
            first.pending = list(first.prompt_ids)
            if len(samples) > 1:
                first.followers = samples[1:]
                self._sharing.append(first)
        if not self._waiting:
            self._compact()

    def _place(self, req: Request, slot: int) -> None:
        req.slot = slot
        self._slots[slot] = req
        p = req.params
        self._temperature[slot] = p.temperature
        self._top_k[slot] = p.top_k
        self._top_p[slot] = p.top_p

    def _copy_slot(self, src: int, dst: int, n: int) -> None:
        for kc, vc in zip(self._k, self._v, strict=True):
            kc[dst, :, :n] = kc[src, :, :n]
            vc[dst, :, :n] = vc[src, :, :n]

    def _compact(self) -> None:
        """Move the highest running samples into lower free slots, so the decode range stays dense
        while the batch drains (copying a cache slot once beats computing an idle row every step)."""
        while True:
            busy = [i for i, r in enumerate(self._slots) if r is not None]
            free = [i for i, r in enumerate(self._slots) if r is None]
            if not busy or not free or free[0] > busy[-1]:
                return
            src, dst = busy[-1], free[0]
            req = self._slots[src]
            assert req is not None
            self._copy_slot(src, dst, req.cached)
            self._slots[src] = None
            self._place(req, dst)

    def _share_prefills(self, rows: list[Request], logits: Tensor) -> Tensor:
        """Give the followers of every sample prefilled this step its cache rows and logits row, and
        add them to ``rows`` (in place) so they draw their first token in this step too."""
        position = {id(r): i for i, r in enumerate(rows)}
        done = [r for r in self._sharing if id(r) in position]
        if not done:
            return logits
        source: list[int] = []
        for first in done:
            for f in first.followers:
                self._copy_slot(first.slot, f.slot, first.cached)
                f.cached = first.cached
                rows.append(f)
                source.append(position[id(first)])
            first.followers = []
        self._sharing = [r for r in self._sharing if r.followers]
        return torch.cat([logits, logits[torch.tensor(source, device=logits.device)]])

    def _extend_groups(self, candidates: list[Request]) -> list[list[Request]]:
        """The samples needing an extend this step, in groups of similar length.

        Together the groups hold at most ``max_prefill_tokens`` real tokens (at least one sample runs).
        Samples left out before go first, so a long prompt is not starved by a stream of short ones;
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

    # -- forwards -----------------------------------------------------------------------------------

    def _run(
        self, ids: Tensor, positions: Tensor, rows: slice | Tensor, write_pos: Tensor, span: int, mask: Tensor
    ) -> Tensor:
        """Final hidden states of one forward over cache slots ``rows`` (see FusedForward)."""
        if self._fused is not None:
            return self._fused(ids, positions, rows, write_pos, span, mask)
        return self.model.hidden_states(ids, positions, _CacheView(self, rows, write_pos, span, mask))

    def _forward_extend(self, reqs: list[Request]) -> Tensor:
        """Run each sample's pending tokens (right-padded) through the model; last-position logits."""
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
            self.counters.prefill_tokens += len(r.pending)
            r.cached += len(r.pending)
            r.pending = []
        return F.linear(last, self.model.lm_head.weight)

    def _forward_decode(self, reqs: list[Request]) -> Tensor:
        """One token for every decoding sample, over the dense slot range ``0..highest busy slot``."""
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
            if r.cached == 0:  # a one-token prompt
                self.counters.prefill_tokens += 1
            r.cached += 1
            r.pending = []
        rows = torch.tensor([r.slot for r in reqs], device=dev)
        return F.linear(hidden[rows, 0], self.model.lm_head.weight)

    # -- after sampling -----------------------------------------------------------------------------

    def _advance(
        self,
        req: Request,
        token: int,
        logprob: float | None,
        sampled_logprob: float | None,
        events: list[TokenEvent],
    ) -> None:
        """Append a sampled token, then apply the stop rules and the tool hooks."""
        if req.policy_version is None:
            req.policy_version = self._version
        event = req.append(token, logprob, sampled_logprob)
        req.pending = [token]
        if token in req.stop_ids:
            events.append(event._replace(finish_reason="stop"))
            self._finish(req, "stop", stop_token_id=token)
        elif self._out_of_room(req):
            events.append(event._replace(finish_reason="length"))
            self._finish(req, "length")
        else:
            events.append(event)
            if req.tool_hooks:
                self._call_tool(req, token, events)

    def _resume(self, req: Request, injected: list[int]) -> list[TokenEvent]:
        req.pending += injected  # run through the model like a prompt at the next step
        return [self._finish(req, "length")] if self._out_of_room(req) else []

    def _finish(
        self, req: Request, reason: FinishReason, stop_token_id: int | None = None, error: str | None = None
    ) -> TokenEvent:
        self._slots[req.slot] = None
        self._record(req, reason, stop_token_id, error)
        return TokenEvent(req.request_id, None, None, False, reason, req.sample_index)
