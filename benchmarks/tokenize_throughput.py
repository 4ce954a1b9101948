"""Tokens/s of the whole tokenize stage against a plain tiktoken script doing the same job.

    python benchmarks/tokenize_throughput.py                # 64 MB of text, 1 warm-up + 3 runs a side
    python benchmarks/tokenize_throughput.py --quick        # 4 MB, one run a side (a smoke test)
    python benchmarks/tokenize_throughput.py --mb 256       # more text: the fixed start-up weighs less
    python benchmarks/tokenize_throughput.py --clock wall   # headline in wall seconds (quiet machine)

The text: real English from ../shared/data (the Wikipedia articles, Shakespeare and TinyStories of
text/, the C4 and CCNet samples of fineweb/), found through RAYCHAT_SHARED_DATA, repeated (each copy a
new document with its own id) up to ``--mb`` megabytes. It is laid out as the clean stage writes it,
before any timing: ``<run>/data/clean/language=en/`` parquet with the FineWeb columns, one file per
``clean.min_rows_per_file`` (50,000) rows, so a corpus under 50,000 documents is one file. The
tokenizer: GPT-2 from shared/data/tokenizers/gpt2 (``vocab.bpe`` + ``encoder.json``).

Both sides alike (benchmarks/README.md), each run a fresh process on a fresh copy of the run
directory, everything a user waits for inside the timer:
- ours: ``python -m pipelines.tokenize --run-dir RUN --tokenizer gpt2:DIR --set ray.num_cpus=N``,
  i.e. everything ``raychat tokenize`` does: start its local Ray, load and save the tokenizer, encode
  in Ray tasks, write the parts, rewrite the clean parquet with ``token_count``, assemble the
  train/val shards and the index, check the counts, swap the outputs in, write report.md;
- baseline: what a tiktoken user writes (nanoGPT's ``prepare.py`` shape): build the GPT-2 encoding
  from the same two files, read the parquet with pyarrow, ``encode_ordinary_batch`` with N threads,
  ``<|endoftext|>`` after each document, a hash train/val split, ``uint16`` ``train.bin``/``val.bin``;
- the same warm-up (``--warmup``) and repetitions (``--repeats``), alternating which side goes first;
  median with the range printed; ``--clock cpu`` (default): text tokens per CPU-second of the whole
  process tree (Ray's daemons and workers included: sampled from /proc, see harness.TreeCpu, since
  the kernel's children totals miss the workers Ray reaps), which other work on a shared machine
  distorts far less than wall time; ``--clock wall``: per wall-second. Both are printed and in the
  JSON, and so is where ours' CPU went, per process.

Outputs compared: both sides must hold the same number of documents and tokens and the same sum of
token ids over all shards (an order-free checksum: the stage orders documents by a hash, the script
by file order); any difference makes ``ok`` false and the script exit 1.

Secondary lines: the stage's own encode rate (its ``tokens_per_second``, which starts after Ray and
the tokenizer are up), and the encoding path per core: what the stage's tasks run per batch
(``encode.encode_batch``) against ``encode_ordinary_batch`` on the same documents, one thread each, in CPU
seconds of this process, same warm-up and repetitions. ``--no-stage`` runs only that one.
``--no-clean-rewrite`` runs ours with ``tokenize.write_clean=false`` (no ``token_count`` rewrite of
the clean parquet), i.e. the same outputs as the baseline, to show what that rewrite costs.
The last line is the JSON summary; target 0.8.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness  # noqa: E402
from benchmarks.harness import SHARED, fmt, interleave, spread  # noqa: E402

TARGET = 0.8
BASELINE_NAME = "plain script: pyarrow + tiktoken encode_ordinary_batch + uint16 train/val .bin"
VAL_PER_MILLE = 50  # the baseline's val share (the stage's default val_fraction is 0.05 too)


def load_documents(shared: Path) -> list[str]:
    """Real documents: Wikipedia articles, C4 and CCNet pages, TinyStories, Shakespeare in ~2 KB pieces."""
    docs: list[str] = []
    text = shared / "text"
    if (text / "wiki_demo.txt").is_file():
        docs += [line for line in (text / "wiki_demo.txt").read_text().splitlines() if line.strip()]
    if (text / "tinystories_sample.txt").is_file():
        stories = (text / "tinystories_sample.txt").read_text().split("<|endoftext|>")
        docs += [s.strip() for s in stories if s.strip()]
    if (text / "tinyshakespeare_input.txt").is_file():
        piece: list[str] = []
        for para in (text / "tinyshakespeare_input.txt").read_text().split("\n\n"):
            piece.append(para)
            if sum(len(p) for p in piece) > 2000:
                docs.append("\n\n".join(piece))
                piece = []
    for path in sorted((shared / "fineweb").rglob("*.json*")) if (shared / "fineweb").is_dir() else []:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            docs += [json.loads(line)["text"] for line in f if line.strip()]
    return [d for d in docs if d]


def corpus(shared: Path, megabytes: float) -> list[str]:
    base = load_documents(shared)
    if not base:
        sys.exit(f"no text found under {shared} (set RAYCHAT_SHARED_DATA to shared/data)")
    out, size, i = [], 0, 0
    while size < megabytes * 1e6:
        doc = base[i % len(base)]
        if i >= len(base):
            doc = f"{doc}\n[copy {i // len(base)}]"
        out.append(doc)
        size += len(doc.encode())
        i += 1
    return out


def write_clean(run: Path, texts: list[str], ids: list[str]) -> None:
    """The clean stage's layout: language=en/ parquet, FineWeb columns, one file per min_rows_per_file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.clean.config import CleanConfig
    from pipelines.clean.schema import CLEAN_SCHEMA

    folder = run / "data" / "clean" / "language=en"
    folder.mkdir(parents=True)
    rows = CleanConfig().min_rows_per_file
    n = len(texts)
    for k, lo in enumerate(range(0, n, rows)):
        hi = n if n - lo < 2 * rows else lo + rows  # the last file takes the rest, as min_rows_per_file does
        m = hi - lo
        columns = {
            "text": texts[lo:hi],
            "id": ids[lo:hi],
            "dump": ["benchmark"] * m,
            "url": [f"https://example.com/{i}" for i in ids[lo:hi]],
            "date": ["2026-01-01"] * m,
            "file_path": ["benchmark.jsonl"] * m,
            "language_score": [1.0] * m,
            "token_count": [None] * m,
        }
        table = pa.table(columns, schema=CLEAN_SCHEMA.remove(CLEAN_SCHEMA.get_field_index("language")))
        pq.write_table(table, folder / f"{k:06d}_000000.parquet")
        if hi == n:
            break


