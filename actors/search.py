"""The search tool as a Ray actor: one BM25 index (lm/search_index.py) that every generator queries.

    import ray
    from actors.search import search_tool, start_search_actor
    actor = start_search_actor(corpus="runs/tiny/world/search_index.jsonl")   # or index_dir=..., or both
    hook = search_tool(tokenizer, actor)        # <|search_start|>q<|search_end|> -> <|result_start|>...
    engine.generate(prompts, params, tool_hooks=[hook])

The corpus is any JSONL / JSON / parquet files (globs and folders too) of documents with a text field
(``title``, ``id``, ``url`` optional), or plain text files (``.txt``, ``.md``; one document each, titled
by the file name): the tiny world's search-only index, or a user's collection. With
``index_dir`` the built index is saved there and later actors load it instead of rebuilding. The actor
is named (``name``), so generator pools, Ray Data batch generation and Serve replicas in one cluster
share one index; ``start_search_actor`` returns the running one when it exists.

A search that fails or is slow never crashes a generation: ``search_tool``'s reply is then an
``error: ...`` text the model reads as the result, and generation goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray

from lm.engine import ToolHook, text_tool
from lm.search_index import META_FILE, SearchIndex, SearchIndexError
from pipelines.records import Record, list_files, read_records
from pipelines.train.fingerprints import file_stamp, fingerprint

log = logging.getLogger("raychat")

DEFAULT_NAME = "raychat-search"


class SearchServer:
    """The actor's body (a plain class, so it is testable without Ray)."""

    def __init__(
        self,
        corpus: str | list[str] | None = None,
        index_dir: str | None = None,
        k: int = 3,
        max_chars: int = 400,
        passage_words: int = 80,
        language: str | None = "english",
        text_field: str = "text",
        title_field: str = "title",
        id_field: str = "id",
    ) -> None:
        started = time.perf_counter()
        self.k, self.max_chars = k, max_chars
        self.fields = (id_field, title_field, text_field)  # what a plain text file's record is keyed by
        self.problems: list[str] = []
        files: list[str] = []
        if corpus:
            files, missing = list_files(corpus)
            self.problems += [str(p) for p in missing]
        built_from = _built_from(files, passage_words, language, self.fields)
        saved = self._saved(index_dir, built_from if corpus else None)
        if saved is not None:
            self.index, source = saved, f"loaded from {index_dir}"
        elif corpus:
            docs = self._documents(corpus, files)
            self.index = SearchIndex.build(
                docs,
                passage_words=passage_words,
                language=language,
                text_field=text_field,
                title_field=title_field,
                id_field=id_field,
            )
            self.index.settings["built_from"] = built_from
            if index_dir:
                self.index.save(index_dir)
            source = f"built from {len(docs)} documents"
        else:
            raise SearchIndexError("give a corpus to index, or an index_dir holding a saved index")
        self.seconds = round(time.perf_counter() - started, 3)
        log.info("search index %s: %d passages in %.1fs", source, len(self.index), self.seconds)

    @staticmethod
    def _saved(index_dir: str | None, built_from: str | None) -> SearchIndex | None:
        """The index saved in ``index_dir``, unless it was built from other files or settings than the
        corpus given now (``built_from``; None: no corpus given, the saved index is what was asked for).
        A redone world or another corpus rewrites the documents; the old index would answer from the
        old ones, in GRPO rollouts, chat and serving alike."""
        if not (index_dir and (Path(index_dir) / META_FILE).is_file()):
            return None
        index = SearchIndex.load(index_dir)
        if built_from is None or index.settings.get("built_from") == built_from:
            return index
        log.info("search index in %s was built from other documents or settings: rebuilding it", index_dir)
        return None

    def _documents(self, corpus: str | list[str], files: list[str]) -> list[dict[str, Any]]:
        if not files:
            raise SearchIndexError(f"search corpus {corpus!r}: no data files ({'; '.join(self.problems)})")
        docs = []
        for path in files:
            for item in read_records(path, self.fields):
                if isinstance(item, Record) and isinstance(item.value, dict):
                    docs.append(item.value)
                else:
                    self.problems.append(
                        str(item) if not isinstance(item, Record) else f"{item.where}: not an object"
                    )
        if self.problems:
            log.warning("search corpus: %d records skipped (first: %s)", len(self.problems), self.problems[0])
        return docs

    def search(self, query: str, k: int | None = None) -> list[dict[str, Any]]:
        return [asdict(h) for h in self.index.search(query, k or self.k)]

    def answer(self, query: str) -> str:
        return self.index.answer(query, self.k, self.max_chars)

    def info(self) -> dict[str, Any]:
        return {
            "passages": len(self.index),
            "settings": self.index.settings,
            "build_seconds": self.seconds,
            "skipped_records": len(self.problems),
        }


