"""Settings of the "I don't know" stage (``idk:`` in the run config).

The refusal data of the tiny world itself (refusals about thousands of fresh names, never-stated
facts, failed searches) is configured in ``sft_data.idk``; this section is the probing (the Llama 3
recipe) and the retraining. The retraining uses ``sft:``'s settings (learning rate, rows, epochs), so
"before" and "after" differ only in the data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lm.config_base import StrictModel


class IDKStageConfig(StrictModel):
    samples: int = Field(4, ge=1, le=32, description="answers sampled per probe question (k)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the probe answers")
    max_new_tokens: int = Field(48, ge=1, description="new tokens per probe answer")
    min_correct_share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="the model 'knows' a fact when at least this share of its k answers is correct "
        "(1.0: correct and consistent, as in Llama 3)",
    )
    max_probe_questions: int | None = Field(
        None, ge=1, description="probe at most this many questions (a seeded sample); null = all"
    )
    known_answers: bool = Field(
        True,
        description="also write the facts the model knows as answered conversations, so refusals come "
        "with examples of answering (without them the model learns to refuse everything)",
    )
    validation_entities: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="share of the probe entities kept out of the probing, as the validation set of known "
        "entities (seen in pretraining, never in SFT or IDK training): tune on it, not on the held-out sets",
    )
    validation_fresh: int = Field(
        200, ge=0, description="fresh names never used in training, the validation set of unknown entities"
    )
    init: Literal["base", "sft"] = Field(
        "base",
        description="base: retrain from sft.init on the SFT mixture plus the refusal data (the cleanest "
        "before/after); sft: continue from models/sft on the same mixture",
    )
    output_name: str = Field("sft_idk", description="the model is written to <run>/models/<output_name>")
