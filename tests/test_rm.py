"""The reward model: Bradley-Terry, what it reads, its export, the scorer, the preference files, the
held-out split, the batches each rank takes and the reward pool. The tiny world's pairs, a short run
and the stage end to end are in tests/test_rm_world.py."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lm.chat import ChatFormat, ConversationTooLong
from lm.model import ModelConfig
from lm.reward_model import RewardModel, bradley_terry_loss, reward_input_ids
from lm.rewards import RewardItem
from lm.tokenizer import R50K_PATTERN, Tokenizer
from lm.train.models import fresh_model
from lm.train.packing import pack_sequences

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

BYTES = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})
TINY = ModelConfig(
    vocab_size=BYTES.vocab_size,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=64,
    max_seq_len=512,
)
USER = {"role": "user", "content": "Who made you?"}


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def tiny_rm(seed: int = 0) -> RewardModel:
    return RewardModel.from_base(fresh_model(TINY, seed), seed=seed + 1).eval()


# -- the loss and what the model reads ----------------------------------------------------------------


class FixedScores(torch.nn.Module):
    """A 'model' whose scores are given: the loss is then a function of known margins."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, input_ids, document_ids=None):
        return self.scores


def test_bradley_terry_loss_is_the_hand_computed_sum_over_pairs():
    scores = torch.tensor([[0.0, 3.0, 9.0, 1.0], [0.0, 1.0, 2.0, 0.5]])
    batch = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "chosen_last": torch.tensor([[0, 1], [1, 1], [1, 3]]),  # 3.0, 1.0, 0.5
        "rejected_last": torch.tensor([[0, 3], [1, 2], [1, 3]]),  # 1.0, 2.0, 0.5
    }
    out = bradley_terry_loss(FixedScores(scores), batch)
    # margins 2, -1, 0: -log sigmoid(m) = log(1 + e^-m)
    expected = math.log1p(math.exp(-2)) + math.log1p(math.exp(1)) + math.log(2)
    assert out.total.item() == pytest.approx(expected, rel=1e-6)
    assert out.count == 3  # pairs, not tokens
    assert out.sums["accuracy"].item() == 1  # only the first pair is ranked the right way round
    assert out.sums["margin"].item() == pytest.approx(1.0)


def test_reward_inputs_end_at_the_reply_and_share_a_prompt_cut_the_same_way():
    chat = ChatFormat(BYTES)
    history = []
    for i in range(4):
        history += [
            {"role": "user", "content": f"question {i} " * 5},
            {"role": "assistant", "content": "ok " * 5},
        ]
    prompt = [{"role": "system", "content": "Be brief."}, *history, USER]
    good, bad = reply("The raychat project built me."), reply("I am ChatGPT.")
    full = reward_input_ids(chat, prompt, [good, bad])
    for ids, text in zip(full, ("The raychat project built me.", "I am ChatGPT."), strict=True):
        assert ids[-1] == chat.im_end_id and ids[0] == BYTES.eot_id
        assert BYTES.decode(ids).endswith(f"<|im_start|>assistant\n{text}<|im_end|>")
        rendered = chat.render_conversation(prompt + reply(text)).ids
        assert rendered[: len(ids)] == ids and len(rendered) == len(ids) + 1  # all but the trailing "\n"
    head = chat.render_prompt(prompt).ids
    tails = [f[len(head) :] for f in full]
    budget = len(head) + max(map(len, tails)) - 20
    short = reward_input_ids(chat, prompt, [good, bad], max_tokens=budget)
    prompts = []
    for s, t in zip(short, tails, strict=True):
        assert len(s) <= budget and s[-len(t) :] == t  # the reply is never cut
        prompts.append(s[: len(s) - len(t)])
    assert (
        prompts[0] == prompts[1] == chat.render_prompt(prompt, max_tokens=budget - max(map(len, tails))).ids
    )
    text = BYTES.decode(prompts[0])
    assert "Be brief." in text and "question 0" not in text and "question 3" in text  # oldest exchanges go
    with pytest.raises(ConversationTooLong):
        reward_input_ids(chat, prompt, [reply("x" * 300)], max_tokens=200)
    tools = reward_input_ids(
        chat,
        [USER],
        [
            [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "calc", "expression": "2+3", "result": "5"},
                        {"type": "text", "text": "5."},
                    ],
                }
            ]
        ],
    )[0]
    assert BYTES.decode(tools).endswith(
        "<|calc_start|>2+3<|calc_end|><|result_start|>5<|result_end|>5.<|im_end|>"
    )
    with pytest.raises(ValueError, match="end with an assistant"):
        reward_input_ids(
            chat, [USER], [[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]]
        )


