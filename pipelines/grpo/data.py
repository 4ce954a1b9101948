"""The problems GRPO practises on and is evaluated on, and the prompts they become.

Problems come with a final answer and no worked solution (``reference``: ``#### N`` or the dataset's
own answer text, which lm/rewards.py reads): the tiny world's arithmetic RL split (answers only) and
its test split, or any question/answer JSONL such as GSM8K. Each problem is asked as a chat prompt
(lm/chat.py): an optional system message (the mode's format instruction or the tools note the SFT
data used) and the question.

The order is a data position a checkpoint can record: position ``p`` is problem
``order(epoch)[p % n]`` with ``epoch = p // n``, each epoch a fresh seeded shuffle, so a resumed run
asks exactly the problems that would have come next.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError
from pipelines.grpo.config import GRPOConfig

log = logging.getLogger("raychat.grpo")


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    reference: str  # what the accuracy reward compares with ("#### 42" or a worked answer)


@dataclass
class Prompt:
    """One problem asked: its position (the uid of its group), the problem and the prompt's ids."""

    position: int
    problem: Problem
    ids: list[int]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from lm.files import read_jsonl_objects

    rows, bad = read_jsonl_objects(path, ConfigError)
    if bad:
        log.warning("grpo: %s: %d unreadable lines skipped", path, bad)
    return rows


def _reference(row: dict[str, Any], answer_field: str) -> str | None:
    if "final" in row and row["final"] is not None:  # the tiny world's rows: the whole-number answer
        return f"#### {row['final']}"
    value = row.get(answer_field)
    return None if value is None else str(value)


def problems_from_rows(rows: list[dict[str, Any]], prefix: str, cfg: GRPOConfig) -> list[Problem]:
    """Rows with a question and an answer; rows without either are skipped and counted."""
    out, skipped = [], 0
    for i, row in enumerate(rows):
        question, reference = row.get(cfg.data.question_field), _reference(row, cfg.data.answer_field)
        if not isinstance(question, str) or not question.strip() or not reference:
            skipped += 1
            continue
        out.append(Problem(f"{prefix}{i}", question.strip(), reference))
    if skipped:
        log.warning("grpo: %d %s rows without a question or an answer skipped", skipped, prefix.rstrip("-"))
    return out


def world_splits(cfg: Any, run: Any) -> Path:
    """``<run>/sft_data``: the tiny world's post-training data as the sft stage builds it (the run's
    ``sft_data`` settings), built here from ``<run>/world`` when it is missing or was built from
    another world or other settings (a run whose sft stage trains on no world data never rebuilds it)."""
    from pipelines.sft.job import build_world_data
    from pipelines.sft.scorecard import world_data_dir
    from pipelines.sft.world_data import world_stamp
    from pipelines.storage import read_json

    out = world_data_dir(run)
    counts = read_json(out / "counts.json")
    if counts is not None:
        facts = run.world / "facts.json"
        same_world = not facts.is_file() or counts.get("world") == world_stamp(str(run.world))
        if same_world and counts.get("config") == cfg.sft_data.model_dump(mode="json"):
            return out
    why = "is missing" if counts is None else "was built from another world or other sft_data settings"
    log.info("grpo: %s %s; building the world's splits there", out, why)
    built = build_world_data(cfg, run, needed=True)
    if built is None:
        raise ConfigError(f"grpo: {run.world} has no tiny world; run the world stage first (raychat world)")
    return built


def problem_files(cfg: GRPOConfig, world_data: Path | None) -> list[Path]:
    """The file ``load_problems`` reads the training problems from (recorded in the policy's
    raychat.json, so that ``raychat eval`` warns when asked to score it)."""
    if cfg.data.source == "world":
        return [world_data / "splits" / "arithmetic_rl_train.jsonl"] if world_data is not None else []
    return [Path(cfg.data.train_path)] if cfg.data.train_path else []


def load_problems(cfg: GRPOConfig, world_data: Path | None, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(training problems, held-out problems) as the config says; ``world_data`` is ``world_splits``'
    directory, for ``data.source: world``."""
    d = cfg.data
    if d.source == "world":
        if world_data is None:
            raise ConfigError("grpo.data.source is world but the run has no world data")
        splits = world_data / "splits"
        (train_file,) = problem_files(cfg, world_data)
        train = problems_from_rows(_read_jsonl(train_file), "train-", cfg)
        test = problems_from_rows(_read_jsonl(splits / "arithmetic_test.jsonl"), "test-", cfg)
    else:
        if not d.train_path:
            raise ConfigError("grpo.data.train_path is required with grpo.data.source: jsonl")
        paths = [Path(p) for p in (d.train_path, d.test_path) if p]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(f"grpo.data: file not found: {', '.join(missing)}")
        rows = _read_jsonl(Path(d.train_path))
        if d.test_path:
            test = problems_from_rows(_read_jsonl(Path(d.test_path)), "test-", cfg)
            train = problems_from_rows(rows, "train-", cfg)
        else:  # hold out a seeded slice of the training file
            if d.heldout_from_train is None or d.heldout_from_train >= len(rows):
                raise ConfigError(
                    "grpo.data: give test_path, or heldout_from_train smaller than the training file"
                )
            order = list(range(len(rows)))
            random.Random(seed).shuffle(order)
            cut = len(rows) - d.heldout_from_train
            train = problems_from_rows([rows[i] for i in sorted(order[:cut])], "train-", cfg)
            test = problems_from_rows([rows[i] for i in sorted(order[cut:])], "test-", cfg)
    if d.max_train is not None:
        train = train[: d.max_train]
    if not train or not test:
        raise ConfigError(f"grpo.data: {len(train)} training and {len(test)} held-out problems; need both")
    return train, test


class PromptSource:
    """Prompts by data position (module docstring), rendered once per problem."""

    def __init__(self, problems: list[Problem], chat: Any, system: str | None, seed: int, max_tokens: int):
        self.problems = problems
        self.seed = seed
        self.ids: list[list[int] | None] = [None] * len(problems)
        self.skipped = 0
        for i, p in enumerate(problems):
            ids = chat.render_prompt(messages(p.question, system)).ids
            if len(ids) > max_tokens:
                self.skipped += 1
                continue
            self.ids[i] = ids
        if self.skipped:
            log.warning("grpo: %d prompts longer than %d tokens skipped", self.skipped, max_tokens)
        if self.skipped == len(problems):
            raise ConfigError(f"grpo: every prompt is longer than grpo.data.max_prompt_tokens={max_tokens}")
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = [i for i, ids in enumerate(self.ids) if ids is not None]
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._orders = {epoch: order}  # one epoch at a time is all a run needs
        return self._orders[epoch]

    @property
    def epoch_size(self) -> int:
        return len(self.problems) - self.skipped

    def at(self, position: int) -> Prompt:
        n = self.epoch_size
        index = self._order(position // n)[position % n]
        ids = self.ids[index]
        assert ids is not None
        return Prompt(position, self.problems[index], ids)


def messages(question: str, system: str | None) -> list[dict[str, str]]:
    user = [{"role": "user", "content": question}]
    return [{"role": "system", "content": system}, *user] if system else user
