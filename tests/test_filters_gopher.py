"""Gopher repetition and quality filters, and the n-gram statistics they rest on."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pipelines.clean.filters.gopher import (
    GopherQualityConfig,
    GopherQualityFilter,
    GopherRepetitionConfig,
    GopherRepetitionFilter,
)
from pipelines.clean.filters.text_stats import NGramStats, tokenize, word_counts

ARTICLE = (
    "The river town of Millbrook grew up around a grain mill that was built in 1843 by two brothers "
    "from Ohio. For most of the nineteenth century the mill was the largest employer in the county, "
    "and the town's main street still follows the old cart road that led to it.\n"
    "Today the mill houses a small museum with a working water wheel. Volunteers give tours on "
    "weekends during the summer, and school groups visit throughout the year to learn how flour was "
    "made before electricity reached the valley.\n"
    "The museum also keeps the diaries of the miller's wife, which describe the floods of 1867 and "
    "1881 in careful detail. Historians have used them to reconstruct how the river changed its course "
    "after the second flood and why the lower part of the town was abandoned."
)


def keep(step, text: str) -> str | None:
    return step.decide({"text": text, "id": "t"})


# ---- the n-gram statistics, against plain reimplementations of the Gopher definitions ----


def naive_top_chars(words: list[str], n: int) -> int:
    grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return len(gram) * count


def naive_duplicate_chars(words: list[str], n: int) -> int:
    seen: set[tuple[str, ...]] = set()
    repeated, i = 0, 0
    while i < len(words) - n + 1:
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeated += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


@pytest.mark.parametrize("seed", range(25))
def test_ngram_stats_match_the_definitions(seed: int) -> None:
    rng = random.Random(seed)
    vocabulary = ["a", "bb", "ccc", "the", "of", ".", ",", "river", "mill"][: rng.randint(2, 9)]
    words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 120))]
    stats = NGramStats(words)
    for n in (2, 3, 4):
        exact = naive_top_chars(words, n)
        assert stats.top_ngram_chars(n) == exact
        for limit in {max(0, exact - 1), exact, exact + 1}:
            assert stats.top_ngram_exceeds(n, limit) == (exact > limit)
    for n in range(5, 11):
        exact = naive_duplicate_chars(words, n)
        assert NGramStats(words).duplicate_ngram_chars(n) == exact
        for limit in {max(0, exact - 1), exact, exact + 1}:
            assert stats.duplicate_ngrams_exceed(n, limit) == (exact > limit)


def test_tokens_follow_spacy_conventions() -> None:
    tokens = tokenize("Mr. Smith didn't pay $3.50 for the U.S. well-known e-mail... (IL-3), ok?")
    assert tokens == [
        "Mr.", "Smith", "didn", "'t", "pay", "$", "3.50", "for", "the", "U.S.", "well", "-", "known",
        "e", "-", "mail", "...", "(", "IL-3", ")", ",", "ok", "?",
    ]  # fmt: skip
    symbols = {"$", "-", "...", "(", ")", ",", "?"}
    words, chars, alpha = word_counts(tokens)
    assert words == len(tokens) - 8  # $ - - ... ( ) , ? are only punctuation
    assert chars == sum(len(t) for t in tokens if t not in symbols)
    assert alpha == len(tokens) - 9  # the 8 symbols and 3.50 have no letter


# ---- repetition ----


def test_repetition_keeps_an_ordinary_article() -> None:
    assert keep(GopherRepetitionFilter(), ARTICLE) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Buy cheap watches online today.\n" * 8 + ARTICLE, "dup_line_frac"),
        (ARTICLE + "\n\n" + "Subscribe to our newsletter for more stories.\n\n" * 3, "dup_para_frac"),
        (
            "Click here to win a free phone now! " * 30,
            "top_2_gram",
        ),
    ],
)
def test_repetition_drops_repetitive_text(text: str, reason: str) -> None:
    assert keep(GopherRepetitionFilter(), text) == reason


def test_repetition_catches_repeated_long_phrases() -> None:
    phrase = "we ship every order within two business days from our warehouse in Leeds"
    words = ARTICLE.split()
    text = (
        " ".join(words[:40]) + f" {phrase}. " + " ".join(words[40:80]) + f" {phrase}. " + " ".join(words[80:])
    )
    text += f" {phrase}. {phrase}."
    # 14% of the characters repeat as 5-grams (limit 15%), 16% as 6-grams (limit 14%)
    assert keep(GopherRepetitionFilter(), text) == "dup_6_gram"
    relaxed = GopherRepetitionConfig(dup_ngram_char_frac={5: 0.9, 6: 0.9, 10: 0.9})
    assert keep(GopherRepetitionFilter(relaxed), text) is None


# ---- quality ----


def test_quality_keeps_an_ordinary_article() -> None:
    assert keep(GopherQualityFilter(), ARTICLE) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Welcome to the home page of the mill museum.", "too_few_words"),
        (" ".join(["a", "be", "to", "of", "an", "is", "it", "in", "on", "at"] * 6), "mean_word_length_low"),
        (" ".join(["internationalization", "characterization", "of", "the"] * 20), "mean_word_length_high"),
        (ARTICLE + " " + "#travel #summer #mill #river " * 20, "too_many_hashes"),
        (" ".join(w + "..." * (i % 4 == 3) for i, w in enumerate(ARTICLE.split())), "too_many_ellipses"),
        (
            "\n".join(f"- item number {i} of the catalogue with parts" for i in range(40)),
            "too_many_bullet_lines",
        ),
        (
            "\n".join(f"Read the whole story about the mill and the river number {i}..." for i in range(6))
            + "\n"
            + ARTICLE,
            "too_many_ellipsis_lines",
        ),
        (ARTICLE + " " + " ".join(f"{i}.{i} 20{i} {i * 7}/{i}" for i in range(60)), "too_few_alpha_words"),
        (
            " ".join(["Millbrook", "river", "grain", "mill", "museum", "flood", "valley", "diary"] * 10),
            "too_few_stop_words",
        ),
    ],
)
def test_quality_drops_what_is_not_prose(text: str, reason: str) -> None:
    assert keep(GopherQualityFilter(), text) == reason


def test_quality_thresholds_are_settings() -> None:
    short = "Welcome to the home page of the mill museum, and the river walk."
    assert keep(GopherQualityFilter(GopherQualityConfig(min_words=5)), short) is None
    assert keep(GopherQualityFilter(GopherQualityConfig(min_words=None)), short) is None
    with pytest.raises(ValueError, match="min_wordz"):
        GopherQualityConfig(min_wordz=3)


@pytest.mark.parametrize(
    ("config_class", "setting"),
    [
        (GopherQualityConfig, {"min_words": -1}),
        (GopherQualityConfig, {"min_alpha_words_ratio": 80}),  # a percentage where a fraction goes
        (GopherQualityConfig, {"max_mean_word_length": -3}),
        (GopherRepetitionConfig, {"dup_line_frac": 30}),
        (GopherRepetitionConfig, {"top_ngram_char_frac": {2: 1.5}}),
        (GopherRepetitionConfig, {"dup_ngram_char_frac": {0: 0.1}}),
    ],
)
def test_thresholds_out_of_range_fail_when_the_config_is_read(config_class, setting) -> None:
    with pytest.raises(ValueError, match=next(iter(setting))):
        config_class(**setting)
    if not isinstance(next(iter(setting.values())), dict):
        config_class(**dict.fromkeys(setting))  # None still turns the rule off


# ---- what a rejected row says ----


def test_every_gopher_rejection_says_the_measured_value_and_the_threshold() -> None:
    """The reason stays the counted rule; the detail is the number it measured against the threshold."""
    from pipelines.clean.filters.base import run_steps

    phrase = "we ship every order within two business days from our warehouse in Leeds"
    words = ARTICLE.split()
    repeated = f"{' '.join(words[:40])} {phrase}. {' '.join(words[40:80])} {phrase}. {' '.join(words[80:])}"
    repeated += f" {phrase}. {phrase}."
    quality, repetition = GopherQualityFilter(), GopherRepetitionFilter()
    cases = [
        (quality, "Welcome to the home page of the mill museum.", "too_few_words", "word count 9 < 50"),
        (
            quality,
            " ".join(["a", "be", "to", "of", "an"] * 12),
            "mean_word_length_low",
            "mean word length 1.8 < 3",
        ),
        (
            quality,
            ARTICLE + " #travel #summer #mill #river" * 20,
            "too_many_hashes",
            "'#' per token 80/307 = 0.261 > 0.1",
        ),
        (
            quality,
            "\n".join(f"Read the whole story about the mill and the river number {i}..." for i in range(6))
            + "\n"
            + ARTICLE,
            "too_many_ellipsis_lines",
            "lines ending with an ellipsis 6/9 = 0.667 > 0.3",
        ),
        (
            quality,
            " ".join(["Millbrook", "river", "grain", "mill", "museum", "flood", "valley", "diary"] * 10),
            "too_few_stop_words",
            "distinct stop words 0 < 2",
        ),
        (
            repetition,
            "Buy cheap watches online today.\n" * 8 + ARTICLE,
            "dup_line_frac",
            "duplicate lines 7/11 = 0.636 > 0.3",
        ),
        (
            repetition,
            "Click here to win a free phone now! " * 30,
            "top_2_gram",
            "characters in the most frequent 2-gram 300/1080 = 0.278 > 0.2",
        ),
        (repetition, repeated, "dup_6_gram", "characters in repeated 6-grams 164/1054 = 0.156 > 0.14"),
    ]
    for step, text, reason, detail in cases:
        result = run_steps([step], [{"text": text, "id": reason}])
        assert [(r["reason"], r["detail"]) for r in result.rejected] == [(reason, detail)]


def test_a_measured_value_next_to_its_threshold_shows_the_digits_that_differ() -> None:
    """A mean word length of 10.004 over 10 must not read "10 > 10"."""
    text = "abcdefghij " * 249 + "abcdefghijk"
    drop = GopherQualityFilter().decide({"text": text})
    assert drop == "mean_word_length_high" and drop.detail == "mean word length 10.004 > 10"
    from pipelines.clean.filters.gopher import _fraction, _measured

    # the shown value is on the threshold's side of the sign, and the threshold is shown in full
    assert _measured("x", 0.12345, ">", 0.1234) == "x 0.1235 > 0.1234"
    assert _fraction("x", 1, 3, ">", 0.3333) == "x 1/3 = 0.33333 > 0.3333"
    assert _measured("x", 0.0999996, "<", 0.1) == "x 0.0999996 < 0.1"
    assert _measured("x", 0.5, ">", 0.123456789) == "x 0.5 > 0.123456789"
