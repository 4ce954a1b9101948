"""The clean stage: crawl data in, FineWeb-schema parquet out (DESIGN.md, "the artifact contract").

    python -m pipelines.clean --config configs/tiny.yaml
    raychat clean --input 'crawl/**/*.warc.gz' data.jsonl.gz --output runs/mine --steps extract,pii
    ray job submit --working-dir . -- python -m pipelines.clean --config configs/gpu-124m.yaml

Outputs under <run>/data/: clean/language=xx/*.parquet (the language column is in the files too),
rejected/ (every dropped document with the step and reason), errors/ (records and files that could
not be read or crashed a step) and stats.json (counts per step and reason; records in == clean +
rejected + record errors, or the stage fails). The run directory may be a local path or a URI
(``--output 's3://bucket/run?region=us-east-1'``): see pipelines/storage.py for what its folder swap
guarantees there.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.clean.config import CleanConfig
from pipelines.clean.pass2 import run_pass2
from pipelines.clean.pipeline import config_fingerprint, run_pass1
from pipelines.clean.report import report_section
from pipelines.clean.steps import StepBuildError, build_steps, implied_steps
from pipelines.clean.workers import WorkerPool
from pipelines.errors import ConfigError, StageFailed
from pipelines.run_dir import RunDir

if TYPE_CHECKING:
    from pipelines.config import RunConfig

log = logging.getLogger("raychat.clean")
# the numbers the console shows when the stage ends (pipelines/console.py)
HEADLINE = ("records", "clean", "rejected", "documents_per_second")
# the stage's interface (pipelines/stages.py)
__all__ = ["add_cli_args", "cli_overrides", "preflight", "report_section", "run", "start_over"]


def summary_line(n: dict[str, Any]) -> str:
    share = n["clean"] / n["records"] if n.get("records") else 0.0
    return (
        f"kept {n['clean']:,} of {n['records']:,} records ({share:.0%}); rejected {n['rejected']:,}, "
        f"{n.get('record_errors', 0):,} unreadable"
        + (f", {n['file_errors']:,} unreadable files" if n.get("file_errors") else "")
    )


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="input files, globs, folders or URIs (WARC, JSON/JSONL, parquet, HTML, plain text .txt/.md)",
    )
    p.add_argument("--output", metavar="RUN_DIR", help="run directory; outputs go to RUN_DIR/data/")
    p.add_argument("--steps", help="comma-separated subset of steps, e.g. extract,pii (default: all)")


def cli_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if args.input:
        out.append("clean.inputs=" + _yaml_list(args.input))
    if args.output is not None:  # quoted: --set values are YAML, where 2024, yes or ~ are not strings
        out.append("run_dir=" + json.dumps(args.output))  # '' is refused, not the default runs/tiny
    if args.steps is not None:
        steps = [s for s in args.steps.split(",") if s.strip()]
        if not steps:
            raise ConfigError(
                "--steps is empty: name the steps, e.g. --steps extract,pii, or leave it out for all"
            )
        out.append("clean.steps=" + _yaml_list(steps))
    return out


def _yaml_list(items: list[str]) -> str:
    return json.dumps(items)  # JSON is YAML, and quotes globs safely


def resolve_paths(cfg: RunConfig, name: str = "clean") -> CleanConfig:
    """Fill ``{run_dir}`` in path settings, so configs can point at the run's own tiny world."""
    data = getattr(cfg, name).model_dump(mode="json")
    run = RunDir(cfg.run_dir)

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return run.expand(value)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return CleanConfig.model_validate(fill(data))


def start_over(cfg: RunConfig, name: str = "clean") -> None:
    """``--force``: pass 1 redoes every file instead of reusing the per-file results of a past run."""
    work_dir = RunDir(cfg.run_dir).at("clean_work")
    if storage.exists(work_dir):
        log.info("clean: --force: dropping pass 1's per-file results in %s", work_dir)
        storage.remove(work_dir)


