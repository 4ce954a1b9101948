"""Pretraining replay inside a fine-tune (pipelines/sft/replay.py): windows of the run's tokens join
the conversations as fully trained examples; a run without tokens, or with another tokenizer's, is a
clear error. No Ray: ``train_chat_model`` is stopped where Ray would start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_sft import BYTES, _conversations
from test_sft_train import RayWouldStart, _source, until_ray  # noqa: F401 (a fixture)

from lm.chat import ChatFormat
from lm.train.losses import IGNORE_INDEX
from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.pretrain.data import TokenSplit
from pipelines.sft.config import SFTConfig
from pipelines.sft.data import Examples, render_examples
from pipelines.sft.replay import replay_examples, replay_windows, with_replay
from pipelines.sft.train import train_chat_model
from pipelines.tokenize.shards import ShardWriter, TokenIndex, write_index

SEQ = 64


def _tokens(run: Path, vocab_size: int = BYTES.vocab_size) -> Path:
    """tokens/ as the tokenize stage leaves it: 50 documents of 30 byte tokens in the train split."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, docs in (("train", 50), ("val", 5)):
        writer = ShardWriter(run / "tokens", split, "uint16", 4096, 0)
        for _ in range(docs):
            writer.write(np.array([0, *rng.integers(1, 256, 30)]))
        splits[split] = writer.close()
    index = TokenIndex(
        dtype="uint16", vocab_size=vocab_size, eot_id=0, tokenizer="../tokenizer", splits=splits
    )
    write_index(run / "tokens", index)
    return run / "tokens"


def test_replay_windows_are_whole_rows_of_the_corpus_every_token_trained(tmp_path):
    tokens = _tokens(tmp_path)
    replay = replay_examples(tokens, BYTES.vocab_size, count=7, seq_len=SEQ, seed=3)
    assert len(replay) == 7 and set(replay.lengths) == {SEQ}
    corpus = TokenSplit.open(tokens, "train").read(0, TokenSplit.open(tokens, "train").num_tokens)
    text = corpus.astype(np.int32).tobytes()
    for i in range(len(replay)):
        inputs, targets = replay.example(i)
        assert (targets != IGNORE_INDEX).all()  # every token is a target
        assert (targets[:-1] == inputs[1:]).all()
        window = replay.ids[replay.offsets[i] : replay.offsets[i + 1]]
        assert window.astype(np.int32).tobytes() in text  # a real stretch of the pretraining tokens
    again = replay_examples(tokens, BYTES.vocab_size, count=7, seq_len=SEQ, seed=3)
    other = replay_examples(tokens, BYTES.vocab_size, count=7, seq_len=SEQ, seed=4)
    assert again.fingerprint() == replay.fingerprint() != other.fingerprint()


def test_with_replay_keeps_the_conversations_as_they_were():
    chat_examples = render_examples(_conversations(5), ChatFormat(BYTES), 256)
    replay = Examples(np.arange(2 * 9, dtype=np.int32), np.ones(18, dtype=np.uint8), np.array([0, 9, 18]))
    both = with_replay(chat_examples, replay)
    assert len(both) == len(chat_examples) + 2
    for i in range(len(chat_examples)):
        for got, want in zip(both.example(i), chat_examples.example(i), strict=True):
            assert (got == want).all()
    inputs, targets = both.example(len(chat_examples) + 1)
    assert inputs.tolist() == list(range(9, 17)) and targets.tolist() == list(range(10, 18))
    nothing = Examples(np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(1, np.int64))
    assert with_replay(chat_examples, nothing) is chat_examples
    # the share is of the conversations' tokens, in whole rows
    assert replay_windows(chat_examples, 0.5, SEQ) == round(0.5 * len(chat_examples.ids) / (SEQ + 1))


def test_missing_tokens_or_another_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="run the tokenize stage first"):
        replay_examples(tmp_path / "tokens", BYTES.vocab_size, 3, SEQ, 0)
    tokens = _tokens(tmp_path, vocab_size=4096)
    with pytest.raises(ConfigError, match=f"4096 ids.*uses {BYTES.vocab_size}"):
        replay_examples(tokens, BYTES.vocab_size, 3, SEQ, 0)


