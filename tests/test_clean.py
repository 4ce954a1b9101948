"""The clean stage end to end on the tiny world and on the real files of ../shared/data.

The tiny world knows what it planted (pages.jsonl), so each check compares the cleaner's decision
with the ground truth instead of trusting counts alone.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines.config import load_config
from pipelines.run_dir import RunDir


def _clean(run_dir: Path, *overrides: str) -> dict:
    from pipelines.clean import job

    cfg = load_config(None, [f"run_dir={run_dir}", *overrides])
    return job.run(cfg)


def _read(path: Path) -> list[dict]:
    if not path.is_dir() or not any(path.rglob("*.parquet")):
        return []
    return (
        pads.dataset(
            str(path), format="parquet", partitioning=pads.HivePartitioning.discover(infer_dictionary=True)
        )
        .to_table()
        .to_pylist()
    )


@pytest.fixture(scope="module")
def world_run(tmp_path_factory, ray_session) -> Path:
    from pipelines.world import job as world_job

    run_dir = tmp_path_factory.mktemp("world_run")
    world_job.run(load_config(None, [f"run_dir={run_dir}", "world.num_pages=400", "world.num_files=2"]))
    _clean(run_dir, "clean.url.blocklists=['{run_dir}/world/blocklists']")
    return run_dir


def _jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(text: str) -> set[tuple[str, ...]]:
        words = re.findall(r"\w+", text.lower())
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / max(len(sa | sb), 1)


def _truth(run_dir: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (run_dir / "world" / "pages.jsonl").read_text().splitlines()]
    return {r["url"]: r for r in rows}


def _pass1(tmp_path: Path, inputs: list[str], *overrides: str) -> tuple[dict, dict[str, list[dict]]]:
    """Pass 1 of one input file in this process (no Ray): its summary and its kept/rejected/errors rows."""
    from pipelines.clean.job import resolve_paths
    from pipelines.clean.pipeline import FileProcessor
    from pipelines.inputs import expand_inputs

    cfg = load_config(None, [f"run_dir={tmp_path}", f"clean.inputs={json.dumps(inputs)}", *overrides])
    clean = resolve_paths(cfg)
    files, _ = expand_inputs(clean.inputs)
    work = tmp_path / "work"
    summary = FileProcessor(clean.model_dump_json(), files, str(work)).process(0)
    rows = {
        name: pq.read_table(work / summary["file_key"] / f"{name}.parquet").to_pylist()
        for name in ("kept", "rejected", "errors")
    }
    assert sorted(p.name for p in (work / summary["file_key"]).iterdir()) == [
        "done.json",
        "errors.parquet",
        "kept.parquet",
        "rejected.parquet",
    ]
    record_errors = [e for e in rows["errors"] if e["record_index"] is not None]
    assert summary["records"] == len(rows["kept"]) + len(rows["rejected"]) + len(record_errors)
    assert (summary["kept"], summary["rejected"], summary["errors"]) == tuple(map(len, rows.values()))
    return summary, rows


USER_STEPS = """
def lone_surrogate(docs):
    return [{**d, "text": d["text"] + "\\ud83d"} if "poison" in d["text"] else d for d in docs]
