"""Probe sets on how tokens think: counting letters and words, comparing decimals; their worked replies
and the scorer that reads any reply back."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal

import pytest

from lm.calculator import calculate
from lm.chat_messages import normalize_conversation, text_of
from pipelines.world.probes import (
    FORMS,
    conversation,
    decimal_kind,
    extract,
    probe_sets,
    prompt,
    reply,
    score,
)


@pytest.fixture(scope="module")
def sets():
    return probe_sets(seed=0, counting=(120, 60), decimal=(120, 60))


def _true_answer(item) -> str:
    if item["kind"] == "count_letter":
        return str(item["text"].lower().count(item["target"]))
    if item["kind"] == "count_word":
        words = re.findall(r"[a-z]+", item["text"].lower())
        return str(words.count(item["target"]))
    a, b = Decimal(item["a"]), Decimal(item["b"])
    return "equal" if a == b else (item["a"] if a > b else item["b"])


def test_items_are_seeded_right_and_split_without_overlap(sets) -> None:
    train, test = sets
    assert (train, test) == probe_sets(seed=0, counting=(120, 60), decimal=(120, 60))
    assert train != probe_sets(seed=1, counting=(120, 60), decimal=(120, 60))[0]
    assert Counter(i["kind"] for i in train) == {"count_letter": 60, "count_word": 60, "decimal_compare": 120}
    assert Counter(i["kind"] for i in test) == {"count_letter": 30, "count_word": 30, "decimal_compare": 60}
    for item in train + test:
        assert item["answer"] == _true_answer(item), item
        assert item["question"]
    words = {
        split: {i["text"] if i["kind"] == "count_letter" else i.get("target") for i in items} - {None}
        for split, items in (("train", train), ("test", test))
    }
    assert not words["train"] & words["test"]
    pairs = {
        split: {frozenset((i["a"], i["b"])) for i in items if "a" in i}
        for split, items in (("train", train), ("test", test))
    }
    assert not pairs["train"] & pairs["test"]
    cases = Counter(i["case"] for i in train + test if i["kind"] == "decimal_compare")
    assert cases["trap"] > 60 and cases["plain"] > 40 and cases["equal"] > 5, cases
    counts = Counter(i["answer"] for i in train + test if i["kind"] != "decimal_compare")
    assert len(counts) >= 4 and counts["0"] > 0  # varied counts, some absent targets


def test_decimal_kind() -> None:
    assert decimal_kind("9.11", "9.9") == "trap" and decimal_kind("9.9", "9.11") == "trap"
    assert decimal_kind("9.45", "9.5") == "trap"
    assert decimal_kind("9.19", "9.2") == "trap" and decimal_kind("9.25", "9.2") == "plain"
    assert decimal_kind("3.5", "4.25") == "plain" and decimal_kind("2.5", "2.50") == "equal"


def test_every_form_of_every_item_scores_right_and_its_calculator_calls_add_up(sets) -> None:
    for item in sets[0] + sets[1]:
        for form in FORMS:
            conv = normalize_conversation(conversation(item, form))
            assert conv["messages"][0]["content"] == prompt(item, form)[0]["content"]
            message = conv["messages"][-1]
            text = text_of(message)
            assert score(item, text), (form, item, text)
            calls = (
                [p for p in message["content"] if p["type"] == "calc"]
                if isinstance(message["content"], list)
                else []
            )
            for c in calls:
                assert c["result"] == calculate(c["expression"])
            if form == "calculator" and item["kind"] != "decimal_compare" and int(item["answer"]) >= 2:
                assert calls and calls[0]["result"] == item["answer"]
            if form == "calculator" and item["kind"] == "decimal_compare":
                diff = Decimal(calls[0]["result"])
                assert (diff > 0, diff < 0) == (
                    Decimal(item["a"]) > Decimal(item["b"]),
                    Decimal(item["a"]) < Decimal(item["b"]),
                )
            if form != "direct":
                assert "\n" in text  # the working comes before the final sentence


def test_reasoning_spells_out_with_a_running_count() -> None:
    item = {
        "kind": "count_letter",
        "text": "strawberry",
        "target": "r",
        "answer": "3",
        "question": "q",
        "id": "x",
    }
    assert reply(item, "reasoning").startswith(
        "Going through the letters one by one: s, t, r (1), a, w, b, e, r (2), r (3), y."
    )
    parts = reply(item, "calculator")
    assert [p for p in parts if p["type"] == "calc"] == [
        {"type": "calc", "expression": "1+1+1", "result": "3"}
    ]
    dec = {"kind": "decimal_compare", "a": "9.11", "b": "9.9", "answer": "9.9", "question": "q", "id": "y"}
    assert "9.11 and 9.90" in reply(dec, "reasoning") and "11 and 90" in reply(dec, "reasoning")
    assert reply(dec, "direct") == "9.9 is larger."
    with pytest.raises(ValueError, match="forms"):
        reply(dec, "guess")


STRAW = {"kind": "count_letter", "text": "strawberry", "target": "r", "answer": "3"}
DEC = {"kind": "decimal_compare", "a": "9.11", "b": "9.9", "answer": "9.9"}
EQ = {"kind": "decimal_compare", "a": "2.5", "b": "2.50", "answer": "equal"}


@pytest.mark.parametrize(
    ("item", "text", "right"),
    [
        (STRAW, "3", True),
        (STRAW, "There are 3 r's in strawberry.", True),
        (STRAW, "The letter r appears three times.", True),
        (STRAW, "s, t, r (1), a, w, b, e, r (2), r (3), y. So it appears 3 times, not 2.", True),
        (STRAW, "The count is 1+1+1 = 3.", True),
        (STRAW, "There are 2 r's in strawberry.", False),
        (STRAW, "The letter 'r' appears twice in 'strawberry'.", False),
        (STRAW, "I cannot count letters.", False),
        (DEC, "9.9", True),
        (DEC, "9.9 is larger.", True),
        (DEC, "The larger number is 9.9.", True),
        (DEC, "9.9 is bigger than 9.11.", True),
        (DEC, "9.11 is smaller than 9.9.", True),
        (DEC, "9.90 is greater.", True),
        (DEC, "9.11 is larger.", False),
        (DEC, "9.11 is larger than 9.9.", False),
        (DEC, "9.9 is less than 9.11.", False),
        (DEC, "They are equal.", False),
        (DEC, "It depends.", False),
        (EQ, "2.5 and 2.50 are equal.", True),
        (EQ, "They are the same number.", True),
        (EQ, "2.50 is larger.", False),
    ],
)
def test_scorer_reads_other_wordings(item, text, right) -> None:
    assert score(item, text) is right, extract(item, text)
