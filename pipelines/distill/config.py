"""Settings of rejection sampling and distillation (``distill:`` in the run config).

``DistillConfig`` inherits the shared training fields (pipelines/train/config.py), so ``distill.lr``
means what ``sft.lr`` means: they train the student and, at the same compute, its SFT-only control.
The sections say what the teacher answers (``prompts``), how (``sampling``), what is kept
(``rejection``), what else the student's data holds (``other_share``), the student's size
(``student``) and whether a second student also learns the teacher's token distributions (``logit``). Every default is the tiny CPU demo's; ``configs/quality-cpu.yaml`` turns them up.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from lm.config_base import StrictModel
from pipelines.pretrain.config import ModelSpec
from pipelines.train.config import TrainingConfig

WORLD_PROMPTS = "{run_dir}/sft_data/splits/arithmetic_rl_train.jsonl"


class PromptSource(StrictModel):
    """Problems with a checkable answer: JSONL rows with a question and a reference answer."""

    path: str = Field(
        WORLD_PROMPTS,
        description="a JSONL file of problems ({run_dir} is the run directory); the default is the tiny "
        "world's RL split (answers only, no held-out entity), e.g. ../shared/data/gsm8k/train.jsonl",
    )
    question_field: str = Field("question", description="the field holding the problem")
    answer_field: str = Field(
        "final", description="the reference: a bare answer or a worked one ending in '#### N' (GSM8K: answer)"
    )
    max_records: int | None = Field(None, ge=1, description="use at most this many problems (the first)")
    name: str | None = Field(None, description="name in counts and meta; default: the file's stem")


class SamplingConfig(StrictModel):
    """How the teacher answers: ``samples`` replies per problem through Ray Data on the engine actor."""

    samples: int = Field(4, ge=1, le=64, description="replies sampled per problem (n)")
    temperature: float = Field(0.8, gt=0, description="sampling temperature (diverse traces to keep)")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(192, ge=1, description="new tokens per reply (calculator results count)")
    tools: bool = Field(
        True,
        description="ask with the tools note and let the teacher call the calculator (and search), as "
        "the world's reasoning data was written; false = plain questions, no tools",
    )
    seed: int | None = Field(None, description="sampling seed; null = the run's seed")


class RejectionConfig(StrictModel):
    """Which replies are kept: finished (not cut at the token limit, no tool error), well formatted,
    correct by the rule rewards, not a duplicate of one kept for the same problem, at most ``per_prompt``."""

    correctness: str = Field(
        "numeric_accuracy",
        description="the rule reward (lm/rewards.py REWARDS, or 'package.module:function') that says a "
        "reply is correct: it must score >= min_reward",
    )
    correctness_args: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments")
    format: str | None = Field(
        None,
        description="the rule reward that says a reply is well formatted (must score >= min_reward); "
        "null = the format the SFT data was written in: gsm8k_format ('#### N' last) or r1_format",
    )
    format_args: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments")
    min_reward: float = Field(1.0, description="a rule's least score that passes")
    require_finished: bool = Field(
        True,
        description="reject replies that did not end with <|im_end|> (cut at the token limit, tool errors)",
    )
    per_prompt: int = Field(2, ge=1, description="kept replies per problem at most (R1 caps them too)")
    dedup: bool = Field(True, description="drop a reply whose text equals one kept for the same problem")


class LogitConfig(StrictModel):
    """Logit distillation (lm/train/logit_distill.py): a second student, same init, same data, same
    steps and rows as the sequence-level one, trained on ``weight x T^2 x KL(teacher || student)`` +
    ``(1 - weight) x`` the cross-entropy on the kept traces; teacher and student must share the
    tokenizer (checked before the stage starts)."""

    enabled: bool = Field(False, description="train and evaluate the logit-distilled student too")
    weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of the KL term in the loss (1 = the teacher's distributions alone, 0 = "
        "sequence-level distillation again)",
    )
    temperature: float = Field(
        1.0, gt=0, description="softens teacher and student alike (Hinton's T; the KL is scaled by T^2)"
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description="KL over the teacher's k likeliest tokens plus one bucket for the rest; null = the "
        "full vocabulary",
    )
    output_name: str = Field("student_logit", description="the logit-distilled student's model directory")


class DistillConfig(TrainingConfig):
    """``distill:``: the teacher, its prompts, the filter, the data mixture, and the student."""

    teacher: str | None = Field(
        None,
        description="the teacher's model directory ({run_dir}/models/... or elsewhere); null = the most "
        "trained chat model of the run: models/rl when a grpo stage makes it or it exists, else models/sft",
    )
    prompts: list[PromptSource] = Field(default_factory=lambda: [PromptSource()], min_length=1)
    sampling: SamplingConfig = SamplingConfig()
    rejection: RejectionConfig = RejectionConfig()
    other_share: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="share of the student's data that is non-reasoning SFT data (R1: about 200k of 800k)",
    )
    other_kinds: list[str] = Field(
        ["identity", "qa", "no_search", "search", "passage"],
        description="the tiny world's conversation kinds the non-reasoning share is drawn from",
    )
    student: ModelSpec = Field(
        default_factory=lambda: ModelSpec(
            depth=None, hidden_size=96, num_layers=2, num_heads=3, num_kv_heads=1
        ),
        description="the student's size (pretrain.model's fields; vocab = the teacher's tokenizer)",
    )
    student_init: str | None = Field(
        None,
        description="start the student (and its control) from this model directory instead of fresh "
        "weights of the size above, e.g. a smaller pretrained base",
    )
    control: bool = Field(
        True, description="also train the student on the SFT stage's mixture alone, at the same compute"
    )
    eval_condition: str = Field(
        "arithmetic_with_calculator",
        description="the chat evaluation (pipelines/chat_eval.py CONDITIONS) behind the accuracies",
    )
    heldout: PromptSource | None = Field(
        None,
        description="problems to evaluate on instead of the world's arithmetic test set (e.g. GSM8K test)",
    )
    output_name: str = Field("student", description="the student goes to <run>/models/<output_name>")
    control_output_name: str = Field("student_sft_only", description="the control's model directory")
    logit: LogitConfig = Field(
        default_factory=LogitConfig,
        description="also distill the teacher's token distributions into a second student (off by default)",
    )

    # the student's training (same for the control); SFT's row settings
    seq_len: int = Field(256, ge=16, description="tokens per packed row; longer conversations are cut")
    batch_rows: int = Field(4, ge=1, description="packed rows per optimizer step over all workers")
    micro_batch_rows: int = Field(4, ge=1, description="rows per worker per forward/backward")
    epochs: float = Field(3.0, gt=0, description="passes over the distilled data (ignored with max_steps)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps of student and control alike")
    val_conversations: int = Field(20, ge=0, description="conversations held out for the validation loss")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (a fresh student takes a high one)")
    warmup_steps: int = Field(10, ge=0)
    eval_every: int = Field(25, ge=1)
    checkpoint_every: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        from pipelines.sft.world_config import KINDS

        unknown = [k for k in self.other_kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"other_kinds: unknown kinds {unknown}; kinds are {list(KINDS)}")
        names = [self.output_name, self.control_output_name, *([self.logit.output_name] * self.logit.enabled)]
        if len(set(names)) < len(names):
            raise ValueError(f"output_name, control_output_name and logit.output_name must differ: {names}")
        if self.batch_rows % (self.micro_batch_rows * self.num_workers):
            raise ValueError(
                f"batch_rows ({self.batch_rows}) must be a multiple of micro_batch_rows x num_workers"
            )
        return self
