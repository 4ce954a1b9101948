"""The benchmark scripts run, and end with the JSON line the README's rule asks for.

No timing is asserted (timings do not belong in tests): only that each script's ``--quick`` run
finishes, measures both sides, finds their outputs in agreement (``ok``) and prints the keys every
benchmark must print. The harness's pieces are checked directly, fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import interleave, run_process, spread  # noqa: E402

SCRIPTS = ["dedup_throughput", "quality_filters", "extract_quality", "tokenize_throughput", "serve_load"]
REQUIRED = {
    "benchmark",
    "unit",
    "ours",
    "baseline",
    "baseline_name",
    "ratio",
    "target",
    "ok",
    "ours_range",
    "baseline_range",
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def test_interleave_same_warmup_and_repeats_alternating_order():
    calls: list[str] = []
    counter = {"a": 0, "b": 0}

    def side(name):
        def run():
            calls.append(name)
            counter[name] += 1
            return counter[name]

        return run

    out = interleave({"a": side("a"), "b": side("b")}, warmup=1, repeats=3)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert out == {"a": [2, 3, 4], "b": [2, 3, 4]}  # the warm-up run of each side is not returned


def test_spread_is_median_and_range():
    assert spread([3.0, 1.0, 2.0, 10.0, 4.0]) == (3.0, [1.0, 10.0])
    with pytest.raises(ValueError):
        spread([])


def test_run_process_counts_cpu_of_orphaned_grandchildren():
    """A side that starts workers which outlive it (Ray's) is charged for their CPU, and the wall
    time is the command's own, not the orphan's."""
    busy = "x = 0\nfor i in range(20_000_000): x += i"  # about a CPU-second
    code = textwrap.dedent(
        f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", {busy!r}])
        print('{{"done": true}}')
        """
    )
    m = run_process([sys.executable, "-c", code], _env())
    assert m.last_json() == {"done": True}
    # the parent alone uses a few hundredths of a second; the orphan's loop ran after it had exited
    assert m.cpu_s > 0.5


def test_run_process_counts_cpu_of_children_reaped_without_waiting():
    """Ray's raylet ignores SIGCHLD, so the kernel drops its workers' CPU from every children total
    when they exit: the harness must count them anyway (it samples the process tree)."""
    busy = "x = 0\nfor i in range(20_000_000): x += i"  # about a CPU-second
    code = textwrap.dedent(
        f"""
        import os, signal, time
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel, unaccounted
        pid = os.fork()
        if pid == 0:
            exec({busy!r})
            os._exit(0)
        while os.path.exists(f"/proc/{{pid}}"):
            time.sleep(0.05)
        """
    )
    m = run_process([sys.executable, "-c", code], _env())
    assert m.cpu_s > 0.5


def test_run_process_failure_is_an_error():
    with pytest.raises(RuntimeError, match="exited 3"):
        run_process([sys.executable, "-c", "import sys; sys.exit(3)"], _env())


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_is_quick(name):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_run_ends_with_the_summary(name, shared_data):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--quick"],
        env=_env() | {"RAYCHAT_SHARED_DATA": str(shared_data)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-2000:]
    summary = json.loads(lines[-1])
    assert REQUIRED <= summary.keys(), sorted(REQUIRED - summary.keys())
    assert summary["benchmark"] == name
    if name == "extract_quality" and summary.get("error"):  # its page sets come from PyPI and npm
        assert proc.returncode == 1 and summary["ok"] is False
        pytest.skip(f"page sets not reachable: {summary['error']}")
    assert summary["ok"] is True, proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stderr[-2000:]
    for side in ("ours", "baseline"):
        low, high = summary[f"{side}_range"]
        assert low <= summary[side] <= high
    assert summary["ratio"] == pytest.approx(summary["ours"] / summary["baseline"], rel=0.01)


def test_every_benchmark_imports_names_the_project_has() -> None:
    """The scripts that no quick run covers (clean_throughput, serve_load, gpu_mfu...) import the
    project's code lazily inside functions; a module or name moved by a refactor must fail here, not
    in the middle of a half-hour measurement."""
    import ast
    import importlib

    missing = []
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(), filename=str(script))):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            if node.module.split(".")[0] not in ("lm", "pipelines", "actors", "serving"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{script.name}: from {node.module} import {alias.name}")
    assert missing == []
