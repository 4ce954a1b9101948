"""A BM25 index over a document collection: what the search tool answers from. No Ray here.

    from lm.search_index import SearchIndex
    index = SearchIndex.build(documents)              # dicts with "text" (and "title", "id", "url")
    index.search("Noril Clock inventor", k=3)         # [Hit(doc_id, title, text, score), ...]
    index.answer("Noril Clock inventor")              # the tool's reply: the hits as short text
    index.save("runs/tiny/search"); SearchIndex.load("runs/tiny/search")

Scoring is ``bm25s`` (Lucene's BM25 variant, k1=1.5, b=0.75) over lower-cased word tokens with
English stop words removed and Snowball (PyStemmer) stemming, so "invented" finds "inventor"'s page.
Documents are split into passages of about ``passage_words`` words at paragraph breaks (a paragraph
longer than that is split by words), each indexed with its document's title, so a hit is the part of
a page that matched: what a small model's context has room for. ``passage_words=0`` indexes whole
documents.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lm import atomic

FORMAT = "raychat-search-index-v1"
META_FILE = "raychat_search.json"
PASSAGES_FILE = "passages.jsonl"
MAX_QUERY_CHARS = 1000


class SearchIndexError(ValueError):
    """An index that cannot be built or loaded, described for a person."""


@dataclass(frozen=True)
class Passage:
    doc_id: str
    title: str
    text: str
    url: str = ""


@dataclass(frozen=True)
class Hit:
    doc_id: str
    title: str
    text: str
    score: float
    url: str = ""


class SearchIndex:
    def __init__(self, retriever: Any, passages: list[Passage], settings: dict[str, Any]) -> None:
        self.retriever = retriever
        self.passages = passages
        self.settings = settings
        self._stemmer = _stemmer(settings.get("language"))

    @classmethod
    def build(
        cls,
        documents: Iterable[Mapping[str, Any]],
        passage_words: int = 80,
        language: str | None = "english",
        text_field: str = "text",
        title_field: str = "title",
        id_field: str = "id",
        url_field: str = "url",
    ) -> SearchIndex:
        """Index ``documents`` (mappings with a text field; title, id and url are optional, the id
        defaults to the document's position)."""
        import bm25s

        passages: list[Passage] = []
        for i, doc in enumerate(documents):
            text = doc.get(text_field)
            if not isinstance(text, str) or not text.strip():
                continue
            title = str(doc.get(title_field) or "")
            doc_id = str(doc.get(id_field) if doc.get(id_field) is not None else i)
            url = str(doc.get(url_field) or "")
            passages += [Passage(doc_id, title, chunk, url) for chunk in split_passages(text, passage_words)]
        if not passages:
            raise SearchIndexError(f"no documents with a non-empty {text_field!r} field to index")
        settings = {
            "passage_words": passage_words,
            "language": language,
            "documents": len({p.doc_id for p in passages}),
        }
        stemmer = _stemmer(language)
        corpus = [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]
        tokens = bm25s.tokenize(
            corpus, stopwords="en" if language == "english" else None, stemmer=stemmer, show_progress=False
        )
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return cls(retriever, passages, settings)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SearchIndex:
        import bm25s

        d = Path(directory)
        try:
            meta = json.loads((d / META_FILE).read_text())
        except FileNotFoundError:
            raise SearchIndexError(f"{d} holds no search index ({META_FILE} missing)") from None
        except json.JSONDecodeError as e:
            raise SearchIndexError(f"{d / META_FILE} is not valid JSON: {e}") from None
        if meta.get("format") != FORMAT:
            raise SearchIndexError(f"{d / META_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}")
        with open(d / PASSAGES_FILE) as f:
            passages = [Passage(**json.loads(line)) for line in f if line.strip()]
        retriever = bm25s.BM25.load(str(d), show_progress=False)
        if retriever.scores["num_docs"] != len(passages):
            raise SearchIndexError(
                f"{d}: the index has {retriever.scores['num_docs']} passages, {PASSAGES_FILE} {len(passages)}"
            )
        return cls(retriever, passages, meta["settings"])

    def save(self, directory: str | os.PathLike[str]) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(d), show_progress=False)
        with atomic.atomic_path(d / PASSAGES_FILE) as tmp, open(tmp, "w") as f:
            for p in self.passages:
                f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        # the metadata last: a directory with it is complete
        meta = {"format": FORMAT, "settings": self.settings, "passages": len(self.passages)}
        atomic.write_json(d / META_FILE, meta, default=None)
        return d

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` best passages with a positive score (fewer when fewer words match), best first."""
        import bm25s

        language = self.settings.get("language")
        tokens = bm25s.tokenize(
            [query[:MAX_QUERY_CHARS]],
            stopwords="en" if language == "english" else None,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        if not tokens[0]:
            return []
        found, scores = self.retriever.retrieve(tokens, k=min(k, len(self.passages)), show_progress=False)
        hits = []
        for i, score in zip(found[0].tolist(), scores[0].tolist(), strict=True):
            if score > 0:
                p = self.passages[i]
                hits.append(Hit(p.doc_id, p.title, p.text, round(float(score), 4), p.url))
        return hits

    def answer(self, query: str, k: int = 3, max_chars: int = 400) -> str:
        """The search tool's reply: each hit as ``[n] title: text`` (text cut to ``max_chars`` at a
        word), or a sentence saying nothing matched."""
        if not query.strip():
            return "error: empty search query"
        hits = self.search(query, k)
        if not hits:
            return "no results"
        return "\n".join(
            f"[{n}] {h.title + ': ' if h.title else ''}{shorten(h.text, max_chars)}"
            for n, h in enumerate(hits, 1)
        )


def split_passages(text: str, words: int) -> list[str]:
    """Paragraphs packed into passages of at most ``words`` words (longer paragraphs split by words);
    ``words`` 0 keeps the text whole."""
    text = text.strip()
    if words <= 0:
        return [text] if text else []
    passages: list[str] = []
    current: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", text):
        tokens = para.split()
        if not tokens:
            continue
        if size + len(tokens) > words and current:
            passages.append("\n\n".join(current))
            current, size = [], 0
        if len(tokens) > words:
            for start in range(0, len(tokens), words):
                passages.append(" ".join(tokens[start : start + words]))
            continue
        current.append(" ".join(tokens))
        size += len(tokens)
    if current:
        passages.append("\n\n".join(current))
    return passages


def shorten(text: str, max_chars: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``max_chars`` characters (with "...")."""
    flat = " ".join(text.split())
    if len(flat) <= max_chars:
        return flat
    cut = flat[: max(0, max_chars - 3)].rsplit(" ", 1)[0]
    return cut + "..."


def _stemmer(language: str | None) -> Any:
    if not language:
        return None
    import Stemmer

    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise SearchIndexError(
            f"no stemmer for {language!r}; languages: {', '.join(Stemmer.algorithms())}, or null for none"
        ) from None
