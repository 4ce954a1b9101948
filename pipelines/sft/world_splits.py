"""Honest held-out sets: the tiny world's entities, questions and problems shared out between training
and evaluation, so that every post-training number is measured on something the model never trained on.

Crawl entities (the ones pretraining reads about) go whole, stratified by type, to one of:

- ``sft``: their known facts are plain question-answer SFT examples (and their never-stated facts,
  refusals: a known entity with an unknown attribute);
- ``idk_probe``: their known facts are the questions the "I don't know" stage asks the model k times
  (questions the model was never fine-tuned on); never-stated facts are refusals, as for ``sft``;
- ``heldout_known``: evaluation only: known facts measure that accuracy on what pretraining taught does
  not collapse; never-stated facts measure refusals about attributes of known entities.

Entities the corpus never mentions (the world's ``unknown`` entities) are all evaluation: refusal
training uses thousands of fresh names instead (pipelines/world/fresh.py), so the refusal rate is
measured on names used neither in pretraining nor in IDK training. Search-only entities are split into
``search_train`` / ``search_eval``; search-only facts of crawl entities follow their entity (held-out
entities' go to evaluation; probe entities' are used nowhere, since a search trace would show the
probed entity's page in training). Arithmetic train problems are split into a cold-start set (worked
solutions for SFT) and an RL set (answers only); the world's arithmetic test set stays the test.

Held-out names stay out of training text altogether: ``HeldOut.mentions`` finds them, the builders drop
a training conversation that mentions one (and count it), and arithmetic problems, whose characters are
drawn from the crawl's people and places, get fresh names in their place (``recast``).
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipelines import storage
from pipelines.records import Record, read_records
from pipelines.sft.world_config import SplitConfig
from pipelines.world.facts import ENTITY_TYPES
from pipelines.world.fresh import FreshNames
from pipelines.world.phrasing import questions, what

log = logging.getLogger("raychat")

QUESTION_SETS = ("known", "unknown", "search", "arithmetic_train", "arithmetic_test")
ENTITY_GROUPS = ("sft", "idk_probe", "heldout_known", "heldout_unknown", "search_train", "search_eval")
HELDOUT_GROUPS = ("heldout_known", "heldout_unknown", "search_eval")
TRAIN_GROUPS = ("sft", "search_train")  # entities whose facts and documents SFT examples may show


class WorldDataError(ValueError):
    """The world's files are missing or unusable, described for a person."""


@dataclass
class WorldFiles:
    """What the world stage wrote, as read back from ``<run>/world``."""

    directory: str
    seed: int
    entities: dict[str, dict[str, Any]]  # id -> {id, name, type, split, attributes, gender?}
    questions: dict[str, list[dict[str, Any]]]
    documents: list[dict[str, Any]]  # search_index.jsonl
    skipped: Counter[str] = field(default_factory=Counter)  # file -> unreadable records

    @property
    def names(self) -> list[str]:
        return [e["name"] for e in self.entities.values()]


def load_world(directory: str) -> WorldFiles:
    """Read facts.json, the question sets and the search index; unreadable records are skipped and
    counted (``skipped``), a missing file is a ``WorldDataError`` saying to run the world stage."""
    facts = storage.read_json(storage.join(directory, "facts.json"))
    if not isinstance(facts, dict) or "entities" not in facts:
        raise WorldDataError(
            f"{directory}: no facts.json with entities; run the world stage first (raychat world)"
        )
    skipped: Counter[str] = Counter()

    def rows(name: str) -> list[dict[str, Any]]:
        path = storage.join(directory, name)
        if not storage.exists(path):
            raise WorldDataError(f"{path} is missing; run the world stage again (raychat world --force)")
        out = []
        for item in read_records(path):
            if isinstance(item, Record) and isinstance(item.value, dict):
                out.append(item.value)
            else:
                skipped[name] += 1
                log.warning("world data: skipped %s", item)
        return out

    sets = {name: rows(f"questions/{name}.jsonl") for name in QUESTION_SETS}
    return WorldFiles(
        directory=directory,
        seed=int(facts.get("seed", 0)),
        entities={e["id"]: e for e in facts["entities"]},
        questions=sets,
        documents=rows("search_index.jsonl"),
        skipped=skipped,
    )


class HeldOut:
    """The names training text must not contain, and a fast test for them."""

    def __init__(self, names: list[str]) -> None:
        # "the Ashwell Museum" is also written "The Ashwell Museum" and "Ashwell Museum"
        self.source_names = sorted(set(names))
        bare = sorted({_bare(n) for n in names if _bare(n)}, key=len, reverse=True)
        self.names = bare
        self._re = re.compile(r"\b(?:" + "|".join(map(re.escape, bare)) + r")\b", re.I) if bare else None

    def mentions(self, text: str) -> list[str]:
        return sorted({m.group(0) for m in self._re.finditer(text)}) if self._re else []


def _bare(name: str) -> str:
    return name[4:] if name.lower().startswith("the ") else name


@dataclass
class Splits:
    """Every split's rows, which group each entity is in, and the names training must not mention."""

    groups: dict[str, str]  # entity id -> group (ENTITY_GROUPS)
    rows: dict[str, list[dict[str, Any]]]
    heldout: HeldOut
    recast: dict[str, str]  # held-out name -> fresh name used in arithmetic problems
    arithmetic_pool: list[dict[str, Any]] = field(default_factory=list)  # train problems, cold start first
    unused: Counter[str] = field(default_factory=Counter)  # rows put in no split, by reason

    def counts(self) -> dict[str, Any]:
        return {
            "entities": dict(Counter(self.groups.values())),
            "rows": {k: len(v) for k, v in self.rows.items()},
            "recast_names": len(self.recast),
            "unused": dict(self.unused),
        }


