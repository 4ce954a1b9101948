"""The decoder's forward for generation, with fewer, larger operations than lm/model.py's modules.

Why: generating one token for a batch is a few small matmuls per layer, so on a CPU (and on a GPU for
small models) the time goes to per-operation overhead as much as to arithmetic. This forward computes
exactly lm/model.py's math (the engine's tests compare the two) with:
- q, k and v projections as one matmul, and gate and up as one: the model's ``q_proj.weight`` etc.
  are re-pointed to slices of one fused tensor (``fuse_projections``), so no weight is stored twice
  and in-place weight updates (``load_state_dict``, an optimizer step) reach the fused tensor;
- RoPE on q and k together, as ``x * cos + roll(x) * sin'`` with a precomputed table (the same float32
  values as computing ``cos(position * inv_freq)`` on the fly);
- keys/values written straight into the engine's slot cache in the layout the projection produces,
  and grouped-query attention without copying keys/values per query head;
- no ``nn.Module`` calls in the loop.
If anything re-allocates or replaces a weight (``model.to(...)``, a new Parameter), the fusion is
redone on the next call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lm.model import Transformer


def _fuse(weights: list[Tensor]) -> Tensor:
    """One tensor holding ``weights`` stacked on dim 0; each weight becomes a view into it."""
    fused = torch.cat([w.detach() for w in weights], dim=0)
    start = 0
    for w in weights:
        rows = w.shape[0]
        w.data = fused[start : start + rows]
        start += rows
    return fused


class FusedForward:
    """``hidden = FusedForward(model, k_cache, v_cache)(ids, positions, rows, write_pos, span, mask)``.

    ``k_cache``/``v_cache``: per layer ``[slots, kv_heads, capacity, head_dim]``. ``rows`` picks the
    slots (a slice, read as a view, or an index tensor), ``write_pos`` ``[B, T]`` the cache position of
    each new token, ``mask`` ``[B, 1, T, span]`` (or ``[B, 1, 1, span]``) what each query attends to.
    """

    def __init__(
        self, model: Transformer, k_cache: list[Tensor], v_cache: list[Tensor], capacity: int
    ) -> None:
        self.model = model
        self.k_cache, self.v_cache = k_cache, v_cache
        cfg = model.config
        self.h, self.kv, self.d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.group = self.h // self.kv
        self.eps = cfg.rms_norm_eps
        self.hidden = cfg.hidden_size
        self._fuse_all()
        # RoPE tables for every position the cache can hold, computed as RotaryEmbedding does
        rotary = model.model.rotary_emb
        pos = torch.arange(capacity, device=rotary.inv_freq.device)
        freqs = pos[:, None].float() * rotary.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        half = self.d // 2
        self.cos = emb.cos()
        self.sin_signed = torch.cat((-emb.sin()[:, :half], emb.sin()[:, half:]), dim=-1)

    def _weights(self, i: int) -> tuple[list[Tensor], list[Tensor]]:
        layer = self.model.model.layers[i]
        a, m = layer.self_attn, layer.mlp
        return [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], [m.gate_proj.weight, m.up_proj.weight]

    def _fuse_all(self) -> None:
        self.qkv: list[Tensor] = []
        self.gate_up: list[Tensor] = []
        # ordinary tensors even when called during generation: the weights must stay trainable
        with torch.inference_mode(False), torch.no_grad():
            for i in range(len(self.model.model.layers)):
                qkv, gate_up = self._weights(i)
                self.qkv.append(_fuse(qkv))
                self.gate_up.append(_fuse(gate_up))
        self._ptrs = self._current_ptrs()

    def _current_ptrs(self) -> list[int]:
        ptrs = []
        for layer in self.model.model.layers:
            a, m = layer.self_attn, layer.mlp
            ptrs += [a.q_proj.weight.data_ptr(), a.k_proj.weight.data_ptr(), a.v_proj.weight.data_ptr()]
            ptrs += [m.gate_proj.weight.data_ptr(), m.up_proj.weight.data_ptr()]
        return ptrs

    def _check_fused(self) -> None:
        """Re-fuse if any projection weight was replaced or moved since fusing (every layer is checked:
        a stale copy would silently generate from old weights)."""
        if self._current_ptrs() != self._ptrs:
            self._fuse_all()
            self.cos = self.cos.to(self.qkv[0].device)
            self.sin_signed = self.sin_signed.to(self.qkv[0].device)

    def _norm(self, x: Tensor, weight: Tensor) -> Tensor:
        return weight * F.rms_norm(x.float(), (self.hidden,), eps=self.eps).to(x.dtype)

    @torch.inference_mode()
    def __call__(
        self, ids: Tensor, positions: Tensor, rows: slice | Tensor, write_pos: Tensor, span: int, mask: Tensor
    ) -> Tensor:
        self._check_fused()
        body = self.model.model
        b, t = ids.shape
        h, kv, d, g = self.h, self.kv, self.d, self.group
        x = F.embedding(ids, body.embed_tokens.weight)
        cos = self.cos[positions].to(x.dtype)[:, :, None, :]  # [B, T, 1, D]
        sin = self.sin_signed[positions].to(x.dtype)[:, :, None, :]
        if isinstance(rows, slice):
            row_index = torch.arange(rows.start, rows.stop, device=ids.device)[:, None]
        else:
            row_index = rows[:, None]
        if g > 1 and t > 1 and mask.size(-2) > 1:
            mask = mask.repeat(1, 1, g, 1)  # grouped queries are stacked along the query axis
        for i, layer in enumerate(body.layers):
            attn = layer.self_attn
            qkv = F.linear(self._norm(x, layer.input_layernorm.weight), self.qkv[i]).view(b, t, h + 2 * kv, d)
            qk = qkv[:, :, : h + kv]
            qk = qk * cos + torch.roll(qk, d // 2, dims=-1) * sin  # RoPE (rotate_half form)
            q, k, v = qk[:, :, :h], qk[:, :, h:], qkv[:, :, h + kv :]
            kc, vc = self.k_cache[i], self.v_cache[i]
            kc[row_index, :, write_pos] = k.to(kc.dtype)  # [B, T, kv, D] is the indexing result's layout
            vc[row_index, :, write_pos] = v.to(vc.dtype)
            keys, values = kc[rows, :, :span], vc[rows, :, :span]
            if t == 1:
                out = F.scaled_dot_product_attention(q.reshape(b, kv, g, d), keys, values, attn_mask=mask)
                out = out.reshape(b, 1, h * d)
            else:
                qg = q.transpose(1, 2).reshape(b, kv, g * t, d)
                out = F.scaled_dot_product_attention(qg, keys, values, attn_mask=mask)
                out = out.view(b, h, t, d).transpose(1, 2).reshape(b, t, h * d)
            x = x + F.linear(out, attn.o_proj.weight)
            gate, up = F.linear(self._norm(x, layer.post_attention_layernorm.weight), self.gate_up[i]).chunk(
                2, -1
            )
            x = x + F.linear(F.silu(gate) * up, layer.mlp.down_proj.weight)
        return self._norm(x, body.norm.weight)
