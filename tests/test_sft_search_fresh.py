"""Search traces about made-up entities (pipelines/sft/search_fresh.py): the query copies the
question's name, the result states the answer, the reply copies it, and nothing is a world name."""

from __future__ import annotations

import pytest

from lm.chat_messages import text_of
from pipelines.idk.judge import judge, states
from pipelines.sft.search_fresh import fresh_search_traces, shadow_world
from pipelines.sft.world_config import SearchConfig
from pipelines.world.facts import RELATIONS, build_world
from pipelines.world.fresh import FreshNames

TAKEN = [e.name for e in build_world(0, 80, 0.1, 0.1, 0.1, 0.1).entities]
CFG = SearchConfig()


@pytest.fixture(scope="module")
def traces():
    drawer = FreshNames(0, taken=TAKEN)
    convs, dropped = fresh_search_traces(150, 0, drawer, CFG)
    return convs, dropped, drawer


def _call(conv):
    return next(p for p in conv["messages"][-1]["content"] if p["type"] == "search")


def _bare(name: str) -> str:
    return name[4:] if name.lower().startswith("the ") else name


def test_the_query_copies_the_questions_name_and_the_reply_copies_the_result(traces) -> None:
    convs, _, _ = traces
    for conv in convs:
        question, meta, call = conv["messages"][-2]["content"], conv["meta"], _call(conv)
        name = _bare(meta["name"])
        assert name.lower() in question.lower() and call["query"].startswith(name), conv
        assert call["query"] != name  # the relation's words follow the name
        assert states(call["result"], meta["short_answer"]), conv
        reply = text_of(conv["messages"][-1])
        v = judge(reply, meta["short_answer"], question)
        assert v.label == "correct" and not v.hedged, (conv, v)
        assert meta["kind"] == "search_fresh" and meta["relation"] in RELATIONS[_type_of(meta)]


def _type_of(meta) -> str:
    return next(t for t, rels in RELATIONS.items() if meta["relation"] in rels)


def test_results_read_like_the_index_top_k_with_distractors(traces) -> None:
    convs, _, _ = traces
    titled = 0
    for conv in convs:
        hits = _call(conv)["result"].split("\n")
        assert 1 <= len(hits) <= CFG.k and hits[0].startswith("[1] ")
        assert all(len(h) <= CFG.max_chars + 100 for h in hits)  # "[n] title: " + max_chars of text
        titles = {h.split(": ", 1)[0].split("] ", 1)[1] for h in hits}
        titled += len(titles) > 1
    assert titled > len(convs) // 3  # other entities' passages among the hits, as the real index gives


def test_counts_names_and_relations(traces) -> None:
    convs, dropped, drawer = traces
    assert len(convs) + sum(dropped.values()) == 150 and len(convs) >= 140
    names = [c["meta"]["name"] for c in convs]
    assert len(set(names)) == len(names)  # one question per made-up entity: nothing to memorise
    assert not {n.lower() for n in names} & {t.lower() for t in TAKEN}
    assert len({c["meta"]["relation"] for c in convs}) > 15
    # the drawer keeps the names it gave, so later draws (other fresh-name data) never reuse them
    assert {n.lower() for n in names} <= drawer.names.used


def test_same_seed_same_traces_other_seed_other_names(traces) -> None:
    convs, _, _ = traces
    again, _ = fresh_search_traces(150, 0, FreshNames(0, taken=TAKEN), CFG)
    assert again == convs
    other, _ = fresh_search_traces(150, 1, FreshNames(1, taken=TAKEN), CFG)
    assert {c["meta"]["name"] for c in other} != {c["meta"]["name"] for c in convs}
    assert fresh_search_traces(0, 0, FreshNames(0), CFG) == ([], {})


def test_shadow_world_renames_references_and_keeps_name_shapes() -> None:
    world = shadow_world(60, 0, FreshNames(0, taken=TAKEN))
    names = {e.name for e in world.entities}
    assert not names & set(TAKEN)
    for f in world.facts.values():
        if f.ref is not None:
            assert f.value == world.by_id[f.ref].name
    for e in world.entities:
        if e.type == "thing":
            assert e.name.startswith("the ") and e.name.lower().endswith(e.info["base"])
        if e.type == "organisation" and e.values["org_type"] == "learned society":
            assert e.name.endswith(" Society")


def test_fresh_names_of_a_given_kind_and_towns_past_the_patterns() -> None:
    drawer = FreshNames(0)
    assert drawer.draw("organisation", org_type="university").name.endswith(" College")
    assert drawer.draw("thing", base="Compass").name.endswith(" Compass")
    towns = [drawer.town() for _ in range(1100)]  # more than the 40 x 24 town patterns
    assert len({t.lower() for t in towns}) == 1100
