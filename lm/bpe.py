"""Train our own byte-level BPE, then hand it to tiktoken.

The Hugging Face ``tokenizers`` trainer (Rust, multi-threaded, well kept) learns the merges; its
merge list becomes tiktoken ranks (single bytes 0-255 keep their byte value, each new merged token
gets the next rank in merge order), and from then on tiktoken does all encoding. The pre-tokenizer
is the same split regex tiktoken will use (GPT-4's by default) followed by byte-level mapping without
its own regex, so the trainer sees exactly the pieces tiktoken will encode.

    from lm.bpe import train_bpe
    tok = train_bpe(texts, vocab_size=4096)   # 4,086 ranks + 10 special tokens = 4,096 ids
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from lm.tokenizer import (
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerError,
    bytes_to_unicode,
    hf_pattern,
    split_pattern,
)

# A pair must be seen at least this often to become a merge: one-off pairs would spend vocabulary
# on noise (the tokenizers library's own default is 0; 2 is what GPT-2-style trainers use).
DEFAULT_MIN_FREQUENCY = 2


def train_hf_bpe(
    texts: Iterable[str],
    n_ranks: int,
    pat_str: str,
    min_frequency: int = DEFAULT_MIN_FREQUENCY,
    show_progress: bool = True,
    length: int | None = None,
) -> Any:
    """Train a byte-level BPE with ``n_ranks`` tokens (the 256 bytes included); a ``tokenizers.Tokenizer``."""
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    if n_ranks < 257:
        raise TokenizerError(f"a byte-level BPE needs more than 256 tokens, got {n_ranks}")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(hf_pattern(pat_str)), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_ranks,
        min_frequency=min_frequency,
        show_progress=show_progress,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    hf.train_from_iterator(texts, trainer=trainer, length=length)
    return hf


def mergeable_ranks_from_hf(hf: Any) -> dict[bytes, int]:
    """tiktoken ranks from a trained byte-level BPE: bytes first (rank = byte value), then merges in
    order. A merge that rebuilds an existing token (the trainer can reach one token two ways) adds
    no rank: tiktoken keeps the first, which is what merge priority means."""
    model = json.loads(hf.to_str())["model"]
    decode = {c: b for b, c in bytes_to_unicode().items()}

    def to_bytes(piece: str) -> bytes:
        try:
            return bytes(decode[c] for c in piece)
        except KeyError as e:
            raise TokenizerError(f"token {piece!r} is not byte-level (character {e})") from None

    ranks = {bytes([b]): b for b in range(256)}
    for merge in model["merges"]:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        left, right = to_bytes(a), to_bytes(b)
        if left not in ranks or right not in ranks:
            raise TokenizerError(f"merge {a!r} + {b!r} uses a token that no earlier merge made")
        ranks.setdefault(left + right, len(ranks))
    return ranks


def train_bpe(
    texts: Iterable[str],
    vocab_size: int = 4096,
    pattern: str = "cl100k",
    min_frequency: int = DEFAULT_MIN_FREQUENCY,
    special_tokens: Sequence[str] = SPECIAL_TOKENS,
    name: str | None = None,
    show_progress: bool = True,
    length: int | None = None,
) -> Tokenizer:
    """Train on ``texts`` and return our tiktoken-backed tokenizer.

    ``vocab_size`` counts every id, special tokens included, so it is the model's embedding size. A
    small corpus may run out of pairs seen ``min_frequency`` times first; the result is then smaller.
    """
    n_ranks = vocab_size - len(special_tokens)
    hf = train_hf_bpe(texts, n_ranks, split_pattern(pattern), min_frequency, show_progress, length)
    ranks = mergeable_ranks_from_hf(hf)
    return Tokenizer.from_ranks(
        name or f"raychat-bpe-{len(ranks) + len(special_tokens)}",
        split_pattern(pattern),
        ranks,
        special_tokens=special_tokens,
        source=f"trained:bpe vocab_size={vocab_size} pattern={pattern}",
    )
