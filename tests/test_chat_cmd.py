"""``raychat chat``: a real pseudo-terminal session, a pipe, the session's history and truncation, Ctrl-C,
what the printer shows, and the one-line errors.

The model is a real Transformer scripted to be a bigram model (tests/engine_helpers.py), so its greedy
reply is fixed: "Café" (the "é" split over two byte tokens), a calculator call ``2+3`` and " done.".
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pexpect
import pytest
from engine_helpers import one_thread, scripted_model, word_tokenizer  # noqa: F401

from lm.chat import ChatFormat
from lm.checkpoint import save_pretrained
from lm.engine import SamplingParams, TorchEngine
from lm.tokenizer import ENDOFTEXT, R50K_PATTERN, Tokenizer
from pipelines.chat_cmd import ChatSession, Tools, start_session
from pipelines.chat_render import ReplyPrinter, Style
from pipelines.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
CYAN = "\x1b[36m"


def save_chat_model(directory: Path, tok: Tokenizer, reply: list[int], stage: str = "sft") -> Path:
    """A model whose greedy reply to any prompt is ``reply`` (tool results are injected, not scripted)."""
    chat = ChatFormat(tok)
    header_end = chat.render_prompt([{"role": "user", "content": "x"}]).ids[-1]
    steps = [header_end, *reply]
    model = scripted_model(tok.vocab_size, dict(zip(steps, steps[1:], strict=False)), max_seq_len=256)
    eos = [tok.eot_id, chat.im_end_id]
    return save_pretrained(model, directory, tokenizer=tok, meta={"stage": stage}, eos_token_ids=eos)


@pytest.fixture(scope="module")
def calc_model(tmp_path_factory) -> Path:
    tok = word_tokenizer(["Caf", "done"])
    sp = tok.special_tokens
    reply = [
        *tok.encode("Caf"),
        *"é".encode(),  # two byte tokens: 0xc3 0xa9
        sp["<|calc_start|>"],
        *tok.encode("2+3"),
        sp["<|calc_end|>"],
        sp["<|result_end|>"],  # the last injected token; the model goes on from it
        *tok.encode(" done."),
        sp["<|im_end|>"],
    ]
    assert len(set(reply)) == len(reply)  # a bigram chain must not revisit a token
    return save_chat_model(tmp_path_factory.mktemp("calc") / "model", tok, reply)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    """A run directory: models/sft calls search for "noril clock", world/search_index.jsonl answers."""
    run = tmp_path_factory.mktemp("run")
    tok = word_tokenizer(["Let", "noril", "clock", "ok"])
    sp = tok.special_tokens
    reply = [
        *tok.encode("Let"),
        sp["<|search_start|>"],
        *tok.encode("noril clock"),
        sp["<|search_end|>"],
        sp["<|result_end|>"],
        *tok.encode(" ok"),
        sp["<|im_end|>"],
    ]
    save_chat_model(run / "models" / "sft", tok, reply)
    docs = [
        {"id": "d1", "title": "Noril Clock", "text": "The Noril Clock was invented by Velimir Talwright."},
        {"id": "d2", "title": "Rivmouth", "text": "Rivmouth is a town on the coast."},
        {"id": "d3", "title": "Ashwell Museum", "text": "The Ashwell Museum holds drawings and reports."},
    ]
    (run / "world").mkdir()
    (run / "world" / "search_index.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return run


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "RAYCHAT_HISTORY": str(tmp_path / "history"),
        "TERM": "xterm",
    }
    env.pop("NO_COLOR", None)
    return env


def test_a_terminal_session_streams_marks_tool_calls_keeps_history_and_exits_on_ctrl_d(calc_model, tmp_path):
    child = pexpect.spawn(
        sys.executable,
        [
            *("-m", "pipelines.cli", "chat", "--model", str(calc_model), "--no-search"),
            *("--temperature", "0", "--threads", "1"),
        ],
        cwd=str(REPO),
        env=cli_env(tmp_path),
        encoding="utf-8",
        timeout=90,
        dimensions=(40, 200),
        # started as CI runners and `cmd &` in a script start it: with SIGINT ignored (the chat takes
        # it back on a terminal; without that, the Ctrl-C below was never seen)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        child.expect("tools: calculator on; search off \\(--no-search\\)")
        child.expect("> ")
        child.sendline("what is 2+3?")
        child.expect("Café")  # whole, though its two bytes came as two tokens
        child.expect(re.escape(CYAN + "[calc: 2+3 = 5]"))  # the marker, coloured on a terminal
        child.expect(" done\\.")
        child.expect("tokens/s")
        child.expect("> ")
        child.sendline("and again")
        child.expect(re.escape("[calc: 2+3 = 5]"))
        child.expect("> ")
        child.sendline("/history")
        child.expect("assistant: Café \\[calc: 2\\+3 = 5\\]  ?done\\.")
        child.expect("4 messages")
        child.expect("> ")
        child.sendintr()  # Ctrl-C at the prompt: a hint, the session goes on
        child.expect("Ctrl-D or /quit leaves")
        child.sendline("/reset")
        child.expect("conversation cleared")
        child.sendline("/history")
        child.expect("no messages yet")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert "what is 2+3?" in (tmp_path / "history").read_text()  # readline history, kept for next time


def test_a_pipe_gets_plain_text_and_the_runs_search_index(search_run, tmp_path):
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "chat", "--model", str(search_run / "models" / "sft")],
        input="Who made the Noril Clock?\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        env=cli_env(tmp_path),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        "Let\n"
        '[search: "noril clock"]\n'
        "[result: [1] Noril Clock: The Noril Clock was invented by Velimir Talwright.]\n"
        " ok\n"
    )
    assert "\x1b[" not in out.stdout + out.stderr
    index = search_run / "world" / "search_index.jsonl"
    assert f"tools: calculator on; search on ({index}: 3 passages)" in out.stderr
    assert "Traceback" not in out.stderr


# -- the session in this process ------------------------------------------------------------------------


class RecordingEngine:
    """The engine, with the prompts it was given kept."""

    def __init__(self, engine: TorchEngine) -> None:
        self.engine, self.max_seq_len, self.prompts = engine, engine.max_seq_len, []

    def stream(self, prompts, params, tool_hooks=()):
        self.prompts.append(list(prompts[0]))
        return self.engine.stream(prompts, params, tool_hooks=tool_hooks)


def session_of(model_dir: Path, out, notes, context: int = 256, max_tokens: int = 24) -> ChatSession:
    from lm.tokenizer import load_tokenizer

    engine = RecordingEngine(TorchEngine.from_pretrained(model_dir, max_batch_size=1, max_seq_len=context))
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    tools = Tools(calculator=True, search=None, search_source="off")
    return ChatSession(engine, load_tokenizer(model_dir), params, tools, out=out, notes=notes)


def test_history_is_the_prompt_and_the_oldest_exchanges_are_dropped_when_it_outgrows_the_context(calc_model):
    out, notes = io.StringIO(), io.StringIO()
    session = session_of(calc_model, out, notes, context=140)
    chat = session.chat
    session.handle("what is 2+3?\n")
    assert session.messages == [
        {"role": "user", "content": "what is 2+3?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Café"},
                {"type": "calc", "expression": "2+3", "result": "5"},
                {"type": "text", "text": " done."},
            ],
        },
    ]
    assert out.getvalue() == "Café\n[calc: 2+3 = 5]\n done.\n"
    assert session.conversation()[0] == {"role": "system", "content": "You can use the calculator."}
    first = list(session.messages)
    session.handle("again")
    # the second prompt is the whole conversation: the first exchange, tool result included
    assert (
        session.engine.prompts[1]
        == chat.render_prompt([session.conversation()[0], *first, {"role": "user", "content": "again"}]).ids
    )
    assert "context full" not in notes.getvalue()
    for turn in range(3, 8):
        session.handle(f"question {turn}")
        if "context full" in notes.getvalue():
            break
    assert "[context full: the oldest 2 messages no longer fit in 116 prompt tokens and were dropped]" in (
        notes.getvalue()
    )
    assert session.messages[0] == {"role": "user", "content": "again"}  # dropped from the history too
    assert all(len(p) <= 116 for p in session.engine.prompts)

    session.handle("/system Be brief.")
    assert session.system_text() == "Be brief.\nYou can use the calculator."
    session.handle("/system -")
    assert session.system_text() == "You can use the calculator."
    session.handle("/reset")
    assert session.messages == []
    session.handle("/nope")
    assert "unknown command /nope" in out.getvalue()
    assert session.handle("/quit") is False


class InterruptOnFirstWrite(io.StringIO):
    """Output that presses Ctrl-C (a real SIGINT to this process) when the reply's first text arrives."""

    armed = True

    def write(self, text: str) -> int:
        if self.armed and text:
            self.armed = False
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(text)


