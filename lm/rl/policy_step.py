"""One learner rank's GRPO update over a batch of completions, on lm/train's Trainer (no Ray).

    step = PolicyStep(trainer, algo, temperature=1.0, micro_batch_tokens=8192, norm_length=160)
    metrics = step.train(completions)          # every rank calls it with the same batch

A ``Completion`` is what the rollouts recorded: the prompt, the generated tokens (with ``forced``
marking the tool results the engine injected), the generator's log-probability of each sampled token
(the behaviour policy, at the sampling temperature), its group-normalised advantage and, when a
reference model is used, the reference's log-probabilities of the same tokens.

What a step does: ``algo.minibatches`` cuts the batch into optimizer steps (``updates_per_batch``
passes, ``minibatch_size`` completions each); each rank takes its share of a minibatch (sorted by
length and dealt round-robin, so the ranks' token counts are close), pads it into micro-batches of
about ``micro_batch_tokens`` (the ranks agree on how many, as DDP/FSDP2 need), scores the sampled
tokens under the current weights at the sampling temperature (``lm.scoring.gather_logprobs``) and
calls ``lm.rl.algos.policy_loss`` with the sums lm/train's Trainer expects: the loss is aggregated
with a divisor of 1 and the Trainer divides once by the count over every micro-batch and rank
(tokens for ``token-mean``, sequences otherwise), so the aggregation is the whole batch's, however it
was split. Tokens that do not train (prompt, padding, forced tool results) are masked out of the loss
and of every metric. With ``decoupled_ppo`` and more than one update per batch, the proximal
log-probabilities (the weights before this batch's first update) are computed first, without grad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lm.rl.algos import AlgoConfig, PolicyBatch, entropy_from_logits, minibatches, policy_loss
from lm.scoring import gather_logprobs
from lm.train.losses import IGNORE_INDEX, Loss
from lm.train.trainer import Trainer

ENTROPY_CHUNK = 2048  # rows of logits turned into a distribution's entropy at a time
METRIC_KEYS = (
    "clip_frac",
    "clip_frac_high",
    "clip_frac_low",
    "ratio_mean",
    "approx_kl",
    "is_weight_mean",
    "is_capped_frac",
    "behaviour_kl",
    "kl",
    "entropy",
)


@dataclass
class Completion:
    prompt_ids: list[int]
    token_ids: list[int]
    forced: list[bool]
    logprobs: list[float]  # the generator's (behaviour) log-probs of token_ids; forced ones ignored
    advantage: float
    ref_logprobs: list[float] | None = None
    version: int = 0

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.token_ids) - 1


def micro_batch(
    items: list[Completion], pad_id: int, device: torch.device, with_reference: bool | None = None
) -> dict[str, Tensor]:
    """Right-padded tensors ``[B, T]`` over (prompt + completion)[:-1] -> [1:]; every per-token value
    sits at the position that predicts its token. An empty list gives one masked row (a rank's share
    of a micro-batch can be empty). ``with_reference`` (default: every item has reference log-probs)
    adds the reference's."""
    width = max((len(c) for c in items), default=1)
    rows = max(len(items), 1)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    targets = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.bool)
    behaviour = torch.zeros((rows, width))
    reference = torch.zeros((rows, width))
    advantages = torch.zeros(rows)
    has_ref = all(c.ref_logprobs is not None for c in items) if with_reference is None else with_reference
    for i, c in enumerate(items):
        seq = c.prompt_ids + c.token_ids
        n, start = len(seq) - 1, len(c.prompt_ids) - 1
        input_ids[i, :n] = torch.tensor(seq[:-1])
        targets[i, :n] = torch.tensor(seq[1:])
        out = slice(start, start + len(c.token_ids))
        mask[i, out] = ~torch.tensor(c.forced, dtype=torch.bool)
        behaviour[i, out] = torch.tensor(c.logprobs, dtype=torch.float32)
        if has_ref and c.ref_logprobs is not None:
            reference[i, out] = torch.tensor(c.ref_logprobs, dtype=torch.float32)
        advantages[i] = c.advantage
    targets = torch.where(mask, targets, IGNORE_INDEX)
    batch = {
        "input_ids": input_ids,
        "targets": targets,
        "mask": mask,
        "behaviour": behaviour,
        "advantages": advantages,
    }
    if has_ref:
        batch["reference"] = reference
    return {k: v.to(device) for k, v in batch.items()}


