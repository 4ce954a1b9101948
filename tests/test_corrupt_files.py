"""A corrupt, truncated or non-UTF-8 tokenizer or model file: an error naming the file, never a traceback.

Every file a tokenizer or model directory holds is damaged in several ways and loaded through the
library (``load_tokenizer``, ``load_pretrained``, the engines' EOS lookup) and through each command
that loads one: ``raychat tokenize`` (``tokenize.tokenizer``), ``raychat pretrain`` (the run's
tokenizer) and ``raychat sample --model``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_checkpoint import tiny_model, tiny_tokenizer  # the same tiny model and tokenizer

from lm.checkpoint import CheckpointError, check_model_files, eos_token_ids, load_pretrained, save_pretrained
from lm.tokenizer import TokenizerError, load_tokenizer

REPO = Path(__file__).resolve().parents[1]

# Ways a file arrives damaged. Each takes the good bytes and returns the bad ones.
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "not-utf8": lambda data: data[:12] + b"\xff\xfe\x80" + data[12:],
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "binary": lambda data: bytes(range(256)) * 4,
}
JSON_CORRUPTIONS = {**CORRUPTIONS, "json-list": lambda data: b'["not", "an", "object"]'}

MODEL_FILES = ["config.json", "generation_config.json", "raychat.json", "model.safetensors"]
TOKENIZER_FILES = ["raychat_tokenizer.json", "tokenizer.tiktoken"]


def _cases(files: list[str]) -> list[tuple[str, str]]:
    return [
        (name, how) for name in files for how in (JSON_CORRUPTIONS if name.endswith(".json") else CORRUPTIONS)
    ]


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return save_pretrained(
        tiny_model(), tmp_path_factory.mktemp("good") / "model", tokenizer=tiny_tokenizer()
    )


def _damaged_copy(good: Path, where: Path, name: str, how: str) -> Path:
    """A copy of the directory ``good`` whose file ``name`` is damaged ``how``; returns that file."""
    shutil.copytree(good, where)
    target = where / name
    if how == "directory":
        target.unlink()
        target.mkdir()
    else:
        target.write_bytes(JSON_CORRUPTIONS[how](target.read_bytes()))
    return target


def _one_line_error(err: str) -> str:
    """The error a command printed: its last stderr line, with no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing was printed to stderr"
    return lines[-1]


# -- the library ----------------------------------------------------------------------------------


def test_the_undamaged_directories_load(good_model: Path) -> None:
    """The control: every test below damages one file of this directory."""
    model, meta = load_pretrained(good_model)
    assert meta["format"] == "raychat-model-v1" and model.config == tiny_model().config
    assert load_tokenizer(good_model).encode("the th") == tiny_tokenizer().encode("the th")
    assert eos_token_ids(good_model) == [tiny_tokenizer().eot_id]
    check_model_files(good_model)


@pytest.mark.parametrize(("name", "how"), [*_cases(MODEL_FILES), *[(n, "directory") for n in MODEL_FILES]])
def test_load_pretrained_names_the_damaged_file(
    good_model: Path, tmp_path: Path, name: str, how: str
) -> None:
    bad = _damaged_copy(good_model, tmp_path / "m", name, how)
    with pytest.raises(CheckpointError) as caught:
        load_pretrained(tmp_path / "m")
    assert str(bad) in str(caught.value)
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        check_model_files(tmp_path / "m")  # what the vLLM engine checks before vLLM reads the directory


@pytest.mark.parametrize(("name", "how"), _cases(["generation_config.json", "config.json"]))
def test_eos_lookup_of_the_engines_names_the_damaged_file(
    good_model: Path, tmp_path: Path, name: str, how: str
) -> None:
    from lm.engine import eos_token_ids_of

    bad = _damaged_copy(good_model, tmp_path / "m", name, how)
    if name == "config.json":  # read only when generation_config.json names no EOS
        (tmp_path / "m" / "generation_config.json").unlink()
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        eos_token_ids_of(tmp_path / "m")