def test_ctrl_c_stops_the_reply_and_the_session_goes_on(calc_model):
    out, notes = InterruptOnFirstWrite(), io.StringIO()
    session = session_of(calc_model, out, notes)
    previous = signal.getsignal(signal.SIGINT)
    session.handle("what is 2+3?")
    assert signal.getsignal(signal.SIGINT) is previous  # restored after the reply
    assert "[stopped]" in notes.getvalue()
    assert out.getvalue().startswith("Caf") and "done" not in out.getvalue()
    assert session.messages[-1]["role"] == "assistant" and "done" not in str(session.messages[-1])
    session.handle("again")  # the engine is clean: the next reply is whole
    assert session.messages[-1]["content"][-1] == {"type": "text", "text": " done."}
    assert len(session.messages) == 4


def test_the_printer_decodes_split_characters_and_marks_every_kind_of_call() -> None:
    tok = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})
    sp = tok.special_tokens
    chat = ChatFormat(tok)

    def shown(ids: list[int], color: bool = False) -> str:
        out = io.StringIO()
        printer = ReplyPrinter(tok, chat.special_ids, out, Style(color))
        for t in ids:
            printer.feed(t)
        printer.finish()
        return out.getvalue()

    def call(kind: str, text: str, result: str | None) -> list[int]:
        ids = [sp[f"<|{kind}_start|>"], *tok.encode(text), sp[f"<|{kind}_end|>"]]
        if result is not None:
            ids += [sp["<|result_start|>"], *tok.encode(result), sp["<|result_end|>"]]
        return ids

    assert shown(list("日本 ok".encode())) == "日本 ok\n"
    assert shown([*b"a", tok.vocab_size + 3, *b"b"]) == "a\ufffdb\n"
    assert shown([*tok.encode("x"), *call("calc", "1/0", "error: division by zero")]) == (
        "x\n[calc: 1/0 -> error: division by zero]\n"
    )
    assert shown(call("search", "a b", "[1] A: one\n[2] B: two") + tok.encode("y")) == (
        '[search: "a b"]\n[result: [1] A: one\n         [2] B: two]\ny\n'
    )
    assert shown(call("calc", "2*", None)[:-1]) == "[calc: 2* (not closed)]\n"  # stopped inside a call
    assert shown([sp["<|im_start|>"], *tok.encode("z"), sp["<|im_end|>"]]) == "z\n"  # control tokens unshown
    coloured = shown(call("search", "q", "r"), color=True)
    assert coloured == f'{CYAN}[search: "q"]\x1b[0m\n\x1b[2m[result: r]\x1b[0m\n'