def preflight(cfg: RunConfig, name: str = "clean") -> None:
    """Everything that can be checked before Ray starts and any work is done (pipelines/cli.py calls it).

    The outputs can be written (a real write: a path under a regular file, a read-only mount, an
    object store's credentials), the inputs exist (``clean.missing_inputs``) and every step builds.
    """
    from pipelines.inputs import expand_inputs

    clean = _checked_inputs(cfg, name)
    data_dir = RunDir(cfg.run_dir).at("data")
    try:
        storage.check_writable(data_dir)
    except OSError as e:
        raise ConfigError(f"clean: cannot write the outputs under {data_dir}: {e}") from None
    files, input_errors = expand_inputs(clean.inputs)
    missing = missing_inputs(input_errors)
    if missing and clean.missing_inputs == "fail":
        if len(clean.inputs) == 1:
            raise ConfigError(f"clean: the input matches no file: {missing[0]}")
        raise ConfigError(
            f"clean: {len(missing)} of {len(clean.inputs)} inputs match no file: {', '.join(missing)} "
            "(set clean.missing_inputs=skip to clean the others)"
        )
    if not files:
        raise ConfigError(no_readable_inputs(clean.inputs, input_errors))
    check_steps(clean)


def no_readable_inputs(inputs: list[str], input_errors: list[dict[str, Any]]) -> str:
    """Why nothing can be read, with the first problems (a plain .txt file is no format clean reads)."""
    why = "; ".join(str(e.get("error") or e.get("reason")) for e in input_errors[:3])
    more = f" (and {len(input_errors) - 3} more)" if len(input_errors) > 3 else ""
    return f"clean: no readable input files in {inputs}" + (f": {why}{more}" if why else "")


def missing_inputs(input_errors: list[dict[str, Any]]) -> list[str]:
    """The inputs (as given) that match no file: no such path, a glob without matches, an empty folder."""
    return [str(e.get("file_path")) for e in input_errors if e.get("reason") == "no_match"]


def _checked_inputs(cfg: RunConfig, name: str) -> CleanConfig:
    clean = resolve_paths(cfg, name)
    if not clean.inputs:
        raise ConfigError("clean.inputs is empty: give input files, globs or folders (--input PATH ...)")
    return clean


