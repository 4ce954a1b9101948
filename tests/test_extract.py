"""HTML text extraction: keeps the article, drops the chrome, respects the time limit, fails per document."""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.clean import extract as extract_module
from pipelines.clean.extract import ExtractConfig, HtmlExtractor
from pipelines.clean.filters.base import run_steps
from pipelines.clean.readers import read_file
from pipelines.inputs import InputFile

ARTICLE_PARAGRAPHS = [
    "The Mariana Trench is the deepest oceanic trench on Earth, reaching nearly eleven kilometres below "
    "the surface of the western Pacific Ocean.",
    "Its deepest point, the Challenger Deep, was first reached by a crewed vessel in 1960, when the "
    "bathyscaphe Trieste descended with two people aboard.",
    "Scientists studying the trench have found amphipods, sea cucumbers and single-celled foraminifera "
    "thriving under pressures more than a thousand times those at sea level.",
]
NAVIGATION = ["Home", "World News", "Business", "Science", "Sign in", "Subscribe now"]
FOOTER = (
    "Copyright 2024 Example Media Group. All rights reserved. Privacy Policy | Terms of Use | Cookie Settings"
)


def news_page() -> str:
    nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}">{n}</a></li>' for n in NAVIGATION)
    body = "".join(f"<p>{p}</p>" for p in ARTICLE_PARAGRAPHS)
    related = "".join(f'<li><a href="/r{i}">Related story number {i} you may like</a></li>' for i in range(8))
    return (
        "<!DOCTYPE html><html><head><title>The deepest trench</title></head><body>"
        f'<header><nav class="main-menu"><ul>{nav}</ul></nav></header>'
        "<main><article><h1>The deepest place on Earth</h1>"
        f"{body}</article>"
        f'<aside class="sidebar"><h3>Most read</h3><ul>{related}</ul></aside></main>'
        f'<footer class="site-footer"><p>{FOOTER}</p></footer></body></html>'
    )


def big_page(paragraphs: int = 4000) -> str:
    body = "".join(
        f"<div class='c{i % 7}'><p>Paragraph {i} talks about the ocean floor, its vents and its animals at "
        f"some length so that the extractor has real work to do.</p></div>"
        for i in range(paragraphs)
    )
    return f"<html><body><article>{body}</article></body></html>"


def html_doc(html: str, **extra) -> dict:
    return {"id": extra.pop("id", "d"), "content": html, "content_type": "html", **extra}


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@pytest.mark.parametrize("engine", ["trafilatura", "resiliparse"])
def test_keeps_the_article_and_drops_navigation(engine):
    step = HtmlExtractor(ExtractConfig(engine=engine))
    result = run_steps([step], [html_doc(news_page())])
    (doc,) = result.kept
    assert "content" not in doc  # the HTML is gone from the document
    for paragraph in ARTICLE_PARAGRAPHS:
        assert paragraph in doc["text"]
    assert "Subscribe now" not in doc["text"] and "All rights reserved" not in doc["text"]
    assert "Related story number" not in doc["text"]
    assert result.counts[("extract", "text_chars")] == len(doc["text"])


def test_text_documents_pass_through():
    docs = [
        {"id": "t", "content": "Already plain text.", "content_type": "text"},
        {"id": "u", "text": "done"},
    ]
    result = run_steps([HtmlExtractor()], docs)
    assert [d["text"] for d in result.kept] == ["Already plain text.", "done"]
    assert all("content" not in d for d in result.kept)


def test_pages_without_main_text_are_dropped_as_empty():
    pages = ["", "<html><body></body></html>", "<html><body><nav><a href='/'>Home</a></nav></body></html>"]
    fast = run_steps(
        [HtmlExtractor(ExtractConfig(fast=True))], [html_doc(p, id=str(i)) for i, p in enumerate(pages)]
    )
    assert not fast.kept
    assert [(d["step"], d["reason"]) for d in fast.rejected] == [("extract", "empty_extraction")] * 3
    # a rejected page keeps its HTML, which pass 1 stores (cut to clean.rejected_max_chars) as its text
    assert [d["content"] for d in fast.rejected] == pages
    # the default keeps trafilatura's fallback extractors (FineWeb's setting), which return what little a
    # page has: the nav link's word, for the quality filters to drop (a one-word document)
    default = run_steps([HtmlExtractor()], [html_doc(p, id=str(i)) for i, p in enumerate(pages)])
    assert [d["id"] for d in default.rejected] == ["0", "1"]
    assert [len(d["text"].split()) for d in default.kept] == [1]


