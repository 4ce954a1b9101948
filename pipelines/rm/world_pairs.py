"""Preference pairs the tiny world can make, each kind with a reason to prefer one reply, and honest
held-out sets.

    from pipelines.rm.world_pairs import build_world_pairs
    pairs = build_world_pairs(load_world("runs/tiny/world"), SFTDataConfig(), WorldPairsConfig(), seed=0)
    pairs.train, pairs.heldout, pairs.counts()

Kinds (``rm.world.kinds``):

- ``identity``: a question about who the assistant is; the configured identity over a reply that
  claims another assistant or maker ("I am ChatGPT, made by OpenAI.", "Yes, Google made me.");
- ``wrong_answer``: a question about a fact the crawl teaches; its answer over a wrong one: the same
  relation's value of another entity, or a near-miss number (a year off by a few, a population 30%
  off). Telling them apart needs the fact itself, so this kind measures what the body knows;
- ``answer_over_refusal``: the same questions; the answer over "I don't know", so the reward model does
  not learn that refusing always pays;
- ``refusal_over_made_up``: questions nobody can answer (names never seen, facts never stated); a
  refusal over a made-up answer in the same style as a real one;
- ``arithmetic_final``: a word problem; the worked solution over the same working ending in another
  final answer (the last line contradicts the steps above it);
- ``arithmetic_step``: the worked solution over one whose last step writes a wrong result and ends on
  it (consistent, but the arithmetic is wrong; with the calculator, the result stands in the tool's
  answer just before the miscopied number).

Splits follow the SFT data (pipelines/sft/world_splits.py, same seed and shares): training pairs come
from the SFT and probe entities' facts, fresh names, the training identity phrasings and the training
arithmetic problems; held-out pairs from held-out entities, the held-out identity phrasings and the
arithmetic test problems only. No training pair names a held-out entity (a pair that would is dropped
and counted; a final audit checks every one). Prompts carry the identity system message for a share of
pairs and the tools note where the calculator is used, as the SFT conversations do. Pure Python.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lm.chat_messages import Message
from pipelines.rm.config import WorldPairsConfig
from pipelines.rm.pairs import PreferencePair, make_pair
from pipelines.sft.conversations import arithmetic_conversation, refusal, short_answer, with_system
from pipelines.sft.identity import identity_questions
from pipelines.sft.world_config import SFTDataConfig
from pipelines.sft.world_splits import HeldOut, Splits, WorldFiles, make_splits
from pipelines.world.fresh import FreshNames, fresh_entities, fresh_questions

YEARS = {"birth_year", "death_year", "founded_year", "year"}
COUNTS = {"population", "elevation", "members", "weight"}
SMALL = {"children"}
IMPOSTORS = (  # a reply claiming another identity: {other} an assistant, {maker} a company
    "I am {other}, an AI assistant made by {maker}.",
    "My name is {other}. I was built by {maker}.",
    "I'm {other}, a large language model trained by {maker}.",
    "I am {name}, a language model made by {maker}.",
)
IMPOSTOR_YES = {  # the same for a question that names the other identity ("Are you Claude?")
    "not_other": ("Yes, I am {other}.", "Yes, I'm {other}, made by {maker}.", "That's right, I am {other}."),
    "not_maker": ("Yes, {maker} made me.", "Yes, I was trained by {maker}.", "Yes, I am a {maker} model."),
}
IDENTITY_VARIANTS = 3
_LAST_STEP = re.compile(r"<<([^<>=]*)=([^<>]*)>>(-?\d[\d,]*(?:\.\d+)?)")
_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)\s*$")


@dataclass
class WorldPairs:
    train: list[PreferencePair]
    heldout: list[PreferencePair]
    dropped: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, Any]:
        return {
            "train": dict(Counter(p.group for p in self.train)),
            "heldout": dict(Counter(p.group for p in self.heldout)),
            "dropped": dict(self.dropped),
        }


# -- wrong and made-up values -------------------------------------------------------------------------


def _number(text: str) -> int | None:
    digits = text.replace(",", "")
    return int(digits) if re.fullmatch(r"-?\d+", digits) else None


def near_miss(relation: str, value: str, rng: random.Random) -> str | None:
    """A wrong number close to ``value`` in the world's own formatting (None: not a number)."""
    n = _number(value)
    if n is None:
        return None
    if relation in YEARS:
        wrong = n + rng.choice([-1, 1]) * rng.randint(1, 40)
        return str(wrong)
    if relation in SMALL:
        return str(rng.choice([k for k in range(0, 9) if k != n]))
    factor = rng.choice([rng.uniform(0.5, 0.85), rng.uniform(1.15, 2.0)])
    wrong = max(1, round(n * factor))
    if wrong == n:
        wrong = n + 1
    return f"{wrong:,}" if "," in value or wrong >= 1000 else str(wrong)