def test_an_eos_id_that_is_not_a_token_id_is_refused(good_model: Path, tmp_path: Path) -> None:
    shutil.copytree(good_model, tmp_path / "m")
    path = tmp_path / "m" / "generation_config.json"
    path.write_text(json.dumps({"eos_token_id": "<|endoftext|>"}))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: eos_token_id must be a token id")):
        load_pretrained(tmp_path / "m")


def test_the_vllm_engine_checks_the_directory_before_anything_else(good_model: Path, tmp_path: Path) -> None:
    from lm.engine import VLLMEngine

    bad = _damaged_copy(good_model, tmp_path / "m", "model.safetensors", "truncated")
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        VLLMEngine(tmp_path / "m")  # refused by name even where vLLM or a GPU is missing


def _shard(good: Path, where: Path) -> list[Path]:
    """The model split into two safetensors files with an index, as Hugging Face shards big models."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(good, where)
    tensors = load_file(str(where / "model.safetensors"))
    (where / "model.safetensors").unlink()
    keys = sorted(tensors)
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    for name, part in zip(names, halves, strict=True):
        save_file({k: tensors[k] for k in part}, str(where / name), metadata={"format": "pt"})
    weight_map = {k: name for name, part in zip(names, halves, strict=True) for k in part}
    (where / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return [where / n for n in names]


@pytest.mark.parametrize("how", ["truncated", "not-utf8", "json-list"])
def test_a_sharded_model_names_its_damaged_index_or_shard(good_model: Path, tmp_path: Path, how: str) -> None:
    shards = _shard(good_model, tmp_path / "sharded")
    model, _ = load_pretrained(tmp_path / "sharded")  # the control: undamaged, it loads
    expected, _ = load_pretrained(good_model)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), expected.parameters(), strict=True))

    index = tmp_path / "sharded" / "model.safetensors.index.json"
    good_index = index.read_bytes()
    index.write_bytes(JSON_CORRUPTIONS[how](good_index))
    with pytest.raises(CheckpointError, match=re.escape(str(index))):
        load_pretrained(tmp_path / "sharded")
    index.write_bytes(good_index)
    if how != "json-list":
        shards[1].write_bytes(CORRUPTIONS[how](shards[1].read_bytes()))
        with pytest.raises(CheckpointError, match=re.escape(str(shards[1]))):
            load_pretrained(tmp_path / "sharded")


@pytest.mark.parametrize(
    ("name", "how"), [*_cases(TOKENIZER_FILES), *[(n, "directory") for n in TOKENIZER_FILES]]
)
def test_load_tokenizer_names_the_damaged_file(good_model: Path, tmp_path: Path, name: str, how: str) -> None:
    bad = _damaged_copy(good_model, tmp_path / "m", name, how)
    with pytest.raises(TokenizerError) as caught:
        load_tokenizer(tmp_path / "m")
    assert str(bad) in str(caught.value)


@pytest.mark.parametrize("cut", ["last-line", "a-single-byte-line"])
def test_ranks_cut_at_a_line_boundary_are_refused(good_model: Path, tmp_path: Path, cut: str) -> None:
    """Lines lost whole still parse: only checking the ranks against raychat_tokenizer.json sees it."""
    shutil.copytree(good_model, tmp_path / "m")
    ranks = tmp_path / "m" / "tokenizer.tiktoken"
    lines = ranks.read_bytes().splitlines(keepends=True)
    kept = lines[:-1] if cut == "last-line" else lines[:100] + lines[101:]
    ranks.write_bytes(b"".join(kept))
    with pytest.raises(
        TokenizerError, match=re.escape(str(ranks)) + ": .*(ranks end at|single bytes have no rank)"
    ):
        load_tokenizer(tmp_path / "m")


@pytest.mark.parametrize(
    ("name", "how"),
    [("vocab.bpe", "not-utf8"), ("vocab.bpe", "binary"), ("encoder.json", "not-utf8")]
    + [("encoder.json", h) for h in ("truncated", "empty", "json-list")],
)
def test_gpt2_files_are_named_when_damaged(shared_data: Path, tmp_path: Path, name: str, how: str) -> None:
    bad = _damaged_copy(shared_data / "tokenizers" / "gpt2", tmp_path / "gpt2", name, how)
    with pytest.raises(TokenizerError, match=re.escape(str(bad))):
        load_tokenizer(f"gpt2:{tmp_path / 'gpt2'}")


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_tiktoken_file_is_named_when_damaged(good_model: Path, tmp_path: Path, how: str) -> None:
    bad = tmp_path / "mine.tiktoken"
    bad.write_bytes(CORRUPTIONS[how]((good_model / "tokenizer.tiktoken").read_bytes()))
    with pytest.raises(TokenizerError, match=re.escape(str(bad))):
        load_tokenizer(f"tiktoken:{bad}")


# -- the commands ---------------------------------------------------------------------------------


def _raychat(argv: list[str], capsys) -> tuple[int, str]:
    from pipelines.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


@pytest.fixture()
def no_ray(monkeypatch):
    """The commands fail before any Ray work; starting a local cluster first would only cost time."""
    import pipelines.cli

    monkeypatch.setattr(pipelines.cli, "init_ray", lambda cfg: None)


@pytest.mark.parametrize(
    ("name", "how"),
    [
        ("config.json", "not-utf8"),
        ("config.json", "truncated"),
        ("generation_config.json", "not-utf8"),
        ("generation_config.json", "json-list"),
        ("raychat.json", "not-utf8"),
        ("model.safetensors", "truncated"),
        ("model.safetensors", "binary"),
        ("raychat_tokenizer.json", "not-utf8"),
        ("raychat_tokenizer.json", "truncated"),
        ("tokenizer.tiktoken", "truncated"),
        ("tokenizer.tiktoken", "binary"),
    ],
)
def test_sample_command_names_the_damaged_file(
    good_model: Path, tmp_path: Path, capsys, name: str, how: str
) -> None:
    bad = _damaged_copy(good_model, tmp_path / "m", name, how)
    argv = ["sample", "--model", str(tmp_path / "m"), "-n", "1", "--max-tokens", "2", "--engine", "torch"]
    code, err = _raychat(argv, capsys)
    line = _one_line_error(err)
    assert code == 2 and line.startswith("raychat sample: ") and str(bad) in line, err


def test_sample_command_undamaged_is_the_control(good_model: Path, capsys) -> None:
    argv = ["sample", "--model", str(good_model), "-n", "1", "--max-tokens", "2", "--engine", "torch"]
    code, _ = _raychat([*argv, "--seed", "1"], capsys)
    assert code == 0


def test_sample_process_exits_2_with_one_line(good_model: Path, tmp_path: Path) -> None:
    """The whole process, as a user runs it: exit status 2, one line on stderr, no traceback."""
    bad = _damaged_copy(good_model, tmp_path / "m", "model.safetensors", "truncated")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "sample",
            "--model",
            str(tmp_path / "m"),
            "--engine",
            "torch",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert _one_line_error(proc.stderr) == (
        f"raychat sample: {bad}: not a readable safetensors file (Error while deserializing header: "
        "incomplete metadata, file not fully covered); the file is corrupt"
    )
    assert proc.stdout == ""


def _clean_run(run: Path) -> None:
    """A run whose clean stage wrote one small parquet file, the tokenize stage's input."""
    clean = run / "data" / "clean" / "language=en"
    clean.mkdir(parents=True)
    texts = [f"the thing number {i} is there" for i in range(20)]
    pq.write_table(
        pa.table(
            {"text": texts, "id": [f"d{i}" for i in range(20)], "token_count": pa.nulls(20, pa.int64())}
        ),
        clean / "part-0.parquet",
    )


