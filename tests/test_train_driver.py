"""The one Ray Train driver's trainer: Ray 2.60's TorchTrainer less the helper actors our fits never use
(pipelines/train/driver.py, ``lean_torch_trainer``). These tests fail when a Ray upgrade moves the
classes it leaves out, so that the saving is not lost without a word."""

from __future__ import annotations

import pytest


def _callback_kinds(monkeypatch: pytest.MonkeyPatch, local: bool, **kwargs) -> set[type]:
    from ray.train import ScalingConfig

    from pipelines.train import driver

    monkeypatch.setattr(driver, "started_here", lambda: local)
    trainer = driver.lean_torch_trainer()(lambda: None, scaling_config=ScalingConfig(num_workers=1), **kwargs)
    return {type(c) for c in trainer._create_default_callbacks()}


def test_a_fit_on_the_local_cluster_starts_no_dataset_manager_or_placement_group_cleaner(
    ray_session, monkeypatch
) -> None:
    from ray.train.v2._internal.callbacks.backend_setup import BackendSetupCallback
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    kinds = _callback_kinds(monkeypatch, local=True)
    assert DatasetsCallback not in kinds and PlacementGroupCleanerCallback not in kinds
    assert BackendSetupCallback in kinds  # the torch process group and the rest stay
    # on a cluster this process joined, a dead controller's placement group is still freed
    kinds = _callback_kinds(monkeypatch, local=False)
    assert PlacementGroupCleanerCallback in kinds and DatasetsCallback not in kinds
    # and a caller that gives Ray Train datasets gets their shards
    import ray.data

    kinds = _callback_kinds(monkeypatch, local=True, datasets={"train": ray.data.range(4)})
    assert DatasetsCallback in kinds