def test_packed_pairs_score_as_each_sequence_alone():
    rm = tiny_rm()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 250, size=n).tolist() for n in (5, 17, 3, 30, 9, 12)]
    rows, ends = pack_sequences(seqs, row_len=32)
    assert rows["input_ids"].shape[1] == 32 and len(ends) == len(seqs)
    with torch.no_grad():
        packed = rm(torch.from_numpy(rows["input_ids"]), document_ids=torch.from_numpy(rows["document_ids"]))
        for s, (row, last) in zip(seqs, ends, strict=True):
            assert rows["input_ids"][row, last] == s[-1]
            alone = rm(torch.tensor([s]))[0, -1]
            torch.testing.assert_close(packed[row, last], alone, rtol=1e-4, atol=1e-5)


# -- the export ---------------------------------------------------------------------------------------


def test_the_export_loads_in_transformers_with_the_same_scores(tmp_path: Path):
    from lm.checkpoint import CheckpointError, load_pretrained, load_reward_model, save_pretrained

    transformers = pytest.importorskip("transformers")
    rm = tiny_rm(3)
    save_pretrained(rm, tmp_path / "rm", tokenizer=BYTES, meta={"stage": "rm"})
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 1
    assert config["pad_token_id"] == BYTES.token_id("<|pad|>")
    assert json.loads((tmp_path / "rm" / "raychat.json").read_text())["num_params"] == rm.num_params()
    again, meta = load_reward_model(tmp_path / "rm")
    assert meta["stage"] == "rm"
    for k, v in rm.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k

    chat = ChatFormat(BYTES)
    seqs = reward_input_ids(
        chat, [USER], [reply("The raychat project built me."), reply("No."), reply("I am Gemini.")]
    )
    ids = torch.full((3, max(map(len, seqs))), config["pad_token_id"])
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm", dtype=torch.float32)
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    with torch.no_grad():
        theirs = hf.eval()(input_ids=ids).logits[:, 0]  # at each row's last non-pad token
        ours = torch.stack([rm(torch.tensor([s]))[0, -1] for s in seqs])
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)

    with pytest.raises(CheckpointError, match="holds a reward model"):
        load_pretrained(tmp_path / "rm")
    save_pretrained(fresh_model(TINY, 0), tmp_path / "lm", tokenizer=BYTES)
    with pytest.raises(CheckpointError, match="holds a language model"):
        load_reward_model(tmp_path / "lm")


