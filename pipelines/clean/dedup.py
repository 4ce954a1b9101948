"""Step 7 of the clean stage: exact and fuzzy deduplication over the whole dataset, on Ray Data.

Why whole-dataset and not per block: duplicates of a page sit anywhere in a crawl, so every
decision here goes through Ray Data hash shuffles (``groupby().aggregate()`` and ``join``), which
partition by key across the cluster and spill to disk, instead of anything that needs one
process to see all documents. Only a few integers per round come back to the driver.

How (each arrow is a Ray Data operation; nothing but small ints and keys is shuffled until the end):

1. ``map_batches``: normalize each text (FineWeb's ``simplify_text`` rules), hash it for exact
   matching and compute its MinHash signature (word 5-grams, 14 bands x 8 rows, see ``minhash.py``);
   emit one row ``(bucket, key)`` per band, plus one per normalized-text hash.
2. ``groupby(bucket).aggregate(Unique(key))``: documents sharing a bucket are candidates; each
   bucket with several members becomes edges from its smallest key to the others.
3. Connected components over these edges with the alternating large-star / small-star algorithm
   of Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014): each step is
   one ``groupby(node).aggregate(Unique(neighbour))`` plus a ``map_batches``; it converges in
   O(log^2 n) rounds to one star per component centred on the component's smallest key. A bucket's
   own minimum is not enough: with A~B in one bucket and B~C in another, "keep each bucket's
   minimum" can keep both A and C of one cluster.
4. ``join`` (left outer) of the documents with the dropped keys splits them into kept and dropped.

Exactly one document per cluster (connected component) is kept: the one with the smallest key,
so the result does not depend on partitioning or block order. MinHash candidates are not checked
against their true Jaccard similarity (as in FineWeb); the LSH curve decides.

A dropped document's ``reason`` is ``exact_duplicate`` when another document has the same
normalized text with a smaller key (exact matching on), else ``near_duplicate``; ``detail`` is the
key of the document kept for its cluster.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.aggregate import Unique

from pipelines.clean.config import DedupConfig
from pipelines.clean.minhash import MinHasher, exact_bucket_ids, hasher_for, normalize_texts, text_hashes

log = logging.getLogger(__name__)

STEP = "dedup"
EXACT = "exact_duplicate"
NEAR = "near_duplicate"

# Helper columns; prefixed so they cannot collide with the caller's columns.
_ROOT = "_dedup_root"
_EXACT = "_dedup_exact"
_EDGE_SCHEMA = pa.schema([("node", pa.string()), ("nbr", pa.string()), ("exact", pa.int64())])


def deduplicate(
    ds: ray.data.Dataset, cfg: DedupConfig, key: str = "_key"
) -> tuple[ray.data.Dataset, ray.data.Dataset, dict[str, Any]]:
    """Split ``ds`` into (kept, dropped, stats); every input row ends in exactly one of the two.

    ``ds`` needs a ``text`` column and a unique, non-null string ``key`` column; other columns pass
    through unchanged. ``ds`` is materialized once here, because it is read twice (hashing, then
    the final split); Ray spills it to disk when it is larger than the object store.
    """
    start = time.monotonic()
    docs = ds.materialize()  # first, so that reading the schema does not run the input twice
    n_docs = docs.count()
    schema = _check_schema(docs, key)
    stats: dict[str, Any] = {
        "documents_in": n_docs,
        "documents_kept": n_docs,
        "clusters": n_docs,
        "duplicate_clusters": 0,
        "exact_dropped": 0,
        "near_dropped": 0,
        "candidate_edges": 0,
        "cc_rounds": 0,
    }
    if n_docs == 0 or not (cfg.exact or cfg.fuzzy):
        stats["seconds"] = round(time.monotonic() - start, 3)
        return docs, _empty_dropped(schema), stats

    hasher = hasher_for(cfg)
    n_bucket_rows = n_docs * ((cfg.num_bands if cfg.fuzzy else 0) + (1 if cfg.exact else 0))
    parts = _partitions(cfg, n_bucket_rows * 48)
    log.info("dedup: %d documents, %d bucket rows, %d shuffle partitions", n_docs, n_bucket_rows, parts)

    edges = (
        docs.select_columns(["text", key])
        .map_batches(
            _BucketRows(hasher, cfg.exact, cfg.fuzzy, key),
            batch_format="pyarrow",
            batch_size=cfg.signature_batch_size,
        )
        .groupby("bucket", num_partitions=parts)
        .aggregate(Unique("key", alias_name="members"))
        .map_batches(_bucket_edges, batch_format="pyarrow", batch_size=None)
        .materialize()
    )
    stats["candidate_edges"] = n_edges = edges.count()
    log.info("dedup: %d candidate edges", n_edges)
    if n_edges == 0:
        stats["seconds"] = round(time.monotonic() - start, 3)
        return docs, _empty_dropped(schema), stats

    adjacency, rounds, counts = connected_components(edges, parts, cfg.max_cc_rounds)
    stats["cc_rounds"] = rounds
    stats["duplicate_clusters"] = counts.get("roots", 0)
    stats["exact_dropped"] = counts.get("exact_leaves", 0)
    stats["near_dropped"] = counts.get("near_leaves", 0)
    stats["documents_kept"] = stats["clusters"] = n_docs - stats["exact_dropped"] - stats["near_dropped"]
    drops = adjacency.map_batches(_leaf_rows, fn_kwargs={"key": key}, batch_format="pyarrow")

    joined = docs.join(
        drops,
        join_type="left_outer",
        num_partitions=_partitions(cfg, docs.size_bytes()),
        on=(key,),
    ).materialize()
    kept = joined.map_batches(_kept_rows, fn_kwargs={"schema": schema}, batch_format="pyarrow")
    dropped = joined.map_batches(_dropped_rows, fn_kwargs={"schema": schema}, batch_format="pyarrow")
    stats["seconds"] = round(time.monotonic() - start, 3)
    log.info(
        "dedup: kept %d of %d (%d exact, %d near duplicates dropped, %d clusters, %d CC rounds) in %.1fs",
        stats["documents_kept"],
        n_docs,
        stats["exact_dropped"],
        stats["near_dropped"],
        stats["duplicate_clusters"],
        rounds,
        stats["seconds"],
    )
    return kept, dropped, stats


def connected_components(
    edges: ray.data.Dataset, num_partitions: int, max_rounds: int = 64
) -> tuple[ray.data.Dataset, int, dict[str, int]]:
    """Turn an undirected edge list into one star per component, centred on its smallest node.

    ``edges`` has string columns ``node``, ``nbr`` and an int ``exact``; a self-loop ``(u, u, 1)``
    is not an edge but carries a flag for ``u`` through every round. Returns the converged,
    materialized adjacency (``node``, ``nbrs``, ``exact``; a leaf's only neighbour is its
    component's minimum), the number of large-star + small-star rounds it took, and the counts
    of ``_star_counts`` for the final graph.
    """
    adjacency = _adjacency(edges, num_partitions).materialize()
    rounds = 0
    while (counts := _sum_counts(adjacency, _star_counts)).get("unfinished", 0) > 0:
        if rounds >= max_rounds:
            raise RuntimeError(
                f"connected components did not converge in {max_rounds} rounds "
                f"({counts['unfinished']} nodes left); raise dedup.max_cc_rounds"
            )
        rounds += 1
        log.info("dedup: connected components round %d (%d nodes not settled)", rounds, counts["unfinished"])
        large = _adjacency(adjacency.map_batches(_large_star, batch_format="pyarrow"), num_partitions)
        adjacency = _adjacency(large.map_batches(_small_star, batch_format="pyarrow"), num_partitions)
        adjacency = adjacency.materialize()
    return adjacency, rounds, counts


# --- stage 1: bucket rows --------------------------------------------------------------------------


class _BucketRows:
    """Callable for ``map_batches``: documents -> rows ``(bucket: int64, key: str)``.

    Band bucket ids are even and exact-text bucket ids odd (see ``minhash``), so one groupby serves
    both and the parity tells them apart afterwards.
    """

    def __init__(self, hasher: MinHasher, exact: bool, fuzzy: bool, key: str) -> None:
        self.hasher, self.exact, self.fuzzy, self.key = hasher, exact, fuzzy, key

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys = batch[self.key].combine_chunks()
        if keys.null_count:
            raise ValueError(f"dedup: column {self.key!r} has null keys; every document needs a unique key")
        normalized = normalize_texts(batch["text"], self.hasher.norm)
        buckets: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        if self.exact:
            buckets.append(exact_bucket_ids(text_hashes(normalized)))
            owners.append(np.arange(len(keys)))
        if self.fuzzy:
            rows, sig = self.hasher.signatures(normalized)
            if len(rows):
                buckets.append(self.hasher.band_bucket_ids(sig).ravel())
                owners.append(np.repeat(rows, self.hasher.num_bands))
        bucket = np.concatenate(buckets) if buckets else np.empty(0, np.int64)
        owner = np.concatenate(owners) if owners else np.empty(0, np.int64)
        return pa.table({"bucket": bucket, "key": keys.take(pa.array(owner)).cast(pa.string())})


def _bucket_edges(batch: pa.Table) -> pa.Table:
    """Buckets with several members -> edges (smallest member, other member), plus exact flags."""
    several = pc.greater(pc.list_value_length(batch["members"]), 1)
    crowded = batch.filter(several)
    nodes: list[str] = []
    nbrs: list[str] = []
    exact: list[int] = []
    for bucket, members in zip(crowded["bucket"].to_pylist(), crowded["members"].to_pylist(), strict=True):
        ordered = sorted(set(members))
        root, rest = ordered[0], ordered[1:]
        nodes += [root] * len(rest)
        nbrs += rest
        exact += [0] * len(rest)
        if bucket & 1:  # exact-text bucket: every member but the smallest is an exact duplicate
            nodes += rest
            nbrs += rest
            exact += [1] * len(rest)
    return pa.table({"node": nodes, "nbr": nbrs, "exact": exact}, schema=_EDGE_SCHEMA)


# --- stage 2: connected components -----------------------------------------------------------------


def _both_directions(batch: pa.Table) -> pa.Table:
    """Undirected edges as rows for both endpoints; flag self-loops stay single."""
    edges = batch.filter(pc.not_equal(batch["node"], batch["nbr"]))
    back = pa.table(
        {
            "node": edges["nbr"],
            "nbr": edges["node"],
            "exact": pa.nulls(edges.num_rows, pa.int64()).fill_null(0),
        },
        schema=_EDGE_SCHEMA,
    )
    return pa.concat_tables([batch.cast(_EDGE_SCHEMA), back])


def _adjacency(edges: ray.data.Dataset, num_partitions: int) -> ray.data.Dataset:
    """Group edges by node: one row per node with its neighbour list and its exact flag."""
    return (
        edges.map_batches(_both_directions, batch_format="pyarrow")
        .groupby("node", num_partitions=num_partitions)
        .aggregate(Unique("nbr", alias_name="nbrs"), Unique("exact", alias_name="exact"))
    )


def _neighbours(batch: pa.Table):
    """(node, neighbours other than itself, exact flag) for each adjacency row.

    ``nbrs`` and ``exact`` are per-node sets from ``Unique``, the aggregation Ray Data runs as one
    vectorized Arrow hash-aggregate (``AsList``, ``Max`` and friends fall back to a Python loop
    per group when mixed with it, which was 100x slower here).
    """
    for node, nbrs, flag in zip(
        batch["node"].to_pylist(), batch["nbrs"].to_pylist(), batch["exact"].to_pylist(), strict=True
    ):
        others = set(nbrs)
        others.discard(node)
        yield node, others, int(1 in (flag or ()))


def _large_star(batch: pa.Table) -> pa.Table:
    """Connect every strictly larger neighbour of u to the minimum of u's closed neighbourhood."""
    nodes: list[str] = []
    nbrs: list[str] = []
    exact: list[int] = []
    for u, others, flag in _neighbours(batch):
        m = min(others | {u})
        larger = [v for v in others if v > u]
        nodes += larger
        nbrs += [m] * len(larger)
        exact += [0] * len(larger)
        if flag:
            nodes.append(u)
            nbrs.append(u)
            exact.append(1)
    return pa.table({"node": nodes, "nbr": nbrs, "exact": exact}, schema=_EDGE_SCHEMA)


def _small_star(batch: pa.Table) -> pa.Table:
    """Connect u and its smaller neighbours to the minimum of them."""
    nodes: list[str] = []
    nbrs: list[str] = []
    exact: list[int] = []
    for u, others, flag in _neighbours(batch):
        smaller = [v for v in others if v < u]
        m = min(smaller, default=u)
        group = [v for v in [*smaller, u] if v != m]
        nodes += group
        nbrs += [m] * len(group)
        exact += [0] * len(group)
        if flag:
            nodes.append(u)
            nbrs.append(u)
            exact.append(1)
    return pa.table({"node": nodes, "nbr": nbrs, "exact": exact}, schema=_EDGE_SCHEMA)


def _star_counts(batch: pa.Table) -> dict[str, int]:
    """Per-block counts of the adjacency: unsettled nodes, roots, and leaves by exact flag.

    The graph is one star per component around its minimum exactly when no node is ``unfinished``:
    every node that has a smaller neighbour has no other neighbour (that neighbour then has only
    larger ones, so it is its component's minimum). Once that holds, roots are the kept documents
    of duplicate clusters and leaves the dropped ones.
    """
    counts = {"unfinished": 0, "roots": 0, "exact_leaves": 0, "near_leaves": 0}
    for u, others, flag in _neighbours(batch):
        if not others:
            continue
        smallest = min(others)
        if smallest > u:
            counts["roots"] += 1
        elif len(others) > 1:
            counts["unfinished"] += 1
        else:
            counts["exact_leaves" if flag else "near_leaves"] += 1
    return counts


def _leaf_rows(batch: pa.Table, key: str) -> pa.Table:
    """Every non-root node of the converged stars: (key, kept key of its cluster, exact flag)."""
    keys: list[str] = []
    roots: list[str] = []
    exact: list[int] = []
    for u, others, flag in _neighbours(batch):
        if others and (m := min(others)) < u:
            keys.append(u)
            roots.append(m)
            exact.append(flag)
    return pa.table(
        {
            key: pa.array(keys, pa.string()),
            _ROOT: pa.array(roots, pa.string()),
            _EXACT: pa.array(exact, pa.int64()),
        }
    )


# --- stage 3: the split ----------------------------------------------------------------------------


def _kept_rows(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    kept = batch.filter(pc.is_null(batch[_ROOT]))
    return kept.select(schema.names).cast(schema)


def _dropped_rows(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    dropped = batch.filter(pc.is_valid(batch[_ROOT]))
    n = dropped.num_rows
    is_exact = pc.equal(dropped[_EXACT], 1)
    reason = pc.if_else(is_exact, pa.scalar(EXACT), pa.scalar(NEAR))
    out = dropped.select(schema.names).cast(schema)
    out = out.append_column("step", pa.array([STEP] * n, pa.string()))
    out = out.append_column("reason", reason.cast(pa.string()))
    return out.append_column("detail", dropped[_ROOT].cast(pa.string()))


def _empty_dropped(schema: pa.Schema) -> ray.data.Dataset:
    fields = [
        *schema,
        pa.field("step", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
    return ray.data.from_arrow(pa.schema(fields).empty_table())


# --- helpers ---------------------------------------------------------------------------------------


def _check_schema(ds: ray.data.Dataset, key: str) -> pa.Schema:
    """The input's Arrow schema, after checking the columns dedup needs and adds."""
    found = ds.schema()
    if found is None:  # an empty dataset that never had blocks: nothing to deduplicate
        return pa.schema([("text", pa.string()), (key, pa.string())])
    schema = found.base_schema
    names = list(schema.names)
    missing = [c for c in ("text", key) if c not in names]
    if missing:
        raise ValueError(f"dedup needs columns {missing} (has {names})")
    clash = [c for c in (_ROOT, _EXACT, "step", "reason", "detail") if c in names]
    if clash:
        raise ValueError(f"dedup: input already has columns {clash}, which dedup adds to dropped documents")
    key_type = schema.field(key).type
    if not (pa.types.is_string(key_type) or pa.types.is_large_string(key_type)):
        raise ValueError(f"dedup: key column {key!r} must hold strings (got {key_type})")
    return schema


def _partitions(cfg: DedupConfig, nbytes: int) -> int:
    """Enough partitions to keep each near ``partition_bytes``; at least one per CPU for big inputs."""
    if cfg.num_partitions is not None:
        return cfg.num_partitions
    cpus = int(ray.cluster_resources().get("CPU", 1))
    by_size = math.ceil(nbytes / cfg.partition_bytes)
    # small inputs: one partition per ~8 MB, so a test's 10 rows are not scattered over every CPU
    by_parallelism = min(cpus, math.ceil(nbytes / (8 * 1024 * 1024)))
    return max(1, by_size, by_parallelism)


def _sum_counts(ds: ray.data.Dataset, fn) -> dict[str, int]:
    """Sum small per-block counts computed by ``fn(batch) -> {name: int}`` (only ints reach the driver).

    A name is missing from the result when the dataset has no blocks; callers read it with ``get``.
    """

    def per_block(batch: pa.Table) -> pa.Table:
        return pa.table({k: [int(v)] for k, v in fn(batch).items()})

    totals: dict[str, int] = {}
    for row in ds.map_batches(per_block, batch_format="pyarrow", batch_size=None).take_all():
        for k, v in row.items():
            totals[k] = totals.get(k, 0) + int(v)
    return totals
