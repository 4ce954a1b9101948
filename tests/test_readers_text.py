"""Plain text inputs of the clean stage (pipelines/clean/formats/text.py): one document a file, or
split by line, paragraph or separator, streamed; charsets, BOMs, byte limits and broken files; and
which text files a data folder leaves out as documentation."""

from __future__ import annotations

import codecs
import gzip
import os
from pathlib import Path

import pytest
from test_readers import C4_ROW, assert_one_outcome_each, split, write_jsonl

from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import ROW_FIELDS, as_row
from pipelines.clean.readers import read_file
from pipelines.inputs import InputFile, expand_inputs


def test_plain_text_files_are_one_document_each(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("Call me Ishmael. Some years ago, never mind how long precisely.")
    (books / "b.md").write_text("[![build](badge.svg)](ci)\n\n# Notes\n\n{not json} and <b>not html</b>")
    (books / "c.txt").write_bytes(
        "Café au lait, crème brûlée, déjà vu, à la carte, naïveté.".encode("latin-1")
    )
    (books / "d.txt.gz").write_bytes(gzip.compress(b"A gzipped chapter."))
    (books / "e.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))  # an image saved as .txt
    (books / "f.txt").write_bytes(b"")
    files, errors = expand_inputs([str(books)])
    assert not errors and [f.format for f in files] == ["text"] * 6
    got = {Path(f.path).name: list(read_file(f)) for f in files}
    kept = {name: items[0] for name, items in got.items() if not items[0].get("_error")}
    assert sorted(kept) == ["a.txt", "b.md", "c.txt", "d.txt.gz"]
    assert all(r["content_type"] == "text" and r["source_format"] == "text" for r in kept.values())
    assert kept["b.md"]["content"].startswith("[![build]")  # "[" and "{" do not make it JSON
    assert kept["c.txt"]["content"].startswith("Café au lait") and kept["c.txt"]["decode_errors"] == 0
    assert kept["d.txt.gz"]["content"] == "A gzipped chapter."
    assert [got["e.txt"][0]["reason"], got["f.txt"][0]["reason"]] == ["non_text_payload", "empty_file"]
    assert all(set(as_row(items[0])) == set(ROW_FIELDS) for items in got.values())


def test_real_text_files_split_as_their_layout_says(shared_data):
    text = shared_data / "text"
    stories = list(
        read_file(InputFile(str(text / "tinystories_sample.txt"), "text"), ReadConfig(text_split="separator"))
    )
    assert_one_outcome_each(stories, 5)
    assert all(r["content"][:3] in ("Onc", "One") and "<|endoftext|>" not in r["content"] for r in stories)
    wiki = list(read_file(InputFile(str(text / "wiki_demo.txt"), "text"), ReadConfig(text_split="line")))
    assert_one_outcome_each(wiki, 30)  # one Wikipedia article a line
    assert wiki[0]["content"].startswith("Anarchism is a political philosophy")
    (play,) = read_file(InputFile(str(text / "tinyshakespeare_input.txt"), "text"))  # text_split: file
    assert len(play["content"]) == 1115394 and play["content"].startswith("First Citizen:")


@pytest.mark.parametrize("chunk", [7, 1 << 20])  # pieces and ends split across reads, and not
def test_text_split_streams_pieces_and_reports_the_bad_ones(tmp_path, monkeypatch, chunk):
    from pipelines.clean.formats import text as text_format

    monkeypatch.setattr(text_format, "CHUNK", chunk)
    long = "x" * 300
    body = f"first para\r\nstill first\r\n\r\n  \n\n{long}\n\nthird, café\n\n\n"
    path = tmp_path / "paras.txt"
    path.write_bytes(body.encode())  # "é" is two bytes: a 7-byte read splits it
    items = list(
        read_file(InputFile(str(path), "text"), ReadConfig(text_split="paragraph", max_document_bytes=100))
    )
    assert_one_outcome_each(items, 3)
    docs, errors = split(items)
    assert [d["content"] for d in docs] == ["first para\r\nstill first", "third, café"]
    assert [e["reason"] for e in errors] == ["document_too_large"] and errors[0]["record_index"] == 1
    lines = "".join(f"line {i}\n" for i in range(2000)).encode()
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(lines)[:-200])  # a download that stopped early
    items = list(read_file(InputFile(str(tmp_path / "cut.txt.gz"), "text"), ReadConfig(text_split="line")))
    docs, errors = split(items)
    assert [e["reason"] for e in errors] == ["truncated_input"] and len(docs) > 100
    assert [d["content"] for d in docs] == [f"line {i}" for i in range(len(docs))]


def test_text_split_charset_bom_and_byte_limit(tmp_path, monkeypatch):
    from pipelines.clean.formats import text as text_format

    monkeypatch.setattr(text_format, "CHUNK", 64)  # the head that sets the charset is pure ASCII
    mixed = tmp_path / "mixed.txt"
    mixed.write_bytes(b"ascii line\n" * 8 + "café crème\n".encode("latin-1") + "日本語の文\n".encode())
    got = split(
        list(read_file(InputFile(str(mixed), "text"), ReadConfig(text_split="line", max_document_bytes=12)))
    )
    assert [d["content"] for d in got[0]][-1:] == ["café crème"] and got[0][-1]["decode_errors"] == 0
    assert [e["reason"] for e in got[1]] == ["document_too_large"]  # 5 characters, 15 bytes: over 12
    bom = tmp_path / "bom.txt"
    bom.write_bytes(codecs.BOM_UTF8 + b"hello\nworld\n")
    assert [r["content"] for r in read_file(InputFile(str(bom), "text"), ReadConfig(text_split="line"))] == [
        "hello",
        "world",
    ]
    u16 = tmp_path / "u16.txt"
    u16.write_bytes(codecs.BOM_UTF16_LE + "héllo\n\nwörld".encode("utf-16-le"))
    paras = list(read_file(InputFile(str(u16), "text"), ReadConfig(text_split="paragraph")))
    assert [r["content"] for r in paras] == ["héllo", "wörld"]


def test_text_split_after_a_too_large_piece_keeps_the_next_one(tmp_path, monkeypatch):
    """A long blank line in a paragraph break that crossed a read, right after a piece too large to
    keep, swallowed the next paragraph: no document and no error row."""
    from pipelines.clean.formats import text as text_format

    monkeypatch.setattr(text_format, "CHUNK", 1024)
    path = tmp_path / "p.txt"
    path.write_bytes(b"w" * 1000 + b"\r\n" + b"\t" * 60 + b"\r\n" + b"second paragraph\n")
    items = list(
        read_file(InputFile(str(path), "text"), ReadConfig(text_split="paragraph", max_document_bytes=500))
    )
    assert [(i["record_index"], i.get("reason") or i["content"]) for i in items] == [
        (0, "document_too_large"),
        (1, "second paragraph"),
    ]


def test_text_split_agrees_with_splitting_the_whole_text_at_any_read_size(tmp_path, monkeypatch):
    """Pieces, ends and characters cut across reads of 1 to 13 bytes give what splitting the whole
    text at once gives (a seeded fuzz of 600 files)."""
    import random
    import re

    from pipelines.clean.formats import text as text_format

    ends = {"line": r"\r?\n", "paragraph": r"\r?\n(?:[ \t]*\r?\n)+", "separator": re.escape("<|endoftext|>")}
    atoms = ["a", "b", " ", "\n", "\r\n", "\t", "é", "日", "😀", "<|e", "<|endoftext|>", "\n  \n", "\n\n"]
    rng = random.Random(0)
    path = tmp_path / "f.txt"
    for _ in range(600):
        mode, limit = rng.choice(list(ends)), rng.choice([5, 50, 1000])
        body = "x" + "".join(rng.choice(atoms) for _ in range(rng.randint(0, 60)))
        path.write_bytes(body.encode())
        monkeypatch.setattr(text_format, "CHUNK", rng.choice([1, 2, 3, 5, 8, 13]))
        items = list(
            read_file(InputFile(str(path), "text"), ReadConfig(text_split=mode, max_document_bytes=limit))
        )
        expected = []
        for piece in re.split(ends[mode], body):
            if piece.strip():
                kept = re.sub(r"\A(?:[ \t]*\r?\n)+", "", piece).rstrip(" \t\r\n")
                expected.append(None if len(kept.encode()) > limit else kept)
        assert [None if i.get("_error") else i["content"] for i in items] == expected, (mode, limit, body)
        assert_one_outcome_each(items, len(expected))


def test_documentation_beside_data_files_is_left_out_unless_named(tmp_path):
    write_jsonl(tmp_path / "part.jsonl", [C4_ROW])
    (tmp_path / "README.md").write_text("# How this dump was made")
    (tmp_path / "PROVENANCE.md").write_text("# Where it came from")
    (tmp_path / "chapter-1.txt").write_text("It was a bright cold day in April.")
    files, errors = expand_inputs([str(tmp_path)])
    assert not errors and [Path(f.path).name for f in files] == ["chapter-1.txt", "part.jsonl"]
    globbed, _ = expand_inputs([str(tmp_path / "*")])
    assert [Path(f.path).name for f in globbed] == ["chapter-1.txt", "part.jsonl"]
    named, _ = expand_inputs([str(tmp_path / "README.md")])
    assert [r["content"] for f in named for r in read_file(f)] == ["# How this dump was made"]
    notes = tmp_path / "notes"  # a folder of documents only: its README is one of them
    notes.mkdir()
    (notes / "README.md").write_text("# My notes")
    (notes / "ideas.md").write_text("# Ideas")
    assert len(expand_inputs([str(notes)])[0]) == 2


def test_files_a_folder_leaves_out_are_named_and_a_file_given_twice_is_read_once(tmp_path, caplog):
    """An ARC file, Heritrix's in-progress ``.warc.gz.open`` or a dated name was skipped with a log line
    only, a folder of them "held no data files", and a file named twice (or through a link) was read
    twice."""
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    write_jsonl(crawl / "part.jsonl", [C4_ROW])
    for name in ("IA-001.arc.gz", "heritrix-1.warc.gz.open", "crawl.2020-08-08"):
        (crawl / name).write_bytes(b"\x1f\x8b not read")
    with caplog.at_level("INFO", logger="pipelines.inputs"):
        files, errors = expand_inputs([str(crawl)])
    assert not errors and [Path(f.path).name for f in files] == ["part.jsonl"]
    (said,) = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert "left out 3 file(s)" in said and "IA-001.arc.gz" in said and "name one on its own" in said
    arcs = tmp_path / "arcs"
    arcs.mkdir()
    for name in ("a.arc.gz", "b.arc.gz"):
        (arcs / name).write_bytes(b"\x1f\x8b not read")
    (error,) = expand_inputs([str(arcs)])[1]
    assert error["reason"] == "no_match" and "left out 2 file(s) of no data format by name" in error["error"]
    os.symlink(crawl / "part.jsonl", tmp_path / "link.jsonl")
    twice, _ = expand_inputs([str(crawl / "part.jsonl"), str(crawl), str(tmp_path / "link.jsonl")])
    assert [f.path for f in twice] == [str(crawl / "part.jsonl")]