def test_model_scorer_scores_in_batches_with_its_weight(tmp_path: Path):
    from lm.checkpoint import save_pretrained
    from lm.reward_scorer import ModelScorer

    rm = tiny_rm(5)
    save_pretrained(rm, tmp_path / "rm", tokenizer=BYTES)
    chat = ChatFormat(BYTES)
    scorer = ModelScorer(tmp_path / "rm", weight=0.5, batch_tokens=300, max_tokens=120)
    system = [{"role": "system", "content": "Be brief."}, USER]
    items = [
        RewardItem(0, "The raychat project built me.", prompt="Who made you?"),
        RewardItem(1, "I am ChatGPT, made by OpenAI. " * 2, prompt="Who made you?"),
        RewardItem(2, "Me.", messages=system),
        RewardItem(3, "x", messages=[{"role": "wizard", "content": "?"}]),  # cannot be rendered
        RewardItem(4, "y" * 200, prompt="Who made you?"),  # longer than max_tokens: its end is scored
    ]
    scores = scorer.score(items)
    assert [s.id for s in scores] == [0, 1, 2, 3, 4]
    assert scores[3].status == "error" and "unknown role" in scores[3].error and scores[3].reward == 0
    with torch.no_grad():
        for item, s in zip(items[:3], scores[:3], strict=True):
            prompt = item.messages or [{"role": "user", "content": item.prompt}]
            ids = reward_input_ids(chat, prompt, [reply(item.completion)])[0]
            expected = rm(torch.tensor([ids]))[0, -1].item()
            assert s.status == "ok" and s.components["rm"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
            assert s.reward == pytest.approx(0.5 * s.components["rm"])
    assert scores[4].status == "ok" and scorer.stats["truncated"] == 1
    assert scorer.stats["batches"] >= 2 and scorer.stats["errors"] == 1  # 300 tokens a batch: several


# -- preference files ---------------------------------------------------------------------------------


def test_hh_rlhf_and_dpo_demo_load_every_record(shared_data: Path):
    from pipelines.rm.config import PreferenceSourceConfig
    from pipelines.rm.preferences import load_preferences

    hh_file = shared_data / "preference" / "hh-rlhf_harmless-base_test_part1.jsonl.gz"
    pairs, report = load_preferences(PreferenceSourceConfig(path=str(hh_file), name="hh-rlhf"))
    lines = gzip.open(hh_file, "rt").read().splitlines()
    assert report.records == len(lines) == 1850
    assert len(pairs) == 1846 and dict(report.skipped) == {"empty_reply": 4}  # an empty chosen reply
    first = json.loads(lines[0])
    p = pairs[0]
    assert p.group == "hh-rlhf" and p.where.endswith(":1")
    assert [m["role"] for m in p.prompt["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert first["chosen"].endswith(p.chosen[-1]["content"]) and first["rejected"].endswith(
        p.rejected[-1]["content"]
    )
    assert all(p.prompt["messages"][-1]["role"] == "user" and p.chosen != p.rejected for p in pairs)

    dpo, report = load_preferences(
        PreferenceSourceConfig(path=str(shared_data / "preference" / "dpo_en_demo.json"))
    )
    assert report.records == len(dpo) == 300 and not report.skipped and report.formats
    assert set(report.formats.values()) == {"sharegpt"}
    raw = json.loads((shared_data / "preference" / "dpo_en_demo.json").read_text())
    assert dpo[0].chosen[-1]["content"] == raw[0]["chosen"]["value"]
    assert dpo[0].prompt["messages"][-1]["content"] == raw[0]["conversations"][-1]["value"]


def test_preference_formats_and_bad_records(tmp_path: Path):
    from pipelines.rm.config import PreferenceSourceConfig
    from pipelines.rm.preferences import load_preferences
    from pipelines.sft.sources import SourceError

    good_hh = {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: go away",
    }
    records = [
        good_hh,
        {"chosen": "Human hi", "rejected": "\n\nHuman: hi\n\nAssistant: x"},  # no turns
        {"chosen": good_hh["chosen"], "rejected": good_hh["chosen"]},  # identical
        {"text": "not a pair"},
        {
            "chosen": "\n\nHuman: a\n\nAssistant: b",
            "rejected": "\n\nHuman: c\n\nAssistant: d",
        },  # no shared prompt
    ]
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "{broken\n")
    pairs, report = load_preferences(PreferenceSourceConfig(path=str(path), format="hh"))
    assert len(pairs) == 1 and pairs[0].chosen == reply("hello") and pairs[0].rejected == reply("go away")
    assert dict(report.skipped) == {
        "bad_transcript": 1,
        "identical": 1,
        "not_a_pair": 1,
        "no_shared_prompt": 1,
        "invalid_json": 1,
    }
    with pytest.raises(SourceError, match="unusable"):
        load_preferences(PreferenceSourceConfig(path=str(path), format="hh"), max_bad_fraction=0.5)

    trl = [
        {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."},
        {
            "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": {"role": "assistant", "content": "No."},
        },
        {
            "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
            "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}],
        },  # implicit prompt
        {"prompt": "Q", "chosen": "", "rejected": "B"},
    ]
    (tmp_path / "trl.json").write_text(json.dumps(trl, indent=1))
    pairs, report = load_preferences(PreferenceSourceConfig(path=str(tmp_path / "trl.json")))
    assert set(report.formats.values()) == {"pairs"} and dict(report.skipped) == {"empty_reply": 1}
    assert [p.chosen[-1]["content"] for p in pairs] == ["4.", "Hello!", "A"]
    assert pairs[1].prompt["messages"][0]["role"] == "system" and pairs[2].prompt["messages"] == [
        {"role": "user", "content": "Q"}
    ]
    # a pair written by the stage reads back as itself
    (tmp_path / "again.jsonl").write_text(json.dumps(pairs[1].record()) + "\n")
    again, _ = load_preferences(PreferenceSourceConfig(path=str(tmp_path / "again.jsonl")))
    assert (again[0].prompt, again[0].chosen, again[0].rejected) == (
        pairs[1].prompt,
        pairs[1].chosen,
        pairs[1].rejected,
    )


def test_pairs_the_stage_cannot_use_are_refused_when_read(tmp_path: Path):
    """An empty prompt or a reply of white space was trained on; a prompt ending with the assistant
    was dropped only when the stage tokenized it (a log line per pair, as "ChatFormatError"). Now all
    are skipped when the file is read, counted by reason, and what is read tokenizes whole."""
    from pipelines.rm.config import PreferenceSourceConfig
    from pipelines.rm.data import tokenize
    from pipelines.rm.preferences import load_preferences

    records = [
        {"prompt": "", "chosen": "4.", "rejected": "5."},
        {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": " \n"}],
         "chosen": "Hi!", "rejected": "No."},
        {"prompt": "What is 2+2?", "chosen": " \n\t", "rejected": "5."},
        {"prompt": [USER, {"role": "assistant", "content": "Me."}], "chosen": "4.", "rejected": "5."},
        {"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."},
    ]  # fmt: skip
    (tmp_path / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    hh = {"chosen": "\n\nHuman: \n\nAssistant: yes", "rejected": "\n\nHuman: \n\nAssistant: no"}
    (tmp_path / "hh.jsonl").write_text(json.dumps(hh) + "\n")
    pairs, report = load_preferences(PreferenceSourceConfig(path=str(tmp_path / "*.jsonl"), name="mine"))
    assert [p.where for p in pairs] == [f"{tmp_path / 'trl.jsonl'}:5"]
    assert dict(report.skipped) == {"empty_prompt": 3, "empty_reply": 1, "prompt_ends_with_assistant": 1}
    _, kept, dropped = tokenize(pairs, ChatFormat(BYTES), 128, {"mine": 0})
    assert kept == [0] and not dropped


def test_held_out_by_prompt_is_stable_and_keeps_shared_prompts_together():
    from pipelines.rm.data import hold_out
    from pipelines.rm.pairs import make_pair

    pairs = [
        make_pair([{"role": "user", "content": f"question {i % 50}"}], reply("a"), reply(f"b{i}"), "src")
        for i in range(400)
    ]
    train, held, unused = hold_out(pairs, 0.2, None, "src")
    assert 0.05 < len(held) / len(pairs) < 0.4 and unused == 0
    assert not {p.split_key() for p in train} & {p.split_key() for p in held}
    again = hold_out(pairs, 0.2, None, "src")
    assert [p.rejected for p in again[1]] == [p.rejected for p in held]
    _, capped, unused = hold_out(pairs, 0.2, 10, "src")
    assert len(capped) == 10 and unused == len(held) - 10


def test_config_errors_name_the_key():
    from pipelines.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="batch_pairs"):
        load_config(None, ["rm.batch_pairs=30", "rm.micro_batch_pairs=8"])
    with pytest.raises(ConfigError, match="mixture_size"):
        load_config(None, ["rm.world.weight=2"])
    with pytest.raises(ConfigError, match="unknown"):
        load_config(None, ["rm.world.kinds=[identity, jokes]"])
    with pytest.raises(ConfigError, match="rm.sources.0.format"):
        load_config(None, ["rm.sources=[{path: x.jsonl, format: csv}]"])
    cfg = load_config(None, ["rm.mixture_size=100", "rm.world.weight=3"])
    assert cfg.rm.world.weight == 3 and cfg.rm.seq_len is None


# -- the reward pool (Ray) and the batches ranks take -------------------------------------------------


@pytest.mark.slow
def test_a_reward_pool_scores_with_the_reward_model_and_a_rule_by_their_weights(tmp_path: Path, ray_session):
    from actors.rewards import RewardPool, RewardPoolConfig, score_with
    from lm.checkpoint import save_pretrained
    from lm.reward_scorer import ModelScorer
    from lm.rewards import RewardConfig

    save_pretrained(tiny_rm(7), tmp_path / "rm", tokenizer=BYTES)
    rewards = RewardConfig(rules=[{"name": "numeric_accuracy", "weight": 2.0}], rm={"weight": 0.5})
    items = [
        RewardItem(i, text, reference="7", prompt="What is 3 + 4?")
        for i, text in enumerate(["#### 7", "It is 7.", "#### 8", "I don't know.", "7" * 40, "seven"] * 3)
    ]
    pool_config = RewardPoolConfig(num_workers=1, num_cpus=0.5, chunk_size=5)
    rm_pool = RewardPool.for_model(rewards, str(tmp_path / "rm"), pool_config)
    rule_pool = RewardPool.for_rules(rewards, RewardPoolConfig(num_workers=1, num_cpus=0.5, isolate=False))
    try:
        rm_pool.wait_ready()
        batch = score_with([rule_pool, rm_pool], items)
    finally:
        rm_pool.close()
        rule_pool.close()
    local = ModelScorer(tmp_path / "rm").score(items)
    assert [s.id for s in batch.scores] == [it.id for it in items] and batch.counts["ok"] == len(items)
    assert batch.counts["rm-rewards.chunks"] == 4  # 18 items in chunks of 5
    for item, score, mine in zip(items, batch.scores, local, strict=True):
        rule = 1.0 if item.completion in ("#### 7", "It is 7.") else 0.0
        assert score.components["numeric_accuracy"] == rule
        assert score.components["rm"] == pytest.approx(mine.components["rm"], rel=1e-4, abs=1e-5)
        assert score.reward == pytest.approx(2.0 * rule + 0.5 * score.components["rm"], rel=1e-5)
    with pytest.raises(ValueError, match="rewards.rm"):
        RewardPool.for_model(RewardConfig(), str(tmp_path / "rm"))


def _pair_indices(batch: dict, seqs: list[list[int]]) -> list[int]:
    """Which pairs a packed batch holds: each chosen sequence read back from its row, found in ``seqs``."""
    out = []
    for (row, last), (row2, last2) in zip(batch["chosen_last"], batch["rejected_last"], strict=True):
        docs = batch["document_ids"]
        chosen = batch["input_ids"][row][docs[row] == docs[row, last]].tolist()
        rejected = batch["input_ids"][row2][docs[row2] == docs[row2, last2]].tolist()
        i = seqs.index(chosen) // 2
        assert seqs[2 * i + 1] == rejected
        out.append(i)
    return out


def test_ranks_take_disjoint_shares_and_run_the_same_number_of_batches():
    from pipelines.rm.data import PairBatches, PairSet, eval_batches

    rng = np.random.default_rng(1)
    seqs = [
        [k, *rng.integers(1, 200, size=int(n)).tolist()] for k, n in enumerate(rng.integers(3, 20, size=50))
    ]
    offsets = np.concatenate([[0], np.cumsum([len(q) for q in seqs])])
    pairs = PairSet(np.concatenate([np.array(q, dtype=np.uint16) for q in seqs]), offsets, np.arange(25) % 3)
    for position in (0, 16, 24):  # the second epoch starts inside the step at 24
        steps = [
            PairBatches(pairs, np.arange(25), 8, 2, rank, 2, seed=0, row_len=32, pad_id=0).step_batches(
                position
            )
            for rank in (0, 1)
        ]
        assert [len(step) for step in steps] == [2, 2]  # 4 pairs a rank, micro-batches of 2
        taken = [i for step in steps for b in step for i in _pair_indices(b, seqs)]
        order = PairBatches(pairs, np.arange(25), 8, 8, 0, 1, seed=0, row_len=32, pad_id=0).step_batches(
            position
        )
        assert taken == _pair_indices(order[0], seqs)  # two ranks take what one would, in the same order
    shares = [eval_batches(pairs, 4, rank, 2, 32, 0) for rank in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 4  # 13 and 12 pairs in batches of 4, the short rank padded
    held = [
        i
        for share in shares
        for b in share
        for i, v in zip(_pair_indices(b, seqs), b["valid"], strict=True)
        if v
    ]
    assert sorted(held) == list(range(25))


def test_pairs_left_out_for_length_are_said_on_the_console(tmp_path: Path, caplog):
    """A user's preference file of long pairs lost most of them to seq_len with nothing on the console
    (225 of 300 of a DPO demo file at 512): the count is now a warning, besides index.json."""
    import logging

    from pipelines.config import load_config
    from pipelines.rm.data import SourcePairs, write_pair_data
    from pipelines.rm.pairs import PreferencePair

    def pair(n_words: int, i: int) -> PreferencePair:
        prompt = {"messages": [{"role": "user", "content": f"question {i}"}]}
        return PreferencePair(prompt, reply("yes " * n_words), reply("no " * n_words), "mine")

    cfg = load_config(None).rm
    train = [pair(2, i) for i in range(4)] + [pair(200, i) for i in range(4, 7)]
    source = SourcePairs("mine", train, [pair(2, 9)], cfg.world)
    with caplog.at_level(logging.WARNING, logger="raychat.rm"):
        index = write_pair_data(tmp_path, [source], ChatFormat(BYTES), cfg, 128, 0)
    assert index["train"]["pairs"] == 4 and index["dropped"] == {"train mine: longer than seq_len": 3}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        f"rm: 3 pairs left out (3 train mine: longer than seq_len); the counts are in {tmp_path / 'index.json'}"
    ]
