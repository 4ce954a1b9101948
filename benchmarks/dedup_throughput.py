"""Documents/s of the dedup step against datatrove's MinHash deduplication (FineWeb's) on the same corpus.

    .venv/bin/python benchmarks/dedup_throughput.py --quick        # 2,000 documents, a few minutes
    .venv/bin/python benchmarks/dedup_throughput.py --docs 20000   # the tiny demo's upper size

The corpus: ~300-word documents drawn from the word stream of real English text (../shared/data,
found through RAYCHAT_SHARED_DATA; random words when it is absent), with 10% planted near
duplicates (5 words changed) and 5% exact duplicates (case and whitespace changed).

Ours: ``pipelines.clean.dedup.deduplicate`` (exact + MinHash 14x8 on word 5-grams, connected
components, the split) on a 2-CPU local Ray, input already in the object store, timed until the
kept and dropped datasets are counted; run twice: the headline is the second (warm) run, the
first, which also starts Ray's worker processes, is reported as ``ours_cold_start``.
Baseline: datatrove 0.10.1's four MinHash stages (signatures, buckets, clusters, filter) with the
same 5-grams and 14 x 8 hashes (64-bit sha1 shingle hashes: datatrove's xxhash path fails with
xxhash 4), ``LocalPipelineExecutor`` with 2 workers, from the same documents
in memory. datatrove does no exact-text pass, so ours does strictly more work.
Both must find the planted duplicates; the numbers found are printed. The last line is the JSON
summary; the target is 1.0 (at least datatrove's speed on the same cores).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAYCHAT_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_corpus(n_docs: int, seed: int = 0) -> tuple[list[dict], int, int]:
    """Rows ``{_key, text}`` with planted duplicates; returns (rows, near planted, exact planted)."""
    rng = np.random.default_rng(seed)
    wiki = SHARED / "text" / "wiki_demo.txt"
    if wiki.is_file():
        stream = re.findall(r"\S+", wiki.read_text())
    else:
        letters = list("abcdefghijklmnopqrstuvwxyz")
        stream = ["".join(rng.choice(letters, 6)) for _ in range(50_000)]
    stream_arr = np.array(stream, dtype=object)
    n_near, n_exact = n_docs // 10, n_docs // 20
    n_base = n_docs - n_near - n_exact
    rows: list[dict] = []
    for i in range(n_base):
        words = stream_arr[rng.integers(0, len(stream_arr), size=300)].tolist()
        rows.append({"_key": f"doc-{i:07d}", "text": " ".join(words)})
    for j, i in enumerate(rng.choice(n_base, size=n_near, replace=False)):
        words = rows[i]["text"].split()
        for p in rng.choice(len(words), size=5, replace=False):
            words[p] = "changed"
        rows.append({"_key": f"near-{j:07d}", "text": " ".join(words)})
    for j, i in enumerate(rng.choice(n_base, size=n_exact, replace=False)):
        rows.append({"_key": f"exact-{j:07d}", "text": "  " + rows[i]["text"].upper().replace(" ", "\n ")})
    return rows, n_near, n_exact


def run_ours(rows: list[dict], cpus: int) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # keep idle workers alive: see tests/test_dedup.py (otherwise every shuffle task waits for a process)
    os.environ.setdefault("RAY_num_workers_soft_limit", str(4 * cpus))
    import ray

    from pipelines.clean.dedup import DedupConfig, deduplicate

    ray.init(
        num_cpus=cpus, object_store_memory=600 * 1024 * 1024, include_dashboard=False, log_to_driver=False
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        result: dict = {}
        for attempt in ("cold", "warm"):
            ds = ray.data.from_items(rows, override_num_blocks=max(2, len(rows) // 2000)).materialize()
            start = time.perf_counter()
            kept, dropped, stats = deduplicate(ds, DedupConfig())
            n_kept, n_dropped = kept.count(), dropped.count()
            seconds = time.perf_counter() - start
            print(
                f"ours ({attempt}): {seconds:.2f}s, kept {n_kept}, dropped {n_dropped}, stats {stats}",
                flush=True,
            )
            result[attempt] = seconds
            result.update(kept=n_kept, dropped=n_dropped, stats=stats)
        result["seconds"] = result["warm"]
        return result
    finally:
        ray.shutdown()


class _Shard:
    """datatrove reader step: this rank's share of the in-memory rows, as Documents."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __repr__(self) -> str:  # datatrove logs its pipeline; keep the rows out of the log
        return f"<{len(self.rows)} in-memory documents>"

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        from datatrove.data import Document

        for i, row in enumerate(self.rows):
            if i % world_size == rank:
                yield Document(text=row["text"], id=row["_key"])


def _count(data, rank: int = 0, world_size: int = 1, folder: str = ""):
    n = sum(1 for _ in data)
    Path(folder, f"kept_{rank:03d}").write_text(str(n))
    return iter(())


def run_datatrove(rows: list[dict], cpus: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig

    # sha1: datatrove's xxhash wrapper hands str to xxhash, which xxhash 4 refuses
    config = MinhashConfig(
        n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(precision=64, hash_fc="sha1")
    )
    with tempfile.TemporaryDirectory() as tmp:
        sigs, buckets, clusters, logs = (f"{tmp}/{d}" for d in ("sigs", "buckets", "clusters", "logs"))
        reader = _Shard(rows)
        stages = [
            ([reader, MinhashDedupSignature(output_folder=sigs, config=config)], cpus),
            (
                [MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=config)],
                config.num_buckets,
            ),
            ([MinhashDedupCluster(input_folder=buckets, output_folder=clusters, config=config)], 1),
            (
                [reader, MinhashDedupFilter(input_folder=clusters), functools.partial(_count, folder=tmp)],
                cpus,
            ),
        ]
        start = time.perf_counter()
        for i, (pipeline, tasks) in enumerate(stages):
            LocalPipelineExecutor(
                pipeline=pipeline, tasks=tasks, workers=cpus, logging_dir=f"{logs}/{i}", skip_completed=False
            ).run()
        seconds = time.perf_counter() - start
        kept = sum(int(p.read_text()) for p in Path(tmp).glob("kept_*"))
    print(f"datatrove: {seconds:.2f}s, kept {kept}, dropped {len(rows) - kept}", flush=True)
    return {"seconds": seconds, "kept": kept, "dropped": len(rows) - kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 documents")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    n_docs = 2_000 if args.quick else args.docs
    rows, n_near, n_exact = make_corpus(n_docs)
    print(f"{len(rows)} documents, {n_near} near and {n_exact} exact duplicates planted", flush=True)
    base = run_datatrove(rows, args.cpus)
    ours = run_ours(rows, args.cpus)
    ours_rate, base_rate = len(rows) / ours["seconds"], len(rows) / base["seconds"]
    print(
        f"ours: {ours_rate:,.0f} documents/s, datatrove: {base_rate:,.0f} documents/s; "
        f"dropped: ours {ours['dropped']}, datatrove {base['dropped']}, planted {n_near + n_exact}"
    )
    print(
        json.dumps(
            {
                "benchmark": "dedup_throughput",
                "unit": "documents/s",
                "ours": round(ours_rate, 1),
                "baseline": round(base_rate, 1),
                "baseline_name": f"datatrove 0.10.1 MinHash 4 stages, LocalPipelineExecutor, {args.cpus} workers",
                "ratio": round(ours_rate / base_rate, 3),
                "target": 1.0,
                "ours_cold_start": round(len(rows) / ours["cold"], 1),
                "documents": len(rows),
                "cpus": args.cpus,
            }
        )
    )


if __name__ == "__main__":
    main()
