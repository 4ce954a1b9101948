"""Settings of pretraining (``pretrain:`` in the run config).

Every default is the tiny CPU demo: a ~1-2M-parameter model that trains on the tiny world's tokens in a
minute or two on 2 cores. GPU runs change the model dial (``model.depth``), the batch, ``use_gpu`` and
``num_workers`` and keep everything else.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from lm.config_base import StrictModel
from pipelines.train.config import TrainingConfig

if TYPE_CHECKING:  # lm.model imports torch; the config is read by every CLI start, so import it late
    from lm.model import ModelConfig


class ModelSpec(StrictModel):
    """The model: nanochat's depth dial, with any size written out to override the dial's rule.

    ``depth`` set: ``ModelConfig.from_depth(depth, vocab_size, **overrides)`` (hidden = 64 x depth, ...).
    ``depth`` null: ``ModelConfig(**fields)`` with ModelConfig's own defaults for fields left null.
    """

    depth: int | None = Field(2, ge=1, description="layers; every other size follows from it (lm/model.py)")
    vocab_size: int | None = Field(
        None, gt=0, description="null = the tokenizer's vocabulary (tokens/index.json)"
    )
    hidden_size: int | None = Field(None, gt=0)
    num_layers: int | None = Field(None, gt=0)
    num_heads: int | None = Field(None, gt=0)
    num_kv_heads: int | None = Field(None, gt=0)
    intermediate_size: int | None = Field(None, gt=0)
    max_seq_len: int | None = Field(None, gt=0, description="null = pretrain.seq_len")
    rope_theta: float | None = Field(None, gt=0)
    rms_norm_eps: float | None = Field(None, gt=0)
    tie_embeddings: bool | None = None
    init_std: float | None = Field(None, gt=0)

    def build(self, vocab_size: int, seq_len: int) -> ModelConfig:
        """The ModelConfig for a tokenizer of ``vocab_size`` ids trained at ``seq_len``."""
        from lm.model import ModelConfig

        fields = self.model_dump(exclude={"depth", "vocab_size"}, exclude_none=True)
        fields.setdefault("max_seq_len", seq_len)
        vocab = self.vocab_size or vocab_size
        if self.vocab_size is not None and self.vocab_size < vocab_size:
            raise ValueError(
                f"pretrain.model.vocab_size ({self.vocab_size}) is smaller than the tokenizer's "
                f"vocabulary ({vocab_size}); leave it null to use the tokenizer's"
            )
        if self.depth is not None:
            config = ModelConfig.from_depth(self.depth, vocab, **fields)
        else:
            config = ModelConfig(vocab_size=vocab, **fields)
        if config.max_seq_len < seq_len:
            raise ValueError(
                f"pretrain.model.max_seq_len ({config.max_seq_len}) is shorter than pretrain.seq_len ({seq_len})"
            )
        return config


class PretrainConfig(TrainingConfig):
    """``pretrain:``: the shared training fields (pipelines/train/config.py: workers, strategy, AdamW,
    schedule, checkpoints, tracking, fault injection) plus the model, the batch and the data's."""

    model: ModelSpec = ModelSpec()

    # -- batch and length ------------------------------------------------------------------------
    seq_len: int = Field(128, ge=8, description="tokens per training sequence")
    global_batch_tokens: int = Field(
        2048, ge=8, description="tokens per optimizer step over all workers (nanochat d20: 524,288)"
    )
    micro_batch_size: int = Field(
        16, ge=1, description="sequences per worker per forward/backward; accumulation makes up the rest"
    )
    max_steps: int = Field(150, ge=1, description="optimizer steps (ignored when max_tokens is set)")
    max_tokens: int | None = Field(
        None, ge=1, description="train for ceil(max_tokens / global_batch_tokens) steps instead of max_steps"
    )
    eval_tokens: int = Field(
        16384,
        ge=1,
        description="validation tokens per pass (capped to the val split; the same tokens each time)",
    )
    output_name: str = Field("base", description="the model is written to <run>/models/<output_name>")

    @model_validator(mode="after")
    def _check_batch(self) -> PretrainConfig:
        self.grad_accum_steps  # noqa: B018 - raises a clear message when the batch does not divide
        return self

    @property
    def micro_batch_tokens(self) -> int:
        """Tokens of one forward/backward over all workers."""
        return self.micro_batch_size * self.seq_len * self.num_workers

    @property
    def grad_accum_steps(self) -> int:
        per_micro = self.micro_batch_tokens
        if self.global_batch_tokens % per_micro:
            lower = max(per_micro, self.global_batch_tokens // per_micro * per_micro)
            raise ValueError(
                f"global_batch_tokens ({self.global_batch_tokens}) must be a multiple of micro_batch_size x "
                f"seq_len x num_workers = {self.micro_batch_size} x {self.seq_len} x {self.num_workers} = "
                f"{per_micro} tokens (one micro-step on every worker); e.g. {lower} or {lower + per_micro}"
            )
        return self.global_batch_tokens // per_micro

    @property
    def sequences_per_step(self) -> int:
        return self.global_batch_tokens // self.seq_len

    @property
    def total_steps(self) -> int:
        if self.max_tokens is not None:
            return math.ceil(self.max_tokens / self.global_batch_tokens)
        return self.max_steps
