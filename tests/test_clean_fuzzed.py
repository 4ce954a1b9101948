"""Crawl and record files that broke the clean stage's readers (found by fuzzing mutated real files):
each keeps its good records and says what was wrong with the others (pipelines/clean/formats,
pipelines/clean/bounded.py, pipelines/decode.py, pipelines/inputs.py)."""

from __future__ import annotations

import codecs
import json
import os
import resource
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import from_mapping
from pipelines.clean.readers import read_file
from pipelines.decode import decode_text
from pipelines.inputs import InputFile, expand_inputs


def _rows(path: Path) -> tuple[list[str], list[tuple[str, str]]]:
    rows = list(read_file(InputFile(str(path))))
    kept = [r["content"] for r in rows if not r.get("_error")]
    return kept, [(r["reason"], r["error"]) for r in rows if r.get("_error")]


def test_a_deeply_nested_array_item_is_one_bad_row_in_bounded_memory(tmp_path) -> None:
    """ijson.parse kept a prefix string per level: 100,000 levels in a 200 KB file took 23 GB."""
    path = tmp_path / "deep.json"
    path.write_bytes(
        b'[{"text": "a"}, {"text": "hi", "m": ' + b"[" * 100_000 + b"]" * 100_000 + b'}, {"text": "b"}]'
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept, bad = _rows(path)
    assert kept == ["a", "b"] and bad == [("invalid_json", "array item nested deeper than 256 levels")]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: far below GBs


def test_what_follows_a_json_array_and_a_bom_are_read(tmp_path) -> None:
    """A second array, or JSON lines after the first, were dropped without a row; a BOM lost the file."""
    two = tmp_path / "two.json"
    two.write_text('[{"text": "a"}, {"text": "b"}]\n[{"text": "c"}]\n{"text": "d"}\n')
    assert _rows(two) == (["a", "b", "c", "d"], [])
    bom_array = tmp_path / "bom.json"
    bom_array.write_bytes(codecs.BOM_UTF8 + b'[{"text": "a"}, {"text": "b"}]')
    assert _rows(bom_array) == (["a", "b"], [])
    bom_lines = tmp_path / "bom.jsonl"
    bom_lines.write_bytes(codecs.BOM_UTF8 + b'{"text": "a"}\r\n{"text": "b"}\r\n')
    assert _rows(bom_lines) == (["a", "b"], [])


def test_a_records_own_language_must_look_like_a_language_tag(tmp_path) -> None:
    """The output is partitioned by language: 300 characters failed the whole stage (file name too
    long), and "../x" or "en/fr" made odd folders."""
    f = InputFile(str(tmp_path / "x.jsonl"))
    for given, kept in (("en", "en"), ("eng_Latn", "eng_Latn"), ("zh-Hans", "zh-Hans"), ("x" * 300, None),
                        ("../../x", None), ("en/fr", None), ("en\x00x", None), (5, None)):  # fmt: skip
        assert (
            from_mapping({"text": "t", "language": given}, f, 0, ReadConfig(), "jsonl")["language"] == kept
        ), given
    score = from_mapping({"text": "t", "language_score": 10**400}, f, 0, ReadConfig(), "jsonl")
    assert score["content"] == "t" and score["language_score"] is None  # kept, its score dropped


def test_a_charset_label_that_is_not_a_text_encoding_falls_back(tmp_path) -> None:
    """Python's "hex", "base64", "zlib" and "rot13" codecs are not charsets: a page labelled so was lost,
    and in a parquet file every row after it."""
    data = "café naïve".encode("cp1252")
    for label in ("hex", "base64", "zlib", "rot13", "undefined"):
        assert decode_text(data, [label])[:2] == ("café naïve", "cp1252"), label
    html = [f'<html><head><meta charset="{c}"></head><body><p>caf\xe9 {i}</p></body></html>'.encode("cp1252")
            for i, c in enumerate(["utf-8", "hex", "utf-8"])]  # fmt: skip
    path = tmp_path / "pages.parquet"
    pq.write_table(pa.table({"html": html, "url": [f"http://x/{i}" for i in range(3)]}), path)
    rows = list(read_file(InputFile(str(path))))
    assert len(rows) == 3 and not [r for r in rows if r.get("_error")]


def test_a_named_pipe_is_an_unreadable_input_not_a_hang(tmp_path) -> None:
    (tmp_path / "good.jsonl").write_text('{"text": "a"}\n')
    os.mkfifo(tmp_path / "stream.jsonl")
    files, errors = expand_inputs([str(tmp_path)])
    assert [Path(f.path).name for f in files] == ["good.jsonl"]
    assert [(e["reason"], Path(e["file_path"]).name) for e in errors] == [("unreadable", "stream.jsonl")]


def test_linked_folders_are_read_once_and_a_link_loop_ends(tmp_path) -> None:
    """A symlinked subfolder was skipped without a word."""
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "real" / "a.jsonl").write_text(json.dumps({"text": "a"}) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.jsonl").write_text(json.dumps({"text": "b"}) + "\n")
    (data / "linked").symlink_to(elsewhere)
    (data / "again").symlink_to(data / "real")  # the same files through a second path
    (data / "real" / "up").symlink_to(data)  # a loop
    files, errors = expand_inputs([str(data)])
    assert sorted(Path(f.path).name for f in files) == ["a.jsonl", "b.jsonl"] and errors == []
