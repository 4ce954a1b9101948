"""SFT data loaders: every format on real samples and on broken records, detection, and the mixture."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lm.chat import ChatFormat
from lm.chat_messages import text_of
from pipelines.records import Problem, Record, read_records
from pipelines.sft.formats import detect_format, from_gsm8k
from pipelines.sft.sources import MixtureConfig, SourceConfig, SourceError, build_mixture, load_source


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- the real samples ---------------------------------------------------------------------------------------


def test_alpaca_demo(shared_data) -> None:
    convs, report = load_source(SourceConfig(path=str(shared_data / "sft" / "alpaca_en_demo.json")))
    raw = json.loads((shared_data / "sft" / "alpaca_en_demo.json").read_text())
    assert report.formats == {str(shared_data / "sft" / "alpaca_en_demo.json"): "alpaca"}
    assert len(convs) == report.records == 999 and not report.skipped
    for conv, rec in zip(convs, raw, strict=True):
        user, reply = conv["messages"]
        expected = rec["instruction"] + (f"\n\n{rec['input']}" if rec["input"].strip() else "")
        assert user == {"role": "user", "content": expected} and reply == {
            "role": "assistant",
            "content": rec["output"],
        }
    assert convs[5]["meta"]["where"].endswith(
        "alpaca_en_demo.json:27 (record 5)"
    )  # the line the record starts on
    assert raw[5]["instruction"] in (shared_data / "sft" / "alpaca_en_demo.json").read_text().splitlines()[27]


def test_alpaca_seed_tasks_one_conversation_per_instance(shared_data) -> None:
    path = shared_data / "sft" / "alpaca_seed_tasks.jsonl"
    convs, report = load_source(SourceConfig(path=str(path)))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert report.records == 175 and len(convs) == sum(len(r["instances"]) for r in rows)
    assert (
        convs[1]["messages"][0]["content"]
        == rows[1]["instruction"] + "\n\n" + rows[1]["instances"][0]["input"]
    )


def test_sharegpt_tool_calling_sample(shared_data) -> None:
    path = shared_data / "sft" / "glaive_toolcall_en_demo.json"
    convs, report = load_source(SourceConfig(path=str(path)))
    assert report.formats[str(path)] == "sharegpt" and len(convs) == 300 and not report.skipped
    calls = [m for c in convs for m in c["messages"] if m.get("tool_calls")]
    tools = [m for c in convs for m in c["messages"] if m["role"] == "tool"]
    assert len(calls) == len(tools) == 211 and sum(1 for c in convs if c.get("tools")) == 191
    first = convs[0]
    assert [m["role"] for m in first["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    call = first["messages"][3]["tool_calls"][0]["function"]
    assert call == {
        "name": "search_recipes",
        "arguments": {"ingredients": ["chicken", "bell peppers", "rice"]},
    }
    assert first["tools"][0]["name"] == "search_recipes"


def test_gsm8k_reasoning_final_answer_and_calculator_calls(shared_data) -> None:
    path = shared_data / "gsm8k" / "train.jsonl"
    convs, report = load_source(SourceConfig(path=str(path)))
    assert len(convs) == 7473 and report.notes == {"calc_calls": 23716} and not report.skipped
    first = convs[0]
    assert first["meta"]["answer"] == "72"
    assert first["messages"][1]["content"] == [
        {"type": "text", "text": "Natalia sold 48/2 = "},
        {"type": "calc", "expression": "48/2", "result": "24"},
        {"type": "text", "text": "24 clips in May.\nNatalia sold 48+24 = "},
        {"type": "calc", "expression": "48+24", "result": "72"},
        {"type": "text", "text": "72 clips altogether in April and May.\n#### 72"},
    ]
    raw = json.loads(path.read_text().splitlines()[0])
    strip = from_gsm8k(raw, calculator="strip")[0]["messages"][1]["content"]
    keep = from_gsm8k(raw, calculator="keep")[0]["messages"][1]["content"]
    assert keep == raw["answer"] and strip == raw["answer"].replace("<<48/2=24>>", "").replace(
        "<<48+24=72>>", ""
    )
    assert all(c["meta"]["answer"].lstrip("-").replace(".", "").isdigit() for c in convs)
    with_commas = [c for c in convs if "," in text_of(c["messages"][1]).rsplit("####", 1)[1]]
    assert len(with_commas) == 79 and with_commas[0]["meta"]["answer"] == "1080"  # "#### 1,080" -> 1080


def test_gsm8k_calc_results_are_masked_in_training(shared_data) -> None:
    from lm.tokenizer import load_tokenizer

    tok = load_tokenizer(f"gpt2:{shared_data / 'tokenizers' / 'gpt2'}")
    conv = load_source(SourceConfig(path=str(shared_data / "gsm8k" / "train.jsonl"), max_records=1))[0][0]
    r = ChatFormat(tok).render_conversation(conv)
    trained = tok.decode([t for t, m in zip(r.ids, r.mask, strict=True) if m])
    assert "<|calc_start|>48/2<|calc_end|>24 clips" in trained and "<|result_start|>" not in trained


def test_world_arithmetic_loads_as_gsm8k(tmp_path) -> None:
    from pipelines.world.config import WorldConfig
    from pipelines.world.generate import generate

    generate(
        3, WorldConfig(num_pages=60, arithmetic_train=50, arithmetic_test=5), tmp_path, show_progress=False
    )
    convs, report = load_source(SourceConfig(path=str(tmp_path / "questions" / "arithmetic_train.jsonl")))
    rows = [
        json.loads(line)
        for line in (tmp_path / "questions" / "arithmetic_train.jsonl").read_text().splitlines()
    ]
    assert len(convs) == 50 and report.formats and set(report.formats.values()) == {"gsm8k"}
    assert [c["meta"]["answer"] for c in convs] == [str(r["final"]) for r in rows]
    assert report.notes["calc_calls"] == sum(r["answer"].count("<<") for r in rows)


# -- formats from their published schemas ----------------------------------------------------------------------


def _oasst_row(
    mid: str, parent: str | None, role: str, text: str, rank=None, tree="t1", lang="en", **extra
) -> dict:
    """A row with every field of the oasst1/oasst2 message table."""
    return {
        "message_id": mid,
        "parent_id": parent,
        "user_id": f"user-{mid}",
        "created_date": "2023-02-05T14:23:50.983374+00:00",
        "text": text,
        "role": role,
        "lang": lang,
        "review_count": 3,
        "review_result": True,
        "deleted": False,
        "rank": rank,
        "synthetic": False,
        "model_name": None,
        "detoxify": None,
        "message_tree_id": tree,
        "tree_state": "ready_for_export",
        "emojis": None,
        "labels": None,
    } | extra


OASST_ROWS = [
    _oasst_row("p1", None, "prompter", "What is a kite?"),
    _oasst_row("a1", "p1", "assistant", "A toy (second best).", rank=1),
    _oasst_row("a2", "p1", "assistant", "A tethered flying toy.", rank=0),
    _oasst_row("a3", "p1", "assistant", "Deleted reply.", rank=None, deleted=True),
    _oasst_row("p2", "a2", "prompter", "Who invented it?"),
    _oasst_row("a4", "p2", "assistant", "Probably people in China.", rank=0),
    _oasst_row("p3", "a4", "prompter", "Thanks!"),  # a trailing prompter message: dropped
    _oasst_row("a5", "p1", "assistant", "Failed review.", rank=None, review_result=False),
    _oasst_row("q1", None, "prompter", "¿Qué es una cometa?", tree="t2", lang="es"),
    _oasst_row("b1", "q1", "assistant", "Un juguete volador.", rank=0, tree="t2", lang="es"),
    _oasst_row("q2", None, "prompter", "Unanswered prompt", tree="t3"),
    _oasst_row("o1", "missing-parent", "assistant", "An orphan", tree="t4"),
]


def test_oasst_rows_rebuild_best_ranked_conversations(tmp_path) -> None:
    path = _jsonl(tmp_path / "oasst.jsonl", OASST_ROWS)
    convs, report = load_source(SourceConfig(path=str(path), oasst_languages=["en", "es"]))
    assert report.formats[str(path)] == "oasst"
    by_tree = {c["meta"]["message_tree_id"]: [m["content"] for m in c["messages"]] for c in convs}
    assert by_tree == {
        "t1": ["What is a kite?", "A tethered flying toy.", "Who invented it?", "Probably people in China."],
        "t2": ["¿Qué es una cometa?", "Un juguete volador."],
    }
    assert report.skipped == {"orphan_message": 1} and report.notes["no_reply"] == 1
    assert report.notes["deleted_or_failed_review"] == 2
    english, report = load_source(SourceConfig(path=str(path), oasst_languages=["en"]))
    assert len(english) == 1 and report.notes["other_language"] == 1


def test_oasst_tree_export_gives_the_same_conversations(tmp_path) -> None:
    rows = {r["message_id"]: {k: v for k, v in r.items() if k != "parent_id"} for r in OASST_ROWS[:8]}
    for r in OASST_ROWS[:8]:
        rows[r["message_id"]]["replies"] = [
            rows[c["message_id"]] for c in OASST_ROWS[:8] if c["parent_id"] == r["message_id"]
        ]
    tree = {"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": rows["p1"]}
    path = _jsonl(tmp_path / "trees.jsonl", [tree])
    assert detect_format(tree) == "oasst"
    convs, _ = load_source(SourceConfig(path=str(path)))
    flat, _ = load_source(SourceConfig(path=str(_jsonl(tmp_path / "rows.jsonl", OASST_ROWS[:8]))))
    assert [c["messages"] for c in convs] == [c["messages"] for c in flat]


def test_openai_messages_with_tools_weights_and_broken_records(tmp_path) -> None:
    good = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "3C"},
            {"role": "assistant", "content": "3C.", "weight": 1},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }  # fmt: skip
    rows = [
        good,
        "{not json",
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]},
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
        {"messages": "not a list"},
        [1, 2],
    ]
    path = _jsonl(tmp_path / "chat.jsonl", rows)
    convs, report = load_source(SourceConfig(path=str(path), format="messages"), max_bad_fraction=1.0)
    assert len(convs) == 1 and convs[0]["messages"][2]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Oslo"
    }
    assert report.skipped == {
        "invalid_json": 1,
        "bad_conversation": 2,
        "no_reply": 2,
        "empty_reply": 1,
        "bad_messages": 1,
        "not_an_object": 1,
    }
    messages = [str(p) for p in report.problems]
    assert messages[0].startswith(f"{path}:2: invalid JSON")
    assert messages[1] == f"{path}:3: message 0: unknown role 'robot' (roles: system, user, assistant, tool)"
    assert messages[2].startswith(f"{path}:4: message 1: a tool message must follow")


def test_sharegpt_system_and_parallel_function_calls(tmp_path) -> None:
    rec = {
        "system": "Use tools.",
        "tools": [{"name": "a"}, {"name": "b"}],
        "conversations": [
            {"from": "human", "value": "Do both."},
            {"from": "gpt", "value": "Calling."},
            {"from": "function_call", "value": json.dumps([{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}])},
            {"from": "observation", "value": "ok"},
            {"from": "gpt", "value": "Done."},
        ],
    }  # fmt: skip
    bad = {"conversations": [{"from": "human", "value": "x"}, {"from": "function_call", "value": "{broken"}]}
    convs, report = load_source(
        SourceConfig(path=str(_jsonl(tmp_path / "s.jsonl", [rec, bad]))), max_bad_fraction=1.0
    )
    msgs = convs[0]["messages"]
    assert msgs[0] == {"role": "system", "content": "Use tools."}
    assert msgs[2]["content"] == "Calling." and [c["function"]["name"] for c in msgs[2]["tool_calls"]] == [
        "a",
        "b",
    ]
    assert report.skipped == {"bad_function_call": 1}


def test_raw_sharegpt_dumps_keep_their_turns_under_items(tmp_path) -> None:
    """sharegpt_90k's raw files say 'items' where the cleaned ones say 'conversations': every record
    was skipped as a format not recognised. OpenAI messages under 'items' are not guessed at."""
    raw = {"id": "x1", "items": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    assert detect_format(raw) == "sharegpt"
    assert detect_format({"items": [{"role": "user", "content": "Hi"}]}) is None
    convs, report = load_source(SourceConfig(path=str(_jsonl(tmp_path / "raw.jsonl", [raw]))))
    assert [m["content"] for m in convs[0]["messages"]] == ["Hi", "Hello."] and not report.skipped


def test_a_reply_or_user_turn_of_white_space_is_refused_in_every_format(tmp_path) -> None:
    """Only Alpaca refused an empty reply: messages and ShareGPT trained on a reply of " " or "\\n",
    and on a reply to an empty user turn. Now each format counts them under one reason each."""
    hi, hello = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}
    call = {"role": "assistant", "content": " ", "tool_calls": [{"function": {"name": "now"}}]}
    gpt = {"from": "gpt", "value": "Hello."}
    rows = {
        "messages": [
            {"messages": [hi, hello]},
            {"messages": [hi, {"role": "assistant", "content": " \n\t"}]},
            {"messages": [hi, {"role": "assistant", "content": [{"type": "text", "text": "  "}]}]},
            {"messages": [hi, hello, hi, {"role": "assistant", "content": "\n", "weight": 0}]},
            {"messages": [{"role": "user", "content": "\n"}, hello]},
            {"messages": [hi, call, {"role": "tool", "content": ""}, hello]},  # a call says something
        ],
        "sharegpt": [
            {"conversations": [{"from": "human", "value": "Hi"}, gpt]},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}]},
            {"conversations": [{"from": "human", "value": "Hi"}, gpt, {"from": "gpt", "value": ""}]},
            {"conversations": [{"from": "human", "value": " "}, gpt]},
            {"conversations": [{"from": "system", "value": ""}, {"from": "human", "value": "Hi"}, gpt]},
        ],
        "alpaca": [
            {"instruction": "Hi", "input": "", "output": "Hello."},
            {"instruction": "Hi", "input": "", "output": "\u3000"},  # an ideographic space
            {"instruction": "Hi", "input": "", "output": "Hello.", "history": [["Before?", " "]]},
            {"instruction": " ", "input": "", "output": "Hello."},
        ],
        "gsm8k": [{"question": "1+1?", "answer": "#### 2"}, {"question": "\t", "answer": "#### 2"}],
    }
    expected = {
        "messages": (2, {"empty_reply": 3, "empty_prompt": 1}),
        "sharegpt": (2, {"empty_reply": 2, "empty_prompt": 1}),
        "alpaca": (1, {"empty_reply": 2, "empty_prompt": 1}),
        "gsm8k": (1, {"empty_prompt": 1}),
    }
    for fmt, records in rows.items():
        path = _jsonl(tmp_path / f"{fmt}.jsonl", records)
        convs, report = load_source(SourceConfig(path=str(path), format=fmt))
        assert (len(convs), dict(report.skipped)) == expected[fmt], fmt
        for m in (m for c in convs for m in c["messages"] if m["role"] in ("user", "assistant")):
            assert m.get("tool_calls") or text_of(m).strip()


def test_oasst_leaves_out_a_branch_of_white_space_and_takes_the_next_best_reply(tmp_path) -> None:
    """The best-ranked reply was taken even when it was " \\n", and the tree trained on it."""
    rows = [
        _oasst_row("p1", None, "prompter", "What is a kite?"),
        _oasst_row("a1", "p1", "assistant", " \n", rank=0),
        _oasst_row("p2", "a1", "prompter", "Go on."),  # below the empty reply: left out with it
        _oasst_row("a2", "p1", "assistant", "A tethered flying toy.", rank=1),
        _oasst_row("p3", "a2", "prompter", "\t"),  # an empty follow-up: the conversation ends before it
        _oasst_row("a3", "p3", "assistant", "Anything else?", rank=0),
        _oasst_row("q1", None, "prompter", " ", tree="t2"),
        _oasst_row("b1", "q1", "assistant", "An answer to nothing.", rank=0, tree="t2"),
    ]
    path = _jsonl(tmp_path / "oasst.jsonl", rows)
    convs, report = load_source(SourceConfig(path=str(path), format="oasst"))
    assert [[m["content"] for m in c["messages"]] for c in convs] == [
        ["What is a kite?", "A tethered flying toy."]
    ]
    assert report.skipped == {"empty_reply": 1, "empty_prompt": 2}
    assert [p.where.rsplit(":", 1)[1] for p in report.problems] == ["2", "5", "7"]
    assert "message a1: the assistant's reply is empty or only white space" in report.problems[0].detail


# -- files: formats on disk, broken files --------------------------------------------------------------------


def test_pretty_printed_json_array_resumes_after_a_broken_record(tmp_path) -> None:
    records = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5)]
    text = json.dumps(records, indent=2)
    text = text.replace('"output": "a2"', '"output": "a2" oops')  # a syntax error inside record 2
    path = tmp_path / "broken.json"
    path.write_text(text)
    items = list(read_records(str(path)))
    assert [i.value["output"] for i in items if isinstance(i, Record)] == ["a0", "a1", "a3", "a4"]
    (problem,) = [i for i in items if isinstance(i, Problem)]
    assert problem.where == f"{path}:12 (record 2)" and "reading goes on at line" in problem.detail
    one_line = tmp_path / "one.json"
    one_line.write_text(json.dumps(records).replace('"a2"', '"a2" oops'))
    items = list(read_records(str(one_line)))
    assert sum(isinstance(i, Record) for i in items) == 2 and "cannot be read" in items[-1].detail


def test_compressed_parquet_and_folder_sources(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"question": f"What is {i}+1?", "answer": f"{i}+1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
        for i in range(6)
    ]
    folder = tmp_path / "data"
    folder.mkdir()
    with gzip.open(folder / "a.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows[:3]))
    pq.write_table(pa.Table.from_pylist(rows[3:]), folder / "b.parquet")
    (folder / "README.md").write_text("not data")
    convs, report = load_source(SourceConfig(path=str(folder)))
    assert [c["meta"]["answer"] for c in convs] == ["1", "2", "3", "4", "5", "6"]
    assert convs[3]["meta"]["where"] == f"{folder / 'b.parquet'}: row 0" and len(report.files) == 2


def test_unusable_sources_are_errors_that_say_why(tmp_path) -> None:
    with pytest.raises(SourceError, match="no data files found"):
        load_source(SourceConfig(path=str(tmp_path / "missing.jsonl")))
    odd = _jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    with pytest.raises(SourceError, match=r"cannot tell the format .*keys: bar, foo.*set format"):
        load_source(SourceConfig(path=str(odd)))
    wrong = _jsonl(tmp_path / "wrong.jsonl", [{"instruction": "x", "output": "y"}] * 3)
    with pytest.raises(
        SourceError, match=r"no usable conversations \(bad_question: 3\); is the format \(gsm8k\) right"
    ):
        load_source(SourceConfig(path=str(wrong), format="gsm8k"))
    mostly = _jsonl(tmp_path / "mostly.jsonl", [{"question": "q", "answer": "#### 1"}] + ["{broken"] * 2)
    with pytest.raises(
        SourceError, match="2 of 3 records are unusable .*invalid_json: 2.*is the format right"
    ):
        load_source(SourceConfig(path=str(mostly)), max_bad_fraction=0.5)
    assert len(load_source(SourceConfig(path=str(mostly)), max_bad_fraction=0.7)[0]) == 1
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(SourceError, match="no usable conversations .*empty_file: 1"):
        load_source(SourceConfig(path=str(empty)))


def test_each_format_is_detected_from_its_records() -> None:
    assert detect_format({"messages": [{"role": "user", "content": "x"}]}) == "messages"
    assert detect_format({"conversations": [{"from": "human", "value": "x"}]}) == "sharegpt"
    assert detect_format({"conversations": [{"role": "user", "content": "x"}]}) == "messages"
    assert detect_format({"conversations": [{"role": "human", "content": "x"}]}) == "sharegpt"  # its speakers
    assert detect_format({"instruction": "x", "input": "", "output": "y"}) == "alpaca"
    assert detect_format({"id": "seed", "instruction": "x", "instances": []}) == "alpaca"
    assert detect_format(OASST_ROWS[0]) == "oasst"
    assert detect_format({"question": "x", "answer": "y #### 1"}) == "gsm8k"
    assert detect_format({"text": "a document"}) is None and detect_format([1]) is None


# -- the mixture ------------------------------------------------------------------------------------------


@pytest.fixture()
def two_sources(tmp_path) -> tuple[Path, Path]:
    a = _jsonl(tmp_path / "a.jsonl", [{"instruction": f"a{i}", "output": f"A{i}"} for i in range(10)])
    b = _jsonl(tmp_path / "b.jsonl", [{"question": f"b{i}", "answer": f"#### {i}"} for i in range(4)])
    return a, b


def test_mixture_by_epochs_is_deterministic_and_shuffled(two_sources) -> None:
    a, b = two_sources
    cfg = MixtureConfig(
        sources=[SourceConfig(path=str(a), epochs=0.5, name="A"), SourceConfig(path=str(b), epochs=2.5)],
        seed=7,
    )
    mix = build_mixture(cfg)
    sources = [c["meta"]["source"] for c in mix.conversations]
    assert sources.count("A") == 5 and sources.count(str(b)) == 10
    b_questions = [text_of(c["messages"][0]) for c in mix.conversations if c["meta"]["format"] == "gsm8k"]
    assert all(b_questions.count(f"b{i}") >= 2 for i in range(4))  # two whole passes, then half a pass
    assert len(set(text_of(c["messages"][0]) for c in mix.conversations if c["meta"]["source"] == "A")) == 5
    again = build_mixture(cfg)
    assert [c["meta"]["where"] for c in again.conversations] == [
        c["meta"]["where"] for c in mix.conversations
    ]
    other = build_mixture(cfg.model_copy(update={"seed": 8}))
    assert [c["meta"]["where"] for c in other.conversations] != [
        c["meta"]["where"] for c in mix.conversations
    ]
    assert sources[:5] != ["A"] * 5 or sources[5:10] != [str(b)] * 5  # interleaved
    summary = mix.summary()
    assert summary["examples"] == 15 and [s["epochs"] for s in summary["sources"]] == [0.5, 2.5]


def test_mixture_by_size_and_weights(two_sources) -> None:
    a, b = two_sources
    mix = build_mixture(
        MixtureConfig(
            sources=[SourceConfig(path=str(a), weight=3), SourceConfig(path=str(b), weight=1, max_records=2)],
            size=21,
        )
    )
    counts = [r.used for r in mix.reports]
    assert counts == [16, 5] and len(mix.conversations) == 21  # 15.75 and 5.25, remainders to the largest
    assert mix.reports[1].conversations == 2 and mix.reports[1].epochs == 2.5


def test_mixture_config_says_which_knob_conflicts(two_sources) -> None:
    from pydantic import ValidationError

    a, _ = two_sources
    with pytest.raises(ValidationError, match="sources.0.weight needs size"):
        MixtureConfig(sources=[SourceConfig(path=str(a), weight=2)])
    with pytest.raises(ValidationError, match="sources.0.epochs conflicts with size"):
        MixtureConfig(sources=[SourceConfig(path=str(a), epochs=2)], size=10)
    with pytest.raises(ValidationError, match="extra"):
        SourceConfig(path=str(a), fromat="alpaca")
    with pytest.raises(SourceError, match="no sources"):
        build_mixture(MixtureConfig())


def test_checking_a_source_from_the_command_line(shared_data, capsys) -> None:
    from pipelines.sft.sources import main

    assert main([str(shared_data / "sft" / "alpaca_seed_tasks.jsonl")]) == 0
    report = capsys.readouterr().out
    assert '"formats": [\n    "alpaca"\n  ]' in report and '"conversations": 175' in report
    assert main(["/no/such/file.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: source '/no/such/file.jsonl': no data files found")


def test_the_source_settings_offer_exactly_the_formats_there_are() -> None:
    """pipelines/sft/source_config.py spells the choices out so that it imports no loader."""
    from pipelines.sft import formats, source_config

    assert source_config.FORMATS == formats.FORMATS
    assert source_config.CALCULATOR_MODES == formats.CALCULATOR_MODES


def test_the_file_a_conversation_came_from_is_ours_whatever_the_record_says(tmp_path) -> None:
    """A record's own meta is kept, but cannot replace the file it was read from (which a model's
    raychat.json records as trained_on): a code dataset's ``meta.file`` of 123 crashed the export."""
    from pipelines.sft.sources import SOURCE_FILE
    from pipelines.sft.train import _source_files

    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
         "meta": {"file": 123, SOURCE_FILE: ["not", "a", "path"], "kind": "code"}}
        for i in range(3)
    ]  # fmt: skip
    path = _jsonl(tmp_path / "code.jsonl", rows)
    convs, _ = load_source(SourceConfig(path=str(path)))
    assert [c["meta"]["file"] for c in convs] == [123] * 3 and convs[0]["meta"]["kind"] == "code"
    assert {c["meta"][SOURCE_FILE] for c in convs} == {str(path)}
    assert _source_files([*convs, {"messages": []}, {"meta": {SOURCE_FILE: 7}}]) == {str(path)}


