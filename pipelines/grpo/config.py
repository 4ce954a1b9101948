"""Settings of the GRPO stage (``grpo:`` in the run config).

One section per part of the topology (generators, rule rewards, the reward model, learner,
reference), then the algorithm (``algo``: lm/rl/algos.py's AlgoConfig), the asynchrony
(``max_staleness``), the data and prompts, the evaluation and the SFT control. Every default is the tiny CPU demo's (one generator actor, one learner
rank, one reward worker on 2 cores); ``configs/gpu-gsm8k-grpo.yaml`` shows a GPU layout.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lm.config_base import StrictModel
from lm.reward_config import RewardConfig, RuleReward
from lm.rl.config import AlgoConfig
from lm.train.config import StepConfig

# DeepSeek-R1-Zero's template, reworded as a system message: the base model is told the format
R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>."
)
# what the SFT data says when the tools are available (pipelines/sft/world_config.py tools_note)
TOOLS_NOTE = "You can use the search tool and the calculator."
# phrases with which an answer revises itself (the "aha moment" the R1 paper shows)
SELF_CORRECTION_MARKERS = (
    "wait",
    "let me check",
    "let me recheck",
    "let me re-check",
    "actually",
    "on second thought",
    "i made a mistake",
    "that is wrong",
    "that's wrong",
    "re-evaluate",
    "recalculate",
    "double-check",
)


class GeneratorPool(StrictModel):
    """Engine actors (actors/generator.py) that sample the rollouts."""

    num: int = Field(1, ge=1, description="generator actors")
    num_cpus: float = Field(0.75, ge=0, description="CPUs per generator (the demo's pools fit 2 cores)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per generator (vLLM or TorchEngine on CUDA)")
    engine: Literal["auto", "torch", "vllm"] = Field("auto", description="engine (lm/engine/factory.py)")
    max_batch_size: int = Field(64, ge=1, description="samples each generator runs at once")
    prompts_in_flight: int = Field(
        8, ge=1, description="groups sent to one generator at once (each is G samples)"
    )
    in_flight: Literal["finish", "recompute"] = Field(
        "recompute",
        description="a weight update while samples run: finish them on the old weights (a drain) or "
        "recompute their cache and go on with the new ones (lm/engine/base.py)",
    )
    max_restarts: int = Field(-1, ge=-1, description="restarts of a dead generator (-1: always)")
    engine_kwargs: dict = Field(default_factory=dict, description="more engine arguments (e.g. vLLM's)")


class RewardPoolSection(StrictModel):
    """Reward workers (actors/rewards.py); ``num_workers`` 0 scores in the driver (tests)."""

    num_workers: int = Field(1, ge=0, description="reward actors")
    num_cpus: float = Field(0.25, gt=0, description="CPUs per reward actor")
    isolate: bool = Field(True, description="rules in a child process with a hard per-item time limit")
    max_restarts: int = Field(-1, ge=-1)


class RMPoolSection(StrictModel):
    """The reward model's actors (actors/rewards.py ``RewardPool.for_model``), started only when
    ``rewards.rm`` is set: each loads the model once and scores a group's G samples as one padded batch."""

    num_workers: int = Field(1, ge=1, description="reward-model actors")
    num_cpus: float = Field(0.25, gt=0, description="CPUs per actor (its torch threads: at least 1)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor")
    batch_tokens: int = Field(16384, ge=64, description="padded tokens per forward pass at most")
    max_restarts: int = Field(-1, ge=-1, description="restarts of a dead actor (-1: always)")


class LearnerSection(StepConfig):
    """The learner's ranks (actors/learner.py) and their optimizer (lm/train's StepConfig fields)."""

    lr: float = Field(3e-5, gt=0, description="AdamW learning rate (RL wants a small one)")
    warmup_steps: int = Field(0, ge=0)
    decay: Literal["cosine", "linear", "constant"] = "constant"
    weight_decay: float = Field(0.0, ge=0)
    num_workers: int = Field(1, ge=1, description="data-parallel ranks (torch.distributed, DDP or FSDP2)")
    num_cpus: float = Field(0.75, ge=0, description="CPUs per rank")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per rank (NCCL between ranks when > 0)")
    micro_batch_tokens: int = Field(
        4096, ge=64, description="padded tokens per forward/backward (rows of whole completions)"
    )


