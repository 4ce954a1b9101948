"""Pass 2 of the clean stage: pass 1's per-file outputs become data/clean, data/rejected and
data/errors. Without a dedup step the files are only gathered, on pass 1's workers
(pipelines/clean/merge.py); with one, Ray Data runs the global dedup (pipelines/clean/dedup.py).
Everything is written to a staging folder and swapped in at the end."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipelines import storage
from pipelines.clean.config import CleanConfig
from pipelines.clean.pipeline import REJECTED_OUT_SCHEMA, TRUNCATED_FIELD
from pipelines.clean.schema import CLEAN_SCHEMA, REJECTED_SCHEMA
from pipelines.run_dir import RunDir

if TYPE_CHECKING:
    from pipelines.clean.workers import WorkerPool


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    fs, p = storage.fs_and_path(path)
    with fs.open_input_file(p) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _nonempty(paths: list[str]) -> list[str]:
    return [p for p in paths if _parquet_rows(p) > 0]


def _read_parquet(paths: list[str]) -> Any:
    """``ray.data.read_parquet`` of run-directory paths, URIs with a query string included."""
    import ray

    fs, _ = storage.fs_and_path(paths[0])
    return ray.data.read_parquet([storage.fs_and_path(p)[1] for p in paths], filesystem=fs)


def run_pass2(
    cfg: CleanConfig, work_dir: str, keys: list[str], run: RunDir, pool: WorkerPool
) -> dict[str, Any]:
    """Global dedup over the kept rows of all files, then the final clean/rejected/errors outputs.

    Everything is written to a staging directory first and swapped in at the end, so a rerun (or a
    crash half-way) never leaves duplicated or partial outputs behind. Without a dedup step the
    per-file outputs are only gathered, on the workers (``pool``; pipelines/clean/merge.py); with
    one, the workers are let go and Ray Data runs the dedup.
    """
    from pipelines.clean.steps import resolve_steps

    staging = run.at("clean_staging")
    storage.remove(staging)
    outputs = {name: storage.join(staging, name) for name in ("clean", "rejected", "errors")}
    for path in outputs.values():
        storage.makedirs(path)
    if "dedup" in resolve_steps(cfg.steps):
        pool.close()  # their CPUs go to the dedup pass
        from pipelines.runtime import ray_data_settings

        with ray_data_settings(use_datasource_v2=False):  # pass 1's many small parquet files
            stats = _dedup_and_write(cfg, work_dir, keys, outputs)
    else:
        _gather(cfg, work_dir, keys, outputs, pool)
        stats = {}
    for name in outputs:
        storage.replace_dir(outputs[name], run.at(name))
    storage.remove(staging)
    return stats


def _gather(
    cfg: CleanConfig, work_dir: str, keys: list[str], outputs: dict[str, str], pool: WorkerPool
) -> None:
    """Pass 2 without dedup: the per-file outputs merged into the final files, on the workers."""
    from pipelines.clean.merge import Kind, plan

    pass1_outputs: list[tuple[Kind, str]] = [
        ("clean", "kept"),
        ("rejected", "rejected"),
        ("errors", "errors"),
    ]
    jobs = []
    prefix = uuid.uuid4().hex[:12]
    for kind, name in pass1_outputs:
        sized = [(p, _parquet_rows(p)) for p in (storage.join(work_dir, k, f"{name}.parquet") for k in keys)]
        jobs += plan(kind, [(p, n) for p, n in sized if n], outputs[kind], cfg.min_rows_per_file, prefix)

    def failed(job: Any, e: BaseException) -> None:
        raise RuntimeError(f"clean: writing {job.output_dir}/{job.name} failed: {e}") from e

    for _ in pool.run("merge", jobs, failed):
        pass


def _keys_by_input_position(batch: pa.Table, positions: dict[str, str]) -> pa.Table:
    """Pass 1 keys a document by a hash of its file's path and its place in the file; dedup keeps
    each cluster's smallest key. Keyed by the file's place in the input list instead, the same crawl
    and config keep the same documents wherever the files live (two checkouts of the demo kept 66
    different documents of 1,173 before). The keys stay unique: one position per file of this run."""
    column = batch.column("_key").to_pylist()
    rekeyed = []
    for k in column:
        file, _, place = k.partition(":")
        rekeyed.append(
            f"{positions[file]}:{int(place):09d}" if place.isdigit() else f"{positions[file]}:{place}"
        )
    return batch.set_column(batch.schema.get_field_index("_key"), "_key", pa.array(rekeyed, pa.string()))


def _dedup_and_write(cfg: CleanConfig, work_dir: str, keys: list[str], outputs: dict[str, str]) -> dict:
    """Pass 2 with dedup, on Ray Data: dedup the kept rows, then write all three outputs."""
    from pipelines.clean.dedup import deduplicate
    from pipelines.parquet_sink import ParquetSink

    def parts(name: str) -> list[str]:
        return _nonempty([storage.join(work_dir, k, f"{name}.parquet") for k in keys])

    stats: dict[str, Any] = {}
    rejected_sets = []
    if kept_files := parts("kept"):
        kept = _read_parquet(kept_files).map_batches(
            _keys_by_input_position,
            fn_args=({k: f"{i:06d}" for i, k in enumerate(keys)},),
            batch_format="pyarrow",
        )
        kept, dropped, stats = deduplicate(kept, cfg.dedup, key="_key")
        dropped = dropped.select_columns(REJECTED_SCHEMA.names).add_column(
            TRUNCATED_FIELD.name,
            lambda t: pa.array([False] * t.num_rows, pa.bool_()),  # a duplicate keeps its whole text
            batch_format="pyarrow",
        )
        rejected_sets.append(dropped)
        # language=xx/ folders, and the language column inside each file as in FineWeb's files
        kept.select_columns(CLEAN_SCHEMA.names).write_datasink(
            ParquetSink(outputs["clean"], ["language"], min_rows_per_file=cfg.min_rows_per_file)
        )
    if rejected_files := parts("rejected"):
        rejected_sets.append(_read_parquet(rejected_files).select_columns(REJECTED_OUT_SCHEMA.names))
    if rejected_sets:
        ds = rejected_sets[0].union(*rejected_sets[1:]) if len(rejected_sets) > 1 else rejected_sets[0]
        ds.write_datasink(ParquetSink(outputs["rejected"], min_rows_per_file=cfg.min_rows_per_file))
    if error_files := parts("errors"):
        _read_parquet(error_files).write_datasink(ParquetSink(outputs["errors"]))
    return stats