@pytest.mark.parametrize("fast", [True, False])
def test_broken_html_rejects_only_that_document(fast: bool):
    broken = [
        "<div>" * 50_000 + "deeply nested text",  # deeper than lxml will go
        "\x00\x01\x02<<<>>><html<body</p>" + "\ufffd" * 100,
        b"\x89PNG\r\n\x1a\n" + os.urandom(500),  # an image where HTML should be
    ]
    docs = [html_doc(news_page(), id="good-1")]
    docs += [html_doc(b, id=f"broken-{i}") for i, b in enumerate(broken)]
    docs += [html_doc(news_page(), id="good-2")]
    result = run_steps([HtmlExtractor(ExtractConfig(fast=fast))], docs)
    kept = [d["id"] for d in result.kept]
    assert kept[0] == "good-1" and kept[-1] == "good-2" and not result.errors
    assert {d["reason"] for d in result.rejected} <= {"empty_extraction", "extraction_error"}
    if fast:
        assert kept == ["good-1", "good-2"]
        assert sorted(d["id"] for d in result.rejected) == ["broken-0", "broken-1", "broken-2"]
    else:  # the fallback extractors may return the junk's characters, never a real document's words
        junk = [d for d in result.kept if d["id"].startswith("broken")]
        assert all(len(d["text"].split()) <= 3 for d in junk), [d["text"][:80] for d in junk]


def test_an_extractor_crash_rejects_only_that_document(monkeypatch):
    real = extract_module.extract_text

    def flaky(html, cfg):
        if "EXPLODE" in html:
            raise RuntimeError("parser exploded")
        return real(html, cfg)

    monkeypatch.setattr(extract_module, "extract_text", flaky)
    docs = [html_doc(news_page(), id="a"), html_doc("<p>EXPLODE</p>", id="b"), html_doc(news_page(), id="c")]
    result = run_steps([HtmlExtractor(ExtractConfig(timeout_mode="signal"))], docs)
    assert [d["id"] for d in result.kept] == ["a", "c"]
    assert [(d["id"], d["reason"]) for d in result.rejected] == [("b", "extraction_error")]
    assert "parser exploded" in result.rejected[0]["detail"]


@pytest.fixture
def slow_marker(monkeypatch):
    """Documents containing SLOW take a minute to extract (deterministic, unlike a big page)."""
    import time

    real = extract_module.extract_text
    real(news_page(), ExtractConfig())  # warm trafilatura up so the first real page is fast

    def slow(html, cfg):
        if "SLOW" in html:
            time.sleep(60)
        return real(html, cfg)

    monkeypatch.setattr(extract_module, "extract_text", slow)  # a forked sandbox inherits it


@pytest.mark.parametrize("mode", ["signal", "process"])
def test_tiny_time_limit_on_a_big_page(mode):
    step = HtmlExtractor(ExtractConfig(timeout_s=0.005, timeout_mode=mode))
    try:
        result = run_steps([step], [html_doc(big_page(), id="big")])
    finally:
        step.close()
    assert [(d["id"], d["reason"]) for d in result.rejected] == [("big", "extraction_timeout")]
    assert "over 0.005 s" in result.rejected[0]["detail"]


@pytest.mark.parametrize("mode", ["signal", "process"])
def test_time_limit_drops_only_the_slow_documents(mode, slow_marker):
    step = HtmlExtractor(ExtractConfig(timeout_s=0.3, timeout_mode=mode))
    docs = [html_doc(news_page() if i % 2 else "<p>SLOW</p>", id=str(i)) for i in range(4)]
    try:
        result = run_steps([step], docs)
        sandbox = step._sandbox  # close() lets go of it
    finally:
        step.close()
    assert [(d["id"], d["reason"]) for d in result.rejected] == [
        ("0", "extraction_timeout"),
        ("2", "extraction_timeout"),
    ]
    assert [d["id"] for d in result.kept] == ["1", "3"]
    if mode == "process":  # each overrun killed the extractor process, and a new one took the next page
        assert sandbox is not None and sandbox.restarts == 2
        assert sandbox.process is None  # closed: no child process left behind
    else:
        assert sandbox is None  # the signal mode starts no process


def test_time_limit_off_the_main_thread_uses_the_sandbox(slow_marker):
    """Ray actors run map_batches UDFs on a worker thread, where SIGALRM cannot be used."""
    step = HtmlExtractor(ExtractConfig(timeout_s=0.3))  # timeout_mode auto

    def work() -> tuple[list, list, bool]:
        assert threading.current_thread() is not threading.main_thread()
        result = run_steps([step], [html_doc("<p>SLOW</p>", id="slow"), html_doc(news_page(), id="news")])
        return (
            [d["reason"] for d in result.rejected],
            [d["id"] for d in result.kept],
            step._sandbox is not None,
        )

    with ThreadPoolExecutor(1) as pool:
        rejected, kept, sandboxed = pool.submit(work).result()
    step.close()
    assert (rejected, kept, sandboxed) == (["extraction_timeout"], ["news"], True)