"""


def test_one_bad_record_never_stops_a_file(tmp_path, monkeypatch):
    """A lone surrogate (legal JSON, no UTF-8 form) once failed the parquet write of the whole run."""
    good = [json.dumps({"id": f"g{i}", "text": f"Good text number {i}."}) for i in range(3)]
    bad = json.dumps({"id": "s", "text": "hi \ud83d there", "url": "http://x/\ud83d"})
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([good[0], bad, good[1], json.dumps({"id": "p", "text": "poison"}), good[2]]))
    summary, rows = _pass1(tmp_path, [str(path)], "clean.steps=[pii]")
    assert [r["id"] for r in rows["kept"]] == ["g0", "s", "g1", "p", "g2"]
    assert rows["kept"][1]["text"] == "hi \ufffd there" and rows["kept"][1]["url"] == "http://x/\ufffd"
    assert summary["counts"] == {"read/invalid_utf8_replaced": 2, "read/records_with_invalid_utf8": 1}
    # a custom mapper that makes an unwritable string costs only its own document
    (tmp_path / "user_steps_surrogate.py").write_text(USER_STEPS)
    monkeypatch.syspath_prepend(str(tmp_path))
    summary, rows = _pass1(
        tmp_path / "custom",
        [str(path)],
        "clean.steps=[custom]",
        "clean.custom=[{function: 'user_steps_surrogate:lone_surrogate', kind: mapper}]",
    )
    assert [r["id"] for r in rows["kept"]] == ["g0", "s", "g1", "g2"]
    assert [(e["record_index"], e["reason"]) for e in rows["errors"]] == [(3, "unwritable_record")]
    assert summary["record_errors"] == 1 and summary["drops"] == {"write/unwritable_record": 1}


def test_an_unexpected_failure_is_a_file_error_not_a_crash(tmp_path, monkeypatch):
    from pipelines.clean import readers

    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"g{i}", "text": f"Good text {i}."}) for i in range(5)))
    real_read_file = readers.read_file

    def breaks_after_three(f, cfg=None):
        for i, item in enumerate(real_read_file(f, cfg)):
            if i == 3:
                raise RuntimeError("a reader bug")
            yield item

    monkeypatch.setattr(readers, "read_file", breaks_after_three)
    summary, rows = _pass1(tmp_path, [str(path)], "clean.steps=[pii]", "clean.batch_size=2")
    assert [r["id"] for r in rows["kept"]] == ["g0", "g1"]  # the batch that was done is kept
    errors = [(e["record_index"], e["reason"], e["step"]) for e in rows["errors"]]
    assert errors == [(2, "exception", "pipeline"), (None, "processing_failed", "pipeline")]
    assert "RuntimeError: a reader bug" in rows["errors"][1]["error"]
    assert (summary["records"], summary["record_errors"], summary["file_errors"]) == (3, 1, 1)

    # anything else that goes wrong with the file: one file-level error row, and a rerun retries it
    from pipelines.clean.pipeline import FileProcessor

    monkeypatch.setattr(readers, "read_file", real_read_file)
    real_process = FileProcessor._process
    monkeypatch.setattr(FileProcessor, "_process", lambda *a: (_ for _ in ()).throw(MemoryError("oom")))
    summary, rows = _pass1(tmp_path / "again", [str(path)], "clean.steps=[pii]")
    assert summary["failed"] and (summary["records"], summary["file_errors"]) == (0, 1)
    assert [(e["file_path"], e["reason"], e["error"]) for e in rows["errors"]] == [
        (str(path), "file_failed", "MemoryError: oom")
    ]
    monkeypatch.setattr(FileProcessor, "_process", real_process)
    summary, rows = _pass1(tmp_path / "again", [str(path)], "clean.steps=[pii]")
    assert "failed" not in summary and len(rows["kept"]) == 5


def test_html_records_are_extracted_when_extract_is_not_selected(tmp_path, shared_data):
    """``--steps pii`` on a WARC once made every page an empty document (only extract fills text)."""
    from pipelines.clean.steps import implied_steps, running_steps

    assert implied_steps(["pii"]) == ["extract"] and implied_steps(["all"]) == []
    assert running_steps(["url", "language"]) == ["url", "extract", "language"]
    warc = shared_data / "crawl" / "commoncrawl_resiliparse" / "warcfile.warc.gz"
    summary, rows = _pass1(tmp_path, [str(warc)], "clean.steps=[pii]")
    assert len(rows["kept"]) >= 10 and all(r["text"].strip() for r in rows["kept"])
    assert not any("<html" in r["text"].lower() for r in rows["kept"])
    assert set(summary["drops"]) <= {"extract/empty_extraction"}
    assert summary["counts"]["pii/phone"] >= 1  # PII was masked in the extracted text
    # text records go through the implied extractor unchanged
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(json.dumps({"id": "t", "text": "Plain <b>text</b> stays as it is."}) + "\n")
    _, rows = _pass1(tmp_path / "text", [str(jsonl)], "clean.steps=[pii]")
    assert [r["text"] for r in rows["kept"]] == ["Plain <b>text</b> stays as it is."]


@pytest.mark.parametrize(
    ("setting", "key", "message"),
    [
        ("clean.url.blocklists=['{run_dir}/no-such-folder']", "clean.url.blocklists", "does not exist"),
        ("clean.url.blocklists=['{run_dir}']", "clean.url.blocklists", "UT1 layout"),
        ("clean.language.model_path='{run_dir}/nope.bin'", "clean.language.model_path", "nope.bin"),
        ("clean.language.model_path='{run_dir}/not-a-model.bin'", "clean.language.model_path", "fastText"),
        (
            "clean.custom=[{function: 'no_such_module_x:f'}]",
            "clean.custom[0].function",
            "cannot import module",
        ),
    ],
)
def test_step_settings_are_checked_on_the_driver_before_any_work(tmp_path, setting, key, message):
    """These once failed inside the Ray actors' constructors, with an actor traceback and no key."""
    from pipelines.clean import job
    from pipelines.config import ConfigError

    (tmp_path / "not-a-model.bin").write_bytes(b"not a model")
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    work = tmp_path / "data" / "_work"
    work.mkdir(parents=True)
    (work / "config.json").write_text('{"fingerprint": "an older run"}')
    cfg = load_config(None, [f"run_dir={tmp_path}", f"clean.inputs=['{tmp_path}/in.jsonl']", setting])
    with pytest.raises(ConfigError, match=re.escape(key) + ".*" + message):
        job.run(cfg)
    assert (work / "config.json").is_file()  # the previous run's pass-1 outputs are untouched


