"""The clean stage's workers (plain Ray actors, one input file per call) and pass 2 without dedup (a
streamed merge of the per-file outputs on those workers, no Ray Data)."""

from __future__ import annotations

import json
import os

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipelines.clean.merge import MergeJob, plan, run_merge
from pipelines.clean.schema import CLEAN_SCHEMA, WORK_SCHEMA, to_table
from pipelines.config import load_config


def test_plan_groups_consecutive_outputs_until_min_rows():
    parts = [("a", 3), ("b", 4), ("c", 10), ("d", 1), ("e", 2)]
    jobs = plan("rejected", parts, "out", min_rows=5)
    assert [job.inputs for job in jobs] == [("a", "b"), ("c",), ("d", "e")]  # the last: what is left
    assert [job.name for job in jobs] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert plan("errors", [], "out", 5) == []


def test_merge_splits_clean_rows_by_language_and_streams_row_groups(tmp_path):
    inputs = []
    for i, languages in enumerate([["en", "fr", "en"], ["und", "en"]]):
        docs = [
            {"text": f"t{i}{j}", "id": f"{i}-{j}", "language": lang, "_key": f"k{i}:{j}"}
            for j, lang in enumerate(languages)
        ]
        path = tmp_path / f"kept{i}.parquet"
        with pq.ParquetWriter(path, WORK_SCHEMA) as w:  # one row group per document
            for d in docs:
                w.write_table(to_table([d], WORK_SCHEMA))
        inputs.append(str(path))
    out = tmp_path / "clean"
    assert run_merge(MergeJob("clean", tuple(inputs), str(out), "part-00000.parquet")) == 5
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "language=en/part-00000.parquet",
        "language=fr/part-00000.parquet",
        "language=und/part-00000.parquet",
    ]
    en = pq.read_table(out / "language=en" / "part-00000.parquet")
    assert "_key" not in en.column_names and set(en.column("language").to_pylist()) == {"en"}
    assert en.column("id").to_pylist() == ["0-0", "0-2", "1-1"]  # input order kept
    rows = pads.dataset(str(out), format="parquet").to_table().to_pylist()
    assert sorted(r["id"] for r in rows) == ["0-0", "0-1", "0-2", "1-0", "1-1"]
    # a retried job writes the same files again instead of adding copies
    run_merge(MergeJob("clean", tuple(inputs), str(out), "part-00000.parquet"))
    assert len(list(out.rglob("*.parquet"))) == 3


def test_error_rows_carry_the_url_and_an_older_errors_file_merges_with_it_null(tmp_path):
    """A user looking up what failed needs the page's URL (the rows had it, the file dropped it); a
    pass-1 errors file from before the column (a run resumed after an upgrade) still merges."""
    import pyarrow as pa

    from pipelines.clean.documents import error_row
    from pipelines.clean.schema import ERRORS_SCHEMA

    new = error_row("a.warc", 3, "corrupt_record", "boom", id="<urn:1>", url="https://example.org/x")
    old = pa.table({"file_path": ["b.warc"], "record_index": pa.array([0], pa.int64()), "id": ["<urn:2>"],
                    "step": ["read"], "reason": ["bad"], "error": ["e"]})  # fmt: skip
    pq.write_table(to_table([new], ERRORS_SCHEMA), tmp_path / "new.parquet")
    pq.write_table(old, tmp_path / "old.parquet")
    out = tmp_path / "errors"
    inputs = (str(tmp_path / "new.parquet"), str(tmp_path / "old.parquet"))
    assert run_merge(MergeJob("errors", inputs, str(out), "part-00000.parquet")) == 2
    merged = pq.read_table(out / "part-00000.parquet")
    assert merged.schema.equals(ERRORS_SCHEMA)
    assert merged.column("url").to_pylist() == ["https://example.org/x", None]


def test_a_file_that_kills_its_worker_is_recorded_and_the_others_go_on(ray_session):
    import ray

    from pipelines.clean.config import CleanConfig
    from pipelines.clean.workers import RETRIES, WorkerPool

    class DiesOn:  # defined here so that Ray ships the class itself to the workers
        """A stand-in worker whose process dies (as under the OOM killer) on one item."""

        def process(self, item: int) -> int:
            if item == 2:
                os._exit(1)
            return item * 10

    pool = WorkerPool(CleanConfig(), [], "unused")
    pool.actors = [
        ray.remote(DiesOn).options(num_cpus=0, max_restarts=-1, max_task_retries=RETRIES).remote()
        for _ in range(2)
    ]
    try:
        results = dict(pool.run("process", [0, 1, 2, 3, 4], lambda item, e: ("failed", item)))
    finally:
        pool.close()
    assert results == {0: 0, 1: 10, 2: ("failed", 2), 3: 30, 4: 40}
    assert pool.actors == []


@pytest.mark.slow
def test_without_dedup_no_ray_data_runs_and_outputs_match_the_files(
    tmp_path, ray_session, shared_data, monkeypatch
):
    """``--steps extract,quality,pii``: both passes on the workers; counts add up; a rerun is the same."""
    import ray

    from pipelines.clean import job

    def no_ray_data(*args, **kwargs):
        raise AssertionError("Ray Data was used by a run without dedup")

    monkeypatch.setattr(ray.data, "read_parquet", no_ray_data)
    monkeypatch.setattr(ray.data, "from_items", no_ray_data)
    inputs = [str(shared_data / "crawl"), str(shared_data / "fineweb" / "c4_olmo")]
    overrides = [
        f"run_dir={tmp_path}",
        f"clean.inputs={json.dumps(inputs)}",
        "clean.steps=[extract,quality,pii]",
        "clean.min_rows_per_file=5",  # several output files per output
    ]
    summary = job.run(load_config(None, overrides))
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["counts_add_up"] and stats["records"] == summary["records"] > 70
    assert summary["clean"] > 0 and summary["rejected"] > 0
    clean_dir = tmp_path / "data" / "clean"
    assert len(list((tmp_path / "data" / "rejected").glob("*.parquet"))) > 1
    rows = pads.dataset(str(clean_dir), format="parquet").to_table().to_pylist()  # the files' own columns
    assert len(rows) == summary["clean"] and all(r["language"] == "und" for r in rows)
    assert {p.parent.name for p in clean_dir.rglob("*.parquet")} == {"language=und"}
    one_file = pq.read_table(next(clean_dir.rglob("*.parquet")), partitioning=None)
    assert one_file.column_names == CLEAN_SCHEMA.names  # the language column too, in every file
    again = job.run(load_config(None, overrides))  # resume: pass 1 is done, pass 2 redone in place
    keys = ("records", "clean", "rejected", "record_errors", "file_errors", "languages")
    assert {k: again[k] for k in keys} == {k: summary[k] for k in keys}
    rerun_rows = pads.dataset(str(clean_dir), format="parquet").to_table()
    assert sorted(rerun_rows.column("id").to_pylist()) == sorted(r["id"] for r in rows)
    assert not (tmp_path / "data" / "_staging").exists()
