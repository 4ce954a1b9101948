"""Supervised fine-tuning: rendered and packed rows train only assistant tokens, the data position
resumes exactly, a short run lowers the assistant-token loss, the export speaks our chat format to
transformers, the evaluation asks as training did, and the "I don't know" probing writes the right
conversations. The stages themselves, end to end on Ray, are in tests/test_sft_stages.py."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lm.chat import ChatFormat
from lm.model import ModelConfig
from lm.tokenizer import R50K_PATTERN, Tokenizer
from lm.train.losses import IGNORE_INDEX, next_token_loss
from lm.train.models import fresh_model
from lm.train.trainer import Trainer
from pipelines.config import ConfigError, load_config
from pipelines.sft.config import SFTConfig
from pipelines.sft.data import ExampleStream, count_steps, pack_step, render_examples, rows_for_rank
from pipelines.sft.identity import identity_conversation, identity_questions
from pipelines.sft.task import SFTTask
from pipelines.sft.train import export_chat_model, split_validation
from pipelines.sft.world_config import IdentityConfig, SFTDataConfig

BYTES = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})
CHAT = ChatFormat(BYTES)

pytestmark = pytest.mark.usefixtures("one_thread")


def _conversations(n: int, seed: int = 0) -> list[dict]:
    """Identity conversations: short, templated, with a system message now and then."""
    train, _ = identity_questions(IdentityConfig(name="Quill", creator="the test"), seed)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        conv = identity_conversation(train[i % len(train)], rng)
        if i % 3 == 0:
            conv = {**conv, "messages": [{"role": "system", "content": "Be brief."}, *conv["messages"]]}
        out.append(conv)
    return out


TOOL_CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You can use the search tool."},
        {"role": "user", "content": "Who founded Kelmark?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look. "},
                {"type": "search", "query": "Kelmark founder", "result": "[1] Kelmark was founded by Ada."},
                {"type": "text", "text": "Ada."},
            ],
        },
    ]
}


def test_rendered_examples_train_exactly_the_assistant_tokens() -> None:
    convs = [TOOL_CONVERSATION, *_conversations(5)]
    ex = render_examples(convs, CHAT, seq_len=512)
    assert len(ex) == len(convs) and not ex.skipped
    for i, conv in enumerate(convs):
        rendered = CHAT.render_conversation(conv)
        inputs, targets = ex.example(i)
        assert inputs.tolist() == rendered.ids[:-1]
        trained = [t for t, m in zip(rendered.ids[1:], rendered.mask[1:], strict=True) if m]
        assert targets[targets != IGNORE_INDEX].tolist() == trained
    # the search result is in the inputs but never a target; the query and the answer are targets
    inputs, targets = ex.example(0)
    text_of = BYTES.decode
    assert "Kelmark was founded by Ada" in text_of(inputs.tolist())
    assert "Kelmark was founded by Ada" not in text_of(targets[targets != IGNORE_INDEX].tolist())
    assert "Kelmark founder" in text_of(targets[targets != IGNORE_INDEX].tolist())
    assert ex.trained_tokens() == sum(
        (t != IGNORE_INDEX).sum() for t in (ex.example(i)[1] for i in range(len(ex)))
    )


def test_long_conversations_are_cut_or_skipped_and_counted() -> None:
    long_reply = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y" * 400}]}
    long_prompt = {
        "messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y"}]
    }
    ex = render_examples([long_reply, long_prompt, {"messages": "not a list"}], CHAT, seq_len=64)
    assert len(ex) == 1 and ex.cut == 1 and int(ex.lengths[0]) == 64
    assert sum(ex.skipped.values()) == 2


def test_packed_rows_keep_conversations_apart_and_the_position_resumes() -> None:
    convs = _conversations(60)
    ex = render_examples(convs, CHAT, seq_len=256)
    stream = ExampleStream(len(ex), seed=3)
    position, steps = 0, 0
    seen: list[int] = []
    while position < 2 * len(ex):
        packed, after = pack_step(ex, stream, position, rows=4, row_len=256, pad_id=0)
        for r in range(4):
            docs = packed.document_ids[r]
            real = docs[docs >= 0]
            assert (np.diff(real) >= 0).all() and (
                real == np.arange(real.max() + 1).repeat(np.bincount(real))
            ).all()
            assert (packed.targets[r][docs < 0] == IGNORE_INDEX).all()  # padding trains nothing
        # the rows hold exactly the consumed examples, in order
        flat = [t for r in range(4) for t in packed.targets[r][packed.document_ids[r] >= 0].tolist()]
        expected = [t for i in range(position, after) for t in ex.example(stream.index(i))[1].tolist()]
        assert flat == expected
        seen += [stream.index(i) for i in range(position, after)]
        # a restart at this position packs the very same step
        again, after2 = pack_step(ex, ExampleStream(len(ex), seed=3), position, 4, 256, 0)
        assert after2 == after and (again.input_ids == packed.input_ids).all()
        position, steps = after, steps + 1
    assert sorted(seen[: len(ex)]) == list(range(len(ex)))  # one epoch is a permutation
    assert count_steps(ex.lengths, ExampleStream(len(ex), 3), 2 * len(ex), 4, 256) == steps


def test_ranks_take_their_own_rows_with_the_trained_positions() -> None:
    ex = render_examples(_conversations(40), CHAT, seq_len=128)
    packed, _ = pack_step(ex, ExampleStream(len(ex), 0), 0, rows=8, row_len=128, pad_id=0)
    one = rows_for_rank(packed, 0, 1, micro_rows=4)
    two = [rows_for_rank(packed, r, 2, micro_rows=2) for r in range(2)]
    assert len(one) == 2 and all(len(m) == 2 for m in two)
    rows_one = np.concatenate([m["input_ids"] for m in one])
    rows_two = np.concatenate([m["input_ids"] for r in two for m in r])
    assert sorted(map(tuple, rows_one.tolist())) == sorted(map(tuple, rows_two.tolist()))
    for m in one:
        flat = m["targets"].reshape(-1)
        assert (np.flatnonzero(flat != IGNORE_INDEX) == m["target_index"]).all()


def _tiny_model_dir(tmp_path):
    config = ModelConfig(
        vocab_size=BYTES.vocab_size, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=128, max_seq_len=64,
    )  # fmt: skip
    model = fresh_model(config, seed=0)
    return export_chat_model(model, tmp_path / "base", BYTES, {"stage": "test"}), config


def test_a_short_sft_run_lowers_the_assistant_token_loss(tmp_path) -> None:
    base, config = _tiny_model_dir(tmp_path)
    train, val = split_validation(_conversations(120), 20, seed=0)
    assert not {id(c) for c in train} & {id(c) for c in val}
    for name, convs in (("train", train), ("val", val)):
        render_examples(convs, CHAT, seq_len=192).save(tmp_path / f"{name}.npz")
    task = SFTTask(
        init_dir=str(base), model_config=config.model_copy(update={"max_seq_len": 192}),
        train_file=str(tmp_path / "train.npz"), val_file=str(tmp_path / "val.npz"), seq_len=192,
        batch_rows=4, micro_batch_rows=2, steps=40, seed=0, pad_id=BYTES.eot_id, num_examples=len(train),
    )  # fmt: skip
    cfg = SFTConfig(lr=3e-3, warmup_steps=2)
    trainer = Trainer(task.build_model(), cfg, total_steps=40, device=torch.device("cpu"))
    task.setup(0, 1, torch.device("cpu"))
    before = task.evaluate(trainer)["val_loss"]
    position, losses = 0, []
    for _ in range(40):
        batches, position = task.next_batches(position)
        # projecting only the trained positions gives the loss of projecting them all
        full = {k: torch.from_numpy(v) for k, v in batches[0].items() if k != "target_index"}
        picked = {**full, "target_index": torch.from_numpy(batches[0]["target_index"])}
        with torch.no_grad():
            a, b = next_token_loss(trainer.module, full), next_token_loss(trainer.module, picked)
        assert a.count == b.count and torch.allclose(a.total, b.total, rtol=1e-4)
        losses.append(trainer.train_step(batches, task.loss)["loss"])
    after = task.evaluate(trainer)["val_loss"]
    assert after < 0.6 * before, (before, after)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_export_speaks_our_chat_format_to_transformers(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    out, _ = _tiny_model_dir(tmp_path)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [BYTES.eot_id, BYTES.token_id("<|im_end|>")]
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    model = transformers.LlamaForCausalLM.from_pretrained(str(out))
    for conv in [TOOL_CONVERSATION, *_conversations(3)]:
        messages = [m for m in conv["messages"] if m["role"] != "assistant"]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text == CHAT.render_text({"messages": messages}, add_generation_prompt=True)
        ids = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        assert list(ids["input_ids"]) == CHAT.render_prompt({"messages": messages}).ids
    assert model.generation_config.eos_token_id == generation["eos_token_id"]


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="sft.world_kinds"):
        load_config(None, ["sft.world_kinds=[qa,jokes]"])
    with pytest.raises(ConfigError, match="sft.world_epochs"):
        load_config(None, ["sft.world_epochs={jokes: 2}"])
    assert load_config(None, ["sft.world_epochs={arithmetic: 2}"]).sft.world_epochs == {"arithmetic": 2.0}
    with pytest.raises(ConfigError, match="batch_rows"):
        load_config(None, ["sft.batch_rows=6", "sft.micro_batch_rows=4"])
    with pytest.raises(ConfigError, match="sft.ablation.layouts"):
        load_config(None, ["sft.ablation.layouts=[sideways]"])
    cfg = load_config(None, ["sft.lr=0.0005", "idk.samples=8"])
    assert cfg.sft.lr == 5e-4 and cfg.idk.samples == 8 and cfg.sft.num_workers == 1


def test_preflight_says_what_is_missing(tmp_path) -> None:
    from pipelines.idk.job import preflight as idk_preflight
    from pipelines.sft.job import preflight

    cfg = load_config(None, [f"run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="run the pretrain stage first"):
        preflight(cfg)
    _tiny_model_dir(tmp_path / "models")  # models/base, but no world and no sources
    with pytest.raises(ConfigError, match="no training data"):
        preflight(cfg)
    with pytest.raises(ConfigError, match="run the sft stage first"):
        idk_preflight(cfg)


# -- evaluation and probing (no Ray: the prompts, the scoring and the data they write) -------------


def test_conditions_ask_the_way_training_wrote_the_data() -> None:
    from pipelines.chat_eval import CONDITIONS, messages_for, transcript

    cfg = SFTDataConfig()
    row = {"question": "Who founded Kelmark?", "short_answer": "Ada"}
    assert messages_for("known", row, cfg) == [{"role": "user", "content": "Who founded Kelmark?"}]
    with_tool = messages_for("search_with_tool", row, cfg)
    assert with_tool[0] == {"role": "system", "content": cfg.tools_note} and with_tool[1:] == messages_for(
        "search_without_tool", row, cfg
    )
    ident = messages_for("identity_with_system", row, cfg)
    assert ident[0]["role"] == "system" and "raychat" in ident[0]["content"]
    probe = {"question": "How many times does the letter 'a' appear in 'banana'?", "kind": "count_letter"}
    assert messages_for("probes_calculator", probe, cfg)[0]["content"] == cfg.tools_note
    assert messages_for("probes_reasoning", probe, cfg)[-1]["content"] != probe["question"]
    assert {c.set_name for c in CONDITIONS.values()} == {
        "known_eval", "unknown_eval", "search_eval", "identity_eval", "arithmetic_test", "probes_test",
    }  # fmt: skip
    shown = transcript(TOOL_CONVERSATION["messages"][:2], TOOL_CONVERSATION["messages"][2])
    assert "[search: Kelmark founder] -> [[1] Kelmark was founded by Ada.]" in shown


def test_probing_writes_refusals_for_what_the_model_does_not_know() -> None:
    from pipelines.idk.judge import judge, summarize
    from pipelines.idk.probe import Probe, probe_conversations
    from pipelines.sft.world_splits import HeldOut

    def row(name: str, answer: str) -> dict:
        q = f"Who founded {name}?"
        return {
            "question": q, "questions": [q, f"Do you know who founded {name}?"], "short_answer": answer,
            "entity_name": name, "what": f"who founded {name}", "fact_id": f"{name}.founder", "entity": name,
        }  # fmt: skip

    def probed(r: dict, answers: list[str]) -> Probe:
        s = summarize(judge(a, r["short_answer"], r["question"]) for a in answers)
        return Probe(r, answers, s, s.knows())

    probes = [
        probed(row("Kelmark", "Ada Brin"), ["Ada Brin."] * 4),  # consistent and right
        probed(row("Orvale", "Tam Roe"), ["Tam Roe.", "Ada Brin.", "Tam Roe.", "Tam Roe."]),  # not consistent
        probed(row("Wexford", "Lio Pan"), ["I don't know."] * 4),
        probed(row("Heldby", "Una Vey"), ["Bo Lark."] * 4),  # names a held-out entity: dropped
    ]
    convs, stats = probe_conversations(probes, HeldOut(["Heldby"]), seed=0)
    assert stats["known"] == 1 and stats["not_known"] == 3 and stats["dropped"] == 1 and len(convs) == 3
    by_fact = {c["meta"]["fact_id"]: c for c in convs}
    known = by_fact["Kelmark.founder"]
    assert (
        known["meta"]["kind"] == "idk_known"
        and judge(known["messages"][1]["content"], "Ada Brin").label == "correct"
    )
    for fact in ("Orvale.founder", "Wexford.founder"):
        conv = by_fact[fact]
        assert conv["meta"]["kind"] == "idk"
        assert judge(conv["messages"][1]["content"], None).label == "refusal"
        assert conv["messages"][0]["content"].startswith("Do you know")  # another phrasing than the probe's
    no_answers, _ = probe_conversations(probes, HeldOut([]), seed=0, known_answers=False)
    assert all(c["meta"]["kind"] == "idk" for c in no_answers) and len(no_answers) == 3
