"""An embedded cluster leaves no process behind: what outlives Ray's shutdown is killed at exit.

Its own process (a driver of its own): the session's shared Ray must not be the one shut down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent(
    """
    import atexit, os, time, ray
    from pipelines.config import RayConfig
    from pipelines.runtime import init_ray

    init_ray(RayConfig(num_cpus=1))

    @ray.remote(num_cpus=0)
    class Worker:
        def never_finish_exiting(self):
            # the worker's exit never ends: it stands in for Ray 2.60's deadlock in a worker's own
            # exit (seen after make demo), which Ray's shutdown does not end either
            atexit.register(time.sleep, 600)
            return os.getpid()

        def leave(self):
            ray.actor.exit_actor()  # as Ray Train ends its controller when a run is over

    w = Worker.remote()
    pid = ray.get(w.never_finish_exiting.remote())
    w.leave.remote()
    time.sleep(3)  # the driver goes on with other work; the worker is still exiting
    print(pid, flush=True)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_processes_that_outlive_the_embedded_cluster_are_killed_at_exit():
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    done = subprocess.run(
        [sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=180, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    straggler = int(done.stdout.strip().splitlines()[-1])
    give_up = time.monotonic() + 10
    while _alive(straggler) and time.monotonic() < give_up:
        time.sleep(0.2)
    try:
        assert not _alive(straggler), f"pid {straggler} outlived the driver and its cluster"
    finally:
        if _alive(straggler):
            os.kill(straggler, 9)
