"""Token authentication as a real cluster runs it: ``ray start --head`` with RAY_AUTH_MODE=token, then
``ray job submit --working-dir <checkout>`` of a stage, with the cluster's token and without it.

Every other test switches authentication off (conftest.py); this one keeps the README's promise that
the stages run on a cluster that has it on. The head comes from tests/ray_processes.py: its own
temporary HOME and token file, free ports, and a teardown that stops this head and nothing else (never
``ray stop``, which would kill other people's clusters on the machine).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_processes import (
    REPO,
    Head,
    ray_cli,
    stop_node,
    token_head,
    wait_for_active_nodes,
    wait_for_log,
    without_auth,
    worker_node,
)


@pytest.fixture(scope="module")
def auth_head() -> Iterator[Head]:
    with token_head("rc-auth-") as head:
        yield head


def _submit(
    head: Head, submission_id: str, run_dir: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` of the world stage (the smallest real stage; it joins the cluster first)."""
    return ray_cli(
        head,
        "job", "submit", "--address", head.address, "--submission-id", submission_id,
        "--working-dir", str(REPO), "--",
        "python", "-m", "pipelines.world", "--set", f"run_dir={run_dir}",
        "--set", "world.num_pages=40", "--set", "world.num_files=1", "--set", "world.num_entities=40",
        env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_a_stage_submitted_with_the_token_succeeds(auth_head: Head) -> None:
    run_dir = auth_head.root / "run-ok"
    proc = _submit(auth_head, "raychat-with-token", run_dir, auth_head.env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Job 'raychat-with-token' succeeded" in out, out[-4000:]
    # the stage's driver joined the token-protected cluster (Ray's own lines go to the run's log file)
    assert "Connected to Ray cluster" in (run_dir / "logs" / "raychat.log").read_text()
    status = ray_cli(auth_head, "job", "status", "--address", auth_head.address, "raychat-with-token")
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
def test_a_submission_without_the_token_is_refused(auth_head: Head, client: str, refusal: str) -> None:
    env = without_auth(auth_head.env)  # HOME holds no token either
    if client == "auth-off":
        env["RAY_AUTH_MODE"] = "disabled"
    elif client == "wrong-token":
        wrong = auth_head.root / "wrong_token"
        wrong.write_text(secrets.token_hex(32))
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(wrong))
    run_dir = auth_head.root / f"run-{client}"
    proc = _submit(auth_head, f"raychat-{client}", run_dir, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert refusal in out, out[-4000:]
    assert not run_dir.exists()  # nothing ran
    listed = ray_cli(auth_head, "job", "list", "--address", auth_head.address)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert f"raychat-{client}" not in listed.stdout  # and the cluster holds no trace of the job


@pytest.mark.slow
@pytest.mark.parametrize("auth_mode", ["token", None], ids=["auth-mode-token", "token-file-alone"])
def test_a_node_joins_with_auth_mode_token_and_is_refused_without(
    auth_head: Head, auth_mode: str | None
) -> None:
    """What cluster/ sets on every node: the token in ~/.ray/auth_token and RAY_AUTH_MODE=token. A
    joining ``ray start --address`` does not turn token auth on from the file alone (only a head
    does), so without RAY_AUTH_MODE=token the head refuses it."""
    name = f"node-{auth_mode}"
    node = worker_node(auth_head, name, num_cpus=1, auth_mode=auth_mode)
    try:
        log = wait_for_log(node, auth_head.root / f"{name}.log", "block forever", "InvalidAuthToken")
        if auth_mode:
            assert "block forever" in log, log[-3000:]
            assert wait_for_active_nodes(auth_head, 2) == 2
        else:
            assert "Authentication token is missing or incorrect" in log, log[-3000:]
            # only the head (a node stopped by the test before may take a few seconds to be marked dead)
            assert wait_for_active_nodes(auth_head, 1) == 1
    finally:
        stop_node(node)
