"""Text statistics shared by the quality filters: one tokenizer, word counts, fast n-gram statistics.

FineWeb ran its quality filters (through datatrove 0.10) on the words of spaCy's blank English
tokenizer. Running spaCy per document is most of datatrove's cost, so here one compiled regex
follows spaCy's rules closely (on the C4 sample the token counts differ by 0.1% on average): words
keep their inner punctuation (``3.5``, ``1,000``, ``IL-3``, ``a.b@c.org``), dotted abbreviations and
titles keep their period (``U.S.``, ``Mr.``), contraction suffixes are their own token, and every
other punctuation mark is a token (``...`` and ``--`` stay whole). Punctuation tokens count as words,
as they do in datatrove, which matters for the ratios (hashes per word, alphabetic words per word,
newlines per word). ``benchmarks/quality_filters.py`` measures how often the decisions agree.

N-gram statistics hash each token once (Python's own string hash) and combine the hashes of
consecutive tokens with numpy, so no n-gram string is ever built.
"""

from __future__ import annotations

import re
import sys
from array import array
from collections import OrderedDict
from functools import cache

import numpy as np
import regex

# A word is a run of word characters joined by punctuation without spaces ("3.5", "1,000", "IL-3",
# "11/02/2006", "a.b@c.org", "t(8;21)"), as spaCy's infix rules leave them. Like spaCy, these split:
# a hyphen before a letter or between digits ("well-known", "888-459-0005"), "/ : < > =" before a
# letter ("AML1/ETO"), "." before a capital or another "." ("end.Next", "so...what"), "," before a
# letter, "+ * ^" between digits; a contraction suffix is its own token ("didn't" -> didn, 't: as
# many tokens and characters as spaCy's did, n't).
_LETTER = r"[^\W\d_]"
_JOINER = (
    r"(?:[^\s\w'’.,:/<>=+*^-]"
    r"|\.(?![A-Z.])"
    rf"|,(?!{_LETTER})"
    rf"|://|[:/<>=](?!{_LETTER})"
    rf"|(?<={_LETTER})-(?=\d)"
    r"|(?<!\d)[+*^]|[+*^](?!\d)"
    r"|['’](?!(?i:s|t|re|ve|ll|d|m)\b))"
)
_TOKEN = re.compile(
    r"(?:[^\W\d_]\.){2,}"  # dotted abbreviations: U.S., e.g.
    r"|(?=[A-Zv])(?:(?:Mrs|Mr|Ms|Dr|Prof|Jr|Sr|St|Mt|Co|Inc|Ltd|Corp|vs|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?"
    r"|Oct|Nov|Dec)\.|[A-Z]\.(?=\s+[A-Z]))"  # titles and initials: Mr. J. Smith
    rf"|\w+(?:(?=[^\s\w]){_JOINER}+\w+)*"  # words (the lookahead skips the joiner tests at a space)
    r"|(?<=\w)['’]\w+"  # contraction suffixes: 's 't 're
    r"|\.{2,}|-{2,}"  # ellipsis, dashes
    r"|[^\w\s]"  # any other punctuation mark or symbol, one per token
)

_TOKEN_CACHE: OrderedDict[int, tuple[str, list[str]]] = OrderedDict()
_TOKEN_CACHE_SIZE = 64


def tokenize(text: str) -> list[str]:
    """The words of ``text`` (punctuation marks included, whitespace excluded).

    Consecutive filters usually ask for the same string object; a small cache keyed by identity (and
    holding the string, so its id cannot be reused) avoids tokenizing it twice.
    """
    hit = _TOKEN_CACHE.get(id(text))
    if hit is not None and hit[0] is text:
        return hit[1]
    tokens = _TOKEN.findall(text)
    _TOKEN_CACHE[id(text)] = (text, tokens)
    while len(_TOKEN_CACHE) > _TOKEN_CACHE_SIZE:
        try:
            _TOKEN_CACHE.popitem(last=False)
        except KeyError:  # emptied by another thread meanwhile
            break
    return tokens


def _all_chars() -> str:
    # every code point below U+20000 (all sentence terminators live there), surrogates skipped
    codes = array("I", (c for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF))
    return codes.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be")


@cache
def terminal_punctuation() -> tuple[str, ...]:
    """Characters that end a sentence: Unicode's Sentence_Terminal property (``. ! ? 。 ।`` ...)."""
    return tuple(regex.findall(r"\p{Sentence_Terminal}", _all_chars()))


# Over the tokens joined by single spaces: tokens made only of punctuation, symbols or control
# characters ("...", "--", "$"), and tokens without a letter ("3.5", ",").
_SYMBOL_TOKEN = regex.compile(r"(?<!\S)[\p{P}\p{C}$+<=>^`|~´►━∶]+(?!\S)")
_NO_LETTER_TOKEN = regex.compile(r"(?<!\S)[^\s\p{L}]+(?!\S)")


