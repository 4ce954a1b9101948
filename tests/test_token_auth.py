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
START_TIMEOUT_S = 180
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


def _stop_node(head: subprocess.Popen) -> None:
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


def _start_node(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``ray start ... --block`` in a session of its own (so that ``_stop_node`` finds all it started)."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_for_log(
    node: subprocess.Popen, log_path: Path, *texts: str, timeout: float = START_TIMEOUT_S
) -> str:
    """Wait until the node's log holds one of ``texts``; returns the log."""
    deadline = time.monotonic() + timeout
    while True:
        log = log_path.read_text()
        if any(t in log for t in texts):
            return log
        if node.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{log_path.name}: none of {texts} (exit status {node.poll()}):\n{log[-3000:]}")
        time.sleep(1)


@dataclass
class Head:
    address: str  # the job server (dashboard) URL
    gcs: str  # what other nodes join (ray start --address)
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
    head = _start_node(command, env, root / "head.log")
    try:
        _wait_for_log(head, root / "head.log", "block forever")
        yield Head(address=f"http://127.0.0.1:{dashboard}", gcs=f"127.0.0.1:{gcs}", env=env, root=root)
    finally:
        _stop_node(head)
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


def _active_nodes(head: Head) -> int:
    status = _ray(head, "status", f"--address={head.gcs}")
    assert status.returncode == 0, status.stderr[-2000:]
    active = status.stdout.split("Active:")[1].split("Pending:")[0]
    return sum("node_" in line for line in active.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("auth_mode", ["token", None], ids=["auth-mode-token", "token-file-alone"])
def test_a_node_joins_with_auth_mode_token_and_is_refused_without(
    token_head: Head, auth_mode: str | None
) -> None:
    """What cluster/ sets on every node: the token in ~/.ray/auth_token and RAY_AUTH_MODE=token. A
    joining ``ray start --address`` does not turn token auth on from the file alone (only a head
    does), so without RAY_AUTH_MODE=token the head refuses it."""
    home = token_head.root / f"node-home-{auth_mode}"
    (home / ".ray").mkdir(parents=True)
    shutil.copy(token_head.root / "auth_token", home / ".ray" / "auth_token")  # as the AWS file_mounts do
    env = {k: v for k, v in token_head.env.items() if k not in AUTH_VARS} | {"HOME": str(home)}
    if auth_mode:
        env["RAY_AUTH_MODE"] = auth_mode
    manager, metrics, agent_http, agent_grpc, runtime_env = _free_ports(5)
    command = [
        str(RAY), "start", "--block", f"--address={token_head.gcs}", f"--temp-dir={token_head.root / 'ray'}",
        "--num-cpus=1", "--object-store-memory=80000000", f"--node-manager-port={manager}",
        f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
    ]  # fmt: skip
    log_path = token_head.root / f"node-{auth_mode}.log"
    node = _start_node(command, env, log_path)
    try:
        log = _wait_for_log(node, log_path, "block forever", "InvalidAuthToken")
        if auth_mode:
            assert "block forever" in log, log[-3000:]
            deadline = time.monotonic() + 90  # the cluster status lags the join by a few seconds
            while _active_nodes(token_head) < 2 and time.monotonic() < deadline:
                time.sleep(2)
            assert _active_nodes(token_head) == 2
        else:
            assert "Authentication token is missing or incorrect" in log, log[-3000:]
            assert _active_nodes(token_head) == 1
    finally:
        _stop_node(node)
