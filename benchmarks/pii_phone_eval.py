"""Phone-number masking: recall, precision and keep-rate on labelled sentences, and the cost per document.

    .venv/bin/python benchmarks/pii_phone_eval.py                 # both splits, speed on real text
    .venv/bin/python benchmarks/pii_phone_eval.py --split heldout --show 20

Quality: the labelled sentences of ``pipelines/world/phone_cases.py`` (phone numbers of 27 countries
written nationally, internationally and with a dialling prefix; text with digits that must stay:
dates, years, times, prices, postcodes, street numbers, versions, ISBNs, order numbers, coordinates,
percentages, counts, phone-like digit strings no plan allows). Rules were tuned on ``tune``;
``heldout`` has other seeds, other sentences and separator styles, and 12 countries more.

- recall: phone numbers whose every digit was masked ("exact" also needs the masked stretch to be
  the number, no more and no less);
- keep: non-phone items left verbatim (no masked stretch touches them);
- precision: masked stretches that are (part of) a labelled phone number.

Both sides run on the same sentences: ours (``PIIMasker``, libphonenumber + context rules) and the
baseline, the regular expressions this project used before (kept below, verbatim). The masker's
text output is checked against the spans it reports; a mismatch is a failure in the JSON.

Speed: the whole PII step (e-mails, IPs, phones) over the C4/CCNet samples of shared/data/fineweb,
documents per CPU-second of this process (``time.process_time``), median of ``--repeats`` runs after
one warm-up run, both sides alike. The last line is the JSON summary; the bar is recall >= 0.8 and
keep >= 0.9 on the held-out split.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from quality_filters import load_documents  # noqa: E402

from pipelines.clean.filters.phones import PhoneFinder  # noqa: E402
from pipelines.clean.filters.pii import PIIConfig, PIIMasker  # noqa: E402
from pipelines.world.phone_cases import SPLITS, Case, build_cases, score  # noqa: E402

RECALL_BAR = 0.8
KEEP_BAR = 0.9

# -- the baseline: the phone regex of pipelines/clean/filters/pii.py before libphonenumber ----------
_SEP = r"[ .\-]"
_OLD_PHONE = re.compile(
    "|".join(
        [
            r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .\-]?\(0\))?(?:[ .\-]?\(?\d{1,4}\)?){2,5}",
            rf"(?<![\w.\-/+])(?:1{_SEP})?(?:\([2-9]\d\d\)\s?|[2-9]\d\d{_SEP})\d{{3}}{_SEP}\d{{4}}",
            r"(?<![\w.,\-/+])0[1-9]\d{0,3}(?:[ /\-]\d{2,8}){1,4}",
        ]
    )
    + r"(?![\w\-/]|[.,]\d)"
)
_OLD_DATE_LIKE = re.compile(r"^\+?\d{1,4}[ \-/.]\d{1,2}[ \-/.]\d{1,4}$")


def old_regex_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _OLD_PHONE.finditer(text):
        digits = sum(c.isdigit() for c in m.group())
        if 9 <= digits <= 15 and not _OLD_DATE_LIKE.match(m.group()):
            spans.append(m.span())
    return spans


class OldRegexMasker(PIIMasker):
    """Today's masker with the old phone regex in place of libphonenumber (the speed baseline)."""

    def __init__(self) -> None:
        super().__init__(PIIConfig(phones=False))

    def map(self, doc: dict) -> None:
        super().map(doc)
        text = doc["text"]
        for start, end in reversed(old_regex_spans(text)):
            text = text[:start] + self.config.phone_placeholder + text[end:]
            self.counts["phone"] += 1
        doc["text"] = text


def masker_agrees(cases: list[Case], masker: PIIMasker, finder: PhoneFinder) -> bool:
    """The masker's output is the text with exactly the finder's spans replaced."""
    placeholder = masker.config.phone_placeholder
    for case in cases:
        doc = {"text": case.text}
        masker.map(doc)
        expected = case.text
        for start, end in reversed(finder.spans(case.text)):
            expected = expected[:start] + placeholder + expected[end:]
        if doc["text"] != expected:
            print(f"MISMATCH: {case.text!r} -> {doc['text']!r}, expected {expected!r}")
            return False
    return True


