"""A Llama-architecture decoder in plain torch, with Hugging Face ``LlamaForCausalLM``'s names and math.

Why this shape: an export of this module's ``state_dict`` loads unchanged in ``transformers`` and vLLM
(see lm/checkpoint.py), so every later stage can use the ecosystem's tools on our models.

- RMSNorm, rotary position embeddings (HF's ``rotate_half`` convention), SwiGLU MLP, grouped-query
  attention through ``torch.nn.functional.scaled_dot_product_attention``, optional tied embeddings.
- The KV cache is not part of the model: ``forward`` takes any object with the small ``KVCache``
  protocol below, so the generation engine (lm/engine/torch_engine.py) owns the cache layout (slots, lengths,
  masks) and the model stays a pure function of (tokens, positions, cache).
- Packed training rows: ``forward(..., document_ids=...)`` runs several sequences side by side in one
  row; attention is causal within a sequence and blocked between sequences (a block-diagonal mask
  through ``scaled_dot_product_attention``), and RoPE positions restart at each sequence's start,
  so a packed sequence's logits are the ones it gets alone.
- Nothing here is specific to one device or parallelism scheme: plain ``nn.Linear``/``nn.Embedding``
  parameters (DDP and FSDP2 wrap them as they are), no data-dependent Python control flow in
  ``forward`` (``torch.compile`` friendly), float32 norms and RoPE under bf16 autocast as HF does.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from lm.config_base import StrictModel


class ModelConfig(StrictModel):
    """Sizes of the decoder. Defaults are a ~1M-parameter model for CPU tests and the tiny demo."""

    vocab_size: int = Field(4096, gt=0, description="token ids are in [0, vocab_size)")
    hidden_size: int = Field(128, gt=0, description="model width")
    num_layers: int = Field(4, gt=0, description="decoder blocks (HF: num_hidden_layers)")
    num_heads: int = Field(4, gt=0, description="query heads (HF: num_attention_heads)")
    num_kv_heads: int = Field(2, gt=0, description="key/value heads; < num_heads is grouped-query attention")
    intermediate_size: int = Field(384, gt=0, description="SwiGLU hidden width (Llama: ~8/3 x hidden)")
    max_seq_len: int = Field(2048, gt=0, description="longest sequence (HF: max_position_embeddings)")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base (Llama 2: 10000)")
    rms_norm_eps: float = Field(1e-5, gt=0, description="RMSNorm epsilon (Llama 2: 1e-5)")
    tie_embeddings: bool = Field(False, description="lm_head shares embed_tokens' matrix")
    init_std: float = Field(0.02, gt=0, description="std of the normal init (GPT-2/Llama: 0.02)")

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be divisible by num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim (hidden_size / num_heads = {self.head_dim}) must be even for RoPE")
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int, **overrides: object) -> ModelConfig:
        """nanochat's one dial: every size follows from the number of layers.

        The rule (all sizes multiples of 64 so matmuls tile well on GPUs):
        - hidden_size = depth * 64 (nanochat's aspect ratio of 64), so depth 12 -> 768 (GPT-2 small),
          depth 20 -> 1280, depth 32 -> 2048;
        - num_heads = hidden_size / 64 (heads of 64 dimensions), i.e. num_heads = depth;
        - num_kv_heads = num_heads / g with g the largest of 4, 2, 1 dividing num_heads (grouped-query
          attention with groups of up to 4, as Llama-3-style models do, MHA when depth is odd);
        - intermediate_size = 8/3 * hidden_size rounded up to a multiple of 64 (SwiGLU with the same
          parameter count as a 4x GELU MLP, as in Llama).
        Anything in ``overrides`` (for example ``max_seq_len`` or ``tie_embeddings``) replaces the rule.
        """
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        hidden = depth * 64
        heads = hidden // 64
        group = next(g for g in (4, 2, 1) if heads % g == 0)
        intermediate = 64 * math.ceil(8 * hidden / 3 / 64)
        values: dict[str, object] = dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_layers=depth,
            num_heads=heads,
            num_kv_heads=heads // group,
            intermediate_size=intermediate,
        )
        values.update(overrides)
        return cls(**values)

    def num_params(self, include_embeddings: bool = True) -> int:
        """Number of distinct parameters (tied matrices counted once).

        ``include_embeddings=False`` leaves out the input embedding table only (a lookup, not a matmul);
        an untied ``lm_head`` is a matmul and is counted, as nanochat does.
        """
        h, kv_dim = self.hidden_size, self.num_kv_heads * self.head_dim
        attn = h * h * 2 + h * kv_dim * 2  # q, o and k, v
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 2 * h  # + two RMSNorm weights
        total = self.num_layers * per_layer + h  # + final norm
        embed = self.vocab_size * h
        if not self.tie_embeddings:
            total += embed  # lm_head
        if include_embeddings:
            total += embed  # embed_tokens (shared with lm_head when tied, so counted once)
        return total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) for model FLOPs utilisation.

        PaLM's appendix B / nanochat: 6 * (weights used in matmuls) + 12 * layers * hidden * seq_len,
        where the second term is attention's QK^T and AV over a full (not causally halved) context.
        The matmul weights are every linear layer including the output projection, tied or not.
        """
        matmul_params = self.num_params(include_embeddings=False) + (
            self.vocab_size * self.hidden_size if self.tie_embeddings else 0
        )
        matmul_params -= (2 * self.num_layers + 1) * self.hidden_size  # norm weights are not matmuls
        return 6.0 * matmul_params + 12.0 * self.num_layers * self.hidden_size * seq_len


class KVCache(Protocol):
    """What ``Transformer.forward`` needs from a cache; the engine decides the layout behind it.

    ``update`` stores this step's keys/values of one layer (``[B, num_kv_heads, T, head_dim]``, already
    rotated) and returns every key/value the new queries may look at (``[B, num_kv_heads, S, head_dim]``)
    with a mask for ``scaled_dot_product_attention``: boolean ``[B, 1, T, S]`` (True = attend) or an
    additive float mask, or None to mean "causal over exactly the returned keys" (only valid when S == T).
    """

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]: ...


