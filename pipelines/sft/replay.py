"""Pretraining text replayed inside a fine-tune, so the chat model keeps what its base knew.

Why: SFT trains on assistant tokens only, and within a few hundred steps the model stops predicting
the text it was pretrained on. Measured on quality-cpu (2026-12-07): the base model's loss on an
entity's name inside a question separates names its pages mention from names never seen with an AUC
of 0.95 (5.9 against 12.0 nats per token); after SFT the same measure gives 0.55. That familiarity is
what "I don't know" has to read, and the facts bound to the names are what questions try to extract.
Mixing windows of the pretraining tokens into the fine-tune, with the loss on every token, is the
standard remedy for that forgetting (InstructGPT's "pretraining mix", replay in continual learning).

The windows are whole rows (``seq_len + 1`` tokens) read from the run's ``tokens/train`` split at
seeded random starts; they join the conversations as examples whose every token is trained, so
packing, the epoch order, resume and the data fingerprint treat them like any other example. The
validation conversations stay conversations only, so ``val_loss`` keeps its meaning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.errors import ConfigError
from pipelines.pretrain.data import TokenSplit
from pipelines.sft.data import Examples
from pipelines.tokenize.shards import TokenShardError, read_index


def replay_windows(examples: Examples, share: float, seq_len: int) -> int:
    """How many pretraining windows give ``share`` times the conversations' tokens."""
    return int(round(share * len(examples.ids) / (seq_len + 1)))


def replay_examples(tokens_dir: Path, vocab_size: int, count: int, seq_len: int, seed: int) -> Examples:
    """``count`` windows of ``seq_len + 1`` pretraining tokens, every token trained.

    ``vocab_size`` is the fine-tuned tokenizer's: tokens made by another tokenizer would be noise to
    the model, so a mismatch (or no tokens at all) is a ConfigError naming the directory."""
    try:
        made_with = read_index(tokens_dir).vocab_size
        split = TokenSplit.open(tokens_dir, "train")
    except TokenShardError as e:
        raise ConfigError(
            f"sft.pretrain_replay needs the run's pretraining tokens: {e} (or set sft.pretrain_replay to 0)"
        ) from None
    if made_with != vocab_size:
        raise ConfigError(
            f"sft.pretrain_replay: the tokens in {tokens_dir} were made by a tokenizer of {made_with} ids, "
            f"the model being fine-tuned uses {vocab_size}; replay needs the same tokenizer"
        )
    width = seq_len + 1
    if split.num_tokens < width:
        raise ConfigError(
            f"sft.pretrain_replay: {tokens_dir} holds {split.num_tokens} tokens, less than one row"
        )
    starts = np.random.default_rng([seed, 7]).integers(0, split.num_tokens - width + 1, size=count)
    ids = np.concatenate([np.zeros(0, np.int32), *(split.read(int(s), width) for s in starts)]).astype(
        np.int32
    )
    offsets = np.arange(count + 1, dtype=np.int64) * width
    return Examples(ids, np.ones(len(ids), dtype=np.uint8), offsets)


def with_replay(examples: Examples, replay: Examples) -> Examples:
    """The conversations followed by the replay windows, as one set of examples."""
    if not len(replay):
        return examples
    offsets = np.concatenate([examples.offsets, replay.offsets[1:] + examples.offsets[-1]])
    return Examples(
        np.concatenate([examples.ids, replay.ids]),
        np.concatenate([examples.mask, replay.mask]),
        offsets,
        examples.skipped,
        examples.cut,
    )