class ValuePool:
    """The values each (entity type, relation) takes, to draw wrong or made-up answers from, and the
    world's answer sentences to dress a made-up value as a real answer."""

    def __init__(self, rows: list[dict[str, Any]], heldout: HeldOut | None) -> None:
        self.values: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.sentences: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            value = r.get("short_answer") or r.get("hidden_value")
            if not value or (heldout is not None and heldout.mentions(value)):
                continue
            key = (r["entity_type"], r["relation"])
            self.values[key].append(value)
            answer = r.get("answer", "")
            if r.get("short_answer") and r["entity_name"] in answer and value in answer:
                self.sentences[key].append(r)
        self.values = {k: sorted(set(v)) for k, v in self.values.items()}

    def other(self, row: dict[str, Any], value: str, rng: random.Random) -> str | None:
        """Another value of the same relation than ``value`` (None when the world has none)."""
        choices = [
            v
            for v in self.values.get((row["entity_type"], row["relation"]), ())
            if v.lower() != value.lower()
        ]
        return rng.choice(choices) if choices else None

    def wrong(self, row: dict[str, Any], rng: random.Random) -> str | None:
        """A wrong answer to a known fact: half near misses (numbers), half another entity's value."""
        value = row["short_answer"]
        if _number(value) is not None and rng.random() < 0.5:
            return near_miss(row["relation"], value, rng)
        return self.other(row, value, rng)

    def made_up(self, row: dict[str, Any], rng: random.Random) -> str | None:
        """A confident answer to a question nobody can answer: the world's hidden value (drawn but
        never written down) or a value the same relation takes elsewhere."""
        if row.get("hidden_value") and rng.random() < 0.5:
            return row["hidden_value"]
        return self.other(row, "", rng)

    def sentence(self, row: dict[str, Any], value: str, rng: random.Random) -> str | None:
        """``value`` stated about ``row``'s entity in one of the world's answer sentences."""
        models = self.sentences.get((row["entity_type"], row["relation"]))
        if not models:
            return None
        model = rng.choice(models)
        text = model["answer"].replace(model["entity_name"], "\0").replace(model["short_answer"], value, 1)
        return text.replace("\0", row["entity_name"])


# -- the builder ------------------------------------------------------------------------------------


