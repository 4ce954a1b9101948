"""Settings of supervised fine-tuning (``sft:`` in the run config) and of the chat evaluation.

``SFTConfig`` inherits the shared training fields (pipelines/train/config.py: workers, strategy,
AdamW, schedule, checkpoints, tracking, fault injection), so ``sft.lr`` means what ``pretrain.lr``
means; it adds where the model starts, which data it sees, how rows are packed and how long it
trains. Every default is the tiny CPU demo's; ``configs/quality-cpu.yaml`` shows a larger setting.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt, field_validator, model_validator

from lm.config_base import StrictModel
from pipelines.sft.source_config import SourceConfig
from pipelines.sft.world_config import ARITHMETIC_LAYOUTS, KINDS
from pipelines.train.config import TrainingConfig

# world conversation kinds (pipelines/sft/world_data.py) the SFT stage trains on by default; the
# refusal kinds ("idk", "search_miss") are what the idk stage adds, so models/sft is the "before"
SFT_KINDS = ("identity", "qa", "no_search", "search", "search_fresh", "passage", "arithmetic", "probes")
IDK_KINDS = ("idk", "search_miss")

# new tokens per held-out set: a search reply holds its injected results (k hits of max_chars), an
# arithmetic or probe reply its working and calculator results
DEFAULT_MAX_NEW_TOKENS = {
    "known_eval": 48,
    "unknown_eval": 48,
    "identity_eval": 64,
    "search_eval": 448,
    "arithmetic_test": 256,
    "probes_test": 224,
}


class ChatEvalConfig(StrictModel):
    """How a chat model is evaluated on the held-out sets (pipelines/chat_eval.py): greedy replies,
    generated through Ray Data on one engine actor that has the search and calculator tools."""

    enabled: bool = Field(True, description="evaluate the model on the world's held-out sets after training")
    max_per_set: int | None = Field(
        None, ge=1, description="questions per held-out set (a seeded sample); null = all of them"
    )
    max_new_tokens: dict[str, PositiveInt] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_NEW_TOKENS),
        description="new tokens per reply, by held-out set (tool results count)",
    )
    batch_size: int = Field(32, ge=1, description="prompts per Ray Data batch sent to the engine actor")
    concurrency: int = Field(2, ge=1, description="Ray Data UDF actors feeding the engine actor at once")
    engine_batch_size: int = Field(64, ge=1, description="samples the engine actor generates at once")
    examples: int = Field(2, ge=0, description="example conversations per condition kept for the report")


class AblationConfig(StrictModel):
    """Answer-first vs reasoning-first (and the calculator): the same model fine-tuned on the same
    arithmetic problems in each layout, for the same number of steps, scored on the test problems."""

    enabled: bool = Field(True, description="run the arithmetic layout ablation inside the sft stage")
    layouts: list[str] = Field(
        ["answer_first", "reasoning", "reasoning_calc"],
        min_length=1,
        description="layouts of pipelines/sft/world_data.py's ablation files",
    )
    epochs: float = Field(3.0, gt=0, description="passes over the ablation problems")
    lr: float | None = Field(None, gt=0, description="null = sft.lr")

    @field_validator("layouts")
    @classmethod
    def _known_layouts(cls, layouts: list[str]) -> list[str]:
        bad = [x for x in layouts if x not in ARITHMETIC_LAYOUTS]
        if bad:
            raise ValueError(f"unknown layouts {bad}; choose from {list(ARITHMETIC_LAYOUTS)}")
        return layouts


class SFTConfig(TrainingConfig):
    """``sft:``: where the model starts, its data, its rows, and how long it trains."""

    init: str | None = Field(
        None,
        description="the model to fine-tune: a model directory in the Llama layout (ours or an imported "
        "checkpoint); null = <run>/models/base",
    )
    tokenizer: str | None = Field(
        None, description="tokenizer spec (lm/tokenizer.py); null = the one saved with the init model"
    )
    world_kinds: list[str] = Field(
        list(SFT_KINDS),
        description="the tiny world's conversation kinds to train on when <run>/world exists ([] = none)",
    )
    world_epochs: dict[str, float] = Field(
        default_factory=dict,
        description="passes over a world kind's conversations per epoch of the mixture (default 1 each), "
        "e.g. {arithmetic: 2}: a small model needs the cold-start solutions more than once to start RL "
        "with right answers to learn from",
    )
    sources: list[SourceConfig] = Field(
        default_factory=list, description="more chat data (pipelines/sft/sources.py), mixed with the world's"
    )
    mixture_size: int | None = Field(
        None, ge=1, description="examples in the mixture split by source weight; null = by epochs"
    )
    pretrain_replay: float = Field(
        0.0,
        ge=0,
        le=10,
        description="windows of the run's pretraining tokens mixed in, as a multiple of the conversations' "
        "tokens, every token trained (pipelines/sft/replay.py: keeps what the base knew; 0 = off)",
    )
    seq_len: int = Field(512, ge=16, description="tokens per packed row; longer conversations are cut")
    batch_rows: int = Field(8, ge=1, description="packed rows per optimizer step over all workers")
    micro_batch_rows: int = Field(8, ge=1, description="rows per worker per forward/backward")
    epochs: float = Field(3.0, gt=0, description="passes over the mixture (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; null = from epochs")
    val_conversations: int = Field(
        200, ge=0, description="conversations held out of training for the validation loss"
    )
    output_name: str = Field("sft", description="the model is written to <run>/models/<output_name>")
    eval: ChatEvalConfig = ChatEvalConfig()
    ablation: AblationConfig = AblationConfig()

    # fine-tuning defaults: a lower peak than pretraining, a short warmup
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    warmup_steps: int = Field(10, ge=0, description="linear warmup from 0 to lr")
    eval_every: int = Field(25, ge=1, description="steps between validation passes (also at the last step)")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints (also at the last step)")

    @field_validator("world_kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; kinds are {list(KINDS)}")
        return kinds

    @field_validator("world_epochs")
    @classmethod
    def _known_epoch_kinds(cls, epochs: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in epochs if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; kinds are {list(KINDS)}")
        if bad := [k for k, v in epochs.items() if v <= 0]:
            raise ValueError(f"world_epochs must be above 0 (got {bad})")
        return epochs

    @model_validator(mode="after")
    def _check_rows(self) -> SFTConfig:
        self.grad_accum_steps  # noqa: B018 - raises a clear message when the rows do not divide
        return self

    @property
    def grad_accum_steps(self) -> int:
        per_micro = self.micro_batch_rows * self.num_workers
        if self.batch_rows % per_micro:
            raise ValueError(
                f"batch_rows ({self.batch_rows}) must be a multiple of micro_batch_rows x num_workers = "
                f"{self.micro_batch_rows} x {self.num_workers} = {per_micro}"
            )
        return self.batch_rows // per_micro
