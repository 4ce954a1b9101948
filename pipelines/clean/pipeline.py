"""The clean stage on Ray Data, in two passes.

Pass 1 (per input file, parallel over a Ray Data actor pool): read records, run the per-document
steps (URL filter, extraction, language ID, quality filters, PII, custom), and write that file's
kept / rejected / error rows plus a small ``done.json`` into ``data/_work/<file key>/``. A file with
a ``done.json`` is never processed again, so an interrupted run resumes where it stopped and a rerun
is cheap. Why per file: the unit of resume must be something that can be re-read deterministically.
The rows are written in bounded chunks as they come (``write_chunk_rows``, ``write_chunk_mb``), and a
rejected document stores its text, or its raw content cut to ``rejected_max_chars``, so an actor's
memory does not grow with the size of the file (a 1 GB WARC).

Pass 2 (global): deduplicate the kept rows of all files with Ray Data shuffles, then write
``data/clean/language=xx/`` and ``data/rejected/`` into fresh directories that replace the old ones,
so a rerun never duplicates rows.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.clean.config import CleanConfig
from pipelines.clean.schema import (
    ERRORS_SCHEMA,
    REJECTED_SCHEMA,
    REJECTED_WORK_SCHEMA,
    WORK_SCHEMA,
    to_table,
)

if TYPE_CHECKING:
    from pipelines.clean.workers import WorkerPool

log = logging.getLogger("raychat.clean")

# data/rejected's columns: REJECTED_SCHEMA plus whether ``text`` holds only the start of the raw content
TRUNCATED_FIELD = pa.field("text_truncated", pa.bool_())
REJECTED_OUT_SCHEMA = REJECTED_SCHEMA.append(TRUNCATED_FIELD)
REJECTED_PASS1_SCHEMA = REJECTED_WORK_SCHEMA.append(TRUNCATED_FIELD)


def file_key(path: str) -> str:
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def file_version(f: Any) -> str | None:
    """What changes when a file's content does: its size and modification time (from the listing).

    A pass-1 result is reused only for the same version, so a file downloaded again to the same path
    (complete this time, or simply new) is processed again. pyarrow's file listings carry no checksum
    or ETag, and an object store's modification time changes with every upload, so size and time it
    is. None when the listing had neither (a bare path): such a result is reused as before.
    """
    size, mtime = getattr(f, "size", None), getattr(f, "mtime_ns", None)
    return None if size is None and mtime is None else f"{size}:{mtime}"


# settings that change how pass 1 runs (parallelism, batching, memory), never what it writes: lowering
# write_chunk_mb after running out of memory must not throw away the files already done
RUN_ONLY_SETTINGS = {
    "dedup",
    "num_workers",
    "inputs",
    "missing_inputs",
    "cpus_per_worker",
    "batch_size",
    "min_rows_per_file",
    "write_chunk_rows",
    "write_chunk_mb",
}


def config_fingerprint(cfg: CleanConfig) -> str:
    """Pass-1 outputs depend on every setting but RUN_ONLY_SETTINGS; a change invalidates them."""
    data = cfg.model_dump(mode="json", exclude=RUN_ONLY_SETTINGS)
    return hashlib.sha1(repr(sorted(data.items())).encode()).hexdigest()[:16]


def _record_to_doc(record: dict[str, Any], key: str) -> dict[str, Any]:
    doc = dict(record)
    doc["_key"] = key
    if doc.get("content_type") == "text" or "content" not in doc:
        doc.setdefault("text", doc.pop("content", "") or "")
    else:
        doc.setdefault("text", "")
    return doc


def _bound_rejected(doc: dict[str, Any], max_chars: int | None) -> int:
    """What a rejected document stores: its text, else its raw content cut to ``max_chars``.

    A document dropped before extraction (by the URL filter) has no text, so it keeps its raw
    content and nothing is lost, but only up to ``max_chars`` (``text_truncated`` says when it was
    cut): whole pages of HTML kept for every dropped document once dominated an actor's memory.
    Returns the characters stored.
    """
    content = doc.pop("content", None)
    doc["text_truncated"] = False
    if not doc.get("text") and content:
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars]
            doc["text_truncated"] = True
        doc["text"] = text
    text = doc.get("text")
    return len(text) if isinstance(text, str) else 0


def _file_error(path: str, reason: str, error: str) -> dict[str, Any]:
    """An error row about a whole file (``record_index`` None: no input record is claimed by it)."""
    return {
        "file_path": path,
        "record_index": None,
        "step": "pipeline",
        "reason": reason,
        "error": error[:2000],
    }


def _exception_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _table_keeping_good_rows(
    docs: list[dict[str, Any]], make_table: Callable[[list[dict[str, Any]]], pa.Table], path: str
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """The documents as a table, and an error row for each document that cannot be written.

    Why: Arrow refuses a whole column for one bad value (a string with no UTF-8 form that a custom
    mapper made, a number that overflows), and losing a file's good documents to one bad one breaks
    the project's rule. The fast path converts everything at once; only on failure are the documents
    converted one at a time to find the bad ones.
    """
    try:
        return make_table(docs), []
    except Exception:  # noqa: BLE001 - find the rows at fault below
        pass
    good, bad = [], []
    for doc in docs:
        try:
            make_table([doc])
        except Exception as e:  # noqa: BLE001 - this document's problem only
            bad.append(_record_error(path, doc, "write", "unwritable_record", e))
        else:
            good.append(doc)
    return make_table(good), bad


def _record_error(path: str, doc: dict[str, Any], step: str, reason: str, e: BaseException) -> dict[str, Any]:
    """The error row of one input record that an unexpected exception kept from its outcome."""
    doc_id, url = doc.get("id"), doc.get("url")
    return _writable(
        {
            "file_path": path,
            "record_index": _record_index(doc),
            "id": doc_id if isinstance(doc_id, str) else None,
            "url": url if isinstance(url, str) else None,
            "step": step,
            "reason": reason,
            "error": _exception_text(e)[:2000],
        }
    )


def _record_index(doc: dict[str, Any]) -> int | None:
    key = doc.get("_key")
    return int(key.rsplit(":", 1)[1]) if isinstance(key, str) and ":" in key else None


def _writable(row: dict[str, Any]) -> dict[str, Any]:
    """An error row whose strings all have a UTF-8 form (they quote the bad values)."""
    from pipelines.decode import valid_utf8_fields

    return valid_utf8_fields(row)[0]


def _kept_table(docs: list[dict[str, Any]]) -> pa.Table:
    return to_table(docs, WORK_SCHEMA)


def _rejected_table(docs: list[dict[str, Any]]) -> pa.Table:
    flags = pa.array([bool(d.get("text_truncated")) for d in docs], pa.bool_())
    return to_table(docs, REJECTED_WORK_SCHEMA).append_column(TRUNCATED_FIELD, flags)


def _errors_table(rows: list[dict[str, Any]]) -> pa.Table:
    # error rows quote what went wrong, bad strings included: make every one writable
    return to_table([_writable({k: row.get(k) for k in ERRORS_SCHEMA.names}) for row in rows], ERRORS_SCHEMA)


class _ChunkedParquet:
    """One pass-1 output of one input file, written a chunk (row group) at a time.

    The file is written under a temporary name and renamed when the input file is done, so a
    crash never leaves a partial output under the real name (pass 2 reads only real names), and a
    redone file replaces its old output instead of adding to it.
    """

    def __init__(self, path: str, schema: pa.Schema) -> None:
        self.schema = schema
        self.output = storage.PendingOutput(path, stream=True)
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def _open(self) -> pq.ParquetWriter:
        if self.writer is None:
            out = self.output
            self.writer = pq.ParquetWriter(out.target, self.schema, filesystem=out.fs, compression="zstd")
        return self.writer

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._open().write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self._open().close()  # an output without rows is still a file, with the schema
        self.writer = None
        self.output.commit()

    def abort(self) -> None:
        """Drop a half-written output (a leftover would also be removed when the file is redone)."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            finally:
                self.output.discard()