# -- starting up, and the one-line errors ---------------------------------------------------------------


def chat_args(*argv: str):
    return build_parser(["chat"]).parse_args(["chat", *argv])


def test_a_base_model_is_chatted_with_after_a_warning(calc_model, tmp_path) -> None:
    base = tmp_path / "base"
    shutil.copytree(calc_model, base)
    meta = json.loads((base / "raychat.json").read_text())
    (base / "raychat.json").write_text(json.dumps(meta | {"stage": "pretrain"}))
    out, notes = io.StringIO(), io.StringIO()
    session = start_session(chat_args("--model", str(base), "--temperature", "0"), out, notes)
    assert "is a base model (stage pretrain)" in notes.getvalue()
    assert "search off (no index beside the model" in notes.getvalue()
    assert f"raychat chat: {base} (stage pretrain, " in notes.getvalue()
    session.handle("hi")
    assert "[calc: 2+3 = 5]" in out.getvalue()


def test_errors_are_one_line_and_exit_2(calc_model, tmp_path, capsys) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(calc_model, corrupt)
    (corrupt / "config.json").write_text("{not json")
    no_chat = tmp_path / "no_chat_tokens"
    shutil.copytree(calc_model, no_chat)
    ranks = {bytes([b]): b for b in range(256)}
    Tokenizer.from_ranks("plain", R50K_PATTERN, ranks, special_tokens=[ENDOFTEXT]).save(no_chat, hf=False)
    (tmp_path / "empty").mkdir()
    model = str(calc_model)
    cases = [
        (["--model", str(tmp_path / "nope")], "does not exist"),
        (["--model", str(tmp_path / "empty")], "has no config.json"),
        (["--model", str(corrupt)], "config.json"),
        (["--model", str(no_chat)], "lacks the chat format's special tokens"),
        (["--model", model, "--max-tokens", "256"], "leaves no room for a prompt"),
        (["--model", model, "--temperature", "-1"], "bad sampling settings: --temperature:"),
        (["--model", model, "--threads", "0"], "--threads must be at least 1"),
        (["--model", model, "--search-index", str(tmp_path / "empty")], "holds no saved search index"),
        (["--model", model, "--search-corpus", str(tmp_path / "missing.jsonl")], "no such file"),
    ]
    for argv, message in cases:
        assert main(["chat", *argv]) == 2, argv
        captured = capsys.readouterr()
        *before, error = captured.err.splitlines()  # before: progress ("search: indexing ...")
        assert captured.out == "" and error.startswith("raychat chat: ") and message in error, captured.err
        assert not any(line.startswith(("raychat", "Traceback", " ")) for line in before), captured.err
