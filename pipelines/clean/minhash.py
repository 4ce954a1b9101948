"""Text normalization, MinHash signatures and LSH bucket ids, vectorized over a batch of documents.

Why vectorized: deduplication touches every document, so the per-document Python work is kept to
hashing each *distinct* word once; normalization runs in Arrow's C++ string kernels and the 112
permutations are numpy operations over all shingles of a batch at once.

The maths, following FineWeb (datatrove's ``MinhashDedupSignature``):

- text is normalized the way datatrove's ``simplify_text`` does (lowercase, no punctuation, no
  diacritics, digits -> 0, whitespace collapsed) and split into words; shingles are word 5-grams;
- each shingle gets a 32-bit hash ``x``; permutation ``k`` maps it to ``(a_k * x + b_k) mod 2**64``
  and keeps the high 32 bits (Dietzfelbinger's multiply-add-shift family, strongly universal for
  32-bit keys with random 64-bit ``a_k, b_k``), so no 128-bit arithmetic or modulo is needed;
- the signature is the minimum of each permutation over the document's shingles (112 = 14 x 8);
- LSH: the signature is cut into 14 bands of 8 values; each band is hashed, with its band index, to
  one 64-bit bucket id. Two documents become candidates when any band matches. The probability for
  Jaccard similarity ``s`` is ``1 - (1 - s**8)**14``: about 0.92 at s = 0.8 and 0.01 at s = 0.5
  (the curve's midpoint is near (1/14)**(1/8) ~ 0.72).

Documents with fewer words than the shingle size get no signature (as in datatrove): they take
part in exact deduplication only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from pipelines.clean.config import DedupConfig, TextNormConfig

# Removed before shingling: punctuation, symbols, and control characters other than whitespace
# (datatrove's PUNCTUATION list is the same idea, spelled out by hand).
_PUNCT_PATTERN = r"[\p{P}\p{S}\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]+"
# Runs of whitespace, and single whitespace characters other than " ". RE2's \s is ASCII-only, so
# Unicode spaces (NBSP, em space, ...) are listed; one alternation is ~4x faster than r"\s+".
_ONE_SPACE = r"\t\n\v\f\r\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_WHITESPACE_PATTERN = rf"[ {_ONE_SPACE}]{{2,}}|[{_ONE_SPACE}]"
_MASK64 = (1 << 64) - 1
# Salts that keep the three uses of the 64-bit mixer apart.
_BAND_SALT = 0x6A09E667F3BCC908
_EXACT_SALT = 0xBB67AE8584CAA73B
_NGRAM_SALT = 0x3C6EF372FE94F82B


def normalize_texts(texts: pa.Array | pa.ChunkedArray, cfg: TextNormConfig) -> pa.Array:
    """Simplify a column of texts with Arrow's string kernels; nulls become empty strings."""
    arr = pc.fill_null(texts, "")
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if cfg.lowercase:
        arr = pc.utf8_lower(arr)
    if cfg.strip_diacritics:
        arr = pc.replace_substring_regex(
            pc.utf8_normalize(arr, form="NFD"), pattern=r"\p{Mn}+", replacement=""
        )
    if cfg.remove_punctuation:
        arr = pc.replace_substring_regex(arr, pattern=_PUNCT_PATTERN, replacement="")
    if cfg.normalize_numbers:
        arr = pc.replace_substring_regex(arr, pattern=r"\d+", replacement="0")
    if cfg.collapse_whitespace:
        arr = pc.utf8_trim_whitespace(
            pc.replace_substring_regex(arr, pattern=_WHITESPACE_PATTERN, replacement=" ")
        )
    return arr