def test_threshold_bounds_are_config_errors_naming_the_key():
    from pipelines.config import ConfigError

    with pytest.raises(ConfigError, match=r"clean\.gopher_quality\.min_words"):
        load_config(None, ["clean.gopher_quality.min_words=-1"])
    with pytest.raises(ConfigError, match=r"clean\.fineweb\.line_punct_thr"):
        load_config(None, ["clean.fineweb.line_punct_thr=12"])


def test_counts_add_up_is_checked_against_the_written_files(tmp_path):
    """It used to compare the counters with themselves, so it could never be false."""
    import pyarrow as pa

    from pipelines.clean.job import build_stats, count_written

    data = tmp_path / "data"
    for name, rows in {
        "clean/language=en": {"text": ["a", "b", "c"]},
        "rejected": {"text": ["d"]},
        "errors": {"record_index": pa.array([4, None, 5], pa.int64())},  # None: a file-level error
    }.items():
        (data / name).mkdir(parents=True)
        pq.write_table(pa.table(rows), data / name / "part-0.parquet")
    pq.write_table(pa.table({"text": ["e"]}), data / "rejected" / "part-1.parquet")
    errors = pa.table({"record_index": pa.array([None, 6], pa.int64())})
    pq.write_table(errors, data / "errors" / "part-1.parquet", write_statistics=False)  # read instead
    written = count_written(RunDir(tmp_path))
    assert written == {"clean": 3, "rejected": 2, "errors": 5, "record_errors": 3}
    summary = {"records": 8, "kept": 3, "rejected": 2, "record_errors": 3, "drops": {}, "counts": {}}
    assert build_stats([summary], [], {}, 1.0, written)["counts_add_up"]
    assert build_stats([summary | {"records": 9}], [], {}, 1.0, written)["counts_add_up"] is False
    (data / "rejected" / "part-1.parquet").unlink()  # a lost output file
    assert build_stats([summary], [], {}, 1.0, count_written(RunDir(tmp_path)))["counts_add_up"] is False


@pytest.mark.parametrize("output", ["2024", "yes", "null", "~", "runs/a: b", "[x]", "0x10", "runs/mine"])
def test_output_is_taken_as_a_path_whatever_it_looks_like_in_yaml(output):
    import argparse

    from pipelines.clean.job import add_cli_args, cli_overrides

    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args(["--output", output, "--input", "a b.jsonl", "--steps", "pii"])
    cfg = load_config(None, cli_overrides(args))
    assert cfg.run_dir == output and cfg.clean.inputs == ["a b.jsonl"] and cfg.clean.steps == ["pii"]


