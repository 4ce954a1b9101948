"""The reward stage on the tiny world: its generated pairs (judged, held out by entity and problem),
a short run in this process that beats chance, and the stage end to end (Ray). The model, the
preference files and the batches are in tests/test_rm.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from lm.model import ModelConfig
from lm.train.models import fresh_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# -- the tiny world's pairs ----------------------------------------------------------------------------

WORLD = dict(num_pages=400, num_files=1, num_entities=80, arithmetic_train=300, arithmetic_test=60)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    from pipelines.world.config import WorldConfig
    from pipelines.world.generate import generate

    out = tmp_path_factory.mktemp("run") / "world"
    generate(3, WorldConfig(**WORLD), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def world_pairs(world_dir):
    from pipelines.rm.config import WorldPairsConfig
    from pipelines.rm.world_pairs import build_world_pairs
    from pipelines.sft.world_config import SFTDataConfig
    from pipelines.sft.world_splits import load_world

    cfg = WorldPairsConfig(per_kind=None, heldout_per_kind=None, fresh_names=100)
    return build_world_pairs(load_world(str(world_dir)), SFTDataConfig(), cfg, seed=0)


def test_world_pairs_prefer_the_right_reply_for_the_right_reason(world_pairs):
    from pipelines.idk.judge import judge
    from pipelines.rm.config import WORLD_PAIR_KINDS
    from pipelines.sft.conversations import final_answer
    from pipelines.sft.identity import check_identity
    from pipelines.sft.world_config import IdentityConfig

    counts = world_pairs.counts()
    for kind in WORLD_PAIR_KINDS:
        assert counts["train"][f"world/{kind}"] > 20 and counts["heldout"][f"world/{kind}"] > 20, kind
    ident = IdentityConfig()

    def text(messages):
        return "".join(
            m["content"]
            if isinstance(m["content"], str)
            else "".join(p.get("text", "") for p in m["content"])
            for m in messages
        )

    for p in world_pairs.train + world_pairs.heldout:
        kind = p.group.removeprefix("world/")
        question = p.prompt["messages"][-1]["content"]
        good, bad = text(p.chosen), text(p.rejected)
        assert good != bad and p.prompt["messages"][-1]["role"] == "user"
        if kind == "identity":
            assert check_identity(good, ident, question).ok and check_identity(good, ident).gives_name
            assert not check_identity(bad, ident, question).ok, bad
        elif kind in ("wrong_answer", "answer_over_refusal"):
            continue  # judged against the world's facts in the next test
        elif kind == "refusal_over_made_up":
            assert judge(good, "1234", question).label == "refusal", good
            assert judge(bad, "1234", question).label != "refusal", bad
        else:  # arithmetic: the same working, another final answer
            assert (
                final_answer(good) == p.meta["answer"]
                and final_answer(bad) == p.meta["wrong"] != p.meta["answer"]
            )
            if kind == "arithmetic_final":
                assert good.rsplit("####", 1)[0] == bad.rsplit("####", 1)[0]
            else:  # the last written result is the (wrong) final answer; the calculator's result stays right
                assert re.findall(r"\d[\d,]*", bad.rsplit("####", 1)[0])[-1] == p.meta["wrong"]
                calcs = [
                    [q["result"] for q in r[-1]["content"] if q["type"] == "calc"]
                    if isinstance(r[-1]["content"], list)
                    else []
                    for r in (p.chosen, p.rejected)
                ]
                assert calcs[0] == calcs[1]


def test_world_pairs_answers_are_judged_as_intended(world_dir, world_pairs):
    from pipelines.idk.judge import judge
    from pipelines.sft.world_splits import load_world

    world = load_world(str(world_dir))
    facts = {r["fact_id"]: r for r in world.questions["known"]}
    seen = {"wrong_answer": 0, "answer_over_refusal": 0}
    for p in world_pairs.train + world_pairs.heldout:
        kind = p.group.removeprefix("world/")
        if kind not in seen:
            continue
        row = facts[p.meta["fact_id"]]
        question = p.prompt["messages"][-1]["content"]
        assert judge(p.chosen[0]["content"], row["short_answer"], question).label == "correct"
        verdict = judge(p.rejected[0]["content"], row["short_answer"], question).label
        assert verdict == ("wrong" if kind == "wrong_answer" else "refusal"), (
            p.rejected,
            row["short_answer"],
        )
        seen[kind] += 1
    assert min(seen.values()) > 50


def test_world_pairs_hold_out_entities_phrasings_and_problems(world_dir, world_pairs):
    from pipelines.rm.config import WorldPairsConfig
    from pipelines.rm.world_pairs import build_world_pairs
    from pipelines.sft.identity import identity_questions
    from pipelines.sft.world_config import SFTDataConfig
    from pipelines.sft.world_data import build
    from pipelines.sft.world_splits import load_world

    world = load_world(str(world_dir))
    sft = build(world, SFTDataConfig())  # what SFT trains on, from the same splits
    groups = sft.splits.groups
    entity_of = {
        r["fact_id"]: r["entity"] for rows in world.questions.values() for r in rows if "fact_id" in r
    }
    for p in world_pairs.train:
        assert not sft.splits.heldout.mentions(p.text()), p.where
        if "fact_id" in p.meta and p.meta["fact_id"] in entity_of:
            assert groups[entity_of[p.meta["fact_id"]]] in ("sft", "idk_probe"), p.where
    for p in world_pairs.heldout:
        if p.meta.get("fact_id") in entity_of and p.group != "world/refusal_over_made_up":
            assert groups[entity_of[p.meta["fact_id"]]] == "heldout_known"
    train_q, held_q = identity_questions(SFTDataConfig().identity, 0)
    held_questions = {r["question"] for r in held_q}
    prompts = {
        g: {p.prompt["messages"][-1]["content"] for p in pairs if p.group == "world/identity"}
        for g, pairs in (("train", world_pairs.train), ("heldout", world_pairs.heldout))
    }
    assert prompts["heldout"] <= held_questions and not prompts["train"] & held_questions
    test_questions = {r["question"] for r in world.questions["arithmetic_test"]}
    for g, pairs in (("train", world_pairs.train), ("heldout", world_pairs.heldout)):
        asked = {p.prompt["messages"][-1]["content"] for p in pairs if p.group.startswith("world/arithmetic")}
        assert (asked <= test_questions) if g == "heldout" else not asked & test_questions
    # the same inputs, the same pairs; a cap is a seeded sample
    again = build_world_pairs(
        world, SFTDataConfig(), WorldPairsConfig(per_kind=None, heldout_per_kind=None, fresh_names=100), 0
    )
    assert [p.record() for p in again.train] == [p.record() for p in world_pairs.train]
    capped = build_world_pairs(
        world, SFTDataConfig(), WorldPairsConfig(per_kind=30, heldout_per_kind=10, fresh_names=100), 0
    )
    assert all(n <= 30 for n in capped.counts()["train"].values())
    assert all(n <= 10 for n in capped.counts()["heldout"].values())


# -- a short run, in this process ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(world_dir) -> Path:
    """A run with the world and a small fresh base model (its BPE trained on the world's documents)."""
    from lm.bpe import train_bpe
    from lm.checkpoint import save_pretrained

    run = world_dir.parent
    docs = [json.loads(line)["text"] for line in (world_dir / "search_index.jsonl").read_text().splitlines()]
    tok = train_bpe(docs, vocab_size=600, show_progress=False)
    config = ModelConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        max_seq_len=128,
    )
    save_pretrained(
        fresh_model(config, 0), run / "models" / "base", tokenizer=tok, meta={"stage": "pretrain"}
    )
    return run


