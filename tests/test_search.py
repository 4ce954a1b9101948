"""The search tool: the BM25 index on the tiny world's search-only documents, the Ray actor, its hook inside
a TorchEngine run (and the calculator's), with a tiny model scripted to emit the tool-call tokens."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from engine_helpers import scripted_model, word_tokenizer

from lm.chat import ChatFormat
from lm.engine import SamplingParams, TorchEngine
from lm.search_index import SearchIndex, SearchIndexError, shorten, split_passages
from lm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from pipelines.world.config import WorldConfig
    from pipelines.world.generate import generate

    out = tmp_path_factory.mktemp("world")
    generate(0, WorldConfig(num_pages=200), out, show_progress=False)
    docs = [json.loads(line) for line in (out / "search_index.jsonl").read_text().splitlines()]
    questions = [json.loads(line) for line in (out / "questions" / "search.jsonl").read_text().splitlines()]
    return {"out": out, "docs": docs, "questions": questions}


@pytest.fixture(scope="module")
def index(world) -> SearchIndex:
    return SearchIndex.build(world["docs"])


def test_the_world_index_finds_the_document_of_each_search_question(world, index) -> None:
    questions = world["questions"]
    assert len(questions) > 100
    top1 = sum(index.search(q["question"], 1)[0].doc_id == q["doc_id"] for q in questions)
    top3 = sum(any(h.doc_id == q["doc_id"] for h in index.search(q["question"], 3)) for q in questions)
    assert top1 / len(questions) >= 0.95 and top3 / len(questions) >= 0.98
    answered = sum(q["short_answer"].lower() in index.answer(q["question"]).lower() for q in questions)
    assert answered / len(questions) >= 0.9  # the injected text holds the answer itself


def test_search_only_facts_are_kept_out_of_the_crawl(world) -> None:
    """The index is the only place search facts live (the world writes it apart from the crawl)."""
    import gzip

    crawl = "".join(
        gzip.open(p, "rt", errors="replace").read()
        for p in sorted((world["out"] / "crawl").glob("*.warc.gz"))
    )
    for q in world["questions"][:40]:
        doc = next(d for d in world["docs"] if d["id"] == q["doc_id"])
        assert q["fact_id"] in doc["search_only_facts"]
        assert doc["url"] not in crawl


def test_save_load_and_replies(world, index, tmp_path) -> None:
    index.save(tmp_path / "idx")
    loaded = SearchIndex.load(tmp_path / "idx")
    q = world["questions"][0]["question"]
    assert loaded.search(q) == index.search(q) and len(loaded) == len(index)
    reply = index.answer(q, k=2, max_chars=120)
    lines = reply.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[1] ") and all(len(line) <= 120 + 60 for line in lines)
    assert index.answer("zzzqqq unknownword") == "no results"
    assert index.answer("   ") == "error: empty search query"
    assert index.search("the of and") == []  # stop words only
    with pytest.raises(SearchIndexError, match="holds no search index"):
        SearchIndex.load(tmp_path)
    with pytest.raises(SearchIndexError, match="no documents"):
        SearchIndex.build([{"text": ""}, {"title": "no text"}])


def test_passages_and_shortening() -> None:
    text = "Title\n\n" + " ".join(["a"] * 5) + "\n\n" + " ".join(["b"] * 12) + "\n\nshort end"
    assert split_passages(text, 8) == ["Title\n\na a a a a", "b b b b b b b b", "b b b b", "short end"]
    assert split_passages(text, 0) == [text]
    assert shorten("one two  three\nfour", 12) == "one two..."
    assert shorten("short", 12) == "short"


# -- a tiny model scripted to emit tool calls, and the hooks inside a real TorchEngine run -------------------------


def run_with_tool(tok: Tokenizer, call: list[int], open_token: str, close_token: str, hook, question: str):
    chat = ChatFormat(tok)
    prompt = chat.render_prompt([{"role": "user", "content": question}]).ids
    sp = tok.special_tokens
    steps = [prompt[-1], sp[open_token], *call, sp[close_token]]
    script = dict(zip(steps, steps[1:], strict=False))
    script[sp["<|result_end|>"]] = sp["<|im_end|>"]
    engine = TorchEngine(scripted_model(tok.vocab_size, script), eos_token_ids=[tok.eot_id])
    params = SamplingParams(temperature=0.0, max_tokens=1400, stop_token_ids=chat.stop_token_ids)
    (res,) = engine.generate([prompt], params, tool_hooks=[hook])
    assert res.finish_reason == "stop", res
    return chat, res


def test_calculator_hook_in_an_engine_run() -> None:
    from lm.calculator import calculator_tool

    tok = word_tokenizer([])
    chat, res = run_with_tool(
        tok, tok.encode("6*7"), "<|calc_start|>", "<|calc_end|>", calculator_tool(tok), "6 times 7?"
    )
    parsed = chat.parse_assistant(res.token_ids)
    assert parsed.message["content"] == [{"type": "calc", "expression": "6*7", "result": "42"}]
    assert parsed.finish == "stop" and res.finish_reason == "stop"
    n_forced = len(tok.encode("42")) + 2
    assert res.forced == [False] * 5 + [True] * n_forced + [False]  # the result is injected, not sampled


@pytest.fixture(scope="module")
def search_actor(ray_session, world, tmp_path_factory):
    from actors.search import start_search_actor

    index_dir = tmp_path_factory.mktemp("search") / "index"
    actor = start_search_actor(
        corpus=str(world["out"] / "search_index.jsonl"), index_dir=str(index_dir), name="test-search", k=2
    )
    return actor, index_dir


@pytest.mark.slow
def test_search_actor_answers_and_is_shared_by_name(ray_session, world, search_actor) -> None:
    from actors.search import start_search_actor

    ray = ray_session
    actor, index_dir = search_actor
    q = world["questions"][0]
    reply = ray.get(actor.answer.remote(q["question"]))
    assert reply.startswith("[1] ") and q["short_answer"].lower() in reply.lower()
    hits = ray.get(actor.search.remote(q["question"], 1))
    assert hits[0]["doc_id"] == q["doc_id"]
    info = ray.get(actor.info.remote())
    assert info["passages"] > len(world["docs"]) and (index_dir / "raychat_search.json").is_file()
    again = start_search_actor(corpus="ignored-when-running", name="test-search")
    assert again._actor_id == actor._actor_id
    loaded = start_search_actor(
        index_dir=str(index_dir), name=None, k=2
    )  # an unnamed actor loads the saved index
    assert ray.get(loaded.answer.remote(q["question"])) == reply
    ray.kill(loaded)


@pytest.mark.slow
def test_search_actor_with_a_bad_corpus_fails_at_start_with_the_reason(ray_session, tmp_path) -> None:
    from actors.search import start_search_actor

    with pytest.raises(Exception, match="no data files"):
        start_search_actor(corpus=str(tmp_path / "nothing-*.jsonl"), name=None)


@pytest.mark.slow
def test_a_chat_session_whose_model_fails_ends_the_search_actor_it_started(
    ray_session, world, tmp_path
) -> None:
    """The chat evaluation starts its search actor beside the engine (each a new process): when the
    engine cannot load the model, the session ends the search actor too, and says why."""
    from engine_helpers import tiny_model_dir

    from pipelines.chat_eval import ChatSession
    from pipelines.sft.config import ChatEvalConfig

    def searchers() -> set[str]:
        actors = ray_session._private.state.actors().values()
        return {
            a["ActorID"] for a in actors if a["ActorClassName"] == "SearchServer" and a["State"] != "DEAD"
        }

    model_dir, _ = tiny_model_dir(tmp_path / "model")
    (model_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    before = searchers()
    with pytest.raises(Exception, match="safetensors|header|model"):
        ChatSession(model_dir, ChatEvalConfig(), search_corpus=world["out"] / "search_index.jsonl")
    deadline = time.time() + 30
    while searchers() - before and time.time() < deadline:
        time.sleep(0.2)
    assert not searchers() - before


@pytest.mark.slow
def test_search_hook_in_an_engine_run(ray_session, world, search_actor) -> None:
    from actors.search import search_tool

    actor, _ = search_actor
    q = world["questions"][0]
    word = max(q["entity_name"].split(), key=len)  # the entity's most telling word, one token here
    tok = word_tokenizer([word])
    call = tok.encode(word)
    assert len(call) == 1
    chat, res = run_with_tool(
        tok, call, "<|search_start|>", "<|search_end|>", search_tool(tok, actor), q["question"]
    )
    parsed = chat.parse_assistant(res.token_ids)
    (part,) = parsed.message["content"]
    assert part["type"] == "search" and part["query"] == word and parsed.finish == "stop"
    doc = next(d for d in world["docs"] if d["id"] == q["doc_id"])
    assert part["result"].startswith("[1] " + doc["title"])
    # what the engine produced is exactly what training renders for that message (result masked)
    rendered = chat.render_conversation([{"role": "user", "content": q["question"]}, parsed.message])
    assert rendered.ids[-len(res.token_ids) - 1 : -1] == res.token_ids
    assert [not m for m in rendered.mask[-len(res.token_ids) - 1 : -1]] == res.forced


@pytest.mark.slow
def test_a_slow_or_dead_search_answers_an_error_not_a_crash(ray_session) -> None:
    from actors.search import search_tool

    class _Slow:  # defined here so Ray ships it by value (workers cannot import test modules)
        def answer(self, query: str) -> str:
            time.sleep(30)
            return "too late"

    ray = ray_session
    tok = word_tokenizer([])
    slow = ray.remote(_Slow).options(num_cpus=0).remote()
    ray.get(slow.__ray_ready__.remote(), timeout=60)  # alive: the first answer must be the timeout
    hook = search_tool(tok, slow, timeout_s=0.5)
    reply = hook.callback(None, tok.encode("anything"))  # a Future: the engine keeps stepping meanwhile
    assert not reply.done()
    out = reply.result(timeout=20)
    assert tok.decode(out[1:-1]) == "error: search timed out after 0.5 s"
    ray.kill(slow)
    out = hook.callback(None, tok.encode("anything")).result(timeout=20)
    assert tok.decode(out[1:-1]) == "error: the search service is unavailable"


def test_search_server_counts_bad_corpus_records(tmp_path: Path) -> None:
    from actors.search import SearchServer

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        '{"id": "d1", "title": "Kites", "text": "A kite is a tethered flying toy."}\n{broken\n[1]\n'
    )
    server = SearchServer(corpus=str(corpus), k=1)
    assert server.info()["skipped_records"] == 2
    assert server.answer("flying kite") == "[1] Kites: A kite is a tethered flying toy."
    with pytest.raises(SearchIndexError, match="give a corpus"):
        SearchServer()


def test_a_saved_index_is_rebuilt_when_its_corpus_changes(tmp_path: Path, caplog) -> None:
    """A redone world rewrites the corpus at the same path: the index saved beside the run must not go
    on answering from the old documents (GRPO, chat and serving all pass both corpus and index_dir)."""
    import os

    from actors.search import SearchServer

    corpus, index_dir = tmp_path / "docs.jsonl", str(tmp_path / "index")
    corpus.write_text('{"id": "d1", "title": "Kites", "text": "A kite is a tethered flying toy."}\n')
    first = SearchServer(corpus=str(corpus), index_dir=index_dir, k=1)
    assert first.answer("kite") == "[1] Kites: A kite is a tethered flying toy."
    with caplog.at_level(logging.INFO, logger="raychat"):
        same = SearchServer(corpus=str(corpus), index_dir=index_dir, k=1)  # unchanged: loaded, not rebuilt
    assert "loaded from" in caplog.text and same.answer("kite") == first.answer("kite")

    corpus.write_text('{"id": "d1", "title": "Kites", "text": "A kite is a bird of prey that hovers."}\n')
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="raychat"):
        rebuilt = SearchServer(corpus=str(corpus), index_dir=index_dir, k=1)
    assert "built from other documents" in caplog.text
    assert rebuilt.answer("kite") == "[1] Kites: A kite is a bird of prey that hovers."
    assert SearchServer(index_dir=index_dir, k=1).answer("kite") == rebuilt.answer("kite")  # saved anew
    other = SearchServer(corpus=str(corpus), index_dir=index_dir, k=1, passage_words=5)  # other settings
    assert other.info()["settings"]["passage_words"] == 5


def test_search_server_indexes_a_folder_of_text_files(tmp_path: Path) -> None:
    from actors.search import SearchServer

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kites.md").write_text("# Kites\n\nA kite is a tethered flying toy.")
    (notes / "v2.1 boats.txt").write_text("A junk is a Chinese sailing ship.")
    (notes / "empty.txt").write_text("  \n")
    server = SearchServer(corpus=str(notes), k=1, title_field="name", text_field="body")
    assert server.info()["skipped_records"] == 1  # the empty note, counted
    assert server.answer("sailing ship") == "[1] v2.1 boats: A junk is a Chinese sailing ship."
    assert server.search("tethered kite")[0]["doc_id"] == str(notes / "kites.md")


def test_search_server_skips_a_text_file_with_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """A text file's bad bytes were read as U+FFFD into the index, counted nowhere; now the file is
    skipped and counted as a JSON document is (pipelines/records.py), its first bad byte placed. A
    file in another encoding is no bad file: its charset is detected and it is kept."""
    from actors.search import SearchServer
    from pipelines.records import Problem, read_records

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "kites.txt").write_text("A kite is a tethered flying toy.")
    broken = notes / "boats.txt"  # UTF-8 with one stray byte
    broken.write_bytes("Boats\nA junk, naïve and déjà vu, is a ".encode() + b"\xff" + b"sailing ship.")
    (notes / "cafe.txt").write_bytes("A café sells crème brûlée.".encode("cp1252"))
    (notes / "utf16.txt").write_bytes(b"\xff\xfe" + "A raft floats.".encode("utf-16-le") + b"\x00\xd8")
    (problem,) = read_records(str(broken))
    assert isinstance(problem, Problem) and problem.reason == "invalid_utf8"
    assert "byte 0xff at line 2, column 33" in problem.detail
    (problem,) = read_records(str(notes / "utf16.txt"))
    assert problem.reason == "invalid_utf8" and "not utf-16-le text" in problem.detail
    server = SearchServer(corpus=str(notes), k=3)
    assert server.info()["skipped_records"] == 2
    assert [h["doc_id"] for h in server.search("sailing ship junk raft")] == []
    assert server.answer("crème brûlée") == "[1] cafe: A café sells crème brûlée."
