"""The distill stage: rejection sampling keeps exactly the right replies (hand-written replies scored by
the real rule rewards), the written SFT data reads back as ``messages`` conversations, prompts and
configs fail clearly, and (slow) the stage end to end on a small tiny-world run, rerun without redoing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lm.rewards import gsm8k_format
from pipelines.config import load_config
from pipelines.distill.config import DistillConfig, PromptSource, RejectionConfig
from pipelines.distill.prompts import Problem, heldout_rows, messages, read_problems
from pipelines.distill.rejection import REASONS, Candidate, TraceFilter
from pipelines.errors import ConfigError
from pipelines.stages import Graph

PROBLEM = Problem("world:0", "Ada has 3 boxes of 4 apples. How many apples?", "12", "12")
OTHER = Problem("world:1", "Bo has 10 pens and gives 3 away. How many are left?", "#### 7", "7")


def reply(*parts: str | dict) -> dict:
    content = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
    return {
        "role": "assistant",
        "content": content[0]["text"] if len(content) == 1 and isinstance(parts[0], str) else content,
    }


def cand(problem: Problem, text: str | dict, finish: str = "stop", i: int = 0) -> Candidate:
    r = text if isinstance(text, dict) else reply(text)
    return Candidate(problem, messages(problem, None), r, finish, i)


def test_gsm8k_format_wants_one_final_line() -> None:
    assert gsm8k_format("3*4 = 12 apples.\n#### 12") == 1.0
    assert gsm8k_format("#### 1,200\n") == 1.0
    assert gsm8k_format("12 apples.") == 0.0  # no final line
    assert gsm8k_format("#### 12\nthen more words") == 0.0  # words after the answer
    assert gsm8k_format("#### 3\n#### 12") == 0.0  # two answers
    assert gsm8k_format("so #### 12") == 0.0  # not a line of its own


def test_rejection_keeps_exactly_the_correct_well_formatted_distinct_replies() -> None:
    calc = reply(
        "Each box has 4, so 3*4 = ", {"type": "calc", "expression": "3*4", "result": "12"}, "12.\n#### 12"
    )
    candidates = [
        cand(PROBLEM, "3 boxes of 4 is 3*4 = 12.\n#### 12", i=0),  # kept
        cand(PROBLEM, "3 boxes of 4 is 3*4 = 12.\n#### 12", i=1),  # the same text again
        cand(PROBLEM, "3  boxes of 4 is 3*4 = 12.\n####  12", i=2),  # the same up to whitespace
        cand(PROBLEM, calc, i=3),  # kept: another trace, with a calculator call
        cand(PROBLEM, "4*3 = 12 apples.\n#### 12", i=4),  # right, but the cap is 2
        cand(PROBLEM, "3+4 = 7.\n#### 7", i=5),  # wrong
        cand(PROBLEM, "The answer is 12.", i=6),  # right number, no final line
        cand(PROBLEM, "3*4 = 12.\n#### 12", finish="length", i=7),  # cut at the token limit
        cand(OTHER, "10-3 = 7 pens.\n#### 7", i=0),  # kept (a worked reference: '#### 7')
        cand(OTHER, "10-3 = 7 pens, Velmar said.\n#### 7", i=1),  # names a held-out entity
        # right and well formatted, but its calculator call is empty: no messages record can hold it
        cand(
            OTHER, reply("10-3 = ", {"type": "calc", "expression": "", "result": "error"}, "7.\n#### 7"), i=2
        ),
    ]
    chooser = TraceFilter(
        RejectionConfig(per_prompt=2), "gsm8k", heldout_mentions=lambda t: ["Velmar"] * ("Velmar" in t)
    )
    sel = chooser.select(candidates)
    assert [(c.problem.id, c.sample_index) for c in sel.kept] == [
        ("world:0", 0),
        ("world:0", 3),
        ("world:1", 0),
    ]
    reasons = {(c.problem.id, c.sample_index): r for c, r in sel.rejected}
    assert reasons == {
        ("world:0", 1): "duplicate",
        ("world:0", 2): "duplicate",
        ("world:0", 4): "over_cap",
        ("world:0", 5): "wrong",
        ("world:0", 6): "bad_format",
        ("world:0", 7): "unfinished",
        ("world:1", 1): "heldout",
        ("world:1", 2): "malformed",
    }
    counts = sel.counts()
    assert counts["samples"] == 11 and counts["kept"] == 3 and set(counts["rejected"]) == set(REASONS)
    assert sum(counts["rejected"].values()) == 8 and counts["problems_with_a_kept_reply"] == 2

    # without dedup the repeats count towards the cap; R1's format rule replaces GSM8K's
    no_dedup = TraceFilter(RejectionConfig(per_prompt=2, dedup=False), "gsm8k").select(candidates[:3])
    assert [c.sample_index for c in no_dedup.kept] == [0, 1]
    r1 = TraceFilter(RejectionConfig(), "r1").select(
        [
            cand(PROBLEM, "<think>3*4 = 12</think>\n<answer>12</answer>"),
            cand(PROBLEM, "3*4 = 12\n#### 12", i=1),
        ]
    )
    assert [c.sample_index for c in r1.kept] == [0] and r1.rejected[0][1] == "bad_format"


def test_a_failing_rule_rejects_as_scoring_error(write_module) -> None:
    mod = write_module("def boom(completion, reference):\n    raise RuntimeError('no')\n")
    sel = TraceFilter(RejectionConfig(correctness=f"{mod}:boom"), "gsm8k").select([cand(PROBLEM, "#### 12")])
    assert sel.kept == [] and sel.rejected[0][1] == "scoring_error"


def test_kept_traces_are_messages_conversations_the_sft_loader_reads(tmp_path) -> None:
    from pipelines.distill.student import write_jsonl
    from pipelines.sft.sources import MixtureConfig, SourceConfig, build_mixture

    calc = reply("3*4 = ", {"type": "calc", "expression": "3*4", "result": "12"}, "12.\n#### 12")
    convs = [cand(PROBLEM, calc).conversation({"teacher": "t"}), cand(OTHER, "#### 7").conversation({})]
    path = write_jsonl(tmp_path / "train.jsonl", convs)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    assert rows[0]["messages"][1]["content"][1] == {"type": "calc", "expression": "3*4", "result": "12"}
    assert rows[0]["meta"] == {"kind": "distill", "problem": "world:0", "sample_index": 0, "teacher": "t"}
    mix = build_mixture(MixtureConfig(sources=[SourceConfig(path=str(path), format="messages")]))
    assert len(mix.conversations) == 2


def test_the_control_leaves_out_conversations_longer_than_its_rows(caplog) -> None:
    """The control reuses the sft mixture at distill.seq_len: too-long ones are counted, not warned."""
    from lm.chat import ChatFormat
    from lm.tokenizer import R50K_PATTERN, Tokenizer
    from pipelines.sft.data import TOO_LONG, log_skipped, render_examples

    tok = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})
    short = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    long = {"messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "4"}]}
    with caplog.at_level("INFO"):
        kept = render_examples([short, long, short], ChatFormat(tok), 64)
        log_skipped("distill_control", kept, render_examples([short], ChatFormat(tok), 64), expected=True)
    assert len(kept) == 2 and kept.skipped == {TOO_LONG: 1}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert "distill_control: 1 of 4 conversations skipped" in caplog.text


def test_problems_are_read_from_world_and_gsm8k_rows(tmp_path) -> None:
    world = tmp_path / "world.jsonl"
    world.write_text('{"question": "Q1?", "final": 335}\nnot json\n{"question": "", "final": 1}\n[1]\n')
    problems, skipped = read_problems(PromptSource(path=str(world)), str(tmp_path))
    assert [(p.question, p.reference, p.final) for p in problems] == [("Q1?", "335", "335")] and skipped == 3
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "Q?", "answer": "5*2 = <<5*2=10>>10\n#### 1,000"}) + "\n")
    (p,), _ = read_problems(PromptSource(path=str(gsm), answer_field="answer", name="gsm8k"), "")
    assert (
        p.id == "gsm8k:0" and p.final == "1000" and heldout_rows([p]) == [{"question": "Q?", "final": "1000"}]
    )
    assert messages(p, "tools!")[0] == {"role": "system", "content": "tools!"}
    with pytest.raises(ConfigError, match="no usable problem"):
        read_problems(PromptSource(path=str(world), answer_field="nope"), "")
    with pytest.raises(ConfigError, match="not found"):
        read_problems(PromptSource(path="{run_dir}/missing.jsonl"), str(tmp_path))


def test_config_and_graph(tmp_path) -> None:
    with pytest.raises(ValueError, match="other_kinds"):
        DistillConfig(other_kinds=["nope"])
    with pytest.raises(ValueError, match="must differ"):
        DistillConfig(output_name="x", control_output_name="x")
    g = Graph(load_config(None, [f"run_dir={tmp_path}"]))
    assert g.consumes("distill") == ["grpo", "sft", "world"]  # grpo makes models/rl: the RL model teaches
    renamed = Graph(load_config(None, [f"run_dir={tmp_path}", "grpo.output_name=rl_other"]))
    assert renamed.consumes("distill") == ["grpo", "sft", "world"]  # grpo's model teaches, whatever its name
    assert g.producer("models/student") == "distill" and g.producer("models/student_sft_only") == "distill"
    idk_teacher = Graph(
        load_config(None, [f"run_dir={tmp_path}", "distill.teacher={run_dir}/models/sft_idk"])
    )
    assert idk_teacher.consumes("distill") == ["idk", "sft", "world"]  # the world: its default prompts
    assert "distill" in idk_teacher.built_on("idk")
    # the demo's student starts from its own smaller base, a pretrain instance run before distill
    demo = Graph(load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", []))
    assert demo.consumes("distill") == ["grpo", "sft", "pretrain_student", "world"]
    assert demo.producer("models/base_student") == "pretrain_student"
    assert [s.name for s in demo].index("pretrain_student") < [s.name for s in demo].index("distill")


def test_the_default_teacher_is_the_most_trained_chat_model(tmp_path) -> None:
    from pipelines.distill.teacher import teacher_dir

    cfg = load_config(None, [f"run_dir={tmp_path}"])
    assert teacher_dir(cfg, "distill") == tmp_path.resolve() / "models" / "sft"  # grpo has not run
    (tmp_path / "models" / "rl").mkdir(parents=True)
    (tmp_path / "models" / "rl" / "config.json").write_text("{}")
    assert teacher_dir(cfg, "distill") == tmp_path.resolve() / "models" / "rl"
    other = load_config(None, [f"run_dir={tmp_path}", "distill.teacher=/models/x"])
    assert teacher_dir(other, "distill") == Path("/models/x")
    renamed = load_config(None, [f"run_dir={tmp_path}", "grpo.output_name=rl_long"])
    assert teacher_dir(renamed, "distill") == tmp_path.resolve() / "models" / "sft"  # not a stale models/rl
    (tmp_path / "models" / "rl_long").mkdir(parents=True)
    (tmp_path / "models" / "rl_long" / "config.json").write_text("{}")
    assert teacher_dir(renamed, "distill") == tmp_path.resolve() / "models" / "rl_long"


# -- the stage end to end ---------------------------------------------------------------------------

# the distill stage's settings for a small run (tests/test_sft_stages.py runs it on the run it builds)
DISTILL_SETTINGS = [
    "distill.prompts=[{max_records: 6}]",
    "distill.sampling.samples=2",
    "distill.sampling.max_new_tokens=48",
    "distill.other_share=0.5",
    # a fresh student (the demo's starts from pretrain_student's base: tests/test_logit_distill.py and
    # the config tests cover student_init)
    "distill.student_init=null",
    "distill.student={depth: null, hidden_size: 32, num_layers: 1, num_heads: 2, num_kv_heads: 1}",
    "distill.max_steps=4",
    "distill.seq_len=128",
    "distill.batch_rows=4",
    "distill.micro_batch_rows=4",
    "distill.val_conversations=2",
    "distill.checkpoint_every=2",
]


def check_end_to_end_then_skipped_and_resumed(
    run_dir: Path, run_settings: list[str], write_module, n_heldout: int
) -> None:
    """The distill stage through ``raychat run`` on a run whose earlier stages ``run_settings`` built
    (tests/test_sft_stages.py calls it on its run, so that no test builds a world and an SFT model
    for this alone), then skipped as complete, then resumed: samples read back, training at its end.
    ``n_heldout``: the held-out problems the run's evaluation settings ask."""
    from pipelines.cli import main
    from pipelines.run_dir import RunDir, is_done, read_summary

    # a 20-step teacher gets nothing right: here any finished reply counts as correct and well
    # formatted, so that some are kept (the real rules are tested above)
    rule = write_module("def always_right(completion, reference):\n    return 1.0\n") + ":always_right"
    settings = [
        *run_settings,
        *DISTILL_SETTINGS,
        f"distill.rejection.correctness={rule}",
        f"distill.rejection.format={rule}",
        "distill.rejection.require_finished=false",  # nor does it stop within 48 tokens
        "distill.logit.enabled=true",  # and a third student learns the teacher's token distributions
        "distill.logit.top_k=16",
    ]
    config = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    args = ["--config", config, "--run-dir", str(run_dir), *[x for s in settings for x in ("--set", s)]]
    assert main(["run", *args, "--stages", "world,clean,tokenize,pretrain,sft,distill"]) == 0
    run = RunDir(run_dir)
    assert is_done(run, "distill")
    numbers = read_summary(run)["distill"]
    for key in (
        "teacher_accuracy",
        "student_accuracy",
        "student_sft_only_accuracy",
        "student_logit_accuracy",
    ):
        assert 0.0 <= numbers[key] <= 1.0
    assert numbers["n_heldout"] == n_heldout and numbers["teacher"].endswith("models/sft")
    assert numbers["samples"] == 12 and numbers["student_trained"]
    assert numbers["steps"] == numbers["control_steps"] == numbers["logit_steps"] == 4  # the same compute
    assert numbers["logit_winner"] in ("logit", "sequence", "tie") and numbers["student_logit_val_kl"] > 0
    logit_curve = [
        json.loads(x) for x in (run_dir / "metrics" / "distill_logit.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in logit_curve if "kl" in r] == [1, 2, 3, 4]
    assert numbers["student_params"] < numbers["teacher_params"]
    data = run_dir / "distill_data"
    counts = json.loads((data / "counts.json").read_text())
    assert counts["kept"] + sum(counts["rejected"].values()) == counts["samples"] == 12
    train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    assert len(train) == counts["traces"] + counts["other"] and counts["other"] == counts["traces"]
    assert all(c["messages"][-1]["role"] == "assistant" for c in train)
    for model in ("student", "student_sft_only", "student_logit"):
        config = json.loads((run_dir / "models" / model / "config.json").read_text())
        assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1
    for model in ("student", "student_logit"):  # raychat eval warns on the file they learnt
        trained_on = json.loads((run_dir / "models" / model / "raychat.json").read_text())["trained_on"]
        assert [f["path"] for f in trained_on] == [str((data / "train.jsonl").resolve())]
    report = (run_dir / "report.md").read_text()
    assert "## distill" in report and "plots/distill_accuracy.png" in report
    assert "Logit distillation (KL weight 0.5, temperature 1.0, over the teacher's top-16" in report
    assert "distill.student_logit_accuracy" in report
    assert (run_dir / "plots" / "distill_accuracy.png").stat().st_size > 1000

    # a second `raychat run` skips the complete stage
    stamp = (run_dir / "metrics" / "distill.done.json").read_text()
    assert main(["run", *args, "--stages", "distill"]) == 0
    assert (run_dir / "metrics" / "distill.done.json").read_text() == stamp
    # the stage run again resumes: the teacher's samples are read back, training is at its end
    samples = (data / "samples.jsonl").read_text()
    assert main(["distill", *args]) == 0
    again = read_summary(run)["distill"]
    assert (data / "samples.jsonl").read_text() == samples
    assert json.loads((data / "counts.json").read_text())["samples_reused"] is True
    assert again["steps"] == 4 and again["student_accuracy"] == numbers["student_accuracy"]
    assert again["student_logit_accuracy"] == numbers["student_logit_accuracy"]


def test_a_fresh_student_is_made_again_for_a_retrained_tokenizer_of_the_same_size(tmp_path) -> None:
    """Redoing tokenize can give a tokenizer of the same size with other merges: the saved fresh
    student (weights and tokenizer) must follow the teacher's, not keep the old one."""
    from engine_helpers import byte_tokenizer

    from lm.model import ModelConfig
    from lm.tokenizer import Tokenizer, load_tokenizer
    from pipelines.distill.student import student_source
    from pipelines.run_dir import RunDir
    from pipelines.sft.train import ChatModelSource

    run = RunDir(tmp_path)
    d = DistillConfig(student={"num_layers": 1, "hidden_size": 32, "num_heads": 2, "num_kv_heads": 1})
    first = byte_tokenizer()
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"cd": 257, b"abcd": 258}  # same size
    second = Tokenizer.from_ranks("tiny", r"""\s?\w+|\s?[^\s\w]+|\s+""", ranks)
    assert first.vocab_size == second.vocab_size and first.encode("abcd") != second.encode("abcd")
    for tok in (first, second):
        teacher = ChatModelSource(tmp_path / "teacher", tok, ModelConfig(vocab_size=tok.vocab_size))
        source = student_source(run, "distill", d, teacher, seed=0)
        assert load_tokenizer(source.model_dir).encode("abcd") == tok.encode("abcd")


def test_teacher_samples_are_drawn_again_for_another_seed_or_teacher(tmp_path) -> None:
    """The stamp that lets a rerun read the teacher's samples back covers the seed and the teacher's
    files, also for a teacher imported without raychat.json (replaced at the same path)."""
    import os

    from engine_helpers import tiny_model_dir

    from pipelines.distill.teacher import _stamp

    teacher, _ = tiny_model_dir(tmp_path / "teacher")
    (teacher / "raychat.json").unlink()
    problems = [Problem(id="p1", question="1+1?", reference="#### 2", final="2")]
    d = DistillConfig()
    first = _stamp(teacher, problems, d, None, seed=0)
    assert _stamp(teacher, problems, d, None, seed=0) == first
    assert _stamp(teacher, problems, d, None, seed=1) != first
    weights = teacher / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _stamp(teacher, problems, d, None, seed=0) != first


def test_accuracy_figure_carries_error_bars_of_the_heldout_size() -> None:
    """Teacher, student and control differ by a few points on 200 problems: the bars show +-2 s.e."""
    from matplotlib.container import ErrorbarContainer

    from pipelines.distill.report import _accuracy_figure

    numbers = {"teacher_accuracy": 0.89, "student_accuracy": 0.685, "student_sft_only_accuracy": 0.46}
    fig = _accuracy_figure({**numbers, "n_heldout": 200, "kept": 948, "rejected": {"wrong": 3052}})
    (bars,) = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    (segments,) = bars.lines[2]
    half_widths = sorted(round(float(s[1][1] - s[0][1]) / 2, 4) for s in segments.get_segments())
    assert half_widths == sorted(round(2 * (p * (1 - p) / 200) ** 0.5, 4) for p in numbers.values())