def test_signal_mode_off_the_main_thread_is_a_clear_error():
    step = HtmlExtractor(ExtractConfig(timeout_mode="signal"))
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(run_steps, [step], [html_doc(news_page())]).result()
    assert result.rejected[0]["reason"] == "extraction_error"
    assert "main thread" in result.rejected[0]["detail"]


def test_a_dying_sandbox_process_rejects_one_document_and_is_replaced(monkeypatch):
    real = extract_module.extract_text

    def fatal(html, cfg):
        if "SEGFAULT" in html:
            os._exit(139)  # what a crashing C parser looks like from outside
        return real(html, cfg)

    monkeypatch.setattr(extract_module, "extract_text", fatal)  # the forked child inherits the patch
    step = HtmlExtractor(ExtractConfig(timeout_mode="process", timeout_s=30))
    docs = [html_doc("<p>SEGFAULT</p>", id="bad"), html_doc(news_page(), id="good")]
    try:
        result = run_steps([step], docs)
    finally:
        step.close()
    assert [(d["id"], d["reason"]) for d in result.rejected] == [("bad", "extraction_error")]
    assert "died" in result.rejected[0]["detail"]
    assert [d["id"] for d in result.kept] == ["good"]


def test_real_page_agrees_with_common_crawls_wet_text(shared_data):
    """Our text of the whirlwind page is (nearly) a subset of Common Crawl's own WET text of it."""
    folder = shared_data / "crawl" / "commoncrawl_whirlwind"
    (page,) = read_file(InputFile(str(folder / "whirlwind.warc.gz")))
    (wet,) = read_file(InputFile(str(folder / "whirlwind.warc.wet.gz")))
    result = run_steps([HtmlExtractor()], [page])
    (doc,) = result.kept
    ours, theirs = words(doc["text"]), words(wet["content"])
    assert "escopete" in ours
    assert len(ours & theirs) / len(ours) > 0.9
    assert len(ours) < len(theirs)  # precision first: the menus in the WET text are not in ours


def test_real_crawl_files_extract_without_errors(shared_data):
    pages = [
        r
        for name in (
            "commoncrawl_resiliparse/warcfile.warc.gz",
            "clueweb09_resiliparse/clueweb-quirk.warc.gz",
        )
        for r in read_file(InputFile(str(shared_data / "crawl" / name)))
    ]
    result = run_steps([HtmlExtractor()], pages)
    assert len(result.kept) + len(result.rejected) == len(pages) == 45 and not result.errors
    assert len(result.kept) >= 30
    assert {d["reason"] for d in result.rejected} <= {"empty_extraction"}


@pytest.mark.slow
def test_in_ray_actor_pool(ray_session):
    """The real setting: a class UDF on an actor pool, where the time limit must use the sandbox."""
    import ray

    class Extract:
        def __init__(self) -> None:
            import time

            from pipelines.clean import extract as module

            real = module.extract_text

            def slow(html, cfg):  # deterministic slowness, inherited by the forked sandbox
                if "SLOW" in html:
                    time.sleep(60)
                return real(html, cfg)

            module.extract_text = slow
            self.step = HtmlExtractor(ExtractConfig(timeout_s=1.0))

        def __call__(self, batch: dict) -> dict:
            assert threading.current_thread() is not threading.main_thread()  # hence the sandbox
            docs = [
                {"id": i, "content": c, "content_type": "html"}
                for i, c in zip(batch["id"], batch["content"], strict=True)
            ]
            result = run_steps([self.step], docs)
            outcome = {d["id"]: "kept" for d in result.kept} | {d["id"]: d["reason"] for d in result.rejected}
            return {"id": batch["id"], "outcome": [outcome[i] for i in batch["id"]]}

    items = [
        {"id": "slow", "content": "<p>SLOW</p>"},
        {"id": "empty", "content": "<html></html>"},
        {"id": "news", "content": news_page()},
    ]
    ds = ray.data.from_items(items).map_batches(
        Extract, compute=ray.data.ActorPoolStrategy(size=1), batch_size=3
    )
    assert {r["id"]: r["outcome"] for r in ds.take_all()} == {
        "slow": "extraction_timeout",
        "empty": "empty_extraction",
        "news": "kept",
    }