def test_pass1_writes_in_bounded_chunks_and_bounds_rejected_documents(tmp_path):
    """Pass 1 once held a whole file's documents (rejected ones with their full HTML) until the end."""
    path = tmp_path / "in.jsonl"
    page = "<html><body>" + "<p>blocked page text</p>" * 200 + "</body></html>"
    rows = [
        {"id": f"t{i}", "text": f"Text document number {i}.", "url": f"http://ok.example/{i}"}
        for i in range(7)
    ]
    rows[2] = {"id": "h", "html": page, "url": "http://blocked.example/x"}  # dropped before extraction
    rows[5] = {"id": "b", "text": "A text document that is blocked.", "url": "http://blocked.example/y"}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    work = tmp_path / "work"
    (work / "stale").mkdir(parents=True)
    settings = [
        "clean.steps=[url,pii]",
        "clean.url.extra_domains=[blocked.example]",
        "clean.batch_size=2",
        "clean.write_chunk_rows=2",
        "clean.rejected_max_chars=100",
    ]
    summary, out = _pass1(tmp_path, [str(path)], *settings)
    assert [r["id"] for r in out["kept"]] == ["t0", "t1", "t3", "t4", "t6"]  # in order, none lost
    kept_file = pq.ParquetFile(work / summary["file_key"] / "kept.parquet")
    sizes = [kept_file.metadata.row_group(i).num_rows for i in range(kept_file.metadata.num_row_groups)]
    assert len(sizes) >= 3 and max(sizes) <= 2, sizes
    rejected = {r["id"]: r for r in out["rejected"]}
    assert rejected["h"]["text"] == page[:100] and rejected["h"]["text_truncated"] is True
    assert rejected["b"]["text"] == rows[5]["text"] and rejected["b"]["text_truncated"] is False
    assert summary["counts"]["pass1/rejected_text_truncated"] == 1
    assert not list((work / summary["file_key"]).glob("*.tmp"))
    # a run killed mid-file leaves a temporary file; the redo removes it and replaces the outputs
    (work / summary["file_key"] / "done.json").unlink()
    (work / summary["file_key"] / "kept.parquet.0badc0de.tmp").write_bytes(b"partial")
    again, out_again = _pass1(tmp_path, [str(path)], *settings)
    assert out_again == out and not list((work / summary["file_key"]).glob("*.tmp"))


@pytest.mark.slow
def test_counts_add_up_and_match_the_files(world_run):
    run = RunDir(world_run)
    stats = json.loads(run.stats.read_text())
    clean, rejected = _read(run.clean), _read(run.rejected)
    errors = _read(run.errors)
    assert stats["records"] == 400
    assert stats["counts_add_up"]
    assert stats["records"] == stats["clean"] + stats["rejected"] + stats["record_errors"]
    assert len(clean) == stats["clean"]
    assert len(rejected) == stats["rejected"]
    assert len(errors) >= stats["record_errors"]
    assert set(clean[0]) >= {
        "text",
        "id",
        "dump",
        "url",
        "date",
        "file_path",
        "language",
        "language_score",
        "token_count",
    }
    assert {r["url"] for r in clean}.isdisjoint({r["url"] for r in rejected})
    assert {type(r["text_truncated"]) for r in rejected} == {bool}  # dedup's rows have it too
    assert {r["step"] for r in rejected if r["text_truncated"]} <= {"url"}  # only pre-extraction drops


@pytest.mark.slow
def test_planted_problems_are_handled(world_run):
    run = RunDir(world_run)
    truth = _truth(world_run)
    clean = {r["url"]: r for r in _read(run.clean)}
    rejected = {r["url"]: r for r in _read(run.rejected)}
    by_kind: dict[str, list[dict]] = {}
    for row in truth.values():
        by_kind.setdefault(row["kind"], []).append(row)

    for kind in ("adult", "phishing"):
        for page in by_kind[kind]:
            assert page["url"] in rejected, page["url"]
            assert rejected[page["url"]]["step"] == "url"
    for page in by_kind["spam"] + by_kind["garbage"] + by_kind["short"]:
        assert page["url"] not in clean, (page["kind"], page["url"])
    for page in by_kind["foreign"]:
        assert page["url"] in rejected
        assert rejected[page["url"]]["step"] == "language"
    # duplicates: exact copies never both survive; near copies don't when they are clearly similar
    # (MinHash LSH with 14 bands x 8 rows catches Jaccard 0.85 with p > 0.99, 0.75 with p ~ 0.77)
    for page in by_kind["exact_dup"]:
        assert not (page["url"] in clean and page["source"] in clean), page["url"]
    near_both = [p for p in by_kind["near_dup"] if p["url"] in clean and p["source"] in clean]
    for page in near_both:
        assert _jaccard(clean[page["url"]]["text"], clean[page["source"]]["text"]) < 0.85, page["url"]
    assert len(near_both) <= 0.25 * len(by_kind["near_dup"])
    dedup_reasons = {r["reason"] for r in rejected.values() if r["step"] == "dedup"}
    assert dedup_reasons == {"exact_duplicate", "near_duplicate"}
    # PII never reaches clean text; checked on PII pages that do reach clean (not vacuously)
    clean_text = "\n".join(r["text"] for r in clean.values())
    pii_kept = [p for p in by_kind["pii"] if p["url"] in clean]
    assert len(pii_kept) >= 0.6 * len(by_kind["pii"]) > 0, (len(pii_kept), len(by_kind["pii"]))
    planted = {
        kind: [v for p in pii_kept for v in p["pii"][kind]] for kind in ("emails", "phones", "ipv4", "ipv6")
    }
    assert all(planted.values()), {k: len(v) for k, v in planted.items()}  # every kind is tested
    for values in planted.values():
        for value in values:
            assert value not in clean_text, value
    pii_counts = json.loads(run.stats.read_text())["counts"]["pii"]
    assert pii_counts["email"] >= len(planted["emails"]) and pii_counts["phone"] >= len(planted["phones"])
    assert pii_counts["ip"] >= len(planted["ipv4"]) + len(planted["ipv6"])
    # the good articles mostly survive, in English
    articles = by_kind["article"]
    kept = [p for p in articles if p["url"] in clean]
    assert len(kept) >= 0.8 * len(articles)
    assert {r["language"] for r in clean.values()} == {"en"}
    assert (run.clean / "language=en").is_dir()