class FileProcessor:
    """Pass 1 of one input file at a time (pipelines/clean/workers.py runs it in the Ray workers).

    A file that fails in a way nobody foresaw becomes one file-level error row (the file, the
    reason, the exception), never a crashed call.
    """

    def __init__(self, cfg_json: str, files: list[Any], work_dir: str) -> None:
        from pipelines.clean.steps import build_steps
        from pipelines.runtime import setup_logging

        setup_logging()
        self.cfg = CleanConfig.model_validate_json(cfg_json)
        self.files = files
        self.work_dir = work_dir
        self.steps = build_steps(self.cfg)

    def process(self, index: int) -> dict[str, Any]:
        f = self.files[index]
        path = str(getattr(f, "path", f))
        key = file_key(path)
        out = storage.join(self.work_dir, key)
        if (marker := _finished(out, file_version(f))) is not None:
            return marker
        try:
            return self._process(f, path, key, out)
        except Exception as e:  # noqa: BLE001 - the last line of defence: this file's error only
            log.exception("clean: %s failed; recording it as a file error", path)
            return record_failed_file(f, path, key, out, e)

    def _process(self, f: Any, path: str, key: str, out: str) -> dict[str, Any]:
        from pipelines.clean.filters.base import run_steps
        from pipelines.clean.readers import read_file

        started = time.monotonic()
        cfg = self.cfg
        for stale in storage.list_files(out, ".tmp", hidden=True):  # left by a run that died mid-file
            storage.remove(stale)
        outputs = {
            "kept": _ChunkedParquet(storage.join(out, "kept.parquet"), WORK_SCHEMA),
            "rejected": _ChunkedParquet(storage.join(out, "rejected.parquet"), REJECTED_PASS1_SCHEMA),
            "errors": _ChunkedParquet(storage.join(out, "errors.parquet"), ERRORS_SCHEMA),
        }
        # rows waiting to be written: at most about write_chunk_rows each, write_chunk_mb of text
        kept: list[dict] = []
        rejected: list[dict] = []
        errors: list[dict] = []
        held_chars = 0
        chunk_chars = cfg.write_chunk_mb * 1024 * 1024
        drops: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        records = 0
        record_errors = 0
        pending: list[dict] = []

        def write(force: bool = False) -> None:
            nonlocal record_errors, held_chars
            rows = cfg.write_chunk_rows
            if not force and max(len(kept), len(rejected), len(errors)) < rows and held_chars < chunk_chars:
                return
            kept_table, bad_kept = _table_keeping_good_rows(kept, _kept_table, path)
            rejected_table, bad_rejected = _table_keeping_good_rows(rejected, _rejected_table, path)
            for row in bad_kept + bad_rejected:
                errors.append(row)
                record_errors += 1
                drops["write/unwritable_record"] += 1
            outputs["kept"].write(kept_table)
            outputs["rejected"].write(rejected_table)
            outputs["errors"].write(_errors_table(errors))
            kept.clear()
            rejected.clear()
            errors.clear()
            held_chars = 0

        def flush() -> None:
            nonlocal record_errors, held_chars
            try:
                result = run_steps(self.steps, pending)
            except Exception as e:  # noqa: BLE001 - a bug outside any one step: this batch's error
                log.exception("clean: %s: a batch of %d documents failed", path, len(pending))
                for doc in pending:
                    errors.append(_record_error(path, doc, "pipeline", "exception", e))
                record_errors += len(pending)
                drops["pipeline/exception"] += len(pending)
                pending.clear()
                return
            for doc in result.kept:
                doc.pop("content", None)
                held_chars += len(doc["text"]) if isinstance(doc.get("text"), str) else 0
            kept.extend(result.kept)
            for doc in result.rejected:
                held_chars += _bound_rejected(doc, cfg.rejected_max_chars)
                if doc["text_truncated"]:
                    counts["pass1/rejected_text_truncated"] += 1
            rejected.extend(result.rejected)
            for doc in result.errors:
                doc["record_index"] = _record_index(doc)
                doc["file_path"] = path  # the input file, not the record's own file_path column
                doc.pop("content", None)
            errors.extend(result.errors)
            record_errors += len(result.errors)
            for (step, reason), n in result.drops.items():
                drops[f"{step}/{reason}"] += n
            for (step, name), n in result.counts.items():
                counts[f"{step}/{name}"] += n
            pending.clear()

        try:
            try:
                for record in read_file(f, cfg.read):
                    if record.get("_error"):
                        errors.append(record)
                        if record.get("record_index") is not None:
                            records += 1  # a record that was seen but could not be read
                            record_errors += 1
                        drops[f"{record.get('step', 'read')}/{record.get('reason', 'error')}"] += 1
                        if len(errors) >= cfg.write_chunk_rows:
                            write()
                        continue
                    if replaced := record.get("decode_errors"):
                        # invalid UTF-8 (or lone surrogates) replaced by U+FFFD: kept, but never silently
                        counts["read/invalid_utf8_replaced"] += int(replaced)
                        counts["read/records_with_invalid_utf8"] += 1
                    pending.append(_record_to_doc(record, f"{key}:{records}"))
                    records += 1
                    if len(pending) >= cfg.batch_size:
                        flush()
                        write()
                if pending:
                    flush()
            except Exception as e:  # noqa: BLE001 - keep what was done; the rest of the file is this error
                log.exception("clean: %s failed after %d records", path, records)
                for doc in pending:  # read, but never decided: each is a record error
                    errors.append(_record_error(path, doc, "pipeline", "exception", e))
                record_errors += len(pending)
                drops["pipeline/exception"] += len(pending)
                pending.clear()
                errors.append(
                    _file_error(
                        path, "processing_failed", f"stopped after {records} records: {_exception_text(e)}"
                    )
                )
                drops["pipeline/processing_failed"] += 1
            write(force=True)
            for output in outputs.values():
                output.close()
        except BaseException:
            for output in outputs.values():
                output.abort()
            raise
        n_kept, n_rejected, n_errors = (outputs[k].rows for k in ("kept", "rejected", "errors"))
        seconds = time.monotonic() - started
        summary = _summary(
            f, path, key, records, n_kept, n_rejected, n_errors, record_errors, drops, counts, seconds
        )
        storage.write_json(storage.join(out, "done.json"), summary)
        log.info(
            "clean: %s: %d records -> %d kept, %d rejected, %d errors (%.0f docs/s)",
            path,
            records,
            n_kept,
            n_rejected,
            n_errors,
            records / max(seconds, 1e-9),
        )
        return summary


