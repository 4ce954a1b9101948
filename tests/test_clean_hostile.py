"""Hostile input to the clean stage: each gets a one-line error before any work, or an error row with
the other records kept, and never unbounded memory.

The bombs are built here: a few hundred KB of gzip that inflate to 200 MB, a JSON array far larger
than the peak memory the reader is allowed while reading it. Memory is checked with tracemalloc
(Python allocations: the inflated bytes, the parsed items, the reader's buffers).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import tracemalloc
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.clean.config import ReadConfig
from pipelines.clean.readers import read_file
from pipelines.inputs import InputFile

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
BOMB_MB = 200
ARTICLE = "<html><body><article><h1>{0}</h1><p>{0} is a fine page with enough words to keep.</p></article></body></html>"


def gzip_of_zeros(mb: int, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
    """gzip of ``prefix + mb MiB of zero bytes + suffix``, built in pieces (never the whole in memory)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(prefix)]
    zeros = bytes(MB)
    out += [z.compress(zeros) for _ in range(mb)]
    out += [z.compress(suffix), z.flush()]
    return b"".join(out)


def warc_head(url: str, length: int) -> bytes:
    """The WARC headers of a response record whose block is ``length`` bytes."""
    headers = [
        "WARC/1.1",
        "WARC-Type: response",
        "WARC-Date: 2024-05-18T01:58:10Z",
        f"WARC-Record-ID: <urn:uuid:{uuid.uuid4()}>",
        f"WARC-Target-URI: {url}",
        "Content-Type: application/http; msgtype=response",
        f"Content-Length: {length}",
    ]
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def warc_response(url: str, http_headers: list[str], body: bytes) -> bytes:
    block = ("\r\n".join(["HTTP/1.1 200 OK", *http_headers]) + "\r\n\r\n").encode() + body
    return warc_head(url, len(block)) + block + b"\r\n\r\n"


