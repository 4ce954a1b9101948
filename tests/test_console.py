"""The console is a progress report: what it shows, what only the run's log file gets."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import console

REPO = Path(__file__).resolve().parents[1]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(name: str, level: int, msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_the_quiet_console_shows_stage_lines_progress_and_our_warnings_only() -> None:
    out = io.StringIO()
    h = console.ConsoleHandler(out, verbose=False)
    h.emit(_record("raychat", logging.INFO, "stage clean: starting", console=True))
    h.emit(_record("raychat.clean", logging.INFO, "a file's details"))  # log file only
    h.emit(_record("ray.data", logging.WARNING, "Truncating long operator name"))  # not ours: hidden
    h.emit(_record("pipelines.clean.job", logging.WARNING, "3 files were not readable"))
    h.emit(_record("ray", logging.ERROR, "a worker died"))  # anyone's errors
    text = out.getvalue()
    assert "stage clean: starting" in text and "3 files were not readable" in text and "a worker died" in text
    assert "details" not in text and "Truncating" not in text
    verbose = io.StringIO()
    loud = console.ConsoleHandler(verbose, verbose=True)
    loud.emit(_record("raychat.clean", logging.INFO, "a file's details"))
    assert "a file's details" in verbose.getvalue()


def test_progress_is_one_live_line_on_a_terminal_and_throttled_in_a_pipe(monkeypatch) -> None:
    tty = _Tty()
    h = console.ConsoleHandler(tty)
    for i in range(3):
        h.emit(_record("raychat", logging.INFO, f"step {i}/3", progress=True, progress_key="pretrain"))
    h.emit(_record("raychat", logging.INFO, "stage pretrain: done", console=True))
    text = tty.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.count("\n") == 2  # rewritten in place, then ended
    assert "step 2/3\n" in text and text.endswith("stage pretrain: done\n")

    pipe = io.StringIO()
    h = console.ConsoleHandler(pipe)
    for i in range(50):
        h.emit(_record("raychat", logging.INFO, f"step {i}/50", progress=True, progress_key="p"))
    h.emit(_record("raychat", logging.INFO, "step 50/50", progress=True, progress_key="p", final=True))
    lines = pipe.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["step 0/50", "step 50/50"]  # first, then final
    h.emit(_record("raychat", logging.INFO, "step 50/50", progress=True, progress_key="p", final=True))
    assert pipe.getvalue().splitlines() == lines  # the same final line again (a second read): once


@pytest.fixture
def sft_records() -> Iterator[list[logging.LogRecord]]:
    """What the sft stage's logger says (the watcher logs a stage's progress lines there)."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logger = logging.getLogger("raychat.sft")
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(keep)


def test_a_status_file_becomes_the_stage_progress(tmp_path: Path, sft_records) -> None:
    seen = sft_records
    status = tmp_path / "metrics" / "sft.status"
    status.parent.mkdir()
    status.write_text("stale line of an earlier run")
    with console.watch_status(status, "sft", every_s=0.05):
        assert not status.exists()  # an old run's line is not this run's progress
        console.write_status(status, "sft step 3/10 | ETA 0m07s")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        console.write_status(status, "sft step 10/10 | ETA 0m00s")
    texts = [r.getMessage() for r in seen]
    assert texts[0] == "sft step 3/10 | ETA 0m07s" and texts[-1] == "sft step 10/10 | ETA 0m00s"
    assert all(getattr(r, "progress", False) for r in seen) and getattr(seen[-1], "final", False)


def test_fits_a_stage_runs_under_other_names_show_too(tmp_path: Path, sft_records) -> None:
    """The sft stage's ablation fine-tunes write ``sft_ablation_*.status``: minutes of training that
    showed nothing while the stage's own file stood still. An earlier stage's file that does not
    change is not shown."""
    seen = sft_records
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "pretrain.status").write_text("pretrain step 150/150")
    ablation = metrics / "sft_ablation_reasoning.status"
    with console.watch_status(metrics / "sft.status", "sft", every_s=0.05):
        console.write_status(metrics / "sft.status", "sft step 341/341")
        console.write_status(ablation, "sft_ablation_reasoning step 4/40")
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)
        console.write_status(ablation, "sft_ablation_reasoning step 40/40")
    shown = [(r.progress_key, r.getMessage()) for r in seen]
    assert ("sft", "sft step 341/341") in shown
    assert ("sft_ablation_reasoning", "sft_ablation_reasoning step 4/40") in shown
    assert shown[-2:] in (
        [("sft", "sft step 341/341"), ("sft_ablation_reasoning", "sft_ablation_reasoning step 40/40")],
        [("sft_ablation_reasoning", "sft_ablation_reasoning step 40/40"), ("sft", "sft step 341/341")],
    )
    assert not [r for r in seen if r.progress_key == "pretrain"]


def test_headline_numbers() -> None:
    numbers = {"seconds": 3.2, "records": 2000, "ratio": 0.12345, "tokens_per_s": 123456.7, "ok": True}
    assert console.headline(numbers) == "records 2,000, ratio 0.123, tokens_per_s 123,457"
    assert console.headline(numbers, ("ratio", "missing")) == "ratio 0.123"


@pytest.mark.slow
def test_a_stage_run_prints_a_short_report_and_logs_the_rest(tmp_path: Path) -> None:
    """The world stage from the CLI: the console has its start, progress and numbers, and no line from
    Ray; the run's log file has Ray's start-up and every line of ours."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pipelines.cli", "world", "--run-dir", str(run)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert any("stage world: starting" in line for line in lines)
    assert any("stage world: done in" in line and "pages 2,000" in line for line in lines), lines
    assert not [line for line in lines if "WARNING" in line or "ERROR" in line or "INFO" in line], lines
    assert len(lines) <= 6, lines
    log_text = (run / "logs" / "raychat.log").read_text()
    assert "stage world: done in" in log_text and "Ray session logs" in log_text


def test_a_progress_line_gives_no_eta_from_its_first_items() -> None:
    """The first items carry the start-up; an ETA from them would promise hours for seconds of work."""
    from pipelines.runtime import Progress

    p = Progress("generating", total=1000, unit="samples")
    p.start -= 5.0  # the first sample came after 5 s of start-up
    p.done = 1
    assert "ETA ?" in p.line()
    p.done = 500
    assert "ETA ?" not in p.line() and "ETA " in p.line()


def test_raylet_messages_are_errors_only_when_they_read_as_one_and_no_actor_was_killed_on_purpose(
    monkeypatch,
) -> None:
    """Serve's controller killed at shutdown ("killed by ray.kill") reached the console as an ERROR
    line at the end of every healthy `raychat serve`."""
    import ray._private.worker as ray_worker

    monkeypatch.setattr(ray_worker, "print_to_stdstream", lambda data, ignore_prefix=False: None)
    monkeypatch.setattr(console, "is_verbose", lambda: False)
    console.route_ray_driver_messages()
    seen: list[int] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.levelno)  # type: ignore[method-assign]
    logger = logging.getLogger("ray.driver_messages")
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(handler)
    try:
        ray_worker.print_to_stdstream({"pid": "raylet", "lines": [
            "Task ServeController.graceful_shutdown failed. The actor died because it was killed by ray.kill.",
            "A worker died or was killed while executing a task: error",
            "Started 3 workers",
        ]})  # fmt: skip
    finally:
        logger.removeHandler(handler)
    assert seen == [logging.INFO, logging.ERROR, logging.INFO]
