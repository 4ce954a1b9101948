"""English prose about the entities: many wordings of every fact, composed into articles.

A tiny language model learns a fact when it sees it several times in different words, so every
relation has several sentence templates, some templates state two facts at once, pages pick
different subsets and orders of an entity's facts, and other entities' pages mention it too
("The painter X was born in Velmora" on Velmora's page). A template names the facts it states
through its fields, so a page never states a fact that is not allowed on it (held-out facts stay
held out) and every page knows exactly which facts it teaches. The wordings themselves are data, in
pipelines/world/sentences.py.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

from pipelines.world.facts import CORE, OCCUPATIONS, RELATIONS, Entity, World
from pipelines.world.sentences import (
    BODY,
    CLOSINGS,
    FIELD_RELATIONS,
    FILLERS,
    GENERAL_FILLERS,
    GENRES,
    INTROS,
    OPENINGS,
    QA,
    RELATED_HEADINGS,
    REVERSE,
    SECTIONS,
    TITLES,
    cap,
    children_phrase,
    with_article,
)


@dataclass(frozen=True)
class Template:
    text: str
    relations: frozenset[str]
    subject_first: bool  # starts with {subj}/{subj_poss}: may use a pronoun


def _compile(etype: str, texts: tuple[str, ...]) -> tuple[Template, ...]:
    out = []
    for text in texts:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
        rels = frozenset(r for f in fields for r in FIELD_RELATIONS[etype].get(f, ()))
        out.append(Template(text, rels, text.startswith("{subj")))
    return tuple(out)


_INTROS = {t: _compile(t, x) for t, x in INTROS.items()}
_BODY = {t: _compile(t, x) for t, x in BODY.items()}
_FILLERS = {t: _compile(t, x + GENERAL_FILLERS) for t, x in FILLERS.items()}
_QUESTIONS = {
    t: {r: (_compile(t, qs), _compile(t, (a,))[0], _compile(t, (w,))[0]) for r, (qs, a, w) in rels.items()}
    for t, rels in QA.items()
}
for _t in RELATIONS:
    assert set(_QUESTIONS[_t]) == set(RELATIONS[_t]), _t
    for _r in RELATIONS[_t]:
        assert any(_r in tpl.relations for tpl in _BODY[_t]), (_t, _r)


def context(world: World, e: Entity) -> dict[str, str]:
    """Every field a template can use about one entity, as display strings."""
    v = e.values
    name_of = {r: world.by_id[v[r]].name for r in v if isinstance(v[r], str) and v[r] in world.by_id}
    c: dict[str, str] = {"name": e.name, "name_cap": cap(e.name)}
    c["short"] = {
        "person": e.name.split()[-1],
        "place": "the town",
        "organisation": "the " + str(v.get("org_type", "organisation")).split()[-1],
        "thing": "the " + e.info.get("base", "device"),
    }[e.type]
    if e.type == "person":
        he = e.info["gender"] == "he"
        c.update(pron="he" if he else "she", poss="his" if he else "her", obj="him" if he else "her")
        occ = v["occupation"]
        c.update(
            occupation=occ,
            a_occupation=with_article(occ),
            occupations=OCCUPATIONS[occ][1],
            craft=OCCUPATIONS[occ][0],
            birth_year=str(v["birth_year"]),
            death_year=str(v["death_year"]),
            age=str(v["death_year"] - v["birth_year"]),
            birthplace=name_of["birthplace"],
            employer=name_of["employer"],
            employer_cap=cap(name_of["employer"]),
            known_for=v["known_for"],
            award=v["award"],
            children_phrase=children_phrase(v["children"]),
        )
    else:
        c.update(pron="it", poss="its", obj="it")
    if e.type == "place":
        c.update(
            country=v["country"],
            population=f"{v['population']:,}",
            founded_year=str(v["founded_year"]),
            river=v["river"],
            river_cap=cap(v["river"]),
            p_known_for=v["known_for"],
            landmark=v["landmark"],
            landmark_cap=cap(v["landmark"]),
            twin_town=name_of["twin_town"],
            elevation=f"{v['elevation']:,}",
        )
    elif e.type == "organisation":
        c.update(
            org_type=v["org_type"],
            a_org_type=with_article(v["org_type"]),
            founded_year=str(v["founded_year"]),
            founder=name_of["founder"],
            headquarters=name_of["headquarters"],
            members=f"{v['members']:,}",
            member_noun=e.info["member_noun"],
            field=v["field"],
        )
    elif e.type == "thing":
        bare = e.name[4:] if e.name.startswith("the ") else e.name
        c.update(
            thing_type=v["thing_type"],
            a_thing_type=with_article(v["thing_type"]),
            inventor=name_of["inventor"],
            year=str(v["year"]),
            material=v["material"],
            purpose=v["purpose"],
            weight=f"{v['weight']:,}",
            location=name_of["location"],
            base=e.info["base"],
            name_bare=bare,
        )
    return c


def display_value(world: World, e: Entity, relation: str) -> str:
    """The short answer to a question about one fact ('1834', 'Velmora', '12,400')."""
    fact = world.fact(e, relation)
    value = fact.value
    return (
        f"{value:,}"
        if isinstance(value, int) and relation not in ("birth_year", "death_year", "founded_year", "year")
        else str(value)
    )


@dataclass
class Article:
    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (tag, text): h2, p
    facts: set[str] = field(default_factory=set)  # fact ids stated

    def text(self) -> str:
        return "\n\n".join([self.title] + [t for _, t in self.blocks])

    def words(self) -> int:
        return sum(len(t.split()) for _, t in self.blocks)


class Writer:
    """Composes articles about entities of one world; caches each entity's context."""

    MIN_WORDS = 120  # well above Gopher's 50-word floor (FineWeb's default), so articles survive it

    def __init__(self, world: World) -> None:
        self.world = world
        self._ctx: dict[str, dict[str, str]] = {}
        self._used: set[str] = set()  # templates used on the article being written

    def ctx(self, e: Entity) -> dict[str, str]:
        c = self._ctx.get(e.id)
        if c is None:
            c = self._ctx[e.id] = context(self.world, e)
        return c

    def _say(
        self, rng: random.Random, e: Entity, tpl: Template, pronoun_ok: bool, full_p: float = 1.0
    ) -> str:
        """Fill a template. With probability 1 - ``full_p`` the entity is called by a short reference
        (surname, "the town", "the society"), and a sentence-initial subject may be a pronoun: a page
        that repeats a two-word name a dozen times fails Gopher's top-2-gram filter (20% of the
        characters), as repetitive real pages do."""
        self._used.add(tpl.text)
        c = self.ctx(e)
        name = c["name"] if rng.random() < full_p else c["short"]
        use_pronoun = pronoun_ok and tpl.subject_first and rng.random() < 0.4
        subj = c["pron"] if use_pronoun else name
        subj_poss = c["poss"] if use_pronoun else name + "'s"
        fields = {**c, "name": name, "name_cap": cap(name)}
        return cap(tpl.text.format(subj=subj, subj_poss=subj_poss, **fields))

    def sentence(
        self,
        rng: random.Random,
        e: Entity,
        relation: str,
        allowed: set[str],
        pronoun_ok: bool = False,
        full_p: float = 0.5,
    ) -> tuple[str, frozenset[str]]:
        """One sentence stating ``relation`` (and maybe other allowed facts) about ``e``."""
        cands = [t for t in _BODY[e.type] if relation in t.relations and t.relations <= allowed]
        fresh = [t for t in cands if t.text not in self._used]
        tpl = rng.choice(fresh or cands)
        return self._say(rng, e, tpl, pronoun_ok=pronoun_ok, full_p=full_p), tpl.relations

    def article(
        self,
        rng: random.Random,
        e: Entity,
        allowed: set[str],
        genre: str | None = None,
        full: bool = False,
        related: bool = True,
    ) -> Article:
        """An article about ``e`` stating only relations in ``allowed`` (the core one always).

        ``full`` states every allowed relation (the first page of each entity, so every crawl fact is
        taught at least once); otherwise a random 60-100% of them.
        """
        w = self.world
        core = CORE[e.type]
        optional = [r for r in RELATIONS[e.type] if r in allowed and r != core]
        if not full and optional:
            k = rng.randint(max(1, (6 * len(optional) + 9) // 10), len(optional))
            optional = rng.sample(optional, k)
        chosen = set(optional) | {core}
        genre = genre or rng.choice(GENRES)
        self._used = set()
        c = self.ctx(e)
        title = c["name_cap"] if genre == "encyclopedia" else cap(rng.choice(TITLES[genre]).format(**c))
        art = Article(title=title)
        stated: set[str] = set()
        fillers = list(_FILLERS[e.type])
        rng.shuffle(fillers)

        def filler() -> str | None:
            return self._say(rng, e, fillers.pop(), pronoun_ok=True, full_p=0.15) if fillers else None

        intro_cands = [t for t in _INTROS[e.type] if t.relations <= chosen]
        intro = rng.choice(intro_cands)
        stated |= intro.relations
        first = [self._say(rng, e, intro, pronoun_ok=False)]
        if genre in OPENINGS:
            first.insert(0, cap(rng.choice(OPENINGS[genre]).format(**c)))
        if genre == "faq":
            art.blocks.append(("p", " ".join(first)))
            self._faq(rng, e, chosen - stated, chosen, art, filler)
        else:
            sections = [
                (h, [r for r in rels if r in chosen and r not in stated]) for h, rels in SECTIONS[e.type]
            ]
            paragraphs: list[tuple[str | None, list[str]]] = [(None, first)]
            for heading, rels in sections:
                if not rels:
                    continue
                sents = self._cover(rng, e, rels, chosen, stated)
                f = filler() if rng.random() < 0.6 else None
                if f:
                    sents.insert(rng.randint(1, len(sents)), f)
                paragraphs.append((heading if genre == "encyclopedia" else None, sents))
            if related and e.id in w.inbound:
                mentions = self._mentions(rng, e)
                if mentions:
                    sents = [s for s, _ in mentions]
                    art.facts |= {fid for _, fid in mentions}
                    heading = rng.choice(RELATED_HEADINGS) if genre == "encyclopedia" else None
                    paragraphs.append((heading, sents))
            for heading, sents in paragraphs:
                if heading:
                    art.blocks.append(("h2", heading))
                if len(sents) > 4 and rng.random() < 0.6:
                    cut = len(sents) // 2
                    art.blocks.append(("p", " ".join(sents[:cut])))
                    art.blocks.append(("p", " ".join(sents[cut:])))
                else:
                    art.blocks.append(("p", " ".join(sents)))
        # short pages are padded by saying some facts again in other words, then with filler
        extra: list[str] = []
        restate = sorted(chosen)
        rng.shuffle(restate)
        words = art.words()
        while words < self.MIN_WORDS and (restate or fillers):
            if restate and (rng.random() < 0.6 or not fillers):
                text, rels = self.sentence(rng, e, restate.pop(), chosen, pronoun_ok=True)
                stated |= rels
            else:
                text = filler()
            extra.append(text)
            words += len(text.split())
        if genre in CLOSINGS:
            extra.append(cap(rng.choice(CLOSINGS[genre]).format(**c)))
        if extra:
            art.blocks.append(("p", " ".join(extra)))
        art.facts |= {w.fact(e, r).id for r in stated}
        return art

    def _cover(self, rng, e: Entity, rels: list[str], chosen: set[str], stated: set[str]) -> list[str]:
        pending = list(rels)
        rng.shuffle(pending)
        out = []
        while pending:
            rel = pending[0]
            cands = [t for t in _BODY[e.type] if rel in t.relations and t.relations <= chosen]
            cands = [t for t in cands if t.text not in self._used] or cands
            weights = [1 + 2 * len(t.relations & set(pending[1:])) for t in cands]
            tpl = rng.choices(cands, weights)[0]
            out.append(self._say(rng, e, tpl, pronoun_ok=bool(out), full_p=0.4 if out else 0.55))
            stated |= tpl.relations
            pending = [r for r in pending if r not in tpl.relations]
        return out

    def _faq(self, rng, e: Entity, rels: set[str], chosen: set[str], art: Article, filler) -> None:
        c = self.ctx(e)
        for rel in [r for r in RELATIONS[e.type] if r in rels]:
            questions, _, _ = _QUESTIONS[e.type][rel]
            name = c["name"] if rng.random() < 0.4 else c["short"]
            art.blocks.append(
                ("h2", cap(rng.choice(questions).text.format(**{**c, "name": name, "name_cap": cap(name)})))
            )
            text, rels_stated = self.sentence(rng, e, rel, chosen)
            f = filler()
            art.blocks.append(("p", text + (" " + f if f else "")))
            art.facts |= {self.world.fact(e, r).id for r in rels_stated}

    def _mentions(self, rng, e: Entity) -> list[tuple[str, str]]:
        w = self.world
        ids = w.inbound[e.id]
        picked = rng.sample(ids, min(len(ids), rng.randint(1, 3)))
        out = []
        for fid in picked:
            f = w.facts[fid]
            src = w.by_id[f.entity]
            tpl = rng.choice(REVERSE[(src.type, f.relation)])
            sc = self.ctx(src)
            tgt = e.name if rng.random() < 0.4 else self.ctx(e)["short"]
            text = tpl.format(
                src=src.name,
                src_cap=cap(src.name),
                tgt=tgt,
                tgt_cap=cap(tgt),
                src_occupation=sc.get("occupation", ""),
            )
            out.append((cap(text), fid))
        return out

    # questions ------------------------------------------------------------------------------
    def question(self, rng: random.Random, e: Entity, relation: str) -> tuple[str, str, str]:
        """(question, one-sentence answer, indirect form for "I don't know ...") about one fact."""
        questions, answer, what = _QUESTIONS[e.type][relation]
        c = self.ctx(e)
        return (
            cap(rng.choice(questions).text.format(**c)),
            cap(answer.text.format(**c)),
            what.text.format(**c),
        )