def text_hashes(normalized: pa.Array) -> np.ndarray:
    """64-bit xxh3 of each normalized text (uint64): the exact-duplicate key."""
    return np.fromiter(
        (xxhash.xxh3_64_intdigest(t) for t in normalized.cast(pa.large_binary()).to_pylist()),
        dtype=np.uint64,
        count=len(normalized),
    )


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective 64-bit mixer, vectorized (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def exact_bucket_ids(hashes: np.ndarray) -> np.ndarray:
    """Bucket id (int64) of each normalized-text hash; odd, so it never equals a band bucket id."""
    return (mix64(hashes ^ np.uint64(_EXACT_SALT)) | np.uint64(1)).view(np.int64)


@dataclass(frozen=True)
class MinHasher:
    """MinHash + LSH banding with fixed parameters; the same seed gives the same buckets everywhere."""

    ngram_size: int = 5
    num_bands: int = 14
    rows_per_band: int = 8
    seed: int = 1
    norm: TextNormConfig = field(default_factory=TextNormConfig)

    def __post_init__(self) -> None:
        if self.ngram_size < 1 or self.num_bands < 1 or self.rows_per_band < 1:
            raise ValueError("ngram_size, num_bands and rows_per_band must all be >= 1")
        rng = np.random.default_rng(self.seed)
        a = rng.integers(0, 2**64, size=self.num_perm, dtype=np.uint64, endpoint=False)
        b = rng.integers(0, 2**64, size=self.num_perm, dtype=np.uint64, endpoint=False)
        object.__setattr__(self, "_a", a)
        object.__setattr__(self, "_b", b)

    @property
    def num_perm(self) -> int:
        return self.num_bands * self.rows_per_band

    def shingles(self, normalized: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """32-bit hashes of every word n-gram of a batch, and the batch row each one belongs to.

        Words are hashed once per distinct word in the batch (Arrow dictionary encoding); an n-gram's
        hash chains the mixer over its words' hashes, so no n-gram string is ever built.
        """
        n = self.ngram_size
        words = pc.utf8_split_whitespace(normalized)
        flat = pc.list_flatten(words)
        parent = pc.list_parent_indices(words).to_numpy()
        nonempty = pc.greater(pc.utf8_length(flat), 0)
        flat = flat.filter(nonempty)
        parent = parent[nonempty.to_numpy(zero_copy_only=False)]
        if len(flat) < n:
            return np.empty(0, np.uint32), np.empty(0, np.int64)
        encoded = flat.dictionary_encode()
        vocab = encoded.dictionary.cast(pa.large_binary()).to_pylist()
        vocab_hash = np.fromiter(
            (xxhash.xxh3_64_intdigest(w, seed=self.seed) for w in vocab), dtype=np.uint64, count=len(vocab)
        )
        word_hash = vocab_hash[encoded.indices.to_numpy()]
        starts = len(word_hash) - n + 1
        h = np.full(starts, _NGRAM_SALT, dtype=np.uint64)
        for j in range(n):
            h = mix64(h ^ word_hash[j : j + starts])
        # an n-gram is valid when all its words come from the same document
        valid = parent[:starts] == parent[n - 1 :]
        return (h[valid] >> np.uint64(32)).astype(np.uint32), parent[:starts][valid].astype(np.int64)

    def signatures(self, normalized: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """MinHash signatures of the rows that have at least one shingle.

        Returns ``(rows, sig)``: the batch rows that got a signature (int64, ascending) and their
        signatures, a ``(len(rows), num_perm)`` uint32 matrix.
        """
        x, parent = self.shingles(normalized)
        if len(x) == 0:
            return np.empty(0, np.int64), np.empty((0, self.num_perm), np.uint32)
        # parent is non-decreasing, so each row's shingles are one contiguous segment
        boundaries = np.flatnonzero(np.diff(parent)) + 1
        seg_starts = np.concatenate(([0], boundaries))
        rows = parent[seg_starts]
        x64 = x.astype(np.uint64)
        sig = np.empty((len(rows), self.num_perm), dtype=np.uint32)
        for k in range(self.num_perm):
            perm = x64 * self._a[k] + self._b[k]
            sig[:, k] = np.minimum.reduceat(perm, seg_starts) >> np.uint64(32)
        return rows, sig

    def band_bucket_ids(self, sig: np.ndarray) -> np.ndarray:
        """One 64-bit bucket id per (document, band), an even int64 matrix ``(n, num_bands)``."""
        n = sig.shape[0]
        bands = sig.reshape(n, self.num_bands, self.rows_per_band).astype(np.uint64)
        h = np.broadcast_to(
            mix64(np.arange(self.num_bands, dtype=np.uint64) ^ np.uint64(_BAND_SALT ^ (self.seed & _MASK64))),
            (n, self.num_bands),
        ).copy()
        for j in range(self.rows_per_band):
            h = mix64(h ^ bands[:, :, j])
        return (h & ~np.uint64(1)).view(np.int64)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """The fraction of permutations whose minimum agrees: an unbiased Jaccard estimate."""
    return float(np.mean(sig_a == sig_b))


def candidate_probability(similarity: float, num_bands: int = 14, rows_per_band: int = 8) -> float:
    """Chance that two documents of this Jaccard similarity share at least one LSH bucket."""
    return 1.0 - (1.0 - similarity**rows_per_band) ** num_bands


def hasher_for(cfg: DedupConfig) -> MinHasher:
    """The MinHasher of the dedup step's settings."""
    return MinHasher(
        ngram_size=cfg.ngram_size,
        num_bands=cfg.num_bands,
        rows_per_band=cfg.rows_per_band,
        seed=cfg.seed,
        norm=cfg.normalization,
    )