def record_failed_file(f: Any, path: str, key: str, out: str, e: BaseException) -> dict[str, Any]:
    """The file as one file-level error with empty outputs; ``failed`` makes a rerun try it again."""
    for name in ("kept", "rejected"):
        schema = WORK_SCHEMA if name == "kept" else REJECTED_PASS1_SCHEMA
        storage.write_parquet(schema.empty_table(), storage.join(out, f"{name}.parquet"))
    row = _writable(_file_error(path, "file_failed", _exception_text(e)))
    storage.write_parquet(to_table([row], ERRORS_SCHEMA), storage.join(out, "errors.parquet"))
    summary = _summary(f, path, key, 0, 0, 0, 1, 0, {"pipeline/file_failed": 1}, {}, 0.0) | {"failed": True}
    storage.write_json(storage.join(out, "done.json"), summary)
    return summary


def run_pass1(cfg: CleanConfig, files: list[Any], work_dir: str, pool: WorkerPool) -> list[dict[str, Any]]:
    """Process every input file not yet done on the workers (one file per call, pipelines/clean/
    workers.py); returns per-file summaries."""
    from pipelines.runtime import Progress

    todo = [i for i, f in enumerate(files) if _needs_pass1(work_dir, f)]
    if len(todo) < len(files):
        log.info("clean: resuming: %d of %d input files already done", len(files) - len(todo), len(files))
    if todo:
        progress = Progress("clean pass 1", len(todo), unit="files", every_s=10.0)
        records = 0

        def failed(index: int, e: BaseException) -> dict[str, Any]:
            path = str(getattr(files[index], "path", files[index]))
            out = storage.join(work_dir, file_key(path))
            return record_failed_file(files[index], path, file_key(path), out, e)

        for _, summary in pool.run("process", todo, failed):
            records += summary["records"]
            progress.update(1, extra=f"{records} records")
    summaries = []
    for f in files:
        summary = storage.read_json(storage.join(work_dir, file_key(str(getattr(f, "path", f))), "done.json"))
        if summary is None:
            raise RuntimeError(f"clean: no result for {f} after pass 1")
        summaries.append(summary)
    return summaries