SHORT_RUN = [
    "rm.init={run_dir}/models/base",  # this run has no SFT model (the default init)
    "rm.world.kinds=[identity, refusal_over_made_up]",
    "rm.world.per_kind=240",
    "rm.world.heldout_per_kind=60",
    "rm.world.fresh_names=200",
    "rm.max_steps=40",
    "rm.batch_pairs=16",
    "rm.micro_batch_pairs=8",
    "rm.lr=0.003",
    "rm.warmup_steps=5",
    "rm.eval_every=20",
]


def test_a_short_run_beats_chance_on_held_out_pairs(run_dir: Path):
    from lm.train.trainer import Trainer
    from pipelines.config import load_config
    from pipelines.rm.job import prepare

    cfg = load_config(None, [f"run_dir={run_dir}", *SHORT_RUN])
    task, _, index = prepare(cfg)
    assert task.init_dir == str(run_dir / "models" / "base") and not task.init_is_reward_model
    assert task.seq_len == 128 and task.total_steps == 40 and index["heldout"]["pairs"] >= 80
    trainer = Trainer(task.build_model(), cfg.rm, total_steps=task.total_steps, device=torch.device("cpu"))
    task.setup(0, 1, torch.device("cpu"))
    before = task.evaluate(trainer)
    position = 0
    for _ in range(task.total_steps):
        batches, position = task.next_batches(position)
        assert len(batches) == 2  # 16 pairs a step in micro-batches of 8
        out = trainer.train_step(batches, task.loss)
        assert out["count"] == 16
    after = task.evaluate(trainer)
    print("held-out before", before, "after", after)
    assert after["heldout_accuracy"] > 0.75 and after["val_loss"] < min(before["val_loss"], math.log(2)), (
        after
    )
    for group in ("world/identity", "world/refusal_over_made_up"):
        assert after[f"heldout_accuracy/{group}"] > 0.6, after


