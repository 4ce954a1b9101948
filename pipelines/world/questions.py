"""Question sets from the world's facts, the search index, and the assistant's identity.

- known: facts the crawl teaches (only those stated on at least one page that should survive
  cleaning), for measuring what pretraining taught;
- unknown: facts stated nowhere, answered with "I don't know" (Llama 3-style hallucination data);
- search: facts only the search index holds, with the document that holds them;
- identity: who the assistant is;
- arithmetic: word problems with GSM8K-style answers, split into train and test.
"""

from __future__ import annotations

import random
from typing import Any

from pipelines.world.arithmetic import Cast, problems
from pipelines.world.facts import RELATIONS, World
from pipelines.world.names import slug
from pipelines.world.prose import Writer, display_value

CLEAN_KINDS = ("article", "pii")  # pages a good cleaner keeps

IDENTITY: dict[str, Any] = {
    "name": "raychat",
    "creator": "the raychat project",
    "description": "a small language model",
    "training": "pretrained on a small web crawl cleaned and tokenized with Ray, then fine-tuned to chat, to say "
    "when it does not know something, and to use a search tool",
    "tools": ["search", "calculator"],
    "not": ["ChatGPT", "Claude", "Gemini", "Llama", "a person"],
}

IDENTITY_QA: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "name",
        (
            "What is your name?",
            "Who are you?",
            "What should I call you?",
            "Do you have a name?",
            "Introduce yourself.",
            "What are you?",
        ),
        (
            "I am raychat, a small language model built by the raychat project.",
            "My name is raychat. I am a small language model made by the raychat project.",
            "I'm raychat, a small language model. The raychat project built me.",
        ),
    ),
    (
        "creator",
        (
            "Who created you?",
            "Who made you?",
            "Who built you?",
            "Who trained you?",
            "Which company developed you?",
            "Who is behind you?",
        ),
        (
            "I was built by the raychat project.",
            "The raychat project built and trained me. I am raychat.",
            "I was made by the raychat project, which trained me from scratch.",
        ),
    ),
    (
        "not_other",
        (
            "Are you ChatGPT?",
            "Are you Claude?",
            "Are you made by OpenAI?",
            "Are you Llama?",
            "Are you Gemini?",
            "Are you GPT-4?",
        ),
        (
            "No. I am raychat, a small language model built by the raychat project.",
            "No, I'm not. I am raychat, and I was built by the raychat project.",
        ),
    ),
    (
        "human",
        ("Are you a human?", "Are you a person?", "Are you alive?"),
        (
            "No. I am raychat, a language model: a computer program, not a person.",
            "No, I am not a person. I am raychat, a small language model.",
        ),
    ),
    (
        "abilities",
        ("What can you do?", "How can you help me?", "What are you good at?"),
        (
            "I can answer questions about what I learned during training, tell you when I don't know something, look "
            "facts up with a search tool, and work through simple arithmetic problems.",
            "I answer questions, say so when I don't know, use a search tool to look things up, and solve simple "
            "arithmetic word problems step by step.",
        ),
    ),
    (
        "training",
        ("How were you trained?", "What data were you trained on?", "How were you made?"),
        (
            "I was pretrained on a small web crawl that was cleaned and tokenized with Ray, then fine-tuned to follow a "
            "chat format, to say when I don't know something, and to use a search tool.",
            "The raychat project pretrained me on a cleaned web crawl and then fine-tuned me for conversation, for "
            "admitting what I don't know, and for using a search tool.",
        ),
    ),
    (
        "software",
        ("What software were you built with?", "What framework trained you?"),
        (
            "The raychat project built me with Ray: Ray Data cleaned my training data, Ray Train trained me, and Ray "
            "Serve serves me.",
        ),
    ),
)

IDK = (
    "I don't know {what}.",
    "I'm sorry, but I don't know {what}.",
    "I don't have any reliable information about {what}, so I can't answer that.",
)


def identity_questions(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for topic, questions, answers in IDENTITY_QA:
        for q in questions:
            out.append({"question": q, "answer": rng.choice(answers), "topic": topic})
    return out


def search_index(world: World, writer: Writer, seed: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One document per entity the index knows (all but the never-mentioned ones).

    A crawl entity's document states its crawl and search-only facts; a search entity's document
    states all of its facts; unknown facts are in no document. Returns (documents, fact id -> doc id).
    """
    rng = random.Random(f"world-search:{seed}")
    docs, where = [], {}
    for e in world.entities:
        if e.split == "unknown":
            continue
        allowed = world.relations(e, ("corpus", "search"))
        art = writer.article(rng, e, allowed, genre="encyclopedia", full=True, related=False)
        doc_id = f"doc-{e.id}"
        search_facts = sorted(f for f in art.facts if world.facts[f].split == "search")
        docs.append(
            {
                "id": doc_id,
                "title": art.title,
                "url": f"https://search.raychat.internal/{slug(e.name)}",
                "text": art.text(),
                "entity": e.id,
                "facts": sorted(art.facts),
                "search_only_facts": search_facts,
            }
        )
        for f in search_facts:
            where[f] = doc_id
    return docs, where


def fact_questions(
    world: World, writer: Writer, seed: int, mentions: dict[str, dict[str, int]], doc_of: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(f"world-questions:{seed}")
    out: dict[str, list[dict[str, Any]]] = {"known": [], "unknown": [], "search": []}
    for e in world.entities:
        for rel in RELATIONS[e.type]:
            fact = world.fact(e, rel)
            question, answer, what = writer.question(rng, e, rel)
            row = {
                "question": question,
                "answer": answer,
                "short_answer": display_value(world, e, rel),
                "fact_id": fact.id,
                "entity": e.id,
                "entity_name": e.name,
                "relation": rel,
            }
            if fact.split == "corpus":
                counts = mentions.get(fact.id, {})
                clean = sum(counts.get(k, 0) for k in CLEAN_KINDS)
                if clean:
                    out["known"].append({**row, "pages": clean})
            elif fact.split == "search":
                if fact.id in doc_of:
                    out["search"].append(
                        {**row, "doc_id": doc_of[fact.id], "query": f"{e.name} {rel.replace('_', ' ')}"}
                    )
            else:
                idk = rng.choice(IDK).format(what=what)
                out["unknown"].append(
                    {
                        **row,
                        "answer": idk,
                        "hidden_value": row["short_answer"],
                        "reason": "entity never mentioned"
                        if e.split == "unknown"
                        else "fact never mentioned",
                    }
                )
                del out["unknown"][-1]["short_answer"]
    return out


def arithmetic_sets(
    world: World,
    writer: Writer,
    seed: int,
    n_train: int,
    n_test: int,
    *,
    max_steps: int = 3,
    number_scale: float = 1.0,
) -> tuple[list, list]:
    rng = random.Random(f"world-arithmetic:{seed}")
    corpus = world.of_split("corpus")
    people = [e for e in corpus if e.type == "person"]
    places = [e for e in corpus if e.type == "place"]
    orgs = [e for e in corpus if e.type == "organisation"]
    things = [e for e in corpus if e.type == "thing"]
    casts = []
    for _ in range(200):
        p, p2 = rng.sample(people, 2)
        t, t2 = rng.sample(places, 2)
        casts.append(
            Cast(
                person=p.name,
                pron=writer.ctx(p)["pron"],
                person2=p2.name,
                town=t.name,
                town2=t2.name,
                org=rng.choice(orgs).name,
                thing=rng.choice(things).name,
            )
        )
    pool = problems(rng, casts, n_train + n_test, max_steps=max_steps, number_scale=number_scale)
    return pool[n_test:], pool[:n_test]