def _needs_pass1(work_dir: str, f: Any) -> bool:
    return _finished(storage.join(work_dir, file_key(str(getattr(f, "path", f)))), file_version(f)) is None


def _finished(out: str, version: str | None) -> dict[str, Any] | None:
    """A file's pass-1 summary when it is done for this version of the file; None when not yet, when
    the file changed since (another size or time), or when it failed as a whole last time (tried
    again: the cause may be gone)."""
    marker = storage.read_json(storage.join(out, "done.json"))
    if marker is None or marker.get("failed") or marker.get("version") != version:
        return None
    return marker


def _summary(
    f: Any,
    path: str,
    key: str,
    records: int,
    kept: int,
    rejected: int,
    errors: int,
    record_errors: int,
    drops: dict[str, int],
    counts: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    """A file's pass-1 summary (its done.json): what run_pass1 returns and stats.json adds up."""
    return {
        "file": path,
        "file_key": key,
        "version": file_version(f),
        "bytes": int(getattr(f, "size", None) or 0),
        "records": records,
        "kept": kept,
        "rejected": rejected,
        "errors": errors,
        "record_errors": record_errors,
        "file_errors": errors - record_errors,
        "drops": dict(drops),
        "counts": dict(counts),
        "seconds": round(seconds, 3),
    }
