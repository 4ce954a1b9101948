"""Write the tiny world: the WARC crawl, its ground truth, blocklists, facts and question sets.

    python -m pipelines.world --set world.num_pages=100000 --run-dir runs/big

Layout under ``<run>/world/``::

    crawl/world-00000.warc.gz ...   gzipped WARC/1.0: a warcinfo record, then one response per page
    pages.jsonl                      ground truth per page (kind, source of duplicates, PII, facts, ...)
    blocklists/<category>/domains    UT1 format, one entry per line (and .../urls)
    facts.json                       entities, facts with their split and page counts, identity
    search_index.jsonl               documents of the search tool (search-only facts live only here)
    questions/*.jsonl                known, unknown, search, identity, arithmetic_train, arithmetic_test

Pages are built one at a time and streamed to disk, so memory stays flat as the crawl grows.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from lm import atomic
from pipelines.runtime import Progress
from pipelines.world.config import WorldConfig
from pipelines.world.facts import RELATIONS, World, build_world
from pipelines.world.html import SERVERS
from pipelines.world.pages import REASONS, PageFactory
from pipelines.world.plan import KINDS, Plan, make_plan
from pipelines.world.prose import display_value
from pipelines.world.questions import (
    IDENTITY,
    arithmetic_sets,
    fact_questions,
    identity_questions,
    search_index,
)
from pipelines.world.warc import WarcFile, http_date, record_id


def build(seed: int, settings: WorldConfig) -> tuple[World, Plan, PageFactory]:
    """The world, its plan and its page factory: everything needed to build any page of the crawl."""
    world = build_world(
        seed,
        settings.num_entities,
        settings.unknown_entity_fraction,
        settings.search_entity_fraction,
        settings.unknown_fact_fraction,
        settings.search_fact_fraction,
    )
    corpus_types = [e.type for e in world.of_split("corpus")]
    plan = make_plan(
        seed, settings.num_pages, settings.mix.model_dump(), corpus_types, len(settings.languages)
    )
    return world, plan, PageFactory(seed, settings, world, plan)


def file_ranges(num_pages: int, num_files: int) -> list[tuple[int, int]]:
    files = min(num_files, num_pages)
    return [(f * num_pages // files, (f + 1) * num_pages // files) for f in range(files)]


def _write_json(path: Path, data: Any) -> None:
    """Via a temporary file and a rename, so a killed run never leaves half a file."""
    atomic.write_json(path, data, indent=1, sort_keys=True, ensure_ascii=False, default=None)


def _write_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_files(
    seed: int,
    settings: WorldConfig,
    out: Path,
    files: list[int],
    show_progress: bool,
    built: tuple[World, Plan, PageFactory] | None = None,
) -> dict[str, Any]:
    """Write crawl files ``files`` and their part of pages.jsonl; return what the summary needs.

    Runs in the main process or in a worker process: every page is a function of (seed, index), so
    the files come out the same whichever process writes them.
    """
    world, plan, factory = built or build(seed, settings)
    ranges = file_ranges(settings.num_pages, settings.num_files)
    kinds: Counter[str] = Counter()
    mentions: dict[str, dict[str, int]] = {}
    total = sum(ranges[f][1] - ranges[f][0] for f in files)
    progress = None
    if show_progress:
        progress = Progress("world pages", total, unit="pages")
    total_bytes = 0
    for f in files:
        lo, hi = ranges[f]
        path = out / "crawl" / file_name(f)
        part = out / f".pages-{f:05d}.jsonl.tmp"  # concatenated into pages.jsonl at the end
        info = {
            "software": "raychat tiny world (pipelines.world)",
            "format": "WARC File Format 1.0",
            "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.0/",
            "isPartOf": f"RAYCHAT-WORLD-{seed}",
            "description": "A seeded synthetic web crawl of fictional encyclopedia pages and the junk real crawls hold",
            "robots": "classic",
        }
        with (
            atomic.atomic_path(path) as tmp,
            WarcFile(
                tmp,
                info,
                factory.date(lo),
                record_id("warcinfo", seed, f),
                settings.compression_level,
                filename=path.name,
            ) as warc,
            open(part, "w", encoding="utf-8") as pages_out,
        ):
            for i in range(lo, hi):
                page = factory.page(i)
                when = factory.date(i)
                rid = record_id("response", seed, i)
                headers = [
                    ("Date", http_date(when)),
                    ("Server", SERVERS[i % len(SERVERS)]),
                    ("Content-Type", page.content_type),
                    ("Content-Length", str(len(page.payload))),
                    ("Connection", "close"),
                ]
                warc.write_response(
                    page.url, page.status, REASONS[page.status], headers, page.payload, when, rid
                )
                truth = page.truth
                kind = truth["kind"]
                kinds[kind] += 1
                for fid in truth.get("facts", ()):
                    per_kind = mentions.setdefault(fid, {})
                    per_kind[kind] = per_kind.get(kind, 0) + 1
                row = {
                    "index": i,
                    "url": page.url,
                    **truth,
                    "warc_file": path.name,
                    "record_id": rid,
                    "date": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "http_status": page.status,
                    "content_type": page.content_type,
                    "bytes": len(page.payload),
                }
                pages_out.write(json.dumps(row, ensure_ascii=False) + "\n")
                if progress:
                    progress.update()
        total_bytes += warc.bytes
    return {
        "kinds": dict(kinds),
        "mentions": mentions,
        "bytes": total_bytes,
        "blocked_urls": {k: sorted(v) for k, v in factory.blocked_urls.items()},
    }


def file_name(f: int) -> str:
    return f"world-{f:05d}.warc.gz"


def generate(seed: int, settings: WorldConfig, out: Path, show_progress: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    out = Path(out)
    crawl = out / "crawl"
    crawl.mkdir(parents=True, exist_ok=True)
    built = build(seed, settings)
    world, plan, factory = built
    ranges = file_ranges(settings.num_pages, settings.num_files)
    names = [file_name(f) for f in range(len(ranges))]
    for stale in crawl.glob("world-*.warc.gz"):  # a rerun with fewer files must not leave old ones behind
        if stale.name not in names:
            stale.unlink()

    workers = min(settings.workers, len(ranges))
    if workers <= 1:
        results = [_write_files(seed, settings, out, list(range(len(ranges))), show_progress, built)]
    else:
        # spawn, not fork: the caller may hold Ray's threads, and forking a threaded process can deadlock
        ctx = multiprocessing.get_context("spawn")
        progress = None
        if show_progress:
            progress = Progress("world pages", settings.num_pages, unit="pages")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(_write_files, seed, settings, out, [f], False): f for f in range(len(ranges))
            }
            results = []
            for fut in as_completed(futures):
                results.append(fut.result())
                if progress:
                    lo, hi = ranges[futures[fut]]
                    progress.update(hi - lo)

    kinds: Counter[str] = Counter()
    mentions: dict[str, dict[str, int]] = {}
    total_bytes = 0
    for r in results:
        kinds.update(r["kinds"])
        total_bytes += r["bytes"]
        for fid, per_kind in r["mentions"].items():
            mine = mentions.setdefault(fid, {})
            for k, n in per_kind.items():
                mine[k] = mine.get(k, 0) + n
        for category, urls in r["blocked_urls"].items():
            factory.blocked_urls[category].update(urls)
    with atomic.atomic_path(out / "pages.jsonl") as tmp, open(tmp, "wb") as pages_out:
        for f in range(len(ranges)):
            part = out / f".pages-{f:05d}.jsonl.tmp"
            with open(part, "rb") as src:
                shutil.copyfileobj(src, pages_out)
            part.unlink()

    for category, lists in factory.blocklists().items():
        folder = out / "blocklists" / category
        folder.mkdir(parents=True, exist_ok=True)
        for name, entries in lists.items():
            atomic.write_text(folder / name, "".join(e + "\n" for e in entries))

    docs, doc_of = search_index(world, factory.writer, seed)
    _write_lines(out / "search_index.jsonl", docs)
    sets = fact_questions(world, factory.writer, seed, mentions, doc_of)
    train, test = arithmetic_sets(
        world,
        factory.writer,
        seed,
        settings.arithmetic_train,
        settings.arithmetic_test,
        max_steps=settings.arithmetic_max_steps,
        number_scale=settings.arithmetic_number_scale,
    )
    sets["identity"] = identity_questions(random.Random(f"world-identity:{seed}"))
    sets["arithmetic_train"], sets["arithmetic_test"] = train, test
    qdir = out / "questions"
    qdir.mkdir(exist_ok=True)
    for name, rows in sets.items():
        _write_lines(qdir / f"{name}.jsonl", rows)

    _write_json(out / "facts.json", facts_document(world, factory, mentions, doc_of, sets, settings, seed))
    seconds = time.perf_counter() - started
    counts = {k: kinds.get(k, 0) for k in KINDS}
    return {
        "pages": settings.num_pages,
        "kinds": counts,
        "files": [str(crawl / n) for n in names],
        "workers": workers,
        "warc_bytes": total_bytes,
        "entities": len(world.entities),
        "facts": {
            s: sum(1 for f in world.facts.values() if f.split == s) for s in ("corpus", "unknown", "search")
        },
        "questions": {k: len(v) for k, v in sets.items()},
        "seconds": round(seconds, 2),
        "pages_per_second": round(settings.num_pages / max(seconds, 1e-9), 1),
    }


def facts_document(
    world: World,
    factory: PageFactory,
    mentions: dict[str, dict[str, int]],
    doc_of: dict[str, str],
    sets: dict[str, list],
    settings: WorldConfig,
    seed: int,
) -> dict[str, Any]:
    entities = []
    for e in world.entities:
        attrs = {r: display_value(world, e, r) for r in RELATIONS[e.type]}
        entities.append(
            {
                "id": e.id,
                "name": e.name,
                "type": e.type,
                "split": e.split,
                "attributes": attrs,
                **({"gender": e.info["gender"]} if "gender" in e.info else {}),
            }
        )
    facts = []
    for f in world.facts.values():
        e = world.by_id[f.entity]
        facts.append(
            {
                "id": f.id,
                "entity": f.entity,
                "subject": e.name,
                "relation": f.relation,
                "value": display_value(world, e, f.relation),
                "ref": f.ref,
                "split": f.split,
                "pages": mentions.get(f.id, {}),
                "search_doc": doc_of.get(f.id),
            }
        )
    splits = {
        s: sorted(f.id for f in world.facts.values() if f.split == s) for s in ("corpus", "unknown", "search")
    }
    return {
        "seed": seed,
        "settings": settings.model_dump(mode="json", exclude={"workers"}),  # workers do not change a byte
        "identity": IDENTITY,
        "countries": world.countries,
        "entities": entities,
        "facts": facts,
        "splits": splits,
        "taught": sorted(f for f in splits["corpus"] if f in mentions),
        "question_sets": {k: f"questions/{k}.jsonl" for k in sets},
        "blocklists": factory.blocklists(),
        "sites": [s.domain for s in factory.sites],
    }
