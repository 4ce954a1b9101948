"""What ``raychat eval`` asks and how it judges each reply.

    task = load_task("gsm8k", data="../shared/data/gsm8k/train.jsonl", limit=200)
    task = load_task("tinyworld-arith", world_data=Path("runs/tiny/sft_data"), data_cfg=cfg.sft_data)
    right = task.judge(task.items[0], "... #### 72")

Two kinds of task:
- **question/answer files** (``gsm8k``, ``jsonl``): one JSON object per line with a question and a
  reference answer (GSM8K's worked answer ending in ``#### N``, or a bare answer), judged by a rule
  reward of lm/rewards.py (``numeric_accuracy`` by default: the reply's ``<answer>``, ``#### N`` or
  last number against the reference's final number) or a user's own, named by dotted path;
- **the tiny world's held-out sets** (``tinyworld-*``): asked exactly as the post-training stages ask
  them (pipelines/chat_eval.py's conditions: the same prompts, tools note and tools) and judged by the
  same scorer, so ``raychat eval`` reproduces a stage's numbers and can judge any other model on them.

A reply counts as right when its score is at least 0.5 (for ``tinyworld-unknown``, "right" is an
honest "I don't know" about an entity that does not exist).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError

# task name -> (chat_eval condition, what its accuracy means)
WORLD_TASKS: dict[str, tuple[str, str]] = {
    "tinyworld-arith": (
        "arithmetic_with_calculator",
        "held-out arithmetic word problems, with the calculator",
    ),
    "tinyworld-arith-no-tools": ("arithmetic_without_calculator", "the same problems, no tools"),
    "tinyworld-facts": ("known", "facts the crawl teaches about known entities"),
    "tinyworld-unknown": ("unknown", "share of honest 'I don't know' about entities that do not exist"),
    "tinyworld-search": ("search_with_tool", "facts only the search index holds, with the search tool"),
    "tinyworld-identity": ("identity", "the configured identity, asked in held-out phrasings"),
}
FILE_TASKS = {"gsm8k": "GSM8K-style question/answer JSONL", "jsonl": "any question/answer JSONL"}
TASKS = [*FILE_TASKS, *WORLD_TASKS]


@dataclass(frozen=True)
class Item:
    """One problem: its id, the conversation that asks it, and what a reply is judged against."""

    id: str
    messages: list[dict[str, Any]]
    reference: Any


@dataclass
class Task:
    """A task ready to ask: its problems, the verdict on one reply, whether replies may call tools,
    their token limit, and what the numbers should carry along (skipped rows, the reward)."""

    name: str
    items: list[Item]
    judge: Callable[[Item, str], bool]
    tools: bool = False
    max_tokens: int = 256
    notes: dict[str, Any] = field(default_factory=dict)  # what was skipped, which reward, ...


def load_task(
    name: str,
    *,
    data: str | None = None,
    world_data: Path | None = None,
    data_cfg: Any = None,
    eval_cfg: Any = None,
    limit: int | None = None,
    seed: int = 0,
    reward: str | None = None,
    system: str | None = None,
    question_field: str = "question",
    answer_field: str = "answer",
    tools: bool = False,
) -> Task:
    """The task ``name`` (one of ``TASKS``) with at most ``limit`` problems; errors are ConfigErrors
    that say what to give instead."""
    if name in FILE_TASKS:
        if not data:
            raise ConfigError(f"task {name} reads a question/answer JSONL file: give --data PATH")
        return _file_task(name, Path(data), limit, reward, system, question_field, answer_field, tools)
    if name in WORLD_TASKS:
        if world_data is None or not (world_data / "splits").is_dir():
            where = world_data or "<run>/sft_data"
            raise ConfigError(
                f"task {name} needs the tiny world's held-out sets in {where}/splits (the sft stage "
                "writes them); give --run-dir of a run that has them"
            )
        return _world_task(name, world_data, data_cfg, eval_cfg, limit, seed)
    raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")


def _file_task(
    name: str,
    path: Path,
    limit: int | None,
    reward: str | None,
    system: str | None,
    question_field: str,
    answer_field: str,
    tools: bool,
) -> Task:
    from lm.files import read_jsonl_objects
    from lm.reward_process import scorer_for
    from lm.rewards import RewardItem

    if path.is_dir():
        raise ConfigError(f"--data {path} is a directory; give a JSONL file")
    if not path.is_file():
        raise ConfigError(f"--data {path}: no such file")
    rows, unreadable = read_jsonl_objects(path, ConfigError)
    reward_name = reward or "numeric_accuracy"
    try:  # the rollouts' scorer: a per-reply time limit; a reward that raises or returns NaN scores 0
        scorer = scorer_for({"rules": [{"name": reward_name}]})  # a user's: in its own process
    except (ValueError, ImportError, AttributeError) as e:
        raise ConfigError(f"--reward {reward_name}: {e}") from None
    items, incomplete = [], 0
    for i, row in enumerate(rows):
        question, answer = row.get(question_field), row.get(answer_field)
        scalar = isinstance(answer, str | int | float) and not isinstance(answer, bool) and str(answer) != ""
        if not isinstance(question, str) or not question.strip() or not scalar:
            incomplete += 1
            continue
        asked = [{"role": "user", "content": question.strip()}]
        if system:
            asked.insert(0, {"role": "system", "content": system})
        items.append(Item(str(row.get("id", i)), asked, str(answer)))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise ConfigError(
            f"{path} has no usable problems (each line an object with {question_field!r} and "
            f"{answer_field!r}; {unreadable} unreadable lines, {incomplete} without both)"
        )

    def judge(item: Item, reply: str) -> bool:
        return scorer.score([RewardItem(item.id, reply, item.reference)])[0].reward >= 0.5

    notes = {
        "data": str(path),
        "reward": reward_name,
        "unreadable_lines": unreadable,
        "incomplete_rows": incomplete,
    }
    return Task(name, items, judge, tools=tools, max_tokens=256, notes=notes)


def _world_task(
    name: str, world_data: Path, data_cfg: Any, eval_cfg: Any, limit: int | None, seed: int
) -> Task:
    """Asked as the stages ask: their rows (``limit`` defaults to ``sft.eval.max_per_set``, sampled
    with the run's seed), prompts, tools and token limit (``sft.eval.max_new_tokens``)."""
    from pipelines.chat_eval import CONDITIONS, messages_for, read_set
    from pipelines.sft.config import ChatEvalConfig
    from pipelines.sft.world_config import SFTDataConfig
    from pipelines.sft.world_scores import score_set

    condition_name = WORLD_TASKS[name][0]
    condition = CONDITIONS[condition_name]
    cfg = data_cfg or SFTDataConfig()
    ecfg = eval_cfg or ChatEvalConfig()
    try:
        rows = read_set(world_data, condition.set_name, limit or ecfg.max_per_set, seed)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    except ValueError as e:  # a corrupt line in a split file
        raise ConfigError(f"{world_data / 'splits' / (condition.set_name + '.jsonl')}: {e}") from None
    items = [Item(str(i), messages_for(condition_name, row, cfg), row) for i, row in enumerate(rows)]

    def judge(item: Item, reply: str) -> bool:
        return bool(score_set(condition.set_name, [item.reference], [reply], cfg).get(condition.primary))

    max_tokens = ecfg.max_new_tokens.get(condition.set_name, 64)
    notes = {"set": condition.set_name, "condition": condition_name, "judged_by": condition.primary}
    return Task(name, items, judge, tools=condition.tools, max_tokens=max_tokens, notes=notes)
