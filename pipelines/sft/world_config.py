"""Settings of the tiny world's post-training data: splits, conversation kinds and their sizes.

One pydantic model (``SFTDataConfig``) with a section per kind of data; every default fits the tiny
demo (a ~1M-parameter model fine-tuned for a few minutes on 2 CPU cores: about 3,500 conversations).
What the full-quality CPU run (``configs/quality-cpu.yaml``) would turn up, following the lesson that
a small model memorises the few refused names it sees instead of learning to refuse the unfamiliar:

    sft_data:
      idk: {fresh_names: 6000, search_miss: 400}
      qa: {phrasings_per_fact: 3, no_search: 600}
      search: {passages: 1000}
      identity: {conversations: 600}
      probes: {counting: [1000, 300], decimal: [1000, 300]}
      arithmetic: {ablation_problems: 2000}

with ``world.num_entities: 1200`` so that the held-out sets have thousands of questions, and the IDK
measurement repeated with ``seed`` 0, 1 and 2 (other splits, other fresh names).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lm.config_base import StrictModel

# the conversation kinds pipelines/sft/world_data.py writes (conversations/<kind>.jsonl)
KINDS = (
    "identity",
    "qa",
    "no_search",
    "idk",
    "search",
    "search_fresh",
    "search_miss",
    "passage",
    "arithmetic",
    "probes",
)
ARITHMETIC_LAYOUTS = ("reasoning_calc", "reasoning", "answer_first")
FINAL_STYLES = ("gsm8k", "r1")


class SplitConfig(StrictModel):
    """How the world's entities and problems are shared out. Crawl entities go whole to one of three
    groups (stratified by type): SFT question-answer examples, the IDK probe set, held-out evaluation."""

    sft_entities: float = Field(0.4, gt=0, lt=1, description="crawl entities whose known facts are SFT QA")
    idk_probe_entities: float = Field(
        0.3, ge=0, lt=1, description="crawl entities whose known facts the IDK stage probes the model on"
    )
    search_train_entities: float = Field(
        0.5, gt=0, lt=1, description="search-only entities used in search traces (the rest are evaluated)"
    )
    arithmetic_cold_start: int = Field(
        200, ge=0, description="arithmetic problems whose worked solutions are SFT data (RL's cold start)"
    )
    arithmetic_rl_train: int | None = Field(
        None, ge=0, description="problems with answers only, for RL; None = the rest of the train split"
    )

    @model_validator(mode="after")
    def _leave_a_heldout_set(self) -> SplitConfig:
        heldout = 1 - self.sft_entities - self.idk_probe_entities
        if heldout < 0.05:
            raise ValueError(
                f"sft_entities + idk_probe_entities = {1 - heldout:.2f}; leave at least 0.05 of the crawl "
                "entities for the held-out known evaluation"
            )
        return self


class IdentityConfig(StrictModel):
    """Who the assistant is; identity conversations say it in many phrasings."""

    name: str = "raychat"
    creator: str = "the raychat project"
    description: str = "a small language model"
    other_assistants: list[str] = Field(
        ["ChatGPT", "Claude", "Gemini", "Llama", "Copilot", "Siri", "Alexa", "Grok"],
        min_length=1,
        description="assistants it must never claim to be",
    )
    other_makers: list[str] = Field(
        ["OpenAI", "Anthropic", "Google", "Meta", "Microsoft", "Apple", "Amazon", "xAI"],
        description="companies it must never claim made it",
    )
    conversations: int = Field(300, ge=0, description="identity conversations in the SFT data")
    eval_fraction: float = Field(
        0.25, ge=0, lt=1, description="question phrasings held out for the identity evaluation"
    )


class QAConfig(StrictModel):
    phrasings_per_fact: int = Field(2, ge=1, le=8, description="SFT questions per known fact")
    answer_style: Literal["short", "sentence", "mixed"] = Field(
        "short", description="'1698.' or 'Velimir Talwright was born in 1698.' (mixed: half each)"
    )
    no_search: int = Field(
        200, ge=0, description="known facts answered directly with the tools available ('no search needed')"
    )


class IDKConfig(StrictModel):
    fresh_names: int = Field(1000, ge=0, description="fresh entity names asked about, each refused")
    questions_per_name: int = Field(1, ge=1, le=8)
    world_unknown_facts: bool = Field(
        True,
        description="refuse the never-stated facts of SFT and probe entities (known entity, unknown fact)",
    )
    search_miss: int = Field(
        100, ge=0, description="fresh names searched for, found nowhere, then refused (tools available)"
    )


class SearchConfig(StrictModel):
    """Search traces are answered by the real BM25 index (lm/search_index.py) with the search actor's
    settings, so a trace shows what the tool will return; keep k and max_chars equal to the actor's."""

    traces_per_fact: int = Field(1, ge=1, le=4, description="search traces per search-only fact")
    k: int = Field(3, ge=1, le=10, description="hits per search (the search actor's k)")
    max_chars: int = Field(400, ge=50, description="characters per hit (the search actor's max_chars)")
    passage_words: int = Field(80, ge=0, description="passage size of the index (the actor's passage_words)")
    fresh_traces: int = Field(
        0,
        ge=0,
        description="search traces about made-up entities (one question each), so that the model learns "
        "to copy the question's name into the query and the answer out of the result, not names; off by "
        "default: 1,000 double the demo's SFT steps, and models that cannot copy in context gain nothing",
    )
    passages: int = Field(
        300, ge=0, description="reading examples: a passage in the prompt, the answer from it"
    )
    unanswerable_share: float = Field(
        0.2, ge=0, le=1, description="reading examples whose passage does not hold the answer"
    )