class ReferenceSection(StrictModel):
    """The frozen reference model for the KL term (actors/learner.py ReferenceActor)."""

    enabled: bool | Literal["auto"] = Field(
        "auto", description="true, false, or auto: when algo.kl_coef > 0 or log_kl is on"
    )
    log_kl: bool = Field(True, description="score the reference even with kl_coef 0, to log the KL")
    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class DataSection(StrictModel):
    """Problems with final answers and no worked solutions (what RL is for)."""

    source: Literal["world", "jsonl"] = Field(
        "world",
        description="world: the tiny world's arithmetic RL split (<run>/sft_data, built if missing); "
        "jsonl: question/answer records such as GSM8K",
    )
    train_path: str | None = Field(None, description="jsonl: the training problems")
    test_path: str | None = Field(None, description="jsonl: the held-out problems")
    question_field: str = "question"
    answer_field: str = Field("answer", description="a bare answer or a worked one ending in '#### N'")
    heldout_from_train: int | None = Field(
        None, ge=1, description="jsonl without test_path: hold out this many training problems (seeded)"
    )
    max_train: int | None = Field(None, ge=1, description="only the first N training problems")
    max_prompt_tokens: int = Field(256, ge=8, description="longer prompts are skipped and counted")


class EvalSection(StrictModel):
    """Held-out accuracy before and after (and of the control)."""

    problems: int | None = Field(200, ge=1, description="held-out problems (null: all)")
    samples: int = Field(1, ge=1, description="samples per problem (1 with temperature 0: greedy)")
    temperature: float = Field(0.0, ge=0)


class ControlSection(StrictModel):
    """The SFT control: the starting model trained on the cold-start worked solutions for as much CPU
    time as GRPO used, then evaluated the same way (pipelines/grpo/control.py)."""

    enabled: bool = False
    conversations: str | None = Field(
        None,
        description="worked solutions (messages JSONL); null = <run>/sft_data/conversations/arithmetic.jsonl",
    )
    lr: float = Field(3e-4, gt=0)
    num_cpus: int = Field(2, ge=1, description="CPUs (torch threads) of the control's one process")
    rows_per_step: int = Field(16, ge=1, description="conversations per optimizer step")
    cpu_seconds: float | None = Field(
        None, gt=0, description="CPU budget; null = the CPU seconds the GRPO run used"
    )


class FaultSection(StrictModel):
    """Testing only: faults injected at a learner step, so recovery runs for real."""

    kill_generator_at_step: int | None = Field(None, ge=1, description="ray.kill generator 0 then")
    kill_reward_worker_at_step: int | None = Field(None, ge=1, description="ray.kill reward worker 0")
    crash_at_step: int | None = Field(
        None, ge=1, description="the driver raises after this step (rerun the command: it resumes)"
    )