# -- the baseline, run in a fresh process (``--worker baseline``) ---------------------------------------


def worker_baseline(run: Path, gpt2: Path, threads: int) -> dict:
    """A plain tiktoken script: GPT-2 from its two files, parquet in, uint16 train.bin / val.bin out."""
    start = time.perf_counter()
    import numpy as np
    import pyarrow.parquet as pq
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    enc = tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(gpt2 / "vocab.bpe"), str(gpt2 / "encoder.json")),
        special_tokens={"<|endoftext|>": 50256},
    )
    out = run / "baseline"
    out.mkdir()
    files = {"train": open(out / "train.bin", "wb"), "val": open(out / "val.bin", "wb")}
    documents = 0
    for path in sorted((run / "data" / "clean").rglob("*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=["text", "id"]):
            texts, ids = batch.column("text").to_pylist(), batch.column("id").to_pylist()
            encoded = enc.encode_ordinary_batch(texts, num_threads=threads)
            for split in ("train", "val"):
                picked = [
                    e + [enc.eot_token]
                    for e, i in zip(encoded, ids, strict=True)
                    if e and (zlib.crc32(i.encode()) % 1000 < VAL_PER_MILLE) == (split == "val")
                ]
                if picked:
                    np.concatenate([np.asarray(p, dtype=np.uint16) for p in picked]).tofile(files[split])
                    documents += len(picked)
    for f in files.values():
        f.close()
    return {"startup_s": 0.0, "seconds": round(time.perf_counter() - start, 2), "documents": documents}


def checksum_baseline(run: Path) -> dict:
    import numpy as np

    arrays = [np.fromfile(run / "baseline" / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")]
    return _checksum(arrays, eot=50256)


def checksum_ours(run: Path) -> dict:
    from pipelines.tokenize.shards import open_split, read_index

    index = read_index(run / "tokens")
    arrays = [a for split in index.splits for a in open_split(run / "tokens", split)]
    return _checksum(arrays, eot=index.eot_id)


def _checksum(arrays: list, eot: int) -> dict:
    import numpy as np

    tokens = sum(int(a.size) for a in arrays)
    documents = sum(int(np.count_nonzero(a == eot)) for a in arrays)
    id_sum = sum(int(np.asarray(a, dtype=np.int64).sum()) for a in arrays)
    return {"tokens": tokens, "documents": documents, "token_id_sum": id_sum}


# -- the encoding path per core (in this process) --------------------------------------------------------


def encode_path(work: Path, texts: list[str], ids: list[str], gpt2: Path, warmup: int, repeats: int) -> dict:
    """encode_batch (what the stage's tasks run per batch) vs encode_ordinary_batch, 1 thread, CPU s."""
    import pyarrow as pa

    from lm.tokenizer import load_tokenizer
    from pipelines.tokenize import job
    from pipelines.tokenize.config import TokenizeConfig
    from pipelines.tokenize.encode import EncodeSettings, encode_batch

    tc = TokenizeConfig()
    tok = load_tokenizer(f"gpt2:{gpt2}")
    tok.save(work / "tokenizer", hf=False)
    settings = EncodeSettings(
        tokenizer_dir=str(work / "tokenizer"),
        fingerprint=job.tokenizer_fingerprint(work / "tokenizer"),
        parts_dir=str(work / "parts"),
        text_column="text",
        id_column="id",
        val_fraction=tc.val_fraction,
        seed=tc.seed,
        dtype="uint16",
        batch_size=tc.batch_size,
        num_threads=1,
    )
    batches = [
        pa.table({"text": texts[i : i + tc.batch_size], "id": ids[i : i + tc.batch_size]})
        for i in range(0, len(texts), tc.batch_size)
    ]
    encoded = [0]

    def ours() -> float:
        shutil.rmtree(work / "parts", ignore_errors=True)
        start = time.process_time()
        stats = [encode_batch(b, settings)[1] for b in batches]
        seconds = time.process_time() - start
        encoded[0] = sum(s["tokens_train"] + s["tokens_val"] for s in stats)
        return seconds

    def raw() -> float:
        start = time.process_time()
        tok.encoding.encode_ordinary_batch(texts, num_threads=1)
        return time.process_time() - start

    seconds = interleave({"ours": ours, "tiktoken": raw}, warmup, repeats)
    n_tokens = sum(len(x) for x in tok.encoding.encode_ordinary_batch(texts, num_threads=1))
    if encoded[0] != n_tokens + len(texts):  # every token, plus one separator per document
        raise RuntimeError(f"encode_batch wrote {encoded[0]} tokens, expected {n_tokens + len(texts)}")
    return {
        "tokens": n_tokens,
        "ours": spread([n_tokens / s for s in seconds["ours"]]),
        "tiktoken": spread([n_tokens / s for s in seconds["tiktoken"]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=64.0, help="megabytes of text (default 64)")
    parser.add_argument("--quick", action="store_true", help="4 MB of text, no warm-up, one run a side")
    parser.add_argument(
        "--threads", type=int, default=2, help="Ray CPUs (ours) and tiktoken threads (baseline)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per side first")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (the median counts)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu", help="the headline's clock")
    parser.add_argument("--no-stage", action="store_true", help="only the encoding path per core")
    parser.add_argument(
        "--no-clean-rewrite",
        action="store_true",
        help="ours with tokenize.write_clean=false: shards only, the same outputs as the baseline",
    )
    parser.add_argument("--worker", choices=["baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpt2 = SHARED / "tokenizers" / "gpt2"
    if args.worker:
        print(json.dumps(worker_baseline(Path(args.run), gpt2, args.threads)))
        return
    if args.quick:
        args.mb, args.warmup, args.repeats = 4.0, 0, 1
    if not gpt2.is_dir():
        sys.exit(f"GPT-2 tokenizer files not found at {gpt2} (set RAYCHAT_SHARED_DATA)")

    load_before = harness.load_average()
    texts = corpus(SHARED, args.mb)
    ids = [f"doc-{i:08d}" for i in range(len(texts))]
    mbytes = sum(len(t.encode()) for t in texts) / 1e6
    print(
        f"text: {len(texts):,} documents, {mbytes:.1f} MB; {args.threads} CPUs a side; {args.warmup} warm-up + "
        f"{args.repeats} timed runs a side; load average {load_before}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="tokenize-bench-"))
    try:
        path = encode_path(work, texts, ids, gpt2, args.warmup, max(args.repeats, 1))
        n_tokens = path["tokens"]
        print(f"{n_tokens:,} GPT-2 tokens (without separators)")
        print(
            f"encoding path, 1 thread, tokens per CPU-second: encode_batch {fmt(*path['ours'], 0)} | "
            f"encode_ordinary_batch {fmt(*path['tiktoken'], 0)}",
            flush=True,
        )
        stage = None if args.no_stage else run_stage(work, texts, ids, gpt2, args, n_tokens)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    path_ratio = path["ours"][0] / path["tiktoken"][0]
    common = {
        "benchmark": "tokenize_throughput",
        "target": TARGET,
        "statistic": f"median of {args.repeats} after {args.warmup} warm-up",
        "encode_path_per_core": {
            "unit": "tokens per CPU-second, 1 thread",
            "ours": round(path["ours"][0]),
            "ours_range": [round(x) for x in path["ours"][1]],
            "baseline": round(path["tiktoken"][0]),
            "baseline_range": [round(x) for x in path["tiktoken"][1]],
            "ratio": round(path_ratio, 3),
        },
        "megabytes": round(mbytes, 1),
        "documents": len(texts),
        "tokens": n_tokens,
        "threads": args.threads,
        "load_avg_before": load_before,
    }
    if stage is None:
        harness.finish(
            {
                **common,
                "unit": "tokens per CPU-second (encoding path, 1 thread)",
                "ours": round(path["ours"][0]),
                "baseline": round(path["tiktoken"][0]),
                "baseline_name": "tiktoken Encoding.encode_ordinary_batch (GPT-2 ranks, same documents)",
                "ratio": round(path_ratio, 3),
                "met": path_ratio >= TARGET,
                "ok": True,
                "ours_range": common["encode_path_per_core"]["ours_range"],
                "baseline_range": common["encode_path_per_core"]["baseline_range"],
            }
        )
    ours, ours_range = stage["rates"]["ours", args.clock]
    base, base_range = stage["rates"]["baseline", args.clock]
    ratio = ours / base
    harness.finish(
        {
            **common,
            "unit": f"text tokens per {'CPU' if args.clock == 'cpu' else 'wall'}-second, whole stage from a "
            f"fresh process, {args.threads} CPUs a side"
            + (", ours with tokenize.write_clean=false" if args.no_clean_rewrite else ""),
            "ours": round(ours),
            "baseline": round(base),
            "baseline_name": f"{BASELINE_NAME}, {args.threads} threads",
            "ratio": round(ratio, 3),
            "met": ratio >= TARGET,
            "ok": stage["outputs_match"],
            "ours_range": [round(x) for x in ours_range],
            "baseline_range": [round(x) for x in base_range],
            "ours_wall": round(stage["rates"]["ours", "wall"][0]),
            "baseline_wall": round(stage["rates"]["baseline", "wall"][0]),
            "ratio_wall": round(stage["rates"]["ours", "wall"][0] / stage["rates"]["baseline", "wall"][0], 3),
            "ours_cpu": round(stage["rates"]["ours", "cpu"][0]),
            "baseline_cpu": round(stage["rates"]["baseline", "cpu"][0]),
            "ratio_cpu": round(stage["rates"]["ours", "cpu"][0] / stage["rates"]["baseline", "cpu"][0], 3),
            "stage_encode_tokens_per_s": stage["encode_rate"],
            "outputs_match": stage["outputs_match"],
            "outputs": stage["outputs"],
        }
    )


def run_stage(
    work: Path, texts: list[str], ids: list[str], gpt2: Path, args: argparse.Namespace, n_tokens: int
) -> dict:
    """Both sides, each run in a fresh process on a fresh copy of the clean run directory."""
    pristine = work / "pristine"
    write_clean(pristine, texts, ids)
    count = {"ours": 0, "baseline": 0}
    checks: dict[str, dict] = {}
    encode_rates: list[float] = []
    by_process: Counter[str] = Counter()  # ours' CPU-seconds per process name, summed over runs

    def fresh_run(name: str) -> Path:
        count[name] += 1
        run = work / f"{name}-{count[name]}"
        shutil.rmtree(work / f"{name}-{count[name] - 1}", ignore_errors=True)  # keep the disk small
        shutil.copytree(pristine, run)
        return run

    def ours() -> dict:
        run = fresh_run("ours")
        cmd = [
            sys.executable,
            "-m",
            "pipelines.tokenize",
            "--run-dir",
            str(run),
            "--tokenizer",
            f"gpt2:{gpt2}",
        ]
        cmd += ["--set", f"ray.num_cpus={args.threads}"]
        if args.no_clean_rewrite:
            cmd += ["--set", "tokenize.write_clean=false"]
        m = harness.run_process(cmd, harness.child_env())
        checks["ours"] = checksum_ours(run)
        numbers = json.loads((run / "metrics" / "tokenize.jsonl").read_text().splitlines()[-1])
        encode_rates.append((numbers["tokens"] - numbers["documents"]) / numbers["encode_seconds"])
        phases = re.search(r"encode pass [\d.]+s, shard assembly [\d.]+s", m.stderr)
        print(
            f"  ours      wall {m.wall_s:6.2f}s  cpu {m.cpu_s:6.2f}s  (tokenizer {numbers['tokenizer_seconds']}s, "
            f"{phases.group(0) if phases else 'encode + shards ' + str(numbers['encode_seconds']) + 's'})",
            flush=True,
        )
        by_process.update(m.cpu_by_name)
        return {"wall": m.wall_s, "cpu": m.cpu_s}

    def baseline() -> dict:
        run = fresh_run("baseline")
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "baseline",
            "--run",
            str(run),
            "--threads",
            str(args.threads),
        ]
        m = harness.run_process(cmd, harness.child_env())
        checks["baseline"] = checksum_baseline(run)
        print(f"  baseline  wall {m.wall_s:6.2f}s  cpu {m.cpu_s:6.2f}s", flush=True)
        return {"wall": m.wall_s, "cpu": m.cpu_s}

    try:
        results = interleave({"ours": ours, "baseline": baseline}, args.warmup, args.repeats)
    except RuntimeError as e:  # a side crashed: no number is reported for either
        harness.fail("tokenize_throughput", "text tokens per second, whole stage", BASELINE_NAME, TARGET, e)
    rates = {
        (name, clock): spread([n_tokens / r[clock] for r in results[name]])
        for name in results
        for clock in ("cpu", "wall")
    }
    expected = {"tokens": n_tokens + len(texts), "documents": len(texts)}
    outputs = {"expected": expected, **checks}
    match = checks["ours"] == checks["baseline"] and all(checks["ours"][k] == v for k, v in expected.items())
    print(f"{'':10s} {'text tokens per CPU-second':>40s} {'text tokens per wall-second':>40s}")
    for name in results:
        print(f"{name:10s} {fmt(*rates[name, 'cpu'], 0):>40s} {fmt(*rates[name, 'wall'], 0):>40s}")
    runs = args.warmup + args.repeats
    print(
        "ours' CPU-seconds by process, mean of its runs: "
        + ", ".join(f"{name} {cpu / runs:.2f}" for name, cpu in by_process.most_common(8))
    )
    encode = spread(encode_rates)
    print(f"the stage's own encode rate (after Ray and the tokenizer are up): {fmt(*encode, 0)} tokens/s")
    print(f"outputs: ours {checks['ours']}, baseline {checks['baseline']}, expected {expected}")
    if not match:
        print("OUTPUTS DIFFER: the two sides did not write the same tokens (ok: false)")
    return {
        "rates": rates,
        "encode_rate": round(encode[0]),
        "outputs_match": match,
        "outputs": outputs,
    }


if __name__ == "__main__":
    main()
