"""Chat and preference data that breaks readers: each file keeps its good records, each bad one is
counted with a reason, nothing escapes as a traceback (pipelines/records.py, pipelines/sft/sources.py,
pipelines/sft/formats.py, pipelines/rm/preferences.py). Found by fuzzing mutated real files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from pipelines.records import Problem, Record, read_records
from pipelines.sft.sources import SourceConfig, load_source

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _lines(path: Path, *rows: dict | str) -> Path:
    """JSON lines as Python writes them with ensure_ascii=False (U+2028 and the like unescaped)."""
    text = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)
    path.write_bytes(text.encode())
    return path


def _read(path: Path) -> tuple[list[Record], list[Problem]]:
    items = list(read_records(str(path)))
    return [i for i in items if isinstance(i, Record)], [i for i in items if isinstance(i, Problem)]


def test_json_too_deep_or_an_integer_too_long_is_one_bad_record(tmp_path) -> None:
    """Were RecursionError and ValueError (Python's 4300-digit limit) out of the reader."""
    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    long = '{"messages": [], "n": ' + "9" * 5000 + "}"
    records, problems = _read(_lines(tmp_path / "a.jsonl", GOOD, deep, long, GOOD))
    assert len(records) == 2 and [p.reason for p in problems] == ["invalid_json", "invalid_json"]
    assert "nested too deeply" in problems[0].detail and problems[1].where.endswith("a.jsonl:3")
    array = tmp_path / "b.json"
    array.write_text("[\n  " + json.dumps(GOOD) + ",\n  " + deep + ",\n  " + json.dumps(GOOD) + "\n]\n")
    records, problems = _read(array)
    assert len(records) == 2 and "nested too deeply" in problems[0].detail


def test_a_line_separator_inside_a_string_does_not_split_the_record(tmp_path) -> None:
    """GSM8K rewritten by json.dumps(ensure_ascii=False) lost a record at its U+2028."""
    odd = {
        "messages": [
            {"role": "user", "content": "a\u2028b\u2029c\x85d"},
            {"role": "assistant", "content": "e"},
        ]
    }
    records, problems = _read(_lines(tmp_path / "a.jsonl", GOOD, odd, GOOD))
    assert problems == [] and [r.where.rsplit(":", 1)[1] for r in records] == ["1", "2", "3"]
    assert records[1].value == odd


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_broken_gzip_keeps_the_records_before_the_break(tmp_path, damage) -> None:
    """A truncated file lost every record; a corrupt one raised zlib.error out of the reader."""
    rows = [{"messages": [{"role": "user", "content": f"q{i} " * 20}, {"role": "assistant", "content": "a"}]}
            for i in range(400)]  # fmt: skip
    data = gzip.compress(_lines(tmp_path / "plain.jsonl", *rows).read_bytes())
    cut = len(data) // 2
    broken = data[:cut] if damage == "truncated" else data[:cut] + bytes(64) + data[cut + 64 :]
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(broken)
    records, problems = _read(path)
    assert 50 < len(records) < 400 and records == [
        Record(f"{path}:{i + 1}", rows[i]) for i in range(len(records))
    ]
    assert problems[-1].reason == "unreadable" and "gzip data breaks off after" in problems[-1].detail
    convs, report = load_source(SourceConfig(path=str(path)))
    assert len(convs) == len(records) and report.skipped["unreadable"] == 1


def test_lines_after_a_json_array_are_read_not_lost(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_text(
        json.dumps([GOOD] * 3) + "\n" + json.dumps(GOOD) + "\nnot json\n" + json.dumps(GOOD) + "\n"
    )
    records, problems = _read(path)
    assert len(records) == 5 and [p.reason for p in problems] == ["trailing_data", "invalid_json"]
    assert problems[0].where == f"{path}:2" and problems[1].where == f"{path}:3"
    assert [r.where for r in records[3:]] == [f"{path}:2", f"{path}:4"]
    empty_first = _lines(tmp_path / "b.jsonl", "[]", *[GOOD] * 4)
    assert len(_read(empty_first)[0]) == 4


def test_oasst_rows_with_odd_ids_counts_and_cycles_are_counted(tmp_path) -> None:
    """A list as parent_id and a review_count of "3" raised TypeError; rows on a cycle vanished."""
    rows = [
        {"message_id": "r", "parent_id": None, "role": "prompter", "text": "q"},
        {"message_id": "a", "parent_id": "r", "role": "assistant", "text": "answer"},
        {"message_id": "b", "parent_id": "r", "role": "assistant", "text": "other", "review_count": "3"},
        {"message_id": "x", "parent_id": ["r"], "role": "assistant", "text": "t"},
        {"message_id": "y", "parent_id": "z", "role": "assistant", "text": "u"},
        {"message_id": "z", "parent_id": "y", "role": "prompter", "text": "v"},
    ]
    convs, report = load_source(SourceConfig(path=str(_lines(tmp_path / "o.jsonl", *rows)), format="oasst"))
    assert [m["content"] for m in convs[0]["messages"]] == ["q", "answer"]
    assert report.skipped == {"bad_parent_id": 1, "not_in_a_tree": 2}


def test_tools_that_are_not_json_are_a_bad_record_not_a_crash_when_rendering(tmp_path) -> None:
    """A parquet file's datetime in ``tools`` was accepted, then raised TypeError in rendering."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {**GOOD, "tools": [{"name": "f", "created": datetime(2020, 1, 1)}]},
        {**GOOD, "tools": [{"name": "g"}]},
    ]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    convs, report = load_source(SourceConfig(path=str(path)))
    assert len(convs) == 1 and sum(report.skipped.values()) == 1
    assert "not JSON" in str(report.problems[0])


def test_a_parquet_files_null_keys_are_absent_keys(tmp_path) -> None:
    """Parquet gives every message every key seen in any row: a user turn's weight of None refused
    the whole source."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "draft", "weight": 0},
                        {"role": "user", "content": "again"}, {"role": "assistant", "content": "final", "weight": 1}]}  # fmt: skip
    path = tmp_path / "w.parquet"
    pq.write_table(pa.Table.from_pylist([row] * 4), path)
    convs, report = load_source(SourceConfig(path=str(path)))
    assert len(convs) == 4 and not report.skipped
    assert [m.get("weight") for m in convs[0]["messages"]] == [None, 0, None, 1]


