"""Settings of the tokenizer and the tokenize stage."""

from __future__ import annotations

from pydantic import Field, field_validator

from lm.config_base import StrictModel
from lm.split_patterns import PATTERNS


class TokenizeConfig(StrictModel):
    tokenizer: str = Field(
        "train",
        description="'train' (our own byte-level BPE on the clean corpus), 'gpt2:<dir>' (vocab.bpe + "
        "encoder.json), 'tiktoken:<file>' (a .tiktoken ranks file), or a saved tokenizer/model directory",
    )
    vocab_size: int = Field(
        4096,
        ge=512,
        le=2**32,
        description="ids of a trained tokenizer, special tokens included (4,096 for the demo, 32k-65k for "
        "real runs; up to 65,536 keeps shards uint16)",
    )
    pattern: str | None = Field(
        None,
        description="split regex (gpt2, cl100k = GPT-4's, o200k): of a trained tokenizer (None = cl100k), and "
        "of a tiktoken: file (None = guessed from its name, else cl100k)",
    )
    min_frequency: int = Field(2, ge=1, description="a pair seen fewer times never becomes a merge")
    train_max_documents: int | None = Field(
        200_000, ge=1, description="documents sampled (by hash, from the train split) to train the tokenizer"
    )
    train_max_bytes: int | None = Field(
        500_000_000,
        ge=1,
        description="UTF-8 bytes of text the tokenizer trains on at most (~1-2 GB is plenty)",
    )
    val_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of documents in the val split, chosen by a hash of the id"
    )
    shard_tokens: int = Field(
        50_000_000, ge=1024, description="tokens per shard file (100 MB of uint16); the last one is smaller"
    )
    merge_memory_mb: int = Field(
        1024, ge=16, description="memory the driver may use to merge the encoded parts into shards"
    )
    batch_size: int = Field(
        2048, ge=1, description="documents per encode call; each call's tokens are one part file per split"
    )
    num_threads: int | None = Field(
        None,
        ge=1,
        description="tiktoken threads (and Ray CPUs) per file task; None = the cluster's CPUs shared out "
        "over the files, at most one node's",
    )
    seed: int = Field(
        0, description="salt of the train/val split hash and of the tokenizer's training sample"
    )
    input: str | None = Field(None, min_length=1, description="clean parquet folder; None = <run>/data/clean")
    text_column: str = "text"
    id_column: str = Field("id", description="what the split hash reads; rows without one hash their text")
    write_clean: bool = Field(
        True,
        description="write the clean parquet with token_count filled to <run>/data/clean (in place, "
        "atomically, when the input is that folder)",
    )

    @field_validator("pattern")
    @classmethod
    def _known_pattern(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if v.lower() not in PATTERNS:
            raise ValueError(f"unknown split pattern {v!r}; known: {', '.join(PATTERNS)}")
        return v.lower()
