"""Settings of pretraining (``pretrain:`` in the run config).

Every default is the tiny CPU demo: a ~1-2M-parameter model that trains on the tiny world's tokens in a
minute or two on 2 cores. GPU runs change the model dial (``model.depth``), the batch, ``use_gpu`` and
``num_workers`` and keep everything else.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from lm.config_base import StrictModel

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


class PretrainConfig(StrictModel):
    # -- the model and the workers ---------------------------------------------------------------
    model: ModelSpec = ModelSpec()
    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL and bf16 autocast; else CPU and gloo")
    resources_per_worker: dict[str, float] | None = Field(
        None,
        description="Ray resources of each worker, e.g. {CPU: 2} (torch then uses 2 threads) or "
        "{CPU: 8, GPU: 1}; null = Ray's default ({CPU: 1}, or {GPU: 1} with use_gpu)",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicate the model; fsdp: shard it with FSDP2 (fully_shard per block)"
    )
    compile: bool = Field(
        False, description="torch.compile the model (worth it on GPU; slow to start on CPU)"
    )

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

    # -- optimizer and schedule (AdamW; warmup, then decay to min_lr_ratio x lr) -------------------
    lr: float = Field(
        3e-3, gt=0, description="peak learning rate (tiny models take ~3e-3; GPT-2 small ~6e-4)"
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="final lr / peak lr (Chinchilla-style 10x decay)"
    )
    warmup_steps: int = Field(15, ge=0, description="linear warmup from 0 to lr")
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(
        0.1, ge=0, description="AdamW decay on matrices (GPT-3/Llama: 0.1); none on norms"
    )
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas (GPT-3/Llama: 0.9, 0.95)")
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; null = no clipping")

    # -- evaluation, checkpoints, failures -------------------------------------------------------
    eval_every: int = Field(50, ge=1, description="steps between validation passes (also at the last step)")
    eval_tokens: int = Field(
        16384,
        ge=1,
        description="validation tokens per pass (capped to the val split; the same tokens each time)",
    )
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints (also at the last step)")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept under <run>/checkpoints")
    max_failures: int = Field(
        3, ge=0, description="worker-group restarts (from the latest checkpoint) before giving up"
    )
    log_every: int = Field(1, ge=1, description="steps between progress lines")

    # -- bookkeeping -----------------------------------------------------------------------------
    tracking: Literal["none", "tensorboard", "wandb"] = Field(
        "none",
        description="also send metrics to TensorBoard or Weights & Biases (pip install raychat[tracking])",
    )
    wandb_project: str = "raychat"
    peak_flops: float | None = Field(
        None,
        gt=0,
        description="peak FLOP/s of one device for MFU; null = the table in pipelines/pretrain/mfu.py",
    )
    output_name: str = Field("base", description="the model is written to <run>/models/<output_name>")
    seed: int | None = Field(None, description="weights and data order; null = the run's seed")

    # -- testing -----------------------------------------------------------------------------------
    fail_at_step: int | None = Field(
        None,
        ge=1,
        description="testing only: the worker of rank fail_rank SIGKILLs itself when it reaches this step, "
        "on the first attempt only (a marker file under the checkpoints records that it happened), so "
        "FailureConfig's restart-and-resume path runs for real",
    )
    fail_rank: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check_batch(self) -> PretrainConfig:
        self.grad_accum_steps  # noqa: B018 - raises a clear message when the batch does not divide
        if self.fail_at_step is not None and self.fail_rank >= self.num_workers:
            raise ValueError(f"fail_rank ({self.fail_rank}) must be < num_workers ({self.num_workers})")
        if (
            self.use_gpu
            and self.resources_per_worker is not None
            and not self.resources_per_worker.get("GPU")
        ):
            raise ValueError("use_gpu is set but resources_per_worker asks for no GPU")
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
