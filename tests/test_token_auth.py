"""Token authentication as a real cluster runs it: ``ray start --head`` with RAY_AUTH_MODE=token, then
``ray job submit --working-dir <checkout>`` of a stage, with the cluster's token and without it.

Every other test switches authentication off (conftest.py); this one keeps the README's promise that
the stages run on a cluster that has it on. The head runs from this test's own temporary HOME with its
own token file (RAY_AUTH_TOKEN_PATH), so the user's ~/.ray/auth_token is neither read nor written, on
free ports, so other Ray instances on the machine are left alone.

Teardown stops this head and nothing else: ``ray stop`` would kill every Ray process on the machine,
other people's clusters included, so the head runs as ``ray start --block`` in its own session and is
stopped by signalling that session's processes, by id.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the job's `python` must be this one (README: PATH=.venv/bin:$PATH)
RAY = VENV_BIN / "ray"
HEAD_START_TIMEOUT_S = 180
AUTH_VARS = (
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_ADDRESS",
    "RAY_API_SERVER_ADDRESS",
)


def _free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid``: the head and everything it started (workers, job drivers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, _pgrp, session = stat[stat.rindex(")") + 2 :].split()[:4]  # after "pid (comm) "
        if int(session) == sid and state != "Z":
            pids.append(int(entry.name))
    return pids


def _stop_head(head: subprocess.Popen) -> None:
    """SIGTERM makes ``ray start --block`` shut its processes down; stragglers of its session get
    SIGKILL, each by its id."""
    head.terminate()
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    deadline = time.monotonic() + 20
    while _session_pids(head.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _session_pids(head.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Head:
    address: str  # the job server (dashboard) URL
    env: dict[str, str]  # a client environment holding the cluster's token
    root: Path


@pytest.fixture(scope="module")
def token_head() -> Iterator[Head]:
    if not RAY.is_file():
        pytest.fail(f"the ray command is not beside {sys.executable}")
    # a short path: Ray's unix sockets live under --temp-dir and a socket path has ~107 bytes at most
    root = Path(tempfile.mkdtemp(prefix="rc-auth-", dir="/tmp"))
    (root / "home").mkdir()
    token_file = root / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    env.update(
        HOME=str(root / "home"),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    gcs, dashboard, client, agent_http, agent_grpc, metrics, runtime_env, node_manager = _free_ports(8)
    command = [
        str(RAY), "start", "--head", "--block", "--disable-usage-stats",
        f"--temp-dir={root / 'ray'}", "--num-cpus=1", "--object-store-memory=100000000",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--port={gcs}", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        f"--node-manager-port={node_manager}",
    ]  # fmt: skip
    log = (root / "head.log").open("w")
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while "block forever" not in (root / "head.log").read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{(root / 'head.log').read_text()[-3000:]}")
            time.sleep(1)
        yield Head(address=f"http://127.0.0.1:{dashboard}", env=env, root=root)
    finally:
        _stop_head(head)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _ray(head: Head, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RAY), *args],
        env=env or head.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _submit(
    head: Head, submission_id: str, run_dir: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` of the world stage (the smallest real stage; it joins the cluster first)."""
    return _ray(
        head,
        "job", "submit", "--address", head.address, "--submission-id", submission_id,
        "--working-dir", str(REPO), "--",
        "python", "-m", "pipelines.world", "--set", f"run_dir={run_dir}",
        "--set", "world.num_pages=40", "--set", "world.num_files=1", "--set", "world.num_entities=40",
        env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_a_stage_submitted_with_the_token_succeeds(token_head: Head) -> None:
    run_dir = token_head.root / "run-ok"
    proc = _submit(token_head, "raychat-with-token", run_dir, token_head.env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Job 'raychat-with-token' succeeded" in out, out[-4000:]
    assert "Connected to Ray cluster" in out  # the stage's driver joined the token-protected cluster
    status = _ray(token_head, "job", "status", "--address", token_head.address, "raychat-with-token")
    assert "succeeded" in status.stdout + status.stderr
    pages = (run_dir / "world" / "pages.jsonl").read_text().splitlines()
    assert len(pages) == 40  # the stage really ran, from the uploaded checkout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("client", "refusal"),
    [
        ("no-token", "Missing authentication token"),
        ("auth-off", "Missing authentication token"),
        ("wrong-token", "Invalid authentication token"),
    ],
)
def test_a_submission_without_the_token_is_refused(token_head: Head, client: str, refusal: str) -> None:
    env = {k: v for k, v in token_head.env.items() if k not in AUTH_VARS}  # HOME holds no token either
    if client == "auth-off":
        env["RAY_AUTH_MODE"] = "disabled"
    elif client == "wrong-token":
        wrong = token_head.root / "wrong_token"
        wrong.write_text(secrets.token_hex(32))
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(wrong))
    run_dir = token_head.root / f"run-{client}"
    proc = _submit(token_head, f"raychat-{client}", run_dir, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert refusal in out, out[-4000:]
    assert not run_dir.exists()  # nothing ran
    listed = _ray(token_head, "job", "list", "--address", token_head.address)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert f"raychat-{client}" not in listed.stdout  # and the cluster holds no trace of the job