def test_role_and_content_turns_under_conversations_are_detected(tmp_path) -> None:
    row = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    convs, report = load_source(SourceConfig(path=str(_lines(tmp_path / "c.jsonl", row, row))))
    # OpenAI messages under another key: read as messages (weights and tool calls kept)
    assert len(convs) == 2 and report.formats == {str(tmp_path / "c.jsonl"): "messages"}


def test_a_tie_between_preference_formats_is_decided_the_same_on_every_run(tmp_path) -> None:
    """Was max(set(...)): the hash seed picked the format, so a file read differently run to run."""
    path = _lines(
        tmp_path / "tie.jsonl",
        {"chosen": "\n\nHuman: hi\n\nAssistant: good", "rejected": "\n\nHuman: hi\n\nAssistant: bad"},
        {"prompt": "hi", "chosen": "good", "rejected": "bad"},
    )
    code = (
        "from pipelines.rm.config import PreferenceSourceConfig as C; from pipelines.rm.preferences import "
        f"load_preferences as L; _, r = L(C(path={str(path)!r})); print(sorted(set(r.formats.values())))"
    )
    repo = Path(__file__).resolve().parents[1]
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout  # fmt: skip
        for seed in range(2)  # the helper saw even seeds pick one format, odd the other
    }
    assert len(seen) == 1, seen


def test_the_other_json_lines_readers_keep_a_line_separator_inside_a_string(tmp_path) -> None:
    """raychat eval's data files, GRPO's problems (lm/files.py) and the held-out sets read JSON lines too."""
    from lm.files import read_jsonl_objects
    from pipelines.chat_eval import read_set

    row = {"question": "a\u2028b", "answer": "1"}
    (tmp_path / "splits").mkdir()
    path = _lines(tmp_path / "splits" / "set.jsonl", row, row)
    assert read_jsonl_objects(path, ValueError) == ([row, row], 0)
    assert read_set(tmp_path, "set") == [row, row]


def test_a_gsm8k_final_answer_is_ascii_digits() -> None:
    """``\\d`` matches any script's digits: "#### ٣" became the answer "٣", which no reply matches."""
    from pipelines.sft.formats import RecordError, from_gsm8k

    with pytest.raises(RecordError, match="not a number"):
        from_gsm8k({"question": "q", "answer": "x\n#### ٣"})
    assert from_gsm8k({"question": "q", "answer": "x\n#### 1,000"})[0]["meta"]["answer"] == "1000"


