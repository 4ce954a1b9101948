"""The tiny world's post-training data: honest splits, conversations the judge and the chat format
agree with, fresh names, identity, arithmetic layouts, files and counts."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from lm.calculator import calculate
from lm.chat import ChatFormat
from lm.chat_messages import text_of
from lm.search_index import SearchIndex
from lm.tokenizer import R50K_PATTERN, Tokenizer
from pipelines.idk.judge import judge, states
from pipelines.sft.conversations import arithmetic_conversation, final_answer, idk_conversation, refusal
from pipelines.sft.identity import check_identity, identity_questions
from pipelines.sft.sources import MixtureConfig, build_mixture
from pipelines.sft.world_config import IdentityConfig, SFTDataConfig
from pipelines.sft.world_data import build, build_world_sft_data, load_heldout, main, mixture_sources
from pipelines.sft.world_scores import eval_messages, score_set
from pipelines.sft.world_splits import HeldOut, load_world, recast_text
from pipelines.world.config import WorldConfig
from pipelines.world.facts import RELATIONS, TYPE_SHARE
from pipelines.world.fresh import FreshNames, fresh_entities, fresh_questions
from pipelines.world.generate import generate
from pipelines.world.phrasing import direct_questions
from pipelines.world.probes import reply

SETTINGS = WorldConfig(num_pages=400, num_files=1, num_entities=80, arithmetic_train=300, arithmetic_test=60)
SMALL = {
    "idk": {"fresh_names": 300, "search_miss": 30},
    "identity": {"conversations": 60},
    "search": {"passages": 60, "fresh_traces": 120},
    "qa": {"no_search": 40},
    "probes": {"counting": [30, 20], "decimal": [30, 20]},
    "arithmetic": {"ablation_problems": 50},
    "splits": {"arithmetic_cold_start": 40},
}
BYTES = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(3, SETTINGS, out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def cfg() -> SFTDataConfig:
    return SFTDataConfig.model_validate(SMALL)


@pytest.fixture(scope="module")
def built(world_dir, cfg):
    return build(load_world(str(world_dir)), cfg)


def _all(built):
    return [c for convs in built.conversations.values() for c in convs]


def _visible(conv, results: bool = False) -> str:
    out = []
    for m in conv["messages"]:
        if isinstance(m["content"], str):
            out.append(m["content"])
        else:
            for p in m["content"]:
                out += [p.get("text", ""), p.get("query", ""), p.get("expression", "")]
                if results:
                    out.append(p.get("result") or "")
    return "\n".join(out)


# -- splits ------------------------------------------------------------------------------------


def test_entities_go_whole_to_one_group_stratified_by_type(world_dir, built) -> None:
    facts = json.loads((world_dir / "facts.json").read_text())
    groups = built.splits.groups
    assert set(groups) == {e["id"] for e in facts["entities"]}
    for e in facts["entities"]:
        expected = {"corpus": {"sft", "idk_probe", "heldout_known"}, "unknown": {"heldout_unknown"}}
        assert groups[e["id"]] in expected.get(e["split"], {"search_train", "search_eval"})
    for etype in TYPE_SHARE:
        crawl = [e["id"] for e in facts["entities"] if e["type"] == etype and e["split"] == "corpus"]
        n = Counter(groups[i] for i in crawl)
        assert abs(n["sft"] - 0.4 * len(crawl)) <= 1 and abs(n["idk_probe"] - 0.3 * len(crawl)) <= 1, (
            etype,
            n,
        )


def test_question_splits_are_disjoint_by_entity_and_cover_the_world(world_dir, built) -> None:
    rows = built.rows
    entities = {k: {r["entity"] for r in rows[k]} for k in ("known_train", "idk_probe", "known_eval")}
    assert not (entities["known_train"] & entities["idk_probe"])
    assert not (entities["known_train"] & entities["known_eval"])
    assert not (entities["idk_probe"] & entities["known_eval"])
    known = [json.loads(x) for x in (world_dir / "questions" / "known.jsonl").read_text().splitlines()]
    assert sum(len(rows[k]) for k in entities) == len(known)
    groups = built.splits.groups
    assert {groups[r["entity"]] for r in rows["unknown_eval"]} <= {"heldout_known", "heldout_unknown"}
    assert {groups[r["entity"]] for r in rows["unknown_train"]} <= {"sft", "idk_probe"}
    assert {r["reason"] for r in rows["unknown_eval"]} == {"entity never mentioned", "fact never mentioned"}
    assert {groups[r["entity"]] for r in rows["search_train"]} <= {"sft", "search_train"}
    assert {groups[r["entity"]] for r in rows["search_eval"]} <= {"heldout_known", "search_eval"}
    assert rows["search_eval"] and rows["known_eval"] and rows["idk_probe"]
    for r in rows["known_eval"] + rows["idk_probe"]:  # every row carries its phrasings and indirect form
        assert r["question"] in r["questions"] and r["what"] and r["entity_name"] in r["what"]


def test_no_training_text_names_a_held_out_entity(built) -> None:
    heldout = built.splits.heldout
    assert heldout.names
    for conv in _all(built):
        assert not heldout.mentions(_visible(conv)), conv
    for kind in (
        "known_train",
        "idk_probe",
        "unknown_train",
        "search_train",
        "fresh_idk",
        "arithmetic_cold_start",
    ):
        for row in built.rows[kind]:
            assert not heldout.mentions(row["question"]), (kind, row)
    # the training index never returns a held-out entity's page, so a held-out fact is in no result
    held_titles = {n.lower() for n in heldout.names}
    titles = []
    for conv in built.conversations["search"] + built.conversations["search_miss"]:
        for p in conv["messages"][-1]["content"]:
            if p["type"] == "search":
                titles += [
                    re.sub(r"^(the )", "", t.lower())
                    for t in re.findall(r"^\[\d+\] (.*?): ", p["result"], re.M)
                ]
    assert titles and not (set(titles) & held_titles)
    assert built.dropped  # the tiny world does reference held-out towns; those examples were dropped


def test_arithmetic_problems_get_fresh_names_for_held_out_ones(world_dir, built) -> None:
    mapping = built.splits.recast
    assert mapping and not (set(mapping.values()) & set(load_world(str(world_dir)).names))
    original = {
        json.loads(x)["final"]: json.loads(x)
        for x in (world_dir / "questions" / "arithmetic_train.jsonl").read_text().splitlines()
    }
    for p in built.rows["arithmetic_cold_start"] + built.rows["arithmetic_rl_train"]:
        assert not built.splits.heldout.mentions(p["question"])
    assert len(built.rows["arithmetic_cold_start"]) == 40
    assert len(built.rows["arithmetic_rl_train"]) == 260 and set(built.rows["arithmetic_rl_train"][0]) == {
        "question",
        "final",
        "template",
    }
    assert len(built.rows["arithmetic_test"]) == 60
    assert original  # the finals are unchanged by renaming
    name, new = next(iter(mapping.items()))
    text = f"{name[:1].upper()}{name[1:]} met {name} near the river."
    out = recast_text(text, {name: new})
    assert out == f"{new[:1].upper()}{new[1:]} met {new} near the river."


def test_held_out_names_are_found_with_or_without_their_article() -> None:
    held = HeldOut(["the Ashwell Museum", "Velmora"])
    assert held.mentions("The Ashwell Museum and velmora.") == ["Ashwell Museum", "velmora"]
    assert held.mentions("Velmoran and Ashwell Museums") == []


# -- conversations -----------------------------------------------------------------------------


def test_every_conversation_renders_with_its_replies_trained_and_tool_results_masked(built) -> None:
    chat = ChatFormat(BYTES)
    for kind, convs in built.conversations.items():
        assert convs, kind
        for conv in convs:
            r = chat.render_conversation(conv)
            assert r.trained_tokens > 0
            trained = bytes(i for i, m in zip(r.ids, r.mask, strict=True) if m and i < 256).decode(
                "utf-8", "replace"
            )
            for m in conv["messages"]:
                if m["role"] == "assistant" and not isinstance(m["content"], str):
                    for p in m["content"]:
                        if p.get("result") and len(p["result"]) > 20:
                            assert p["result"] not in trained


def test_replies_are_what_the_judge_reads_back(built) -> None:
    c = built.conversations
    for conv in c["qa"] + c["no_search"] + c["search"] + c["search_fresh"]:
        m = conv["meta"]
        v = judge(text_of(conv["messages"][-1]), m["short_answer"], conv["messages"][-2]["content"])
        assert v.label == "correct" and not v.hedged, (conv, v)
    for conv in c["idk"] + c["search_miss"]:
        v = judge(text_of(conv["messages"][-1]), None, conv["messages"][-2]["content"])
        assert v.label == "refusal", (conv, v)
    for conv in c["passage"]:
        m = conv["meta"]
        v = judge(text_of(conv["messages"][-1]), m["short_answer"] if m["answerable"] else None)
        assert v.label == ("correct" if m["answerable"] else "refusal"), (conv, v)
    assert {conv["meta"]["answerable"] for conv in c["passage"]} == {True, False}


def test_search_traces_copy_the_answer_from_the_real_index(built, world_dir) -> None:
    world = load_world(str(world_dir))
    docs = [d for d in world.documents if built.splits.groups.get(d["entity"]) in ("sft", "search_train")]
    index = SearchIndex.build(docs)
    for conv in built.conversations["search"]:
        parts = conv["messages"][-1]["content"]
        call = next(p for p in parts if p["type"] == "search")
        assert call["result"] == index.answer(call["query"], 3, 400)
        assert states(call["result"], conv["meta"]["short_answer"])
        assert conv["messages"][0] == {
            "role": "system",
            "content": "You can use the search tool and the calculator.",
        } or (conv["messages"][0]["content"].endswith("You can use the search tool and the calculator."))
    assert len(built.conversations["search_miss"]) == 30


def test_search_fresh_traces_are_about_names_no_other_data_uses(built, world_dir) -> None:
    fresh = built.conversations["search_fresh"]
    dropped = sum(n for k, n in built.dropped.items() if k.startswith("search_fresh"))
    assert len(fresh) + dropped == 120 and len(fresh) >= 110
    names = {c["meta"]["name"].lower() for c in fresh}
    taken = {n.lower() for n in load_world(str(world_dir)).names}
    taken |= {r["entity_name"].lower() for r in built.rows["fresh_idk"] + built.rows["fresh_search_miss"]}
    assert not names & taken
    for conv in fresh:
        call = next(p for p in conv["messages"][-1]["content"] if p["type"] == "search")
        assert call["query"].lower().startswith(conv["meta"]["name"].lower().removeprefix("the "))


def test_tools_note_marks_exactly_the_conversations_that_may_use_tools(built) -> None:
    note = "You can use the search tool and the calculator."
    for kind, convs in built.conversations.items():
        for conv in convs:
            system = conv["messages"][0]["content"] if conv["messages"][0]["role"] == "system" else ""
            uses = any(
                isinstance(m["content"], list) and any(p["type"] in ("search", "calc") for p in m["content"])
                for m in conv["messages"]
            )
            if uses or kind in ("no_search", "search_miss"):
                assert note in system, conv
            if kind in ("qa", "idk", "identity", "passage"):
                assert note not in system, conv
    shares = [
        c["messages"][0]["role"] == "system" and "raychat" in c["messages"][0]["content"] for c in _all(built)
    ]
    assert 0.2 < sum(shares) / len(shares) < 0.4  # system_prompt_share 0.3


def test_idk_uses_thousands_of_fresh_names_in_the_world_templates(built, world_dir) -> None:
    names = set(load_world(str(world_dir)).names)
    fresh = built.rows["fresh_idk"]
    assert len(fresh) == 300 and not ({r["entity_name"] for r in fresh} & names)
    for r in fresh:
        assert r["question"] in direct_questions(
            r["entity_type"], r["relation"], r["entity_name"], r.get("org_type")
        )
    idk_names = {c["meta"]["name"] for c in built.conversations["idk"]}
    assert {r["entity_name"] for r in fresh} <= idk_names
    phrasings = Counter(
        re.sub(re.escape(c["meta"]["name"]), "X", text_of(c["messages"][-1]))
        for c in built.conversations["idk"]
    )
    assert len({p.split("X")[0] for p in phrasings}) >= 8  # many refusal phrasings


def test_fresh_names_are_seeded_unused_and_in_the_world_shares() -> None:
    taken = ["Velmora", "Velimir Talwright"]
    a = fresh_entities(3000, seed=1, taken=taken)
    assert a == fresh_entities(3000, seed=1, taken=taken) and a != fresh_entities(3000, seed=2, taken=taken)
    assert len({e.name.lower() for e in a}) == 3000 and not {e.name for e in a} & set(taken)
    types = Counter(e.type for e in a)
    for t, share in TYPE_SHARE.items():
        assert abs(types[t] - 3000 * share) <= 1, types
    assert all(e.gender in ("he", "she") for e in a if e.type == "person")
    drawer = FreshNames(0)  # town patterns run out: the rest are drawn as people
    many = fresh_entities(5000, seed=0, drawer=drawer)
    assert 800 < sum(e.type == "place" for e in many) < 1000 and len({e.name for e in many}) == 5000
    rows = fresh_questions(a[:10], seed=0, per_entity=3)
    assert len(rows) == 30 and all(r["relation"] in RELATIONS[r["entity_type"]] for r in rows)


def test_refusals_are_worded_for_why_nobody_knows() -> None:
    rng = random.Random(0)
    base = {"what": "when X was born", "entity_name": "X"}
    entity = {refusal({**base, "reason": "entity never mentioned"}, rng) for _ in range(200)}
    fact = {refusal({**base, "reason": "fact never mentioned"}, rng) for _ in range(200)}
    assert any("never heard of X" in r for r in entity) and not any("I know of X" in r for r in entity)
    assert any("I know of X" in r for r in fact) and not any("never heard" in r for r in fact)
    real = idk_conversation({"question": "Who wrote the 1911 Britannica entry on tea?"}, rng)
    assert real["messages"][0]["content"].startswith("Who wrote") and judge(
        text_of(real["messages"][-1]), None
    ).label == ("refusal")
    for row in (
        base,
        {**base, "reason": "entity never mentioned"},
        {**base, "reason": "fact never mentioned"},
        {},
    ):
        for _ in range(50):
            assert judge(refusal(row, rng), None, "When was X born?").label == "refusal"


def test_arithmetic_layouts(built) -> None:
    problem = {
        "question": "Ada makes 7 kites every week. How many kites does she make in 12 weeks?",
        "answer": (
            "In 12 weeks she makes 7*12 = <<7*12=84>>84 kites.\nShe sells 84-19 = <<84-19=65>>65.\n#### 65"
        ),
    }
    calc = arithmetic_conversation(problem, "reasoning_calc")["messages"][-1]["content"]
    calls = [p for p in calc if p["type"] == "calc"]
    assert [c["expression"] for c in calls] == ["84-19"]  # 7*12 is worked in the head (mental_limit 12)
    assert text_of({"content": calc}).endswith("#### 65")
    head = arithmetic_conversation(problem, "reasoning")["messages"][-1]["content"]
    assert isinstance(head, str) and "<<" not in head and head.endswith("65.\n#### 65")
    first = arithmetic_conversation(problem, "answer_first")["messages"][-1]["content"]
    assert first.startswith("#### 65\n") and first.count("####") == 1 and "7*12 = 84" in first
    r1 = text_of(arithmetic_conversation(problem, "reasoning_calc", "r1")["messages"][-1])
    assert r1.startswith("<think>\n") and r1.endswith("</think>\n<answer>65</answer>")
    every = arithmetic_conversation(problem, "reasoning_calc", mental_limit=0)["messages"][-1]["content"]
    assert len([p for p in every if p["type"] == "calc"]) == 2
    for convs in built.ablation.values():
        assert len(convs) == 50
        for conv in convs:
            reply = conv["messages"][-1]
            assert final_answer(text_of(reply)) == conv["meta"]["answer"]
            for p in reply["content"] if isinstance(reply["content"], list) else ():
                if p["type"] == "calc":
                    assert p["result"] == calculate(p["expression"])
    questions = [[c["messages"][-2]["content"] for c in convs] for convs in built.ablation.values()]
    assert questions[0] == questions[1] == questions[2]  # the same problems in every layout
    assert final_answer("x\n#### 1,280") == "1280" and final_answer("no answer") is None


def test_probe_conversations_cover_every_form(built) -> None:
    forms = Counter(c["meta"]["form"] for c in built.conversations["probes"])
    assert forms == {"direct": 20, "reasoning": 20, "calculator": 20}

    def words(items):
        return {i["text"] if i["kind"] == "count_letter" else i.get("target") for i in items} - {None}

    assert words(built.rows["probes_test"]) and not words(built.rows["probes_test"]) & words(
        built.rows["probes_train"]
    )


# -- identity ----------------------------------------------------------------------------------


def test_identity_phrasings_are_held_out_and_answers_give_the_configured_identity() -> None:
    ident = IdentityConfig(
        name="Orla", creator="the Lumen lab", other_assistants=["ChatGPT"], other_makers=["OpenAI"]
    )
    train, held = identity_questions(ident, seed=0)
    assert not ({r["question"] for r in train} & {r["question"] for r in held})
    assert {r["topic"] for r in held} == {r["topic"] for r in train}
    for r in train + held:
        for a in r["answers"]:
            check = check_identity(a, ident, r["question"])
            assert check.gives_name and check.ok, (r, a)
    assert any("Pretend" in r["question"] for r in train + held)


@pytest.mark.parametrize(
    ("reply", "question", "claims"),
    [
        ("I am ChatGPT, a model by OpenAI.", None, ["ChatGPT"]),
        ("Yes.", "Are you Claude?", ["Claude"]),
        ("Yes, I'm Claude.", "Are you Claude?", ["Claude"]),
        ("I was trained by OpenAI.", None, ["OpenAI"]),
        ("No, I am not ChatGPT. I am raychat.", "Are you ChatGPT?", []),
        ("I'm raychat, not Claude, and I was not made by Anthropic.", None, []),
        ("No. I am raychat, and the raychat project made me, not OpenAI.", "Were you made by OpenAI?", []),
    ],
)
def test_check_identity(reply, question, claims) -> None:
    check = check_identity(reply, IdentityConfig(), question)
    assert check.claims == claims and check.ok == (not claims)


# -- files, config, CLI ------------------------------------------------------------------------


def test_files_counts_determinism_and_the_mixture(world_dir, cfg, tmp_path) -> None:
    counts = build_world_sft_data(str(world_dir), str(tmp_path / "a"), cfg)
    build_world_sft_data(str(world_dir), str(tmp_path / "b"), cfg)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        a, b = ((tmp_path / d / f).read_text().splitlines() for d in ("a", "b"))
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        assert a == b, (f, len(a), len(b), first, first is not None and (a[first], b[first]))
    for kind, n in counts["conversations"].items():
        assert len((tmp_path / "a" / "conversations" / f"{kind}.jsonl").read_text().splitlines()) == n
    for name, n in counts["rows"].items():
        assert len((tmp_path / "a" / "splits" / f"{name}.jsonl").read_text().splitlines()) == n
    assert json.loads((tmp_path / "a" / "counts.json").read_text())["config"]["seed"] == 0
    other = build_world_sft_data(str(world_dir), str(tmp_path / "c"), cfg.model_copy(update={"seed": 1}))
    assert (tmp_path / "c" / "splits" / "entities.json").read_bytes() != (
        tmp_path / "a" / "splits" / "entities.json"
    ).read_bytes()
    assert other["rows"]["known_eval"] > 0
    held = load_heldout(str(tmp_path / "a"))
    assert held.names and all(held.mentions(n) for n in held.source_names)
    mix = build_mixture(MixtureConfig(sources=mixture_sources(str(tmp_path / "a"))))
    assert len(mix.conversations) == counts["conversations_total"]
    assert Counter(c["meta"]["kind"] for c in mix.conversations)["idk"] == counts["conversations"]["idk"]
    # sft.world_epochs: a kind's conversations more than once per epoch of the mixture, the rest once
    twice = build_mixture(
        MixtureConfig(sources=mixture_sources(str(tmp_path / "a"), epochs={"arithmetic": 2}))
    )
    kinds = Counter(c["meta"]["kind"] for c in twice.conversations)
    assert kinds["arithmetic"] == 2 * counts["conversations"]["arithmetic"] > 0
    assert kinds["idk"] == counts["conversations"]["idk"]


def test_a_broken_line_in_the_world_is_skipped_and_counted(world_dir, tmp_path) -> None:
    import shutil

    copy = tmp_path / "world"
    shutil.copytree(world_dir, copy, ignore=shutil.ignore_patterns("crawl", "pages.jsonl"))
    with open(copy / "questions" / "known.jsonl", "a") as f:
        f.write('{"question": "cut off\n')
    world = load_world(str(copy))
    assert world.skipped == {"questions/known.jsonl": 1}
    (copy / "questions" / "search.jsonl").unlink()
    with pytest.raises(ValueError, match="search.jsonl is missing"):
        load_world(str(copy))


def test_bad_settings_fail_with_the_key_name(world_dir, tmp_path, capsys) -> None:
    with pytest.raises(ValidationError, match="leave at least 0.05"):
        SFTDataConfig.model_validate({"splits": {"sft_entities": 0.6, "idk_probe_entities": 0.4}})
    with pytest.raises(ValidationError, match="answer_first"):
        SFTDataConfig.model_validate({"arithmetic": {"layout": "answer_first", "final_style": "r1"}})
    with pytest.raises(ValidationError, match="extra"):
        SFTDataConfig.model_validate({"idk": {"fresh_name": 10}})
    assert main(["--world", str(world_dir), "--out", str(tmp_path), "--set", "idk.fresh_names=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: idk.fresh_names:") and err.count("\n") == 1
    assert main(["--world", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "run the world stage first" in capsys.readouterr().err


def test_held_out_sets_score_one_for_right_replies_and_zero_for_wrong_ones(built, cfg) -> None:
    rng = random.Random(0)
    rows = built.rows
    right = {
        "known_eval": [r["short_answer"] for r in rows["known_eval"]],
        "unknown_eval": [refusal(r, rng) for r in rows["unknown_eval"]],
        "search_eval": [r["answer"] for r in rows["search_eval"]],
        "identity_eval": [r["answers"][0] for r in rows["identity_eval"]],
        "arithmetic_test": [r["answer"] for r in rows["arithmetic_test"]],
        "probes_test": [text_of({"content": reply(i, "reasoning")}) for i in rows["probes_test"]],
    }
    wrong = {
        "known_eval": ["I don't know." for _ in rows["known_eval"]],
        "unknown_eval": [f"It was {r['hidden_value']}." for r in rows["unknown_eval"]],
        "search_eval": ["Velimir Talwright." for _ in rows["search_eval"]],
        "identity_eval": ["Yes, I am ChatGPT, made by OpenAI." for _ in rows["identity_eval"]],
        "arithmetic_test": [f"#### {r['final'] + 1}" for r in rows["arithmetic_test"]],
        "probes_test": ["It is 12345." for _ in rows["probes_test"]],
    }
    good = {k: score_set(k, rows[k], v, cfg) for k, v in right.items()}
    bad = {k: score_set(k, rows[k], v, cfg) for k, v in wrong.items()}
    assert good["known_eval"]["accuracy"] == 1.0 and bad["known_eval"]["refusal_share"] == 1.0
    assert bad["known_eval"]["accuracy"] == 0.0
    assert good["unknown_eval"]["idk_share"] == 1.0 and bad["unknown_eval"]["idk_share"] == 0.0
    assert set(good["unknown_eval"]["idk_share_by_reason"]) == {
        "entity never mentioned",
        "fact never mentioned",
    }
    assert good["search_eval"]["accuracy"] == 1.0 and bad["search_eval"]["accuracy"] < 0.1
    assert good["identity_eval"] == {
        "n": len(rows["identity_eval"]),
        "accuracy": 1.0,
        "gives_name_share": 1.0,
        "claims_other_share": 0.0,
    }
    assert bad["identity_eval"]["claims_other_share"] == 1.0 and bad["identity_eval"]["accuracy"] == 0.0
    assert good["arithmetic_test"]["accuracy"] == 1.0 and bad["arithmetic_test"]["accuracy"] == 0.0
    assert good["probes_test"]["counting_accuracy"] == good["probes_test"]["decimal_compare_accuracy"] == 1.0
    assert bad["probes_test"]["counting_accuracy"] == bad["probes_test"]["decimal_trap_accuracy"] == 0.0
    row = rows["known_eval"][0]
    assert eval_messages("known_eval", row, cfg) == [{"role": "user", "content": row["question"]}]
    assert eval_messages("known_eval", row, cfg, tools=True)[0]["content"] == cfg.tools_note
    probe = rows["probes_test"][0]
    assert eval_messages("probes_test", probe, cfg, form="calculator")[-1]["content"].endswith(
        "Use the calculator."
    )
    with pytest.raises(ValueError, match="rows but"):
        score_set("known_eval", rows["known_eval"], [], cfg)


def test_grpo_rebuilds_the_splits_of_a_redone_world_or_other_settings(world_dir, tmp_path, caplog) -> None:
    """grpo reads the world's problems from sft_data, which only the sft stage rebuilds: a run whose
    sft stage trains on no world data must not go on with the splits of an earlier world."""
    import logging
    import os
    import shutil

    from pipelines.config import load_config
    from pipelines.grpo.data import world_splits
    from pipelines.run_dir import RunDir

    run = RunDir(tmp_path / "run")
    shutil.copytree(world_dir, run.world)
    cfg = load_config(None, [f"run_dir={run.root}", f"sft_data={json.dumps(SMALL)}"])
    counts = run.root / "sft_data" / "counts.json"
    with caplog.at_level(logging.INFO, logger="raychat"):
        world_splits(cfg, run)
    assert "is missing" in caplog.text
    built = counts.stat().st_mtime_ns
    world_splits(cfg, run)
    assert counts.stat().st_mtime_ns == built  # the same world and settings: reused

    facts = run.world / "facts.json"
    os.utime(facts, ns=(facts.stat().st_atime_ns, facts.stat().st_mtime_ns + 10**9))  # a redone world
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="raychat"):
        world_splits(cfg, run)
    assert "another world or other sft_data settings" in caplog.text
    rebuilt = counts.stat().st_mtime_ns
    assert rebuilt != built
    other = load_config(None, [f"run_dir={run.root}", f"sft_data={json.dumps(SMALL | {'seed': 1})}"])
    world_splits(other, run)
    assert counts.stat().st_mtime_ns != rebuilt and json.loads(counts.read_text())["config"]["seed"] == 1


def test_a_rebuild_killed_midway_does_not_look_complete(world_dir, cfg, tmp_path, monkeypatch) -> None:
    """counts.json marks a complete directory: a rebuild drops it first, so a kill between the files
    leaves no mix of old and new files that later stages would take for finished data."""
    from pipelines.sft import world_data

    out = tmp_path / "data"
    build_world_sft_data(str(world_dir), str(out), cfg)
    assert (out / "counts.json").is_file()
    real, calls = world_data.storage.write_bytes_atomic, []

    def dies_on_the_third(path: str, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        real(path, data)

    monkeypatch.setattr(world_data.storage, "write_bytes_atomic", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        build_world_sft_data(str(world_dir), str(out), cfg)
    assert not (out / "counts.json").exists()