@contextlib.contextmanager
def peak_memory() -> Iterator[dict[str, int]]:
    tracemalloc.start()
    out: dict[str, int] = {}
    try:
        yield out
    finally:
        out["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def read_all(path: Path, fmt: str, **cfg) -> list[dict]:
    return list(read_file(InputFile(str(path), fmt), ReadConfig(**cfg)))


# ---- bombs and oversized input: an error row for that record, the others kept ---------------------


def test_gzip_encoded_http_body_that_inflates_past_the_bound_is_one_error_row(tmp_path):
    bomb = gzip_of_zeros(BOMB_MB, prefix=b"<html><body>")
    assert len(bomb) < MB  # a small record on disk: the size check before reading lets it through
    page = ARTICLE.format("kept").encode()
    records = [
        warc_response("http://ok.example/1", ["Content-Type: text/html"], page),
        warc_response("http://bomb.example/", ["Content-Type: text/html", "Content-Encoding: gzip"], bomb),
        warc_response(
            "http://ok.example/2",
            ["Content-Type: text/html", "Content-Encoding: gzip"],
            gzip.compress(page),  # an honest gzip body is still inflated
        ),
    ]
    path = tmp_path / "bomb.warc.gz"
    path.write_bytes(b"".join(gzip.compress(r) for r in records))
    with peak_memory() as mem:
        items = read_all(path, "warc")
    assert [i["record_index"] for i in items] == [0, 1, 2]
    assert [bool(i.get("_error")) for i in items] == [False, True, False]
    assert items[1]["reason"] == "document_too_large" and "max_document_bytes" in items[1]["error"]
    assert items[1]["url"] == "http://bomb.example/"
    assert "kept" in items[2]["content"]
    assert mem["peak"] < 40 * MB, mem  # at most max_document_bytes (4 MiB) inflated, never 200 MB


def test_warc_record_that_inflates_past_the_bound_is_skipped_as_a_stream(tmp_path):
    """A record whose declared length is honest but huge (its gzip member is a few KB)."""
    page = ARTICLE.format("kept").encode()
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
    head = warc_head("http://big.example/", len(http) + 64 * MB)
    member = gzip_of_zeros(64, prefix=head + http, suffix=b"\r\n\r\n")
    ok = [
        gzip.compress(warc_response(f"http://ok.example/{i}", ["Content-Type: text/html"], page))
        for i in (1, 2)
    ]
    path = tmp_path / "big.warc.gz"
    path.write_bytes(ok[0] + member + ok[1])
    with peak_memory() as mem:
        items = read_all(path, "warc")
    assert [(i["record_index"], i.get("reason")) for i in items] == [
        (0, None),
        (1, "document_too_large"),
        (2, None),
    ]
    assert mem["peak"] < 40 * MB, mem


def test_a_gzip_http_body_cut_short_keeps_what_inflated_and_a_corrupt_one_is_a_bad_response_row(tmp_path):
    page = ARTICLE.format("x").encode()
    zipped = gzip.compress(page)
    headers = ["Content-Type: text/html", "Content-Encoding: gzip"]
    bodies = {
        "cut": zipped[: len(zipped) // 2],  # a crawler's size cap: the first half of the page is there
        "padded": zipped + b"\r\n",  # bytes after the stream that are not another member
        "corrupt": zipped[:10] + b"\xff" * 200,
    }
    path = tmp_path / "bodies.warc"
    path.write_bytes(b"".join(warc_response(f"http://{k}.example/", headers, b) for k, b in bodies.items()))
    cut, padded, corrupt = read_all(path, "warc")
    assert not cut.get("_error") and page.startswith(cut["content"][:40].encode())
    assert not padded.get("_error") and padded["content"] == page.decode()
    assert corrupt["reason"] == "bad_http_response" and "does not decompress" in corrupt["error"]


def test_gzip_bomb_line_in_jsonl_is_one_error_row(tmp_path):
    good = [json.dumps({"id": f"g{i}", "text": f"good document {i}"}).encode() + b"\n" for i in range(2)]
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [z.compress(good[0] + b'{"id": "bomb", "text": "')]
    chunk = b"a" * MB
    parts += [z.compress(chunk) for _ in range(BOMB_MB)]
    parts += [z.compress(b'"}\n' + good[1]), z.flush()]
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(b"".join(parts))
    with peak_memory() as mem:
        items = read_all(path, "jsonl")
    assert [i.get("id") for i in items if not i.get("_error")] == ["g0", "g1"]
    (error,) = [i for i in items if i.get("_error")]
    assert error["record_index"] == 1 and error["reason"] == "document_too_large"
    assert mem["peak"] < 40 * MB, mem


def test_gzip_bomb_html_file_is_one_error_row(tmp_path):
    path = tmp_path / "page.html.gz"
    path.write_bytes(gzip_of_zeros(BOMB_MB, prefix=b"<html><body>"))
    with peak_memory() as mem:
        (item,) = read_all(path, "html")
    assert item["reason"] == "document_too_large" and item["record_index"] == 0
    assert mem["peak"] < 40 * MB, mem


def test_json_array_is_read_item_by_item_within_a_bound(tmp_path):
    """A 32 MB JSON array comes out whole while the reader never holds more than a few MB of it."""
    text = "word " * 400
    n = 16_000  # about 32 MB of JSON once inflated
    path = tmp_path / "big.json.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"[")
        for i in range(n):
            f.write((("," if i else "") + json.dumps({"id": f"d{i}", "text": f"{i} {text}"})).encode())
        f.write(b"]")
    inflated = 2 + n * (len(json.dumps({"id": "d0", "text": "0 " + text})) + 6)
    assert inflated > 30 * MB
    count = 0
    with peak_memory() as mem:
        for item in read_file(InputFile(str(path), "json"), ReadConfig()):
            assert not item.get("_error"), item
            assert item["record_index"] == count
            count += 1
    assert count == n
    assert mem["peak"] < 4 * MB, mem  # json.loads of the whole file would need several times 32 MB


def test_json_array_item_over_the_bound_is_an_error_row_and_the_rest_is_kept(tmp_path):
    items = [
        {"id": "a", "text": "first"},
        {"id": "big", "text": ["many strings"] * 10_000},  # many small values: skipped, parsing goes on
        {"id": "c", "text": "after the big one"},
        {"id": "huge", "text": "x" * 3 * MB},  # one value too large to skip: the file stops here
        {"id": "e", "text": "never read"},
    ]
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items))
    got = read_all(path, "json", max_document_bytes=1000)  # bound: 2 x 1000 + 64 KiB of JSON text
    assert [i["record_index"] for i in got] == [0, 1, 2, 3]
    assert [i.get("id") for i in got if not i.get("_error")] == ["a", "c"]
    assert got[1]["reason"] == "document_too_large"


def test_single_json_value_larger_than_the_bound_stops_the_file_with_one_row(tmp_path):
    path = tmp_path / "items.json.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    body = [z.compress(b'[{"id": "a", "text": "first"}, {"id": "b", "text": "')]
    body += [z.compress(b"y" * MB) for _ in range(BOMB_MB // 4)]
    body += [z.compress(b'"}, {"id": "c", "text": "later"}]'), z.flush()]
    path.write_bytes(b"".join(body))
    with peak_memory() as mem:
        got = read_all(path, "json")
    assert [i["record_index"] for i in got] == [0, 1]
    assert got[0]["id"] == "a" and not got[0].get("_error")
    assert got[1]["reason"] == "document_too_large" and "rest of the file" in got[1]["error"]
    assert mem["peak"] < 40 * MB, mem


def test_json_array_with_invalid_utf8_and_invalid_json_keeps_what_parses(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[{"id": "a", "text": "caf\xe9 ok"}, {"id": "b", "text": "fine"}, {"id": oops}]')
    got = read_all(path, "json")
    assert [i.get("id") for i in got if not i.get("_error")] == ["a", "b"]
    assert got[0]["content"] == "caf\ufffd ok" and got[0]["decode_errors"] == 1
    assert got[2]["record_index"] == 2 and got[2]["reason"] == "invalid_json"


# ---- settings and places that cannot work: one line, exit non-zero, before Ray starts --------------


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if the CLI gets as far as starting Ray."""

    def refuse(_cfg):
        raise AssertionError("Ray was started before the problem was reported")

    monkeypatch.setattr(cli, "init_ray", refuse)


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["clean", *args])
    err = capsys.readouterr().err
    return code, "\n".join(line for line in err.splitlines() if not line[:2].isdigit())  # not log lines


MYSTEPS = """
def no_shouting(docs, max_caps=0.3):
    return ["shouting" if sum(c.isupper() for c in d["text"]) > max_caps * len(d["text"]) else None
            for d in docs]
"""


def test_misspelt_custom_step_argument_names_the_key(tmp_path, monkeypatch, capsys, no_ray):
    (tmp_path / "mysteps_hostile.py").write_text(MYSTEPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    custom = "clean.custom=[{function: 'mysteps_hostile:no_shouting', args: {max_cap: 0.2}}]"
    code, err = run_cli(
        capsys, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "run"), "--set", custom
    )
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "clean.custom[0].args.max_cap" in err and "unexpected keyword argument 'max_cap'" in err


def test_output_under_a_regular_file_is_refused_before_ray(tmp_path, capsys, no_ray):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "afile").write_text("not a folder")
    code, err = run_cli(
        capsys, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "afile/run")
    )
    assert code == 2 and err.count("\n") == 0
    assert "cannot write the run directory" in err and str(tmp_path / "afile") in err


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder nobody can write, root included (root ignores permission bits, not the immutable flag)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without chattr +i: no way to make a read-only folder")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_output_is_refused_before_ray(tmp_path, capsys, no_ray):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        code, err = run_cli(capsys, "--input", str(tmp_path / "in.jsonl"), "--output", str(locked / "run"))
    assert code == 2 and err.count("\n") == 0
    assert "cannot write the run directory" in err and str(locked) in err


def test_missing_inputs_fail_before_any_work_naming_them(tmp_path, capsys, no_ray):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    missing = [str(tmp_path / "gone.jsonl"), str(tmp_path / "nothing/*.warc.gz")]
    code, err = run_cli(
        capsys, "--input", str(tmp_path / "in.jsonl"), *missing, "--output", str(tmp_path / "run")
    )
    assert code == 2 and err.count("\n") == 0
    assert "2 of 3 inputs match no file" in err and all(m in err for m in missing)
    assert "clean.missing_inputs=skip" in err
    assert not (tmp_path / "run" / "data" / "_work").exists()  # nothing was started


def test_inputs_of_no_known_format_are_named_with_why(tmp_path, capsys, no_ray):
    """A file of no format we know said only "no readable input files in [...]" (plain text files,
    such as tinyshakespeare's input.txt, are read now: tests/test_readers.py)."""
    text = tmp_path / "input.dat"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    code, err = run_cli(capsys, "--input", str(text), "--output", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith(f"raychat: clean: no readable input files in ['{text}']: ")
    assert "match one of warc, jsonl, json, parquet, html, text" in err


def test_an_empty_output_or_steps_is_refused_not_the_default(tmp_path, capsys, monkeypatch, no_ray):
    """`--output ''` (an unset shell variable) cleaned into the default run dir, runs/tiny; `--steps ''`
    ran every step."""
    monkeypatch.chdir(tmp_path)  # where the default run dir would be
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    code, err = run_cli(capsys, "--input", str(tmp_path / "in.jsonl"), "--output", "")
    assert code == 2 and "run_dir: String should have at least 1 character" in err, err
    code, err = run_cli(capsys, "--input", "in.jsonl", "--output", "run", "--steps", "")
    assert (
        code == 2
        and err
        == "raychat: --steps is empty: name the steps, e.g. --steps extract,pii, or leave it out for all"
    )
    assert not (tmp_path / "runs").exists() and not (tmp_path / "run" / "data").exists()


def test_the_real_command_prints_one_line_and_exits_non_zero(tmp_path):
    """The same through ``python -m pipelines.clean``, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.clean", "--input", str(tmp_path / "gone.jsonl")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last == f"raychat: clean: the input matches no file: {tmp_path / 'gone.jsonl'}"  # no "1 of 1"
    assert "Traceback" not in out.stderr and "Started a local Ray instance" not in out.stderr
    assert not (tmp_path / "runs").exists()  # the default run dir it would have made is not left behind


def test_truncated_gzip_json_array_keeps_the_items_before_the_break(tmp_path):
    rows = [{"id": f"d{i}", "text": f"document {i} " * 50} for i in range(200)]
    whole = gzip.compress(json.dumps(rows).encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(whole[: len(whole) // 2])
    got = read_all(path, "json")
    kept, errors = [i for i in got if not i.get("_error")], [i for i in got if i.get("_error")]
    assert 0 < len(kept) < 200 and [i["id"] for i in kept] == [f"d{i}" for i in range(len(kept))]
    assert len(errors) == 1 and errors[0]["reason"] == "truncated_input"
    assert errors[0]["record_index"] == len(kept)


def test_a_clean_that_keeps_nothing_names_the_commonest_reasons():
    """An Alpaca file given to clean exited 0 with 'clean 0, rejected 0' and nothing on the console
    about its 999 records without a text field; the glance said '0 unreadable' beside a file error."""
    from pipelines.clean.job import _top_reasons, summary_line

    drops = {"read": {"no_text": 999}, "gopher_quality": {"too_few_words": 3, "too_many_words": 12}}
    assert (
        _top_reasons(drops)
        == "read/no_text 999, gopher_quality/too_many_words 12, gopher_quality/too_few_words 3"
    )
    assert _top_reasons({}) == "none"
    line = summary_line({"records": 10, "clean": 0, "rejected": 2, "record_errors": 7, "file_errors": 1})
    assert line.endswith("7 unreadable, 1 unreadable files")