def run(cfg: RunConfig, name: str = "clean") -> dict[str, Any]:
    """The stage. ``clean.missing_inputs: fail`` is enforced by ``preflight``, which the CLI runs first;
    here missing inputs are logged and listed in stats.json."""
    from pipelines.inputs import expand_inputs

    clean = _checked_inputs(cfg, name)
    check_steps(clean)
    started = time.time()
    run_dir = RunDir(cfg.run_dir)
    work_dir = run_dir.at("clean_work")
    fingerprint = config_fingerprint(clean)
    previous = storage.read_json(storage.join(work_dir, "config.json"), {})
    if previous.get("fingerprint") not in (None, fingerprint):
        log.info("clean: settings changed since the last run; redoing pass 1 from scratch")
        storage.remove(work_dir)
    storage.write_json(storage.join(work_dir, "config.json"), {"fingerprint": fingerprint})

    files, input_errors = expand_inputs(clean.inputs)
    for e in input_errors:
        log.warning("clean: input problem: %s: %s", e.get("file_path"), e.get("error") or e.get("reason"))
    if not files:
        raise ConfigError(no_readable_inputs(clean.inputs, input_errors))
    log.info("clean: %d input files, steps: %s", len(files), ",".join(clean.steps))
    if implied := implied_steps(clean.steps):
        log.info(
            "clean: added step %s: HTML records get their text by extraction (text records pass through it)",
            ",".join(implied),
        )
    with WorkerPool(clean, files, work_dir) as pool:
        summaries = run_pass1(clean, files, work_dir, pool)
        dedup_stats = run_pass2(clean, work_dir, [s["file_key"] for s in summaries], run_dir, pool)
    if input_errors:
        from pipelines.clean.schema import ERRORS_SCHEMA, to_table

        storage.write_parquet(
            to_table(input_errors, ERRORS_SCHEMA), storage.join(run_dir.at("errors"), "inputs.parquet")
        )
    written = count_written(run_dir)
    stats = build_stats(summaries, input_errors, dedup_stats, time.time() - started, written)
    stats["languages"] = count_languages(run_dir.at("clean"))
    stats["missing_inputs"] = missing_inputs(input_errors)
    storage.write_json(run_dir.at("stats"), stats)
    if not stats["counts_add_up"]:
        raise StageFailed(
            f"clean failed: the outputs do not add up: {stats['records']} records in, but written "
            f"{written['clean']} clean + {written['rejected']} rejected + {written['record_errors']} "
            f"record errors (counted {stats['clean']} clean, {stats['rejected']} rejected, "
            f"{stats['record_errors']} record errors); see {run_dir.at('stats')}"
        )
    if stats["clean"] == 0:  # a run that kept nothing is most likely a wrong input or setting: say why
        log.warning(
            "clean: no document kept of %d records (%d rejected by a filter, %d unreadable records, %d "
            "unreadable files); commonest reasons: %s; see %s",
            stats["records"], stats["rejected"], stats["record_errors"], stats["file_errors"],
            _top_reasons(stats.get("drops", {})), run_dir.at("stats"),
        )  # fmt: skip
    log.info(
        "clean: %d records -> %d clean, %d rejected, %d errors (%.1f docs/s)",
        stats["records"],
        stats["clean"],
        stats["rejected"],
        stats["record_errors"],
        stats["documents_per_second"],
    )
    return {
        k: stats[k]
        for k in (
            "records",
            "clean",
            "rejected",
            "record_errors",
            "file_errors",
            "documents_per_second",
            "languages",
        )
    }