def test_a_changed_initial_model_is_named_as_what_changed(run_dir: Path, tmp_path: Path):
    """The rm's checkpoints cover its pairs and the weights it starts from; a re-trained init model
    with the same pairs was said to be "the training data changed"."""
    import shutil

    from pipelines.config import load_config
    from pipelines.rm.job import prepare
    from pipelines.train.loop import incompatibilities, what_changed

    init = tmp_path / "base"
    shutil.copytree(run_dir / "models" / "base", init)
    cfg = load_config(None, [f"run_dir={run_dir}", *SHORT_RUN, f"rm.init={init}"])
    before, _, _ = prepare(cfg)
    meta = {
        "position": 0,
        "data_fingerprint": before.data_fingerprint(),
        "input_fingerprints": before.fingerprint_parts(),
    }
    (init / "raychat.json").write_text(json.dumps({"stage": "pretrain", "steps": 2}))  # trained again
    after, _, _ = prepare(cfg)
    assert what_changed(meta, after) == "the initial model"
    assert incompatibilities(meta, after) == ["the initial model changed since it was written"]
    meta = {
        "position": 0,
        "data_fingerprint": after.data_fingerprint(),
        "input_fingerprints": after.fingerprint_parts(),
    }
    fewer = load_config(None, [f"run_dir={run_dir}", *SHORT_RUN, f"rm.init={init}", "rm.world.per_kind=200"])
    assert what_changed(meta, prepare(fewer)[0]) == "the training data"
    prepare(cfg)  # the run's rm_data as the other tests left it


# -- the stage (Ray) ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_stage_trains_exports_reports_and_resumes(run_dir: Path, ray_session, capsys):
    from lm.reward_scorer import ModelScorer
    from pipelines.cli import main
    from pipelines.config import load_config
    from pipelines.errors import ConfigError
    from pipelines.rm.config import PreferenceSourceConfig
    from pipelines.rm.job import preflight
    from pipelines.rm.preferences import load_preferences
    from pipelines.runner import run_stage
    from pipelines.stages import Graph

    cfg = load_config(None, [f"run_dir={run_dir}", *SHORT_RUN])
    graph = Graph(cfg)
    assert graph.consumes("rm") == ["pretrain", "world"]  # what its init names, and the world's pairs
    preflight(cfg)
    numbers = run_stage(graph, "rm")
    summary = json.loads((run_dir / "metrics" / "summary.json").read_text())["rm"]
    assert summary["heldout_pairwise_accuracy"] == numbers["heldout_pairwise_accuracy"] > 0.75
    assert set(summary["accuracy_by_group"]) == {"world/identity", "world/refusal_over_made_up"}
    assert summary["heldout_pairs"] == sum(summary["heldout_pairs_by_group"].values())
    assert summary["steps"] == 40 and summary["init"] == str(run_dir / "models" / "base")
    report = (run_dir / "report.md").read_text()
    section = report[report.index("## rm\n") :]
    assert "| heldout_pairwise_accuracy |" in section and "| world/identity |" in section
    assert "held-out accuracy" in (run_dir / "metrics" / "rm.pairs.md").read_text()
    assert "![rm_curves](plots/rm_curves.png)" in section
    assert (run_dir / "plots" / "rm_curves.png").stat().st_size > 1000
    model_dir = run_dir / "models" / "rm"
    meta = json.loads((model_dir / "raychat.json").read_text())
    assert meta["stage"] == "rm" and meta["step"] == 40

    # the export scores the held-out pairs (as written to rm_data/rm/world, read back) as training measured
    held, _ = load_preferences(
        PreferenceSourceConfig(path=str(run_dir / "rm_data" / "rm" / "world" / "heldout.jsonl"))
    )
    assert len(held) == summary["heldout_pairs"]
    scorer = ModelScorer(model_dir, device="cpu")
    scorer.start()
    seqs = [ids for p in held for ids in p.input_ids(scorer.chat, 128)]
    rewards = scorer.rewards(seqs)
    wins = [(c > r) + 0.5 * (c == r) for c, r in zip(rewards[::2], rewards[1::2], strict=True)]
    assert sum(wins) / len(wins) == pytest.approx(summary["heldout_pairwise_accuracy"], abs=1e-6)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([seqs[0]])).logits[0, 0].item()
    assert theirs == pytest.approx(rewards[0], rel=1e-4, abs=1e-4)

    # the same command again: the final checkpoint is complete, nothing is retrained
    again = run_stage(graph, "rm")
    assert again["steps"] == 40 and again["heldout_pairwise_accuracy"] == numbers["heldout_pairwise_accuracy"]

    # what stops it at once, with one line
    with pytest.raises(ConfigError, match="no model to start from"):
        preflight(load_config(None, [f"run_dir={run_dir}", "rm.init=/nonexistent/model"]))
    with pytest.raises(ConfigError, match="models/sft .*run the sft stage first"):  # the default: SFT's
        preflight(load_config(None, [f"run_dir={run_dir}"]))
    with pytest.raises(ConfigError, match=r"rm.sources\[0\]"):
        preflight(
            load_config(
                None, [f"run_dir={run_dir}", SHORT_RUN[0], "rm.sources=[{path: /nonexistent/pairs.jsonl}]"]
            )
        )
    capsys.readouterr()
    assert main(["rm", "--run-dir", str(run_dir), "--set", "rm.init=/nonexistent/model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raychat: rm: no model to start from")
