"""Deduplication: the MinHash maths alone, then the whole-dataset Ray Data step end to end."""

from __future__ import annotations

import string

import numpy as np
import pyarrow as pa
import pytest

from pipelines.clean.dedup import EXACT, NEAR, DedupConfig, connected_components, deduplicate
from pipelines.clean.minhash import (
    MinHasher,
    TextNormConfig,
    candidate_probability,
    estimate_jaccard,
    normalize_texts,
    text_hashes,
)


def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = list(string.ascii_lowercase)
    return ["".join(rng.choice(letters, 7)) for _ in range(n)]


def _shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _norm(texts: list[str | None]) -> list[str]:
    return normalize_texts(pa.array(texts, pa.string()), TextNormConfig()).to_pylist()


# --- the maths, no Ray ---------------------------------------------------------------------------


def test_normalization_follows_datatrove_simplify_text():
    assert _norm(["  Héllo,\tWORLD!!  It's 2024\u00a0-- now.\n", None]) == ["hello world its 0 now", ""]
    same = _norm(["The  Cat sat.", "the cat SAT", "the cat sat!!"])
    assert len(set(same)) == 1
    assert len(set(text_hashes(pa.array(same)).tolist())) == 1
    differ = text_hashes(pa.array(_norm(["the cat sat", "the cat sit"]))).tolist()
    assert differ[0] != differ[1]


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(7)
    hasher = MinHasher()
    errors = []
    for overlap in (1.0, 0.9, 0.75, 0.5, 0.3, 0.0):
        base = _words(rng, 300)
        other = list(base)
        changed = rng.choice(300, size=int(round((1 - overlap) * 300)), replace=False)
        for i in changed:
            other[i] = _words(rng, 1)[0]
        a, b = " ".join(base), " ".join(other)
        truth = len(_shingle_set(a) & _shingle_set(b)) / len(_shingle_set(a) | _shingle_set(b))
        rows, sig = hasher.signatures(normalize_texts(pa.array([a, b]), TextNormConfig()))
        assert rows.tolist() == [0, 1] and sig.shape == (2, 112)
        estimate = estimate_jaccard(sig[0], sig[1])
        # 112 permutations: standard deviation sqrt(J(1-J)/112) <= 0.048
        assert abs(estimate - truth) < 0.15, (overlap, truth, estimate)
        errors.append(abs(estimate - truth))
    assert np.mean(errors) < 0.06


def test_signatures_skip_texts_shorter_than_a_shingle_and_are_seeded():
    texts = pa.array(["one two three four", "one two three four five", "", "a b c d e f g"])
    rows, sig = MinHasher().signatures(normalize_texts(texts, TextNormConfig()))
    assert rows.tolist() == [1, 3]
    rows2, sig2 = MinHasher().signatures(normalize_texts(texts, TextNormConfig()))
    assert np.array_equal(sig, sig2)
    _, sig3 = MinHasher(seed=2).signatures(normalize_texts(texts, TextNormConfig()))
    assert not np.array_equal(sig, sig3)


def test_fineweb_lsh_curve():
    # datatrove's minhash.py: "probability of inclusion for s=0.8: 1-(1-0.8^8)^14=0.924"
    assert candidate_probability(0.8) == pytest.approx(0.924, abs=1e-3)
    assert candidate_probability(0.5) < 0.06


# --- the Ray Data step -----------------------------------------------------------------------------


def _chain_texts() -> tuple[str, str, str]:
    """A ~ B and B ~ C share LSH buckets but A and C do not (checked, not assumed)."""
    hasher = MinHasher()
    for seed in range(100):
        rng = np.random.default_rng(1000 + seed)
        w = _words(rng, 520)
        texts = [" ".join(w[0:400]), " ".join(w[60:460]), " ".join(w[120:520])]
        _, sig = hasher.signatures(normalize_texts(pa.array(texts), TextNormConfig()))
        bands = hasher.band_bucket_ids(sig)
        ab, bc, ac = ((bands[i] == bands[j]).any() for i, j in ((0, 1), (1, 2), (0, 2)))
        if ab and bc and not ac:
            return texts[0], texts[1], texts[2]
    raise AssertionError("no chain found among 100 seeds")


def _corpus() -> list[dict]:
    rng = np.random.default_rng(42)
    rows: list[dict] = []

    def add(key: str, text: str) -> None:
        rows.append({"_key": key, "text": text, "url": f"https://x.test/{key}", "n": len(rows), "score": 0.5})

    base = " ".join(_words(rng, 120))
    add("exact-b", base)
    add("exact-a", "  " + base.upper().replace(" ", " \n ") + " !!")  # same normalized text
    near = _words(rng, 200)
    add("near-a", " ".join(near))
    for key, positions in (("near-b", (10, 80, 150)), ("near-c", (40, 120, 190))):
        changed = list(near)
        for p in positions:
            changed[p] = "different"
        add(key, " ".join(changed))
    a, b, c = _chain_texts()
    add("chain-a", a)
    add("chain-z", b)  # the middle of the chain has the largest key
    add("chain-b", c)
    add("tiny-2", "Hello   world!")
    add("tiny-1", "hello world")
    for i in range(20):
        add(f"unique-{i:02d}", " ".join(_words(rng, 150)))
    rows[-1]["score"] = None  # a null in a pass-through column
    return rows


KEPT = {"exact-a", "near-a", "chain-a", "tiny-1", *(f"unique-{i:02d}" for i in range(20))}
DROPPED = {
    "exact-b": (EXACT, "exact-a"),
    "near-b": (NEAR, "near-a"),
    "near-c": (NEAR, "near-a"),
    "chain-z": (NEAR, "chain-a"),
    "chain-b": (NEAR, "chain-a"),
    "tiny-2": (EXACT, "tiny-1"),
}


