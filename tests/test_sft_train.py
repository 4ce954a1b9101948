"""``train_chat_model`` up to the point where Ray would start: what it says on the console about the
conversations it left out, and about old checkpoints that no longer fit. No Ray, no training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_sft import BYTES, _conversations

from lm.model import ModelConfig
from pipelines.config import load_config
from pipelines.console import ConsoleHandler
from pipelines.sft.config import SFTConfig
from pipelines.sft.data import TOO_LONG
from pipelines.sft.train import ChatModelSource, train_chat_model
from pipelines.train import driver
from pipelines.train.loop import FitSpec, checkpoint_meta, incompatibilities

SFT = SFTConfig(seq_len=256, batch_rows=2, micro_batch_rows=2, max_steps=4)
CONFIG = ModelConfig(
    vocab_size=BYTES.vocab_size, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
    intermediate_size=64, max_seq_len=256,
)  # fmt: skip
TOO_LONG_CONVERSATION = {
    "messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y"}]
}


class RayWouldStart(Exception):
    """Raised where ``fit`` would start Ray: all that comes before it (rendering, the checks of old
    checkpoints) has been done."""


@pytest.fixture
def until_ray(monkeypatch) -> list[FitSpec]:
    """The specs ``fit`` was given; each call stops where Ray would start."""
    specs: list[FitSpec] = []
    real_check = driver.check_resumable

    def check(spec: FitSpec) -> None:
        specs.append(spec)
        real_check(spec)

    def no_ray(*_) -> None:
        raise RayWouldStart

    monkeypatch.setattr(driver, "check_resumable", check)
    monkeypatch.setattr(driver, "init_ray", no_ray)
    return specs


def _source(directory: Path, version: int) -> ChatModelSource:
    """An init model as far as its fingerprint goes (config.json and raychat.json; no weights needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(CONFIG.model_dump()))
    (directory / "raychat.json").write_text(json.dumps({"pretrained": version}))
    return ChatModelSource(directory, BYTES, CONFIG)


def _train(tmp_path: Path, source: ChatModelSource, train: list, val: list) -> None:
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(RayWouldStart):
        train_chat_model(cfg, "sft", SFT, train, val, "sft", source)


def test_skipped_conversations_are_one_warning_for_training_and_validation(tmp_path, until_ray, caplog):
    """Training and validation are rendered apart; what both left out is said once, with the reasons."""
    train = [*_conversations(6), TOO_LONG_CONVERSATION, {"messages": "not a list"}]
    val = [*_conversations(2, seed=1), TOO_LONG_CONVERSATION]
    caplog.set_level(logging.INFO)
    _train(tmp_path, _source(tmp_path / "base", 1), train, val)
    on_console = [r.getMessage() for r in caplog.records if ConsoleHandler().shows(r)]
    said = [m for m in on_console if "skipped" in m]
    assert len(said) == 1, said
    message = said[0]
    assert message.startswith(
        f"sft: 3 of 11 conversations skipped (2 training, 1 validation): {TOO_LONG} (2); "
    )
    assert "malformed: " in message and message.endswith(" (1)")


def test_old_checkpoints_are_set_aside_naming_the_input_that_changed(tmp_path, until_ray, caplog):
    """A re-pretrained init model with the same conversations is the initial model changing, not the
    data; new conversations with the same model are the data; the workers' backstop says the same."""
    source = _source(tmp_path / "base", 1)
    train, val = _conversations(8), _conversations(2, seed=1)
    caplog.set_level(logging.INFO)
    for change, expected in (("model", "the initial model"), ("data", "the training data")):
        _train(tmp_path, source, train, val)
        before = until_ray[-1]
        latest = before.storage / "checkpoint_step0000001"
        latest.mkdir(parents=True)
        meta = checkpoint_meta(before, step=1, position=2, world_size=1, last={}, tokens_per_s=None)
        (latest / "meta.json").write_text(json.dumps(meta))
        if change == "model":
            source = _source(tmp_path / "base", 2)
        else:
            train = _conversations(9)
        caplog.clear()
        _train(tmp_path, source, train, val)
        after = until_ray[-1]
        said = [r.getMessage() for r in caplog.records if ConsoleHandler().shows(r)]
        assert len(said) == 1 and said[0].startswith(
            f"sft: {expected} changed since they were written: moved"
        )
        assert incompatibilities(meta, after.task) == [f"{expected} changed since it was written"]
        older = {k: v for k, v in meta.items() if k != "input_fingerprints"}  # before inputs had names
        assert incompatibilities(older, after.task) == [
            "the training data, the validation data or the initial model changed since it was written"
        ]
        assert not latest.exists()  # set aside: the run starts from step 0
