"""``raychat eval``'s tasks, verdicts, records and errors, without Ray (the runs through an engine actor
are in test_sft_stages.py, the runs against a server in test_serving_api.py)."""

from __future__ import annotations

import json
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
        pytest.skip(f"{GSM8K} is not here")
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
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = str(_qa_file(tmp_path))
    task = load_task("jsonl", data=data, reward="my_rewards:exact")
    assert task.judge(task.items[1], "#### 100") and not task.judge(task.items[1], "100")
    broken = load_task("jsonl", data=data, reward="my_rewards:broken")
    assert broken.judge(broken.items[0], "#### 5") is False  # scored wrong, the run goes on


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
    rows = [json.loads(line) for line in Path(numbers["replies_file"]).read_text().splitlines()]
    assert Path(numbers["replies_file"]).name == "my_model__jsonl.jsonl"
    assert [r["right"] for r in rows] == [[True, False], [True, True], [False, False]]
    assert rows[0]["messages"] == [{"role": "user", "content": "What is 2 + 3?"}]
    entry = read_summary(run)["eval"]["my/model:jsonl"]
    assert entry["accuracy"] == numbers["accuracy"] and entry["reward"] == "numeric_accuracy"
    section = report_section(read_summary(run)["eval"])
    assert "| my/model | jsonl | 3 | 2 | 0.500 +- 0.289 | pass@2 0.667 | 0.8 |" in section


def test_the_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope"), "--task", "gsm8k"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("raychat eval: model directory") and "does not exist" in err and "Traceback" not in err
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert main(["eval", "--model", str(model), "--task", "gsm8k", "--run-dir", str(tmp_path)]) == 2
    assert "give --data PATH" in capsys.readouterr().err
    assert main(["eval", "--model", str(model), "--task", "jsonl", "-n", "0"]) == 2
    assert "-n must be at least 1" in capsys.readouterr().err
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
    err = capsys.readouterr().err
    assert err.startswith(f"raychat eval: http://127.0.0.1:{port}/v1/models: cannot reach the server")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