def _built_from(files: list[str], passage_words: int, language: str | None, fields: tuple[str, ...]) -> str:
    """The corpus files (path, size, modification time) and the settings an index is built with, as
    one short hash: what a saved index must match to be reused instead of rebuilt."""
    parts: list[str] = [str(passage_words), str(language), *fields]
    for name in sorted(files):
        try:
            parts.append(f"{os.path.abspath(name)}:{file_stamp(name)}")
        except OSError:  # a remote path (s3://...): its name only
            parts.append(name)
    return fingerprint(*parts)


SearchActor = ray.remote(SearchServer)


def start_search_actor(
    corpus: str | list[str] | None = None,
    index_dir: str | None = None,
    name: str | None = DEFAULT_NAME,
    num_cpus: float = 0.25,
    max_concurrency: int = 8,
    wait: bool = True,
    **settings: Any,
) -> Any:
    """The named search actor, started (and its index built or loaded) unless it is already running.
    ``settings`` are ``SearchServer``'s (k, max_chars, passage_words, language, field names).
    ``wait=False`` returns at once: the caller starts its other actors meanwhile (each is a new
    process, seconds on a small machine), then calls ``search_ready``."""
    options: dict[str, Any] = {"num_cpus": num_cpus, "max_concurrency": max_concurrency}
    if name:
        options |= {"name": name, "get_if_exists": True}
    actor = SearchActor.options(**options).remote(corpus=corpus, index_dir=index_dir, **settings)
    return search_ready(actor) if wait else actor


def search_ready(actor: Any) -> Any:
    """``actor`` once its index is up; a bad corpus fails here, with its reason, not at the first search."""
    ray.get(actor.info.remote())
    return actor


def search_tool(tokenizer: Any, actor: Any, timeout_s: float = 10.0) -> ToolHook:
    """A ``ToolHook`` for ``<|search_start|> ... <|search_end|>`` answered by the search actor; a failed
    or slow search is answered ``error: ...`` (the model sees it; the request goes on).

    The reply is a Future (lm/engine/tools.py): while the search runs only that sample waits, the
    engine keeps stepping the rest of its batch."""

    def answer(query: str) -> Future:
        reply: Future = Future()

        def settle(text: str) -> None:
            with contextlib.suppress(InvalidStateError):  # the first of answer and timeout wins
                reply.set_result(text)

        def done(result: Future) -> None:
            try:
                settle(result.result())
            except ray.exceptions.RayActorError:
                settle("error: the search service is unavailable")
            except Exception as e:  # noqa: BLE001 - whatever went wrong, the model gets a reply
                settle(f"error: search failed ({type(e).__name__})")

        try:
            ref = actor.answer.remote(query)
        except Exception as e:  # noqa: BLE001 - a dead handle: the model gets a reply
            settle(f"error: search failed ({type(e).__name__})")
            return reply

        def expire() -> None:
            if not reply.done():
                settle(f"error: search timed out after {timeout_s:g} s")  # before the cancel's error
                ray.cancel(ref)  # a queued search is dropped; one already running finishes unread

        timer = threading.Timer(timeout_s, expire)
        timer.daemon = True
        timer.start()
        reply.add_done_callback(lambda _: timer.cancel())
        ref.future().add_done_callback(done)
        return reply

    # the engine's own deadline is a backstop only: ours answers "error: ..." first
    return text_tool(tokenizer, "<|search_start|>", "<|search_end|>", answer, timeout_s=timeout_s + 30.0)
