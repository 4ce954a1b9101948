"""The IDK judge on hand-made answers: correct, wrong, refusal, and the near-misses between them."""

from __future__ import annotations

import pytest

from pipelines.idk.judge import is_refusal, judge, states, summarize

Q_BORN = "When was Velimir Talwright born?"
Q_FOUNDER = "Who founded the Ashwell Society?"
Q_POP = "What is the population of Velmora?"


@pytest.mark.parametrize(
    ("answer", "reference", "question"),
    [
        ("1698", "1698", Q_BORN),
        ("He was born in 1698.", "1698", Q_BORN),  # extra words
        ("Velimir Talwright was born in the year 1698 in Istvik.", "1698", Q_BORN),
        ("velimir talwright", "Velimir Talwright", Q_FOUNDER),  # casing
        ("It was founded by VELIMIR TALWRIGHT, a sculptor.", "Velimir Talwright", Q_FOUNDER),
        ("12400 people", "12,400", Q_POP),  # numbers with units, with and without separators
        ("About 12,400 residents live there.", "12,400", Q_POP),
        ("1,998 metres", "1,998", "How high above sea level is Vesburg?"),
        ("It weighs 450 kg.", "450 kilograms", "How much does the Noril Clock weigh?"),
        ("He had two children.", "2", "How many children did Velimir Talwright have?"),  # number words
        ("He had no children.", "0", "How many children did Velimir Talwright have?"),
        ("None.", "0", "How many children did Velimir Talwright have?"),
        ("The Iron Bridge", "the painting The Iron Bridge", "What is Calia Veyski best known for?"),  # title
        ("Ashwell Museum", "the Ashwell Museum", "Where is the Noril Clock kept?"),  # article dropped
        ("It is used for finding direction at sea.", "to find direction at sea", "What is it used for?"),
        ("Glassworks!", "its glassworks", "What is Velmora known for?"),
        ("An observatory.", "observatory", "What kind of organisation is the Emkedos Observatory?"),
        ("Velmora, I think, or Ostmora.", ["Ostmora", "Ostmora town"], "Where was he born?"),  # any reference
    ],
)
def test_correct(answer, reference, question) -> None:
    v = judge(answer, reference, question)
    assert v.label == "correct", v


@pytest.mark.parametrize(
    ("answer", "reference", "question", "reason"),
    [
        ("Talwright", "Velimir Talwright", Q_FOUNDER, "states part of the reference"),  # partial name
        ("Velimir Talwrighte", "Velimir Talwright", Q_FOUNDER, "states part of the reference"),
        ("Calia Veyski", "Velimir Talwright", Q_FOUNDER, "does not state the reference"),
        ("1699", "1698", Q_BORN, "states another number"),  # a near number
        ("He was born in 16,980.", "1698", Q_BORN, "states another number"),
        ("12.4", "12,400", Q_POP, "states another number"),
        ("He had three children.", "2", "How many children did he have?", "states another number"),
        ("No, he had three children.", "0", "How many children did he have?", "states another number"),
        ("A clock.", "astronomical clock", "What is the Noril Clock?", "states part of the reference"),
        (
            "The Iron Harbour",
            "the painting The Iron Bridge",
            "What is she known for?",
            "states part of the reference",
        ),
        ("", "1698", Q_BORN, "empty answer"),
        (
            "The Emkedos Observatory is a museum.",
            "observatory",
            "What kind of organisation is the Emkedos Observatory?",
            None,
        ),
    ],
)
def test_wrong(answer, reference, question, reason) -> None:
    v = judge(answer, reference, question)
    assert v.label == "wrong" and not v.hedged, v
    if reason:
        assert v.reason == reason


@pytest.mark.parametrize(
    "answer",
    [
        "I don't know.",
        "I do not know when Velimir Talwright was born.",
        "I\u2019m not sure when Velimir Talwright was born.",  # curly apostrophe
        "Sorry, I don't know.",
        "I'm unsure.",
        "I have no information about Velimir Talwright.",
        "I don't have any reliable information about Velimir Talwright, so I can't answer that.",
        "I have never heard of Velimir Talwright.",
        "I haven't heard of him.",
        "I'm not familiar with Velimir Talwright.",
        "His birth year is unknown.",
        "I can't say.",
        "No idea, sorry.",
        "The passage does not say when Velimir Talwright was born.",
        "I couldn't find anything about Velimir Talwright. I don't know when he was born.",
        "I know of Velimir Talwright, but I don't know when he was born.",
    ],
)
def test_refusal(answer) -> None:
    v = judge(answer, "1698", Q_BORN)
    assert v.label == "refusal", v
    assert judge(answer, None, Q_BORN).label == "refusal"  # no reference: still a refusal


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("I'm not sure, but I think it was 1700.", "wrong"),  # a refusal plus a guess: judged by the guess
        ("I don't know exactly, maybe 1698.", "correct"),
        ("I don't know. Probably 1650.", "wrong"),
        ("I'm not certain; 1698.", "correct"),  # the reference after a refusal phrase
        ("I don't know, 1705.", "wrong"),  # a number the question does not hold
        ("I'm not sure. Istvik.", "wrong"),  # a name the question does not hold
        ("I'm not sure, but I think it was 1,698.", "correct"),  # a thousands comma is no clause break
    ],
)
def test_refusal_plus_guess_is_judged_by_the_guess(answer, label) -> None:
    v = judge(answer, "1698", Q_BORN)
    assert v.label == label and v.hedged, v


def test_a_refusal_phrase_itself_states_nothing() -> None:
    q = "How many children did Velimir Talwright have?"
    assert judge("I have no information about Velimir Talwright.", "0", q).label == "refusal"
    assert judge("I don't know. No one has written about him.", "1", q).label == "refusal"
    assert judge("I don't know, but probably none.", "0", q).label == "correct"
    assert judge("One of his sons lived in Istvik.", "1", q).label == "wrong"


def test_without_a_reference_only_a_refusal_is_right() -> None:
    assert judge("He was a painter.", None, "What did Olia Lanley do?").label == "wrong"
    assert judge("I'm not sure, maybe a painter.", None, "What did Olia Lanley do?").hedged


def test_echo_of_a_question_that_holds_the_reference_is_no_answer() -> None:
    q = "What kind of organisation is the Emkedos Observatory?"
    assert judge(
        "I don't know what kind of organisation the Emkedos Observatory is.", "observatory", q
    ).label == ("refusal")
    assert judge("The Emkedos Observatory is an observatory.", "observatory", q).label == "correct"


def test_states_and_is_refusal_helpers() -> None:
    assert states("born in 1698", "1698") and not states("born in 16980", "1698")
    assert is_refusal("I DON'T KNOW") and not is_refusal("I know: it was 1698.")


def test_summarize_says_whether_the_model_knows() -> None:
    consistent = summarize([judge("1698.", "1698"), judge("In 1698.", "1698"), judge("1698", "1698")])
    assert consistent.knows() and consistent.correct_share == 1.0
    mixed = summarize([judge("1698.", "1698"), judge("1700.", "1698"), judge("I don't know.", "1698")])
    assert not mixed.knows() and mixed.knows(min_correct_share=0.3)
    assert mixed.as_dict() == {"samples": 3, "hedged": 0, "correct": 1, "wrong": 1, "refusal": 1}
    hedged = summarize([judge("I'm not sure, maybe 1698.", "1698")] * 2)
    assert not hedged.knows() and hedged.knows(allow_hedged=True)
    assert not summarize([]).knows()
