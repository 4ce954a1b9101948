"""SFT data sources: load chat data of any supported format, and mix several sources by a config.

    from pipelines.sft.sources import MixtureConfig, SourceConfig, build_mixture
    mix = build_mixture(MixtureConfig(sources=[
        SourceConfig(path="../shared/data/sft/alpaca_en_demo.json"),                 # format detected
        SourceConfig(path="../shared/data/gsm8k/train.jsonl", format="gsm8k", epochs=2),
        SourceConfig(path="oasst/*.jsonl.gz", format="oasst", oasst_languages=["en"], max_records=5000),
    ], seed=0))
    mix.conversations        # shuffled, each with meta {"source", "where", "format", ..., "source_file"}
    print(mix.summary())     # per source: read, kept, skipped by reason, used, epochs

Pure Python, no Ray: the SFT, RL and distillation stages call it on the driver (or inside a Ray Data
task per source). Bad records are skipped and counted by reason, and the first few are logged with
file, line and what is wrong; a source that yields nothing, or mostly bad records
(``max_bad_fraction``), is a ``SourceError`` naming it, because that is a wrong path or format rather
than a few broken lines.

**Sizes**: without ``MixtureConfig.size``, a source contributes ``round(epochs x conversations)``
examples (``epochs`` 2 repeats it, 0.5 takes a seeded half). With ``size``, the mixture has ``size``
examples split by the sources' ``weight`` (a source asked for more than it has is repeated); setting
``epochs`` then is an error, as is setting ``weight`` without ``size``. Whole passes repeat every
conversation; a fraction of a pass is a seeded sample; the mixture is shuffled with ``seed``.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lm.chat_messages import Conversation
from pipelines.records import Problem, Record, list_files, read_records
from pipelines.sft.formats import (
    CONVERTERS,
    FORMATS,
    RecordError,
    detect_format,
    oasst_conversations,
)
from pipelines.sft.source_config import MixtureConfig, SourceConfig

log = logging.getLogger("raychat")

SOURCE_FILE = "source_file"  # the meta key of the file a conversation was read from
DETECT_SAMPLE = 20  # records looked at to tell a file's format
LOGGED_PROBLEMS = 5  # problems logged per source (all are counted)


class SourceError(ValueError):
    """A source that cannot be used at all (nothing found, format unknown, mostly bad records)."""


@dataclass
class SourceReport:
    """What loading one source did."""

    name: str
    files: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # file -> format
    records: int = 0
    conversations: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    notes: Counter[str] = field(default_factory=Counter)  # e.g. calc_calls, other_language
    problems: list[Problem] = field(default_factory=list)  # the first few, for people
    used: int = 0  # examples in the mixture
    epochs: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "files": len(self.files),
            "formats": sorted(set(self.formats.values())),
            "records": self.records,
            "conversations": self.conversations,
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "examples": self.used,
            "epochs": round(self.epochs, 3),
            "first_problems": [str(p) for p in self.problems],
        }


@dataclass
class Mixture:
    conversations: list[Conversation]
    reports: list[SourceReport]

    def summary(self) -> dict[str, Any]:
        return {"examples": len(self.conversations), "sources": [r.as_dict() for r in self.reports]}


def load_source(cfg: SourceConfig, max_bad_fraction: float = 1.0) -> tuple[list[Conversation], SourceReport]:
    """All conversations of one source (in file order) and the report of what was read and skipped."""
    report = SourceReport(name=cfg.label)
    files, missing = list_files(cfg.path)
    if files:
        for p in missing:
            _problem(report, p)
    else:
        raise SourceError(
            f"source {cfg.label!r}: no data files found ({'; '.join(map(str, missing)) or 'no match'})"
        )
    report.files = files
    out: list[Conversation] = []
    for path in files:
        records: list[Record] = []
        for item in read_records(path):  # problems counted as they come: a million bad lines kept no list
            if isinstance(item, Record):
                records.append(item)
            else:
                _problem(report, item)
        report.records += len(records)
        if not records:
            continue  # its problems are counted; other files of the source may be fine
        fmt = cfg.format if cfg.format != "auto" else _detect(path, records)
        report.formats[path] = fmt
        for where, conv in _convert(fmt, records, cfg, report):
            meta = {"source": cfg.label, "where": where, "format": fmt}
            # the record's own meta may add to ours; the file it came from is ours alone (trained_on)
            conv["meta"] = {**meta, **conv.get("meta", {}), SOURCE_FILE: path}
            out.append(conv)
            if cfg.max_records is not None and len(out) >= cfg.max_records:
                break
        if cfg.max_records is not None and len(out) >= cfg.max_records:
            break
    report.conversations = len(out)
    bad = sum(report.skipped.values())
    if not out:
        hint = (
            f"; is the format ({', '.join(sorted(set(report.formats.values())))}) right?"
            if report.records
            else ""
        )
        raise SourceError(f"source {cfg.label!r}: no usable conversations ({_reasons(report)}){hint}")
    if bad > max_bad_fraction * (bad + len(out)):
        raise SourceError(
            f"source {cfg.label!r}: {bad} of {bad + len(out)} records are unusable ({_reasons(report)}); "
            "is the format right?"
        )
    if bad:
        log.warning("source %s: %d records skipped (%s)", cfg.label, bad, _reasons(report))
    return out, report


def build_mixture(cfg: MixtureConfig) -> Mixture:
    """Every source loaded, sized by epochs or by weight, shuffled together (deterministic by seed)."""
    if not cfg.sources:
        raise SourceError("the mixture has no sources")
    loaded = [load_source(s, cfg.max_bad_fraction) for s in cfg.sources]
    counts = mixture_counts(cfg.size, cfg.sources, [len(convs) for convs, _ in loaded])
    rng = random.Random(cfg.seed)
    examples: list[Conversation] = []
    for (convs, report), count in zip(loaded, counts, strict=True):
        whole, part = divmod(count, len(convs))
        examples += convs * whole + rng.sample(convs, part)
        report.used, report.epochs = count, count / len(convs)
    rng.shuffle(examples)
    return Mixture(examples, [r for _, r in loaded])


def mixture_counts(size: int | None, sources: Sequence[Any], sizes: list[int]) -> list[int]:
    """Examples each source gives a mixture: ``round(epochs x its size)`` without ``size``; with it,
    ``size`` split by the sources' ``weight`` (any objects with ``epochs`` and ``weight``; the reward
    model's pair mixture uses it too)."""
    if size is None:
        return [max(1, round(s.epochs * n)) for s, n in zip(sources, sizes, strict=True)]
    total = sum(s.weight for s in sources)
    exact = [size * s.weight / total for s in sources]
    counts = [int(x) for x in exact]
    # largest remainders get the examples rounding down left over, so the counts add up to size
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)[
        : size - sum(counts)
    ]:
        counts[i] += 1
    return counts


