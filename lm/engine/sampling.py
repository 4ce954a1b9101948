"""Per-request sampling settings and one vectorised sampler for a whole batch of rows.

The sampler does the same work for 1 or 64 rows: a handful of tensor operations over ``[rows, vocab]``
and no Python loop over the vocabulary. Randomness is one uniform number per row drawn from that
request's own seeded ``torch.Generator`` (inverse-CDF sampling), so a request's samples depend only on
its seed and its logits, not on which other requests share the batch.

Two log-probabilities are reported for each sampled token (when ``logprobs`` is on):
- ``logprobs`` (raw): ``log_softmax`` of the model's logits (float32, temperature 1, no truncation) at
  the token. The model's own confidence, what evaluation and "I don't know" probing read, and what a
  learner recomputes when it scores tokens at temperature 1.
- ``sampled_logprobs``: the log-probability under the distribution the token was actually drawn from:
  logits divided by the temperature, then top-k and top-p truncation, renormalised (vLLM's
  ``logprobs_mode="processed_logprobs"``). This is the behaviour policy's probability, so an
  importance ratio ``pi_theta(token) / mu(token)`` computed against it is exact. Greedy rows
  (temperature 0) draw from no distribution; they report the raw value there, as vLLM does.
The RL stage uses ``sampled_logprobs`` as the rollout (behaviour) logprobs and scores the learner's
policy with the same temperature; it samples without top-k/top-p, since truncation makes the sampled
distribution one the learner's full-vocabulary softmax cannot reproduce.
"""

from __future__ import annotations

from typing import NamedTuple

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
    n: int = Field(1, ge=1, description="samples of this prompt; they share one prefill (GRPO's group)")
    stop_token_ids: list[int] = Field(
        default_factory=list, description="extra stop tokens beside the engine's EOS"
    )
    ignore_eos: bool = Field(False, description="do not stop at the engine's EOS tokens (benchmarks)")
    seed: int | None = Field(
        None,
        description="seed of this request's generator (sample j uses seed + j, as vLLM does); "
        "None = derived from the engine's seed and the request id",
    )
    logprobs: bool = Field(
        False,
        description="report every sampled token's logprobs, raw and sampled (see lm/engine/sampling.py)",
    )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampled(NamedTuple):
    """Next tokens ``[R]``; the two logprobs ``[R]`` (module docstring) when asked for, else None."""

    tokens: Tensor
    logprobs: Tensor | None
    sampled_logprobs: Tensor | None


def sample(
    logits: Tensor,
    temperature: Tensor,
    top_k: Tensor,
    top_p: Tensor,
    uniforms: Tensor,
    want_logprobs: bool,
) -> Sampled:
    """Next tokens for logits ``[R, V]``.

    ``temperature``/``top_p`` are float ``[R]``, ``top_k`` long ``[R]`` (0 = off), ``uniforms`` float
    ``[R]`` in [0, 1) from each request's generator; rows with temperature 0 take the argmax and ignore
    their uniform.
    """
    logits = logits.float()
    tokens = logits.argmax(dim=-1)
    sampled = temperature > 0
    rows, drawn_lp = None, None
    if bool(sampled.any()):
        rows = sampled.nonzero().squeeze(1)
        drawn, drawn_lp = _draw(
            logits[rows], temperature[rows], top_k[rows], top_p[rows], uniforms[rows], want_logprobs
        )
        tokens[rows] = drawn
    if not want_logprobs:
        return Sampled(tokens, None, None)
    raw = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    processed = raw if rows is None else raw.index_put((rows,), drawn_lp)
    return Sampled(tokens, raw, processed)


def _draw(
    logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, uniforms: Tensor, want_logprobs: bool
) -> tuple[Tensor, Tensor | None]:
    """Draw each row by the method its own settings call for, never by its batch mates' settings.

    Inverse-CDF sampling maps one uniform to a token through the order of the CDF, so the order must
    depend on the row alone: plain rows use vocabulary order, top-k-only rows the top-k order, and rows
    with top-p a full descending sort. Rows are grouped by method, one vectorised draw per group.
    """
    tokens = torch.empty(logits.size(0), dtype=torch.long, device=logits.device)
    logprobs = torch.empty(logits.size(0), device=logits.device) if want_logprobs else None
    nucleus = top_p < 1.0
    k_only = (top_k > 0) & ~nucleus
    plain = (top_k == 0) & ~nucleus
    for rows, method in ((plain, "plain"), (k_only, "top_k"), (nucleus, "sort")):
        if bool(rows.any()):
            idx = rows.nonzero().squeeze(1)
            tok, lp = _draw_group(
                method, logits[idx], temperature[idx], top_k[idx], top_p[idx], uniforms[idx], want_logprobs
            )
            tokens[idx] = tok
            if logprobs is not None:
                logprobs[idx] = lp
    return tokens, logprobs


def _draw_group(
    method: str,
    logits: Tensor,
    temperature: Tensor,
    top_k: Tensor,
    top_p: Tensor,
    uniforms: Tensor,
    want_logprobs: bool,
) -> tuple[Tensor, Tensor | None]:
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
    keep = None  # entries the truncation keeps (None: all of them)
    if method != "plain" and bool((top_k > 0).any()):
        k = torch.where(top_k > 0, top_k, vocab)[:, None]
        ranks = torch.arange(values.size(-1), device=values.device)[None, :]
        keep = ranks < k
        probs = probs.masked_fill(~keep, 0.0)
    if method == "sort":
        before = probs.cumsum(-1) - probs  # mass of the more likely tokens; the first is always kept
        nucleus = before < top_p[:, None] * probs.sum(-1, keepdim=True)
        keep = nucleus if keep is None else keep & nucleus
        probs = probs.masked_fill(~nucleus, 0.0)
    cdf = probs.cumsum(-1)
    target = (uniforms * cdf[:, -1])[:, None]
    index = torch.searchsorted(cdf, target).clamp(max=values.size(-1) - 1)
    # searchsorted may land on a zero-probability entry only through rounding at the very end
    index = torch.minimum(index, (probs > 0).long().cumsum(-1).argmax(-1, keepdim=True))
    logprobs = None
    if want_logprobs:  # log of the renormalised truncated distribution, computed in log space
        kept = values if keep is None else values.masked_fill(~keep, float("-inf"))
        logprobs = (values.gather(1, index) - torch.logsumexp(kept, dim=-1, keepdim=True)).squeeze(1)
    tokens = index.squeeze(1) if order is None else order.gather(1, index).squeeze(1)
    return tokens, logprobs
