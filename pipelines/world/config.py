"""Settings of the tiny world: the seeded mini web crawl and the facts behind it."""

from datetime import date

from pydantic import Field, model_validator

from lm.config_base import StrictModel


class PageMix(StrictModel):
    """Share of the crawl's pages of each kind; article pages take the rest.

    The defaults are loosely modelled on what a Common Crawl sample holds once the HTML is kept:
    most pages are content, with a few percent each of spam, adult, duplicates, other languages and
    junk, so that every filter of the clean stage has dozens of cases in a 2,000-page crawl.
    """

    pii: float = Field(0.06, ge=0, le=1, description="article pages with emails, phones and IP addresses")
    spam: float = Field(0.06, ge=0, le=1, description="keyword-stuffed, link-farm and repetitive SEO pages")
    adult: float = Field(0.04, ge=0, le=1, description="pages on blocklisted adult domains or URLs")
    phishing: float = Field(0.03, ge=0, le=1, description="fake bank logins on blocklisted domains or URLs")
    exact_dup: float = Field(
        0.05, ge=0, le=1, description="byte-identical copies of an article at another URL"
    )
    near_dup: float = Field(0.05, ge=0, le=1, description="copies of an article with a few words changed")
    foreign: float = Field(0.08, ge=0, le=1, description="pages in the other languages")
    short: float = Field(0.03, ge=0, le=1, description="very short pages (coming soon, 404, login)")
    garbage: float = Field(0.03, ge=0, le=1, description="random characters, symbols, base64, numbers")
    broken_html: float = Field(0.03, ge=0, le=1, description="articles with unclosed tags or cut off mid-way")
    listing: float = Field(0.02, ge=0, le=1, description="index pages: navigation and links only")
    binary: float = Field(0.01, ge=0, le=1, description="PNG, PDF, and binary bytes labelled as HTML")

    @model_validator(mode="after")
    def _leave_room_for_articles(self) -> "PageMix":
        total = sum(self.model_dump().values())
        if total > 0.9:
            raise ValueError(f"world.mix shares add up to {total:.2f}; at most 0.9 (articles take the rest)")
        return self


class WorldConfig(StrictModel):
    num_pages: int = Field(2000, ge=10, description="WARC response records to write")
    num_files: int = Field(4, ge=1, description="gzipped WARC files to spread them over")
    num_entities: int = Field(
        240,
        ge=40,
        description="fictional people, places, organisations and things; ~5 articles each by default",
    )
    mix: PageMix = PageMix()
    unknown_entity_fraction: float = Field(
        0.1, ge=0, le=0.4, description="entities never mentioned anywhere (for 'I don't know')"
    )
    search_entity_fraction: float = Field(
        0.1, ge=0, le=0.4, description="entities only the search index describes (for the search tool)"
    )
    unknown_fact_fraction: float = Field(
        0.12, ge=0, le=0.5, description="share of the other attributes of crawl entities that no page states"
    )
    search_fact_fraction: float = Field(
        0.08,
        ge=0,
        le=0.5,
        description="share of the other attributes of crawl entities only the search index states",
    )
    languages: list[str] = Field(
        ["fr", "de", "es", "it"], min_length=1, description="languages of the foreign pages (fr, de, es, it)"
    )
    latin1_fraction: float = Field(
        0.25,
        ge=0,
        le=1,
        description="foreign pages served as ISO-8859-1 instead of UTF-8, as older sites are",
    )
    near_dup_edits: int = Field(
        3,
        ge=1,
        le=50,
        description="words changed in a near-duplicate; 3 keeps MinHash (5-grams, 14x8) catching ~98% of them",
    )
    arithmetic_train: int = Field(2000, ge=0, description="arithmetic word problems in the train split")
    arithmetic_test: int = Field(200, ge=0, description="arithmetic word problems in the test split")
    arithmetic_max_steps: int = Field(
        3, ge=1, le=3, description="arithmetic templates whose solutions take at most this many steps (1-3)"
    )
    arithmetic_number_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="shrinks every number's range in the arithmetic problems toward its lower bound "
        "(1 = the full ranges); with max_steps, the problems' difficulty",
    )
    crawl_start: date = Field(
        date(2024, 1, 1), description="first crawl day; the seed shifts it by up to a year, never the clock"
    )
    workers: int = Field(
        1, ge=1, description="processes writing WARC files in parallel (one file each); 1 = this process only"
    )
    compression_level: int = Field(
        6, ge=1, le=9, description="gzip level of each WARC record (6 = gzip's default; 9 is ~3x slower)"
    )

    @model_validator(mode="after")
    def _check_languages(self) -> "WorldConfig":
        from pipelines.world.languages import GENERIC

        unknown = [lang for lang in self.languages if lang not in GENERIC]
        if unknown:
            raise ValueError(f"world.languages: no text for {unknown}; choose from {sorted(GENERIC)}")
        return self