def _detect(path: str, records: list[Record]) -> str:
    seen = Counter(detect_format(r.value) for r in records[:DETECT_SAMPLE])
    known = [(n, f) for f, n in seen.items() if f is not None]
    if not known:
        keys = sorted(records[0].value)[:12] if records and isinstance(records[0].value, dict) else []
        raise SourceError(
            f"{path}: cannot tell the format from its records (keys: {', '.join(keys) or 'none'}); set format: "
            f"one of {', '.join(FORMATS)}"
        )
    return max(known)[1]


def _convert(fmt: str, records: list[Record], cfg: SourceConfig, report: SourceReport):
    if fmt == "oasst":
        convs, problems, counts = oasst_conversations(records, cfg.oasst_languages)
        for p in problems:
            _problem(report, p)
        report.notes.update(counts)
        yield from convs
        return
    convert = CONVERTERS[fmt]
    notes: dict[str, int] = {}
    for rec in records:
        parts: list[tuple[str, RecordError]] = []  # a seed task's bad instances, its good ones kept
        try:
            convs = convert(rec.value, calculator=cfg.gsm8k_calculator, stats=notes, skipped=parts)
        except RecordError as e:
            _problem(report, Problem(rec.where, e.reason, str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - a record that breaks a converter is that record's problem
            _problem(report, Problem(rec.where, "unexpected", f"{type(e).__name__}: {e}"))
            continue
        for part, e in parts:
            _problem(report, Problem(f"{rec.where} ({part})", e.reason, str(e)))
        for conv in convs:
            yield rec.where, conv
    report.notes.update(notes)


def _problem(report: SourceReport, p: Problem) -> None:
    report.skipped[p.reason] += 1
    if len(report.problems) < LOGGED_PROBLEMS:
        report.problems.append(p)
        log.warning("source %s: %s", report.name, p)


def _reasons(report: SourceReport) -> str:
    return ", ".join(f"{k}: {v}" for k, v in report.skipped.most_common(5)) or "no records"


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.sft.sources PATH [--format F]``: check a source; print what was read and the
    first conversation, or the one-line reason it cannot be used."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m pipelines.sft.sources", description=main.__doc__)
    parser.add_argument("path", nargs="+", help="files, globs or folders")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        convs, report = load_source(SourceConfig(path=args.path, format=args.format))
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    print(json.dumps(convs[0], indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
