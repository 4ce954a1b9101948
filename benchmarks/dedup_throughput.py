"""Documents/s of the dedup step against datatrove's MinHash deduplication (FineWeb's), same corpus.

    python benchmarks/dedup_throughput.py --quick              # 2,000 documents, one run a side
    python benchmarks/dedup_throughput.py                      # 20,000 documents, 1 warm-up + 3 runs
    python benchmarks/dedup_throughput.py --clock wall         # headline in wall seconds (quiet machine)

The corpus: ~300-word documents drawn from the word stream of real English text (Wikipedia articles
of ../shared/data/text, found through RAYCHAT_SHARED_DATA), with 10% planted near duplicates
(5 words changed) and 5% planted exact duplicates (case and whitespace changed), written as 4
parquet files (``text``, ``id``) before any timing.

Both sides alike (benchmarks/README.md):
- every run is a fresh Python process that reads the parquet files, deduplicates, and writes the
  kept documents and the removed ones as parquet: what a user waits for, all inside the timer.
  Starting workers is inside it on both sides: ours starts its local Ray (``init_ray``, as the clean
  stage does, ``--cpus`` CPUs), datatrove starts its ``LocalPipelineExecutor`` process pools
  (``--cpus`` workers), as their users run them;
- the same warm-up (``--warmup``, untimed) and repetitions (``--repeats``), alternating which side
  goes first; the headline is the median, with the range printed;
- ``--clock cpu`` (default): documents per CPU-second of the whole process tree (the child, Ray's
  raylet and workers, datatrove's pool), which other work on a shared machine distorts far less than
  wall time; ``--clock wall``: documents per wall-second. Both are printed and in the JSON.

Ours: ``pipelines.clean.dedup.deduplicate`` (exact + MinHash, 14 bands x 8 hashes on word 5-grams,
connected components). Baseline: datatrove 0.10.1's four MinHash stages (signatures, buckets,
clusters, filter) with its defaults, ``MinhashConfig()`` (5-grams, 14 x 8, 64-bit xxhash; that needs
xxhash < 4, pinned in the dev extra), chained with ``depends=`` as in its FineWeb example.
datatrove does no exact-text pass (its MinHash catches exact copies too), so ours does more work.

Outputs compared: each planted group (an original with its near and/or exact copies) must be cut to
one document, and no other document removed. MinHash is randomized and the two sides use different
hash functions, so a planted near copy (Jaccard ~0.84 on 5-grams, found with probability ~0.98) can be
missed by one side and not the other: the tolerance is 5% of the planted groups deciding differently,
plus no side removing more than 0.1% of the unplanted documents. Beyond it, ``ok`` is false and the
script exits 1. The last line is the JSON summary; the target is 1.0.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    SHARED,
    child_env,
    fail,
    finish,
    fmt,
    interleave,
    load_average,
    run_process,
    spread,
)

TARGET = 1.0
GROUP_TOLERANCE = 0.05  # share of planted groups the two sides may decide differently
FALSE_DROP_TOLERANCE = 0.001  # share of unplanted documents a side may remove
N_FILES = 4


def make_corpus(n_docs: int, seed: int = 0) -> tuple[list[dict], dict[str, str]]:
    """Rows ``{id, text}`` with planted duplicates, and ``group``: each planted copy's original id."""
    import numpy as np

    rng = np.random.default_rng(seed)
    wiki = SHARED / "text" / "wiki_demo.txt"
    if not wiki.is_file():
        sys.exit(f"real text not found at {wiki} (set RAYCHAT_SHARED_DATA to the shared data folder)")
    stream = np.array(re.findall(r"\S+", wiki.read_text()), dtype=object)
    n_near, n_exact = n_docs // 10, n_docs // 20
    n_base = n_docs - n_near - n_exact
    rows: list[dict] = []
    group: dict[str, str] = {}
    for i in range(n_base):
        words = stream[rng.integers(0, len(stream), size=300)].tolist()
        rows.append({"id": f"doc-{i:07d}", "text": " ".join(words)})
    for j, i in enumerate(rng.choice(n_base, size=n_near, replace=False)):
        words = rows[i]["text"].split()
        for p in rng.choice(len(words), size=5, replace=False):
            words[p] = "changed"
        rows.append({"id": f"near-{j:07d}", "text": " ".join(words)})
        group[rows[-1]["id"]] = rows[i]["id"]
    for j, i in enumerate(rng.choice(n_base, size=n_exact, replace=False)):
        rows.append({"id": f"exact-{j:07d}", "text": "  " + rows[i]["text"].upper().replace(" ", "\n ")})
        group[rows[-1]["id"]] = rows[i]["id"]
    order = rng.permutation(len(rows))  # copies spread over every file, not at the end
    return [rows[k] for k in order], group


