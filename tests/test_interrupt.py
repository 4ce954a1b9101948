"""Stopping a stage from outside: Ctrl-C and SIGTERM (``timeout``, ``ray job stop``, a scheduler)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_pretrain import make_token_run


@pytest.mark.slow
def test_a_pretrain_stopped_by_sigterm_says_where_it_will_go_on_in_one_line(tmp_path):
    """SIGTERM (timeout, ray job stop) ended `raychat pretrain` with Ray's C++ stack dump (~40 lines)
    and exit 134. It now says where the same command goes on from, and leaves no Ray process. (Ctrl-C
    goes through Ray Train's own handler instead: the test below.)"""
    signum, code, said = 15, 143, "stopped by SIGTERM"
    import os
    import signal
    import subprocess
    import sys
    import time

    make_token_run(tmp_path, num_docs=600)
    argv = [sys.executable, "-m", "pipelines.cli", "pretrain", "--run-dir", str(tmp_path)]
    for setting in ("seq_len=32", "global_batch_tokens=512", "micro_batch_size=8", "max_steps=100000"):
        argv += ["--set", f"pretrain.{setting}"]
    argv += ["--set", "pretrain.checkpoint_every=5", "--set", "ray.num_cpus=1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    checkpoints = tmp_path / "checkpoints" / "pretrain"
    deadline = time.time() + 240
    while not list(checkpoints.glob("checkpoint_step*/meta.json")) and time.time() < deadline:
        time.sleep(1)
    assert proc.poll() is None, proc.stderr.read()
    os.killpg(proc.pid, signum) if signum == signal.SIGINT else proc.send_signal(
        signum
    )  # a terminal's Ctrl-C
    _, err = proc.communicate(timeout=120)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == code, err
    assert last.startswith(f"raychat: pretrain: {said}; the same command goes on from its checkpoint at step")
    assert "SIGTERM received" not in err and "Traceback" not in err
    time.sleep(2)
    left = [p for p in Path("/proc").glob("[0-9]*") if _session_of(p) == proc.pid]
    assert not left, [(p.name, (p / "cmdline").read_bytes()[:80]) for p in left]


def _session_of(proc_dir: Path) -> int | None:
    try:
        fields = (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[4]) if fields[0] != "Z" else None  # the session id; a zombie is already gone


def test_ctrl_c_in_training_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch, capsys):
    """Ctrl-C during a fit ended `raychat pretrain` with exit 1 and nothing on the console: Ray Train's
    SIGINT handler aborts the run and leaves through ``SystemExit``."""
    import ray.train.torch
    from test_pretrain import _job_config, _write_checkpoint_meta

    from pipelines import cli
    from pipelines.train import driver

    make_token_run(tmp_path, num_docs=300)

    class AbortedByCtrlC:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def fit(self):
            raise SystemExit(0)  # what Ray Train's handler does once its controller is gone

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", AbortedByCtrlC)
    monkeypatch.setattr(driver, "init_ray", lambda *_: None)
    monkeypatch.setattr(driver, "warn_if_cluster_too_small", lambda *_: None)
    monkeypatch.setattr(cli, "init_ray", lambda *_: None)
    from pipelines.pretrain import job

    task, _, _ = job.prepare(_job_config(tmp_path))
    meta = {"position": 16, **task.identity(), "data_fingerprint": task.data_fingerprint()}
    _write_checkpoint_meta(tmp_path, 4, meta)
    argv = ["pretrain", "--run-dir", str(tmp_path), "--set", "pretrain.seq_len=32"]
    argv += ["--set", "pretrain.global_batch_tokens=512", "--set", "pretrain.micro_batch_size=8"]
    assert cli.main(argv) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "raychat: pretrain: stopped (Ctrl-C); the same command goes on from its checkpoint at step 4 "
        f"({tmp_path / 'checkpoints' / 'pretrain' / 'checkpoint_step0000004'})"
    )