def _top_reasons(counts: dict[str, Any], limit: int = 3) -> str:
    """The commonest reasons of a ``{step: {reason: n}}`` count (stats.json's ``drops``): ``step/reason n``."""
    flat: dict[str, int] = {}
    for key, value in counts.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{reason}": n for reason, n in value.items() if isinstance(n, int)})
        elif isinstance(value, int):
            flat[key] = value
    top = sorted(flat.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{reason} {n:,}" for reason, n in top) or "none"


def check_steps(clean: CleanConfig) -> None:
    """Build every step once here, on the driver, so a bad setting fails now with its key's name.

    Why: the steps are built inside the pass-1 actors, where a missing blocklist folder, a bad
    ``language.model_path`` or a custom function that does not import would surface as an actor
    traceback after Ray started, and before this check, after a changed config had already cleared
    the previous run's pass-1 outputs.
    """
    try:
        steps = build_steps(clean)
    except StepBuildError as e:
        raise ConfigError(f"invalid clean step settings: {e}") from None
    for step in steps:
        close = getattr(step, "close", None)
        if close is not None:
            close()


def count_languages(clean_dir: str) -> dict[str, int]:
    """Rows per language partition (its ``language=xx`` folder), from parquet footers (no data is read).

    Footers read one by one rather than through ``pyarrow.dataset``, whose import pulls in pandas:
    about 0.3 CPU-seconds of the command for a count. Files are skipped as a dataset would skip them
    (names starting with "." or "_"), and folder values are URI-decoded as hive discovery does.
    """
    import urllib.parse

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pipelines.partitions import HIVE_NULL

    fs, root = storage.fs_and_path(clean_dir)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return {}
    counts: dict[str, int] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        if info.base_name.startswith((".", "_")):
            continue
        lang = "und"
        for folder in info.path[len(root.rstrip("/")) :].strip("/").split("/")[:-1]:
            name, sep, value = folder.partition("=")
            if sep and name == "language" and value != HIVE_NULL:
                lang = urllib.parse.unquote(value)
        counts[lang] = counts.get(lang, 0) + pq.read_metadata(info.path, filesystem=fs).num_rows
    return dict(sorted(counts.items()))


def count_written(run: RunDir) -> dict[str, int]:
    """Rows really in data/clean, data/rejected and data/errors, from parquet footers (no data read).

    ``record_errors`` are the error rows that stand for an input record (``record_index`` set);
    the others are about whole files or inputs. Why footers: ``counts_add_up`` must compare the
    input with what was written, not with the counters that decided what to write.
    """
    import pyarrow.parquet as pq

    out = {"clean": 0, "rejected": 0, "errors": 0, "record_errors": 0}
    for name in ("clean", "rejected", "errors"):
        for path in storage.list_files(run.at(name), ".parquet"):
            fs, p = storage.fs_and_path(path)
            meta = pq.read_metadata(p, filesystem=fs)
            out[name] += meta.num_rows
            if name == "errors" and meta.num_rows:
                out["record_errors"] += meta.num_rows - _nulls(meta, "record_index", fs, p)
    return out


def _nulls(meta: Any, column: str, fs: Any, path: str) -> int:
    """Nulls in a column, from the row-group statistics; the column itself when they are missing."""
    import pyarrow.parquet as pq

    names = meta.schema.to_arrow_schema().names
    if column not in names:
        return meta.num_rows
    j = names.index(column)
    total = 0
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(j).statistics
        if stats is None or not stats.has_null_count:
            return pq.read_table(path, columns=[column], filesystem=fs).column(column).null_count
        total += stats.null_count
    return total


def build_stats(
    summaries: list[dict],
    input_errors: list[dict],
    dedup: dict,
    seconds: float,
    written: dict[str, int] | None = None,
) -> dict[str, Any]:
    """stats.json; ``written`` (from ``count_written``) is what ``counts_add_up`` is checked against."""
    from collections import Counter

    drops: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for s in summaries:
        drops.update(s["drops"])
        counts.update(s["counts"])
    dropped_by_dedup = int(dedup.get("exact_dropped", 0)) + int(dedup.get("near_dropped", 0))
    if dedup.get("exact_dropped"):
        drops["dedup/exact_duplicate"] += int(dedup["exact_dropped"])
    if dedup.get("near_dropped"):
        drops["dedup/near_duplicate"] += int(dedup["near_dropped"])
    records = sum(s["records"] for s in summaries)
    rejected = sum(s["rejected"] for s in summaries) + dropped_by_dedup
    record_errors = sum(s["record_errors"] for s in summaries)
    clean = sum(s["kept"] for s in summaries) - dropped_by_dedup
    by_step: dict[str, dict[str, int]] = {}
    for key, n in sorted(drops.items()):
        step, reason = key.split("/", 1)
        by_step.setdefault(step, {})[reason] = n
    per_count: dict[str, dict[str, int]] = {}
    for key, n in sorted(counts.items()):
        step, name = key.split("/", 1)
        per_count.setdefault(step, {})[name] = n
    stats = {
        "records": records,
        "clean": clean,
        "rejected": rejected,
        "record_errors": record_errors,
        "file_errors": sum(s.get("file_errors", 0) for s in summaries) + len(input_errors),
        # every input record is in exactly one output: checked against the files, so it can fail
        "counts_add_up": written is not None
        and records == written["clean"] + written["rejected"] + written["record_errors"]
        and (clean, rejected, record_errors)
        == (written["clean"], written["rejected"], written["record_errors"]),
        "written": written,
        "drops": by_step,
        "counts": per_count,
        "dedup": dedup,
        "files": len(summaries),
        "input_errors": input_errors,
        "bytes_in": sum(s.get("bytes", 0) for s in summaries),
        "seconds": round(seconds, 2),
        "documents_per_second": round(records / max(seconds, 1e-9), 2),
        "languages": {},
    }
    return stats
