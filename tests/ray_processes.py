"""Real ``ray start`` nodes for tests, started the way a cluster's nodes are and stopped by process id.

Each head runs from a test's own root directory: its own HOME and token file (RAY_AUTH_TOKEN_PATH), so
the user's ~/.ray/auth_token is neither read nor written, its own ``--temp-dir`` (sessions, sockets and
the "current cluster" address file stay there) and free ports, so other Ray instances on the machine
are left alone. Token authentication is on, as on a real cluster (README: "Do not switch it off").

Nothing here calls ``ray stop``: it would kill every Ray process on the machine, other people's clusters
included. Every node runs as ``ray start --block`` in a session of its own and is stopped by signalling
that session's processes, by id.
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
from contextlib import ExitStack, contextmanager
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


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid``: the node and everything it started (workers, job drivers)."""
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


def stop_node(node: subprocess.Popen, grace_s: float = 5) -> None:
    """SIGTERM to every process of the node's session at once (``ray start --block``, the GCS, raylet,
    dashboard, workers, job drivers: each shuts itself down), then SIGKILL, by id, to what is left after
    ``grace_s``. (SIGTERM to ``ray start`` alone, which then stops the rest, took over 30 s for a head
    that had run a job; its GCS and ``ray start`` itself still outlive 15 s of SIGTERM then.)"""
    for signum, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        for pid in session_pids(node.pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while session_pids(node.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_pids(node.pid):
            break
    node.wait()


def start_node(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``ray start ... --block`` in a session of its own (so that ``stop_node`` finds all it started)."""
    with log_path.open("w") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_for_log(
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


def without_auth(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in AUTH_VARS}


@contextmanager
def token_head(prefix: str, num_cpus: int = 1) -> Iterator[Head]:
    """A ``ray start --head`` with token authentication and a dashboard (the job server), in a fresh
    root directory under /tmp that is removed afterwards with everything the cluster wrote there."""
    if not RAY.is_file():
        pytest.fail(f"the ray command is not beside {sys.executable}")
    # a short path: Ray's unix sockets live under --temp-dir and a socket path has ~107 bytes at most
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    (root / "home").mkdir()
    token_file = root / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = without_auth(dict(os.environ))
    env.update(
        HOME=str(root / "home"),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    gcs, dashboard, client, agent_http, agent_grpc, metrics, runtime_env, node_manager = free_ports(8)
    command = [
        str(RAY), "start", "--head", "--block", "--disable-usage-stats",
        f"--temp-dir={root / 'ray'}", f"--num-cpus={num_cpus}", "--object-store-memory=100000000",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--port={gcs}", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        f"--node-manager-port={node_manager}",
    ]  # fmt: skip
    head = start_node(command, env, root / "head.log")
    try:
        wait_for_log(head, root / "head.log", "block forever")
        yield Head(address=f"http://127.0.0.1:{dashboard}", gcs=f"127.0.0.1:{gcs}", env=env, root=root)
    finally:
        stop_node(head)
        shutil.rmtree(root, ignore_errors=True)


def worker_node(head: Head, name: str, num_cpus: int, auth_mode: str | None = "token") -> subprocess.Popen:
    """Start ``ray start --address`` joining ``head`` as a cluster's worker is set up (cluster/): the
    token copied into its own ~/.ray/auth_token and ``RAY_AUTH_MODE=auth_mode`` (None: not set).

    Returns the node's process; its log is ``head.root / f"{name}.log"``. Stop it with ``stop_node``.
    """
    home = head.root / f"{name}-home"
    (home / ".ray").mkdir(parents=True)
    shutil.copy(head.root / "auth_token", home / ".ray" / "auth_token")  # as the AWS file_mounts do
    env = without_auth(head.env) | {"HOME": str(home)}
    if auth_mode:
        env["RAY_AUTH_MODE"] = auth_mode
    manager, metrics, agent_http, agent_grpc, runtime_env = free_ports(5)
    command = [
        str(RAY), "start", "--block", f"--address={head.gcs}", f"--temp-dir={head.root / 'ray'}",
        f"--num-cpus={num_cpus}", "--object-store-memory=80000000", f"--node-manager-port={manager}",
        f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
    ]  # fmt: skip
    return start_node(command, env, head.root / f"{name}.log")


def ray_cli(head: Head, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``ray`` command run from the checkout, with the cluster's token unless ``env`` says otherwise."""
    return subprocess.run(
        [str(RAY), *args],
        env=env or head.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def active_nodes(head: Head) -> int:
    status = ray_cli(head, "status", f"--address={head.gcs}")
    assert status.returncode == 0, status.stderr[-2000:]
    active = status.stdout.split("Active:")[1].split("Pending:")[0]
    return sum("node_" in line for line in active.splitlines())


def wait_for_active_nodes(head: Head, n: int, timeout: float = 90) -> int:
    """The cluster status lags a join, and a stopped node's death, by a few seconds: waits until
    ``n`` nodes are active (or the timeout); returns the count last seen."""
    deadline = time.monotonic() + timeout
    while (seen := active_nodes(head)) != n and time.monotonic() < deadline:
        time.sleep(2)
    return seen
