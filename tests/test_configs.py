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