def test_a_fine_tune_with_replay_trains_on_conversations_and_pretraining_rows(tmp_path, until_ray):  # noqa: F811
    """The task gets the windows as examples (so packing, order, resume and the fingerprint cover
    them), the validation set stays conversations only, and without tokens the stage says why."""
    run = tmp_path / "run"
    cfg = load_config(None, [f"run_dir={run}"])
    source = _source(tmp_path / "base", 1)
    train, val = _conversations(20), _conversations(3, seed=1)
    settings = SFTConfig(seq_len=SEQ * 4, batch_rows=2, micro_batch_rows=2, max_steps=4)
    with pytest.raises(ConfigError, match="run the tokenize stage first"):
        train_chat_model(
            cfg, "sft", settings.model_copy(update={"pretrain_replay": 1.0}), train, val, "sft", source
        )
    _tokens(run)
    sizes = {}
    for share in (0.0, 1.0):
        with pytest.raises(RayWouldStart):
            train_chat_model(
                cfg, "sft", settings.model_copy(update={"pretrain_replay": share}), train, val, "sft", source
            )
        task = until_ray[-1].task
        sizes[share] = (task.num_examples, Examples.load(task.train_file), Examples.load(task.val_file))
    (plain, plain_train, plain_val), (mixed, mixed_train, mixed_val) = sizes[0.0], sizes[1.0]
    assert plain == len(train) and mixed > plain
    replayed = mixed_train.ids[mixed_train.offsets[plain] :]
    assert (
        abs(len(replayed) - len(plain_train.ids)) <= SEQ * 4 + 1
    )  # about as many tokens as the conversations
    assert mixed_train.mask[mixed_train.offsets[plain] :].all()
    assert mixed_val.fingerprint() == plain_val.fingerprint()


def test_replay_follows_the_sft_seed_even_when_it_is_zero(tmp_path, until_ray):  # noqa: F811
    """``sft.seed: 0`` is a seed, not "unset": the run's seed must not change which windows replay."""
    source = _source(tmp_path / "base", 1)
    train, val = _conversations(20), _conversations(3, seed=1)
    settings = SFTConfig(
        seq_len=SEQ * 4, batch_rows=2, micro_batch_rows=2, max_steps=4, pretrain_replay=1.0, seed=0
    )
    fingerprints = []
    for run_seed in (5, 6):
        run = tmp_path / f"run{run_seed}"
        _tokens(run)
        cfg = load_config(None, [f"run_dir={run}", f"seed={run_seed}"])
        with pytest.raises(RayWouldStart):
            train_chat_model(cfg, "sft", settings, train, val, "sft", source)
        fingerprints.append(Examples.load(until_ray[-1].task.train_file).fingerprint())
    assert fingerprints[0] == fingerprints[1]


def test_the_layout_ablation_never_replays(tmp_path, monkeypatch):
    """The ablation compares layouts step for step on arithmetic alone: replay is off there even when
    sft sets it, so it needs no tokens and its models see only their layout's problems."""
    import json

    from pipelines.run_dir import RunDir
    from pipelines.sft import ablation

    seen: list[SFTConfig] = []

    def capture(cfg, stage, settings, *args, **kwargs):
        seen.append(settings)
        raise RayWouldStart

    monkeypatch.setattr(ablation, "train_chat_model", capture)
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}", "sft.pretrain_replay=0.5"])
    data_dir = tmp_path / "sft_data"
    (data_dir / "ablation").mkdir(parents=True)
    for layout in cfg.sft.ablation.layouts:
        lines = "".join(json.dumps(c) + "\n" for c in _conversations(60))
        (data_dir / "ablation" / f"arithmetic_{layout}.jsonl").write_text(lines)
    with pytest.raises(RayWouldStart):
        ablation.run_ablation(cfg, RunDir(tmp_path / "run"), _source(tmp_path / "base", 1), data_dir)
    assert seen and seen[0].pretrain_replay == 0.0 and cfg.sft.pretrain_replay == 0.5