@pytest.fixture(scope="module")
def corpus_result(ray_session):
    rows = _corpus()
    ds = ray_session.data.from_items(rows, override_num_blocks=3)
    kept, dropped, stats = deduplicate(ds, DedupConfig())
    return rows, ds.schema(), kept.take_all(), dropped.take_all(), kept.schema(), stats


def test_duplicates_collapse_to_the_smallest_key(corpus_result):
    _, _, kept, dropped, _, _ = corpus_result
    assert {r["_key"] for r in kept} == KEPT
    assert {r["_key"]: (r["reason"], r["detail"]) for r in dropped} == DROPPED
    assert all(r["step"] == "dedup" for r in dropped)


def test_every_row_lands_once_with_its_columns_unchanged(corpus_result):
    rows, schema, kept, dropped, kept_schema, stats = corpus_result
    assert len(kept) + len(dropped) == len(rows)
    by_key = {r["_key"]: r for r in rows}
    assert len({r["_key"] for r in kept} | {r["_key"] for r in dropped}) == len(rows)
    for r in kept:
        assert r == by_key[r["_key"]]
    for r in dropped:
        assert {k: v for k, v in r.items() if k not in ("step", "reason", "detail")} == by_key[r["_key"]]
    assert kept_schema.names == schema.names and kept_schema.types == schema.types
    assert stats["documents_in"] == len(rows)
    assert stats["documents_kept"] == stats["clusters"] == len(KEPT)
    assert stats["exact_dropped"] == 2 and stats["near_dropped"] == 4
    assert stats["duplicate_clusters"] == 4
    assert stats["cc_rounds"] >= 1  # the chain's middle document links two buckets
    assert stats["exact_dropped"] + stats["near_dropped"] + stats["documents_kept"] == len(rows)


def test_result_does_not_depend_on_order_or_blocks(ray_session, corpus_result):
    rows, _, kept, dropped, _, _ = corpus_result
    ds = ray_session.data.from_items(list(reversed(rows)), override_num_blocks=1)
    kept2, dropped2, _ = deduplicate(ds, DedupConfig(num_partitions=2))
    assert sorted(r["_key"] for r in kept2.take_all()) == sorted(r["_key"] for r in kept)
    assert sorted((r["_key"], r["reason"], r["detail"]) for r in dropped2.take_all()) == sorted(
        (r["_key"], r["reason"], r["detail"]) for r in dropped
    )


def test_exact_only_keeps_near_duplicates(ray_session):
    rows = [r for r in _corpus() if r["_key"].startswith(("exact", "near", "unique-0"))]
    kept, dropped, stats = deduplicate(
        ray_session.data.from_items(rows, override_num_blocks=2), DedupConfig(fuzzy=False)
    )
    assert {r["_key"] for r in dropped.take_all()} == {"exact-b"}
    assert kept.count() == len(rows) - 1
    assert stats["near_dropped"] == 0 and stats["exact_dropped"] == 1


def test_unrelated_texts_are_all_kept(ray_session):
    rows = [r for r in _corpus() if r["_key"].startswith("unique")]
    ds = ray_session.data.from_items(rows, override_num_blocks=2)
    kept, dropped, stats = deduplicate(ds, DedupConfig())
    assert kept.count() == len(rows) and dropped.count() == 0
    assert stats["candidate_edges"] == 0 and stats["documents_kept"] == len(rows)
    assert {"step", "reason", "detail"} <= set(dropped.schema().names)


def test_connected_components_beat_bucket_minimum(ray_session):
    # buckets {k1, k3} and {k2, k3}: keeping each bucket's minimum would keep k1 and k2.
    # Also a 40-node path whose keys are shuffled, which needs several rounds.
    rng = np.random.default_rng(3)
    path = [f"p{i:03d}" for i in rng.permutation(40)]
    edges = [("k1", "k3"), ("k2", "k3"), *zip(path[:-1], path[1:], strict=True)]
    table = pa.table({"node": [u for u, _ in edges], "nbr": [v for _, v in edges], "exact": [0] * len(edges)})
    adjacency, rounds, counts = connected_components(ray_session.data.from_arrow(table), num_partitions=2)
    roots = {}
    for row in adjacency.take_all():
        others = set(row["nbrs"]) - {row["node"]}
        roots[row["node"]] = min(others) if min(others) < row["node"] else row["node"]
    assert roots == {"k1": "k1", "k2": "k1", "k3": "k1", **{p: "p000" for p in path}}
    assert counts["roots"] == 2 and counts["unfinished"] == 0
    assert rounds >= 1


def test_bad_input_is_refused_with_the_column_named(ray_session):
    with pytest.raises(ValueError, match="text"):
        deduplicate(ray_session.data.from_items([{"_key": "a", "body": "x"}]), DedupConfig())
    with pytest.raises(ValueError, match="must hold strings"):
        deduplicate(ray_session.data.from_items([{"_key": 1, "text": "x"}]), DedupConfig())
    with pytest.raises(ValueError):
        DedupConfig(num_bands=0)


def test_empty_input_gives_empty_outputs(ray_session):
    schema = pa.schema([("_key", pa.string()), ("text", pa.string())])
    for ds in (ray_session.data.from_items([]), ray_session.data.from_arrow(schema.empty_table())):
        kept, dropped, stats = deduplicate(ds, DedupConfig())
        assert kept.count() == 0 and dropped.count() == 0
        assert stats["documents_in"] == 0 and stats["documents_kept"] == 0
