"""Every run config shipped in configs/ loads and validates, GPU ones included (CI has no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path, [])
    assert str(cfg.run_dir)


def test_gpu_config_is_a_real_run() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "gpu-124m.yaml", [])
    pre = cfg.pretrain
    assert pre.use_gpu and pre.num_workers > 1 and pre.compile
    assert pre.global_batch_tokens % (pre.seq_len * pre.micro_batch_size * pre.num_workers) == 0


def test_cluster_manifests_share_the_run_directory_with_every_node() -> None:
    import yaml

    cluster = Path(__file__).resolve().parents[1] / "cluster"
    aws = yaml.safe_load((cluster / "aws-autoscaling.yaml").read_text())
    assert any("/mnt/shared" in cmd for cmd in aws["initialization_commands"])
    assert aws["file_mounts"]["/home/ubuntu/.ray/auth_token"]  # token auth on every node
    pvc, job = yaml.safe_load_all((cluster / "kuberay-rayjob.yaml").read_text())
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert {"name": "shared", "mountPath": "/mnt/shared"} in container["volumeMounts"]
        assert {e["name"] for e in container["env"]} >= {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
    assert "/mnt/shared" in job["spec"]["entrypoint"]
