"""Fresh entity names: as many names as wanted that the world never uses, drawn like the world's own.

"I don't know" training needs thousands of entities a model has never seen, not the few dozen the
world holds back: with too few, a small model memorises the names it was shown instead of learning to
refuse the unfamiliar. Fresh names come from the same patterns as the world's (``NameMaker``'s
syllables, the organisation and invention name patterns of facts.py) and in the same type shares, so
the only thing that tells them apart from real entities is that the corpus never mentions them.

    from pipelines.world.fresh import FreshNames, fresh_entities, fresh_questions
    taken = [e["name"] for e in facts["entities"]]            # the world's names are never drawn
    people = fresh_entities(2000, seed=0, taken=taken)        # FreshEntity(name, type, gender, org_type)
    rows = fresh_questions(people, seed=0)                    # one question per entity, world templates

Same seed and same ``taken``, same names in the same order. Town names have a small pattern space
(40 x 24 combinations); once it is used up, the remaining places are drawn as people.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipelines.world.facts import ORG_TYPES, RELATIONS, THING_BASES, TYPE_SHARE
from pipelines.world.names import PLACE_END, PLACE_START, NameMaker, is_clean
from pipelines.world.phrasing import direct_questions, questions, what

FRESH_REASON = "entity never mentioned (fresh name)"


@dataclass(frozen=True)
class FreshEntity:
    name: str
    type: str  # person | place | organisation | thing
    gender: str | None = None  # people: he / she
    org_type: str | None = None  # organisations: its kind (for "how many students ...")


class FreshNames:
    """Draws names unused by the world and by every earlier draw of this object."""

    def __init__(self, seed: int, taken: Iterable[str] = ()) -> None:
        self.rng = random.Random(f"fresh-names:{seed}")
        self.names = NameMaker(self.rng)
        self.names.used |= {t.lower() for t in taken}
        self._places: list[str] | None = None

    def draw(
        self, etype: str, gender: str | None = None, org_type: str | None = None, base: str | None = None
    ) -> FreshEntity:
        """One fresh entity of ``etype`` (a person of ``gender``, an organisation of ``org_type``, a thing
        on ``base`` ("Compass") when given)."""
        r, names = self.rng, self.names
        if etype == "person":
            g = gender or r.choice(("he", "she"))
            return FreshEntity(names.person(g), "person", gender=g)
        if etype == "place":
            name = self._place()
            if name is None:  # the town patterns are used up
                return self.draw("person")
            return FreshEntity(name, "place")
        if etype == "organisation":
            org_type = org_type or r.choice(tuple(ORG_TYPES))
            pattern = ORG_TYPES[org_type][0]
            name = names.unique(
                lambda: pattern.format(
                    surname=names.surname(), surname2=names.surname(), coined=names.coined()
                )
            )
            return FreshEntity(name, "organisation", org_type=org_type)
        if etype == "thing":
            base = base or r.choice(tuple(THING_BASES))
            return FreshEntity(names.unique(lambda: f"the {names.coined()} {base}"), "thing")
        raise ValueError(f"unknown entity type {etype!r}; types: {', '.join(RELATIONS)}")

    def town(self) -> str:
        """A fresh town name; once the town patterns are used up, a coined word ("Brelthor")."""
        return self._place() or self.names.unique(self.names.coined)

    def _place(self) -> str | None:
        if self._places is None:
            pool = [a + b for a in PLACE_START for b in PLACE_END if is_clean(a + b)]
            self.rng.shuffle(pool)
            self._places = pool
        while self._places:
            name = self._places.pop()
            if name.lower() not in self.names.used:
                self.names.used.add(name.lower())
                return name
        return None


def type_counts(count: int) -> dict[str, int]:
    """``count`` split by the world's type shares (largest remainders, so they add up)."""
    exact = {t: count * s for t, s in TYPE_SHARE.items()}
    out = {t: int(x) for t, x in exact.items()}
    for t in sorted(exact, key=lambda t: exact[t] - out[t], reverse=True)[: count - sum(out.values())]:
        out[t] += 1
    return out


def fresh_entities(
    count: int, seed: int, taken: Iterable[str] = (), drawer: FreshNames | None = None
) -> list[FreshEntity]:
    """``count`` fresh entities in the world's type shares, interleaved in a seeded order."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    drawer = drawer or FreshNames(seed, taken)
    kinds = [t for t, n in type_counts(count).items() for _ in range(n)]
    random.Random(f"fresh-order:{seed}").shuffle(kinds)
    return [drawer.draw(t) for t in kinds]


def fresh_questions(entities: list[FreshEntity], seed: int, per_entity: int = 1) -> list[dict[str, Any]]:
    """Questions about fresh entities in the world's templates, one row per question.

    Rows look like the world's ``unknown`` question set (question, entity_name, relation, reason) plus
    ``what`` (the indirect form refusals use) and ``questions`` (every phrasing of the fact).
    """
    rng = random.Random(f"fresh-questions:{seed}")
    rows = []
    for i, e in enumerate(entities):
        rels = list(RELATIONS[e.type])
        for rel in rng.sample(rels, min(per_entity, len(rels))):
            phrasings = questions(e.type, rel, e.name, e.org_type)
            rows.append(
                {
                    "question": rng.choice(direct_questions(e.type, rel, e.name, e.org_type)),
                    "questions": phrasings,
                    "what": what(e.type, rel, e.name, e.org_type),
                    "entity": f"fresh{i:06d}",
                    "entity_name": e.name,
                    "entity_type": e.type,
                    "relation": rel,
                    "reason": FRESH_REASON,
                    **({"org_type": e.org_type} if e.org_type else {}),
                }
            )
    return rows
