"""Model directories: Hugging Face loads our export with identical logits; we load theirs and ours back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lm.checkpoint import CheckpointError, load_pretrained, save_pretrained
from lm.model import ModelConfig, Transformer
from lm.tokenizer import Tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def transformers():
    """Only the tests that compare with Hugging Face need it (a dev extra); the rest run without."""
    return pytest.importorskip("transformers")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared, loaded machine spinning OpenMP
    threads make every small op wait. Restored for other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = dict(vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=160)


def tiny_tokenizer() -> Tokenizer:
    """Byte-level ranks plus a few merges; ids 256.. are merges, the special tokens come after."""
    ranks = {bytes([b]): b for b in range(256)}
    for i, tok in enumerate([b"th", b"he", b"the", b" t", b"in", b"er"]):
        ranks[tok] = 256 + i
    return Tokenizer.from_ranks("tiny", r"""\s?\w+|\s?[^\s\w]+|\s+""", ranks)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    model = Transformer(ModelConfig(**{**TINY, **overrides}))
    model.init_weights(seed)
    return model.eval()


def _compare_with_hf(transformers, model: Transformer, directory: Path) -> float:
    hf = transformers.LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    x = torch.randint(0, model.config.vocab_size, (2, 23), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(x) - hf(input_ids=x).logits).abs().max().item()


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(tie_embeddings=True), dict(num_kv_heads=1, rope_theta=1234.0, rms_norm_eps=1e-6)],
    ids=["gqa", "gqa-tied", "mqa-theta"],
)
def test_transformers_loads_export_with_same_logits(transformers, tmp_path: Path, overrides: dict) -> None:
    model = tiny_model(**overrides)
    out = save_pretrained(model, tmp_path / "m", tokenizer=tiny_tokenizer(), meta={"stage": "test"})
    assert _compare_with_hf(transformers, model, out) < 1e-4


def test_export_layout_and_round_trip(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    model = tiny_model(tie_embeddings=True)
    meta = {"stage": "pretrain", "step": 17, "tokens_seen": 1234, "source_run": "runs/x"}
    out = save_pretrained(model, tmp_path / "models" / "base", tokenizer=tok, meta=meta)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is True
    assert config["eos_token_id"] == tok.eot_id == config["bos_token_id"]
    assert config["torch_dtype"] == "float32"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tok.eot_id
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()  # tied: stored once
    assert load_tokenizer(out).encode("the tin") == tok.encode("the tin")

    loaded, got_meta = load_pretrained(out)
    assert loaded.config == model.config
    assert {k: got_meta[k] for k in meta} == meta and got_meta["created"]
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randint(0, 300, (1, 8))
    assert torch.equal(model(x), loaded(x))
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temp dirs left


def test_save_replaces_existing_dir_and_converts_dtype(tmp_path: Path) -> None:
    out = tmp_path / "m"
    save_pretrained(tiny_model(seed=1), out)
    (out / "stale.txt").write_text("old")
    save_pretrained(tiny_model(seed=2), out, dtype=torch.bfloat16, meta={"step": 2})
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded, meta = load_pretrained(out)
    assert meta["step"] == 2 and loaded.lm_head.weight.dtype == torch.bfloat16
    as32, _ = load_pretrained(out, dtype=torch.float32)
    expected = tiny_model(seed=2).lm_head.weight.to(torch.bfloat16).float()
    assert torch.equal(as32.lm_head.weight, expected)


def test_the_same_model_exported_again_keeps_its_files(tmp_path: Path) -> None:
    """A stage run again exports the same checkpoint again: the folder is left as it was (the same
    ``created``, the same file times), so stored evaluations and fingerprints of runs that start from
    it stay valid. Another step or other weights replace it."""
    import os
    import time

    out, tok = tmp_path / "m", tiny_tokenizer()
    save_pretrained(
        tiny_model(seed=1), out, tokenizer=tok, meta={"step": 5, "created": "2026-01-01T00:00:00Z"}
    )
    times = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    time.sleep(0.01)
    save_pretrained(tiny_model(seed=1), out, tokenizer=tok, meta={"step": 5})
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == times
    assert json.loads((out / "raychat.json").read_text())["created"] == "2026-01-01T00:00:00Z"
    assert not [p for p in tmp_path.iterdir() if p.name != "m"]  # no staged folder left behind
    save_pretrained(
        tiny_model(seed=1), out, tokenizer=tok, meta={"step": 6, "created": "2026-01-02T00:00:00Z"}
    )
    assert json.loads((out / "raychat.json").read_text())["created"] == "2026-01-02T00:00:00Z"  # replaced
    weights = out / "model.safetensors"
    before = weights.read_bytes()
    # other weights with the very same record: a new created time, so raychat.json tells them apart
    save_pretrained(tiny_model(seed=2), out, tokenizer=tok, meta={"step": 6})
    assert weights.read_bytes() != before and os.listdir(tmp_path) == ["m"]
    assert json.loads((out / "raychat.json").read_text())["created"] != "2026-01-02T00:00:00Z"


@pytest.mark.parametrize("shard", [False, True])
def test_imports_checkpoint_made_by_transformers(transformers, tmp_path: Path, shard: bool) -> None:
    cfg = transformers.LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        rope_theta=5000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "hf", max_shard_size="40KB" if shard else "5GB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file() == shard
    ours, meta = load_pretrained(tmp_path / "hf")
    assert meta["imported_from"] == str(tmp_path / "hf")
    assert ours.config.rope_theta == 5000.0 and ours.config.rms_norm_eps == cfg.rms_norm_eps
    x = torch.randint(0, 300, (2, 15))
    with torch.no_grad():
        assert (ours(x) - hf(input_ids=x).logits).abs().max().item() < 1e-4


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(tmp_path / "empty")

    out = save_pretrained(tiny_model(), tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    qwen = {**config, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}
    del qwen["attention_bias"]  # Qwen2 configs do not name it: its q/k/v projections always have biases
    (out / "config.json").write_text(json.dumps(qwen))
    with pytest.raises(CheckpointError, match="biases"):
        load_pretrained(out)
    (out / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_pretrained(out)
    (out / "config.json").write_text(
        json.dumps({**config, "rope_scaling": {"rope_type": "yarn", "factor": 4}, "rope_parameters": None})
    )
    with pytest.raises(CheckpointError, match="yarn"):
        load_pretrained(out)
    (out / "model.safetensors").unlink()
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_pretrained(out)


def test_configs_that_are_llama_in_all_but_name_import_and_an_ambiguous_rope_base_is_refused() -> None:
    """Found by an import test against transformers: a Mistral window at least its context long is full
    attention, ``swish`` is silu (both were refused); a config whose two RoPE bases disagree was read
    with one while transformers 5 reads the other (logits differed without a word)."""
    from lm.checkpoint import config_from_hf

    base = {"model_type": "llama", "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 256}  # fmt: skip
    assert config_from_hf({**base, "model_type": "mistral", "sliding_window": 4096}).max_seq_len == 256
    with pytest.raises(CheckpointError, match="sliding-window attention \\(128 of a 256-token context\\)"):
        config_from_hf({**base, "model_type": "mistral", "sliding_window": 128})
    assert config_from_hf({**base, "hidden_act": "swish"}).hidden_size == 64
    nested = {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    assert config_from_hf({**base, **nested}).rope_theta == 500000.0
    assert config_from_hf({**base, **nested, "rope_theta": 500000}).rope_theta == 500000.0  # ours: both
    with pytest.raises(CheckpointError, match="rope_theta 10000.0 disagrees with rope_parameters.rope_theta"):
        config_from_hf({**base, **nested, "rope_theta": 10000.0})