@pytest.mark.parametrize(
    ("name", "how"),
    [
        ("raychat_tokenizer.json", "not-utf8"),
        ("raychat_tokenizer.json", "empty"),
        ("raychat_tokenizer.json", "directory"),
        ("tokenizer.tiktoken", "truncated"),
        ("tokenizer.tiktoken", "not-utf8"),
    ],
)
def test_tokenize_command_names_the_damaged_tokenizer_file(
    good_model: Path, tmp_path: Path, capsys, no_ray, name: str, how: str
) -> None:
    _clean_run(tmp_path / "run")
    bad = _damaged_copy(good_model, tmp_path / "tok", name, how)
    code, err = _raychat(
        ["tokenize", "--run-dir", str(tmp_path / "run"), "--tokenizer", str(tmp_path / "tok")], capsys
    )
    line = _one_line_error(err)
    assert code == 2 and line.startswith("raychat: tokenize.tokenizer: ") and str(bad) in line, err
    assert not (tmp_path / "run" / "tokens").exists()  # nothing was written from a bad tokenizer


def test_tokenize_command_names_a_damaged_gpt2_file(
    shared_data: Path, tmp_path: Path, capsys, no_ray
) -> None:
    _clean_run(tmp_path / "run")
    bad = _damaged_copy(shared_data / "tokenizers" / "gpt2", tmp_path / "gpt2", "encoder.json", "not-utf8")
    argv = ["tokenize", "--run-dir", str(tmp_path / "run"), "--tokenizer", f"gpt2:{tmp_path / 'gpt2'}"]
    code, err = _raychat(argv, capsys)
    assert code == 2 and str(bad) in _one_line_error(err), err


