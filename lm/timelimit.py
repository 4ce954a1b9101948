"""A time limit for a call in the calling thread, on any thread (no ``signal.alarm``).

``signal.alarm`` (math-verify's default) works only on the main thread of the main interpreter, so
it raises inside Ray actors' worker threads, thread pools and servers. Here a watchdog thread raises
``TimeLimitExceeded`` in the calling thread at the deadline (CPython's ``PyThreadState_SetAsyncExc``,
the mechanism behind ``KeyboardInterrupt``), and again every ``repeat_s`` until the call gives up, so
an ``except Exception`` inside a library cannot swallow it for good (it derives from BaseException).

What it cannot do: the exception is delivered between Python bytecodes, so one C-level operation
that runs for a long time (a huge integer power, a regular expression that backtracks forever) ends
first. Inputs that can start such an operation are refused before the call (lm/answers.py caps what
reaches sympy), and the reward workers (lm/reward_process.py) run each item in a child process that
is killed at its deadline, the hard limit that covers any code.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TimeLimitExceeded(BaseException):
    """Raised in the calling thread when its time is up (a BaseException, like KeyboardInterrupt)."""


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


def call_with_time_limit(fn: Callable[[], T], seconds: float, repeat_s: float = 0.05) -> T:
    """``fn()``, or ``TimeLimitExceeded`` once ``seconds`` have passed (``seconds <= 0``: no limit)."""
    if seconds is None or seconds <= 0:
        return fn()
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"running": True, "fired": False}
    stop = threading.Event()

    def watchdog() -> None:
        if stop.wait(seconds):
            return
        while True:
            with lock:
                if not state["running"]:
                    return
                state["fired"] = True
                _set_async_exc(thread_id, TimeLimitExceeded)
            if stop.wait(repeat_s):
                return

    guard = threading.Thread(target=watchdog, name="time-limit", daemon=True)
    guard.start()
    outcome: tuple[bool, object] | None = None
    while True:
        try:
            if outcome is None:
                try:
                    outcome = (True, fn())
                except TimeLimitExceeded:
                    raise
                except BaseException as e:  # fn's own error, handed on once the watchdog is stopped
                    outcome = (False, e)
            # Stop the watchdog and clear an exception it raised that has not been delivered yet, so
            # none can surface after this function has returned.
            with lock:
                state["running"] = False
                if state["fired"]:
                    _set_async_exc(thread_id, None)
            break
        except TimeLimitExceeded:
            if outcome is None or outcome[0]:
                # Out of time (a result that arrived as the time ran out counts as too late).
                outcome = (False, TimeLimitExceeded(f"no result after {seconds:g} s"))
    stop.set()
    guard.join()
    ok, value = outcome
    if ok:
        return value  # type: ignore[return-value]
    raise value  # type: ignore[misc]
