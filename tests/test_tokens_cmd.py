"""``raychat tokens``, run as a user runs it (a subprocess), on a pipe and on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def raychat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture(scope="module")
def gpt2(shared_data) -> str:
    return f"gpt2:{shared_data / 'tokenizers' / 'gpt2'}"


def test_plain_output_marks_boundaries_and_prints_ids(gpt2) -> None:
    out = raychat("tokens", "hello deep seek", "--tokenizer", gpt2)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "hello| deep| seek"
    assert lines[1] == "ids: [31373, 2769, 5380]"
    assert lines[2].startswith("3 tokens, 15 characters (gpt2")
    assert "\x1b[" not in out.stdout  # not a terminal: no colour


def test_json_special_tokens_whitespace_and_partial_characters(gpt2) -> None:
    out = raychat("tokens", "-", "--tokenizer", gpt2, "--json", stdin="a|b\n日<|im_end|>")
    record = json.loads(out.stdout)
    assert record["tokenizer"] == "gpt2" and record["count"] == len(record["ids"]) == len(record["tokens"])
    assert (
        "".join(bytes.fromhex(t["bytes"]).decode("latin-1") for t in record["tokens"])
        .encode("latin-1")
        .decode()
        == "a|b\n日<|im_end|>"
    )
    assert not any(t["special"] for t in record["tokens"])  # special-token text is plain text by default
    assert any(t["text"] is None for t in record["tokens"])  # 日 is split inside its UTF-8 bytes
    special = json.loads(
        raychat("tokens", "x<|im_end|>", "--tokenizer", gpt2, "--json", "--allow-special").stdout
    )
    assert special["tokens"][-1] == {
        "id": 50258,
        "text": "<|im_end|>",
        "bytes": b"<|im_end|>".hex(),
        "special": True,
    }
    plain = raychat("tokens", "a|b\\n\n", "--tokenizer", gpt2, "--no-color").stdout.splitlines()[0]
    assert plain == "a|\\||b|\\\\|n|\\n"


def test_model_directory_and_colour_on_a_terminal(tmp_path) -> None:
    from lm.tokenizer import R50K_PATTERN, Tokenizer

    Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)}).save(
        tmp_path / "model", hf=False
    )
    primary, replica = pty.openpty()
    env = os.environ | {"PYTHONPATH": str(REPO)}
    env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "tokens", "hi", "--model", str(tmp_path / "model")],
        stdout=replica,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    os.close(replica)
    shown = os.read(primary, 4096).decode()
    os.close(primary)
    assert proc.returncode == 0
    assert (
        "\x1b[48;5;153m\x1b[38;5;16mh\x1b[0m\x1b[48;5;222m\x1b[38;5;16mi\x1b[0m" in shown
        and "ids: [104, 105]" in shown
    )


def test_errors_are_one_line_and_exit_2(tmp_path) -> None:
    for args, message in [
        (["tokens", "x"], "give --tokenizer SPEC or --model DIR"),
        (["tokens", "x", "--model", str(tmp_path / "nope")], "tokenizer not found"),
        (["tokens", "x", "--tokenizer", f"gpt2:{tmp_path}"], "vocab.bpe not found"),
    ]:
        out = raychat(*args)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.startswith("raychat tokens: ") and message in out.stderr
        assert "Traceback" not in out.stderr
