"""URL filtering, FineWeb's first step: blocklisted domains and URLs, and adult words in the URL.

Blocklists use the UT1 layout (Université Toulouse 1 Capitole, the lists FineWeb used): a folder per
category (``adult``, ``phishing``, ``gambling``...) holding a ``domains`` file (one domain per line; a
domain also blocks its subdomains) and/or a ``urls`` file (``host/path`` per line, no scheme; an entry
blocks that page and everything below it), either possibly gzipped (``domains.gz``). Users add their
own entries and an allow list that wins over everything.

URL words follow datatrove's ``URLFilter`` (the URL is split into lower-case alphanumeric words): one
banned word drops the document, ``soft_word_threshold`` soft-banned words together drop it, and a
banned subword anywhere in the URL with its punctuation removed drops it. The default word lists are
short ones written for this project (explicit adult terms; the soft list holds words that are only
suspicious together).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.clean.filters.base import Doc, Filter, config_key
from pipelines.clean.filters.config import UrlFilterConfig

USER_CATEGORY = "user"


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _read_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def _list_file(category_dir: Path, kind: str) -> Path | None:
    for name in (kind, f"{kind}.gz"):
        if (category_dir / name).is_file():
            return category_dir / name
    return None


def normalize_domain(domain: str) -> str:
    return domain.strip().lower().rstrip(".").removeprefix("www.")


def normalize_url_entry(url: str) -> str:
    """``host/path`` in lower case, without scheme, ``www.``, port or trailing slash."""
    url = url.strip().lower()
    if "://" in url:
        url = url.split("://", 1)[1]
    host, _, path = url.partition("/")
    host = normalize_domain(host.split("@")[-1].split(":")[0])
    return f"{host}/{path}".rstrip("/") if path.strip("/") else host


def _parent_domains(host: str) -> Iterator[str]:
    """example.co.uk, co.uk for a.example.co.uk -> the host itself first, then each parent (2+ labels)."""
    parts = host.split(".")
    for i in range(len(parts) - 1):
        yield ".".join(parts[i:])
    if len(parts) == 1:
        yield host


class UrlFilter(Filter):
    """Drops documents whose URL is blocklisted or names adult content."""

    name = "url"

    def __init__(self, config: UrlFilterConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or UrlFilterConfig()
        self.domains: dict[str, str] = {}  # domain -> category
        self.urls: dict[str, str] = {}  # host/path -> category
        self._load_blocklists(cfg.blocklists, cfg.categories)
        for domain in cfg.extra_domains:
            self.domains.setdefault(normalize_domain(domain), USER_CATEGORY)
        for url in cfg.extra_urls:
            self.urls.setdefault(normalize_url_entry(url), USER_CATEGORY)
        self.allow = frozenset(normalize_domain(d) for d in cfg.allow_domains)
        self.banned_words = frozenset(w.lower() for w in cfg.banned_words)
        self.soft_banned_words = frozenset(w.lower() for w in cfg.soft_banned_words)
        subwords = sorted({_NON_ALNUM.sub("", w.lower()) for w in cfg.banned_subwords} - {""})
        self._subwords = re.compile("|".join(map(re.escape, subwords))) if subwords else None

    def _load_blocklists(self, folders: Iterable[str], categories: list[str] | None) -> None:
        found: set[str] = set()
        for folder in folders:
            root = Path(folder).expanduser()
            if not root.is_dir():
                raise config_key(
                    FileNotFoundError(f"url filter: blocklist folder {str(folder)!r} does not exist"),
                    "blocklists",
                )
            category_dirs = sorted(
                d
                for d in root.iterdir()
                if d.is_dir() and (_list_file(d, "domains") or _list_file(d, "urls"))
            )
            if not category_dirs:
                raise config_key(
                    ValueError(
                        f"url filter: {str(folder)!r} has no category folders with `domains` or `urls` "
                        "files (expected the UT1 layout: <folder>/<category>/domains)"
                    ),
                    "blocklists",
                )
            for category_dir in category_dirs:
                category = category_dir.name
                found.add(category)
                if categories is not None and category not in categories:
                    continue
                if path := _list_file(category_dir, "domains"):
                    for line in _read_lines(path):
                        self.domains.setdefault(normalize_domain(line), category)
                if path := _list_file(category_dir, "urls"):
                    for line in _read_lines(path):
                        self.urls.setdefault(normalize_url_entry(line), category)
        if categories is not None:
            missing = sorted(set(categories) - found)
            if missing:
                raise config_key(
                    ValueError(
                        f"url filter: categories {missing} not found in the blocklists {list(folders)}; "
                        f"found: {sorted(found)}"
                    ),
                    "categories",
                )

    def decide(self, doc: Doc) -> str | None:
        url = doc.get("url") or ""
        if not url:
            self.counts["no_url"] += 1
            return None
        try:
            parts = urlsplit(url.strip() if "://" in url else f"http://{url.strip()}")
            host = normalize_domain(parts.hostname or "")
        except ValueError:
            self.counts["unparsable_url"] += 1
            return None

        parents = list(_parent_domains(host)) if host else []
        if any(d in self.allow for d in parents):
            return None
        for domain in parents:
            category = self.domains.get(domain)
            if category is not None:
                return f"blocklisted_domain:{category}"
        if self.urls and host:
            path = parts.path.lower().rstrip("/")
            candidate = host + path
            if parts.query and (category := self.urls.get(f"{candidate}?{parts.query.lower()}")):
                return f"blocklisted_url:{category}"
            while True:  # the page, then each folder above it
                category = self.urls.get(candidate)
                if category is not None:
                    return f"blocklisted_url:{category}"
                if "/" not in candidate:
                    break
                candidate = candidate.rsplit("/", 1)[0]

        lowered = url.lower()
        words = set(_NON_ALNUM.split(lowered))
        if not self.banned_words.isdisjoint(words):
            return "banned_word"
        if len(self.soft_banned_words.intersection(words)) >= self.config.soft_word_threshold:
            return "soft_banned_words"
        if self._subwords is not None and self._subwords.search(_NON_ALNUM.sub("", lowered)):
            return "banned_subword"
        return None
