"""Settings of the reward-model stage (``rm:`` in the run config).

``RMConfig`` inherits the shared training fields (pipelines/train/config.py: workers, strategy, AdamW,
schedule, checkpoints, tracking, fault injection), so ``rm.lr`` means what ``pretrain.lr`` means; it
adds where the model starts, which preference pairs it learns from, how they are held out and batched,
and how long it trains. Every default is the tiny CPU demo's. Reading this module imports no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lm.config_base import StrictModel
from pipelines.sft.source_config import check_sized_one_way
from pipelines.sft.world_config import ARITHMETIC_LAYOUTS
from pipelines.train.config import TrainingConfig

PREFERENCE_FORMATS = ("hh", "sharegpt", "pairs")
# the pairs the tiny world makes (pipelines/rm/world_pairs.py), each judged by its own accuracy
WORLD_PAIR_KINDS = (
    "identity",  # the configured identity over claiming another assistant or maker
    "wrong_answer",  # a known fact's answer over a wrong one (another value, a near-miss number)
    "answer_over_refusal",  # a known fact's answer over "I don't know"
    "refusal_over_made_up",  # "I don't know" over a made-up answer, for facts nobody knows
    "arithmetic_final",  # a worked solution over the same working with another final answer
    "arithmetic_step",  # a worked solution over one whose last step is miscopied (answer consistent)
)


class Sized(StrictModel):
    """How much of a source goes into the training mixture: ``epochs`` without ``rm.mixture_size``,
    ``weight`` (a share of ``mixture_size``) with it - as in the SFT mixture (pipelines/sft/sources.py)."""

    weight: float = Field(1.0, gt=0, description="share of the mixture when rm.mixture_size is set")
    epochs: float = Field(1.0, gt=0, description="passes over the source's training pairs (no mixture_size)")


class PreferenceSourceConfig(Sized):
    """A file source of chosen/rejected pairs (pipelines/rm/preferences.py)."""

    path: str | list[str] = Field(description="file, glob or folder (or a list); JSONL, JSON or parquet")
    format: Literal[("auto", *PREFERENCE_FORMATS)] = Field(  # type: ignore[valid-type]
        "auto",
        description="hh: Anthropic HH-RLHF transcripts; sharegpt: conversations + chosen/rejected turns "
        "(LLaMA-Factory); pairs: prompt/chosen/rejected as messages or text (TRL); auto: told per file",
    )
    name: str | None = Field(None, description="name in metrics and reports; default: the file's stem")
    max_pairs: int | None = Field(None, ge=1, description="use at most this many pairs (the first)")
    heldout_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="pairs held out for evaluation, chosen by a hash of the prompt's first turn",
    )
    max_heldout: int | None = Field(300, ge=0, description="at most this many held-out pairs")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        first = self.path if isinstance(self.path, str) else self.path[0]
        stem = first.rstrip("/").rsplit("/", 1)[-1]
        for ext in (".gz", ".zst", ".bz2", ".xz", ".jsonl", ".json", ".parquet"):
            stem = stem.removesuffix(ext)
        return stem or first


class WorldPairsConfig(Sized):
    """Pairs from the tiny world (``<run>/world``), split as the SFT data is: training pairs from the
    training entities and problems, held-out pairs from held-out entities, phrasings and problems only."""

    enabled: bool = Field(True, description="make pairs from <run>/world when the run has one")
    kinds: list[str] = Field(list(WORLD_PAIR_KINDS), description="which kinds of pairs (WORLD_PAIR_KINDS)")
    per_kind: int | None = Field(
        200, ge=1, description="training pairs per kind at most (a seeded sample); null = all the world makes"
    )
    heldout_per_kind: int | None = Field(100, ge=1, description="held-out pairs per kind at most")
    answer_style: Literal["short", "sentence", "mixed"] = Field(
        "mixed", description="answers as '1698.' or 'Velimir Talwright was born in 1698.' (mixed: both)"
    )
    fresh_names: int = Field(
        400, ge=0, description="never-seen names asked about in training pairs of refusal_over_made_up"
    )
    arithmetic_layouts: list[str] = Field(
        ["reasoning_calc", "reasoning"],
        min_length=1,
        description="solution layouts of the arithmetic pairs (pipelines/sft/world_config.py), taken in turn",
    )

    @model_validator(mode="after")
    def _known(self) -> WorldPairsConfig:
        bad = [k for k in self.kinds if k not in WORLD_PAIR_KINDS]
        if bad:
            raise ValueError(f"kinds: unknown {bad}; kinds are {list(WORLD_PAIR_KINDS)}")
        bad = [x for x in self.arithmetic_layouts if x not in ARITHMETIC_LAYOUTS]
        if bad:
            raise ValueError(f"arithmetic_layouts: unknown {bad}; layouts are {list(ARITHMETIC_LAYOUTS)}")
        return self


class RMConfig(TrainingConfig):
    """``rm:``: where the model starts, its preference pairs, its batches and how long it trains."""

    init: str | None = Field(
        None,
        description="the model to start from: a language model (the reward head is added) or a reward "
        "model to train further; null = <run>/models/sft when it exists, else <run>/models/base",
    )
    world: WorldPairsConfig = WorldPairsConfig()
    sources: list[PreferenceSourceConfig] = Field(
        default_factory=list, description="preference files (hh-rlhf, LLaMA-Factory DPO, TRL-style pairs)"
    )
    mixture_size: int | None = Field(
        None, ge=1, description="training pairs in the mixture split by source weight; null = by epochs"
    )
    max_bad_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a source with more unusable records than this is an error (wrong format?)",
    )
    seq_len: int | None = Field(
        None,
        ge=16,
        description="tokens per sequence (prompt + reply); null = the init model's context length; longer "
        "extends it (RoPE has no position table, so the new positions are learned here, as SFT does)",
    )
    batch_pairs: int = Field(32, ge=1, description="pairs per optimizer step over all workers")
    micro_batch_pairs: int = Field(32, ge=1, description="pairs per worker per forward/backward")
    epochs: float = Field(2.0, gt=0, description="passes over the training mixture (ignored with max_steps)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; null = from epochs")
    output_name: str = Field("rm", description="the model is written to <run>/models/<output_name>")

    # reward-model defaults: the pretraining peak would wreck the body the head reads from
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    warmup_steps: int = Field(10, ge=0, description="linear warmup from 0 to lr")
    eval_every: int = Field(
        25, ge=1, description="steps between held-out evaluations (also at the last step)"
    )
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints (also at the last step)")

    @model_validator(mode="after")
    def _check(self) -> RMConfig:
        per_micro = self.micro_batch_pairs * self.num_workers
        if self.batch_pairs % per_micro:
            raise ValueError(
                f"batch_pairs ({self.batch_pairs}) must be a multiple of micro_batch_pairs x num_workers = "
                f"{self.micro_batch_pairs} x {self.num_workers} = {per_micro}"
            )
        sized = [("world", self.world), *((f"sources.{i}", s) for i, s in enumerate(self.sources))]
        check_sized_one_way(self.mixture_size, sized, size_key="rm.mixture_size")
        return self

    @property
    def grad_accum_steps(self) -> int:
        return self.batch_pairs // (self.micro_batch_pairs * self.num_workers)
