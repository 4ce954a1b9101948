"""Hive partitions (``language=en/``) of an Arrow table, with the partition column kept in the files.

Pure pyarrow, without Ray Data on purpose: both the Ray Data sink (pipelines/parquet_sink.py) and
the clean stage's streamed merge (pipelines/clean/merge.py, which runs without Ray Data) lay out
their files this way, and importing Ray Data costs a process about 0.5 CPU-seconds (pandas included).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # Arrow's and Hive's folder name for a null value


def partition_folder(columns: list[str], values: Iterable[Any]) -> str:
    """``language=en`` (values URI-encoded as Arrow's hive partitioning does, so ``/`` or ``..`` in a
    value can never leave the output folder)."""
    return "/".join(
        f"{c}={HIVE_NULL if v is None else urllib.parse.quote(str(v), safe='')}"
        for c, v in zip(columns, values, strict=True)
    )


def split_by(table: pa.Table, columns: list[str]) -> list[tuple[tuple[Any, ...], pa.Table]]:
    """The rows of ``table`` grouped by the values of ``columns`` (nulls are a group too)."""
    keys = table.group_by(columns).aggregate([]).to_pylist()
    groups = []
    for key in keys:
        mask = None
        for c in columns:
            test = pc.is_null(table[c]) if key[c] is None else pc.fill_null(pc.equal(table[c], key[c]), False)
            mask = test if mask is None else pc.and_(mask, test)
        groups.append((tuple(key[c] for c in columns), table.filter(mask)))
    return groups


def dictionary_encode(table: pa.Table, columns: list[str]) -> pa.Table:
    """Partition columns as dictionary-encoded strings: the type hive discovery infers from folder names,
    so readers that merge the folder names with the files' column (pandas, pq.read_table) agree."""
    for name in columns:
        i = table.schema.get_field_index(name)
        column = table.column(i)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            table = table.set_column(i, name, pc.dictionary_encode(column.cast(pa.string())))
    return table
