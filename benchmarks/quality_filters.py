"""FineWeb's four quality filters, ours against datatrove 0.10.1's, on the same real C4 documents.

    python benchmarks/quality_filters.py             # all 350 sample documents, 1 warm-up + 5 runs a side
    python benchmarks/quality_filters.py --quick     # the first 60 documents, 1 warm-up + 2 runs a side

The documents: every C4 and CCNet sample of ../shared/data/fineweb (found through
RAYCHAT_SHARED_DATA), read into memory before any timing on both sides.

Both sides alike (benchmarks/README.md): single-process, in FineWeb's order (Gopher repetition,
Gopher quality, C4 with filter_no_terminal_punct=False, FineWeb quality), each document through the
chain until a filter drops it; the same warm-up pass (``--warmup``, untimed: it loads datatrove's
spaCy tokenizer and fills both sides' caches) and repetitions (``--repeats``), alternating which side
goes first; fresh document objects for every pass on both sides, made outside the timer. The clock is
CPU seconds of this process (``time.process_time``), documents per CPU-second, i.e. per core, which
other work on a shared machine distorts far less than wall time; the headline is the median, with the
range printed. datatrove's filters are called through ``filter()`` directly (no executor, writers or
stats), the fastest datatrove runs them. datatrove 0.10.1 tokenizes English with spaCy's blank ``en``
pipeline (rule-based, offline; needs the ``spacy`` package).

Outputs compared: each document's keep/drop decision. The two chains are separate implementations of
the same published rules (word tokenizers differ: spaCy's on datatrove's side), so the tolerance is 1%
of the documents deciding differently; beyond it ``ok`` is false and the script exits 1. Also printed:
which filter dropped what on each side. The last line is the JSON summary (ratio = our docs/s /
datatrove's docs/s; target 1.5), with our docs/s against the floor of 500 documents/s per core.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harness import SHARED, finish, fmt, interleave, load_average, spread  # noqa: E402
from pipelines.clean.filters.base import run_steps  # noqa: E402
from pipelines.clean.steps import QUALITY_STEPS, build_step  # noqa: E402

TARGET_RATIO = 1.5
FLOOR_DOCS_PER_S = 500
AGREEMENT_TOLERANCE = 0.01  # share of documents the two chains may decide differently


def load_documents(root: Path) -> list[dict]:
    """The C4-like samples of shared/data/fineweb: C4 (OLMo and LLaMA-Factory fixtures) and CCNet."""
    folder = root / "fineweb"
    if not folder.is_dir():
        raise SystemExit(f"no sample data at {folder} (set RAYCHAT_SHARED_DATA to the shared data folder)")
    docs: list[dict] = []
    for path in sorted(folder.glob("c4_olmo/*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [json.loads(line) for line in f if line.strip()]
    for path in sorted(folder.glob("c4_llamafactory/*.jsonl")) + sorted(folder.glob("ccnet_dolma/*.jsonl")):
        with open(path, encoding="utf-8") as f:
            docs += [json.loads(line) for line in f if line.strip()]
    return [{"id": str(i), "text": d["text"], "url": d.get("url", "")} for i, d in enumerate(docs)]


def ours(docs: list[dict], outcome: list[str]) -> Callable[[], float]:
    """One timed pass of our chain; fills ``outcome`` ("keep" or "step/reason" per document)."""
    steps = [build_step(name) for name in QUALITY_STEPS]

    def run() -> float:
        batch = copy.deepcopy(docs)  # our steps cache statistics on the document: start clean each pass
        start = time.process_time()
        result = run_steps(steps, batch)
        elapsed = time.process_time() - start
        by_id = {d["id"]: "keep" for d in result.kept}
        by_id.update({d["id"]: f"{d['step']}/{d['reason']}" for d in result.rejected + result.errors})
        outcome[:] = [by_id[d["id"]] for d in docs]
        return elapsed

    return run


def datatrove(docs: list[dict], outcome: list[str]) -> Callable[[], float]:
    """One timed pass of datatrove's chain, filter() called directly; fills ``outcome`` likewise."""
    try:
        import spacy  # noqa: F401 - datatrove's English word tokenizer
        from datatrove.data import Document
        from datatrove.pipeline.filters import (
            C4QualityFilter,
            FineWebQualityFilter,
            GopherQualityFilter,
            GopherRepetitionFilter,
        )
    except ImportError as e:
        raise SystemExit(
            f"the baseline needs datatrove==0.10.1 and spacy (pip install -e '.[dev]'): {e}"
        ) from None
    filters = [
        ("gopher_repetition", GopherRepetitionFilter()),
        ("gopher_quality", GopherQualityFilter()),
        ("c4", C4QualityFilter(filter_no_terminal_punct=False)),
        ("fineweb", FineWebQualityFilter()),
    ]

    def run() -> float:
        documents = [Document(text=d["text"], id=d["id"], metadata={"url": d["url"]}) for d in docs]
        verdicts: list[str] = []
        start = time.process_time()
        for doc in documents:
            verdict = "keep"
            for name, f in filters:
                result = f.filter(doc)
                if result is not True:
                    verdict = f"{name}/{result[1] if isinstance(result, tuple) else 'dropped'}"
                    break
            verdicts.append(verdict)
        elapsed = time.process_time() - start
        outcome[:] = verdicts
        return elapsed

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=0, help="use the first N documents (default: all)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes per side first")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per side (the median counts)")
    parser.add_argument("--quick", action="store_true", help="the first 60 documents, 2 timed passes")
    args = parser.parse_args()
    if args.quick:
        args.docs, args.repeats = 60, 2

    load_before = load_average()
    docs = load_documents(SHARED)
    if args.docs:
        docs = docs[: args.docs]
    chars = sum(len(d["text"]) for d in docs)
    print(
        f"{len(docs)} documents, {chars / len(docs):.0f} characters on average, from {SHARED / 'fineweb'}; "
        f"{args.warmup} warm-up + {args.repeats} timed passes a side; load average {load_before}"
    )

    our_outcome: list[str] = []
    their_outcome: list[str] = []
    seconds = interleave(
        {"ours": ours(docs, our_outcome), "datatrove": datatrove(docs, their_outcome)},
        args.warmup,
        args.repeats,
    )
    n = len(docs)
    mine, mine_range = spread([n / s for s in seconds["ours"]])
    theirs, theirs_range = spread([n / s for s in seconds["datatrove"]])
    print(f"ours:      {fmt(mine, mine_range)} docs per CPU-second (median of {args.repeats})")
    print(f"datatrove: {fmt(theirs, theirs_range)} docs per CPU-second (median of {args.repeats})")

    agree = sum((a == "keep") == (b == "keep") for a, b in zip(our_outcome, their_outcome, strict=True))
    same_step = sum(
        a.split("/")[0] == b.split("/")[0] for a, b in zip(our_outcome, their_outcome, strict=True)
    )
    print(f"keep/drop agreement: {agree}/{n} = {agree / n:.1%}")
    print(f"same deciding filter: {same_step}/{n} = {same_step / n:.1%}")
    ours_by_step = Counter(o.split("/")[0] for o in our_outcome)
    theirs_by_step = Counter(o.split("/")[0] for o in their_outcome)
    print(f"{'outcome':<20}{'ours':>6}{'datatrove':>11}")
    for step in ["keep", *QUALITY_STEPS]:
        print(f"{step:<20}{ours_by_step[step]:>6}{theirs_by_step[step]:>11}")
    differing = [
        (d["id"], a, b)
        for d, a, b in zip(docs, our_outcome, their_outcome, strict=True)
        if (a == "keep") != (b == "keep")
    ]
    for doc_id, a, b in differing[:8]:
        print(f"  document {doc_id}: ours {a} / datatrove {b}")
    allowed = int(AGREEMENT_TOLERANCE * n)
    outputs_match = len(differing) <= allowed
    if not outputs_match:
        print(f"OUTPUTS DIFFER: {len(differing)} decisions differ, tolerance {allowed} (ok: false)")
    verdict = "meets" if mine >= FLOOR_DOCS_PER_S else "is BELOW"
    print(f"ours {mine:.0f} docs/s per core {verdict} the floor of {FLOOR_DOCS_PER_S} docs/s per core")
    ratio = mine / theirs
    finish(
        {
            "benchmark": "quality_filters",
            "unit": "documents per CPU-second (1 core)",
            "ours": round(mine, 1),
            "baseline": round(theirs, 1),
            "baseline_name": "datatrove 0.10.1 Gopher repetition + Gopher quality + C4 + FineWeb filters",
            "ratio": round(ratio, 2),
            "target": TARGET_RATIO,
            "met": ratio >= TARGET_RATIO and mine >= FLOOR_DOCS_PER_S,
            "ok": outputs_match,
            "statistic": f"median of {args.repeats} after {args.warmup} warm-up",
            "ours_range": [round(x, 1) for x in mine_range],
            "baseline_range": [round(x, 1) for x in theirs_range],
            "agreement": round(agree / n, 4),
            "decisions_differing": len(differing),
            "decisions_differing_allowed": allowed,
            "outputs_match": outputs_match,
            "floor_docs_per_s": FLOOR_DOCS_PER_S,
            "documents": n,
            "load_avg_before": load_before,
        }
    )


if __name__ == "__main__":
    main()