def _row(world: WorldFiles, q: dict[str, Any]) -> dict[str, Any]:
    """A question row with every phrasing of its fact and the indirect form refusals use."""
    e = world.entities[q["entity"]]
    org_type = e["attributes"].get("org_type")
    return {
        **q,
        "entity_type": e["type"],
        "questions": questions(e["type"], q["relation"], e["name"], org_type),
        "what": what(e["type"], q["relation"], e["name"], org_type),
    }


def _shares(ids: list[str], shares: list[tuple[str, float]]) -> dict[str, str]:
    """Cut a shuffled list by shares (largest remainders; the last group takes what is left)."""
    exact = [len(ids) * s for _, s in shares]
    counts = [int(x) for x in exact]
    rest = len(ids) - sum(counts)
    for i in sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)[: max(0, rest)]:
        counts[i] += 1
    out, pos = {}, 0
    for (group, _), n in zip(shares, counts, strict=True):
        for eid in ids[pos : pos + n]:
            out[eid] = group
        pos += n
    return out


def make_splits(world: WorldFiles, cfg: SplitConfig, seed: int, fresh: FreshNames) -> Splits:
    """Share the world out (module docstring). Deterministic in ``seed``; ``fresh`` draws the names
    that replace held-out ones in arithmetic problems (and, shared with the IDK names, never repeats)."""
    rng = random.Random(f"sft-splits:{seed}")
    groups: dict[str, str] = {}
    heldout_share = 1 - cfg.sft_entities - cfg.idk_probe_entities
    for etype in ENTITY_TYPES:
        crawl = sorted(i for i, e in world.entities.items() if e["type"] == etype and e["split"] == "corpus")
        rng.shuffle(crawl)
        groups |= _shares(
            crawl,
            [
                ("sft", cfg.sft_entities),
                ("idk_probe", cfg.idk_probe_entities),
                ("heldout_known", heldout_share),
            ],
        )
        search = sorted(i for i, e in world.entities.items() if e["type"] == etype and e["split"] == "search")
        rng.shuffle(search)
        groups |= _shares(
            search,
            [("search_train", cfg.search_train_entities), ("search_eval", 1 - cfg.search_train_entities)],
        )
    for i, e in world.entities.items():
        if e["split"] == "unknown":
            groups[i] = "heldout_unknown"

    rows: dict[str, list[dict[str, Any]]] = {
        k: []
        for k in (
            "known_train",
            "idk_probe",
            "known_eval",
            "unknown_train",
            "unknown_eval",
            "search_train",
            "search_eval",
        )
    }
    for q in world.questions["known"]:
        target = {"sft": "known_train", "idk_probe": "idk_probe", "heldout_known": "known_eval"}
        rows[target[groups[q["entity"]]]].append(_row(world, q))
    for q in world.questions["unknown"]:
        train = groups[q["entity"]] in ("sft", "idk_probe")
        rows["unknown_train" if train else "unknown_eval"].append(_row(world, q))
    unused: Counter[str] = Counter()
    for q in world.questions["search"]:
        group = groups[q["entity"]]
        if group == "idk_probe":  # its document would show the probed facts in training; used nowhere
            unused["search_facts_of_idk_probe_entities"] += 1
            continue
        corpus = world.entities[q["entity"]]["split"] == "corpus"
        reason = "fact only in the index" if corpus else "entity only in the index"
        target = "search_train" if group in TRAIN_GROUPS else "search_eval"
        rows[target].append({**_row(world, q), "reason": reason})

    held_names = [world.entities[i]["name"] for i, g in groups.items() if g in HELDOUT_GROUPS]
    heldout = HeldOut(held_names)
    recast = _recast_map(world, groups, fresh)
    problems = [dict(p) for p in world.questions["arithmetic_train"]]
    rng.shuffle(problems)
    n_cold = min(cfg.arithmetic_cold_start, len(problems))
    cold, rest = problems[:n_cold], problems[n_cold:]
    rl = rest if cfg.arithmetic_rl_train is None else rest[: cfg.arithmetic_rl_train]
    rows["arithmetic_cold_start"] = [recast_problem(p, recast) for p in cold]
    rows["arithmetic_rl_train"] = [
        {"question": recast_text(p["question"], recast), "final": p["final"], "template": p.get("template")}
        for p in rl
    ]
    rows["arithmetic_test"] = [dict(p) for p in world.questions["arithmetic_test"]]
    pool = [recast_problem(p, recast) for p in problems]
    return Splits(
        groups=groups, rows=rows, heldout=heldout, recast=recast, arithmetic_pool=pool, unused=unused
    )


def _recast_map(world: WorldFiles, groups: dict[str, str], fresh: FreshNames) -> dict[str, str]:
    """A fresh name of the same type (and gender) for every held-out crawl entity."""
    out = {}
    for eid in sorted(groups):
        if groups[eid] != "heldout_known":
            continue
        e = world.entities[eid]
        out[e["name"]] = fresh.draw(e["type"], e.get("gender")).name
    return out


def recast_text(text: str, mapping: dict[str, str]) -> str:
    """``text`` with every name in ``mapping`` replaced (a capital kept: 'The Ashwell Museum ...')."""
    if not mapping:
        return text
    by_lower = {k.lower(): v for k, v in mapping.items()}
    pattern = re.compile(
        r"\b(?:" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True))) + r")\b", re.I
    )

    def swap(m: re.Match[str]) -> str:
        new = by_lower[m.group(0).lower()]
        return new[:1].upper() + new[1:] if m.group(0)[:1].isupper() else new

    return pattern.sub(swap, text)


def recast_problem(problem: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    return {
        **problem,
        "question": recast_text(problem["question"], mapping),
        "answer": recast_text(problem["answer"], mapping),
    }
