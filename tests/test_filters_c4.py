"""C4 line filters: which lines go, what the text becomes, when the whole document goes."""

from __future__ import annotations

import pytest

from pipelines.clean.filters.c4 import C4Config, C4QualityFilter, count_sentences

PROSE = [
    "The harbour at Port Wenna was dredged in 1910 so that larger boats could land their catch.",
    "Fishing families moved into the new terraces above the quay, and a school opened two years later.",
    "The lifeboat station, built at the same time, is still staffed by volunteers from the village.",
    "Every August the village holds a regatta that ends with a lantern parade along the harbour wall.",
    "Visitors can walk the coast path north to the lighthouse in about an hour.",
]


def run(text: str, config: C4Config | None = None) -> tuple[str | None, str]:
    doc = {"text": text, "id": "t"}
    return C4QualityFilter(config).decide(doc), doc["text"]


def test_keeps_prose_unchanged() -> None:
    text = "\n".join(PROSE)
    reason, out = run(text)
    assert reason is None
    assert out == text


def test_removes_boilerplate_lines_and_keeps_the_rest() -> None:
    noisy = [
        "Home News",
        PROSE[0],
        "Please enable JavaScript to view the comments.",
        PROSE[1],
        "This site uses cookies to improve your experience.",
        "Read our Privacy Policy and Terms of Use before you continue.",
        PROSE[2],
        "Share",
        PROSE[3] + " [3]",
        PROSE[4],
    ]
    f = C4QualityFilter()
    doc = {"text": "\n".join(noisy)}
    assert f.decide(doc) is None
    assert doc["text"] == "\n".join(PROSE)
    assert f.counts["line_removed:javascript"] == 1
    assert f.counts["line_removed:policy"] == 2
    assert f.counts["line_removed:too_few_words"] == 2


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem_ipsum"),
        ("function init() { return window.location; }", "curly_bracket"),
    ],
)
def test_drops_placeholder_and_code_pages(extra: str, reason: str) -> None:
    assert run("\n".join([*PROSE, extra]))[0] == reason


def test_drops_pages_with_too_few_sentences() -> None:
    assert run("\n".join(PROSE[:3]))[0] == "too_few_sentences"
    assert run("Menu\nLogin\nCart")[0] == "no_lines_left"
    assert run("\n".join(PROSE[:3]), C4Config(min_num_sentences=3))[0] is None


def test_terminal_punctuation_rule_is_off_by_default_as_in_fineweb() -> None:
    text = "\n".join([*PROSE, "A heading line without a full stop at the end"])
    assert run(text)[1] == text
    reason, out = run(text, C4Config(filter_no_terminal_punct=True))
    assert reason is None
    assert out == "\n".join(PROSE)


def test_sentence_counting_matches_spacy_on_common_cases() -> None:
    assert count_sentences("One. Two! Three? Four.") == 4
    assert count_sentences('He said "stop." Then he left.') == 2
    assert count_sentences("Mr. Smith met Dr. Jones in the U.S. last year.") == 1
    assert count_sentences("Prices rose 3.5 percent in 2019.") == 1


@pytest.mark.parametrize(
    "setting", [{"min_num_sentences": -1}, {"min_words_per_line": -2}, {"max_word_length": 0}]
)
def test_thresholds_out_of_range_fail_when_the_config_is_read(setting: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(setting))):
        C4Config(**setting)
