"""Per-request sampling settings and one vectorised sampler for a whole batch of rows.

The sampler does the same work for 1 or 64 rows: a handful of tensor operations over ``[rows, vocab]``
and no Python loop over the vocabulary. Randomness is one uniform number per row drawn from that
request's own seeded ``torch.Generator`` (inverse-CDF sampling), so a request's samples depend only on
its seed and its logits, not on which other requests share the batch.

Which distribution the reported logprob belongs to: ``log_softmax`` of the model's raw logits (float32,
temperature 1, no top-k/top-p truncation), evaluated at the sampled token. That is the policy's own
log-probability, what RL (GRPO/PPO importance ratios, KL terms) needs; it is not the log-probability
under the tempered/truncated distribution the token was actually drawn from.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from lm.config_base import StrictModel


class SamplingParams(StrictModel):
    """How one request is sampled; the same fields as vLLM's ``SamplingParams`` where they overlap."""

    temperature: float = Field(1.0, ge=0.0, description="0 means greedy (argmax)")
    top_k: int = Field(0, ge=0, description="keep the k most likely tokens; 0 = off")
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="nucleus: smallest set with this much mass; 1 = off"
    )
    max_tokens: int = Field(64, ge=1, description="most output tokens (sampled and tool-injected together)")
    stop_token_ids: list[int] = Field(
        default_factory=list, description="extra stop tokens beside the engine's EOS"
    )
    ignore_eos: bool = Field(False, description="do not stop at the engine's EOS tokens (benchmarks)")
    seed: int | None = Field(
        None, description="seed of this request's generator; None = derived from the engine's"
    )
    logprobs: bool = Field(False, description="report the logprob of every sampled token")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def sample(
    logits: Tensor,
    temperature: Tensor,
    top_k: Tensor,
    top_p: Tensor,
    uniforms: Tensor,
    want_logprobs: bool,
) -> tuple[Tensor, Tensor | None]:
    """Next tokens ``[R]`` (and their logprobs, see the module docstring) for logits ``[R, V]``.

    ``temperature``/``top_p`` are float ``[R]``, ``top_k`` long ``[R]`` (0 = off), ``uniforms`` float
    ``[R]`` in [0, 1) from each request's generator; rows with temperature 0 take the argmax and ignore
    their uniform.
    """
    logits = logits.float()
    tokens = logits.argmax(dim=-1)
    sampled = temperature > 0
    if bool(sampled.any()):
        rows = sampled.nonzero().squeeze(1)
        tokens[rows] = _draw(logits[rows], temperature[rows], top_k[rows], top_p[rows], uniforms[rows])
    logprobs = None
    if want_logprobs:
        logprobs = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    return tokens, logprobs


def _draw(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, uniforms: Tensor) -> Tensor:
    """Draw each row by the method its own settings call for, never by its batch mates' settings.

    Inverse-CDF sampling maps one uniform to a token through the order of the CDF, so the order must
    depend on the row alone: plain rows use vocabulary order, top-k-only rows the top-k order, and rows
    with top-p a full descending sort. Rows are grouped by method, one vectorised draw per group.
    """
    tokens = torch.empty(logits.size(0), dtype=torch.long, device=logits.device)
    nucleus = top_p < 1.0
    k_only = (top_k > 0) & ~nucleus
    plain = (top_k == 0) & ~nucleus
    for rows, method in ((plain, "plain"), (k_only, "top_k"), (nucleus, "sort")):
        if bool(rows.any()):
            idx = rows.nonzero().squeeze(1)
            tokens[idx] = _draw_group(
                method, logits[idx], temperature[idx], top_k[idx], top_p[idx], uniforms[idx]
            )
    return tokens


def _draw_group(
    method: str, logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, uniforms: Tensor
) -> Tensor:
    vocab = logits.size(-1)
    scaled = logits / temperature[:, None]
    if method == "plain":  # the inverse CDF needs no sorting
        values, order = scaled, None
    elif method == "top_k":
        k_max = int(top_k.max().clamp(max=vocab))
        values, order = torch.topk(scaled, k_max, dim=-1)  # sorted, only as wide as the largest k
    else:
        values, order = torch.sort(scaled, dim=-1, descending=True)
    probs = torch.softmax(values, dim=-1)
    if method != "plain" and bool((top_k > 0).any()):
        k = torch.where(top_k > 0, top_k, vocab)[:, None]
        ranks = torch.arange(values.size(-1), device=values.device)[None, :]
        probs = probs.masked_fill(ranks >= k, 0.0)
    if method == "sort":
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens; the first is always kept
        probs = probs.masked_fill(before >= top_p[:, None] * probs.sum(-1, keepdim=True), 0.0)
    cdf = probs.cumsum(-1)
    target = (uniforms * cdf[:, -1])[:, None]
    index = torch.searchsorted(cdf, target).clamp(max=values.size(-1) - 1)
    # searchsorted may land on a zero-probability entry only through rounding at the very end
    index = torch.minimum(index, (probs > 0).long().cumsum(-1).argmax(-1, keepdim=True))
    return index.squeeze(1) if order is None else order.gather(1, index).squeeze(1)
