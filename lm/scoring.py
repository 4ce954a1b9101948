"""Log-probabilities of given tokens under a model: the reference model's KL term, an RL learner's
importance ratios, distillation, and evaluation all need them.

- ``gather_logprobs(logits, targets)``: per-token log p(target) from logits, in float32, without
  keeping a ``[tokens, vocab]`` log-softmax alive longer than one chunk (a loss calls this on its own
  forward, so gradients flow through it).
- ``token_logprobs(model, input_ids, targets)``: the same from a model's forward, for a padded or
  packed batch.
- ``sequence_logprobs(model, sequences)``: ragged token lists in, one array of per-token log-probs
  per sequence out; sequences are packed into rows with document masks (lm/train/packing.py), so
  short ones cost no padding, and each is computed exactly as if alone.
- ``log_softmax_rows`` / ``kl_divergence`` / ``top_k_kl_divergence``: whole distributions (or a
  teacher's top-k and the rest), for logit distillation (lm/train/logit_distill.py).
- ``kl_estimate``: the per-token KL estimators of RL (k1, k2, k3) from two sets of sampled-token
  log-probs.

Log-probs are of the raw distribution (``temperature`` 1) unless a temperature is given; the engines'
logprobs are raw too, so a learner's ratio ``exp(new - old)`` compares like with like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lm.train.losses import IGNORE_INDEX
from lm.train.packing import pack

CHUNK_TOKENS = 4096  # rows of logits turned into log-probs at a time


def gather_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(targets) under ``softmax(logits / temperature)``: ``[..., T]`` float32; 0 where a target
    is IGNORE_INDEX (or negative)."""
    shape = targets.shape
    flat_logits = logits.reshape(-1, logits.size(-1))
    flat_targets = targets.reshape(-1)
    out = []
    for start in range(0, flat_targets.numel(), CHUNK_TOKENS):
        chunk = flat_logits[start : start + CHUNK_TOKENS].float()
        if temperature != 1.0:
            chunk = chunk / temperature
        t = flat_targets[start : start + CHUNK_TOKENS]
        # cross_entropy is log_softmax + gather in one kernel, with ignore_index giving 0
        t = torch.where(t < 0, IGNORE_INDEX, t)
        out.append(-F.cross_entropy(chunk, t, ignore_index=IGNORE_INDEX, reduction="none"))
    result = torch.cat(out) if out else flat_targets.new_zeros(0, dtype=torch.float32)
    return result.view(shape)


def token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    targets: Tensor | None = None,
    *,
    document_ids: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Per-token log-probs ``[B, T]`` of ``targets`` (default: ``input_ids`` shifted left by one, the
    last position IGNORE_INDEX) given ``input_ids``; gradients flow unless called under no_grad."""
    if targets is None:
        targets = torch.full_like(input_ids, IGNORE_INDEX)
        targets[:, :-1] = input_ids[:, 1:]
    logits = model(input_ids, document_ids=document_ids)
    return gather_logprobs(logits, targets, temperature)


@torch.no_grad()
def sequence_logprobs(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    *,
    row_len: int | None = None,
    rows_per_batch: int = 8,
    temperature: float = 1.0,
    device: torch.device | str | None = None,
) -> list[np.ndarray]:
    """For each sequence ``s``, ``[log p(s[1] | s[:1]), ..., log p(s[-1] | s[:-1])]`` (float32, length
    ``len(s) - 1``), batched: sequences are packed into rows of ``row_len`` tokens (default: the
    longest sequence, at least 256), ``rows_per_batch`` rows per forward."""
    if device is None:
        device = next(model.parameters()).device
    examples = [(list(s[:-1]), list(s[1:])) for s in sequences if len(s) > 1]
    longest = max((len(e[0]) for e in examples), default=1)
    row_len = row_len or max(longest, 256)
    if longest > row_len:
        raise ValueError(f"a sequence of {longest + 1} tokens does not fit rows of {row_len} (+1)")
    rows, _ = pack(examples, row_len)
    scores = []
    for r in range(0, len(rows.input_ids), rows_per_batch):
        part = slice(r, r + rows_per_batch)
        ids, tgt, docs = (
            torch.from_numpy(a[part]).to(device) for a in (rows.input_ids, rows.targets, rows.document_ids)
        )
        scores.append(token_logprobs(model, ids, tgt, document_ids=docs, temperature=temperature).cpu())
    flat = torch.cat(scores).numpy() if scores else np.zeros((0, row_len), dtype=np.float32)
    packed = iter(_unpack(flat, rows.document_ids))
    return [next(packed) if len(s) > 1 else np.zeros(0, dtype=np.float32) for s in sequences]


def _unpack(values: np.ndarray, document_ids: np.ndarray) -> list[np.ndarray]:
    """Each packed example's values, in packing order (rows in order, documents in order in a row)."""
    out = []
    for row, docs in zip(values, document_ids, strict=True):
        for doc in range(int(docs.max()) + 1):
            out.append(row[docs == doc].astype(np.float32))
    return out


