"""Rule rewards in a child process with a hard time limit per item: the reward workers' scorer.

    from lm.reward_process import IsolatedScorer
    scorer = IsolatedScorer({"rules": [{"name": "numeric_accuracy"}], "time_limit_s": 5})
    scorer.score(items)          # [ItemScore, ...] in order; an item past its limit is "timeout"
    scorer.close()

Why a process: a reward is user code, and Python cannot stop a thread. ``signal.alarm`` works on the
main thread only (a Ray actor's methods may run elsewhere), and an asynchronous exception
(lm/timelimit.py) cannot interrupt one long C call such as ``9**9**9``. A process can always be
killed. The child scores the items of a batch one after another and sends each score as soon as it
has it; the parent waits for each with the item's deadline. When an item overruns, the child is
killed (SIGKILL), the item scores 0 with status ``timeout``, and a fresh child goes on with the rest
of the batch. A child that dies on its own (a segfault in a C extension, ``os._exit``, the kernel's
OOM killer) costs only the item it was scoring (status ``error``). So one runaway item never wedges
the worker and never takes other items with it.

The child is a fresh interpreter (``python -m lm.reward_process``) talking over a socket pair, not
a ``multiprocessing`` child: those re-import the parent's main module (in a Ray worker, Ray's own
worker script) and a plain ``fork`` of a process with many threads (any Ray worker) can inherit a
held lock. Starting one costs about the import of the reward code (a fraction of a second without
sympy; math-verify is imported on the first answer that needs it), paid at the start and after a
timeout or crash only. The child exits when the parent goes away (end of file on its socket).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from lm.rewards import ItemScore, RewardConfig, RewardItem, RuleScorer, failed_score

log = logging.getLogger("raychat")


def _child_main(conn: Connection) -> None:
    """The child: build the rules (user modules import here), then score batches until told to stop."""
    config = conn.recv()
    try:
        # The parent enforces the deadline; the in-process soft limit is left off (0).
        scorer = RuleScorer(config, time_limit_s=0)
    except BaseException as e:  # noqa: BLE001 - report why, then stop
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if batch is None:
            return
        for item in batch:
            conn.send(("score", scorer.score_one(item)))


def _died_from_outside(exit_code: int | None) -> None:
    """A child killed by SIGKILL that we did not send: the kernel's OOM killer, or Ray ending this
    worker (it kills a dying worker's children first, then the worker). Waiting a moment before
    reporting the item as failed lets the second case finish: this process ends, its chunk is never
    answered, and the pool's client sends the chunk again instead of receiving errors for it."""
    if exit_code == -signal.SIGKILL:
        time.sleep(1.0)


class IsolatedScorer:
    """A ``Scorer`` that runs ``RuleScorer`` in a child process with a hard per-item time limit.

    ``stats`` counts ``timeout`` (items killed at their deadline), ``crashed`` (children that died
    while scoring) and ``started`` (children started)."""

    def __init__(
        self,
        config: RewardConfig | dict[str, Any],
        time_limit_s: float | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.config = config if isinstance(config, RewardConfig) else RewardConfig.model_validate(config)
        self.time_limit_s = self.config.time_limit_s if time_limit_s is None else time_limit_s
        self.start_timeout_s = start_timeout_s
        self.stats: Counter[str] = Counter()
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._failed: str | None = None  # the rules cannot be built: every item gets this error

    def _start(self) -> str | None:
        """Starts the child; a reason when it died or hung at start (the rules failing to load is
        recorded in ``_failed`` instead: that will not change by trying again)."""
        ours, theirs = socket.socketpair()
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "lm.reward_process", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        conn = Connection(ours.detach())
        self.stats["started"] += 1
        try:
            conn.send(self.config.model_dump())
            if not conn.poll(self.start_timeout_s):
                proc.kill()
                proc.wait()
                conn.close()
                return f"the reward process did not start within {self.start_timeout_s:g} s"
            kind, detail = conn.recv()
        except (EOFError, OSError):
            conn.close()
            return f"the reward process exited at start (exit code {proc.wait()})"
        if kind == "failed":
            self._failed = f"reward rules could not be loaded in the reward process: {detail}"
            proc.kill()
            proc.wait()
            conn.close()
            return None
        self._proc, self._conn = proc, conn
        return None

    def start(self) -> None:
        """Starts the scoring process now rather than at the first batch; raises ``RuntimeError`` when
        it cannot start or the rules do not load in it (the reward workers call this at creation)."""
        if self._proc is None:
            problem = self._start() or self._failed
            if problem is not None:
                raise RuntimeError(problem)

    def _stop(self, wait_s: float = 0.0) -> int | None:
        """Ends the child (after ``wait_s`` for it to exit by itself) and returns its exit code."""
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None
        return code

    def score(self, items: Sequence[RewardItem]) -> list[ItemScore]:
        results: list[ItemScore] = []
        start_failures = 0
        while len(results) < len(items):
            problem = self._failed
            if problem is None and self._proc is None:
                problem = self._start() or self._failed
                if problem is not None and self._failed is None and start_failures < 2:
                    start_failures += 1
                    time.sleep(1.0)  # see _died_from_outside
                    continue
            if problem is not None:
                results += [failed_score(it.id, "error", problem) for it in items[len(results) :]]
                break
            results += self._run(items[len(results) :])
        return results

    def _run(self, items: Sequence[RewardItem]) -> list[ItemScore]:
        """Scores ``items`` in the running child until all are done or one overruns or kills it."""
        assert self._conn is not None and self._proc is not None
        out: list[ItemScore] = []
        try:
            self._conn.send(list(items))
        except OSError:
            self._stop()  # died while idle: start another for the same items
            return out
        except Exception as e:  # noqa: BLE001 - items that cannot be pickled
            return [
                failed_score(it.id, "error", f"cannot send the item to the reward process: {e}")
                for it in items
            ]
        for item in items:
            started = time.perf_counter()
            try:
                arrived = self._conn.poll(self.time_limit_s)
                message = self._conn.recv() if arrived else None
            except (EOFError, OSError):
                message, arrived = None, True
            elapsed = time.perf_counter() - started
            if message is not None:
                out.append(message[1])
                continue
            exit_code = self._stop(wait_s=0.0 if not arrived else 1.0)
            if not arrived:
                self.stats["timeout"] += 1
                out.append(
                    failed_score(item.id, "timeout", f"no reward after {self.time_limit_s:g} s", elapsed)
                )
            else:
                self.stats["crashed"] += 1
                _died_from_outside(exit_code)
                log.warning(
                    "the reward process died while scoring item %r (exit code %s)", item.id, exit_code
                )
                out.append(
                    failed_score(
                        item.id, "error", f"the reward process died (exit code {exit_code})", elapsed
                    )
                )
            break
        return out

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self._stop()

    def __enter__(self) -> IsolatedScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scorer_for(config: RewardConfig | dict[str, Any]) -> RuleScorer | IsolatedScorer:
    """Where a stage scores rules itself (evaluations, rejection sampling, GRPO without reward
    workers): in this process when every rule is a registered one (the built-ins cap their inputs,
    so none can block), in a child process with a hard limit per item when one is a user's
    ``module:function``, which may sleep or block in C where no in-process limit reaches (an
    evaluation waited for each such reply). Close it when done (``close``)."""
    config = config if isinstance(config, RewardConfig) else RewardConfig.model_validate(config)
    if any(":" in r.name for r in config.rules):
        return IsolatedScorer(config)
    return RuleScorer(config)


if __name__ == "__main__":
    _child_main(Connection(int(sys.argv[1])))