class PolicyStep:
    """The GRPO update of one rank (module docstring)."""

    def __init__(
        self,
        trainer: Trainer,
        algo: AlgoConfig,
        *,
        temperature: float,
        micro_batch_tokens: int,
        pad_id: int = 0,
        norm_length: int | None = None,
        seed: int = 0,
    ) -> None:
        self.trainer, self.temperature = trainer, temperature
        # seq-mean-token-sum-norm divides by a constant; the micro-batches' widths are not one
        self.algo = (
            algo
            if algo.norm_length or norm_length is None
            else algo.model_copy(update={"norm_length": norm_length})
        )
        self.micro_batch_tokens, self.pad_id = micro_batch_tokens, pad_id
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world = trainer.rank, trainer.world_size

    # -- batches -----------------------------------------------------------------------------------

    def _my_share(self, items: list[Completion]) -> list[Completion]:
        ordered = sorted(items, key=len, reverse=True)
        return ordered[self.rank :: self.world]

    def _split(self, mine: list[Completion]) -> list[list[Completion]]:
        """Micro-batches of about ``micro_batch_tokens`` padded tokens; every rank makes as many."""
        padded = len(mine) * max((len(c) for c in mine), default=0)  # sorted longest first: an upper bound
        n = max(1, math.ceil(padded / self.micro_batch_tokens))
        if self.world > 1:
            count = torch.tensor([n], dtype=torch.long, device=self.trainer.device)
            dist.all_reduce(count, op=dist.ReduceOp.MAX)
            n = int(count.item())
        size = math.ceil(len(mine) / n) if mine else 0
        return [mine[i * size : (i + 1) * size] for i in range(n)] if size else [[] for _ in range(n)]

    # -- the loss ------------------------------------------------------------------------------------

    def _scores(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Log-probs and entropies ``[B, T]`` at the trained positions (0 elsewhere). Only those
        positions go through the output layer (``output_index``): a rollout's prompt and tool results
        cost no ``vocab``-wide logits, and memory stays ~ tokens trained x vocab, not B x T x vocab."""
        mask = batch["mask"]
        index = mask.reshape(-1).nonzero().squeeze(1)
        logits = model(batch["input_ids"], output_index=index)  # [N, vocab]
        picked = gather_logprobs(logits, batch["targets"].reshape(-1)[index], self.temperature)
        if not index.numel():  # an empty share: still a graph through the model (DDP's all-reduce)
            picked = logits.float().sum(-1)
        if self.algo.entropy_coef > 0:
            entropy = entropy_from_logits(logits / self.temperature)
        else:
            with torch.no_grad():
                entropy = torch.cat(
                    [entropy_from_logits(c.detach() / self.temperature) for c in logits.split(ENTROPY_CHUNK)]
                )
        flat = torch.zeros(mask.numel(), dtype=picked.dtype, device=picked.device)
        logprobs = flat.index_put((index,), picked).view_as(mask)
        entropies = flat.index_put((index,), entropy.float()).view_as(mask)
        return logprobs, entropies

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Loss:
        logprobs, entropy = self._scores(model, batch)
        mask = batch["mask"]
        policy_batch = PolicyBatch(
            behaviour_logprobs=batch["behaviour"],
            advantages=batch["advantages"],
            mask=mask,
            proximal_logprobs=batch.get("proximal"),
            ref_logprobs=batch.get("reference"),
        )
        total, metrics = policy_loss(
            self.algo, logprobs, policy_batch, entropy=entropy, num_tokens=1.0, num_seqs=1.0
        )
        tokens = mask.sum()
        count = tokens if self.algo.aggregation == "token-mean" else (mask.sum(-1) > 0).sum()
        weight = float(tokens)
        sums: dict[str, Tensor | float] = {"_tokens": weight}
        for key in METRIC_KEYS:
            if key in metrics:
                sums[key] = metrics[key] * weight
        return Loss(total, count, tokens=int(batch["input_ids"].numel()), sums=sums)

    @torch.no_grad()
    def _proximal(self, parts: list[list[Completion]]) -> list[dict[str, Tensor]]:
        out = []
        self.trainer.module.eval()
        for part in parts:
            batch = micro_batch(part, self.pad_id, self.trainer.device, self._with_ref)
            with self.trainer.autocast():
                logprobs, _ = self._scores(self.trainer.forward_module, batch)
            batch["proximal"] = logprobs.float()
            out.append(batch)
        return out

    # -- the step ----------------------------------------------------------------------------------

    def train(self, completions: list[Completion]) -> dict[str, float]:
        """Every optimizer step over the batch; the metrics averaged over them (tokens-weighted within
        a step), with ``optimizer_steps`` and the tokens trained."""
        if not completions:
            raise ValueError("a learner step needs at least one completion")
        needs_proximal = self.algo.policy_loss == "decoupled_ppo" and (
            self.algo.updates_per_batch > 1
            or (self.algo.minibatch_size is not None and self.algo.minibatch_size < len(completions))
        )
        self._with_ref = all(c.ref_logprobs is not None for c in completions)
        index_of = {id(c): i for i, c in enumerate(completions)}
        proximal: dict[int, Tensor] = {}
        if needs_proximal:  # the weights before this batch's first update, per completion
            parts = self._split(self._my_share(completions))
            for part, batch in zip(parts, self._proximal(parts), strict=True):
                for row, c in enumerate(part):
                    proximal[index_of[id(c)]] = batch["proximal"][row].cpu()
        steps: list[dict[str, float]] = []
        for indices in minibatches(len(completions), self.algo, self.generator):
            chosen = [completions[int(i)] for i in indices]
            batches = []
            for part in self._split(self._my_share(chosen)):
                batch = micro_batch(part, self.pad_id, self.trainer.device, self._with_ref)
                if needs_proximal:
                    width = batch["input_ids"].shape[1]
                    prox = torch.zeros_like(batch["behaviour"])
                    for row, c in enumerate(part):
                        p = proximal[index_of[id(c)]]
                        prox[row, : min(width, len(p))] = p[:width].to(prox.device)
                    batch["proximal"] = prox
                batches.append(batch)
            values = self.trainer.train_step(batches, self.loss)
            weight = values.pop("_tokens", 0.0) or 1.0  # trained tokens / count
            for key in METRIC_KEYS:
                if key in values:
                    values[key] = values[key] / weight
            values["trained_tokens"] = values.pop("count") * weight
            steps.append(values)
        out = {k: sum(s[k] for s in steps) / len(steps) for k in steps[0] if k != "tokens"}
        out["trained_tokens"] = sum(s["trained_tokens"] for s in steps)
        out["optimizer_steps"] = len(steps)
        return out
