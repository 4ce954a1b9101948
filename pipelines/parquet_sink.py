"""A Ray Data parquet sink for local paths and URIs; hive partitions (``language=en/``) keep their column.

Why not ``Dataset.write_parquet(partition_cols=...)``: Arrow's dataset writer moves a partition
column out of the files into the folder names, so one file read alone, or copied elsewhere, has no
``language`` column, while FineWeb's files (the schema we promise) carry it. This Ray Data sink
writes each write task's rows as one file per partition value, with every column kept. It takes
run-directory paths as they are (local, or URIs with pyarrow options in a query string, see
pipelines/storage.py), and writes files in place: its callers write into a staging folder that is
swapped in when the whole output is written.

Reading the folder back: the partition column is stored in the files as a dictionary-encoded string
(in parquet it is an ordinary UTF-8 column), the type Arrow's hive discovery gives folder names, so
``pyarrow.parquet.read_table(path)``, ``pandas.read_parquet(path)``, Ray Data, polars and
``pyarrow.dataset.dataset(path)`` all see one ``language`` column. Only
``pyarrow.dataset.dataset(path, partitioning="hive")`` (which infers plain strings from folder names)
clashes with it: leave the partitioning out, the column is in every file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from pipelines import storage
from pipelines.partitions import HIVE_NULL, dictionary_encode, partition_folder, split_by

__all__ = ["HIVE_NULL", "ParquetSink"]


class ParquetSink(Datasink[None]):
    """``ds.write_datasink(ParquetSink(path, ["language"], min_rows_per_file=50_000))``.

    Without ``partition_cols`` it is a plain parquet writer. Ray hands each write task at
    least ``min_rows_per_file`` rows when there are that many, as ``write_parquet`` does; a task
    writes one file per partition value it holds, named by the write and the task, so a retried
    task overwrites its own files instead of adding copies.
    """

    def __init__(
        self,
        path: str,
        partition_cols: Iterable[str] = (),
        min_rows_per_file: int | None = None,
        compression: str = "snappy",
    ) -> None:
        self.path = path
        self.partition_cols = list(partition_cols)
        self.min_rows_per_file = min_rows_per_file
        self.compression = compression
        self.write_id = uuid.uuid4().hex[:12]

    @property
    def min_rows_per_write(self) -> int | None:
        return self.min_rows_per_file

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        storage.makedirs(self.path)

    def write(self, blocks: Iterable[Block], ctx: Any) -> None:
        tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
        if not tables:
            return
        table = pa.concat_tables(tables, promote_options="default")
        fs, base = storage.fs_and_path(self.path)
        groups = split_by(table, self.partition_cols) if self.partition_cols else [((), table)]
        for i, (values, rows) in enumerate(groups):
            folder = partition_folder(self.partition_cols, values)
            name = f"{self.write_id}-{ctx.task_idx:06d}-{i:04d}.parquet"
            path = "/".join(p for p in (base.rstrip("/"), folder, name) if p)
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            rows = dictionary_encode(rows, self.partition_cols)
            pq.write_table(rows, path, filesystem=fs, compression=self.compression)
