"""Which page of the crawl is what: the kind of every page, decided before any page is written.

The plan holds a few integers per page (kind, entity, a source page or a language), so a crawl of
millions of pages costs megabytes, and any page can be rebuilt from (seed, index) alone. That is
what lets a duplicate be written without keeping its source page in memory: the source is simply
built again.
"""

from __future__ import annotations

import random
from array import array
from bisect import bisect_left
from dataclasses import dataclass

# every kind of page, in the order the summary lists them
KINDS = (
    "article",
    "pii",
    "spam",
    "adult",
    "phishing",
    "exact_dup",
    "near_dup",
    "foreign",
    "short",
    "garbage",
    "broken_html",
    "listing",
    "binary",
)
ENTITY_KINDS = ("article", "pii", "broken_html")  # English pages about one entity


@dataclass
class Plan:
    kinds: list[str]
    entity: array  # index into the crawl entities, -1 when the page is about none
    aux: array  # duplicates: source page index; foreign pages: language index; else -1
    full: bytearray  # 1 when the page states every crawl fact of its entity

    def __len__(self) -> int:
        return len(self.kinds)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for k in self.kinds:
            out[k] += 1
        return out


def kind_counts(num_pages: int, shares: dict[str, float]) -> dict[str, int]:
    counts = {k: int(round(num_pages * shares.get(k, 0.0))) for k in KINDS if k != "article"}
    counts["article"] = num_pages - sum(counts.values())
    if counts["article"] < 1:
        raise ValueError(f"world.mix leaves no article pages among {num_pages}; lower the other shares")
    if (counts["exact_dup"] or counts["near_dup"]) and counts["article"] < 1:
        raise ValueError("duplicates need at least one article page to copy")
    return counts


def make_plan(
    seed: int, num_pages: int, shares: dict[str, float], corpus_types: list[str], num_languages: int
) -> Plan:
    """Shuffle the kinds over the pages and give each page its entity, source or language.

    Articles walk through a shuffled list of the crawl entities, so every entity gets about the same
    number of articles, and its first article (``full``) states all of its crawl facts. Duplicates
    copy an article written earlier in the crawl, as mirrors and scrapers do.
    """
    rng = random.Random(f"world-plan:{seed}")
    counts = kind_counts(num_pages, shares)
    kinds: list[str] = []
    for k in KINDS:
        kinds.extend([k] * counts[k])
    rng.shuffle(kinds)
    entity = array("i", [-1]) * num_pages
    aux = array("i", [-1]) * num_pages
    full = bytearray(num_pages)
    order = list(range(len(corpus_types)))
    rng.shuffle(order)
    places = [i for i, t in enumerate(corpus_types) if t == "place"]
    articles = array("i")
    n_article = n_foreign = 0
    for i, k in enumerate(kinds):
        if k == "article":
            entity[i] = order[n_article % len(order)]
            full[i] = n_article < len(order)
            n_article += 1
            articles.append(i)
        elif k in ENTITY_KINDS:
            entity[i] = rng.randrange(len(order))
        elif k == "foreign":
            entity[i] = rng.choice(places)
            aux[i] = n_foreign % num_languages
            n_foreign += 1
    for i, k in enumerate(kinds):
        if k in ("exact_dup", "near_dup"):
            earlier = bisect_left(articles, i)
            aux[i] = articles[rng.randrange(earlier)] if earlier else articles[0]
            entity[i] = entity[aux[i]]
    return Plan(kinds=kinds, entity=entity, aux=aux, full=full)