class RMSNorm(nn.Module):
    """HF's LlamaRMSNorm: normalise in float32, cast back, then scale."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        normed = F.rms_norm(x.float(), (x.size(-1),), eps=self.variance_epsilon)  # one fused kernel
        return self.weight * normed.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables of HF's default RoPE, computed in float32 for the given positions."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # not in state_dict, as in HF

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=positions.device.type, enabled=False):
            freqs = positions[..., None].float() * self.inv_freq.float()  # [B, T, D/2]
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [B, heads, T, D]; cos/sin: [B, T, D]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, attn_mask: Tensor | None = None
    ) -> Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        mask: Tensor | None = None
        if cache is not None:
            k, v, mask = cache.update(self.layer_idx, k, v)
        group = self.num_heads // self.num_kv_heads
        if attn_mask is not None and cache is None:  # packed rows: one [B, 1, T, T] mask for every head
            if group > 1:  # on CUDA, enable_gqa with a mask would fall back to the slow math kernel
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        elif mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=group > 1)
        elif group > 1:
            # Grouped queries as rows: the `group` query heads sharing a key/value head are stacked along
            # the sequence axis, so no key/value copy per query head is made (decode's hot path).
            qg = q.reshape(b, self.num_kv_heads, group * t, self.head_dim)
            mask_g = mask.repeat(1, 1, group, 1) if mask.size(-2) > 1 else mask
            out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask_g)
            out = out.view(b, self.num_heads, t, self.head_dim)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None, attn_mask: Tensor | None = None
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, attn_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """HF's ``LlamaModel``: embeddings, the decoder blocks and the final norm (the ``model.`` prefix)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)

    def forward(
        self, input_ids: Tensor, positions: Tensor, cache: KVCache | None, attn_mask: Tensor | None = None
    ) -> Tensor:
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, cache, attn_mask)
        return self.norm(x)


