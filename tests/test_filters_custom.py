"""Custom steps named by dotted path: the contract, and clear errors."""

from __future__ import annotations

import pytest

from pipelines.clean.filters.base import run_steps
from pipelines.clean.filters.custom import CustomStep, CustomStepConfig

MODULE = """
def no_shouting(docs, max_caps=0.5):
    return ["shouting" if sum(c.isupper() for c in d["text"]) > max_caps * len(d["text"]) else None
            for d in docs]

def keep_even(docs):
    return [int(d["id"]) % 2 == 0 for d in docs]

def add_length(docs, field="chars"):
    return [{**d, field: len(d["text"])} for d in docs]

def explode_on_bad(docs):
    if any(d["text"] == "bad" for d in docs):
        raise RuntimeError("cannot handle bad")
    return [None for d in docs]

def too_few(docs):
    return []

def fresh_dicts(docs):
    return [{"id": d["id"], "text": d["text"].upper()} for d in docs]

NOT_CALLABLE = 3
"""


@pytest.fixture()
def user_module(write_module) -> str:
    return write_module(MODULE, "user_steps")


def docs(*texts: str) -> list[dict]:
    return [{"id": str(i), "text": t} for i, t in enumerate(texts)]


def test_filter_with_reasons_and_args(user_module: str) -> None:
    step = CustomStep(CustomStepConfig(function=f"{user_module}:no_shouting", args={"max_caps": 0.3}))
    assert step.name == "no_shouting"
    result = run_steps([step], docs("a calm sentence", "BUY NOW!!! LIMITED OFFER"))
    assert [d["text"] for d in result.kept] == ["a calm sentence"]
    assert result.rejected[0]["step"] == "no_shouting"
    assert result.rejected[0]["reason"] == "shouting"


def test_filter_with_booleans(user_module: str) -> None:
    step = CustomStep(CustomStepConfig(function=f"{user_module}:keep_even", name="even"))
    result = run_steps([step], docs("a", "b", "c"))
    assert [d["id"] for d in result.kept] == ["0", "2"]
    assert result.drops == {("even", "rejected"): 1}


def test_mapper_replaces_documents(user_module: str) -> None:
    step = CustomStep(
        CustomStepConfig(function=f"{user_module}:add_length", kind="mapper", args={"field": "n"})
    )
    result = run_steps([step], docs("abc", "hello"))
    assert [d["n"] for d in result.kept] == [3, 5]


def test_a_mapper_building_fresh_dicts_keeps_the_pipelines_bookkeeping(user_module: str) -> None:
    step = CustomStep(CustomStepConfig(function=f"{user_module}:fresh_dicts", kind="mapper"))
    result = run_steps([step], [{**d, "_key": f"k{d['id']}"} for d in docs("abc", "hello")])
    assert [(d["text"], d["_key"]) for d in result.kept] == [("ABC", "k0"), ("HELLO", "k1")]


def test_a_crash_costs_only_the_bad_document(user_module: str) -> None:
    step = CustomStep(CustomStepConfig(function=f"{user_module}:explode_on_bad"))
    result = run_steps([step], docs("good", "bad", "fine"))
    assert [d["text"] for d in result.kept] == ["good", "fine"]
    assert [d["text"] for d in result.errors] == ["bad"]
    assert "cannot handle bad" in result.errors[0]["error"]


def test_wrong_number_of_answers_is_an_error(user_module: str) -> None:
    step = CustomStep(CustomStepConfig(function=f"{user_module}:too_few"))
    result = run_steps([step], docs("a", "b"))
    assert len(result.errors) == 2
    assert "returned 0 answers" in result.errors[0]["error"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon_here", "package.module:function"),
        ("surely_missing_module_xyz:fn", "surely_missing_module_xyz"),
        ("{module}:missing_function", "missing_function"),
        ("{module}:NOT_CALLABLE", "not callable"),
    ],
)
def test_bad_paths_fail_at_construction(user_module: str, path: str, message: str) -> None:
    path = path.format(module=user_module)
    with pytest.raises(ValueError, match=message) as info:
        CustomStep(CustomStepConfig(function=path))
    assert path in str(info.value)
