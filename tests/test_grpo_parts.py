"""The GRPO stage's parts without Ray: its config, the prompt order, reading replies, the gate and the
staleness bound of the rollout buffer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import word_tokenizer

from lm.chat import ChatFormat
from lm.engine import GenerationResult
from lm.rewards import ItemScore
from pipelines.config import ConfigError, load_config
from pipelines.grpo.config import R1_ZERO_SYSTEM, TOOLS_NOTE
from pipelines.grpo.data import Problem, PromptSource, load_problems
from pipelines.grpo.replies import ReplyReader
from pipelines.grpo.rollouts import Group, RolloutCollector, SampleLog


def grpo(*sets: str):
    return load_config(None, [f"grpo.{s}" for s in sets]).grpo


def test_modes_pick_their_prompt_and_rewards() -> None:
    r1 = grpo()
    assert r1.system() == TOOLS_NOTE and [r.name for r in r1.rewards.rules] == ["world_arithmetic"]
    assert grpo("tools=[]").system() is None
    zero = grpo("mode=r1_zero")
    assert zero.system() == R1_ZERO_SYSTEM
    assert [r.name for r in zero.rewards.rules] == ["world_arithmetic", "r1_format"]
    assert grpo("system_prompt=Be brief.").system() == "Be brief."
    assert r1.accuracy_key() == "world_arithmetic"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["algo.kl_coef=0.1", "reference.enabled=off"], "needs the reference"),
        (["eval.samples=4"], "needs eval.temperature"),
        (["accuracy_component=nope"], "not a rule's key"),
        (["generators.max_batch_size=4"], "must hold one group"),
        (["algo.advantage=nope"], "unknown advantage"),
        (["learner.lr=-1"], "learner.lr"),
        (["stalenes=2"], "unknown key"),
    ],
)
def test_bad_settings_fail_at_load_with_the_key(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        grpo(*sets)


def test_shipped_configs_hold_a_grpo_section() -> None:
    repo = Path(__file__).resolve().parents[1]
    tiny = load_config(repo / "configs" / "tiny.yaml").grpo
    assert tiny.generators.num_cpus + tiny.learner.num_cpus + 0.5 <= 2  # the demo's pools fit 2 cores
    gpu = load_config(repo / "configs" / "gpu-gsm8k-grpo.yaml").grpo
    assert gpu.weight_sync == "collective" and gpu.generators.engine == "vllm" and gpu.learner.num_gpus == 1


def test_jsonl_problems_hold_out_a_seeded_slice(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(50)]
    rows.append({"question": "", "answer": "1"})  # skipped: no question
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    cfg = grpo("data.source=jsonl", f"data.train_path={path}", "data.heldout_from_train=10")
    train, test = load_problems(cfg, tmp_path, seed=0)
    assert len(train) == 40 and len(test) == 10
    assert not {p.question for p in train} & {p.question for p in test}
    again, _ = load_problems(cfg, tmp_path, seed=0)
    assert again == train
    with pytest.raises(ConfigError, match="test_path, or heldout_from_train"):
        load_problems(grpo("data.source=jsonl", f"data.train_path={path}"), tmp_path, 0)


@pytest.fixture
def chat() -> ChatFormat:
    return ChatFormat(word_tokenizer(["wait", "answer"]))


def test_prompt_positions_visit_every_problem_once_per_epoch(chat: ChatFormat) -> None:
    problems = [Problem(f"p{i}", f"question {i}?", f"#### {i}") for i in range(7)]
    source = PromptSource(problems, chat, "sys", seed=3, max_tokens=256)
    first = [source.at(p).problem.id for p in range(7)]
    second = [source.at(p).problem.id for p in range(7, 14)]
    assert sorted(first) == sorted(second) == sorted(p.id for p in problems)
    assert first != second  # each epoch its own order
    assert [source.at(p).problem.id for p in range(7)] == first  # a position always means one problem
    assert PromptSource(problems, chat, "sys", seed=3, max_tokens=256).at(9).problem.id == second[2]
    with pytest.raises(ConfigError, match="longer than"):
        PromptSource(problems, chat, "sys", seed=3, max_tokens=5)


def test_replies_are_read_for_text_tool_calls_and_self_revision(chat: ChatFormat) -> None:
    tok = chat.tokenizer
    ids = tok.encode("So 2+3 is ") + [tok.token_id("<|calc_start|>")] + tok.encode("2+3")
    ids += [tok.token_id("<|calc_end|>"), tok.token_id("<|result_start|>")] + tok.encode("5")
    ids += [tok.token_id("<|result_end|>")] + tok.encode("5. Wait, let me check: #### 5")
    reply = ReplyReader(chat, ["wait", "let me check", "actually"]).read(ids + [chat.im_end_id])
    assert reply.text == "So 2+3 is 5. Wait, let me check: #### 5"
    assert reply.tool_calls == {"calc": 1} and reply.revises
    assert not ReplyReader(chat, ["actually"]).read(tok.encode("factually 5")).revises  # whole words only


def _group(position: int, version: int, rewards=(1.0, 0.0)) -> Group:
    results = [
        GenerationResult(request_id=position, prompt_ids=[1], token_ids=[2, 3], logprobs=None, forced=[False] * 2,
                         finish_reason="stop", sample_index=j, sampled_logprobs=[-1.0, -1.0], policy_version=version)
        for j in range(len(rewards))
    ]  # fmt: skip
    prompt = PromptSourceStub.prompt(position)
    g = Group(prompt, 0, results)
    g.scores = [ItemScore(g.sample_id(j), r, components={"acc": r}) for j, r in enumerate(rewards)]
    g.advantages, g.tool_calls, g.revises = [0.0] * len(rewards), [{}] * len(rewards), [False] * len(rewards)
    return g


class PromptSourceStub:
    @staticmethod
    def prompt(position: int):
        from pipelines.grpo.data import Prompt

        return Prompt(position, Problem(f"p{position}", "q", "#### 1"), [1])


def _collector(tmp_path: Path, chat: ChatFormat, staleness: int) -> RolloutCollector:
    cfg = grpo(
        f"max_staleness={staleness}", "prompts_per_step=2", "group_size=2", "generators.max_batch_size=8"
    )
    log = SampleLog(tmp_path / "samples.jsonl")
    return RolloutCollector([], lambda items: [], None, None, chat, cfg, log)


def test_the_gate_lets_generators_run_at_most_max_staleness_batches_ahead(tmp_path: Path, chat) -> None:
    sync = _collector(tmp_path, chat, staleness=0)
    assert sync.limit() == 2  # version 0: one batch may be generated
    sync.batches_taken = 1  # the learner took batch 0 and trains on it: nothing more until version 1
    assert sync.limit() == 0
    sync.set_weights(1, None)
    assert sync.limit() == 2
    ahead = _collector(tmp_path, chat, staleness=2)
    ahead.batches_taken = 1
    assert ahead.limit() == 2 * 2  # two more batches may be drawn by version 0 while batch 0 trains


def test_take_batch_drops_groups_staler_than_the_bound_and_asks_their_prompts_again(tmp_path, chat) -> None:
    c = _collector(tmp_path, chat, staleness=1)
    c.buffer = [_group(0, version=0), _group(1, version=2), _group(2, version=1), _group(3, version=2)]
    assert c.take_batch(2) is not None and c.batches_taken == 1  # versions 1 and 2 are fresh at step 2
    assert c.requeue == type(c.requeue)([(0, 1)])  # position 0 (version 0) dropped, asked again
    assert [g.prompt.position for g in c.buffer] == [3]
    assert c.take_batch(3) is None  # one group left, two needed
    c.samples.flush()
    rows = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {r["status"] for r in rows if r["position"] == 0} == {"stale"}
    trained = [r for r in rows if r["status"] == "trained"]
    assert sorted({r["position"] for r in trained}) == [1, 2] and {r["step"] for r in trained} == {3}
    assert max(r["staleness"] for r in trained) == 1
    assert c.outstanding() == [(0, 1), (3, 0)]  # what a resumed run asks again


def test_preflight_refuses_a_missing_model_a_reward_model_that_is_not_one_and_wrong_rule_args(
    tmp_path: Path,
) -> None:
    """One-line errors before Ray starts: the starting model, the reward model, the rules' args."""
    from pipelines.grpo.job import preflight, reward_model_dir

    def check(*sets: str) -> None:
        preflight(load_config(None, [f"run_dir={tmp_path}", *sets]), "grpo")

    with pytest.raises(ConfigError, match="no model at .*models/sft to start from; run the sft stage"):
        check()
    with pytest.raises(ConfigError, match="models/base"):
        check("grpo.mode=r1_zero")
    model = tmp_path / "models" / "sft"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    check()
    with pytest.raises(ConfigError, match=r"rewards.rm: no reward model at .*models/rm; run the rm stage"):
        check("grpo.rewards.rm={weight: 1}")
    with pytest.raises(ConfigError, match=r"rewards.rm: .*models/sft is not a reward model"):
        check("grpo.rewards.rm={weight: 1, model: '{run_dir}/models/sft'}")
    rm = tmp_path / "models" / "rm"
    rm.mkdir()
    (rm / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    for where in ("", ", model: models/rm", ", model: '{run_dir}/models/rm'", f", model: {rm}"):
        cfg = load_config(None, [f"run_dir={tmp_path}", f"grpo.rewards.rm={{weight: 1{where}}}"])
        assert reward_model_dir(cfg) == rm.resolve()
        check(f"grpo.rewards.rm={{weight: 1{where}}}")
    with pytest.raises(ConfigError, match="does not take args"):
        check("grpo.rewards.rules=[{name: r1_format, args: {patern: x}}]")


def test_a_group_is_scored_by_the_rules_and_the_reward_model_and_failed_calls_are_counted(
    tmp_path: Path, chat
) -> None:
    """The launcher's scorer asks both sources for a group and combines them; a reward-model call that
    failed (the pool returns ``timeout`` items, it never raises) leaves the rule rewards and shows in
    the step's ``rm_failed``; ``reward_rm`` is the raw score's mean over the samples that have one."""
    from actors.rewards import ScoredBatch
    from pipelines.grpo.launcher import rules_and_model
    from pipelines.grpo.loop import batch_metrics

    cfg = grpo("rewards.rm={weight: 2.0}", "group_size=4", "prompts_per_step=1")
    asked: list[list] = []

    def model(items):
        asked.append(list(items))
        raw = {0: 1.0, 1: 3.0, 2: None, 3: 2.0}
        return ScoredBatch(
            [
                ItemScore(it.id, 0.0, "timeout", error="the reward worker gave no answer")
                if raw[j] is None
                else ItemScore(it.id, 2.0 * raw[j], components={"rm": raw[j]})
                for j, it in enumerate(items)
            ]
        )

    def rules(items):
        return [
            ItemScore(it.id, float(j % 2), components={"world_arithmetic": float(j % 2)})
            for j, it in enumerate(items)
        ]

    g = _group(0, version=0, rewards=(0, 0, 0, 0))
    g.texts, g.tool_calls, g.revises = [], [], []
    collector = RolloutCollector([], rules, None, None, chat, cfg, SampleLog(tmp_path / "samples.jsonl"))
    items = collector.read_replies(g)
    assert items[0].messages == [{"role": "system", "content": TOOLS_NOTE}, {"role": "user", "content": "q"}]
    g.scores = rules_and_model(rules, model, cfg.rewards)(items)
    assert asked == [items]
    z = {0: -1.0, 1: 1.0, 3: 0.0}  # raw 1, 3, 2 over the three scored: mean 2, std sqrt(2/3)
    expected = [j % 2 + 2.0 * z[j] * (1.5**0.5) if j in z else j % 2 for j in range(4)]
    assert [s.reward for s in g.scores] == pytest.approx(expected)
    metrics = batch_metrics([g], cfg, step=0)
    assert metrics["rm_failed"] == 0.25 and metrics["reward_rm"] == pytest.approx(2.0)
    assert metrics["reward_world_arithmetic"] == 0.5 and metrics["reward_failed"] == 0.0
    assert "rm_failed" not in batch_metrics([g], grpo("group_size=4", "prompts_per_step=1"), step=0)


def test_curves_name_a_lone_reward_and_leave_out_tools_never_called(tmp_path: Path, monkeypatch) -> None:
    """One reward component is the mean itself (one line, named by it); calls per answer are on their
    own axis, and a tool the policy never called draws no flat line."""
    import pipelines.grpo.report as report
    from pipelines.run_dir import RunDir

    figures: dict[str, object] = {}

    def keep(fig, run, stage, name, dpi=110) -> str:
        figures[name] = fig
        return name

    monkeypatch.setattr(report, "save_plot", keep)
    rows = [
        {"step": s, "reward_mean": 0.1 * s, "reward_world_arithmetic": 0.1 * s, "clip_frac": 0.0,
         "tool_calc_per_completion": 1.0 + s, "tool_search_per_completion": 0.0}
        for s in range(1, 6)
    ]  # fmt: skip
    report.plot_curves(rows, RunDir(tmp_path), "grpo")

    def labels(ax) -> list[str]:
        return [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]

    reward, clip = figures["curves"].axes[0], figures["curves"].axes[5]
    assert labels(reward) == ["reward: world_arithmetic"]
    calls = next(a for a in figures["curves"].axes if a is not clip and a.bbox.bounds == clip.bbox.bounds)
    assert labels(clip) == ["clip fraction (left)"] and labels(calls) == ["calculator calls / answer (right)"]
    assert clip.get_ylim()[0] == 0

    rows[0]["reward_format"] = 0.5
    report.plot_curves(rows, RunDir(tmp_path), "grpo")
    assert labels(figures["curves"].axes[0]) == ["reward (weighted mean)", "world_arithmetic", "format"]