def word_counts(tokens: list[str]) -> tuple[int, int, int]:
    """(words that are not only punctuation, their total characters, tokens holding a letter).

    Two regex scans over the joined tokens instead of a Python test per token.
    """
    if not tokens:
        return 0, 0, 0
    joined = " ".join(tokens)
    symbols = _SYMBOL_TOKEN.findall(joined)
    n_symbols = len(symbols)
    word_chars = len(joined) - (len(tokens) - 1) - sum(map(len, symbols))
    return len(tokens) - n_symbols, word_chars, len(tokens) - len(_NO_LETTER_TOKEN.findall(joined))


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items equal to an earlier one, their total characters)."""
    if len(set(items)) == len(items):
        return 0, 0
    seen: set[str] = set()
    n_dup = dup_chars = 0
    for item in items:
        if item in seen:
            n_dup += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    return n_dup, dup_chars


_MIX = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit constant (golden ratio), the n-gram hash multiplier


class NGramStats:
    """Character statistics of the word n-grams of one document, computed from token hashes.

    The exact Gopher statistics need a sort per n (top n-gram) or a left-to-right scan (repeated
    n-grams). Most documents are far from the thresholds, and longer n-grams repeat no more than their
    prefixes, so ``*_exceeds`` first try a bound taken from a shorter n-gram already sorted (one sort
    for 2-4, one for 5-10 in the common case) and compute the exact value only when the bound does not
    settle the question.
    """

    def __init__(self, tokens: list[str]) -> None:
        self.n_tokens = len(tokens)
        self.ids = np.fromiter(map(hash, tokens), dtype=np.int64, count=self.n_tokens).view(np.uint64)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=self.n_tokens)
        self.cum_len = np.concatenate(([0], np.cumsum(lengths)))
        self._hashes: dict[int, np.ndarray] = {1: self.ids}
        self._groups: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._max_count: dict[int, int] = {}
        self._repeat_positions: dict[int, np.ndarray] = {}

    def hashes(self, n: int) -> np.ndarray:
        """One 64-bit hash per n-gram (position i covers tokens i..i+n-1)."""
        if n not in self._hashes:
            prev = self.hashes(n - 1)
            with np.errstate(over="ignore"):
                self._hashes[n] = prev[:-1] * _MIX + self.ids[n - 1 :]
        return self._hashes[n]

    def lengths(self, n: int) -> np.ndarray:
        """Characters of each n-gram's tokens (no separators)."""
        return self.cum_len[n:] - self.cum_len[:-n]

    def groups(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions sorted by n-gram, keeping positions ascending within a group; group starts in
        that order; group sizes)."""
        if n not in self._groups:
            h = self.hashes(n)
            order = np.argsort(h, kind="stable")
            h_sorted = h[order]
            starts = np.flatnonzero(np.concatenate(([True], h_sorted[1:] != h_sorted[:-1])))
            counts = np.diff(np.append(starts, len(h)))
            self._groups[n] = (order, starts, counts)
            self._max_count[n] = int(counts.max()) if len(counts) else 0
        return self._groups[n]

    def repeat_positions(self, n: int) -> np.ndarray:
        """Positions whose n-gram already occurred earlier."""
        if n not in self._repeat_positions:
            order, starts, _ = self.groups(n)
            first = np.zeros(len(order), dtype=bool)
            first[starts] = True
            self._repeat_positions[n] = order[~first]
        return self._repeat_positions[n]

    def top_ngram_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram (tokens joined with spaces) times its count.

        Ties go to the n-gram seen first, as ``collections.Counter.most_common`` does.
        """
        if self.n_tokens < n:
            return 0
        order, starts, counts = self.groups(n)
        top = counts.max()
        i = int(order[starts[counts == top]].min())
        return int(self.cum_len[i + n] - self.cum_len[i] + n - 1) * int(top)

    def top_ngram_exceeds(self, n: int, max_chars: float) -> bool:
        """Whether ``top_ngram_chars(n) > max_chars``."""
        if self.n_tokens < n:
            return False
        shorter = [self._max_count[k] for k in self._max_count if k < n]
        if shorter:  # an n-gram occurs at most as often as its (n-1)-gram prefix
            if min(shorter) * (int(self.lengths(n).max()) + n - 1) <= max_chars:
                return False
        return self.top_ngram_chars(n) > max_chars

    def duplicate_ngram_chars(self, n: int, stop_above: float | None = None) -> int:
        """Characters (without spaces) of n-grams that repeat an earlier one, scanning left to right and
        jumping over a repeated n-gram so overlapping repeats are not counted twice (Gopher, Table A1).

        Only positions whose n-gram occurs more than once can be counted or matter to the scan, so
        the loop visits just those. With ``stop_above`` the scan stops once the count passes it.
        """
        if self.n_tokens < n + 1:
            return 0
        order, starts, counts = self.groups(n)
        multi = np.sort(order[np.repeat(counts > 1, counts)]).tolist()
        if not multi:
            return 0
        hashes = self.hashes(n)[multi].tolist()
        cum = self.cum_len.tolist()
        seen: set[int] = set()
        repeated = resume_at = 0
        for i, h in zip(multi, hashes, strict=True):
            if i < resume_at:
                continue
            if h in seen:
                repeated += cum[i + n] - cum[i]
                resume_at = i + n
                if stop_above is not None and repeated > stop_above:
                    break
            else:
                seen.add(h)
        return repeated

    def duplicate_ngrams_exceed(self, n: int, max_chars: float) -> bool:
        """Whether ``duplicate_ngram_chars(n) > max_chars``.

        The scan only counts n-grams that repeat an earlier one, and a repeated n-gram starts with a
        repeated k-gram for every k < n, so the characters of the n-grams at the repeat positions of
        any k <= n bound it from above.
        """
        if self.n_tokens < n + 1:
            return False
        for k in sorted({max((k for k in self._groups if k <= n), default=n), n}):
            positions = self.repeat_positions(k)
            if k < n:
                positions = positions[positions <= self.n_tokens - n]
            if int(self.lengths(n)[positions].sum()) <= max_chars:
                return False
        return self.duplicate_ngram_chars(n, stop_above=max_chars) > max_chars
