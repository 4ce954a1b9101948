"""A trained reward model as a reward source: ``ModelScorer(model_dir).score(items)``.

    from lm.reward_scorer import ModelScorer
    scorer = ModelScorer("runs/tiny/models/rm", weight=0.5)
    scorer.score([RewardItem(id=0, prompt="Who made you?", completion="The raychat project built me.")])
    # [ItemScore(id=0, reward=0.5 * r, components={"rm": r})]

It is an ``lm.rewards.Scorer``, so it runs in the RL reward pool like the rule rewards
(``actors.rewards.RewardPool.for_model``: actors with ``num_gpus``, the batch cut into chunks), and its
``ItemScore`` merges with the rules' (``lm.rewards.merge_scores``: the rewards add, ``components``
keeps the raw score under ``"rm"``); ``weight`` is ``RewardConfig.rm.weight``.

What it scores: the item's conversation (``messages``, else ``prompt`` as one user message) and the
completion as the assistant's reply, rendered by the chat format up to the reply's ``<|im_end|>``
(``lm.reward_model.reward_input_ids``), which is what the reward stage trained on.

Batching: a chunk's sequences are sorted by length and run as right-padded batches of at most
``batch_tokens`` tokens: similar lengths side by side waste little padding, and plain causal rows keep
the fast attention kernel on a GPU (packed rows need an explicit mask). A sequence longer than the
model's context keeps the prompt's latest exchanges (the chat format's rule); when the reply alone is
too long, its last ``max_tokens`` tokens are scored and ``stats["truncated"]`` counts it.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from lm.chat import ChatFormat, ConversationTooLong
from lm.chat_messages import ChatFormatError
from lm.rewards import ItemScore, RewardItem, failed_score


class ModelScorer:
    """One reward model, loaded on first use (or by ``start``, which the pool's actors call)."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        weight: float = 1.0,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        batch_tokens: int = 16384,
        max_tokens: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.model_dir = str(model_dir)
        self.weight = weight
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.batch_tokens = batch_tokens
        self.max_tokens = max_tokens
        self.threads = threads
        self.stats: Counter[str] = Counter()
        self.model: Any = None

    def start(self) -> None:
        """Load the model and tokenizer (a missing or corrupt directory raises CheckpointError or
        TokenizerError, naming the file)."""
        if self.model is not None:
            return
        from lm.checkpoint import load_reward_model
        from lm.tokenizer import load_tokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        self.model, self.meta = load_reward_model(self.model_dir, device=self.device, dtype=self.dtype)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.chat = ChatFormat(self.tokenizer)
        self.pad_id = self.chat.special_ids.get("<|pad|>", self.tokenizer.eot_id)
        context = self.model.config.max_seq_len
        self.max_tokens = min(self.max_tokens or context, context)

    # -- the Scorer protocol ------------------------------------------------------------------------

    def score(self, items: Sequence[RewardItem]) -> list[ItemScore]:
        """One score per item, in order; an item that cannot be rendered is an ``error`` (score 0)."""
        self.start()
        started = time.perf_counter()
        out: list[ItemScore | None] = [None] * len(items)
        todo, sequences = [], []
        for i, item in enumerate(items):
            try:
                sequences.append(self.input_ids(item))
                todo.append(i)
            except (ChatFormatError, ValueError) as e:
                out[i] = failed_score(item.id, "error", f"reward model: {e}")
        try:
            raw = self.rewards(sequences)
        except Exception as e:  # noqa: BLE001 - a broken batch (out of memory, say) fails its items only
            raw = None
            for i in todo:
                out[i] = failed_score(items[i].id, "error", f"reward model: {type(e).__name__}: {e}")
        seconds = (time.perf_counter() - started) / max(1, len(items))
        if raw is not None:
            for i, r in zip(todo, raw, strict=True):
                out[i] = ItemScore(items[i].id, self.weight * r, "ok", {"rm": r}, None, seconds)
        scores = [s for s in out if s is not None]
        self.stats["items"] += len(items)
        self.stats["errors"] += sum(s.status != "ok" for s in scores)
        return scores

    # -- the parts ------------------------------------------------------------------------------------

    def input_ids(self, item: RewardItem) -> list[int]:
        """The ids the model scores for one item (module docstring)."""
        from lm.reward_model import reward_input_ids

        prompt = item.messages if item.messages is not None else [{"role": "user", "content": item.prompt}]
        reply = [{"role": "assistant", "content": item.completion}]
        try:
            return reward_input_ids(self.chat, prompt, [reply], self.max_tokens)[0]
        except ConversationTooLong:
            self.stats["truncated"] += 1
            return reward_input_ids(self.chat, prompt, [reply])[0][-self.max_tokens :]

    @torch.no_grad()
    def rewards(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """The model's score at the last token of each sequence (each at most ``max_tokens`` long)."""
        self.start()
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = [0.0] * len(sequences)
        start = 0
        while start < len(order):
            end = start + 1  # the batch grows while its padded size stays within batch_tokens
            while end < len(order) and (end - start + 1) * len(sequences[order[end]]) <= self.batch_tokens:
                end += 1
            batch = order[start:end]
            width = len(sequences[batch[-1]])
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(sequences[i])] = torch.as_tensor(sequences[i], dtype=torch.long)
            lengths = torch.tensor([len(sequences[i]) for i in batch])
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16):
                scores = self.model(ids.to(self.device))
            picked = scores[torch.arange(len(batch)), (lengths - 1).to(self.device)].float().tolist()
            for i, value in zip(batch, picked, strict=True):
                out[i] = value
            self.stats["batches"] += 1
            self.stats["tokens"] += int(lengths.sum())
            self.stats["padded_tokens"] += len(batch) * width
            start = end
        return out
