"""What the clean stage promises about its outputs: FineWeb's columns in every file, resume that
notices a changed input, counts that add up or a failed stage, and missing inputs as a choice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines import cli
from pipelines.clean.schema import CLEAN_SCHEMA
from pipelines.run_dir import RunDir, is_done

pytestmark = pytest.mark.slow

EN = (
    "The city council met on Tuesday evening to discuss the plans for the new public library. Everyone "
    "who spoke agreed that the building should open before the end of the year."
)
FR = (
    "Le conseil municipal s'est réuni mardi soir pour discuter des plans de la nouvelle bibliothèque. "
    "Tous ceux qui ont pris la parole ont convenu qu'elle devait ouvrir avant la fin de l'année."
)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def docs(prefix: str, n: int, text: str) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "text": f"{text} {i}",
            "url": f"https://{prefix}.example/{i}",
        }
        for i in range(n)
    ]


def clean(run_dir: Path, *args: str) -> int:
    keep = "clean.language.languages=[en, fr]"
    return cli.main(["clean", "--output", str(run_dir), "--steps", "language,pii", "--set", keep, *args])


def test_every_clean_file_carries_the_language_column_and_missing_inputs_can_be_skipped(
    tmp_path, ray_session
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "en.jsonl", docs("en", 4, EN))
    write_jsonl(inputs / "fr.jsonl", docs("fr", 3, FR))
    missing = str(tmp_path / "not-downloaded/*.jsonl")
    run = RunDir(tmp_path / "run")
    code = clean(run.root, "--input", str(inputs), missing, "--set", "clean.missing_inputs=skip")
    assert code == 0
    stats = json.loads(run.stats.read_text())
    assert stats["missing_inputs"] == [missing] and stats["counts_add_up"]

    files = sorted(run.clean.rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"language=en", "language=fr"}  # the folders stay
    for f in files:  # one file read alone has FineWeb's columns, language included
        table = pq.read_table(f)
        assert table.schema.names == CLEAN_SCHEMA.names
        assert set(table.column("language").to_pylist()) == {f.parent.name.split("=", 1)[1]}
    # the folder read with hive partitioning: one language column, no clash with the folder names
    table = pads.dataset(
        str(run.clean), format="parquet", partitioning=pads.HivePartitioning.discover(infer_dictionary=True)
    ).to_table()
    assert table.schema.names.count("language") == 1 and table.num_rows == 7
    assert sorted(table.column("language").to_pylist()) == ["en"] * 4 + ["fr"] * 3
    assert pq.read_table(run.clean, partitioning=None).num_rows == 7
    # the in-file column has the type hive discovery gives folder names: pandas and pq.read_table agree
    assert pq.read_table(run.clean).num_rows == 7
    assert sorted(pd.read_parquet(run.clean)["language"].astype(str)) == ["en"] * 4 + ["fr"] * 3


def test_a_file_replaced_at_the_same_path_is_cleaned_again(tmp_path, ray_session):
    inputs = tmp_path / "in"
    inputs.mkdir()
    stays = write_jsonl(inputs / "stays.jsonl", docs("stays", 3, EN))
    changes = write_jsonl(inputs / "changes.jsonl", docs("old", 2, EN)[:1])  # a truncated download
    run = RunDir(tmp_path / "run")
    assert clean(run.root, "--input", str(inputs)) == 0
    work = run.root / "data" / "_work"
    markers = {json.loads(m.read_text())["file"]: m for m in work.glob("*/done.json")}
    stays_marker = markers[str(stays)].stat().st_mtime_ns

    write_jsonl(changes, docs("new", 2, EN))  # downloaded again, complete this time
    os.utime(changes, ns=(changes.stat().st_atime_ns, changes.stat().st_mtime_ns + 10**9))
    same_size = write_jsonl(inputs / "same_size.jsonl", docs("aaa", 1, EN))
    assert clean(run.root, "--input", str(inputs)) == 0
    ids = {r["id"] for r in pq.read_table(run.clean, partitioning=None).to_pylist()}
    assert ids == {"stays0", "stays1", "stays2", "new0", "new1", "aaa0"}
    assert markers[str(stays)].stat().st_mtime_ns == stays_marker  # the unchanged file was not redone

    # same size, other content: the modification time tells
    write_jsonl(same_size, docs("bbb", 1, EN))
    os.utime(same_size, ns=(same_size.stat().st_atime_ns, same_size.stat().st_mtime_ns + 10**9))
    assert clean(run.root, "--input", str(inputs)) == 0
    ids = {r["id"] for r in pq.read_table(run.clean, partitioning=None).to_pylist()}
    assert "bbb0" in ids and "aaa0" not in ids
    assert markers[str(stays)].stat().st_mtime_ns == stays_marker


def test_counts_that_do_not_add_up_fail_the_stage(tmp_path, ray_session, monkeypatch, capsys):
    from pipelines.clean import job

    real = job.count_written

    def one_row_lost(run: RunDir) -> dict[str, int]:
        written = real(run)
        return written | {"clean": written["clean"] - 1}

    monkeypatch.setattr(job, "count_written", one_row_lost)
    path = write_jsonl(tmp_path / "in.jsonl", docs("en", 3, EN))
    run = RunDir(tmp_path / "run")
    code = clean(run.root, "--input", str(path))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("raychat:")]
    assert code == 1
    assert len(err) == 1 and "clean failed: the outputs do not add up: 3 records in" in err[0]
    assert "written 2 clean" in err[0]
    assert not is_done(run, "clean")  # a failed stage is not marked done
    assert json.loads(run.stats.read_text())["counts_add_up"] is False  # kept for a look


@pytest.mark.parametrize("v2", [False, True])
def test_parquet_sink_keeps_partition_columns_that_ray_reads_back_once(tmp_path, ray_session, v2):
    """The sink behind data/clean on the dedup path; values are URI-encoded folder names."""
    import ray

    from pipelines.parquet_sink import HIVE_NULL, ParquetSink
    from pipelines.runtime import ray_data_settings

    rows = [{"text": f"t{i}", "language": lang} for i, lang in enumerate(["en", "en", "fr", "../x", None])]
    out = tmp_path / "out"
    ray.data.from_items(rows).write_datasink(ParquetSink(str(out), ["language"], min_rows_per_file=100))
    folders = sorted(p.name for p in out.iterdir())
    assert folders == sorted(["language=en", "language=fr", "language=..%2Fx", f"language={HIVE_NULL}"])
    assert all(len(list((out / f).iterdir())) == 1 for f in folders)  # min_rows_per_file: one task
    assert pq.read_table(out / "language=..%2Fx").column("language").to_pylist() == ["../x"]
    hive = (
        pads.dataset(
            str(out), format="parquet", partitioning=pads.HivePartitioning.discover(infer_dictionary=True)
        )
        .to_table()
        .to_pylist()
    )
    assert sorted(hive, key=lambda r: r["text"]) == rows  # the null went to Arrow's null folder and back
    with ray_data_settings(use_datasource_v2=v2):  # pass 2 reads with v2 off
        back = ray.data.read_parquet(str(out)).take_all()
    assert len(back) == 5 and all(set(r) == {"text", "language"} for r in back)  # one language column
    # (Ray's v2 reader takes the null folder's name for the value: clean never writes null languages)
    assert sorted((r["text"], r["language"]) for r in back if r["text"] != "t4") == [
        ("t0", "en"),
        ("t1", "en"),
        ("t2", "fr"),
        ("t3", "../x"),
    ]
