"""What every stage job shares: starting Ray, the run directory's paths, metrics and the summary.

Stages talk only through the run directory (DESIGN.md, "the artifact contract"), so the paths live
here, in one place, instead of being spelled out in every stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines import storage
from pipelines.config import ConfigError, RayConfig

log = logging.getLogger("raychat")


def setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get("RAYCHAT_LOG_LEVEL", "INFO"),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
            stream=sys.stderr,
        )


def init_ray(cfg: RayConfig) -> None:
    """Join the cluster we run in, or start an embedded local one.

    ``ray.init()`` is called without an address so that under ``ray job submit`` (which sets
    RAY_ADDRESS) the job joins the cluster; the local sizing knobs are only passed when we start
    our own cluster, because Ray rejects them when connecting to an existing one.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    kwargs: dict[str, Any] = {
        "include_dashboard": cfg.include_dashboard,
        # Ray kills idle workers after ~1 s when the soft limit (= CPUs) is reached, and Ray Data's
        # shuffles (dedup) then wait for fresh worker processes at every task on small machines.
        "_system_config": {"num_workers_soft_limit": max(8, 2 * (cfg.num_cpus or os.cpu_count() or 1))},
    }
    if cfg.num_cpus is not None:
        kwargs["num_cpus"] = cfg.num_cpus
    if cfg.object_store_memory_mb is not None:
        kwargs["object_store_memory"] = cfg.object_store_memory_mb * 1024 * 1024
    ray.init(**kwargs)


@contextlib.contextmanager
def ray_data_settings(**settings: Any) -> Iterator[None]:
    """Set Ray Data ``DataContext`` fields for one job's datasets, then put the old values back.

    Both data stages read their many small parquet files with the established file-by-file reader
    (``use_datasource_v2=False``): Ray 2.60's V2 file datasource lists files in one task (seconds of
    wall time, 12-18 s seen here, for a fraction of a CPU-second) and packs a small corpus into a
    single block, i.e. one task, where the established reader reads the files in parallel.
    """
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = {name: getattr(ctx, name) for name in settings}
    for name, value in settings.items():
        setattr(ctx, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


class StageFailed(RuntimeError):
    """A stage ran to its end but its outputs are not valid (e.g. its counts do not add up).

    The CLI prints the message as one line and exits non-zero, and the stage is not marked done.
    """


class RunDir:
    """Paths of one run (see DESIGN.md).

    The run directory is a local path or a pyarrow filesystem URI (``s3://bucket/run?...``).
    ``location``, ``path(...)``, the done markers and ``summary`` work for both: they are what the
    clean stage, which can write to object stores, and the runner use. The ``Path`` properties are
    for the stages that need a mounted directory (tokenize, pretrain, ...): on a URI they raise a
    ``ConfigError`` saying so, rather than writing to a local folder named ``s3:``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.location = str(root)
        self.is_remote = storage.is_uri(self.location)

    def path(self, *parts: str) -> str:
        """A path under the run directory as a string: a local path, or a URI on the same store."""
        return storage.join(self.location, *parts)

    @property
    def root(self) -> Path:
        if self.is_remote:
            raise ConfigError(
                f"run_dir {self.location} is a URI: this stage needs a mounted (local or network-mounted) "
                "run directory; only the clean stage writes to object stores"
            )
        return Path(self.location)

    @property
    def world(self) -> Path:
        return self.root / "world"

    @property
    def clean(self) -> Path:
        return self.root / "data" / "clean"

    @property
    def rejected(self) -> Path:
        return self.root / "data" / "rejected"

    @property
    def errors(self) -> Path:
        return self.root / "data" / "errors"

    @property
    def stats(self) -> Path:
        return self.root / "data" / "stats.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    def model(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def summary(self) -> str:
        return self.path("metrics", "summary.json")

    def done_marker(self, stage: str) -> str:
        return self.path("metrics", f"{stage}.done.json")


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write so that a killed job never leaves half a JSON file (storage.write_json: temp name + rename)."""
    storage.write_json(str(path), data)


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    return storage.read_json(str(path), default)


def update_summary(run: RunDir, stage: str, numbers: dict[str, Any]) -> None:
    """Put a stage's headline numbers under its own name in metrics/summary.json."""
    summary = read_json(run.summary, {}) or {}
    summary[stage] = numbers
    write_json_atomic(run.summary, summary)


def mark_done(run: RunDir, stage: str, info: dict[str, Any] | None = None) -> None:
    write_json_atomic(run.done_marker(stage), {"stage": stage, "finished_at": time.time(), **(info or {})})


def is_done(run: RunDir, stage: str) -> bool:
    return storage.exists(run.done_marker(stage))


def clear_done(run: RunDir, stage: str) -> None:
    storage.remove(run.done_marker(stage))


class MetricsWriter:
    """Appends one JSON object per line to metrics/<stage>.jsonl."""

    def __init__(self, run: RunDir, stage: str) -> None:
        run.metrics.mkdir(parents=True, exist_ok=True)
        self.path = run.metrics / f"{stage}.jsonl"

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")


class Progress:
    """Periodic log lines with rate and ETA, for loops that Ray Data's own bars do not cover."""

    def __init__(self, name: str, total: int | None, unit: str = "items", every_s: float = 5.0) -> None:
        self.name, self.total, self.unit, self.every_s = name, total, unit, every_s
        self.start = self.last = time.monotonic()
        self.done = 0

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or (self.total is not None and self.done >= self.total):
            self.last = now
            log.info("%s", self.line(extra))

    def line(self, extra: str = "") -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.name}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            parts.append(f"ETA {format_seconds(eta)}")
        parts.append(f"{rate:,.1f} {self.unit}/s")
        if extra:
            parts.append(extra)
        return " | ".join(parts)


def format_seconds(s: float) -> str:
    if s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
