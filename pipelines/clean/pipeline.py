"""The clean stage on Ray Data, in two passes.

Pass 1 (per input file, parallel over a Ray Data actor pool): read records, run the per-document
steps (URL filter, extraction, language ID, quality filters, PII, custom), and write that file's
kept / rejected / error rows plus a small ``done.json`` into ``data/_work/<file key>/``. A file with
a ``done.json`` is never processed again, so an interrupted run resumes where it stopped and a rerun
is cheap. Why per file: the unit of resume must be something that can be re-read deterministically.

Pass 2 (global): deduplicate the kept rows of all files with Ray Data shuffles, then write
``data/clean/language=xx/`` and ``data/rejected/`` into fresh directories that replace the old ones,
so a rerun never duplicates rows.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from typing import Any

import numpy as np

from pipelines import storage
from pipelines.clean.config import CleanConfig
from pipelines.clean.schema import (
    CLEAN_SCHEMA,
    ERRORS_SCHEMA,
    REJECTED_SCHEMA,
    REJECTED_WORK_SCHEMA,
    WORK_SCHEMA,
    to_table,
)

log = logging.getLogger("raychat.clean")


def file_key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def config_fingerprint(cfg: CleanConfig) -> str:
    """Pass-1 outputs depend on everything but dedup settings; a change invalidates them."""
    data = cfg.model_dump(mode="json", exclude={"dedup", "num_workers", "inputs"})
    return hashlib.sha1(repr(sorted(data.items())).encode()).hexdigest()[:16]


def _record_to_doc(record: dict[str, Any], key: str) -> dict[str, Any]:
    doc = dict(record)
    doc["_key"] = key
    if doc.get("content_type") == "text" or "content" not in doc:
        doc.setdefault("text", doc.pop("content", "") or "")
    else:
        doc.setdefault("text", "")
    return doc


def _rejected_text(doc: dict[str, Any]) -> None:
    """A document dropped before extraction keeps its raw content, so nothing is lost."""
    if not doc.get("text") and doc.get("content"):
        content = doc["content"]
        doc["text"] = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)


class FileProcessor:
    """Ray Data actor: pass 1 for a batch of input files (one at a time)."""

    def __init__(self, cfg_json: str, files: list[Any], work_dir: str) -> None:
        from pipelines.clean.steps import build_steps
        from pipelines.runtime import setup_logging

        setup_logging()
        self.cfg = CleanConfig.model_validate_json(cfg_json)
        self.files = files
        self.work_dir = work_dir
        self.steps = build_steps(self.cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        done = [self.process(int(i)) for i in batch["index"]]
        return {"file_key": [d["file_key"] for d in done], "records": [d["records"] for d in done]}

    def process(self, index: int) -> dict[str, Any]:
        from pipelines.clean.filters.base import run_steps
        from pipelines.clean.readers import read_file

        f = self.files[index]
        path = str(getattr(f, "path", f))
        key = file_key(path)
        out = storage.join(self.work_dir, key)
        marker = storage.read_json(storage.join(out, "done.json"))
        if marker is not None:
            return marker
        started = time.monotonic()
        kept: list[dict] = []
        rejected: list[dict] = []
        errors: list[dict] = []
        drops: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        records = 0
        read_record_errors = 0
        step_errors = [0]
        pending: list[dict] = []

        def flush() -> None:
            result = run_steps(self.steps, pending)
            kept.extend(result.kept)
            rejected.extend(result.rejected)
            for doc in result.errors:
                doc["record_index"] = int(doc["_key"].rsplit(":", 1)[1])
                doc.pop("content", None)
            errors.extend(result.errors)
            step_errors[0] += len(result.errors)
            for (step, reason), n in result.drops.items():
                drops[f"{step}/{reason}"] += n
            for (step, name), n in result.counts.items():
                counts[f"{step}/{name}"] += n
            pending.clear()

        for record in read_file(f, self.cfg.read):
            if record.get("_error"):
                errors.append(record)
                if record.get("record_index") is not None:
                    records += 1  # a record that was seen but could not be read
                    read_record_errors += 1
                drops[f"{record.get('step', 'read')}/{record.get('reason', 'error')}"] += 1
                continue
            pending.append(_record_to_doc(record, f"{key}:{records}"))
            records += 1
            if len(pending) >= self.cfg.batch_size:
                flush()
        if pending:
            flush()
        for doc in rejected:
            _rejected_text(doc)
        storage.write_parquet(to_table(kept, WORK_SCHEMA), storage.join(out, "kept.parquet"))
        storage.write_parquet(to_table(rejected, REJECTED_WORK_SCHEMA), storage.join(out, "rejected.parquet"))
        storage.write_parquet(to_table(errors, ERRORS_SCHEMA), storage.join(out, "errors.parquet"))
        seconds = time.monotonic() - started
        summary = {
            "file": path,
            "file_key": key,
            "bytes": int(getattr(f, "size", None) or 0),
            "records": records,
            "kept": len(kept),
            "rejected": len(rejected),
            "errors": len(errors),
            "record_errors": read_record_errors + step_errors[0],
            "file_errors": len(errors) - read_record_errors - step_errors[0],
            "drops": dict(drops),
            "counts": dict(counts),
            "seconds": round(seconds, 3),
        }
        storage.write_json(storage.join(out, "done.json"), summary)
        log.info(
            "clean: %s: %d records -> %d kept, %d rejected, %d errors (%.0f docs/s)",
            path,
            records,
            len(kept),
            len(rejected),
            len(errors),
            records / max(seconds, 1e-9),
        )
        return summary


def run_pass1(cfg: CleanConfig, files: list[Any], work_dir: str) -> list[dict[str, Any]]:
    """Process every input file not yet done, on a Ray Data actor pool; returns per-file summaries."""
    import ray

    todo = [
        i
        for i, f in enumerate(files)
        if storage.read_json(storage.join(work_dir, file_key(str(getattr(f, "path", f))), "done.json"))
        is None
    ]
    if len(todo) < len(files):
        log.info("clean: resuming: %d of %d input files already done", len(files) - len(todo), len(files))
    if todo:
        workers = cfg.num_workers or max(1, int(ray.available_resources().get("CPU", 1)))
        workers = max(1, min(workers, len(todo)))
        ds = ray.data.from_items([{"index": i} for i in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            FileProcessor,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cfg.cpus_per_worker,
            fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "files": files, "work_dir": work_dir},
        )
        ds.materialize()
    summaries = []
    for f in files:
        summary = storage.read_json(storage.join(work_dir, file_key(str(getattr(f, "path", f))), "done.json"))
        if summary is None:
            raise RuntimeError(f"clean: no result for {f} after pass 1")
        summaries.append(summary)
    return summaries


def _parquet_rows(path: str) -> int:
    import pyarrow.parquet as pq

    fs, p = storage.fs_and_path(path)
    with fs.open_input_file(p) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _nonempty(paths: list[str]) -> list[str]:
    return [p for p in paths if _parquet_rows(p) > 0]


def run_pass2(cfg: CleanConfig, work_dir: str, keys: list[str], data_dir: str) -> dict[str, Any]:
    """Global dedup over the kept rows of all files, then the final clean/rejected/errors outputs.

    Everything is written to a staging directory first and swapped in at the end, so a rerun (or a
    crash half-way) never leaves duplicated or partial outputs behind.
    """
    import ray

    from pipelines.clean.steps import resolve_steps

    def parts(name: str) -> list[str]:
        return _nonempty([storage.join(work_dir, k, f"{name}.parquet") for k in keys])

    staging = storage.join(data_dir, "_staging")
    storage.remove(staging)
    outputs = {name: storage.join(staging, name) for name in ("clean", "rejected", "errors")}
    for path in outputs.values():
        storage.makedirs(path)
    stats: dict[str, Any] = {}
    rejected_sets = []
    if kept_files := parts("kept"):
        kept = ray.data.read_parquet(kept_files)
        if "dedup" in resolve_steps(cfg.steps):
            from pipelines.clean.dedup import deduplicate

            kept, dropped, stats = deduplicate(kept, cfg.dedup, key="_key")
            rejected_sets.append(dropped.select_columns(REJECTED_SCHEMA.names))
        kept.select_columns(CLEAN_SCHEMA.names).write_parquet(
            outputs["clean"], partition_cols=["language"], min_rows_per_file=cfg.min_rows_per_file
        )
    if rejected_files := parts("rejected"):
        rejected_sets.append(ray.data.read_parquet(rejected_files).select_columns(REJECTED_SCHEMA.names))
    if rejected_sets:
        ds = rejected_sets[0].union(*rejected_sets[1:]) if len(rejected_sets) > 1 else rejected_sets[0]
        ds.write_parquet(outputs["rejected"], min_rows_per_file=cfg.min_rows_per_file)
    if error_files := parts("errors"):
        ray.data.read_parquet(error_files).write_parquet(outputs["errors"])
    for name in outputs:
        storage.replace_dir(outputs[name], storage.join(data_dir, name))
    storage.remove(staging)
    return stats
