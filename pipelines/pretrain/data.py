"""Training and validation batches straight from the memory-mapped token shards.

Why not Ray Data here: the shards are already tokenized, fixed-width arrays; a worker reads the rows
it needs with two slices of an ``np.memmap`` (no copy of the corpus, no object store, nothing to keep
in step between workers), and the order is a pure function of (seed, position). That purity is what
makes resume exact: a checkpoint stores one integer, ``samples_seen``, and a restarted run - with any
number of workers - computes the very batch that would have come next.

The order: a split is cut into ``(tokens - 1) // seq_len`` windows of ``seq_len + 1`` tokens (inputs
and shifted targets; consecutive windows share one token). Epoch ``e`` visits every window once in a
permutation seeded by ``(seed, e)``. The global sample stream is epoch 0's permutation, then epoch 1's,
and so on; optimizer step ``s`` takes stream positions ``[s * B, (s + 1) * B)`` with ``B`` sequences
per step, and rank ``r`` of ``W`` takes the ``r``-th contiguous ``B / W`` of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from pipelines.tokenize.shards import open_split


class TokenSplit:
    """The shards of one split seen as one long read-only array."""

    def __init__(self, shards: Sequence[np.ndarray]) -> None:
        self.shards = [s for s in shards if len(s)]
        sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_tokens = int(self.starts[-1])

    @classmethod
    def open(cls, tokens_dir: str | os.PathLike[str], split: str) -> TokenSplit:
        return cls(open_split(tokens_dir, split))

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` as int64 (a window may span two or more shards)."""
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) outside a split of {self.num_tokens}")
        out = np.empty(length, dtype=np.int64)
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        filled = 0
        while filled < length:
            offset = start + filled - int(self.starts[i])
            piece = self.shards[i][offset : offset + length - filled]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            i += 1
        return out


class SampleOrder:
    """Which window comes at each position of the global sample stream (see the module docstring)."""

    def __init__(self, num_windows: int, seed: int) -> None:
        if num_windows < 1:
            raise ValueError("the split holds no complete window")
        self.num_windows, self.seed = num_windows, seed
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch, self._perm = epoch, rng.permutation(self.num_windows)
        return self._perm

    def windows(self, position: int, count: int) -> np.ndarray:
        """Window ids at stream positions ``[position, position + count)``."""
        epochs, index = np.divmod(np.arange(position, position + count, dtype=np.int64), self.num_windows)
        out = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            out[here] = self._permutation(int(epoch))[index[here]]
        return out


class TrainBatches:
    """One rank's micro-batches of one optimizer step, as numpy ``(inputs, targets)`` pairs."""

    def __init__(
        self,
        split: TokenSplit,
        seq_len: int,
        sequences_per_step: int,
        micro_batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        per_rank, rest = divmod(sequences_per_step, world_size)
        if rest or per_rank % micro_batch_size:
            raise ValueError(
                f"{sequences_per_step} sequences per step do not split into {world_size} ranks x "
                f"micro-batches of {micro_batch_size}"
            )
        num_windows = (split.num_tokens - 1) // seq_len
        if num_windows < sequences_per_step:
            raise ValueError(
                f"the train split has {split.num_tokens:,} tokens, {num_windows} windows of {seq_len}: fewer "
                f"than one step's {sequences_per_step} sequences; lower global_batch_tokens or seq_len"
            )
        self.split, self.seq_len = split, seq_len
        self.sequences_per_step, self.per_rank, self.micro = sequences_per_step, per_rank, micro_batch_size
        self.rank = rank
        self.order = SampleOrder(num_windows, seed)

    @property
    def epoch_sequences(self) -> int:
        return self.order.num_windows

    def step_batches(self, samples_seen: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's micro-batches of the step that starts at stream position ``samples_seen``."""
        first = samples_seen + self.rank * self.per_rank
        windows = self.order.windows(first, self.per_rank)
        rows = np.stack([self.split.read(int(w) * self.seq_len, self.seq_len + 1) for w in windows])
        return [
            (rows[i : i + self.micro, :-1], rows[i : i + self.micro, 1:])
            for i in range(0, self.per_rank, self.micro)
        ]


def eval_windows(split: TokenSplit, seq_len: int, eval_tokens: int) -> int:
    """How many consecutive windows from the start of the val split one validation pass reads."""
    available = (split.num_tokens - 1) // seq_len
    if available < 1:
        raise ValueError(
            f"the val split has {split.num_tokens} tokens, fewer than one sequence of {seq_len} + 1; "
            "tokenize with a larger validation share or lower seq_len"
        )
    return max(1, min(available, eval_tokens // seq_len))


def eval_batches(
    split: TokenSplit, seq_len: int, num_windows: int, batch_size: int, rank: int, world_size: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """This rank's share (windows ``rank, rank + W, ...``) of the fixed validation windows."""
    mine = list(range(rank, num_windows, world_size))
    out = []
    for i in range(0, len(mine), batch_size):
        rows = np.stack([split.read(w * seq_len, seq_len + 1) for w in mine[i : i + batch_size]])
        out.append((rows[:, :-1], rows[:, 1:]))
    return out


def eval_targets(split: TokenSplit, seq_len: int, num_windows: int) -> np.ndarray:
    """Every target token one validation pass scores (for the unigram baseline)."""
    return split.read(1, num_windows * seq_len)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy in nats of the tokens' own frequency distribution: the loss of the best model that
    ignores context, fitted to these very tokens (so a model beating it has learned context)."""
    counts = np.bincount(tokens, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def token_byte_lengths(tokenizer, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id stands for; 0 for special tokens and unused ids.

    Bits-per-byte divides the loss on ordinary tokens by the bytes they encode, which makes it
    comparable across tokenizers (nanochat's and the Pile's convention); special tokens such as
    ``<|endoftext|>`` encode no text, so they are left out of both sums.
    """
    special = set(tokenizer.special_tokens.values())
    lengths = np.zeros(vocab_size, dtype=np.int32)
    for i in range(min(vocab_size, tokenizer.vocab_size)):
        if i in special:
            continue
        try:
            lengths[i] = len(tokenizer.token_bytes(i))
        except KeyError:  # a hole in the ranks
            lengths[i] = 0
    return lengths