def document_positions(document_ids: Tensor) -> Tensor:
    """RoPE positions ``[B, T]`` that restart at 0 where a row's document id changes.

    A packed row holds each sequence as one contiguous run of its id (lm/train/packing.py writes them so).
    """
    t = document_ids.size(-1)
    index = torch.arange(t, device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[..., 1:] = document_ids[..., 1:] != document_ids[..., :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-1).values
    return index - first


def run_body(
    body: LlamaBody,
    input_ids: Tensor,
    positions: Tensor | None,
    cache: KVCache | None,
    document_ids: Tensor | None,
) -> Tensor:
    """``body``'s hidden states with default positions, or the mask and positions of packed rows."""
    mask = None
    if document_ids is not None:
        if cache is not None:
            raise ValueError("document_ids are for packed training rows, not for a KV cache")
        mask = document_attention_mask(document_ids)
        if positions is None:
            positions = document_positions(document_ids)
    if positions is None:
        b, t = input_ids.shape
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
    return body(input_ids, positions, cache, mask)


def document_attention_mask(document_ids: Tensor) -> Tensor:
    """Boolean ``[B, 1, T, T]`` (True = attend): causal, and only within the query's own document."""
    t = document_ids.size(-1)
    causal = torch.ones(t, t, dtype=torch.bool, device=document_ids.device).tril()
    same = document_ids.unsqueeze(-1) == document_ids.unsqueeze(-2)
    return (same & causal).unsqueeze(1)


class Transformer(nn.Module):
    """The decoder with a language-model head; parameter names are ``LlamaForCausalLM``'s."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaBody(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def hidden_states(
        self,
        input_ids: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        document_ids: Tensor | None = None,
    ) -> Tensor:
        """The final-norm hidden states ``[B, T, hidden]``; ``forward`` without the output projection.

        The engine uses this to project only the positions it samples from (one per request), which
        saves a ``T x vocab`` matmul per prompt.
        """
        return run_body(self.model, input_ids, positions, cache, document_ids)

    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        document_ids: Tensor | None = None,
        output_index: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, T, vocab]`` for ``input_ids`` ``[B, T]``.

        ``positions`` (``[B, T]``, default ``0..T-1``) are the RoPE positions. Without a cache, attention
        is causal over the T tokens; with one, the cache returns the keys/values and the mask to use.
        ``document_ids`` (``[B, T]``) pack several sequences in a row: each token attends only to
        earlier tokens of its own sequence, and positions restart per sequence (unless given).
        ``output_index`` (flat indices into ``B x T``) projects only those positions and returns logits
        ``[N, vocab]``: a fine-tune that trains one token in ten skips nine tenths of the output layer
        (through ``forward``, so DDP and FSDP2 see the call).
        """
        hidden = self.hidden_states(input_ids, positions, cache, document_ids)
        if output_index is not None:
            hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, output_index)
        return self.lm_head(hidden)

    def loss(self, input_ids: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
        """Mean next-token cross-entropy in float32 over targets != ignore_index."""
        logits = self(input_ids)
        return F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index
        )

    @torch.no_grad()
    def init_weights(self, seed: int = 0, scale_residual: bool = True) -> None:
        """Normal(0, init_std) for every matrix, ones for norms; deterministic given ``seed``.

        ``scale_residual`` divides the std of the projections that write into the residual stream
        (o_proj, down_proj) by sqrt(2 * num_layers), as GPT-2 does, so the residual's variance does not
        grow with depth. Parameters on the meta device are skipped (materialise them first).
        """
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.num_layers) if scale_residual else std
        generators: dict[torch.device, torch.Generator] = {}

        def normal_(p: Tensor, s: float) -> None:
            if p.device.type == "meta":
                return
            gen = generators.get(p.device)
            if gen is None:
                gen = generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            nn.init.normal_(p, mean=0.0, std=s, generator=gen)

        for name, module in self.named_modules():
            if isinstance(module, nn.Embedding):
                normal_(module.weight, std)
            elif isinstance(module, nn.Linear):
                if module is self.lm_head and self.config.tie_embeddings:
                    continue
                is_residual = name.endswith("o_proj") or name.endswith("down_proj")
                normal_(module.weight, residual_std if is_residual else std)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)

    def num_params(self) -> int:
        """Distinct parameters actually held (tied matrices once); equals ``config.num_params()``."""
        return sum(p.numel() for p in self.parameters())
