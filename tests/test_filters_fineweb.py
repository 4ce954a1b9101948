"""FineWeb's quality filter, and all four quality filters on real C4 documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pipelines.clean.filters.base import run_steps
from pipelines.clean.filters.fineweb import FineWebQualityConfig, FineWebQualityFilter
from pipelines.clean.steps import QUALITY_STEPS, build_step

PARAGRAPHS = [
    "The observatory on Cairn Hill was founded in 1887 by the county's natural history society.",
    "Its first telescope, a ten-inch refractor, was paid for by subscriptions from local farmers.",
    "Weather records were kept there every day until 1974, which makes them one of the longest series.",
    "The building is now a visitor centre, and the telescope is used on clear winter evenings.",
]


def decide(text: str, config: FineWebQualityConfig | None = None) -> str | None:
    return FineWebQualityFilter(config).decide({"text": text})


def test_keeps_paragraphs_of_prose() -> None:
    assert decide("\n".join(PARAGRAPHS)) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("\n \n", "empty"),
        # headings and menu items: lines that never end in punctuation
        (
            "\n".join(f"Category {i} of the shop: garden tools and outdoor furniture" for i in range(10)),
            "line_punct_ratio",
        ),
        # a list of short lines
        ("\n".join(PARAGRAPHS[:2] + [f"Item {i}." for i in range(8)]), "short_line_ratio"),
        # the same line twice is more than 1% of the characters
        ("\n".join(PARAGRAPHS + PARAGRAPHS[:1]), "char_dup_ratio"),
        # one or two words per line
        ("\n".join(f"Rake{i}." for i in range(10)), "newline_ratio"),
    ],
)
def test_drops_lists_and_repeated_lines(text: str, reason: str) -> None:
    config = FineWebQualityConfig(short_line_thr=1.0) if reason == "newline_ratio" else None
    assert decide(text, config) == reason


def test_thresholds_are_settings() -> None:
    repeated = "\n".join(PARAGRAPHS + PARAGRAPHS[:1])
    assert decide(repeated, FineWebQualityConfig(char_duplicates_ratio=0.5)) is None


def _c4_documents(root: Path) -> list[dict]:
    docs = []
    for path in sorted((root / "fineweb" / "c4_olmo").glob("*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [json.loads(line) for line in f]
    with open(root / "fineweb" / "c4_llamafactory" / "c4_demo.jsonl", encoding="utf-8") as f:
        docs += [json.loads(line) for line in f]
    return [{"id": str(i), "text": d["text"]} for i, d in enumerate(docs)]


def test_real_c4_documents_mostly_pass(shared_data: Path) -> None:
    docs = _c4_documents(shared_data)
    result = run_steps([build_step(name) for name in QUALITY_STEPS], docs)
    assert len(result.kept) + len(result.rejected) == len(docs)
    assert not result.errors
    # C4 is already filtered text; FineWeb's rules (Gopher's mostly) still drop about a quarter of it
    assert len(result.kept) / len(docs) > 0.6
    assert all(d["text"].strip() for d in result.kept)


@pytest.mark.parametrize(
    "setting",
    [
        {"line_punct_thr": 1.2},
        {"short_line_thr": -0.1},
        {"char_duplicates_ratio": 2},
        {"new_line_ratio": -1},
        {"short_line_length": -5},
    ],
)
def test_thresholds_out_of_range_fail_when_the_config_is_read(setting: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(setting))):
        FineWebQualityConfig(**setting)