def log_softmax_rows(
    model: nn.Module,
    input_ids: Tensor,
    *,
    document_ids: Tensor | None = None,
    output_index: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Full float32 log-distributions ``[B, T, vocab]`` over the next token (for logit distillation);
    with ``output_index`` (flat positions into ``B x T``, lm/model.py) only those rows: ``[N, vocab]``."""
    logits = model(input_ids, document_ids=document_ids, output_index=output_index).float()
    return log_softmax_tempered(logits, temperature)


def log_softmax_tempered(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``log_softmax(logits / temperature)`` in float32 over the last axis."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.log_softmax(dim=-1)


def kl_divergence(p_logprobs: Tensor, q_logprobs: Tensor) -> Tensor:
    """KL(p || q) per position from two ``[..., vocab]`` log-distributions (forward KL, teacher p)."""
    return (p_logprobs.exp() * (p_logprobs - q_logprobs)).sum(dim=-1)


def top_k_kl_divergence(p_logprobs: Tensor, q_logprobs: Tensor, k: int) -> Tensor:
    """KL(p || q) per position over ``k + 1`` outcomes: p's ``k`` likeliest tokens, and "any other token"
    (the rest of each distribution's mass, one bucket).

    Why this form: it is the sparse target an offline logit cache stores (a teacher's top-k), kept a
    true KL: 0 when ``q == p``, never negative, and the student still pays for mass it puts outside
    the teacher's top-k. With ``k >= vocab - 1`` it equals the full ``kl_divergence``.
    """
    if k >= p_logprobs.size(-1) - 1:
        return kl_divergence(p_logprobs, q_logprobs)
    top_p, ids = p_logprobs.topk(k, dim=-1)
    top_q = q_logprobs.gather(-1, ids)
    p = torch.cat([top_p, _rest(top_p)], dim=-1)
    q = torch.cat([top_q, _rest(top_q)], dim=-1)
    return kl_divergence(p, q)


def _rest(top_logprobs: Tensor) -> Tensor:
    """log(1 - sum(exp(top))) as a ``[..., 1]`` column: -expm1 keeps a tiny rest exact, the floor keeps
    log (and its gradient) finite when the top tokens hold all the mass."""
    inside = torch.logsumexp(top_logprobs, dim=-1, keepdim=True).clamp(max=0.0)
    return torch.log((-torch.expm1(inside)).clamp(min=1e-30))


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    Schulman's estimators, as RL libraries name them: ``k1`` = log r (unbiased, noisy), ``k2`` =
    (log r)^2 / 2, ``k3`` = exp(-log r) - 1 + log r (unbiased, always >= 0; GRPO's choice), where
    log r = logprobs - ref_logprobs.
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; use k1, k2 or k3")