def write_corpus(rows: list[dict], folder: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    step = -(-len(rows) // N_FILES)
    for k in range(N_FILES):
        part = rows[k * step : (k + 1) * step]
        table = pa.table({"text": [r["text"] for r in part], "id": [r["id"] for r in part]})
        pq.write_table(table, folder / f"part-{k:03d}.parquet")


# -- the two sides, each run in a fresh process (``--worker``) ---------------------------------------


def worker_ours(input_dir: Path, out: Path, cpus: int) -> dict:
    start = time.perf_counter()
    import ray

    from pipelines.clean.config import DedupConfig
    from pipelines.clean.dedup import deduplicate
    from pipelines.config import RayConfig
    from pipelines.runtime import init_ray

    init_ray(RayConfig(num_cpus=cpus, object_store_memory_mb=600))
    ray.data.DataContext.get_current().enable_progress_bars = False
    started = time.perf_counter()
    kept, dropped, stats = deduplicate(ray.data.read_parquet(str(input_dir)), DedupConfig(), key="id")
    kept.write_parquet(str(out / "kept"))
    dropped.write_parquet(str(out / "removed"))
    done = time.perf_counter()
    ray.shutdown()
    return {
        "startup_s": round(started - start, 2),
        "work_s": round(done - started, 2),
        "stats": {k: v for k, v in stats.items() if k != "seconds"},
    }


def worker_datatrove(input_dir: Path, out: Path, cpus: int) -> dict:
    start = time.perf_counter()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    config = MinhashConfig()  # datatrove's defaults: FineWeb's 5-grams, 14 buckets x 8 hashes, xxhash64
    work = out / "work"
    sigs, buckets, clusters, logs = (str(work / d) for d in ("sigs", "buckets", "clusters", "logs"))
    stage1 = LocalPipelineExecutor(
        pipeline=[ParquetReader(str(input_dir)), MinhashDedupSignature(output_folder=sigs, config=config)],
        tasks=N_FILES,
        workers=cpus,
        logging_dir=f"{logs}/signatures",
    )
    stage2 = LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=sigs, output_folder=buckets, config=config)],
        tasks=config.num_buckets,
        workers=cpus,
        logging_dir=f"{logs}/buckets",
        depends=stage1,
    )
    stage3 = LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=buckets, output_folder=clusters, config=config)],
        tasks=1,
        logging_dir=f"{logs}/clusters",
        depends=stage2,
    )
    stage4 = LocalPipelineExecutor(
        pipeline=[
            ParquetReader(str(input_dir)),
            MinhashDedupFilter(input_folder=clusters, exclusion_writer=ParquetWriter(str(out / "removed"))),
            ParquetWriter(str(out / "kept")),
        ],
        tasks=N_FILES,
        workers=cpus,
        logging_dir=f"{logs}/filter",
        depends=stage3,
    )
    started = time.perf_counter()
    stage4.run()
    return {"startup_s": round(started - start, 2), "work_s": round(time.perf_counter() - started, 2)}


def read_ids(folder: Path) -> set[str]:
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    return {i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}


