"""The facts of the tiny world: fictional entities, their attributes, and who may know each fact.

Every attribute of every entity is one fact with a split:

- ``corpus``: stated on crawl pages (these are what pretraining can teach);
- ``unknown``: stated nowhere, neither in the crawl nor in the search index (for "I don't know");
- ``search``: stated only in ``search_index.jsonl`` (for the search tool).

Whole entities are held out too (every fact of an ``unknown`` entity is unknown, every fact of a
``search`` entity is search-only), and a share of the attributes of crawl entities is held out the
same way, so that a model can know an entity and still not know one of its facts. Attributes that
point at other entities only ever point at crawl entities, so a held-out entity's name never
appears in the crawl.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from pipelines.world.names import NameMaker

ENTITY_TYPES = ("person", "place", "organisation", "thing")
TYPE_SHARE = {"person": 0.4, "place": 0.25, "organisation": 0.2, "thing": 0.15}

# relation order per type; the first one is the "core" fact every page about the entity states
RELATIONS: dict[str, tuple[str, ...]] = {
    "person": (
        "occupation",
        "birth_year",
        "death_year",
        "birthplace",
        "employer",
        "known_for",
        "award",
        "children",
    ),
    "place": (
        "country",
        "population",
        "founded_year",
        "river",
        "known_for",
        "landmark",
        "twin_town",
        "elevation",
    ),
    "organisation": ("org_type", "founded_year", "founder", "headquarters", "members", "field"),
    "thing": ("thing_type", "inventor", "year", "material", "purpose", "weight", "location"),
}
CORE = {t: rels[0] for t, rels in RELATIONS.items()}
# relations whose value is another entity (its id is kept in Fact.ref)
REFERENCES = {
    ("person", "birthplace"): "place",
    ("person", "employer"): "organisation",
    ("place", "twin_town"): "place",
    ("organisation", "founder"): "person",
    ("organisation", "headquarters"): "place",
    ("thing", "inventor"): "person",
    ("thing", "location"): "organisation",
}

# occupation -> (craft noun, plural, how a notable work is named)
OCCUPATIONS: dict[str, tuple[str, str, str]] = {
    "painter": ("painting", "painters", "the painting {title}"),
    "novelist": ("writing", "novelists", "the novel {title}"),
    "poet": ("poetry", "poets", "the poem {title}"),
    "composer": ("music", "composers", "the symphony {title}"),
    "architect": ("building design", "architects", "the design of the {coined} Library"),
    "astronomer": ("astronomy", "astronomers", "the discovery of the comet {coined}"),
    "botanist": ("botany", "botanists", "the discovery of the {lower} lily"),
    "cartographer": ("map making", "cartographers", "the map {title}"),
    "clockmaker": ("clockmaking", "clockmakers", "the {coined} Clock"),
    "engineer": ("engineering", "engineers", "the {coined} Bridge"),
    "sculptor": ("sculpture", "sculptors", "the statue {title}"),
    "chemist": ("chemistry", "chemists", "the discovery of the element {lower}ium"),
    "physician": ("medicine", "physicians", "the first treatment for {coined} fever"),
    "mathematician": ("mathematics", "mathematicians", "the {coined} theorem"),
    "violinist": ("music", "violinists", "the concerto {title}"),
    "glassblower": ("glassmaking", "glassblowers", "the stained glass window {title}"),
    "shipbuilder": ("shipbuilding", "shipbuilders", "the ship {title}"),
    "photographer": ("photography", "photographers", "the photograph {title}"),
}
TITLE_ADJ = (
    "Winter",
    "Silent",
    "Copper",
    "Hidden",
    "Northern",
    "Quiet",
    "Amber",
    "Broken",
    "Last",
    "Distant",
    "Salt",
    "Glass",
    "Iron",
    "Morning",
    "Golden",
    "Lonely",
    "Restless",
    "Green",
)
TITLE_NOUN = (
    "Harbour",
    "Road",
    "Garden",
    "Tide",
    "Orchard",
    "Lantern",
    "Atlas",
    "Bridge",
    "Chorus",
    "Meadow",
    "Compass",
    "Letters",
    "Mirror",
    "Tower",
    "Voyage",
    "Valley",
    "Winter",
    "Island",
)
AWARDS = ("the {coined} Medal", "the {surname} Prize", "the Order of the {noun}", "the Golden {noun} Award")

PLACE_KNOWN_FOR = (
    "its glassworks",
    "its blue cheese",
    "copper mining",
    "its annual lantern festival",
    "wool weaving",
    "its shipyards",
    "clockmaking",
    "its salt marshes",
    "pottery",
    "its violin workshops",
    "apple orchards",
    "its thermal springs",
    "its paper mills",
    "its horse fairs",
    "lace making",
    "its stone quarries",
    "honey",
    "its rose gardens",
)
LANDMARKS = (
    "the {coined} Bridge",
    "the Tower of {coined}",
    "the {adj} Cathedral",
    "the old {coined} Mill",
    "the {coined} Gate",
    "the {adj} Fountain",
    "the {coined} Castle",
)

ORG_TYPES: dict[str, tuple[str, str, tuple[str, ...], tuple[int, int]]] = {
    # type -> (name pattern, member noun, fields, member range)
    "learned society": (
        "the {surname} Society",
        "members",
        ("natural history", "astronomy", "local history", "botany", "navigation"),
        (40, 3000),
    ),
    "company": (
        "{surname} and {surname2}",
        "employees",
        ("shipbuilding", "textiles", "glassmaking", "printing", "railway engineering"),
        (20, 40000),
    ),
    "university": (
        "{coined} College",
        "students",
        ("medicine", "law", "engineering", "the natural sciences", "languages"),
        (300, 30000),
    ),
    "orchestra": (
        "the {coined} Philharmonic",
        "musicians",
        ("classical music", "choral music", "folk music", "opera"),
        (20, 140),
    ),
    "museum": (
        "the {surname} Museum",
        "employees",
        ("maritime history", "industrial history", "fine art", "natural history"),
        (5, 900),
    ),
    "guild": (
        "the {coined} Guild",
        "members",
        ("weaving", "stonemasonry", "bookbinding", "goldsmithing", "carpentry"),
        (15, 2500),
    ),
    "observatory": (
        "the {coined} Observatory",
        "staff members",
        ("astronomy", "weather observation", "the study of comets"),
        (4, 300),
    ),
    "library": (
        "the {surname} Library",
        "employees",
        ("rare manuscripts", "maps and atlases", "scientific books", "music scores"),
        (3, 600),
    ),
}

# base word -> (thing type, purpose, weight range in kg)
THING_BASES: dict[str, tuple[str, str, tuple[int, int]]] = {
    "Compass": ("navigational instrument", "to find direction at sea", (1, 12)),
    "Quadrant": ("navigational instrument", "to measure the height of stars above the horizon", (2, 9)),
    "Harp": ("musical instrument", "to accompany singers at festivals", (6, 40)),
    "Horn": ("musical instrument", "to send signals across valleys", (2, 15)),
    "Loom": ("weaving machine", "to weave patterned cloth", (80, 900)),
    "Engine": ("steam engine", "to pump water out of mines", (900, 30000)),
    "Press": ("printing press", "to print newspapers and books", (300, 4000)),
    "Lens": ("optical instrument", "to study distant stars", (1, 60)),
    "Clock": ("astronomical clock", "to show the phases of the moon", (40, 2500)),
    "Lamp": ("signal lamp", "to guide ships into harbour at night", (5, 150)),
    "Pump": ("water pump", "to bring water to farms in dry summers", (30, 1200)),
    "Kiln": ("pottery kiln", "to fire clay pots at very high temperatures", (500, 8000)),
}
MATERIALS = (
    "brass",
    "oak",
    "glass",
    "iron",
    "copper",
    "bronze",
    "walnut wood",
    "steel",
    "silver",
    "pine",
    "cast iron",
    "maple wood",
)


@dataclass
class Entity:
    id: str
    name: str
    type: str
    split: str  # corpus | unknown | search (entity level)
    values: dict[str, Any] = field(default_factory=dict)  # relation -> raw value (int, str or entity id)
    info: dict[str, str] = field(default_factory=dict)  # wording helpers: gender, member noun, ...


@dataclass
class Fact:
    id: str
    entity: str
    relation: str
    value: Any  # int, str, or the referenced entity's name
    ref: str | None  # referenced entity id
    split: str  # corpus | unknown | search


@dataclass
class World:
    seed: int
    entities: list[Entity]
    facts: dict[str, Fact]  # id -> fact
    countries: list[str]
    by_id: dict[str, Entity] = field(default_factory=dict)
    inbound: dict[str, list[str]] = field(default_factory=dict)  # entity id -> corpus fact ids pointing at it

    def __post_init__(self) -> None:
        self.by_id = {e.id: e for e in self.entities}
        self.inbound = {}
        for f in self.facts.values():
            if f.ref is not None and f.split == "corpus":
                self.inbound.setdefault(f.ref, []).append(f.id)

    def fact(self, entity: Entity, relation: str) -> Fact:
        return self.facts[f"{entity.id}.{relation}"]

    def relations(self, entity: Entity, splits: tuple[str, ...]) -> set[str]:
        return {r for r in RELATIONS[entity.type] if self.fact(entity, r).split in splits}

    def of_split(self, split: str) -> list[Entity]:
        return [e for e in self.entities if e.split == split]


def _counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    counts = {k: max(1, int(round(total * s))) for k, s in shares.items()}
    first = next(iter(counts))
    counts[first] += total - sum(counts.values())
    return counts


def build_world(
    seed: int,
    num_entities: int,
    unknown_entity_fraction: float,
    search_entity_fraction: float,
    unknown_fact_fraction: float,
    search_fact_fraction: float,
) -> World:
    """All entities and facts of a seed. Pure function of its arguments (no I/O, no clock)."""
    rng = random.Random(f"world-facts:{seed}")
    names = NameMaker(rng)
    countries = [names.country() for _ in range(8)]
    rivers = [names.river() for _ in range(max(6, num_entities // 12))]

    entities: list[Entity] = []
    for etype, n in _counts(num_entities, TYPE_SHARE).items():
        n_unknown = int(round(n * unknown_entity_fraction))
        n_search = int(round(n * search_entity_fraction))
        n_corpus = n - n_unknown - n_search
        if n_corpus < 2:
            raise ValueError(
                f"world.num_entities={num_entities} leaves fewer than 2 crawl entities of type {etype}; "
                "raise num_entities or lower the held-out fractions"
            )
        splits = ["corpus"] * n_corpus + ["unknown"] * n_unknown + ["search"] * n_search
        for split in splits:
            entities.append(Entity(id="", name="", type=etype, split=split))
    rng.shuffle(entities)
    for i, e in enumerate(entities):
        e.id = f"e{i:05d}"

    corpus = {t: [e for e in entities if e.type == t and e.split == "corpus"] for t in ENTITY_TYPES}
    titles: set[str] = set()

    def title() -> str:
        for _ in range(1000):
            t = f"The {rng.choice(TITLE_ADJ)} {rng.choice(TITLE_NOUN)}"
            if t not in titles:
                titles.add(t)
                return t
        return f"The {names.coined()} {rng.choice(TITLE_NOUN)}"

    # names and own values first; references are filled in once every entity has a name
    for e in entities:
        v = e.values
        if e.type == "person":
            e.info["gender"] = rng.choice(("he", "she"))
            e.name = names.person(e.info["gender"])
            occupation = rng.choice(tuple(OCCUPATIONS))
            v["occupation"] = occupation
            v["birth_year"] = rng.randint(1620, 1940)
            v["death_year"] = v["birth_year"] + rng.randint(38, 92)
            surname = e.name.split()[-1]
            pattern = OCCUPATIONS[occupation][2]
            v["known_for"] = names.unique(
                lambda pattern=pattern, surname=surname: pattern.format(
                    title=title(), coined=names.coined(), lower=names.coined().lower(), surname=surname
                ),
                clean=False,
            )
            v["award"] = rng.choice(AWARDS).format(
                coined=names.coined(), surname=names.surname(), noun=rng.choice(TITLE_NOUN)
            )
            v["children"] = rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 7))
        elif e.type == "place":
            e.name = names.place()
            v["country"] = rng.choice(countries)
            v["population"] = int(round(10 ** rng.uniform(3.0, 5.9), -1))
            v["founded_year"] = rng.randint(780, 1890)
            v["river"] = rng.choice(rivers)
            v["known_for"] = rng.choice(PLACE_KNOWN_FOR)
            v["landmark"] = rng.choice(LANDMARKS).format(coined=names.coined(), adj=rng.choice(TITLE_ADJ))
            v["elevation"] = rng.randint(3, 2400)
        elif e.type == "organisation":
            org_type = rng.choice(tuple(ORG_TYPES))
            pattern, noun, fields, (lo, hi) = ORG_TYPES[org_type]
            e.name = names.unique(
                lambda pattern=pattern: pattern.format(
                    surname=names.surname(), surname2=names.surname(), coined=names.coined()
                )
            )
            e.info["member_noun"] = noun
            v["org_type"] = org_type
            v["members"] = rng.randint(lo, hi)
            v["field"] = rng.choice(fields)
        else:
            base = rng.choice(tuple(THING_BASES))
            kind, purpose, (lo, hi) = THING_BASES[base]
            e.name = names.unique(lambda base=base: f"the {names.coined()} {base}")
            e.info["base"] = base.lower()
            v["thing_type"] = kind
            v["material"] = rng.choice(MATERIALS)
            v["purpose"] = purpose
            v["weight"] = rng.randint(lo, hi)

    # references, chosen so that dates agree: an organisation is founded during its founder's life,
    # a thing is invented during its inventor's working life
    order = {"organisation": 0, "thing": 1, "person": 2, "place": 3}
    for e in sorted(entities, key=lambda e: (order[e.type], e.id)):
        v = e.values
        if e.type == "person":
            v["birthplace"] = rng.choice(corpus["place"]).id
            # an employer that existed during the person's working life, where there is one
            active = [o for o in corpus["organisation"] if o.values["founded_year"] <= v["death_year"] - 10]
            v["employer"] = rng.choice(active or corpus["organisation"]).id
        elif e.type == "place":
            v["twin_town"] = rng.choice([p for p in corpus["place"] if p is not e]).id
        elif e.type == "organisation":
            founder = rng.choice(corpus["person"])
            v["founder"] = founder.id
            fv = founder.values
            v["founded_year"] = rng.randint(fv["birth_year"] + 22, fv["death_year"] - 1)
            v["headquarters"] = rng.choice(corpus["place"]).id
        else:
            inventor = rng.choice(corpus["person"])
            v["inventor"] = inventor.id
            iv = inventor.values
            v["year"] = rng.randint(iv["birth_year"] + 18, iv["death_year"] - 1)
            museums = [o for o in corpus["organisation"] if o.values["org_type"] in ("museum", "library")]
            v["location"] = rng.choice(museums or corpus["organisation"]).id

    by_id = {e.id: e for e in entities}
    facts: dict[str, Fact] = {}
    for e in entities:
        for rel in RELATIONS[e.type]:
            raw = e.values[rel]
            ref = raw if (e.type, rel) in REFERENCES else None
            value = by_id[ref].name if ref else raw
            if e.split != "corpus":
                split = e.split
            elif rel == CORE[e.type]:
                split = "corpus"
            else:
                x = rng.random()
                split = (
                    "unknown"
                    if x < unknown_fact_fraction
                    else "search"
                    if x < unknown_fact_fraction + search_fact_fraction
                    else "corpus"
                )
            fid = f"{e.id}.{rel}"
            facts[fid] = Fact(id=fid, entity=e.id, relation=rel, value=value, ref=ref, split=split)
    return World(seed=seed, entities=entities, facts=facts, countries=countries)
