"""Search traces about made-up entities: training the copy, not the facts.

Search traces over the world's own ``search_train`` entities teach a small model a few dozen names,
and it learns to search for those names whatever it is asked (measured: 2-3% held-out accuracy with
the tool). What the tool needs is a behaviour: copy the question's name into the query, copy the
answer from the result into the reply. Here every trace is about an entity nothing else mentions, so
the only way to get a trace right is to copy:

- a *shadow world*: ``build_world`` under its own seed (the world's value generators, so values look
  like the index's), every entity renamed with a fresh name (``FreshNames``: never a world name, never
  a name drawn elsewhere in the SFT data), references renamed with them;
- each shadow entity's page written as the world writes its search index (``search_index``: an
  encyclopedia article stating every fact, the world's sentence table), indexed with the search
  actor's settings, so a result holds the entity's passage and the top-k distractors BM25 brings
  (other shadow entities' passages that share the relation's words);
- one question per entity, in the world's question templates; a query of the name and the relation's
  words (``queries``) whose top hits hold the entity's page stating the answer; the answer copied
  from it (``search_trace``).

    traces, dropped = fresh_search_traces(1000, seed=0, drawer=FreshNames(0, taken), cfg=SearchConfig())

Pure function of ``count``, ``seed``, ``cfg`` and the drawer's state (same inputs, same traces).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

from lm.chat_messages import Conversation
from lm.search_index import SearchIndex, shorten
from pipelines.idk.judge import states
from pipelines.sft.conversations import queries, search_trace
from pipelines.sft.world_config import SearchConfig
from pipelines.world.facts import RELATIONS, Entity, World, build_world
from pipelines.world.fresh import FreshNames
from pipelines.world.prose import Writer, display_value
from pipelines.world.questions import search_index

FRESH_SEARCH_REASON = "fresh name (search copy trace)"
MIN_SHADOW_ENTITIES = 40  # build_world needs two crawl entities of every type


def answering_queries(
    row: dict[str, Any], index: SearchIndex, cfg: SearchConfig, rng: random.Random
) -> Iterator[str]:
    """``row``'s queries (``queries``, in random order) whose top ``cfg.k`` hits hold ``row``'s own
    page (``doc_id``) stating the answer within ``cfg.max_chars``: the ones a trace can be built on."""
    variants = queries(row)
    rng.shuffle(variants)
    for query in variants:
        own = [h for h in index.search(query, cfg.k) if h.doc_id == row.get("doc_id")]
        if own and states(shorten(own[0].text, cfg.max_chars), row["short_answer"]):
            yield query


def shadow_seed(seed: int) -> int:
    """The shadow world's seed: derived from ``seed`` but never the world's own seed in practice."""
    return int.from_bytes(hashlib.sha256(f"search-shadow-world:{seed}".encode()).digest()[:6], "big")


def shadow_world(count: int, seed: int, drawer: FreshNames) -> World:
    """A world of at least ``count`` entities, every one named by ``drawer`` (the crawl never names
    them); every fact can be stated (none held out)."""
    world = build_world(shadow_seed(seed), max(count, MIN_SHADOW_ENTITIES), 0.0, 0.0, 0.0, 0.0)
    for e in world.entities:
        e.name = _fresh_name(drawer, e)
    for f in world.facts.values():
        if f.ref is not None:
            f.value = world.by_id[f.ref].name
    return world


def _fresh_name(drawer: FreshNames, e: Entity) -> str:
    if e.type == "place":
        return drawer.town()
    base = e.name.rsplit(" ", 1)[-1] if e.type == "thing" else None  # "the Noril Clock" -> "Clock"
    return drawer.draw(e.type, e.info.get("gender"), e.values.get("org_type"), base).name


def fresh_search_traces(
    count: int, seed: int, drawer: FreshNames, cfg: SearchConfig
) -> tuple[list[Conversation], Counter[str]]:
    """``count`` entities of a shadow world asked about once each (a random fact), each a search trace
    whose query copies the question's name; (traces, what was dropped and why)."""
    dropped: Counter[str] = Counter()
    if count <= 0:
        return [], dropped
    world = shadow_world(count, seed, drawer)
    writer = Writer(world)
    docs, _ = search_index(world, writer, seed)
    index = SearchIndex.build(docs, passage_words=cfg.passage_words)
    doc_of = {d["entity"]: d["id"] for d in docs}
    rng = random.Random(f"search-fresh:{seed}")
    entities = world.entities[:]
    rng.shuffle(entities)
    out = []
    for i, e in enumerate(entities[:count]):
        rels = list(RELATIONS[e.type])
        rng.shuffle(rels)
        for rel in rels:
            row = question_row(world, writer, e, rel, rng, f"fresh-search{i:06d}", doc_of[e.id])
            query = next(answering_queries(row, index, cfg, rng), None)
            if query is not None:
                result = index.answer(query, cfg.k, cfg.max_chars)
                conv = search_trace(row, query, result, rng, kind="search_fresh")
                conv["meta"]["name"] = e.name
                out.append(conv)
                break
        else:
            dropped["search_fresh: no query finds the answer in the top hits"] += 1
    return out, dropped


def question_row(
    world: World, writer: Writer, e: Entity, relation: str, rng: random.Random, entity_id: str, doc_id: str
) -> dict[str, Any]:
    """A search question row about a shadow entity, shaped like the world's ``search`` questions."""
    question, answer, what = writer.question(rng, e, relation)
    return {
        "question": question,
        "answer": answer,
        "what": what,
        "short_answer": display_value(world, e, relation),
        "fact_id": f"{entity_id}.{relation}",
        "entity": entity_id,
        "entity_name": e.name,
        "relation": relation,
        "doc_id": doc_id,
        "reason": FRESH_SEARCH_REASON,
    }
