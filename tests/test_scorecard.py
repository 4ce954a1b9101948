"""A stored evaluation is reused only while the model, the questions and the search corpus are the ones
it scored (pipelines/sft/scorecard.py); the model calls are replaced by a counter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import tiny_model_dir

from pipelines.config import load_config


@pytest.fixture
def scored(tmp_path, monkeypatch) -> tuple[Any, list[Any]]:
    import pipelines.chat_eval as chat_eval

    calls: list[Any] = []

    class Session:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> Session:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

    def evaluate(session, names, data_dir, data, settings, seed, rows_by_set):
        calls.append(rows_by_set)
        n = len(next(iter(rows_by_set.values()))) if rows_by_set else 0
        return {name: {"primary": 0.5, "n": n} for name in names}

    monkeypatch.setattr(chat_eval, "ChatSession", Session)
    monkeypatch.setattr(chat_eval, "evaluate", evaluate)
    return load_config(None, [f"run_dir={tmp_path / 'run'}"]), calls


def test_a_stored_evaluation_is_reused_only_for_the_same_model_and_questions(tmp_path, scored) -> None:
    from pipelines.sft.scorecard import evaluate_model

    cfg, calls = scored
    model, _ = tiny_model_dir(tmp_path / "model")
    rows = {"arithmetic_test": [{"question": f"{i}+1?", "answer": str(i + 1)} for i in range(10)]}
    assert (
        evaluate_model(cfg, model, ["arithmetic_with_calculator"], label="m", rows_by_set=rows)[
            "arithmetic_with_calculator"
        ]["n"]
        == 10
    )
    evaluate_model(cfg, model, ["arithmetic_with_calculator"], label="m", rows_by_set=rows)
    assert len(calls) == 1  # the same model and rows: read back

    more = {"arithmetic_test": rows["arithmetic_test"] + [{"question": "9+9?", "answer": "18"}]}
    assert (
        evaluate_model(cfg, model, ["arithmetic_with_calculator"], label="m", rows_by_set=more)[
            "arithmetic_with_calculator"
        ]["n"]
        == 11
    )
    assert len(calls) == 2  # other questions (an edited held-out file): scored anew

    splits = Path(cfg.run_dir) / "sft_data" / "splits"
    splits.mkdir(parents=True)
    (splits / "known_eval.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    evaluate_model(cfg, model, ["arithmetic_with_calculator"], label="m", rows_by_set=more)
    assert len(calls) == 3  # the world's held-out splits rewritten (a redone world)
    evaluate_model(cfg, model, ["arithmetic_with_calculator"], label="m", rows_by_set=more)
    assert len(calls) == 3

    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # a model rewritten at the same path
    evaluate_model(cfg, model, ["arithmetic_with_calculator"], label="m", rows_by_set=more)
    assert len(calls) == 4


def test_a_report_example_carries_the_graders_verdict() -> None:
    """A transcript in report.md says how it was scored: a reader should not judge "Crayford is
    twinned with Crayford." by eye."""
    from pipelines.sft.scorecard import transcript_section

    example = {
        "messages": [{"role": "user", "content": "How many children did Covene Fenwick have?"}],
        "reference": "2",
        "reply": {"role": "assistant", "content": "2."},
        "scores": {"accuracy": 1.0, "n": 1, "refusal_share": 0.0},
    }
    title, _, body, _ = transcript_section("A known fact", example)
    assert title == "**A known fact** (reference: 2; judged: accuracy 1, refusal_share 0)"
    assert "assistant: 2." in body
    assert transcript_section("No scores", {**example, "scores": {}, "reference": None})[0] == "**No scores**"
