"""Choosing an engine (``make_engine``), vLLM's parameter and weight-name mapping (testable without
vLLM; vLLM itself runs in tests/test_vllm_gpu.py on a GPU), and ``raychat sample``."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import tiny_model_dir

from lm.engine import SamplingParams, TorchEngine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("sample") / "base")


def test_make_engine_choices(model_dir, monkeypatch) -> None:
    import importlib.util

    from lm.engine import VLLMUnavailable, factory, make_engine, vllm_engine

    directory, tok = model_dir
    engine = make_engine(directory, prefer="torch")
    assert isinstance(engine, TorchEngine) and engine.eos_token_ids == (tok.eot_id,)
    with pytest.raises(ValueError, match="prefer"):
        make_engine(directory, prefer="fast")
    with pytest.raises(VLLMUnavailable, match="default CUDA device"):
        make_engine(directory, prefer="vllm", device="cpu")
    assert isinstance(make_engine(directory, device=torch.device("cpu")), TorchEngine)

    # each machine the factory can meet, made explicit, so every branch runs on every machine
    real_find_spec = importlib.util.find_spec
    installed = {"vllm": False}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            (object() if installed["vllm"] else None) if name == "vllm" else real_find_spec(name, *a)
        ),
    )
    gpu = {"present": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu["present"])
    # no vLLM: "auto" falls back to ours, "vllm" says how to install it
    assert not factory.vllm_available() and isinstance(make_engine(directory), TorchEngine)
    with pytest.raises(VLLMUnavailable, match=r"pip install -e '\.\[gpu\]'.*TorchEngine"):
        make_engine(directory, prefer="vllm")
    # vLLM but no GPU: the same fallback, and an error naming the missing GPU
    installed["vllm"] = True
    assert not factory.vllm_available() and isinstance(make_engine(directory), TorchEngine)
    with pytest.raises(VLLMUnavailable, match="needs a CUDA GPU"):
        make_engine(directory, prefer="vllm")
    # vLLM and a GPU: "auto" builds VLLMEngine with the caller's arguments
    gpu["present"] = True
    built = []
    monkeypatch.setattr(vllm_engine, "VLLMEngine", lambda *a, **kw: built.append((a, kw)) or "vllm-engine")
    assert factory.vllm_available()
    assert make_engine(directory, max_batch_size=8, seed=3) == "vllm-engine"
    assert built == [((directory,), {"max_batch_size": 8, "seed": 3})]


def test_vllm_weight_names_come_from_the_checkpoint(model_dir) -> None:
    from lm.checkpoint import load_pretrained
    from lm.engine.base import check_weights
    from lm.engine.vllm_engine import checkpoint_weight_shapes

    directory, _ = model_dir
    shapes = checkpoint_weight_shapes(directory)
    model, _ = load_pretrained(directory)
    state = model.state_dict()
    assert shapes == {k: tuple(v.shape) for k, v in state.items()}  # a learner's state_dict fits
    assert [n for n, _ in check_weights(state, shapes)] == list(state)
    with pytest.raises(ValueError, match="is not one of the model's"):
        check_weights({"model.layers.0.mlp.w1": torch.zeros(2)}, shapes)
    with pytest.raises(ValueError, match="has shape"):
        check_weights([("lm_head.weight", torch.zeros(3, 3))], shapes)


def test_vllm_sampling_params_mapping() -> None:
    from lm.engine.vllm_engine import vllm_sampling_kwargs

    p = SamplingParams(
        temperature=0.5, top_k=0, top_p=0.9, max_tokens=20, stop_token_ids=[7], seed=3, logprobs=True, n=4
    )
    kw = vllm_sampling_kwargs(p, eos_token_ids=[1], tool_close_ids=[9], max_tokens=12)
    assert kw["stop_token_ids"] == [1, 7, 9] and kw["top_k"] == 0 and kw["max_tokens"] == 12
    assert kw["logprobs"] == 0 and kw["detokenize"] is False and kw["seed"] == 3 and kw["n"] == 4
    assert kw["ignore_eos"] is True  # vLLM knows no EOS without a tokenizer: ours are stop tokens
    no_eos = vllm_sampling_kwargs(p.model_copy(update={"ignore_eos": True, "logprobs": False}), [1], [])
    assert no_eos["stop_token_ids"] == [7] and no_eos["logprobs"] is None and no_eos["max_tokens"] == 20
    again = vllm_sampling_kwargs(p, [1], [], max_tokens=5, n=1, seed=1_000_007)  # a resubmitted round
    assert (again["n"], again["seed"], again["max_tokens"]) == (1, 1_000_007, 5)
    assert vllm_sampling_kwargs(p.model_copy(update={"top_k": 40}), [], [])["top_k"] == 40


def _sample_cli(argv: list[str]) -> int:
    import argparse

    from pipelines.sample import add_sample_args, main_sample

    parser = argparse.ArgumentParser()
    add_sample_args(parser)
    return main_sample(parser.parse_args(argv))


def test_sample_cli_json(model_dir, capsys) -> None:
    import json

    directory, tok = model_dir
    argv = [
        "--model",
        str(directory),
        "--prompt",
        "the cat",
        "-n",
        "3",
        "--max-tokens",
        "7",
        "--seed",
        "5",
        "--json",
    ]
    assert _sample_cli(argv + ["--engine", "torch"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert 1 <= len(line["token_ids"]) <= 7 and line["prompt"] == "the cat"
        shown = line["token_ids"][:-1] if line["finish_reason"] == "stop" else line["token_ids"]
        assert line["text"] == tok.decode(shown)
    assert len({tuple(line["token_ids"]) for line in lines}) > 1  # different seeds, varied samples
    assert _sample_cli(argv + ["--engine", "torch"]) == 0  # the same seed reproduces them
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == lines


def test_sample_decodes_ids_past_the_tokenizer(model_dir) -> None:
    from pipelines.sample import _decode

    _, tok = model_dir
    ids = tok.encode("the cat")
    assert _decode(tok, ids) == "the cat"
    assert _decode(tok, ids[:1] + [tok.vocab_size + 3] + ids[1:]) == tok.decode(
        ids[:1]
    ) + "\ufffd" + tok.decode(ids[1:])


def test_sample_cli_errors(tmp_path, model_dir, capsys) -> None:
    assert _sample_cli(["--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    directory, _ = model_dir
    assert _sample_cli(["--model", str(directory), "--top-p", "0", "--engine", "torch"]) == 2
    assert "bad sampling settings" in capsys.readouterr().err


def test_sample_cli_bad_settings_and_devices_are_one_line(model_dir, capsys) -> None:
    import torch

    directory, _ = model_dir
    base = ["--model", str(directory), "--engine", "torch", "-n", "1", "--max-tokens", "2"]
    assert _sample_cli(base + ["--temperature", "-1", "--top-p", "5", "--top-k", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pydantic" not in err, err
    assert err.startswith("raychat sample: bad sampling settings: --temperature: ")
    assert "--top-p: " in err and "--top-k: " in err
    bad_devices = ["banana", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad_devices:  # was a torch traceback (RuntimeError / AssertionError), exit 1
        assert _sample_cli(base + ["--device", device]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"raychat sample: --device {device}: ") and err.count("\n") == 1, err
    assert _sample_cli(base + ["--device", "cpu"]) == 0