class ArithmeticConfig(StrictModel):
    layout: Literal[ARITHMETIC_LAYOUTS] = Field(  # type: ignore[valid-type]
        "reasoning_calc",
        description="reasoning_calc: steps with calculator calls, then the answer; reasoning: the same "
        "worked in the head; answer_first: the answer, then the working",
    )
    final_style: Literal[FINAL_STYLES] = Field(  # type: ignore[valid-type]
        "gsm8k", description="'#### 42' or R1's <think>...</think><answer>42</answer>"
    )
    ablation_problems: int = Field(
        500,
        ge=0,
        description="train problems written in every layout, for the layout and calculator ablation",
    )
    mental_limit: int = Field(
        12,
        ge=0,
        description="a step whose numbers are all at most this is worked without the calculator, as a "
        "careful person would; 0 = every step uses it",
    )

    @model_validator(mode="after")
    def _r1_reasons_first(self) -> ArithmeticConfig:
        if self.final_style == "r1" and self.layout == "answer_first":
            raise ValueError("final_style r1 puts the answer after <think>; it cannot go with answer_first")
        return self


class ProbeConfig(StrictModel):
    counting: tuple[int, int] = Field((200, 100), description="(train, test) counting items")
    decimal: tuple[int, int] = Field((200, 100), description="(train, test) decimal comparisons")


class SFTDataConfig(StrictModel):
    seed: int = Field(0, description="one seed for every split and draw (the world has its own)")
    splits: SplitConfig = SplitConfig()
    identity: IdentityConfig = IdentityConfig()
    qa: QAConfig = QAConfig()
    idk: IDKConfig = IDKConfig()
    search: SearchConfig = SearchConfig()
    arithmetic: ArithmeticConfig = ArithmeticConfig()
    probes: ProbeConfig = ProbeConfig()
    system_prompt: str = Field(
        "You are {name}, {description} built by {creator}.",
        description="the identity system message ({name}, {description}, {creator} filled in)",
    )
    system_prompt_share: float = Field(
        0.3, ge=0, le=1, description="conversations that start with the identity system message (0 = off)"
    )
    tools_note: str | None = Field(
        "You can use the search tool and the calculator.",
        description="system text of conversations where the tools are available; None = never said",
    )
