"""FineWeb's four quality filters, ours against datatrove 0.10.1's, on the same real C4 documents.

    .venv/bin/python benchmarks/quality_filters.py            # all 350 sample documents
    .venv/bin/python benchmarks/quality_filters.py --docs 100 # quicker

Speeds are documents per CPU-second of this process (``time.process_time``), i.e. per core, which
other work on a shared machine does not distort the way wall-clock time is. Both sides run
single-process, in FineWeb's order (Gopher repetition, Gopher quality,
C4 with filter_no_terminal_punct=False, FineWeb quality), each document through the chain until a
filter drops it. datatrove's filters are called through ``filter()`` directly (no pipeline executor,
no writers, no per-document stats), which is the fastest datatrove can run them. datatrove 0.10.1
tokenizes English with spaCy's blank ``en`` pipeline (rule-based, works offline; needs the ``spacy``
package); no nltk data is involved.

Also printed: how often the two chains agree on keep/drop, and which filter dropped what on each
side. The last line is the JSON summary (ratio = our docs/s / datatrove's docs/s; target 1.5), and
our absolute docs/s is compared with the issue's floor of 500 documents/s per core.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.clean.filters.base import run_steps  # noqa: E402
from pipelines.clean.steps import QUALITY_STEPS, build_step  # noqa: E402

TARGET_RATIO = 1.5
FLOOR_DOCS_PER_S = 500


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


def run_ours(docs: list[dict], repeats: int) -> tuple[float, list[str]]:
    """Best docs/s over ``repeats`` runs, and the outcome per document ("keep" or "step/reason")."""
    steps = [build_step(name) for name in QUALITY_STEPS]
    best = 0.0
    outcome: list[str] = []
    for _ in range(repeats):
        batch = copy.deepcopy(docs)
        start = time.process_time()
        result = run_steps(steps, batch)
        elapsed = time.process_time() - start
        best = max(best, len(docs) / elapsed)
        by_id = {d["id"]: "keep" for d in result.kept}
        by_id.update({d["id"]: f"{d['step']}/{d['reason']}" for d in result.rejected + result.errors})
        outcome = [by_id[d["id"]] for d in docs]
    return best, outcome


def run_datatrove(docs: list[dict]) -> tuple[float, list[str]]:
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
            f"the baseline needs datatrove==0.10.1 and spacy (pip install -e .[dev] spacy): {e}"
        ) from e
    filters = [
        ("gopher_repetition", GopherRepetitionFilter()),
        ("gopher_quality", GopherQualityFilter()),
        ("c4", C4QualityFilter(filter_no_terminal_punct=False)),
        ("fineweb", FineWebQualityFilter()),
    ]
    documents = [Document(text=d["text"], id=d["id"], metadata={"url": d["url"]}) for d in docs]
    filters[1][1].filter(Document(text="warm up the tokenizer " * 20, id="warmup"))
    outcome: list[str] = []
    start = time.process_time()
    for doc in documents:
        verdict = "keep"
        for name, f in filters:
            result = f.filter(doc)
            if result is not True:
                reason = result[1] if isinstance(result, tuple) else "dropped"
                verdict = f"{name}/{reason}"
                break
        outcome.append(verdict)
    elapsed = time.process_time() - start
    return len(docs) / elapsed, outcome


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=0, help="use the first N documents (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours (best is reported)")
    args = parser.parse_args()

    root = Path(os.environ.get("RAYCHAT_SHARED_DATA", REPO.parent / "shared" / "data"))
    docs = load_documents(root)
    if args.docs:
        docs = docs[: args.docs]
    chars = sum(len(d["text"]) for d in docs)
    print(f"{len(docs)} documents, {chars / len(docs):.0f} characters on average, from {root / 'fineweb'}")

    ours, our_outcome = run_ours(docs, args.repeats)
    print(f"ours:      {ours:8.1f} docs/s (best of {args.repeats})")
    theirs, their_outcome = run_datatrove(docs)
    print(f"datatrove: {theirs:8.1f} docs/s")

    agree = sum((a == "keep") == (b == "keep") for a, b in zip(our_outcome, their_outcome, strict=True))
    same_step = sum(
        a.split("/")[0] == b.split("/")[0] for a, b in zip(our_outcome, their_outcome, strict=True)
    )
    print(f"keep/drop agreement: {agree}/{len(docs)} = {agree / len(docs):.1%}")
    print(f"same deciding filter: {same_step}/{len(docs)} = {same_step / len(docs):.1%}")
    ours_by_step = Counter(o.split("/")[0] for o in our_outcome)
    theirs_by_step = Counter(o.split("/")[0] for o in their_outcome)
    print(f"{'outcome':<20}{'ours':>6}{'datatrove':>11}")
    for step in ["keep", *QUALITY_STEPS]:
        print(f"{step:<20}{ours_by_step[step]:>6}{theirs_by_step[step]:>11}")
    disagreements = Counter(
        (a, b) for a, b in zip(our_outcome, their_outcome, strict=True) if (a == "keep") != (b == "keep")
    )
    for (a, b), n in disagreements.most_common(8):
        print(f"  disagree x{n}: ours {a} / datatrove {b}")

    verdict = "meets" if ours >= FLOOR_DOCS_PER_S else "BELOW"
    print(f"ours {ours:.0f} docs/s per core {verdict} the floor of {FLOOR_DOCS_PER_S} docs/s per core")
    summary = {
        "benchmark": "quality_filters",
        "unit": "docs/s (1 core)",
        "ours": round(ours, 1),
        "baseline": round(theirs, 1),
        "baseline_name": "datatrove 0.10.1 Gopher+C4+FineWeb filters",
        "ratio": round(ours / theirs, 2),
        "target": TARGET_RATIO,
        "agreement": round(agree / len(docs), 4),
        "floor_docs_per_s": FLOOR_DOCS_PER_S,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
