"""``raychat sample`` against the model's context (the rest of the command is tested in
test_engine_factory.py)."""

from __future__ import annotations

import json

import pytest
from engine_helpers import tiny_model_dir

from pipelines.cli import main

CONTEXT = 64


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("sample_context") / "base", max_seq_len=CONTEXT)


def test_max_tokens_past_the_context_says_where_replies_stop(model_dir, capsys) -> None:
    """A reply cut at the context was silent: it looked like the model's own ending."""
    directory, tok = model_dir
    prompt_tokens = 1 + len(tok.encode("the cat"))  # <|endoftext|> first
    room = CONTEXT - prompt_tokens
    argv = ["sample", "--model", str(directory), "--prompt", "the cat", "-n", "2", "--seed", "1"]
    assert main([*argv, "--max-tokens", "500", "--engine", "torch", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == (
        f"raychat sample: warning: replies stop at {room} tokens, not --max-tokens 500: "
        f"the model's context is {CONTEXT} tokens and the prompt takes {prompt_tokens}\n"
    )
    samples = [json.loads(line) for line in out.splitlines()]
    assert len(samples) == 2 and all(len(s["token_ids"]) <= room for s in samples)
    assert main([*argv, "--max-tokens", str(room), "--engine", "torch"]) == 0  # fits: no warning
    assert capsys.readouterr().err == ""