@pytest.mark.slow
def test_rerun_is_safe_and_resume_redoes_only_missing_files(world_run):
    run = RunDir(world_run)
    before = len(_read(run.clean)), len(_read(run.rejected))
    work = run.root / "data" / "_work"
    markers = sorted(work.glob("*/done.json"))
    assert len(markers) == 2
    kept_mtime = markers[0].stat().st_mtime_ns
    markers[1].unlink()  # as if the run had been killed while this file was in flight
    stats = _clean(world_run, "clean.url.blocklists=['{run_dir}/world/blocklists']")
    assert (len(_read(run.clean)), len(_read(run.rejected))) == before
    assert stats["clean"] == before[0]
    assert markers[0].stat().st_mtime_ns == kept_mtime  # the finished file was not redone
    assert markers[1].is_file()


def test_the_same_crawl_elsewhere_keeps_the_same_documents(world_run, tmp_path):
    """Dedup keeps one document per cluster by key: a key from the files' absolute paths made two
    checkouts of the demo keep different documents (and train different tokenizers)."""
    import shutil

    elsewhere = tmp_path / "another" / "checkout"
    shutil.copytree(world_run / "world", elsewhere / "world")
    _clean(elsewhere, "clean.url.blocklists=['{run_dir}/world/blocklists']")

    def outcome(run_dir: Path) -> tuple[list, list]:
        run = RunDir(run_dir)
        kept = sorted((r["id"], r["text"]) for r in _read(run.clean))
        dropped = sorted(
            (r["id"], r["reason"], r["detail"]) for r in _read(run.rejected) if r["step"] == "dedup"
        )
        return kept, dropped

    here, there = outcome(world_run), outcome(elsewhere)
    assert here[1], "the world plants duplicates; none were found"
    assert here == there


