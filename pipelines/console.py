"""The terminal of a run: a progress report, not a log dump.

By default the console shows, per stage, one live progress line (what it is doing, rate, ETA) and
its headline numbers when it ends, plus warnings and errors of our own code and errors of anyone's.
Everything at INFO and above, Ray's and Ray Data's included (execution plans, per-operator
progress), goes to the run's log file (``<run>/logs/raychat.log``). ``--verbose`` (or
``RAYCHAT_VERBOSE=1``) puts it all on the console as well, with Ray Data's progress bars and the
Ray workers' output, as before.

How a line reaches the console in the quiet mode: a log record with ``extra={"console": True}`` (the
runner's stage start/end lines), a progress record (``extra={"progress": True}``; ``Progress`` in
pipelines/runtime.py makes them), or a WARNING+ record of our loggers (``raychat``, ``pipelines``,
``lm``, ``actors``, ``serving``); other libraries' records only at ERROR. Work that runs in Ray
workers (training ranks) reports its progress line through a status file in the run directory
(``metrics/<stage>.status``, ``write_status``) which ``watch_status`` turns into the live line, so
that the workers' own output can stay out of the console (``ray.init(log_to_driver=False)``; it is
in Ray's session logs, whose folder the log file names).

On a terminal the live line is rewritten in place; when the console is a file or a pipe (CI,
``make demo | tee``), a progress line is printed at most every ``PIPE_EVERY_S`` seconds per stage and
when it completes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

OURS = ("raychat", "pipelines", "lm", "actors", "serving", "benchmarks", "__main__")
PIPE_EVERY_S = 20.0
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def verbose_requested(flag: bool | None = None) -> bool:
    return bool(flag) or os.environ.get("RAYCHAT_VERBOSE", "") not in ("", "0", "false")


class ConsoleHandler(logging.Handler):
    """Writes what the quiet console shows (see the module docstring) to ``stream``."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = False) -> None:
        super().__init__(logging.INFO)
        self._stream = stream  # None: whatever sys.stderr is when a line is written (pytest swaps it)
        self.verbose = verbose
        self.live = False  # a progress line is on the screen without its newline
        self.last_printed: dict[str, float] = {}
        self.last_message: dict[str, str] = {}  # per progress key, in a pipe
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        self.plain = logging.Formatter(FORMAT, datefmt="%H:%M:%S")

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    @property
    def tty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def shows(self, record: logging.LogRecord) -> bool:
        if self.verbose or getattr(record, "console", False) or getattr(record, "progress", False):
            return True
        ours = record.name.split(".")[0] in OURS
        return record.levelno >= (logging.WARNING if ours else logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.shows(record):
            return
        try:
            with self._lock_ctx():
                if getattr(record, "progress", False) and not self.verbose:
                    self._progress(record)
                    return
                text = self.format(record) if getattr(record, "console", False) else self.plain.format(record)
                self._end_live()
                self.stream.write(text + "\n")
                self.stream.flush()
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)

    @contextlib.contextmanager
    def _lock_ctx(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _progress(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self.stream.write("\r\x1b[K" + text[: max(20, width - 1)])
            self.live = True
        else:
            key = str(getattr(record, "progress_key", record.name))
            now = time.monotonic()
            final = bool(getattr(record, "final", False))
            if not final and now - self.last_printed.get(key, -1e9) < PIPE_EVERY_S:
                return
            message = record.getMessage()  # the text without its time
            if final and self.last_message.get(key) == message:
                return  # the final line was the last one printed already
            self.last_printed[key] = now
            self.last_message[key] = message
            self.stream.write(text + "\n")
        self.stream.flush()

    def _end_live(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.live = False


_console: ConsoleHandler | None = None
_file: logging.Handler | None = None


def setup(verbose: bool | None = None, stream: TextIO | None = None) -> ConsoleHandler:
    """The console handler on the root logger (once per process; a second call only changes the mode).
    Until ``log_to`` names a file, records the console does not show are dropped."""
    global _console
    root = logging.getLogger()
    level = os.environ.get("RAYCHAT_LOG_LEVEL", "INFO")
    root.setLevel(level)
    if _console is None or _console not in root.handlers:
        _console = ConsoleHandler(stream, verbose_requested(verbose))
        root.addHandler(_console)
    else:
        _console.verbose = verbose_requested(verbose)
    return _console


def is_verbose() -> bool:
    return _console is not None and _console.verbose


def log_to(path: Path) -> None:
    """Every record at INFO and above, ours and Ray's, also goes to ``path`` (appended)."""
    global _file
    if _file is not None and getattr(_file, "baseFilename", None) == str(path.resolve()):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    if _file is not None:
        root.removeHandler(_file)
        for name in ("ray", "ray.data", "ray.train", "ray.serve"):
            logging.getLogger(name).removeHandler(_file)
    root.addHandler(handler)
    _file = handler
    quiet_ray_loggers()


def stop_log_to() -> None:
    """Logging to a file stops (the run directory it was in is being removed)."""
    global _file
    if _file is None:
        return
    for logger in (
        logging.getLogger(),
        *(logging.getLogger(n) for n in ("ray", "ray.data", "ray.train", "ray.serve")),
    ):
        logger.removeHandler(_file)
    _file.close()
    _file = None


def quiet_ray_loggers() -> None:
    """Ray's loggers do not propagate to the root and print through their own console handlers: in the
    quiet mode those print only errors, and the log file gets their records too. Called again after
    Ray Data configures its logger (on import)."""
    for name in ("ray", "ray.data", "ray.train", "ray.serve"):
        logger = logging.getLogger(name)
        if _file is not None and _file not in logger.handlers and not logger.propagate:
            logger.addHandler(_file)
        for h in logger.handlers:
            if h is _file or isinstance(h, logging.FileHandler):
                continue
            if isinstance(h, logging.StreamHandler) or type(h).__name__.endswith("RayHandler"):
                h.setLevel(logging.INFO if is_verbose() else logging.ERROR)


def end_live_line() -> None:
    if _console is not None:
        with _console._lock_ctx():
            _console._end_live()
            _console.stream.flush()


# -- progress from Ray workers: a status file per stage --------------------------------------------


def write_status(path: Path, line: str) -> None:
    """A worker's progress line for the driver's console (``watch_status``); replaced atomically."""
    from lm import atomic

    with contextlib.suppress(OSError):  # progress is best effort: never fail a step over it
        atomic.write_text(path, line)


@contextlib.contextmanager
def watch_status(path: Path, stage: str, every_s: float = 1.0) -> Iterator[None]:
    """While the block runs, the newest line in ``path`` becomes the stage's live progress line, and so
    does that of any other status file beside it that changes meanwhile: fits the stage runs under
    names of their own (the sft stage's ablation fine-tunes, the distill stage's control students)
    would otherwise train for minutes with nothing on the console. Stages run one at a time, so a
    status file that changes while this one runs is this stage's work."""
    log = logging.getLogger(f"raychat.{stage}")
    stop = threading.Event()
    with contextlib.suppress(OSError):
        path.unlink()  # a line from an earlier run is not this run's progress
    last = {status: _mtime(status) for status in path.parent.glob("*.status")}  # earlier stages' lines
    touched: set[Path] = set()

    def show(final: bool = False) -> None:
        for status in sorted(path.parent.glob("*.status")):
            mtime = _mtime(status)
            if mtime != last.get(status):
                last[status] = mtime
                touched.add(status)
            elif not (final and status in touched):
                continue
            with contextlib.suppress(OSError):
                text = status.read_text().strip()
                key = stage if status == path else status.name.removesuffix(".status")
                log.info("%s", text, extra={"progress": True, "progress_key": key, "final": final})

    def poll() -> None:
        while not stop.wait(every_s):
            show()

    thread = threading.Thread(target=poll, name=f"status-{stage}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        show(final=True)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def headline(numbers: dict[str, Any], keys: tuple[str, ...] = (), limit: int = 5) -> str:
    """A stage's headline numbers in one line: ``keys`` when the stage names them, else its first few
    scalar numbers."""
    chosen = [k for k in keys if numbers.get(k) is not None] or [
        k
        for k, v in numbers.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "seconds"
    ]
    parts = []
    for k in chosen[:limit]:
        v = numbers[k]
        if isinstance(v, float):
            parts.append(f"{k} {v:,.0f}" if abs(v) >= 1000 else f"{k} {v:.3g}")
        else:
            parts.append(f"{k} {v:,}")
    return ", ".join(parts)


def number(numbers: dict[str, Any], key: str, digits: int = 3) -> str:
    """``numbers[key]`` for a summary line: a float to ``digits`` places, '-' when it is missing."""
    value = numbers.get(key)
    return f"{value:.{digits}f}" if isinstance(value, float) else "-" if value is None else str(value)


def route_ray_driver_messages() -> None:
    """Messages the raylet and GCS push to the driver (worker-pool size notes, a worker that died) are
    printed by Ray straight to the terminal, whatever ``log_to_driver`` says. In the quiet mode they
    become log records of ``ray.driver_messages`` instead: in the run's log file always, on the console
    when they read as errors (a warning about how many workers started is not the user's problem)."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "_raychat", False):
        return
    logger = logging.getLogger("ray.driver_messages")

    def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        if is_verbose():
            original(data, ignore_prefix=ignore_prefix)
            return
        for line in data.get("lines", []):
            text = f"({data.get('pid', 'ray')}) {line}"
            # an actor killed on purpose (Serve's controller at shutdown: "killed by ray.kill") is
            # not an error the user has to wonder about
            error = "error" in line.lower() and "warning" not in line[:20].lower() and "ray.kill" not in line
            logger.log(logging.ERROR if error else logging.INFO, "%s", text)

    to_log._raychat = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_log
