"""What every stage job shares at run time: logging, starting Ray, Ray Data settings, progress lines.

The run directory's paths, done markers, metrics and summary are pipelines/run_dir.py's; the errors
a stage reports are pipelines/errors.py's.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import Interrupted

if TYPE_CHECKING:
    from pipelines.config import RayConfig

log = logging.getLogger("raychat")


def setup_logging(verbose: bool | None = None) -> None:
    """The quiet console (pipelines/console.py); ``verbose`` (or RAYCHAT_VERBOSE=1) shows everything."""
    from pipelines import console

    console.setup(verbose)


def init_ray(cfg: RayConfig) -> None:
    """Join the cluster we run in, or start an embedded local one.

    ``ray.init()`` is called without an address so that under ``ray job submit`` (which sets
    RAY_ADDRESS) the job joins the cluster; the local sizing knobs are only passed when we start
    our own cluster, because Ray rejects them when connecting to an existing one.
    """
    import ray

    if ray.is_initialized():
        return
    from pipelines import console

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    verbose = console.is_verbose()
    if not verbose:
        # Ray Data's per-operator progress blocks: the stage's own progress line replaces them
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    console.quiet_ray_loggers()  # before ray.init: its own start-up lines go to the log file
    console.route_ray_driver_messages()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=verbose)
        _after_init()
        return
    set_local_cluster_env()
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
    # the workers' own output (training ranks' lines, actors' logs) stays in Ray's session logs unless
    # --verbose: their progress reaches the console through status files (pipelines/console.py)
    ray.init(log_to_driver=verbose, **kwargs)
    atexit.register(shutdown_and_reap)  # runs before Ray's own exit hook (atexit is last in, first out)
    _after_init()


def started_here() -> bool:
    """Whether this process started the Ray cluster it is connected to (embedded), not joined one.

    Such a cluster is one machine that no autoscaler grows: what it lacks now it will never have.
    """
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and ray.is_initialized() and node.head and not os.environ.get("RAY_ADDRESS"))


def shutdown_and_reap(grace_s: float = 5.0) -> list[int]:
    """Shut the embedded cluster down, then kill the worker processes that outlive it; return their pids.

    Ray 2.60's worker processes can deadlock in their own exit (a mutex taken twice while the core
    worker's event loop shuts down): seen here as a Ray Train controller that had finished its run and
    logged "Shutdown completed successfully", then sat at 539 MB for an hour after `make demo` ended,
    its raylet gone. The workers are the raylet's descendants, noted before the shutdown; any still
    alive ``grace_s`` after it are killed. Only for a cluster this process started, never one it joined.
    """
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if not started_here():
        return []
    roots = [proc.pid for _, proc in node.live_processes()]
    workers = [w for w in _descendants(roots) if w[0] not in roots]
    ray.shutdown()
    give_up = time.monotonic() + grace_s
    while time.monotonic() < give_up and any(_alive(w) for w in workers):
        time.sleep(0.1)
    killed = []
    for pid, started in workers:
        if _alive((pid, started)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    if killed:
        log.info("Ray worker processes still alive after the cluster shut down, killed: %s", killed)
    return killed


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[1]), int(fields[19])) if fields[0] != "Z" else None


def _descendants(roots: list[int]) -> list[tuple[int, int]]:
    """Every live process below ``roots``, as (pid, start time): the start time tells a reused pid."""
    children: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            started[int(entry.name)] = stat[1]
    out, todo = [], list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            out.append((child, started[child]))
            todo.append(child)
    return out


def _alive(worker: tuple[int, int]) -> bool:
    stat = _proc_stat(worker[0])
    return stat is not None and stat[1] == worker[1]


# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default) and
# waits out a poll at each step of a run's start and end: on this project's 2-core machine a training
# run that does nothing took 15 s to start and stop at 2 s and 7.5-8.7 s at 0.5 s. A run on an
# embedded cluster is short more often than not (every stage, every test), so it polls more often.
LOCAL_CLUSTER_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def set_local_cluster_env() -> None:
    """Defaults for a cluster this process starts (its workers inherit them); a value already set wins."""
    for key, value in LOCAL_CLUSTER_ENV.items():
        os.environ.setdefault(key, value)


def _after_init() -> None:
    from pipelines import console

    _stop_cleanly_on_sigterm()

    if "ray.data" in sys.modules:  # imported already (Ray Train imports it): route its loggers now
        console.quiet_ray_loggers()
    log.info("Ray session logs (the workers' output): %s", _session_dir())


_STOP_SIGNAL: list[int] = []  # the signal that stopped this process, when it was SIGTERM


def _stop_cleanly_on_sigterm() -> None:
    """SIGTERM ends the command as Ctrl-C does: one line, exit 143, the embedded cluster shut down.

    Why: ``ray.init`` leaves the C++ core's handler on SIGTERM, which printed a stack dump of about
    40 lines and aborted (exit 134) when ``timeout``, ``ray job stop`` or a batch scheduler stopped a
    stage. A Python handler (set after ``ray.init``, so it is the one that runs) raises
    ``KeyboardInterrupt``: the one exception a blocking ``ray.get`` lets through (Ray's signal check
    drops any other), and ``interruption`` then says which signal it was.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: Any) -> None:
        _STOP_SIGNAL.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def interruption() -> Interrupted:
    """What stopped the command (a SIGTERM seen by ``_stop_cleanly_on_sigterm``, else Ctrl-C), as the
    error the CLI prints in one line with the shell's exit status (128 + the signal)."""
    if _STOP_SIGNAL:
        return Interrupted("stopped by SIGTERM", 128 + _STOP_SIGNAL[-1])
    return Interrupted("stopped (Ctrl-C)", 128 + signal.SIGINT)


def quiet_ray_data() -> Any:
    """``ray.data``, imported, with its loggers routed to the quiet console (console.py); call it
    before using Ray Data. Why not at ``init_ray``: Ray Data sets up its loggers when first imported,
    and importing it costs about 0.5 CPU-seconds (pandas included) that a stage without it (the clean
    stage without dedup) need not pay."""
    import ray.data

    from pipelines import console

    console.quiet_ray_loggers()
    return ray.data


def _session_dir() -> str:
    try:
        import ray

        return str(ray._private.worker.global_worker.node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - only informative
        return "/tmp/ray/session_latest"


@contextlib.contextmanager
def ray_data_settings(**settings: Any) -> Iterator[None]:
    """Set Ray Data ``DataContext`` fields for one job's datasets, then put the old values back.

    The clean stage reads its many small parquet files with the established file-by-file reader
    (``use_datasource_v2=False``): Ray 2.60's V2 file datasource lists files in one task (seconds of
    wall time, 12-18 s seen here, for a fraction of a CPU-second) and packs a small corpus into a
    single block, i.e. one task, where the established reader reads the files in parallel.
    """
    ctx = quiet_ray_data().DataContext.get_current()
    saved = {name: getattr(ctx, name) for name in settings}
    for name, value in settings.items():
        setattr(ctx, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ctx, name, value)


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
            final = self.total is not None and self.done >= self.total
            log.info(
                "%s", self.line(extra), extra={"progress": True, "progress_key": self.name, "final": final}
            )

    def line(self, extra: str = "") -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.name}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
            # the first items carry the start-up (an engine loading, a pool starting): an ETA from
            # them alone would promise hours for a job of seconds
            early = self.done < max(2, 0.02 * self.total) and self.done < self.total
            eta = (self.total - self.done) / rate if rate > 0 and not early else float("inf")
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