def test_bytes_that_are_not_utf8_skip_their_record_counted_not_replaced(tmp_path) -> None:
    """A line saved in Latin-1 was read with U+FFFD for its "é", kept and counted nowhere: the model
    then learned to write U+FFFD. Now the record is skipped and counted, its place and byte said."""
    from pipelines.rm.config import PreferenceSourceConfig
    from pipelines.rm.preferences import load_preferences

    row = {
        "messages": [
            {"role": "user", "content": "Say it in French"},
            {"role": "assistant", "content": "café"},
        ]
    }
    good, latin1 = (json.dumps(row, ensure_ascii=False).encode(enc) for enc in ("utf-8", "latin-1"))
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\n".join([good, latin1, good]) + b"\n")
    records, problems = _read(path)
    assert [r.where for r in records] == [f"{path}:1", f"{path}:3"] and records[0].value == row
    assert [(p.where, p.reason) for p in problems] == [(f"{path}:2", "invalid_utf8")]
    column = latin1.index(b"\xe9") + 1
    assert f"byte 0xe9 at line 2, column {column}" in problems[0].detail
    array = tmp_path / "b.json"  # an array's record is placed by the line it starts on
    array.write_bytes(b"[\n  " + good + b",\n  " + latin1 + b",\n  " + good + b"\n]\n")
    records, problems = _read(array)
    assert len(records) == 2 and [(p.where, p.reason) for p in problems] == [
        (f"{array}:3 (record 1)", "invalid_utf8")
    ]
    assert f"byte 0xe9 at line 3, column {column + 2}" in problems[0].detail
    convs, report = load_source(SourceConfig(path=str(path)))
    assert len(convs) == 2 and report.skipped == {"invalid_utf8": 1}
    assert "\ufffd" not in json.dumps(convs, ensure_ascii=False)
    pair = {"prompt": "Say it in French", "chosen": "café", "rejected": "cafe"}
    good, latin1 = (json.dumps(pair, ensure_ascii=False).encode(enc) for enc in ("utf-8", "latin-1"))
    (tmp_path / "p.jsonl").write_bytes(good + b"\n" + latin1 + b"\n")
    pairs, report = load_preferences(PreferenceSourceConfig(path=str(tmp_path / "p.jsonl")))
    assert len(pairs) == 1 and report.skipped == {"invalid_utf8": 1}


def test_an_escaped_half_of_a_surrogate_pair_skips_its_record(tmp_path) -> None:
    """json reads "\\ud800" as a lone surrogate, which the tokenizer silently wrote as U+FFFD."""
    lone = '{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "x"}]}'
    pair = (
        '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}, {"role": "assistant", "content": "x"}]}'
    )
    escaped = (
        '{"messages": [{"role": "user", "content": "\\\\ud800"}, {"role": "assistant", "content": "x"}]}'
    )
    records, problems = _read(_lines(tmp_path / "a.jsonl", pair, lone, escaped))
    assert [r.value["messages"][0]["content"] for r in records] == ["\U0001f600", "\\ud800"]
    assert [(p.where.rsplit(":", 1)[1], p.reason) for p in problems] == [("2", "lone_surrogate")]
    assert "\\ud800" in problems[0].detail


def test_a_seed_task_keeps_its_good_instances_and_counts_a_bad_one(shared_data, tmp_path) -> None:
    """A Stanford seed task with one empty instance lost all of its instances."""
    from pipelines.sft.formats import RecordError, from_alpaca

    lines = (shared_data / "sft" / "alpaca_seed_tasks.jsonl").read_text().splitlines()[:3]
    task = json.loads(lines[0])
    first = task["instances"][0]
    task["instances"] = [first, {"input": "", "output": ""}, {**first, "input": "again"}, "not an object"]
    path = _lines(tmp_path / "seed.jsonl", task, *lines[1:])
    convs, report = load_source(SourceConfig(path=str(path)))
    prompts = [c["messages"][0]["content"] for c in convs]
    assert len(convs) == 2 + sum(len(json.loads(line)["instances"]) for line in lines[1:])
    assert prompts[:2] == [
        task["instruction"] + (f"\n\n{first['input']}" if first["input"].strip() else ""),
        task["instruction"] + "\n\nagain",
    ]
    assert report.skipped == {"empty_reply": 1, "not_an_object": 1}
    assert [p.where for p in report.problems] == [f"{path}:1 (instance 1)", f"{path}:1 (instance 3)"]
    with pytest.raises(RecordError, match="reply is empty"):  # called alone, it says what is wrong
        from_alpaca(task)
