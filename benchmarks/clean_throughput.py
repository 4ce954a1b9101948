"""Documents per CPU-second of the whole ``raychat clean`` command against datatrove 0.10.1 running
FineWeb's steps, on real crawl pages.

    .venv/bin/python benchmarks/clean_throughput.py                    # 3,000 pages, 3 runs a side
    .venv/bin/python benchmarks/clean_throughput.py --pages 1000 10000 --runs 3 1
    .venv/bin/python benchmarks/clean_throughput.py --settings both    # also trafilatura's fast=True

Input (benchmarks/_crawl_copies.py): the 46 real HTML pages of shared/data/crawl (a Common Crawl
and a ClueWeb09 excerpt, Common Crawl's tutorial page) and the 30 real article pages of newspaper4k's
test data (``--no-articles`` leaves them out), every page copied equally often with a new record id and
URL, in gzipped WARC files of ``--pages-per-file`` pages (about 30 MB each at 600). Both sides read
the same files and every page of them (checked: datatrove's reader count must equal the pages).

The whole command, as each side's users run it, in a subprocess, start to exit:
  ours       ``raychat clean --input DIR --output RUN --steps extract,quality,pii`` (the Ray start,
             both passes and every output written are inside the timer);
  datatrove  ``python benchmarks/_datatrove_fineweb.py`` (a script with LocalPipelineExecutor,
             ``--tasks`` tasks on 2 workers: WarcReader -> Trafilatura -> Gopher repetition -> Gopher
             quality -> C4 -> FineWeb quality, each with its exclusion writer as in FineWeb ->
             PIIFormatter -> JsonlWriter).
Same settings on both sides (``--settings``): trafilatura ``favor_precision=True``, ``fast=False``
(``default``: raychat's, datatrove's and FineWeb's; ``fast``: ``fast=True``, which skips trafilatura's
fallback extractors), ``deduplicate=False``
(datatrove's default is True, which on copied pages would strip the copies' text), tables kept,
comments dropped, a 30 s time limit per page (``--timeout``; the defaults, ours 2 s and datatrove's
1 s, are wall-clock limits that an overloaded shared machine trips on its largest pages, which
changed a run's output here). ``both`` runs the two settings.

``--steps all`` times the full stage instead: ours with every step (URL filter with the UT1 lists of
shared/data, language ID with lid.176.ftz, exact + MinHash dedup on Ray Data); datatrove adds its
URLFilter (the same entries), LanguageFilter (en, 0.65, the same model file) and FineWeb's MinHash
stages (signatures, 14 buckets, clusters, filter) before PIIFormatter. datatrove has no exact-dedup
stage; MinHash finds exact copies too.

Per core: input pages / CPU-seconds of every process of the command (the CLI, Ray's GCS, raylet,
agents and workers, the extraction sandboxes; datatrove's executor, pool workers and sandboxes).
Method: this process makes itself a child subreaper (so a process whose parent exits stays in its
tree) and samples utime + stime of every descendant from /proc every 0.2 s; a process that exits
loses at most its last interval. On datatrove, whose children are all waited for, the sampled sum
is checked against ``getrusage(RUSAGE_CHILDREN)`` and printed (Ray reaps its workers with SIGCHLD
ignored, so the kernel's children totals miss them, which is why sampling is the method). Wall-clock
docs/s per core (pages / (wall x 2)) is printed too; on a shared, busy machine it mostly measures
the other tenants. Each side runs ``--runs`` times, alternating which goes first; the median counts
and the range is printed. Warm-up, the same for both: one untimed run each on 76 pages.

Outputs compared: the ids of the pages each side keeps must be the same set (a difference fails the
run: ``"ok": false`` in the JSON); with ``--steps all``, the source URLs of the kept pages, each as
often as it is kept (which copy of a page survives dedup may differ). PII masking differs on purpose (ours also masks phone numbers), so
texts are not compared. Also printed: extraction + quality filters alone, one process each, on the
same records already read (``--extract-docs``), to show per-page costs without start-up.

The LAST line is the JSON summary; target ratio 1.5 (docs per CPU-second, ours / datatrove).
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from benchmarks.harness import TreeCpu, proc_table  # noqa: E402

TARGET_RATIO = 1.5
CORES = 2
SAMPLE_INTERVAL_S = 0.2
PR_SET_CHILD_SUBREAPER = 36
SETTINGS = {"default": False, "fast": True}  # name -> trafilatura fast
UT1 = Path(os.environ.get("RAYCHAT_SHARED_DATA", REPO.parent / "shared" / "data")) / "blocklists" / "ut1"


# ---- CPU seconds of a command's process tree -----------------------------------------------------


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _reap_orphans(timeout_s: float = 60.0) -> int:
    """Wait for every process that was re-parented to us (Ray's daemons exit after the driver)."""
    deadline = time.monotonic() + timeout_s
    left = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid == 0:
            left = sum(1 for _, (ppid, *_r) in proc_table().items() if ppid == os.getpid())
            if time.monotonic() > deadline:
                return left
            time.sleep(0.05)


def timed_command(cmd: list[str], log: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` to its end and the exit of all its processes; wall and CPU seconds of the tree."""
    before = _children_cpu()
    with log.open("ab") as out, TreeCpu(SAMPLE_INTERVAL_S) as meter:
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
        wall = time.perf_counter() - start
        lingering = _reap_orphans()
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}; log {log}:\n{tail}")
    return {
        "wall_s": wall,
        "cpu_s": meter.seconds,
        "rusage_children_cpu_s": _children_cpu() - before,
        "by_name": meter.by_name(),
        "lingering": lingering,
    }


# ---- the two commands ------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def ours_command(folder: Path, out: Path, fast: bool, steps: str, timeout: float) -> list[str]:
    raychat = Path(sys.executable).with_name("raychat")
    cmd = [str(raychat)] if raychat.exists() else [sys.executable, "-m", "pipelines.cli"]
    cmd += ["clean", "--input", str(folder), "--output", str(out), "--steps", steps]
    if steps == "all":
        cmd += ["--set", f"clean.url.blocklists={json.dumps([str(UT1)])}"]
    return [
        *cmd,
        "--set",
        f"clean.extract.fast={str(fast).lower()}",
        "--set",
        f"clean.extract.timeout_s={timeout}",
    ]


def datatrove_command(folder: Path, out: Path, fast: bool, args: argparse.Namespace) -> list[str]:
    tasks, steps = args.tasks, args.steps
    blocklists = ["--blocklists", str(UT1)] if steps == "all" else []
    return [
        sys.executable,
        str(BENCH / "_datatrove_fineweb.py"),
        "--input",
        str(folder),
        "--output",
        str(out),
        "--steps",
        steps,
        *blocklists,
        "--tasks",
        str(tasks),
        "--workers",
        str(CORES),
        "--favour-precision",
        "--fast" if fast else "--no-fast",
        "--no-deduplicate",
        "--timeout",
        str(args.timeout),
    ]


def _kept_key(rows: list[tuple[str, str]], steps: str) -> tuple[str, ...]:
    """What must be equal on both sides: the kept ids; with dedup, which of a page's copies survives
    may differ, so the kept pages' source URLs (copy number removed), each as often as it is kept."""
    if steps != "all":
        return tuple(sorted(i for i, _ in rows))
    return tuple(sorted(re.sub(r"[?&]raychat_copy=\d+", "", url) for _, url in rows))


def outcome_ours(out: Path, steps: str) -> dict[str, Any]:
    """The kept pages, records read, and the extraction's wall seconds (stats.json)."""
    import pyarrow.parquet as pq

    rows: list[tuple[str, str]] = []
    for path in (out / "data" / "clean").rglob("*.parquet"):
        table = pq.read_table(path, columns=["id", "url"], partitioning=None)
        rows += zip(table.column("id").to_pylist(), table.column("url").to_pylist(), strict=True)
    stats = json.loads((out / "data" / "stats.json").read_text())
    extract_s = stats["counts"].get("extract", {}).get("extract_ms", 0) / 1000
    return {"kept": _kept_key(rows, steps), "read": stats["records"], "steps": {"extraction": extract_s}}


def outcome_datatrove(out: Path, steps: str) -> dict[str, Any]:
    """The kept pages, documents read, and wall seconds per step (its stats.json)."""
    docs = [json.loads(line) for p in (out / "output").glob("*.jsonl.gz") for line in gzip.open(p, "rt")]
    ids = _kept_key([(d["id"], d["metadata"]["url"]) for d in docs], steps)
    stats = json.loads((out / "logs" / "base_processing" / "stats.json").read_text())
    read = next(s for s in stats if "Warc" in s["name"])["stats"].get("documents", {})
    steps = {
        s["name"].split(":", 1)[-1].strip(" -"): float(s.get("time_stats", {}).get("total", 0.0))
        for s in stats
    }
    return {"kept": ids, "read": read.get("total", 0) if isinstance(read, dict) else read, "steps": steps}


def run_side(side: str, folder: Path, work: Path, fast: bool, args: argparse.Namespace, tag: str) -> dict:
    out = work / f"{side}-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    if side == "ours":
        cmd = ours_command(folder, out, fast, args.steps, args.timeout)
    else:
        cmd = datatrove_command(folder, out, fast, args)
    result = timed_command(cmd, work / f"{side}.log", _env())
    result.update((outcome_ours if side == "ours" else outcome_datatrove)(out, args.steps))
    shutil.rmtree(out, ignore_errors=True)
    return result


# ---- extraction + quality filters alone, one process ------------------------------------------------


def extract_quality(side: str, records: list[dict], fast: bool, timeout: float) -> dict[str, Any]:
    """One pass of the extraction + 4 quality filters over records already read, this process and its
    extraction sandbox (both sides run their extractor in a forked child, as in their pipelines)."""
    start_cpu, start_children, start = time.process_time(), _children_cpu(), time.perf_counter()
    if side == "ours":
        from pipelines.clean.config import CleanConfig
        from pipelines.clean.extract import HtmlExtractor
        from pipelines.clean.filters.base import run_steps
        from pipelines.clean.steps import QUALITY_STEPS, build_step

        cfg = CleanConfig()
        cfg.extract.fast, cfg.extract.timeout_s, cfg.extract.timeout_mode = fast, timeout, "process"
        steps = [HtmlExtractor(cfg.extract), *(build_step(n, getattr(cfg, n)) for n in QUALITY_STEPS)]
        docs = [
            {"_key": str(i), "text": "", "content": r["content"], "content_type": "html"}
            for i, r in enumerate(records)
        ]
        kept = []
        for i in range(0, len(docs), cfg.batch_size):
            kept += [d["_key"] for d in run_steps(steps, docs[i : i + cfg.batch_size]).kept]
        steps[0].close()
    else:
        from datatrove.data import Document
        from datatrove.pipeline.extractors import Trafilatura
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )

        pipeline = [
            Trafilatura(favour_precision=True, fast=fast, deduplicate=False, timeout=timeout),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            C4QualityFilter(filter_no_terminal_punct=False),
            FineWebQualityFilter(),
        ]
        data: Any = (Document(text=r["content"], id=str(i)) for i, r in enumerate(records))
        for step in pipeline:
            data = step(data)
        kept = [d.id for d in data]  # the sandbox child is joined (its CPU reaped) when this ends
    return {
        "cpu_s": time.process_time() - start_cpu + _children_cpu() - start_children,
        "wall_s": time.perf_counter() - start,
        "kept": set(kept),
    }


def read_html(folder: Path, limit: int) -> list[dict]:
    """The first ``limit`` HTML records, round-robin over the files, through our reader."""
    from pipelines.clean.readers import read_file
    from pipelines.inputs import expand_inputs

    files, _ = expand_inputs([str(folder)])
    streams = [
        (r for r in read_file(f) if not r.get("_error") and r["content_type"] == "html") for f in files
    ]
    out: list[dict] = []
    while streams and len(out) < limit:
        for s in list(streams):
            r = next(s, None)
            if r is None:
                streams.remove(s)
            elif len(out) < limit:
                out.append(r)
    return out


# ---- report ------------------------------------------------------------------------------------------


def med_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], digits: int = 1) -> str:
    m, lo, hi = med_range(values)
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})" if len(values) > 1 else f"{m:.{digits}f}"


def measure_size(
    args: argparse.Namespace, pages: int, runs: int, work: Path, warm: Path
) -> tuple[dict[str, Any], list[str]]:
    from _crawl_copies import write_copies

    folder = work / f"input-{pages}"
    files = write_copies(pages, folder, args.pages_per_file, articles=not args.no_articles)
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"\n== {pages} pages: {len(files)} WARC files, {mb:.0f} MB; load average {os.getloadavg()[0]:.1f}")
    results: dict[str, dict[str, list[dict]]] = {}
    problems: list[str] = []
    for setting in args.settings:
        fast = SETTINGS[setting]
        for side in ("ours", "datatrove"):  # warm-up, untimed: imports, page cache
            run_side(side, warm, work, fast, args, "warmup")
        runs_by_side: dict[str, list[dict]] = {"ours": [], "datatrove": []}
        for i in range(runs):
            order = ("ours", "datatrove") if i % 2 == 0 else ("datatrove", "ours")
            for side in order:
                r = run_side(side, folder, work, fast, args, f"{pages}-{setting}")
                runs_by_side[side].append(r)
                print(
                    f"  {setting:8} {side:10} run {i + 1}: {r['cpu_s']:6.1f} CPU-s {r['wall_s']:6.1f} wall-s "
                    f"{pages / r['cpu_s']:6.1f} docs/CPU-s  kept {len(r['kept'])}  "
                    f"(load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        for side, rs in runs_by_side.items():
            for r in rs:
                if r["read"] != pages:
                    problems.append(f"{pages} pages, {setting}: {side} read {r['read']} documents")
            if any(r["kept"] != rs[0]["kept"] for r in rs):
                problems.append(f"{pages} pages, {setting}: {side}'s kept set differs between runs")
        ours_kept, dt_kept = runs_by_side["ours"][0]["kept"], runs_by_side["datatrove"][0]["kept"]
        if ours_kept != dt_kept:
            only_ours, only_dt = Counter(ours_kept) - Counter(dt_kept), Counter(dt_kept) - Counter(ours_kept)
            problems.append(
                f"{pages} pages, {setting}: kept pages differ (ours {len(ours_kept)}, datatrove {len(dt_kept)}, "
                f"only ours {sum(only_ours.values())}, only datatrove {sum(only_dt.values())})"
            )
        results[setting] = runs_by_side
    return results, problems


def summarize(pages: int, results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting, sides in results.items():
        per_cpu = {s: [pages / r["cpu_s"] for r in rs] for s, rs in sides.items()}
        per_wall = {s: [pages / (r["wall_s"] * CORES) for r in rs] for s, rs in sides.items()}
        out[setting] = {
            "ours": med_range(per_cpu["ours"]),
            "baseline": med_range(per_cpu["datatrove"]),
            "ratio": statistics.median(per_cpu["ours"]) / statistics.median(per_cpu["datatrove"]),
            "ours_wall": med_range(per_wall["ours"]),
            "baseline_wall": med_range(per_wall["datatrove"]),
            "ratio_wall": statistics.median(per_wall["ours"]) / statistics.median(per_wall["datatrove"]),
            "ours_cpu_s": med_range([r["cpu_s"] for r in sides["ours"]]),
            "baseline_cpu_s": med_range([r["cpu_s"] for r in sides["datatrove"]]),
            "kept": len(sides["ours"][0]["kept"]),
        }
        print(f"  {setting}: docs per CPU-second, median (range) of {len(per_cpu['ours'])}:")
        for side in ("ours", "datatrove"):
            rs = sides[side]
            top = Counter()
            for r in rs:
                top.update(r["by_name"])
            top_line = ", ".join(f"{n} {s / len(rs):.1f}" for n, s in top.most_common(6))
            steps: Counter[str] = Counter()
            for r in rs:
                steps.update(r["steps"])
            steps_line = ", ".join(f"{n} {t / len(rs):.1f}" for n, t in steps.most_common(8))
            print(
                f"    {side:10} {fmt(per_cpu[side])} docs/CPU-s, {fmt(per_wall[side])} docs/s/core wall; "
                f"CPU-s {fmt([r['cpu_s'] for r in rs])}\n      CPU-s by process (mean): {top_line}\n"
                f"      wall-s in steps, summed over workers (mean, its own accounting): {steps_line}"
            )
        dt = sides["datatrove"]
        print(
            "    datatrove check: sampled "
            f"{fmt([r['cpu_s'] for r in dt])} CPU-s vs getrusage(children) {fmt([r['rusage_children_cpu_s'] for r in dt])}"
        )
        print(
            f"    ratio ours/datatrove: {out[setting]['ratio']:.2f} per CPU-s, {out[setting]['ratio_wall']:.2f} wall"
        )
    return out


def extract_part(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from datatrove.utils.logging import logger as datatrove_logger

    datatrove_logger.remove()  # its steps run in this process here; their INFO lines are noise
    records = read_html(folder, args.extract_docs)
    n = len(records)
    print(f"\n== extraction + 4 quality filters alone, one process, {n} HTML records already read")
    out: dict[str, Any] = {}
    problems = []
    for setting in args.settings:
        fast = SETTINGS[setting]
        for side in ("ours", "datatrove"):
            extract_quality(side, records[:20], fast, args.timeout)  # warm-up: imports, spaCy, lxml
        got: dict[str, list[dict]] = {"ours": [], "datatrove": []}
        for i in range(args.extract_runs):
            for side in ("ours", "datatrove") if i % 2 == 0 else ("datatrove", "ours"):
                got[side].append(extract_quality(side, records, fast, args.timeout))
        ms = {s: [1000 * r["cpu_s"] / n for r in rs] for s, rs in got.items()}
        if got["ours"][0]["kept"] != got["datatrove"][0]["kept"]:
            problems.append(f"extraction + quality, {setting}: kept sets differ")
        ratio = statistics.median(ms["datatrove"]) / statistics.median(ms["ours"])
        print(
            f"  {setting:8} CPU ms per page, median (range) of {args.extract_runs}: ours {fmt(ms['ours'], 2)}, "
            f"datatrove {fmt(ms['datatrove'], 2)}; ratio {ratio:.2f}; kept {len(got['ours'][0]['kept'])} / "
            f"{len(got['datatrove'][0]['kept'])}"
        )
        out[f"extract_quality_ms_ours_{setting}"] = round(statistics.median(ms["ours"]), 2)
        out[f"extract_quality_ms_baseline_{setting}"] = round(statistics.median(ms["datatrove"]), 2)
        out[f"extract_quality_ratio_{setting}"] = round(ratio, 2)
    return {"summary": out, "problems": problems}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, nargs="+", default=[3000], help="input sizes (default 3000)")
    p.add_argument("--runs", type=int, nargs="+", default=[3], help="runs per side, per size (default 3)")
    p.add_argument("--settings", choices=["default", "fast", "both"], default="default")
    p.add_argument("--steps", choices=["extract,quality,pii", "all"], default="extract,quality,pii")
    p.add_argument("--pages-per-file", type=int, default=600)
    p.add_argument("--no-articles", action="store_true", help="the 46 crawl pages only")
    p.add_argument("--tasks", type=int, default=CORES, help="datatrove tasks (default 2, on 2 workers)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-page extraction limit, s (both sides)")
    p.add_argument("--extract-docs", type=int, default=500, help="records for the one-process part (0: skip)")
    p.add_argument("--extract-runs", type=int, default=3)
    p.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)")
    args = p.parse_args()
    args.settings = ["default", "fast"] if args.settings == "both" else [args.settings]
    runs = args.runs + [args.runs[-1]] * (len(args.pages) - len(args.runs))

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("note: could not become a child subreaper; orphaned processes are not counted", file=sys.stderr)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="clean_throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report(args, runs, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, runs: list[int], work: Path) -> None:
    from _crawl_copies import write_copies

    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; trafilatura favor_precision, "
        f"deduplicate off, {args.timeout:g} s limit on both sides; settings {args.settings}; steps {args.steps}"
    )
    warm = work / "warmup-input"
    write_copies(76, warm, args.pages_per_file, articles=not args.no_articles)
    summary: dict[str, Any] = {}
    problems: list[str] = []
    if args.extract_docs:
        part = extract_part(args, warm if args.extract_docs <= 76 else _sample_input(args, work))
        summary.update(part["summary"])
        problems += part["problems"]
    by_size: dict[str, Any] = {}
    for pages, n in zip(args.pages, runs, strict=True):
        results, trouble = measure_size(args, pages, n, work, warm)
        problems += trouble
        by_size[str(pages)] = summarize(pages, results)
    for msg in problems:
        print(f"MISMATCH: {msg}")
    main_size = by_size[str(args.pages[0])][args.settings[0]]
    print(
        json.dumps(
            {
                "benchmark": "clean_throughput",
                "unit": "docs/CPU-s",
                "ours": round(main_size["ours"][0], 1),
                "baseline": round(main_size["baseline"][0], 1),
                "baseline_name": f"datatrove 0.10.1 FineWeb steps ({args.steps}), LocalPipelineExecutor, "
                f"trafilatura settings '{args.settings[0]}' on both sides",
                "ratio": round(main_size["ratio"], 2),
                "target": TARGET_RATIO,
                "ok": not problems,
                "problems": problems,
                "pages": args.pages[0],
                "ours_range": [round(x, 1) for x in main_size["ours"][1:]],
                "baseline_range": [round(x, 1) for x in main_size["baseline"][1:]],
                "by_size": _rounded(by_size),
                **summary,
            }
        )
    )


def _rounded(value: Any) -> Any:
    """Floats to 2 decimals, tuples to lists, all the way down (for the JSON line)."""
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, tuple | list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _sample_input(args: argparse.Namespace, work: Path) -> Path:
    from _crawl_copies import write_copies

    folder = work / "extract-input"
    if not folder.exists():
        write_copies(args.extract_docs, folder, args.pages_per_file, articles=not args.no_articles)
    return folder


if __name__ == "__main__":
    main()