def _reply(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


class _Builder:
    def __init__(self, world: WorldFiles, data: SFTDataConfig, cfg: WorldPairsConfig, seed: int) -> None:
        self.world, self.data, self.cfg, self.seed = world, data, cfg, seed
        # the SFT data's own draw, so the held-out entities are exactly the ones SFT never saw
        self.splits: Splits = make_splits(
            world, data.splits, data.seed, FreshNames(data.seed, taken=world.names)
        )
        self.dropped: Counter[str] = Counter()
        rows = self.splits.rows
        train_rows = rows["known_train"] + rows["idk_probe"] + rows["unknown_train"] + rows["search_train"]
        every = train_rows + rows["known_eval"] + rows["unknown_eval"] + rows["search_eval"]
        self.pools = {"train": ValuePool(train_rows, self.splits.heldout), "heldout": ValuePool(every, None)}

    def rng(self, *what: str) -> random.Random:
        return random.Random(f"rm-pairs:{':'.join(what)}:{self.seed}")

    def prompt(self, question: str, rng: random.Random, tools: bool = False) -> list[Message]:
        texts = []
        if rng.random() < self.data.system_prompt_share:
            ident = self.data.identity
            texts.append(
                self.data.system_prompt.format(
                    name=ident.name, description=ident.description, creator=ident.creator
                )
            )
        if tools and self.data.tools_note:
            texts.append(self.data.tools_note)
        return with_system({"messages": [{"role": "user", "content": question}]}, texts)["messages"]

    def style(self, rng: random.Random) -> str:
        style = self.cfg.answer_style
        return rng.choice(("short", "sentence")) if style == "mixed" else style

    def answer(self, row: dict[str, Any], value: str, style: str, rng: random.Random, split: str) -> str:
        """``value`` as the answer to ``row``'s question: '1698.' or a sentence in the world's words."""
        if style == "sentence":
            if value == row.get("short_answer") and "answer" in row and value in row["answer"]:
                return row["answer"]
            if "answer" in row and row.get("short_answer") and row["short_answer"] in row["answer"]:
                return row["answer"].replace(row["short_answer"], value, 1)
            made = self.pools[split].sentence(row, value, rng)
            if made:
                return made
        return short_answer(value)

    # -- kinds -------------------------------------------------------------------------------------

    def identity(self, split: str) -> list[PreferencePair]:
        ident = self.data.identity
        train, held = identity_questions(ident, self.data.seed)
        rng, out = self.rng("identity", split), []
        makers = ident.other_makers or ["another company"]
        # each training phrasing with a few answers and impostors: there are only ~100 phrasings
        for row in train * IDENTITY_VARIANTS if split == "train" else held:
            other = row.get("other") or rng.choice(ident.other_assistants)
            maker = row.get("maker")
            if maker is None:  # the defaults pair each assistant with its maker; otherwise any maker
                index = ident.other_assistants.index(other)
                maker = makers[index] if index < len(makers) else rng.choice(makers)
            templates = IMPOSTOR_YES.get(row["topic"], IMPOSTORS)
            bad = rng.choice(templates).format(other=other, maker=maker, name=ident.name)
            good = rng.choice(row["answers"])
            out.append(
                make_pair(
                    self.prompt(row["question"], rng),
                    _reply(good),
                    _reply(bad),
                    "world/identity",
                    topic=row["topic"],
                )
            )
        return out

    def known(self, split: str) -> list[dict[str, Any]]:
        rows = self.splits.rows
        return rows["known_train"] + rows["idk_probe"] if split == "train" else rows["known_eval"]

    def wrong_answer(self, split: str) -> list[PreferencePair]:
        rng, out = self.rng("wrong_answer", split), []
        for row in self.known(split):
            wrong = self.pools[split].wrong(row, rng)
            if wrong is None:
                self.dropped["wrong_answer: no other value for the relation"] += 1
                continue
            style = self.style(rng)  # both replies in the same style
            good = self.answer(row, row["short_answer"], style, rng, split)
            bad = self.answer(row, wrong, style, rng, split)
            out.append(
                make_pair(
                    self.prompt(rng.choice(row["questions"]), rng),
                    _reply(good),
                    _reply(bad),
                    "world/wrong_answer",
                    fact_id=row["fact_id"],
                    wrong=wrong,
                )
            )
        return out

    def answer_over_refusal(self, split: str) -> list[PreferencePair]:
        rng, out = self.rng("answer_over_refusal", split), []
        for row in self.known(split):
            good = self.answer(row, row["short_answer"], self.style(rng), rng, split)
            out.append(
                make_pair(
                    self.prompt(rng.choice(row["questions"]), rng),
                    _reply(good),
                    _reply(refusal(row, rng)),
                    "world/answer_over_refusal",
                    fact_id=row["fact_id"],
                )
            )
        return out

    def refusal_over_made_up(self, split: str) -> list[PreferencePair]:
        rng, out = self.rng("refusal_over_made_up", split), []
        rows = self.splits.rows
        if split == "train":
            drawer = FreshNames(self.seed + 7919, taken=self.world.names)
            fresh = fresh_entities(self.cfg.fresh_names, self.seed, drawer=drawer)
            unknown = rows["unknown_train"] + fresh_questions(fresh, self.seed)
        else:
            unknown = rows["unknown_eval"]
        for row in unknown:
            made = self.pools[split].made_up(row, rng)
            if made is None:
                self.dropped["refusal_over_made_up: no value for the relation"] += 1
                continue
            out.append(
                make_pair(
                    self.prompt(rng.choice(row["questions"]), rng),
                    _reply(refusal(row, rng)),
                    _reply(self.answer(row, made, self.style(rng), rng, split)),
                    "world/refusal_over_made_up",
                    reason=row.get("reason", ""),
                )
            )
        return out

    def problems(self, split: str) -> list[dict[str, Any]]:
        return self.splits.arithmetic_pool if split == "train" else self.splits.rows["arithmetic_test"]

    def arithmetic(self, kind: str, split: str) -> list[PreferencePair]:
        rng, out = self.rng(kind, split), []
        layouts, limit = self.cfg.arithmetic_layouts, self.data.arithmetic.mental_limit
        for i, problem in enumerate(self.problems(split)):
            wrong = wrong_final(problem, rng) if kind == "arithmetic_final" else wrong_last_step(problem, rng)
            if wrong is None:
                self.dropped[f"{kind}: no last step to miscopy"] += 1
                continue
            layout = layouts[i % len(layouts)]
            good = arithmetic_conversation(problem, layout, "gsm8k", limit)
            bad = arithmetic_conversation(wrong, layout, "gsm8k", limit)
            prompt = self.prompt(problem["question"], rng, tools=layout == "reasoning_calc")
            out.append(
                make_pair(
                    prompt,
                    good["messages"][-1:],
                    bad["messages"][-1:],
                    f"world/{kind}",
                    layout=layout,
                    answer=good["meta"]["answer"],
                    wrong=bad["meta"]["answer"],
                )
            )
        return out

    def kind(self, kind: str, split: str) -> list[PreferencePair]:
        if kind.startswith("arithmetic"):
            return self.arithmetic(kind, split)
        return getattr(self, kind)(split)


def wrong_final(problem: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    """The problem with its worked answer ending on another number (the working unchanged)."""
    m = _FINAL.search(problem["answer"].rstrip())
    n = _number(m.group(1)) if m else None
    if n is None:
        return None
    wrong = n + rng.choice([-1, 1]) * max(1, rng.randint(1, max(2, abs(n) // 5)))
    if wrong < 0:
        wrong = n + rng.randint(1, max(2, abs(n) // 5))
    text = problem["answer"].rstrip()
    return {**problem, "answer": text[: m.start(1)] + str(wrong) + text[m.end(1) :]}


def wrong_last_step(problem: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    """The problem with its last step's written result miscopied and the final answer following it
    (the annotation keeps the true value, so with the calculator the tool's answer stays right)."""
    text = problem["answer"].rstrip()
    steps = list(_LAST_STEP.finditer(text))
    final = _FINAL.search(text)
    if not steps or final is None or _number(steps[-1].group(3)) != _number(final.group(1)):
        return None
    last = steps[-1]
    n = _number(last.group(3))
    assert n is not None
    wrong = str(n + rng.choice([-1, 1]) * max(1, rng.randint(1, max(2, abs(n) // 10))))
    if wrong.startswith("-"):
        wrong = str(n + rng.randint(1, max(2, abs(n) // 10)))
    text = text[: last.start(3)] + wrong + text[last.end(3) : final.start(1)] + wrong + text[final.end(1) :]
    return {**problem, "answer": text}


def build_world_pairs(
    world: WorldFiles,
    data: SFTDataConfig,
    cfg: WorldPairsConfig,
    seed: int,
    fits: Callable[[PreferencePair], bool] | None = None,
) -> WorldPairs:
    """Every kind's training and held-out pairs (module docstring); ``per_kind`` / ``heldout_per_kind``
    cap each kind with a seeded sample of the pairs that ``fits`` (the reward model's context: a long
    worked solution does not fit a small model's). Deterministic in the inputs."""
    b = _Builder(world, data, cfg, seed)
    train: list[PreferencePair] = []
    heldout: list[PreferencePair] = []
    for kind in cfg.kinds:
        for split, cap, into in (("train", cfg.per_kind, train), ("heldout", cfg.heldout_per_kind, heldout)):
            pairs = b.kind(kind, split)
            if fits is not None:
                kept = [p for p in pairs if fits(p)]
                b.dropped[f"{kind}: longer than the reward model's context ({split})"] += len(pairs) - len(
                    kept
                )
                pairs = kept
            if split == "train":
                kept = [p for p in pairs if not b.splits.heldout.mentions(p.text())]
                b.dropped[f"{kind}: names a held-out entity"] += len(pairs) - len(kept)
                pairs = kept
            if cap is not None and len(pairs) > cap:
                pairs = b.rng("sample", kind, split).sample(pairs, cap)
            for i, p in enumerate(pairs):
                p.where = f"world {split} {kind} #{i}"
            into += pairs
    for p in train:  # the audit: no held-out name anywhere in what training shows
        leaked = b.splits.heldout.mentions(p.text())
        if leaked:
            raise AssertionError(f"training pair {p.where} names held-out {leaked}")
    return WorldPairs(train, heldout, Counter({k: v for k, v in b.dropped.items() if v}))
