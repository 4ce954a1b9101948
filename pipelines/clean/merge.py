"""Pass 2 without dedup: pass 1's per-file outputs become the final outputs by a streamed rewrite.

Without a global step there is nothing left to compute: pass 2 only drops the bookkeeping column,
puts clean rows under ``language=xx/`` (the ``language`` column stays in the files, as in FineWeb's)
and gathers small per-file outputs into files of at least ``clean.min_rows_per_file`` rows. A Ray
Data read + write did that with a fixed start-up (read tasks in fresh worker processes, its executor
and actors) that weighed on small runs. Here the driver plans the output files from the per-file
footers (consecutive inputs until ``min_rows_per_file`` rows) and the pass-1 workers, already
running, write them: each streams its inputs one row group at a time (pass 1 bounds their size), so
memory does not grow with the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.clean.schema import CLEAN_SCHEMA, ERRORS_SCHEMA, REJECTED_SCHEMA
from pipelines.partitions import dictionary_encode, partition_folder, split_by

Kind = Literal["clean", "rejected", "errors"]
# data/rejected's columns (REJECTED_SCHEMA + text_truncated), data/clean's, data/errors'
COLUMNS: dict[Kind, list[str]] = {
    "clean": CLEAN_SCHEMA.names,
    "rejected": [*REJECTED_SCHEMA.names, "text_truncated"],
    "errors": ERRORS_SCHEMA.names,
}
COMPRESSION = "snappy"  # what Ray Data writes on the dedup path


@dataclass(frozen=True)
class MergeJob:
    """One output file (one per language for ``clean``) from consecutive per-file outputs."""

    kind: Kind
    inputs: tuple[str, ...]
    output_dir: str
    name: str


def plan(
    kind: Kind, parts: list[tuple[str, int]], output_dir: str, min_rows: int, prefix: str = "part"
) -> list[MergeJob]:
    """Groups of consecutive ``(path, rows)`` of at least ``min_rows`` rows (the last one: the rest).
    ``prefix`` starts each file name: a run passes its own, so no file name is reused across runs
    (as Ray Data's writes), and a file from an older run can never pass for a new one."""
    jobs: list[MergeJob] = []
    group: list[str] = []
    rows = 0
    for path, n in parts:
        group.append(path)
        rows += n
        if rows >= min_rows:
            jobs.append(MergeJob(kind, tuple(group), output_dir, f"{prefix}-{len(jobs):05d}.parquet"))
            group, rows = [], 0
    if group:
        jobs.append(MergeJob(kind, tuple(group), output_dir, f"{prefix}-{len(jobs):05d}.parquet"))
    return jobs


def run_merge(job: MergeJob) -> int:
    """Write one job's output file(s); returns the rows written. A retried job overwrites its files."""
    fs, base = storage.fs_and_path(job.output_dir)
    writers: dict[str, pq.ParquetWriter] = {}
    columns = COLUMNS[job.kind]

    def writer(folder: str, schema: pa.Schema) -> pq.ParquetWriter:
        if folder not in writers:
            path = "/".join(p for p in (base.rstrip("/"), folder, job.name) if p)
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            writers[folder] = pq.ParquetWriter(path, schema, filesystem=fs, compression=COMPRESSION)
        return writers[folder]

    rows = 0
    try:
        for path in job.inputs:
            in_fs, in_path = storage.fs_and_path(path)
            with in_fs.open_input_file(in_path) as f:
                parquet = pq.ParquetFile(f)
                have = _columns_of(parquet, columns, job.kind)
                for i in range(parquet.metadata.num_row_groups):
                    table = parquet.read_row_group(i, columns=have)
                    if have != columns:
                        table = _with_null_columns(table, columns)
                    rows += table.num_rows
                    if job.kind != "clean":
                        writer("", table.schema).write_table(table)
                        continue
                    for key, part in split_by(table, ["language"]):
                        part = dictionary_encode(part, ["language"])  # as ParquetSink writes it
                        writer(partition_folder(["language"], key), part.schema).write_table(part)
    finally:
        for w in writers.values():
            w.close()
    return rows


def _columns_of(parquet: pq.ParquetFile, columns: list[str], kind: Kind) -> list[str]:
    """The columns to read: all of them, but an errors file of pass 1 written by an older raychat (a
    run resumed after an upgrade) lacks ``url``, which is then null for its rows."""
    return [c for c in columns if c in parquet.schema_arrow.names] if kind == "errors" else columns


def _with_null_columns(table: pa.Table, columns: list[str]) -> pa.Table:
    for i, name in enumerate(columns):
        if name not in table.column_names:
            field = ERRORS_SCHEMA.field(name)
            table = table.add_column(i, field, pa.nulls(table.num_rows, field.type))
    return table