def print_split(name: str, ours: dict, base: dict, show: int) -> None:
    print(f"\n== {name}: ours (libphonenumber + context) vs baseline (old regex)")
    print(f"{'':26}{'ours':>8}{'old':>8}{'n':>6}")
    for key in ("recall", "exact", "keep", "precision"):
        print(f"{key:26}{ours[key]:8.3f}{base[key]:8.3f}")
    for key in sorted(ours["rates"], key=lambda k: (k.split("/")[0], k)):
        if "/" in key:
            (o, n), (b, _) = ours["rates"][key], base["rates"][key]
            print(f"  {key:24}{o:8.3f}{b:8.3f}{n:6d}")
    for text, number, country, touched in ours["misses"][:show]:
        print(f"  missed [{country}] {number!r} in {text!r} (masked {touched})")
    for text, hits, category in ours["false_hits"][:show]:
        print(f"  false [{category}] {hits} in {text!r}")


# -- speed ---------------------------------------------------------------------------------------------
def time_masker(
    make: Callable[[], PIIMasker], docs: list[dict], repeats: int
) -> tuple[list[float], dict, list]:
    rates, counts, texts = [], {}, []
    for i in range(repeats + 1):  # the first run warms up (libphonenumber loads its metadata lazily)
        masker = make()
        batch = copy.deepcopy(docs)
        start = time.process_time()
        for doc in batch:
            masker.map(doc)
        elapsed = time.process_time() - start
        if i:
            rates.append(len(docs) / elapsed)
        counts, texts = dict(masker.counts), [d["text"] for d in batch]
    return rates, counts, texts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=[*SPLITS, "both"], default="both")
    parser.add_argument("--show", type=int, default=8, help="misses and false hits printed per split")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on real text (median reported)")
    parser.add_argument(
        "--data", type=Path, default=None, help="shared data folder (default: ../shared/data)"
    )
    args = parser.parse_args()

    config = PIIConfig()
    finder = PhoneFinder(config.phone_regions)
    print(f"regions: {' '.join(config.phone_regions)}")
    results, agree = {}, True
    for split in SPLITS if args.split == "both" else [args.split]:
        cases = build_cases(split)
        ours, base = score(cases, finder.spans), score(cases, old_regex_spans)
        # phones alone: e-mails and IPs are masked first, and a dotted number such as 29.46.26.12 is
        # a public IPv4 address to the IP step (it is masked, as an address)
        agree &= masker_agrees(
            cases, PIIMasker(config.model_copy(update={"emails": False, "ips": False})), finder
        )
        print_split(split, ours, base, args.show)
        results[split] = (ours, base)

    import os

    root = args.data or Path(os.environ.get("RAYCHAT_SHARED_DATA", REPO.parent / "shared" / "data"))
    docs = load_documents(root)
    new_rates, new_counts, new_texts = time_masker(lambda: PIIMasker(config), docs, args.repeats)
    old_rates, old_counts, _ = time_masker(OldRegexMasker, docs, args.repeats)
    new_speed, old_speed = statistics.median(new_rates), statistics.median(old_rates)
    print(f"\n== speed: the PII step on {len(docs)} real documents (C4/CCNet samples), docs per CPU-second")
    print(f"ours     {new_speed:9.1f} (range {min(new_rates):.1f}-{max(new_rates):.1f}), counts {new_counts}")
    print(f"old      {old_speed:9.1f} (range {min(old_rates):.1f}-{max(old_rates):.1f}), counts {old_counts}")
    masked_docs = [t for t, d in zip(new_texts, docs, strict=True) if t != d["text"]]
    print(f"documents changed by ours: {len(masked_docs)}")

    judged = "heldout" if "heldout" in results else next(iter(results))
    ours, base = results[judged]
    ok = agree and ours["recall"] >= RECALL_BAR and ours["keep"] >= KEEP_BAR
    summary = {
        "benchmark": "pii_phone_eval",
        "unit": f"phone recall on the {judged} split",
        "ours": round(ours["recall"], 4),
        "baseline": round(base["recall"], 4),
        "baseline_name": "the old phone regex (pii.py before libphonenumber)",
        "ratio": round(ours["recall"] / base["recall"], 2) if base["recall"] else None,
        "target": {"recall": RECALL_BAR, "keep": KEEP_BAR},
        "keep": round(ours["keep"], 4),
        "baseline_keep": round(base["keep"], 4),
        "precision": round(ours["precision"], 4),
        "exact": round(ours["exact"], 4),
        "splits": {
            s: {k: round(r[0][k], 4) for k in ("recall", "keep", "precision")} for s, r in results.items()
        },
        "docs_per_cpu_s": round(new_speed, 1),
        "baseline_docs_per_cpu_s": round(old_speed, 1),
        "masker_output_matches_spans": agree,
        "meets_bar": ok,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
