"""``raychat eval``'s tasks, verdicts, records and errors, without Ray (the runs through an engine actor
are in test_sft_stages.py, the runs against a server in test_serving_api.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lm.engine import SamplingParams
from pipelines.cli import main
from pipelines.errors import ConfigError
from pipelines.evaluation.report import ks_for, record, report_section
from pipelines.evaluation.tasks import load_task
from pipelines.run_dir import RunDir, read_summary

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def _qa_file(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"}),
        "{not json",
        json.dumps({"question": "What is 10 * 10?", "answer": "#### 100"}),
        json.dumps({"question": "", "answer": "#### 1"}),  # no question
        json.dumps(["a", "list"]),
        "",
        json.dumps({"question": "How many legs has a cat?", "answer": "4"}),
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_qa_file_keeps_good_rows_counts_bad_ones_and_judges_by_the_reward(tmp_path):
    task = load_task("jsonl", data=str(_qa_file(tmp_path)), system="Answer briefly.")
    assert [i.reference for i in task.items] == ["2 + 3 = 5\n#### 5", "#### 100", "4"]
    assert task.notes["unreadable_lines"] == 2 and task.notes["incomplete_rows"] == 1
    assert task.items[0].messages == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    first, second, third = task.items
    assert task.judge(first, "2 and 3 make 5.\n#### 5")
    assert not task.judge(first, "#### 6")
    assert task.judge(second, "The answer is <answer>100</answer>")
    assert task.judge(third, "A cat has 4 legs.")
    assert not task.judge(third, "I don't know.")
    assert len(load_task("jsonl", data=str(_qa_file(tmp_path)), limit=2).items) == 2


def test_gsm8k_train_answers_are_right_and_other_numbers_wrong():
    if not GSM8K.is_file():
        pytest.skip(f"no shared data dir: {GSM8K} (GSM8K train) is not beside the checkout")
    task = load_task("gsm8k", data=str(GSM8K), limit=50)
    assert len(task.items) == 50
    for item in task.items:
        final = item.reference.rsplit("####", 1)[1].strip().replace(",", "")
        assert task.judge(item, item.reference)  # the worked answer itself
        assert task.judge(item, f"So the answer is {final}.")
        assert not task.judge(item, f"#### {int(float(final)) + 1}")


def test_a_users_reward_by_dotted_path_and_one_that_raises(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def exact(completion, reference):\n    return float(completion.strip() == reference.strip())\n"
        "def broken(completion, reference):\n    raise RuntimeError('boom')\n"
        "def stuck(completion, reference):\n    import time\n    time.sleep(120)\n    return 1.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = str(_qa_file(tmp_path))
    task = load_task("jsonl", data=data, reward="my_rewards:exact")
    assert task.judge(task.items[1], "#### 100") and not task.judge(task.items[1], "100")
    broken = load_task("jsonl", data=data, reward="my_rewards:broken")
    assert broken.judge(broken.items[0], "#### 5") is False  # scored wrong, the run goes on
    # one C call (a sleep, a blocking read) was past any in-process limit: a user's rule runs in a
    # child process that is killed at the item's limit (5 s)
    stuck = load_task("jsonl", data=data, reward="my_rewards:stuck")
    started = time.monotonic()
    assert stuck.judge(stuck.items[0], "#### 5") is False
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "gsm8k"}, "give --data PATH"),
        ({"name": "gsm8k", "data": "/no/such/file.jsonl"}, "no such file"),
        ({"name": "jsonl", "reward": "no_such_reward"}, "unknown reward 'no_such_reward'"),
        ({"name": "jsonl", "question_field": "prompt"}, "has no usable problems"),
        ({"name": "tinyworld-arith"}, "needs the tiny world's held-out sets"),
        ({"name": "mmlu"}, "unknown task 'mmlu'"),
    ],
)
def test_what_cannot_be_asked_is_one_clear_error(tmp_path, kwargs, fragment):
    kwargs = dict(kwargs)
    if kwargs["name"] == "jsonl":
        kwargs["data"] = str(_qa_file(tmp_path))
    if kwargs["name"].startswith("tinyworld"):
        kwargs["world_data"] = tmp_path / "sft_data"
    with pytest.raises(ConfigError, match=fragment):
        load_task(kwargs.pop("name"), **kwargs)


def test_pass_at_k_goes_by_powers_of_two_up_to_n():
    assert ks_for(1) == (1,)
    assert ks_for(4) == (1, 2, 4)
    assert ks_for(6) == (1, 2, 4, 6)


def test_the_record_keeps_every_reply_its_verdict_and_the_numbers(tmp_path):
    run = RunDir(tmp_path / "run")
    task = load_task("jsonl", data=str(_qa_file(tmp_path)))
    replies = [["#### 5", "#### 7"], ["#### 100", "#### 100"], []]  # the server gave nothing for the last
    params = SamplingParams(temperature=0.8, n=2, max_tokens=32)
    numbers = record(run, task, "my/model", "http://x/v1 (my/model)", replies, params, 1.5)
    assert numbers["problems"] == 3 and numbers["problems_without_reply"] == 1
    assert numbers["accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert numbers["pass@2"] == pytest.approx(2 / 3)
    assert numbers["pass@1"] == pytest.approx(numbers["accuracy"])  # n samples each: the same estimate
    rows = [json.loads(line) for line in Path(numbers["replies_file"]).read_text().splitlines()]
    assert Path(numbers["replies_file"]).name == "my_model__jsonl.jsonl"
    assert [r["right"] for r in rows] == [[True, False], [True, True], [False, False]]
    assert rows[0]["messages"] == [{"role": "user", "content": "What is 2 + 3?"}]
    entry = read_summary(run)["eval"]["my/model:jsonl"]
    assert entry["accuracy"] == numbers["accuracy"] and entry["reward"] == "numeric_accuracy"
    section = report_section(read_summary(run)["eval"])
    assert "| my/model | jsonl | 3 | 2 | 0.500 +- 0.289 | pass@2 0.667 | 0.8 |" in section


def _one_line_error(capsys, fragment: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("raychat eval: ") and fragment in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_the_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope"), "--task", "gsm8k"]) == 2
    _one_line_error(capsys, "does not exist")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    local = ["eval", "--model", str(model), "--run-dir", str(tmp_path)]
    data = ["--task", "jsonl", "--data", str(_qa_file(tmp_path))]
    for argv, fragment in [
        ([*local, "--task", "gsm8k"], "give --data PATH"),
        ([*local, "--task", "gsm8k", "--data", str(tmp_path)], "is a directory"),
        ([*local, *data, "-n", "0"], "-n must be at least 1"),
        ([*local, *data, "-n", "500"], "-n is at most 128"),
        ([*local, *data, "-n", "2", "--temperature", "0"], "n copies of one greedy reply"),
        ([*local, *data, "--max-tokens", "0"], "--max-tokens must be at least 1"),
        ([*local, *data, "--served-model", "x"], "--served-model go with --base-url"),
        (["eval", "--base-url", "http://127.0.0.1:1/v1", *data], "--base-url needs --run-dir"),
        (
            ["eval", "--base-url", "http://h/v1", "--run-dir", str(tmp_path), *data, "--tools"],
            "--tools goes with --model",
        ),
    ]:
        assert main(argv) == 2, argv
        _one_line_error(capsys, fragment)
    with pytest.raises(SystemExit) as e:  # argparse: --model or --base-url is required
        main(["eval", "--task", "gsm8k"])
    assert e.value.code == 2


def test_a_server_that_is_not_there_is_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["eval", "--base-url", f"http://127.0.0.1:{port}/v1", "--task", "jsonl"]
    assert main([*argv, "--data", str(_qa_file(tmp_path)), "--run-dir", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, f"http://127.0.0.1:{port}/v1/models: cannot reach the server")


class _QuirkyServer:
    """A real HTTP server on localhost with the quirks third-party servers have: it ignores ``n``
    (one choice per request), answers the first request to each question 503 with Retry-After, and
    says something that is not an OpenAI answer for one question."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen: dict[str, int] = {}
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: object, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": "quirky"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                question = body["messages"][-1]["content"]
                seen[question] = seen.get(question, 0) + 1
                if seen[question] == 1:
                    self._send(503, {"error": {"message": "busy"}}, {"Retry-After": "0"})
                elif "cat" in question:
                    self._send(200, ["not", "an", "answer"])
                else:
                    answer = question.split("is ")[-1].rstrip("?")
                    self._send(
                        200, {"choices": [{"index": 0, "message": {"content": f"#### {eval(answer)}"}}]}
                    )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_server_that_ignores_n_is_asked_again_and_a_busy_one_retried(tmp_path):
    from pipelines.evaluation.backends import ServerError, generate_http

    quirky = _QuirkyServer()
    try:
        task = load_task("jsonl", data=str(_qa_file(tmp_path)), limit=2)  # 2 + 3, 10 * 10
        params = SamplingParams(temperature=0.8, n=3, max_tokens=8)
        model, replies = generate_http(quirky.url, task, params, concurrency=2)
        assert model == "quirky" and replies == [["#### 5"] * 3, ["#### 100"] * 3]
        # per question: a 503, then the n=3 request answered once, then two n=1 requests
        assert sorted(r["n"] for r in quirky.requests) == [1, 1, 1, 1, 3, 3, 3, 3]
        assert all("seed" not in r for r in quirky.requests)  # no seed unless one is given
        cat = load_task("jsonl", data=str(_qa_file(tmp_path)))
        with pytest.raises(ServerError, match="not a JSON object"):
            generate_http(quirky.url, cat, params, model="quirky")
    finally:
        quirky.server.shutdown()