def _token_run(run: Path, good_model: Path) -> Path:
    """A run as the tokenize stage leaves it: tokenizer/ and tokens/ with a train and a val split."""
    from pipelines.tokenize.shards import ShardWriter, TokenIndex, write_index

    tok = load_tokenizer(good_model)
    tok.save(run / "tokenizer", hf=False)
    rng = np.random.default_rng(0)
    splits = {}
    for split, docs in (("train", 200), ("val", 40)):
        writer = ShardWriter(run / "tokens", split, "uint16", 4096, tok.eot_id)
        for _ in range(docs):
            writer.write(np.array([tok.eot_id, *rng.integers(0, 256, 40)]))
        splits[split] = writer.close()
    index = TokenIndex(
        dtype="uint16", vocab_size=tok.vocab_size, eot_id=tok.eot_id, tokenizer="../tokenizer", splits=splits
    )
    write_index(run / "tokens", index)
    return run / "tokenizer"


@pytest.mark.parametrize(
    ("name", "how"),
    [
        ("raychat_tokenizer.json", "not-utf8"),
        ("raychat_tokenizer.json", "json-list"),
        ("tokenizer.tiktoken", "truncated"),
        ("tokenizer.tiktoken", "binary"),
    ],
)
def test_pretrain_command_names_the_damaged_tokenizer_file(
    good_model: Path, tmp_path: Path, capsys, no_ray, name: str, how: str
) -> None:
    run = tmp_path / "run"
    tokenizer_dir = _token_run(run, good_model)
    from pipelines.config import load_config
    from pipelines.pretrain.job import prepare

    prepare(load_config(None, [f"run_dir={run}"]))  # the control: undamaged, the run is ready to train
    target = tokenizer_dir / name
    target.write_bytes(JSON_CORRUPTIONS[how](target.read_bytes()))
    code, err = _raychat(["pretrain", "--run-dir", str(run), "--max-steps", "1"], capsys)
    line = _one_line_error(err)
    assert code == 2 and line.startswith("raychat: pretrain: ") and str(target.resolve()) in line, err
    assert not (run / "checkpoints").exists() and not (run / "models").exists()