def test_reported_by_a_test_of_real_variants(tmp_path) -> None:
    """What a black-box test of the loaders found, each once lost or wrong without a word."""
    # OpenAI messages under 'conversations' (many Hugging Face datasets): read as messages, so a reply
    # of weight 0 is not trained and a tool call is kept (the ShareGPT reader dropped both)
    conv = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "skip me", "weight": 0},
            {"role": "user", "content": "B"}, {"role": "assistant", "content": None,
             "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "content": "20C"}, {"role": "assistant", "content": "20C"}]  # fmt: skip
    (got,), _ = load_source(SourceConfig(path=str(_jsonl(tmp_path / "hf.jsonl", [{"conversations": conv}]))))
    assert (
        got["messages"][1]["weight"] == 0 and got["messages"][3]["tool_calls"][0]["function"]["name"] == "w"
    )
    # an OpenAssistant tree whose reply has no id: the branch below it is orphaned, not a new conversation
    tree = {"message_tree_id": "T", "prompt": {"message_id": "p", "text": "Capital of France?", "role": "prompter",
            "replies": [{"text": "Paris.", "role": "assistant", "replies": [{"message_id": "c", "role": "prompter",
            "text": "Population?", "replies": [{"message_id": "d", "text": "2.1M", "role": "assistant"}]}]}]}}  # fmt: skip
    with pytest.raises(SourceError, match="bad_message_id: 1, orphan_message: 1"):
        load_source(SourceConfig(path=str(_jsonl(tmp_path / "tree.jsonl", [tree]))))
    # Alpaca with an empty instruction: the input alone, not "\n\n" before it
    (alpaca,), _ = load_source(
        SourceConfig(
            path=str(
                _jsonl(tmp_path / "a.jsonl", [{"instruction": "", "input": "Only input", "output": "A"}])
            )
        )
    )
    assert alpaca["messages"][0]["content"] == "Only input"
    # parquet gives every row the union of the struct fields: the null keys are not the record's
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "",
             "tool_calls": [{"type": "function", "function": {"name": n, "arguments": a}}]},
             {"role": "tool", "content": "r"}, {"role": "assistant", "content": "done"}]}
            for n, a in (("f", {"a": 1}), ("g", {"b": "x"}))]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "calls.parquet")
    convs, _ = load_source(SourceConfig(path=str(tmp_path / "calls.parquet")))
    assert [c["messages"][1]["tool_calls"][0]["function"]["arguments"] for c in convs] == [
        {"a": 1},
        {"b": "x"},
    ]
    # a content part whose type is not a string: a clear reason, not a TypeError
    bad = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": ["text"], "text": "Hi"}]},
        ]
    }
    with pytest.raises(SourceError, match="bad_conversation: 1"):
        load_source(SourceConfig(path=str(_jsonl(tmp_path / "bad.jsonl", [bad]))))
