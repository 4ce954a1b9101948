"""What every benchmark script shares: the rule of benchmarks/README.md, written once as code.

- ``interleave``: the same warm-up and repetitions on both sides, alternating which side goes first,
  so that load from other work on a shared machine falls on both alike.
- ``spread``: the statistic (median of N) and the range that is printed with it.
- ``run_process``: one measured run of a command in a fresh process, wall seconds and the CPU seconds
  of its whole process tree (Ray's raylet and workers, a multiprocessing pool), for benchmarks whose
  sides start their own workers; ``TreeCpu`` is how the tree's CPU is counted.
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
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    cpu_by_name: Counter[str] = field(default_factory=Counter)  # sampled, per process name

    def last_json(self) -> dict[str, Any]:
        """The child's last stdout line, as JSON (how a worker hands its own numbers back)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else {}


def proc_table() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (ppid, utime + stime in clock ticks, start time, name) for every process we can see."""
    table = {}
    for name in os.listdir("/proc") if Path("/proc").is_dir() else []:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat.split(b" (", 1)[1].rsplit(b")", 1)
        fields = rest.split()
        table[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]), comm.decode())
    return table


class TreeCpu:
    """CPU seconds of every process started below this one, sampled from /proc every ``interval_s``.

    Why sampling and not only ``getrusage(RUSAGE_CHILDREN)``: the kernel adds a process's CPU to its
    parent's children totals only when the parent waits for it, and Ray's raylet reaps its workers
    with SIGCHLD ignored, so their CPU (the encoding, the cleaning) never reaches those totals. A
    tokenize run measured 8 CPU-s that way where its cgroup counted 21. Each process's own utime +
    stime is kept at its last sample, so a process that exits loses at most its last interval.
    Processes that were already this process's children on entry are left out, with their trees.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.root, self.interval_s = os.getpid(), interval_s
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.latest: dict[tuple[int, int], int] = {}
        self.names: dict[tuple[int, int], str] = {}
        self._skip: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        table = proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = [pid for pid in children.get(self.root, []) if pid not in self._skip]
        while todo:
            pid = todo.pop()
            if pid in table:
                _, ticks, started, name = table[pid]
                self.latest[(pid, started)] = ticks
                self.names[(pid, started)] = name
            todo.extend(children.get(pid, []))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._skip = {pid for pid, (ppid, *_) in proc_table().items() if ppid == self.root}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.latest.values()) / self.ticks

    def by_name(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for k, v in self.latest.items():
            out[self.names[k]] += v / self.ticks
        return out


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

    The CPU is the larger of two counts that can each only miss time, never add any: the kernel's
    children totals (exact for processes that were waited for: the command itself, a process pool)
    and ``TreeCpu``'s samples (which also see the processes Ray reaps without waiting).

    Raises RuntimeError with the tail of stderr when the command fails, so that a side that crashed is
    never reported as a (fast) measurement.
    """
    before = _live_children()
    _set_subreaper(True)
    try:
        cpu_before = _children_cpu()
        # files, not pipes: a descendant that outlives the child (a Ray worker) would hold a pipe open
        # and make the wait for end-of-file, not the child's exit, the measured time
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, TreeCpu() as tree:
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
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        cpu = max(_children_cpu() - cpu_before, tree.seconds)
    finally:
        _set_subreaper(False)
    if returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {returncode}: {stderr.strip()[-2000:]}")
    return Measured(wall_s=wall, cpu_s=cpu, stdout=stdout, stderr=stderr, cpu_by_name=tree.by_name())


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
