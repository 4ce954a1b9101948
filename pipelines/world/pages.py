"""Builds page ``i`` of the crawl from (seed, i) alone: its URL, HTTP payload and ground truth.

Each page draws from its own RNG, seeded by the world seed and its index, so pages can be built
in any order, a duplicate rebuilds its source exactly, and the same seed always gives the same
bytes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipelines.world import junk
from pipelines.world.config import WorldConfig
from pipelines.world.facts import World
from pipelines.world.html import STYLES, Site, render_article, render_listing
from pipelines.world.languages import SITE_WORDS, TLDS, foreign_article
from pipelines.world.names import NameMaker, is_clean, slug
from pipelines.world.pii import pii_sentences
from pipelines.world.plan import Plan
from pipelines.world.prose import Writer

ARTICLE_SITE_SUFFIXES = (
    "pedia.org",
    "-almanac.org",
    "-history.net",
    "chronicle.com",
    "-gazette.com",
    "-notes.net",
    "-guide.info",
    "-review.org",
)
SITE_TAGLINES = (
    "Stories from the past",
    "Notes on people and places",
    "A small encyclopedia",
    "History for curious readers",
)
MIRROR_PATTERNS = ("{w}-mirror.net", "archive-{w}.org", "{w}-copies.com", "read-{w}.net")
FREE_HOSTS = ("freepages-{w}.net", "{w}-homepages.com", "members-{w}.org")
SYNONYMS = {
    "famous": "well-known",
    "old": "ancient",
    "small": "little",
    "often": "frequently",
    "many": "numerous",
    "began": "started",
    "centre": "heart",
    "records": "documents",
    "visitors": "tourists",
    "quiet": "calm",
    "streets": "roads",
    "built": "constructed",
    "short": "brief",
    "main": "principal",
    "still": "even now",
    "surprised": "astonished",
    "reported": "covered",
    "remembered": "recalled",
    "studied": "read",
    "proud": "pleased",
    "known": "recognised",
    "town": "city",
    "years": "decades",
    "letters": "notes",
    "tidy": "neat",
    "shop": "store",
    "books": "volumes",
    "rooms": "halls",
    "drawings": "sketches",
    "highest": "greatest",
    "young": "youthful",
    "several": "some",
    "careful": "thorough",
    "difficult": "hard",
    "working": "functioning",
    "new": "fresh",
    "great": "large",
    "kept": "held",
    "show": "reveal",
}
REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
# month names spelled out here, not by strftime, whose output depends on the locale
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass
class Page:
    url: str
    payload: bytes
    content_type: str
    status: int = 200
    truth: dict[str, Any] = field(default_factory=dict)


def _empty_pii() -> dict[str, list[str]]:
    return {"emails": [], "phones": [], "ipv4": [], "ipv6": []}


class PageFactory:
    def __init__(self, seed: int, settings: WorldConfig, world: World, plan: Plan) -> None:
        self.seed, self.settings, self.world, self.plan = seed, settings, world, plan
        self.writer = Writer(world)
        self.corpus = world.of_split("corpus")
        self.allowed = {e.id: world.relations(e, ("corpus",)) for e in self.corpus}
        rng = random.Random(f"world-sites:{seed}")
        names = NameMaker(rng)
        names.used |= {e.name.lower() for e in world.entities}

        def domain(pattern: str) -> str:
            return names.unique(lambda: pattern.format(w=names.coined((2, 2)).lower()))

        self.sites = []
        for k, suffix in enumerate(ARTICLE_SITE_SUFFIXES):
            d = domain(f"{{w}}{suffix}")
            self.sites.append(
                Site(d, _site_name(d), STYLES[k % len(STYLES)], "en", SITE_TAGLINES[k % len(SITE_TAGLINES)])
            )
        self.mirrors = [domain(p) for p in MIRROR_PATTERNS]
        self.foreign_sites = {
            lang: [
                Site(d, _site_name(d), STYLES[k % len(STYLES)], lang)
                for k, d in enumerate(domain(f"{{w}}-{word}.{TLDS[lang]}") for word in SITE_WORDS[lang])
            ]
            for lang in settings.languages
        }
        counts = plan.counts()
        self.adult_domains = [junk.adult_domain(rng, names) for _ in range(max(3, counts["adult"] // 4))]
        self.banks = [junk.bank_name(rng, names) for _ in range(max(2, counts["phishing"] // 6))]
        self.phishing_sites = sorted(
            {(junk.phishing_domain(rng, b), b) for b in self.banks for _ in range(2)}
        )
        self.phishing_domains = [d for d, _ in self.phishing_sites]
        self.free_hosts = [domain(p) for p in FREE_HOSTS]
        # listed but never crawled, as real blocklists are mostly sites a given crawl never meets
        self.decoys = {
            "adult": [junk.adult_domain(rng, names) for _ in range(5)],
            "phishing": [junk.phishing_domain(rng, junk.bank_name(rng, names)) for _ in range(5)],
        }
        self.blocked_urls: dict[str, set[str]] = {"adult": set(), "phishing": set()}
        start = datetime.combine(settings.crawl_start, datetime.min.time())
        self.start = start + timedelta(days=random.Random(f"world-date:{seed}").randrange(365))

    # ------------------------------------------------------------------ shared pieces
    def rng(self, i: int) -> random.Random:
        return random.Random(f"world-page:{self.seed}:{i}")

    def date(self, i: int) -> datetime:
        """Crawl time of page ``i``: about seven seconds apart, with a jitter fixed by (seed, i)."""
        return self.start + timedelta(seconds=7 * i + (i * 2654435761 + self.seed) % 7)

    def blocklists(self) -> dict[str, dict[str, list[str]]]:
        return {
            "adult": {
                "domains": sorted(set(self.adult_domains) | set(self.decoys["adult"])),
                "urls": sorted(self.blocked_urls["adult"]),
            },
            "phishing": {
                "domains": sorted(set(self.phishing_domains) | set(self.decoys["phishing"])),
                "urls": sorted(self.blocked_urls["phishing"]),
            },
        }

    def _related(self, rng: random.Random) -> list[tuple[str, str]]:
        picks = rng.sample(self.corpus, min(5, len(self.corpus)))
        return [(e.name if e.type != "thing" else e.name[4:], f"/{e.type}/{slug(e.name)}") for e in picks]

    def _article_url(self, rng: random.Random, site: Site, name: str, i: int, when: datetime) -> str:
        s = slug(name)
        path = {
            "wiki": f"/wiki/{s.replace('-', '_').title()}?oldid={100000 + i}",
            "blog": f"/{when.year}/{when.month:02d}/{s}-{i}/",
            "news": f"/news/{when:%Y-%m-%d}/{s}-{i}",
            "magazine": f"/features/{s}-{i}.html",
        }[site.style]
        url = f"https://{site.domain}{path}"
        return url if is_clean(url) else f"https://{site.domain}/page/{i}"

    def _compose(self, j: int, mutate=None, pii_rng: random.Random | None = None):
        """HTML of the article planned at index ``j``, optionally edited (near-dup) or with PII added."""
        rng = self.rng(j)
        e = self.corpus[self.plan.entity[j]]
        site = rng.choice(self.sites)
        art = self.writer.article(rng, e, self.allowed[e.id], full=bool(self.plan.full[j]))
        when = self.date(j)
        url = self._article_url(rng, site, e.name, j, when)
        related = self._related(rng)
        shown = when - timedelta(days=rng.randint(1, 900))
        blocks = art.blocks
        extra: dict[str, Any] = {}
        if mutate is not None:
            blocks, extra["changes"] = mutate(blocks)
        pii = _empty_pii()
        if pii_rng is not None:
            person = e.name if e.type == "person" else None
            sents, pii = pii_sentences(pii_rng, NameMaker(pii_rng), person)
            blocks = blocks + [("p", " ".join(sents))]
        html = render_article(
            rng,
            site,
            art.title,
            blocks,
            related,
            f"{shown.day} {MONTHS[shown.month - 1]} {shown.year}",
            shown.year,
            charset="utf-8",
            canonical=url,
        )
        truth = {
            "entity": e.id,
            "entity_name": e.name,
            "facts": sorted(art.facts),
            "site": site.domain,
            "genre_title": art.title,
            "pii": pii,
            **extra,
        }
        return url, html, truth

    # ------------------------------------------------------------------ the page kinds
    def page(self, i: int) -> Page:
        kind = self.plan.kinds[i]
        page = getattr(self, f"_{kind}")(i)
        page.truth = {"kind": kind, **page.truth}
        page.truth.setdefault("pii", _empty_pii())
        return page

    def _article_page(self, i: int, **kw) -> Page:
        url, html, truth = self._compose(i, **kw)
        cs = ("utf-8", "UTF-8")[(i * 40503 + self.seed) % 7 == 0]
        return Page(
            url, html.encode("utf-8"), f"text/html; charset={cs}", truth={"charset": "utf-8", **truth}
        )

    def _article(self, i: int) -> Page:
        return self._article_page(i)

    def _pii(self, i: int) -> Page:
        return self._article_page(i, pii_rng=random.Random(f"world-pii:{self.seed}:{i}"))

    def _exact_dup(self, i: int) -> Page:
        j = self.plan.aux[i]
        src = self._article_page(j)
        path = src.url.split("/", 3)[3]
        url = f"https://{self.mirrors[i % len(self.mirrors)]}/copy/{i}/{path}"
        return Page(
            url, src.payload, src.content_type, truth={**src.truth, "source": src.url, "source_index": j}
        )

    def _near_dup(self, i: int) -> Page:
        j = self.plan.aux[i]
        rng = random.Random(f"world-near-dup:{self.seed}:{i}")
        edits = self.settings.near_dup_edits
        src_url, html, truth = self._compose(j, mutate=lambda blocks: _edit_words(rng, blocks, edits))
        e = self.corpus[self.plan.entity[j]]
        url = f"https://{self.mirrors[(i + 1) % len(self.mirrors)]}/{i}/{slug(e.name)}.html"
        return Page(
            url,
            html.encode("utf-8"),
            "text/html; charset=utf-8",
            truth={"charset": "utf-8", **truth, "source": src_url, "source_index": j},
        )

    def _broken_html(self, i: int) -> Page:
        url, html, truth = self._compose(i)
        rng = random.Random(f"world-broken:{self.seed}:{i}")
        variant = rng.choice(("unclosed", "truncated", "unclosed_truncated", "misnested"))
        if variant.startswith("unclosed"):
            html = re.sub(
                r"</(p|div|li|ul|article|main|section|aside|header|footer|nav|h1|h2|body|html)>", "", html
            )
        if variant == "misnested":
            html = (
                html.replace("<p>", "<p><b><i>", 3)
                .replace("</p>", "</b></i></p>", 3)
                .replace("</div>", "", 2)
            )
        if variant.endswith("truncated"):
            start = html.index("<h1>")
            html = html[: start + int((len(html) - start) * rng.uniform(0.35, 0.75))]
        return Page(
            url,
            html.encode("utf-8"),
            "text/html; charset=utf-8",
            truth={"charset": "utf-8", **truth, "variant": variant},
        )

    def _foreign(self, i: int) -> Page:
        rng = self.rng(i)
        lang = self.settings.languages[self.plan.aux[i]]
        e = self.corpus[self.plan.entity[i]]
        allowed = self.allowed[e.id]
        facts = {
            r: str(e.values[r]) for r in ("country", "population", "founded_year", "river") if r in allowed
        }
        title, paragraphs, stated = foreign_article(rng, lang, e.name, facts)
        site = rng.choice(self.foreign_sites[lang])
        when = self.date(i)
        url = f"https://{site.domain}/{slug(e.name)}-{i}.html"
        html = render_article(
            rng,
            site,
            title,
            [("p", p) for p in paragraphs],
            self._related(rng),
            f"{when:%Y-%m-%d}",
            when.year,
            charset="utf-8",
            canonical=url,
        )
        charset = "utf-8"
        payload = html.encode("utf-8")
        if rng.random() < self.settings.latin1_fraction:
            charset = "iso-8859-1"
            payload = html.replace('<meta charset="utf-8">', '<meta charset="iso-8859-1">').encode(
                "iso-8859-1"
            )
        return Page(
            url,
            payload,
            f"text/html; charset={charset.upper() if charset != 'utf-8' else charset}",
            truth={
                "lang": lang,
                "charset": charset,
                "entity": e.id,
                "entity_name": e.name,
                "facts": sorted(self.world.fact(e, r).id for r in stated),
                "site": site.domain,
            },
        )

    def _spam(self, i: int) -> Page:
        rng = self.rng(i)
        variant, html = junk.spam_page(rng)
        url = f"http://{junk.spam_domain(rng)}/{rng.choice(('index', 'shop', 'deals', 'best'))}-{i}.html"
        return Page(url, html.encode("utf-8"), "text/html; charset=utf-8", truth={"variant": variant})

    def _adult(self, i: int) -> Page:
        return self._blocked(i, "adult")

    def _phishing(self, i: int) -> Page:
        return self._blocked(i, "phishing")

    def _blocked(self, i: int, category: str) -> Page:
        rng = self.rng(i)
        by_url = rng.random() < (0.3 if category == "adult" else 0.4)
        if category == "adult":
            domain = rng.choice(self.adult_domains)
            html = junk.adult_page(rng, domain)
        else:
            domain, bank = rng.choice(self.phishing_sites)
            html = junk.phishing_page(rng, bank)
        if by_url:
            host = rng.choice(self.free_hosts)
            if category == "adult":
                path = f"/~{NameMaker(rng).coined((2, 2)).lower()}/gallery-{i}"
            else:
                path = f"/wp-includes/{domain.split('.')[0]}/login-{i}.php"
            match = "url"
            self.blocked_urls[category].add(host + path)
        else:
            host, match = domain, "domain"
            if rng.random() < 0.4:
                host, match = f"{rng.choice(('www', 'm', 'secure', 'en'))}.{domain}", "subdomain"
            path = rng.choice((f"/?p={i}", f"/index.html?s={i}", f"/page/{i}", f"/login?session={i}"))
        scheme = "https" if rng.random() < 0.5 else "http"
        return Page(
            f"{scheme}://{host}{path}",
            html.encode("utf-8"),
            "text/html; charset=utf-8",
            truth={"blocklist": {"category": category, "match": match}},
        )

    def _short(self, i: int) -> Page:
        rng = self.rng(i)
        variant, html, status = junk.short_page(rng)
        site = rng.choice(self.sites + [Site(d, d, "blog") for d in self.free_hosts])
        return Page(
            f"https://{site.domain}/p/{i}",
            html.encode("utf-8"),
            "text/html; charset=utf-8",
            status,
            truth={"variant": variant},
        )

    def _garbage(self, i: int) -> Page:
        rng = self.rng(i)
        variant, html = junk.garbage_page(rng)
        host = rng.choice(self.free_hosts)
        return Page(
            f"http://{host}/data/{i}.html",
            html.encode("utf-8"),
            "text/html; charset=utf-8",
            truth={"variant": variant},
        )

    def _listing(self, i: int) -> Page:
        rng = self.rng(i)
        site = rng.choice(self.sites)
        etype = rng.choice(("person", "place", "organisation", "thing"))
        members = [e for e in self.corpus if e.type == etype]
        picks = rng.sample(members, min(len(members), rng.randint(15, 40)))
        links = [(e.name, f"/{etype}/{slug(e.name)}") for e in picks]
        pages = rng.randint(3, 20)
        page_no = rng.randint(1, pages - 1)
        label = {
            "person": "people",
            "place": "places",
            "organisation": "organisations",
            "thing": "inventions",
        }[etype]
        html = render_listing(
            site, f"Index of {label}, page {page_no}", links, page_no, pages, self.date(i).year
        )
        return Page(
            f"https://{site.domain}/{label}/?page={page_no}&i={i}",
            html.encode("utf-8"),
            "text/html; charset=utf-8",
            truth={"site": site.domain},
        )

    def _binary(self, i: int) -> Page:
        rng = self.rng(i)
        variant, payload, ctype, suffix = junk.binary_payload(rng)
        site = rng.choice(self.sites)
        return Page(f"https://{site.domain}/files/{i}{suffix}", payload, ctype, truth={"variant": variant})


def _site_name(domain: str) -> str:
    base = domain.split(".")[0].replace("-", " ")
    return " ".join(w.capitalize() for w in base.split())


def _edit_words(rng: random.Random, blocks: list[tuple[str, str]], edits: int):
    """Change up to ``edits`` words of the paragraphs for synonyms (names and numbers stay as they are)."""
    spots = []
    for b, (tag, text) in enumerate(blocks):
        if tag != "p":
            continue
        for w, word in enumerate(text.split(" ")):
            core = word.rstrip(".,;:")
            if core in SYNONYMS:
                spots.append((b, w))
    changes = []
    chosen = rng.sample(spots, min(edits, len(spots)))
    new_blocks = [list(b) for b in blocks]
    by_block: dict[int, list[int]] = {}
    for b, w in chosen:
        by_block.setdefault(b, []).append(w)
    for b, positions in by_block.items():
        words = new_blocks[b][1].split(" ")
        for w in positions:
            core = words[w].rstrip(".,;:")
            tail = words[w][len(core) :]
            words[w] = SYNONYMS[core] + tail
            changes.append([core, SYNONYMS[core]])
        new_blocks[b][1] = " ".join(words)
    if not changes:  # no word with a synonym: add one word instead, so the copy still differs
        b = next(k for k, (tag, _) in enumerate(blocks) if tag == "p")
        new_blocks[b][1] = new_blocks[b][1].rstrip(".") + " indeed."
        changes.append(["", "indeed"])
    return [tuple(b) for b in new_blocks], changes
