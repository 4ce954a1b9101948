"""The problems the teacher answers and the students are scored on: JSONL rows with a question and a
reference answer (the tiny world's arithmetic splits, GSM8K, or any file named in ``distill.prompts``),
read into ``Problem``s and asked as chat messages the way the SFT data was written.

A row without a question or an answer, or a line that is not a JSON object, is skipped and counted
(``skipped``), never fatal; a file that yields no problem at all is a ``ConfigError`` naming it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.distill.config import PromptSource
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir

log = logging.getLogger("raychat.distill")


@dataclass(frozen=True)
class Problem:
    id: str  # <source name>:<row number>
    question: str
    reference: str  # what the correctness rule compares with: a bare answer or a worked one ('#### N')
    final: str | None  # the bare final answer, when the reference has one (what the chat eval compares)


def source_path(source: PromptSource, run_dir: str) -> Path:
    return Path(RunDir(run_dir).expand(source.path))


def source_name(source: PromptSource) -> str:
    return source.name or Path(source.path).stem


def _final(reference: str) -> str | None:
    """The bare answer of a reference: after its last '####', or the reference itself when it is one
    number (commas dropped, as the chat evaluation's reader drops them)."""
    text = reference.rsplit("####", 1)[-1].strip().replace(",", "").rstrip(".")
    try:
        float(text)
    except ValueError:
        return None
    return text


def read_problems(source: PromptSource, run_dir: str) -> tuple[list[Problem], int]:
    """(problems, rows skipped) of one source."""
    path = source_path(source, run_dir)
    if not path.is_file():
        raise ConfigError(f"distill: prompt file {path} not found")
    name = source_name(source)
    problems: list[Problem] = []
    skipped = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if source.max_records is not None and len(problems) >= source.max_records:
                break
            if not line.strip():
                continue
            try:
                row: Any = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if not isinstance(row, dict):
                skipped += 1
                continue
            question, answer = row.get(source.question_field), row.get(source.answer_field)
            if not isinstance(question, str) or not question.strip() or answer is None or str(answer) == "":
                skipped += 1
                continue
            reference = str(answer)
            problems.append(Problem(f"{name}:{i}", question.strip(), reference, _final(reference)))
    if not problems:
        raise ConfigError(
            f"distill: {path} has no usable problem ({skipped} rows without a '{source.question_field}' "
            f"and '{source.answer_field}' field)"
        )
    if skipped:
        log.warning("distill: %s: %d rows without a question or an answer skipped", path, skipped)
    return problems, skipped


def messages(problem: Problem, tools_note: str | None) -> list[dict[str, str]]:
    """How a problem is asked: the question, after the tools note when tools are on (the world's
    reasoning data and its evaluation ask the same way)."""
    user = [{"role": "user", "content": problem.question}]
    return [{"role": "system", "content": tools_note}, *user] if tools_note else user


def heldout_rows(problems: list[Problem]) -> list[dict[str, Any]]:
    """Problems as rows of the chat evaluation's ``arithmetic_test`` set (question and final answer)."""
    return [{"question": p.question, "final": p.final} for p in problems if p.final is not None]