def compare(all_ids: set[str], group: dict[str, str], kept: dict[str, set[str]]) -> dict:
    """Per side: planted groups cut to one document, unplanted documents removed; and where they differ."""
    members: dict[str, list[str]] = {}
    for copy, original in group.items():
        members.setdefault(original, [original]).append(copy)
    planted = set(group) | set(members)
    unplanted = len(all_ids) - len(planted)
    report: dict = {"groups": len(members)}
    kept_per_group = {}
    for side, ids in kept.items():
        kept_per_group[side] = {g: sum(m in ids for m in ms) for g, ms in members.items()}
        report[f"{side}_groups_cut_to_one"] = sum(n == 1 for n in kept_per_group[side].values())
        report[f"{side}_groups_emptied"] = sum(n == 0 for n in kept_per_group[side].values())
        report[f"{side}_unplanted_removed"] = len((all_ids - planted) - ids)
        report[f"{side}_removed"] = len(all_ids - ids)
    sides = list(kept)
    differ = [g for g in members if kept_per_group[sides[0]][g] != kept_per_group[sides[1]][g]]
    report["groups_decided_differently"] = len(differ)
    report["examples_differing"] = differ[:5]
    report["tolerance"] = {
        "groups_decided_differently": int(GROUP_TOLERANCE * len(members)),
        "unplanted_removed_per_side": int(FALSE_DROP_TOLERANCE * unplanted),
    }
    report["outputs_match"] = (
        len(differ) <= report["tolerance"]["groups_decided_differently"]
        and all(
            report[f"{s}_unplanted_removed"] <= report["tolerance"]["unplanted_removed_per_side"]
            for s in sides
        )
        and all(report[f"{s}_groups_emptied"] == 0 for s in sides)
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2,000 documents, no warm-up, one run a side")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs (ours) and pool workers (datatrove)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (the median counts)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="the headline's clock")
    parser.add_argument("--worker", choices=["ours", "datatrove"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one side, one run, in this fresh process
        fn = worker_ours if args.worker == "ours" else worker_datatrove
        print(json.dumps(fn(Path(args.input), Path(args.out), args.cpus)))
        return
    if args.quick:
        args.docs, args.warmup, args.repeats = 2_000, 0, 1

    unit = (
        f"documents per {'CPU' if args.clock == 'cpu' else 'wall'}-second, fresh process, "
        f"read + dedup + write, {args.cpus} CPUs a side"
    )
    baseline_name = f"datatrove 0.10.1 MinHash (4 stages, MinhashConfig() defaults), LocalPipelineExecutor, {args.cpus} workers"
    load_before = load_average()
    rows, group = make_corpus(args.docs)
    all_ids = {r["id"] for r in rows}
    print(
        f"{len(rows):,} documents, {sum(i.startswith('near') for i in group)} near and "
        f"{sum(i.startswith('exact') for i in group)} exact duplicates planted; {args.cpus} CPUs a side, "
        f"{args.warmup} warm-up + {args.repeats} timed runs a side; load average {load_before}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        input_dir = Path(tmp) / "input"
        write_corpus(rows, input_dir)
        runs = {"ours": 0, "datatrove": 0}
        kept: dict[str, set[str]] = {}

        def side(name: str):
            def run() -> dict:
                runs[name] += 1
                out = Path(tmp) / f"{name}-{runs[name]}"
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    name,
                    "--input",
                    str(input_dir),
                    "--out",
                    str(out),
                ]
                m = run_process([*cmd, "--cpus", str(args.cpus)], child_env())
                info = m.last_json()
                kept[name] = read_ids(out / "kept")
                removed = read_ids(out / "removed")
                if kept[name] | removed != all_ids or kept[name] & removed:
                    raise RuntimeError(
                        f"{name}: kept + removed is not the input ({len(kept[name])} + {len(removed)})"
                    )
                print(
                    f"  {name:9s} wall {m.wall_s:6.2f}s  cpu {m.cpu_s:6.2f}s  (start-up {info['startup_s']}s, "
                    f"work {info['work_s']}s)  removed {len(removed)}",
                    flush=True,
                )
                return {"wall": m.wall_s, "cpu": m.cpu_s, "info": info}

            return run

        try:
            results = interleave(
                {"ours": side("ours"), "datatrove": side("datatrove")}, args.warmup, args.repeats
            )
        except RuntimeError as e:  # a side crashed: no number is reported for either
            fail("dedup_throughput", unit, baseline_name, TARGET, e)
        report = compare(all_ids, group, kept)

    n = len(rows)
    rates = {
        (name, clock): spread([n / r[clock] for r in results[name]])
        for name in results
        for clock in ("cpu", "wall")
    }
    print(f"{'':10s} {'docs per CPU-second':>34s} {'docs per wall-second':>34s}")
    for name in results:
        print(f"{name:10s} {fmt(*rates[name, 'cpu']):>34s} {fmt(*rates[name, 'wall']):>34s}")
    print(
        f"planted groups {report['groups']}: cut to one by ours {report['ours_groups_cut_to_one']}, by datatrove "
        f"{report['datatrove_groups_cut_to_one']}; decided differently {report['groups_decided_differently']} "
        f"(tolerance {report['tolerance']['groups_decided_differently']}); unplanted removed: ours "
        f"{report['ours_unplanted_removed']}, datatrove {report['datatrove_unplanted_removed']}"
    )
    if not report["outputs_match"]:
        print("OUTPUTS DIFFER beyond the tolerance: the measurement is not valid (ok: false)")
    ours, ours_range = rates["ours", args.clock]
    base, base_range = rates["datatrove", args.clock]
    ratio = ours / base
    finish(
        {
            "benchmark": "dedup_throughput",
            "unit": unit,
            "ours": round(ours, 1),
            "baseline": round(base, 1),
            "baseline_name": baseline_name,
            "ratio": round(ratio, 3),
            "target": TARGET,
            "met": ratio >= TARGET,
            "ok": bool(report["outputs_match"]),
            "statistic": f"median of {args.repeats} after {args.warmup} warm-up",
            "ours_range": [round(x, 1) for x in ours_range],
            "baseline_range": [round(x, 1) for x in base_range],
            "ours_wall": round(rates["ours", "wall"][0], 1),
            "baseline_wall": round(rates["datatrove", "wall"][0], 1),
            "ratio_wall": round(rates["ours", "wall"][0] / rates["datatrove", "wall"][0], 3),
            "ours_cpu": round(rates["ours", "cpu"][0], 1),
            "baseline_cpu": round(rates["datatrove", "cpu"][0], 1),
            "ratio_cpu": round(rates["ours", "cpu"][0] / rates["datatrove", "cpu"][0], 3),
            "ours_startup_s": [r["info"]["startup_s"] for r in results["ours"]],
            "outputs": report,
            "documents": n,
            "cpus": args.cpus,
            "load_avg_before": load_before,
        }
    )


if __name__ == "__main__":
    main()