class GRPOConfig(StrictModel):
    mode: Literal["r1", "r1_zero"] = Field(
        "r1", description="r1: from the SFT model in its own format; r1_zero: from the base model"
    )
    init: str | None = Field(
        None,
        description="starting model directory ({run_dir}/models/... for one of this run's); "
        "null = <run>/models/sft (r1) or models/base (r1_zero)",
    )
    output_name: str = Field("rl", description="the trained policy goes to <run>/models/<output_name>")
    system_prompt: str | None = Field(
        None, description="system message of every prompt; null = the mode's (format or tools note)"
    )
    tools: list[Literal["calculator", "search"]] = Field(
        default_factory=lambda: ["calculator"], description="tools the rollouts may call"
    )
    search_corpus: str | None = Field(
        None, description="documents for the search tool; null = <run>/world/search_index.jsonl"
    )

    # -- the algorithm ------------------------------------------------------------------------------
    steps: int = Field(30, ge=1, description="learner steps (policy versions)")
    prompts_per_step: int = Field(16, ge=1, description="groups per learner step")
    group_size: int = Field(8, ge=2, description="G: samples per prompt")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (the learner scores at it)")
    max_new_tokens: int = Field(160, ge=1, description="per completion, tool results included")
    max_staleness: int = Field(
        1, ge=0, description="versions a sample may lag the learner (0: the synchronous algorithm)"
    )
    algo: AlgoConfig = Field(
        default_factory=lambda: AlgoConfig(policy_loss="decoupled_ppo", eps_high=0.28),
        description="advantages, policy loss, KL, aggregation (lm/rl/algos.py)",
    )
    drop_uninformative: bool = Field(
        False, description="skip groups whose rewards are all equal (DAPO's dynamic sampling)"
    )
    accuracy_component: str | None = Field(
        None, description="the reward component that is accuracy; null = the first rule's"
    )
    self_correction_markers: list[str] = Field(default_factory=lambda: list(SELF_CORRECTION_MARKERS))

    # -- the topology ---------------------------------------------------------------------------------
    generators: GeneratorPool = GeneratorPool()
    rewards: RewardConfig = Field(
        default_factory=lambda: RewardConfig(rules=[RuleReward(name="world_arithmetic")])
    )
    reward_pool: RewardPoolSection = RewardPoolSection()
    rm_pool: RMPoolSection = Field(
        default_factory=RMPoolSection, description="the reward model's actors (when rewards.rm is set)"
    )
    learner: LearnerSection = LearnerSection()
    reference: ReferenceSection = ReferenceSection()
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how the placement group's bundles are spread over nodes"
    )
    weight_sync: Literal["auto", "object_store", "collective"] = Field(
        "auto",
        description="learner -> generators: the object store (CPU) or a broadcast (NCCL on GPU, gloo on "
        "CPU); auto: collective when generators and learner ranks each have whole GPUs",
    )

    # -- data, evaluation, checkpoints ----------------------------------------------------------------
    data: DataSection = DataSection()
    eval: EvalSection = EvalSection()
    control: ControlSection = ControlSection()
    checkpoint_every: int = Field(10, ge=1, description="learner steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    seed: int | None = Field(None, description="null = the run's seed")
    faults: FaultSection = FaultSection()

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        if self.mode == "r1_zero" and "rewards" not in self.model_fields_set:
            # R1-Zero learns the format from the reward: a small format term beside accuracy
            self.rewards = RewardConfig(
                rules=[RuleReward(name="world_arithmetic"), RuleReward(name="r1_format", weight=0.1)]
            )
        if self.group_size * self.prompts_per_step < 2:
            raise ValueError("a step needs at least two samples")
        if self.reference.enabled is False and self.algo.kl_coef > 0:
            raise ValueError("algo.kl_coef > 0 needs the reference model (reference.enabled: auto or on)")
        if self.eval.samples > 1 and self.eval.temperature == 0:
            raise ValueError("eval.samples > 1 needs eval.temperature > 0 (greedy samples are all the same)")
        keys = [r.key for r in self.rewards.rules]
        if self.accuracy_component is not None and self.accuracy_component not in keys:
            raise ValueError(f"accuracy_component {self.accuracy_component!r} is not a rule's key: {keys}")
        if self.generators.max_batch_size < self.group_size:
            raise ValueError(
                f"generators.max_batch_size ({self.generators.max_batch_size}) must hold one group "
                f"(group_size {self.group_size})"
            )
        return self

    @property
    def control_name(self) -> str:
        """The SFT control's model: ``models/<output_name>_control_sft``."""
        return f"{self.output_name}_control_sft"

    def accuracy_key(self) -> str:
        """The reward component that says right or wrong (>= 0.5 is right)."""
        return self.accuracy_component or self.rewards.rules[0].key

    @property
    def use_reference(self) -> bool:
        if self.reference.enabled == "auto":
            return self.algo.kl_coef > 0 or self.reference.log_kl
        return bool(self.reference.enabled)

    def system(self) -> str | None:
        if self.system_prompt is not None:
            return self.system_prompt or None
        if self.mode == "r1_zero":
            return R1_ZERO_SYSTEM
        return TOOLS_NOTE if self.tools else None
