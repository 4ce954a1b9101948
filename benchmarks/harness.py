"""What every benchmark script shares: the rule of benchmarks/README.md, written once as code.

- ``interleave``: the same warm-up and repetitions on both sides, alternating which side goes first,
  so that load from other work on a shared machine falls on both alike.
- ``spread``: the statistic (median of N) and the range that is printed with it.
- ``run_process``: one measured run of a command in a fresh process, wall seconds and the CPU seconds
  of its whole process tree (Ray's raylet and workers, a multiprocessing pool), for benchmarks whose
  sides start their own workers.
- ``finish``: the JSON summary as the last line; the exit status is non-zero when ``ok`` is false.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any, NoReturn, TypeVar

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAYCHAT_SHARED_DATA", REPO.parent / "shared" / "data"))
T = TypeVar("T")

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def interleave(sides: dict[str, Callable[[], T]], warmup: int, repeats: int) -> dict[str, list[T]]:
    """Run every side ``warmup`` times untimed, then ``repeats`` times, alternating the order each round.

    Each callable returns its own measurement (seconds, or a dict); only the repeats are returned.
    """
    names = list(sides)
    results: dict[str, list[T]] = {name: [] for name in names}
    for i in range(warmup + repeats):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            value = sides[name]()
            if i >= warmup:
                results[name].append(value)
    return results


def spread(values: Sequence[float]) -> tuple[float, list[float]]:
    """(median, [min, max]): the headline statistic of every benchmark and the range printed beside it."""
    if not values:
        raise ValueError("no measurements")
    return float(median(values)), [float(min(values)), float(max(values))]


def rate_spread(amount: float, seconds: Sequence[float]) -> tuple[float, list[float]]:
    """Median and range of ``amount / seconds`` (the median rate is the rate of the median time)."""
    return spread([amount / s for s in seconds])


def fmt(value: float, rng: Sequence[float], digits: int = 1) -> str:
    return f"{value:,.{digits}f} (range {rng[0]:,.{digits}f}-{rng[1]:,.{digits}f})"


def load_average() -> list[float]:
    """1/5/15-minute load averages: how busy the machine was (2 means both cores of this machine busy)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a measured child process: this checkout first on the path, Ray quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray gives its raylet 10 s to register by default; on a shared machine under heavy load that can
    # fail a run before any work starts (seen here at a load average of 40 on 2 cores)
    env.setdefault("RAY_raylet_start_wait_time_s", "120")
    env.update(extra)
    return env


@dataclass
class Measured:
    wall_s: float
    cpu_s: float  # user + system seconds of the child and every process it started
    stdout: str
    stderr: str

    def last_json(self) -> dict[str, Any]:
        """The child's last stdout line, as JSON (how a worker hands its own numbers back)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else {}


def _set_subreaper(on: bool) -> bool:
    """While on, orphaned descendants (Ray workers whose raylet exited first) are re-parented to this
    process, so that reaping them adds their CPU time to RUSAGE_CHILDREN. Linux only; elsewhere the
    CPU of such orphans is not counted."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _live_children() -> set[int]:
    me = os.getpid()
    pids = set()
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            pids.add(int(entry.name))
    return pids


def _reap_new(before: set[int], deadline_s: float) -> None:
    """Wait for this process's children that were not there ``before`` (the measured command's orphans),
    until none is left; after ``deadline_s`` stop stragglers by pid. Children from before are untouched."""
    end = time.monotonic() + deadline_s
    quiet_since = None
    while True:
        new = _live_children() - before
        for pid in list(new):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                new.discard(pid)
        if not new:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.2:  # an exiting raylet may still hand over workers
                return
        else:
            quiet_since = None
            if time.monotonic() > end:
                for pid in new:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        time.sleep(0.02)


def run_process(cmd: list[str], env: dict[str, str] | None = None, timeout_s: float = 1800) -> Measured:
    """Run ``cmd`` to completion in a fresh process; wall time until it exits, CPU of its whole tree.

    Raises RuntimeError with the tail of stderr when the command fails, so that a side that crashed is
    never reported as a (fast) measurement.
    """
    before = _live_children()
    _set_subreaper(True)
    try:
        cpu_before = _children_cpu()
        # files, not pipes: a descendant that outlives the child (a Ray worker) would hold a pipe open
        # and make the wait for end-of-file, not the child's exit, the measured time
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
            finally:
                wall = time.perf_counter() - start
                _reap_new(before, 30)
            cpu = _children_cpu() - cpu_before
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    finally:
        _set_subreaper(False)
    if returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {returncode}: {stderr.strip()[-2000:]}")
    return Measured(wall_s=wall, cpu_s=cpu, stdout=stdout, stderr=stderr)


def finish(summary: dict[str, Any]) -> NoReturn:
    """Print the summary as the last line and exit: 0 when the measurement is valid (``ok``), else 1.

    ``ok`` says whether the two sides' outputs agreed (within the script's stated tolerance) and both
    ran; whether the target was met is ``met``, which does not change the exit status.
    """
    required = ("benchmark", "unit", "ours", "baseline", "baseline_name", "ratio", "target", "ok")
    missing = [k for k in required if k not in summary]
    if missing:
        raise KeyError(f"benchmark summary lacks {missing}")
    summary.setdefault("load_avg", load_average())
    sys.stdout.flush()
    print(json.dumps(summary), flush=True)
    sys.exit(0 if summary["ok"] else 1)


def fail(
    benchmark: str, unit: str, baseline_name: str, target: float, error: BaseException | str
) -> NoReturn:
    """A side that crashed: no numbers, ``ok`` false, the reason in the JSON (and exit status 1)."""
    print(f"FAILED: {error}")
    finish(
        {
            "benchmark": benchmark,
            "unit": unit,
            "ours": None,
            "baseline": None,
            "baseline_name": baseline_name,
            "ratio": None,
            "target": target,
            "ok": False,
            "ours_range": None,
            "baseline_range": None,
            "error": str(error)[-1000:],
        }
    )