def _trained_model(model: Path, stage: str, data: list[Path], init: Path | None = None) -> Path:
    """A model directory as far as the contamination check reads it: raychat.json, written the way
    the training stages write it."""
    from pipelines.evaluation.contamination import TRAINED_ON, trained_on_record

    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    meta = {"stage": stage, TRAINED_ON: trained_on_record(data), **({"init": str(init)} if init else {})}
    (model / "raychat.json").write_text(json.dumps(meta))
    return model


def test_evaluating_on_the_models_training_data_warns_of_contamination(tmp_path, capsys, monkeypatch):
    """A model fine-tuned on a file, or one fine-tuned from that model, is warned about on that file
    (however the path is spelled) and on a copy of it, and not on other data of the same size."""
    from pipelines import runtime

    train = _qa_file(tmp_path)
    models = tmp_path / "models"
    base = _trained_model(models / "base", "pretrain", [])
    sft = _trained_model(models / "sft", "sft", [train], init=base)
    rl = _trained_model(models / "rl", "grpo", [], init=sft)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(train.read_bytes())
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(train.read_text().replace("10 * 10", "10 * 11"))  # the same size, other bytes
    assert held_out.stat().st_size == train.stat().st_size

    def stop(_cfg):  # the warning comes before Ray would start: stop there
        raise ConfigError("stopped before Ray")

    monkeypatch.setattr(runtime, "init_ray", stop)

    def warnings(model: Path, data: Path | str) -> list[str]:
        assert main(["eval", "--model", str(model), "--task", "jsonl", "--data", str(data)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1] == "raychat eval: stopped before Ray", lines
        return lines[:-1]

    monkeypatch.chdir(tmp_path / "models")
    for model, data in ((sft, train), (rl, train), (rl, f"../{train.name}")):
        (line,) = warnings(model, data)
        assert line.startswith(f"raychat eval: warning: {data} is training data of {sft} (stage sft): ")
        assert "overstate the model (contamination)" in line
    (line,) = warnings(rl, copy)
    assert f"{copy} has the same bytes as {train}, which is training data of {sft}" in line
    assert warnings(rl, held_out) == []
    assert warnings(base, train) == []  # not fine-tuned on it
    train.write_text(train.read_text() + train.read_text())  # appended to since: it may still hold them
    (line,) = warnings(rl, train)
    assert line.startswith(f"raychat eval: warning: {train} was training data of {sft} (stage sft) and has ")
