"""``raychat serve --run-dir DIR --config C --port P`` (the serve stage) for real: a subprocess that starts its own local
Ray and Serve, lists the run's chat models over HTTP, answers a chat request, and stops cleanly on
Ctrl-C. The config keeps it small (chat models only, no search actor): starting processes is most of
this test's time on a loaded machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving_helpers import free_port, make_run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_raychat_serve_run_dir(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("cli"))
    port = free_port()
    config = tmp_path_factory.mktemp("cfg") / "run.yaml"
    config.write_text(
        "serve:\n  include_base_models: false\n  tools: {search: false}\n"
        "  model_defaults: {num_cpus: 0.5}\n  replica: {num_cpus: 0.25}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS="", RAYCHAT_API_KEYS="")
    env.pop("RAY_ADDRESS")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "serve",
            "--run-dir",
            str(run),
            "--config",
            str(config),
            "--port",
            str(port),
        ],
        cwd=tmp_path_factory.mktemp("cwd"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # as `raychat serve &` from a script starts it: SIGINT ignored, which the server must undo
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []

    def drain() -> None:  # read everything it prints, all the time (a full pipe would block it)
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    try:
        give_up = time.monotonic() + 600
        while time.monotonic() < give_up and proc.poll() is None:
            if any("web chat at" in line for line in lines):
                break
            time.sleep(0.5)
        assert any("web chat at" in line for line in lines), "".join(lines[-30:])
        assert any("raychat: serving sft (chat)" in line for line in lines)
        base = f"http://127.0.0.1:{port}"
        models = httpx.get(f"{base}/v1/models", timeout=30).json()["data"]
        assert {m["id"]: m["raychat"]["chat"] for m in models} == {"sft": True}
        reply = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "sft", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0},
            timeout=60,
        ).json()
        assert reply["choices"][0]["message"]["content"] == "Hello! I am raychat."
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    # a long-running stage: its numbers in the summary, no done marker
    summary = json.loads((run / "metrics" / "summary.json").read_text())
    assert (
        summary["serve"]["models"] == "sft (chat)" and summary["serve"]["url"] == f"http://127.0.0.1:{port}"
    )
    assert not (run / "metrics" / "serve.done.json").exists()


@pytest.mark.timeout(900)
def test_the_demo_ends_by_serving_every_model_and_asking_each_one(tmp_path_factory, ray_session, monkeypatch):
    """pipelines/demo.py's last step on the session's Ray: the serve stage's app over every model of the
    run, one OpenAI-API request to each (a chat completion for sft, a completion for base), the answers
    in summary.json, and the app gone afterwards; on a cluster the demo joined (as here, told so),
    Serve's controller and proxy too."""
    import shutil

    from ray import serve

    from pipelines.config import load_config
    from pipelines.demo import serve_and_ask
    from pipelines.run_dir import RunDir, read_summary
    from pipelines.stages import Graph

    run = tmp_path_factory.mktemp("demo") / "run"
    shutil.copytree(make_run(tmp_path_factory.mktemp("cli")), run)
    cfg = load_config(
        None,
        [
            f"run_dir={run}",
            "serve.tools.search=false",
            "serve.model_defaults.num_cpus=0.25",
            "serve.replica.num_cpus=0.25",
        ],
    )
    from pipelines import runtime
    from serving.job import serve_is_up

    serve.shutdown()  # a Serve left by an earlier test would be "another app's" and stay up
    monkeypatch.setattr(runtime, "started_here", lambda: False)
    serve_and_ask(Graph(cfg), RunDir(run))
    numbers = read_summary(RunDir(run))["serve"]
    assert sorted(a["model"] for a in numbers["smoke"]) == ["base", "sft"]
    assert numbers["smoke_ok"] == 2 and all(a["reply"] for a in numbers["smoke"]), numbers
    # why a reply is as it is: how it ended, and the tool calls it spent its tokens on
    assert all(a["finish_reason"] in {"stop", "length"} and "tool_calls" in a for a in numbers["smoke"]), (
        numbers
    )
    assert not serve_is_up()  # the app deleted and Serve shut down: nothing left on a joined cluster
