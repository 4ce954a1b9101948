"""What a training run is trained from, as fingerprints (pipelines/train/fingerprints.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from lm.train.task import TrainTask
from pipelines.train.fingerprints import NamedInputs, model_fingerprint


def test_a_sharded_checkpoint_rewritten_is_another_initial_model(tmp_path) -> None:
    """A Llama-layout import in shards (model-0000x-of-0000n.safetensors and its index)."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    shards = [tmp_path / f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for shard in shards:
        shard.write_bytes(b"w" * 64)
    before = model_fingerprint(tmp_path)
    assert model_fingerprint(tmp_path) == before
    os.utime(shards[1], ns=(1, 1))  # the second shard rewritten (its time changes)
    assert model_fingerprint(tmp_path) != before


def test_named_inputs_must_come_before_train_task() -> None:
    """The other order keeps TrainTask's data_fingerprint (None): stale checkpoints would be resumed."""

    @dataclass
    class Right(NamedInputs, TrainTask):
        fingerprints: dict[str, str] = field(default_factory=dict)

    task = Right(fingerprints={"the training data": "a", "the initial model": "b"})
    assert task.data_fingerprint() is not None and list(task.fingerprint_parts()) == [
        "the training data",
        "the initial model",
    ]
    with pytest.raises(TypeError, match="list NamedInputs before TrainTask"):

        @dataclass
        class Wrong(TrainTask, NamedInputs):
            fingerprints: dict[str, str] = field(default_factory=dict)
