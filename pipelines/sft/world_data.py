"""The tiny world's post-training data: held-out splits, SFT conversations of every kind, eval sets.

    python -m pipelines.sft.world_data --world runs/tiny/world --out runs/tiny/sft_data
    python -m pipelines.sft.world_data --world runs/tiny/world --out /tmp/x --set idk.fresh_names=5000

    from pipelines.sft.world_data import build_world_sft_data, mixture_sources
    counts = build_world_sft_data("runs/tiny/world", "runs/tiny/sft_data", SFTDataConfig())
    MixtureConfig(sources=mixture_sources("runs/tiny/sft_data") + [SourceConfig(path="alpaca.json")])

Pure Python, no Ray, seconds on a laptop; everything is a function of the world's files and
``SFTDataConfig`` (same inputs, same bytes). What it writes under ``out``:

    splits/<name>.jsonl          every split's rows (pipelines/sft/world_splits.py), eval sets included:
                                 known_eval, unknown_eval, search_eval, identity_eval, arithmetic_test,
                                 probes_test, and idk_probe (what the IDK stage asks the model k times)
    splits/entities.json         entity id -> group
    splits/heldout_names.json    names no training text may contain (``load_heldout(out).mentions(text)``)
    conversations/<kind>.jsonl   SFT conversations, OpenAI messages JSONL with "meta" (kind, fact, ...):
                                 identity, qa, no_search, idk, search, search_fresh, search_miss,
                                 passage, arithmetic, probes
    ablation/arithmetic_<layout>.jsonl   the same train problems in every layout (answer-first vs
                                 reasoning-first, with and without the calculator)
    counts.json                  rows per split, conversations per kind, what was dropped and why

**Tools**: conversations where the assistant may use the search tool and the calculator start with a
system message holding ``tools_note`` (search traces, search misses, "no search needed" answers,
calculator layouts); the others do not. So an evaluation "with the tool" adds the note (and the tool
hooks), one "without" leaves both out, and the model has seen both situations in training.
A share of all conversations (``system_prompt_share``) also starts with the identity system message.

**Held out**: no training conversation mentions a held-out entity (known eval, unknown eval, search
eval) in a prompt or a reply; one that would (an answer naming a held-out town) is dropped and counted,
and a final audit checks every conversation again. Search traces are answered by an index of training
entities' pages only, with the search actor's settings, so no held-out fact is ever in a result; a
result may still name a held-out entity (a training person's page says where they were born), which
is not trained on (results are masked) and is counted in ``notes``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from lm.chat_messages import Conversation, normalize_conversation
from lm.search_index import SearchIndex, split_passages
from pipelines import storage
from pipelines.idk.judge import states
from pipelines.sft.conversations import (
    arithmetic_conversation,
    idk_conversation,
    passage_conversation,
    qa_conversation,
    queries,
    search_miss,
    search_trace,
    with_system,
)
from pipelines.sft.identity import identity_conversation, identity_questions
from pipelines.sft.search_fresh import answering_queries, fresh_search_traces
from pipelines.sft.sources import SourceConfig
from pipelines.sft.world_config import ARITHMETIC_LAYOUTS, KINDS, SFTDataConfig
from pipelines.sft.world_splits import HeldOut, Splits, WorldFiles, load_world, make_splits
from pipelines.world.fresh import FreshNames, fresh_entities, fresh_questions
from pipelines.world.probes import FORMS, probe_sets
from pipelines.world.probes import conversation as probe_conversation

log = logging.getLogger("raychat")

# + calculator layouts and probe forms, per example
TOOL_KINDS = ("no_search", "search", "search_fresh", "search_miss")


@dataclass
class WorldSFTData:
    splits: Splits
    rows: dict[str, list[dict[str, Any]]]  # every split written under splits/
    conversations: dict[str, list[Conversation]]  # kind -> SFT conversations
    ablation: dict[str, list[Conversation]]  # layout -> conversations
    dropped: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, Any]:
        unknown_by_reason = Counter(r.get("reason", "") for r in self.rows["unknown_eval"])
        return {
            **self.splits.counts(),
            "rows": {k: len(v) for k, v in self.rows.items()},
            "unknown_eval_by_reason": dict(unknown_by_reason),
            "conversations": {k: len(v) for k, v in self.conversations.items()},
            "conversations_total": sum(len(v) for v in self.conversations.values()),
            "ablation": {k: len(v) for k, v in self.ablation.items()},
            "dropped": dict(self.dropped),
            "notes": dict(self.notes),
        }


def conversation_text(conv: Conversation, results: bool = False) -> str:
    """What a conversation shows the model: its messages, queries and expressions, and with
    ``results`` the tool results too."""
    out = []
    for m in conv["messages"]:
        content = m["content"]
        if isinstance(content, str):
            out.append(content)
            continue
        for p in content:
            out += [str(v) for k, v in p.items() if k not in ("type", "result") and v is not None]
            if results and p.get("result") is not None:
                out.append(p["result"])
    return "\n".join(out)


class _Builder:
    def __init__(self, world: WorldFiles, cfg: SFTDataConfig) -> None:
        self.world, self.cfg, self.seed = world, cfg, cfg.seed
        self.drawer = FreshNames(cfg.seed, taken=world.names)
        self.splits = make_splits(world, cfg.splits, cfg.seed, self.drawer)
        self.dropped: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.rows = dict(self.splits.rows)
        self.index: SearchIndex | None = None

    def rng(self, what: str) -> random.Random:
        return random.Random(f"sft-data:{what}:{self.seed}")

    def keep(self, kind: str, conv: Conversation) -> bool:
        """False (and counted) when the conversation mentions a held-out entity outside tool results;
        a mention inside a result (a training entity's page naming a held-out town) is counted only."""
        if self.splits.heldout.mentions(conversation_text(conv)):
            self.dropped[f"{kind}: mentions a held-out entity"] += 1
            return False
        if self.splits.heldout.mentions(conversation_text(conv, results=True)):
            self.notes[f"{kind}: a held-out name inside a tool result"] += 1
        return True

    # -- kinds ------------------------------------------------------------------------------------

    def identity(self) -> list[Conversation]:
        train, held = identity_questions(self.cfg.identity, self.seed)
        self.rows["identity_train"], self.rows["identity_eval"] = train, held
        rng = self.rng("identity")
        order = list(range(len(train)))
        out = []
        for i in range(self.cfg.identity.conversations if train else 0):
            if i % len(order) == 0:
                rng.shuffle(order)
            out.append(identity_conversation(train[order[i % len(order)]], rng))
        return out

    def qa(self) -> tuple[list[Conversation], list[Conversation]]:
        rng, cfg = self.rng("qa"), self.cfg.qa
        out = []
        for i, row in enumerate(self.rows["known_train"]):
            for j, q in enumerate(
                rng.sample(row["questions"], min(cfg.phrasings_per_fact, len(row["questions"])))
            ):
                style = (
                    cfg.answer_style if cfg.answer_style != "mixed" else ("short", "sentence")[(i + j) % 2]
                )
                conv = qa_conversation(row, q, style)
                if self.keep("qa", conv):
                    out.append(conv)
        no_search = []
        pool = self.rows["known_train"]
        for _ in range(cfg.no_search if pool else 0):
            row = pool[rng.randrange(len(pool))]
            conv = qa_conversation(row, rng.choice(row["questions"]), "sentence", kind="no_search")
            if self.keep("no_search", conv):
                no_search.append(conv)
        return out, no_search

    def idk(self) -> tuple[list[Conversation], list[dict[str, Any]]]:
        cfg = self.cfg.idk
        entities = fresh_entities(cfg.fresh_names + cfg.search_miss, self.seed, drawer=self.drawer)
        rows = fresh_questions(entities, self.seed, cfg.questions_per_name)
        plain = [r for r in rows if int(r["entity"][5:]) < cfg.fresh_names]
        misses = [r for r in rows if int(r["entity"][5:]) >= cfg.fresh_names]
        self.rows["fresh_idk"], self.rows["fresh_search_miss"] = plain, misses
        rng = self.rng("idk")
        source = plain + (self.rows["unknown_train"] if cfg.world_unknown_facts else [])
        out = [idk_conversation(r, rng, rng.choice(r["questions"])) for r in source]
        return [c for c in out if self.keep("idk", c)], misses

    def search_index(self) -> SearchIndex:
        if self.index is None:
            s = self.cfg.search
            groups = self.splits.groups
            docs = [d for d in self.world.documents if groups.get(d.get("entity")) in ("sft", "search_train")]
            self.index = SearchIndex.build(docs, passage_words=s.passage_words)
        return self.index

    def search(self) -> list[Conversation]:
        s, rng = self.cfg.search, self.rng("search")
        index = self.search_index()
        out = []
        for row in self.rows["search_train"]:
            made = 0
            for query in answering_queries(row, index, s, rng):
                conv = search_trace(row, query, index.answer(query, s.k, s.max_chars), rng)
                if self.keep("search", conv):
                    out.append(conv)
                made += 1
                if made == s.traces_per_fact:
                    break
            if not made:
                self.dropped["search: no query finds the answer in the top hits"] += 1
        return out

    def search_fresh(self) -> list[Conversation]:
        traces, dropped = fresh_search_traces(
            self.cfg.search.fresh_traces, self.seed, self.drawer, self.cfg.search
        )
        self.dropped.update(dropped)
        return [c for c in traces if self.keep("search_fresh", c)]

    def search_misses(self, rows: list[dict[str, Any]]) -> list[Conversation]:
        s, rng = self.cfg.search, self.rng("search_miss")
        index = self.search_index()
        out = []
        for row in rows:
            query = rng.choice(queries(row))
            conv = search_miss(row, query, index.answer(query, s.k, s.max_chars), rng)
            if self.keep("search_miss", conv):
                out.append(conv)
        return out

    def passages(self) -> list[Conversation]:
        s, rng = self.cfg.search, self.rng("passage")
        by_entity: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows["known_train"] + self.rows["search_train"]:
            by_entity.setdefault(row["entity"], []).append(row)
        unknown: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows["unknown_train"]:
            unknown.setdefault(row["entity"], []).append(row)
        answerable, unanswerable = [], []
        groups = self.splits.groups
        for doc in self.world.documents:
            if groups.get(doc.get("entity")) not in ("sft", "search_train"):
                continue
            for passage in split_passages(doc["text"], s.passage_words or 80):
                if self.splits.heldout.mentions(passage):
                    continue
                for row in by_entity.get(doc["entity"], ()):
                    if states(passage, row["short_answer"]):
                        answerable.append((passage, row))
                for row in unknown.get(doc["entity"], ()):
                    unanswerable.append((passage, row))
        n_un = round(s.passages * s.unanswerable_share) if unanswerable else 0
        n_ans = s.passages - n_un if answerable else 0
        out = []
        for pool, n, ok in ((answerable, n_ans, True), (unanswerable, n_un, False)):
            picks = rng.sample(pool, n) if n <= len(pool) else [rng.choice(pool) for _ in range(n)]
            for passage, row in picks:
                conv = passage_conversation(passage, row, ok, rng, self.cfg.qa.answer_style)
                if self.keep("passage", conv):
                    out.append(conv)
        return out

    def arithmetic(self) -> tuple[list[Conversation], dict[str, list[Conversation]]]:
        a = self.cfg.arithmetic
        main = [
            arithmetic_conversation(p, a.layout, a.final_style, a.mental_limit)
            for p in self.rows["arithmetic_cold_start"]
        ]
        pool = self.splits.arithmetic_pool[: a.ablation_problems]
        ablation = {
            layout: [arithmetic_conversation(p, layout, "gsm8k", a.mental_limit) for p in pool]
            for layout in ARITHMETIC_LAYOUTS
        }
        return [c for c in main if self.keep("arithmetic", c)], ablation

    def probes(self) -> list[Conversation]:
        p = self.cfg.probes
        train, test = probe_sets(self.seed, p.counting, p.decimal)
        self.rows["probes_train"], self.rows["probes_test"] = train, test
        return [probe_conversation(item, FORMS[i % len(FORMS)]) for i, item in enumerate(train)]

    # -- system messages ----------------------------------------------------------------------------

    def system(
        self, kind: str, conv: Conversation, rng: random.Random, identity: bool = True
    ) -> Conversation:
        """The identity system message for a share of conversations (``identity``), and the tools note
        where the assistant may use the tools."""
        texts = []
        if identity and rng.random() < self.cfg.system_prompt_share:
            ident = self.cfg.identity
            texts.append(
                self.cfg.system_prompt.format(
                    name=ident.name, description=ident.description, creator=ident.creator
                )
            )
        meta = conv.get("meta", {})
        tools = (
            kind in TOOL_KINDS or meta.get("layout") == "reasoning_calc" or meta.get("form") == "calculator"
        )
        if tools and self.cfg.tools_note:
            texts.append(self.cfg.tools_note)
        return with_system(conv, texts)


def build(world: WorldFiles, cfg: SFTDataConfig) -> WorldSFTData:
    """Every split and conversation for ``world`` under ``cfg`` (nothing is written)."""
    b = _Builder(world, cfg)
    convs: dict[str, list[Conversation]] = {}
    convs["identity"] = b.identity()
    convs["qa"], convs["no_search"] = b.qa()
    convs["idk"], misses = b.idk()
    convs["search"] = b.search()
    convs["search_fresh"] = b.search_fresh()
    convs["search_miss"] = b.search_misses(misses)
    convs["passage"] = b.passages()
    convs["arithmetic"], ablation = b.arithmetic()
    convs["probes"] = b.probes()
    rng = b.rng("system")
    convs = {k: [b.system(k, c, rng) for c in v] for k, v in convs.items()}
    # the ablation's layouts differ in nothing else: no identity message, the tools note where calls are
    ablation = {k: [b.system("arithmetic", c, rng, identity=False) for c in v] for k, v in ablation.items()}
    for kind, items in convs.items():  # the audit: nothing held out, every conversation canonical
        for i, conv in enumerate(items):
            leaked = b.splits.heldout.mentions(conversation_text(conv))
            if leaked:
                raise AssertionError(f"{kind} conversation mentions held-out {leaked}: {conv['messages']}")
            items[i] = normalize_conversation(conv)
    ablation = {k: [normalize_conversation(c) for c in v] for k, v in ablation.items()}
    return WorldSFTData(b.splits, b.rows, convs, ablation, b.dropped, b.notes)


def _jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()


def world_stamp(world_dir: str) -> str:
    """Which world the data was built from (its facts file's size and time, local or in an object
    store): recorded in counts.json, so a stage that reuses the data can tell a redone world."""
    fs, path = storage.fs_and_path(storage.join(str(world_dir), "facts.json"))
    info = fs.get_file_info(path)
    return f"{info.size}:{info.mtime_ns}"


def write(data: WorldSFTData, out: str, cfg: SFTDataConfig, world: str | None = None) -> dict[str, Any]:
    """Write ``data`` under ``out`` (module docstring); returns the counts, also in counts.json."""
    storage.remove(storage.join(out, "counts.json"))  # a rebuild killed midway must not look complete
    for name, rows in data.rows.items():
        storage.write_bytes_atomic(storage.join(out, "splits", f"{name}.jsonl"), _jsonl(rows))
    storage.write_json(storage.join(out, "splits", "entities.json"), data.splits.groups)
    storage.write_json(storage.join(out, "splits", "heldout_names.json"), data.splits.heldout.source_names)
    for kind, convs in data.conversations.items():
        storage.write_bytes_atomic(storage.join(out, "conversations", f"{kind}.jsonl"), _jsonl(convs))
    for layout, convs in data.ablation.items():
        storage.write_bytes_atomic(storage.join(out, "ablation", f"arithmetic_{layout}.jsonl"), _jsonl(convs))
    counts = {**data.counts(), "config": cfg.model_dump(mode="json"), "world": world}
    storage.write_json(storage.join(out, "counts.json"), counts)  # last: a directory with it is complete
    return counts


def build_world_sft_data(world_dir: str, out: str, cfg: SFTDataConfig | None = None) -> dict[str, Any]:
    """Read the world, build every split and conversation, write them under ``out``; the counts."""
    cfg = cfg or SFTDataConfig()
    data = build(load_world(world_dir), cfg)
    counts = write(data, out, cfg, world_stamp(world_dir))
    log.info(
        "sft data: %d conversations (%s), held-out rows %s, dropped %s",
        counts["conversations_total"],
        ", ".join(f"{k} {n}" for k, n in counts["conversations"].items()),
        {k: counts["rows"][k] for k in ("known_eval", "unknown_eval", "search_eval", "identity_eval")},
        counts["dropped"] or "nothing",
    )
    return counts


def load_heldout(out: str) -> HeldOut:
    """The held-out names of a written data directory, for stages that write more training data
    (the IDK stage's refusals and answers must not name a held-out entity either)."""
    names = storage.read_json(storage.join(out, "splits", "heldout_names.json"))
    if names is None:
        raise FileNotFoundError(f"{out} holds no splits/heldout_names.json; build the world SFT data first")
    return HeldOut(names)


def mixture_sources(
    out: str, kinds: tuple[str, ...] = KINDS, epochs: dict[str, float] | None = None, **settings: Any
) -> list[SourceConfig]:
    """One ``SourceConfig`` per non-empty conversation file under ``out`` (``settings`` such as
    ``weight`` go to each; ``epochs`` by kind), for ``MixtureConfig(sources=...)``."""
    epochs = epochs or {}
    counts = storage.read_json(storage.join(out, "counts.json"))
    if not counts:
        raise FileNotFoundError(f"{out} holds no counts.json; build the world SFT data first")
    return [
        SourceConfig(
            path=storage.join(out, "conversations", f"{k}.jsonl"),
            format="messages",
            name=f"world-{k}",
            **({"epochs": epochs[k]} if k in epochs else {}),
            **settings,
        )
        for k in kinds
        if counts["conversations"].get(k)
    ]


def main(argv: list[str] | None = None) -> int:
    """Build the tiny world's SFT data from a world directory; print the counts."""
    from pipelines.config import ConfigError, apply_override, parse_override

    parser = argparse.ArgumentParser(prog="python -m pipelines.sft.world_data", description=main.__doc__)
    parser.add_argument("--world", required=True, help="the world stage's output (<run>/world)")
    parser.add_argument("--out", required=True, help="where to write (e.g. <run>/sft_data)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="an SFTDataConfig field"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        data: dict[str, Any] = {}
        for text in args.set:
            keys, value = parse_override(text)
            apply_override(data, keys, value)
        cfg = SFTDataConfig.model_validate(data)
        counts = build_world_sft_data(args.world, args.out, cfg)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"error: {where}: {first['msg']}", file=sys.stderr)
        return 2
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in counts.items() if k != "config"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