@pytest.mark.slow
def test_bad_input_is_counted_and_good_data_goes_through(tmp_path, ray_session):
    data = tmp_path / "in"
    data.mkdir()
    good = [
        {
            "id": f"doc-{i}",
            "text": f"Record number {i} is a fine piece of text.",
            "url": f"https://ok.example/{i}",
        }
        for i in range(5)
    ]
    (data / "good.jsonl").write_text("\n".join(json.dumps(r) for r in good) + "\n")
    (data / "mixed.jsonl").write_bytes(
        json.dumps(good[0] | {"id": "mixed-0"}).encode()
        + b"\n\x00\x01\xff{not json\n"
        + json.dumps({"id": "mixed-2", "text": "caf\xe9"}).encode("utf-8")
        + b'\n{"id": "mixed-3", "text": "two broken \xff\xfe bytes"}\n'
    )
    payload = gzip.compress(b"\n".join(json.dumps(r | {"id": "gz-" + r["id"]}).encode() for r in good))
    (data / "truncated.jsonl.gz").write_bytes(payload[: len(payload) * 2 // 3])
    (data / "empty.jsonl").write_bytes(b"")
    (data / "lies.parquet").write_bytes(b"this is not parquet at all\n")
    stats = _clean(
        tmp_path / "run",
        f"clean.inputs=['{data}', '{tmp_path}/missing/*.warc.gz']",
        "clean.steps=[pii]",
    )
    run = RunDir(tmp_path / "run")
    full = json.loads(run.stats.read_text())
    assert full["counts_add_up"]
    clean_ids = {r["id"] for r in _read(run.clean)}
    assert {r["id"] for r in good} <= clean_ids  # every good record survived
    assert "mixed-0" in clean_ids and "mixed-2" in clean_ids and "mixed-3" in clean_ids
    assert full["counts"]["read"] == {"invalid_utf8_replaced": 2, "records_with_invalid_utf8": 1}
    errors = _read(run.errors)
    # every bad thing is one error row, of the file it came from, with its own reason; record-level
    # (record_index set): the binary line of mixed.jsonl and the break in the gzip stream; file-level:
    # the empty file, the file that says parquet and is not, the glob that matches nothing
    truncated_kept = sum(i.startswith("gz-") for i in clean_ids)  # the records before the break
    assert sorted((e["file_path"], e["record_index"], e["reason"]) for e in errors) == sorted(
        [
            (str(data / "mixed.jsonl"), 1, "invalid_json"),
            (str(data / "truncated.jsonl.gz"), truncated_kept, "truncated_input"),
            (str(data / "empty.jsonl"), None, "empty_file"),
            (str(data / "lies.parquet"), None, "corrupt_input"),
            (f"{tmp_path}/missing/*.warc.gz", None, "no_match"),
        ]
    )
    assert (stats["record_errors"], full["file_errors"], full["files"]) == (2, 3, 5)
    assert [e["file_path"] for e in full["input_errors"]] == [f"{tmp_path}/missing/*.warc.gz"]
    assert stats["records"] == 5 + 4 + truncated_kept + 1  # good, mixed, truncated (kept + the break)


@pytest.mark.slow
def test_steps_subset_keeps_ids_and_paths(tmp_path, ray_session, shared_data):
    # a Dolma file, whose records all carry an id (C4's have none, so their ids are made up)
    dolma = shared_data / "fineweb" / "ccnet_dolma" / "cc_en_head-0091.jsonl"
    ids = [json.loads(line)["id"] for line in dolma.read_text().splitlines() if line.strip()]
    assert len(ids) == 10 and all(ids)
    _clean(tmp_path, f"clean.inputs=['{dolma}']", "clean.steps=[extract,pii]")
    rows = _read(RunDir(tmp_path).clean)
    assert rows and all(r["file_path"] == str(dolma) for r in rows)
    assert sorted(r["id"] for r in rows) == sorted(ids)  # no filter ran: every record, its own id


@pytest.mark.slow
def test_real_crawl_and_fineweb_files(tmp_path, ray_session, shared_data):
    inputs = [str(shared_data / "crawl"), str(shared_data / "fineweb")]
    ut1 = shared_data / "blocklists" / "ut1"
    stats = _clean(tmp_path, f"clean.inputs={json.dumps(inputs)}", f"clean.url.blocklists=['{ut1}']")
    full = json.loads(RunDir(tmp_path).stats.read_text())
    assert full["counts_add_up"], full
    assert stats["clean"] > 100
    assert full["drops"]["language"]  # the crawl holds pages in other languages
    # every input file was read: each one's records reached clean or rejected, except the WAT file,
    # which holds only metadata records and is one file-level error that says so
    from pipelines.inputs import expand_inputs

    found, _ = expand_inputs(inputs)
    assert len(found) == full["files"] == 11
    run = RunDir(tmp_path)
    errors = _read(run.errors)
    wat = str(shared_data / "crawl" / "commoncrawl_whirlwind" / "whirlwind.warc.wat.gz")
    assert [(e["file_path"], e["reason"]) for e in errors] == [(wat, "empty_file")]
    assert "no response, resource or conversion records" in errors[0]["error"]
    outputs = {r["file_path"] for r in _read(run.clean) + _read(run.rejected)}
    assert outputs == {f.path for f in found} - {wat}


def test_run_only_settings_keep_pass1_work_and_output_settings_redo_it() -> None:
    from pipelines.clean.config import CleanConfig
    from pipelines.clean.pipeline import config_fingerprint

    base = CleanConfig()
    same = base.model_copy(update={"write_chunk_mb": 8, "num_workers": 3, "batch_size": 64})
    assert config_fingerprint(same) == config_fingerprint(base)
    assert config_fingerprint(base.model_copy(update={"rejected_max_chars": 10})) != config_fingerprint(base)
    assert config_fingerprint(base.model_copy(update={"steps": ["extract"]})) != config_fingerprint(base)
