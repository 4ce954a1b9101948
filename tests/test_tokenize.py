"""The tokenize stage: shards, index, split, token_count, reruns, CLI flags."""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lm.tokenizer import load_tokenizer
from pipelines.config import ConfigError, load_config
from pipelines.run_dir import RunDir, update_summary
from pipelines.tokenize import job
from pipelines.tokenize.shards import (
    ShardWriter,
    SplitInfo,
    TokenIndex,
    TokenShardError,
    merge_parts,
    open_split,
    read_index,
    token_dtype,
    write_index,
    write_part,
)

WORDS = (
    "the of and to in is was for on that with as by at from his her city river king queen born population "
    "capital founded century mountain island language people music science history Zorvath Quillmere"
).split()
OTHER = [
    "Ünïcödé café — “quoted” ½",
    "日本語のテキスト",
    "emoji 🤖🧠",
    "le fleuve et la montagne",
    "\tcode:\r\n x**2",
]


def _documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 80)))
        docs.append(f"{words.capitalize()}. {OTHER[i % len(OTHER)]} {i}")
    return docs


def _clean_table(texts: list[str | None], ids: list[str | None], language: str, start: int = 0) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "id": pa.array(ids, pa.string()),
            "dump": pa.array(["CC-MAIN-2024-10"] * n),
            "url": pa.array([f"https://example.org/{language}/{start + i:04d}" for i in range(n)]),
            "date": pa.array(["2024-03-01"] * n),
            "file_path": pa.array([f"crawl/{language}.warc.gz"] * n),
            "language_score": pa.array([0.9] * n, pa.float64()),
            "token_count": pa.array([None] * n, pa.int64()),
        }
    )


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A run whose clean stage wrote 2 language partitions, 3 files, an empty and a null text."""
    docs = _documents(260)
    clean = tmp_path / "run" / "data" / "clean"
    (clean / "language=en").mkdir(parents=True)
    (clean / "language=fr").mkdir(parents=True)
    pq.write_table(
        _clean_table(docs[:120], [f"en-{i}" for i in range(120)], "en"), clean / "language=en" / "a.parquet"
    )
    en_b = docs[120:200] + ["", None]
    pq.write_table(
        _clean_table(en_b, [f"en-{i}" for i in range(120, 200)] + ["en-empty", None], "en", start=120),
        clean / "language=en" / "b.parquet",
    )
    pq.write_table(
        _clean_table(docs[200:], [f"fr-{i}" for i in range(60)], "fr"), clean / "language=fr" / "c.parquet"
    )
    return tmp_path / "run"


def _config(run: Path, **tokenize):
    base = {"vocab_size": 512, "val_fraction": 0.2, "shard_tokens": 2048, "batch_size": 64}
    overrides = [f"run_dir={json.dumps(str(run))}"]
    overrides += [f"tokenize.{k}={json.dumps(v)}" for k, v in {**base, **tokenize}.items()]
    return load_config(None, overrides)


def _read_clean(run: Path) -> pa.Table:
    import pyarrow.dataset as pads

    return (
        pads.dataset(
            run / "data" / "clean",
            format="parquet",
            partitioning=pads.HivePartitioning.discover(infer_dictionary=True),
        )
        .to_table()
        .sort_by("url")
    )


def _documents_in_shards(tokens_dir: Path, split: str, eot: int) -> list[np.ndarray]:
    stream = np.concatenate(
        [np.asarray(m) for m in open_split(tokens_dir, split)] or [np.array([], np.uint16)]
    )
    starts = np.flatnonzero(stream == eot)
    assert starts.size == 0 or starts[0] == 0, "a split starts with <|endoftext|>"
    return [stream[a + 1 : b] for a, b in zip(starts, [*starts[1:], stream.size], strict=True)]


@pytest.mark.slow  # two runs of the stage: ~10 s on a quiet 2-core machine
def test_tokenize_stage(ray_session, run_dir: Path):
    before = _read_clean(run_dir)
    cfg = _config(run_dir)
    numbers = job.run(cfg)
    run = RunDir(run_dir)

    tok = load_tokenizer(run.tokenizer)
    assert tok.vocab_size == numbers["vocab_size"] == 512
    index = read_index(run.tokens)
    assert index.dtype == "uint16" and index.eot_id == tok.eot_id and index.vocab_size == 512
    assert load_tokenizer(run.tokens / index.tokenizer).vocab_size == 512  # relative path works
    assert len(index.splits["train"].shards) > 1  # shard_tokens small enough to roll over

    # every non-empty document is in exactly one split, decodes back to itself, in the split its id says
    texts = {r["id"] or r["text"]: r["text"] for r in before.to_pylist() if r["text"]}
    decoded = {}
    for split in ("train", "val"):
        docs = _documents_in_shards(run.tokens, split, tok.eot_id)
        assert len(docs) == index.splits[split].documents
        assert sum(d.size + 1 for d in docs) == index.splits[split].tokens
        for d in docs:
            decoded.setdefault(split, []).append(tok.decode(d.tolist()))
    assert Counter(decoded["train"] + decoded["val"]) == Counter(texts.values())
    for key, text in texts.items():
        expect = "val" if job.is_val(key, cfg.tokenize.seed, cfg.tokenize.val_fraction) else "train"
        assert text in decoded[expect]
    assert 0 < len(decoded["val"]) < len(decoded["train"])

    # index and headline numbers add up
    assert numbers["documents"] == len(texts) == sum(s.documents for s in index.splits.values())
    assert numbers["tokens"] == sum(s.tokens for s in index.splits.values())
    assert numbers["rows_empty"] == 2
    assert numbers["bytes_per_token"] > 1.5

    # the clean parquet: same rows, same partitions, token_count filled
    after = _read_clean(run_dir)
    assert after.num_rows == before.num_rows
    assert after.drop(["token_count"]).equals(before.drop(["token_count"]))
    for row in after.to_pylist():
        assert row["token_count"] == len(tok.encode(row["text"] or ""))
    assert sorted(p.name for p in run.clean.iterdir()) == ["language=en", "language=fr"]
    update_summary(run, "tokenize", numbers)
    section = job.report_section(run, "tokenize")
    assert "UTF-8 bytes per token" in section and (run.plots / "tokenize_document_tokens.png").is_file()

    # a rerun gives the same shards and does not duplicate rows
    shard_bytes = {
        s.file: (run.tokens / s.file).read_bytes() for sp in index.splits.values() for s in sp.shards
    }
    again = job.run(cfg)
    assert again["tokens"] == numbers["tokens"] and again["documents"] == numbers["documents"]
    assert read_index(run.tokens) == index
    assert {f: (run.tokens / f).read_bytes() for f in shard_bytes} == shard_bytes
    assert _read_clean(run_dir).num_rows == before.num_rows
    assert not list(run.root.glob(".*"))  # no temporary folders left behind


@pytest.mark.slow
def test_loaded_tokenizer_and_external_input(ray_session, run_dir: Path, tmp_path: Path, shared_data):
    """gpt2:<dir> as the tokenizer, the input outside the run, the clean copy not written."""
    out = tmp_path / "other-run"
    gpt2 = shared_data / "tokenizers" / "gpt2"
    cfg = _config(out, tokenizer=f"gpt2:{gpt2}", input=str(run_dir / "data" / "clean"), write_clean=False)
    numbers = job.run(cfg)
    assert numbers["vocab_size"] == load_tokenizer(f"gpt2:{gpt2}").vocab_size
    index = read_index(out / "tokens")
    assert index.eot_id == 50256 and index.dtype == "uint16"
    assert numbers["documents"] == 260
    assert not (out / "data" / "clean").exists()
    tok = load_tokenizer(out / "tokenizer")
    assert tok.encode("hello deep seek") == [31373, 2769, 5380]
    missing = tmp_path / "nowhere.tiktoken"
    with pytest.raises(ConfigError, match="tokenize.tokenizer: .*not found"):
        job.run(_config(out, tokenizer=f"tiktoken:{missing}", input=str(run_dir / "data" / "clean")))


def test_missing_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="run the clean stage first"):
        job.run(_config(tmp_path / "empty-run"))
    run = tmp_path / "run"
    (run / "data" / "clean" / "language=en").mkdir(parents=True)
    with pytest.raises(ConfigError, match="part of"):
        job.run(_config(run, input=str(run / "data" / "clean" / "language=en")))


def test_cli_flags_become_config():
    parser = argparse.ArgumentParser()
    job.add_cli_args(parser)
    args = parser.parse_args(
        [
            "--input",
            "/data/my clean",
            "--output",
            "runs/x",
            "--tokenizer",
            "gpt2:/tok: dir",
            "--vocab-size",
            "8192",
        ]
    )
    cfg = load_config(None, job.cli_overrides(args))
    assert cfg.run_dir == "runs/x"
    assert cfg.tokenize.input == "/data/my clean"
    assert cfg.tokenize.tokenizer == "gpt2:/tok: dir"
    assert cfg.tokenize.vocab_size == 8192
    assert cfg.tokenize.pattern is None  # a tiktoken: file's name decides, training uses cl100k
    assert load_config(None, ["tokenize.pattern=O200K"]).tokenize.pattern == "o200k"
    with pytest.raises(ConfigError, match="tokenize.pattern"):
        load_config(None, ["tokenize.pattern=nope"])


def test_shard_writer_and_reader(tmp_path: Path):
    assert token_dtype(65536) == "uint16" and token_dtype(65537) == "uint32"
    writer = ShardWriter(tmp_path, "train", "uint32", shard_tokens=5, eot_id=99)
    writer.write(np.array([99, 1, 2, 3], np.uint32))
    writer.write(np.array([99, 4, 99, 5, 6, 7, 8], np.uint32))
    info = writer.close()
    assert [s.tokens for s in info.shards] == [5, 5, 1]
    assert [s.documents for s in info.shards] == [2, 1, 0]
    index = TokenIndex(
        dtype="uint32",
        vocab_size=100,
        eot_id=99,
        tokenizer="../tokenizer",
        splits={"train": info, "val": SplitInfo()},
    )
    write_index(tmp_path, index)
    shards = open_split(tmp_path, "train")
    assert np.concatenate(shards).tolist() == [99, 1, 2, 3, 99, 4, 99, 5, 6, 7, 8]
    assert open_split(tmp_path, "val") == []
    (tmp_path / "train" / "00001.bin").write_bytes(b"\0" * 4)  # truncated shard
    with pytest.raises(TokenShardError, match="00001.bin"):
        read_index(tmp_path)


def _merged(tmp: Path, batches: list[list[int]], docs: dict[int, np.ndarray], memory_bytes: int) -> bytes:
    parts = tmp / "parts"
    for k, batch in enumerate(batches):
        hashes = np.array([h * 7919 % 1000 * 10**15 for h in batch], dtype=np.uint64)
        write_part(parts, f"part-{k:03d}", [docs[h] for h in batch], hashes, eot_id=9, dtype="uint16")
    writer = ShardWriter(tmp / "out", "train", "uint16", shard_tokens=64, eot_id=9)
    assert merge_parts(parts, writer, memory_bytes=memory_bytes) == len(docs)
    info = writer.close()
    return b"".join((tmp / "out" / s.file).read_bytes() for s in info.shards)


def test_shards_do_not_depend_on_how_documents_were_batched(tmp_path: Path):
    rng = np.random.default_rng(0)
    docs = {i: rng.integers(10, 500, size=rng.integers(1, 30)).astype(np.uint32) for i in range(200)}
    one_batch = _merged(tmp_path / "a", [list(range(200))], docs, memory_bytes=1 << 30)
    order = rng.permutation(200).tolist()
    batches = [order[i : i + 17] for i in range(0, 200, 17)]
    assert _merged(tmp_path / "b", batches, docs, memory_bytes=1 << 30) == one_batch
    assert _merged(tmp_path / "c", batches, docs, memory_bytes=2048) == one_batch  # many hash-range passes
    stream = np.frombuffer(one_batch, dtype="<u2")
    assert np.count_nonzero(stream == 9) == 200 and stream.size == sum(d.size + 1 for d in docs.values())


def test_unreadable_input_file_is_one_line_before_anything_is_written(tmp_path: Path):
    run = tmp_path / "run"
    folder = run / "data" / "clean" / "language=en"
    folder.mkdir(parents=True)
    pq.write_table(_clean_table(_documents(20), [f"d{i}" for i in range(20)], "en"), folder / "good.parquet")
    (folder / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConfigError, match=r"bad\.parquet could not be read as parquet"):
        job.run(_config(run))
    (folder / "bad.parquet").unlink()
    pq.write_table(pa.table({"body": ["x"]}), folder / "other.parquet")
    with pytest.raises(ConfigError, match=r"other\.parquet has no column 'text'"):
        job.run(_config(run))
    (folder / "other.parquet").unlink()
    # bytes where text should be, and a string column whose bytes are not UTF-8: one line each (both
    # were tracebacks, one from inside a Ray task)
    pq.write_table(pa.table({"text": pa.array([b"caf\xe9"], pa.binary())}), folder / "binary.parquet")
    with pytest.raises(ConfigError, match=r"column 'text' of .*binary\.parquet is binary, not text"):
        job.run(_config(run))
    (folder / "binary.parquet").unlink()
    bad_utf8 = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(b"\x00\x00\x00\x00\x04\x00\x00\x00"), pa.py_buffer(b"ab\xff\xfe")]
    )
    pq.write_table(pa.table({"text": bad_utf8}), folder / "latin.parquet")
    with pytest.raises(ConfigError, match=r"latin\.parquet holds text that is not valid UTF-8"):
        job.run(_config(run))
    assert not (run / "tokens").exists() and not (run / "tokenizer").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["good.parquet", "latin.parquet"]


@pytest.mark.slow
def test_rewrite_keeps_files_codecs_and_row_groups_and_a_bad_page_is_one_line(
    ray_session, tmp_path: Path, shared_data
):
    """The clean files come back under the same names with token_count filled, each column in its
    codec, one row group per input row group; a file whose data does not decode stops the stage with
    an error naming it, the old outputs untouched."""
    run = tmp_path / "run"
    folder = run / "data" / "clean" / "language=de"
    folder.mkdir(parents=True)
    docs = _documents(300, seed=3)
    table = _clean_table(docs, [f"de-{i}" for i in range(300)], "de")
    pq.write_table(table, folder / "z.parquet", compression="zstd", row_group_size=70)
    numbers = job.run(_config(run, batch_size=32))
    tok = load_tokenizer(run / "tokenizer")

    out = pq.ParquetFile(folder / "z.parquet")
    assert out.metadata.num_row_groups == 5
    assert {out.metadata.row_group(0).column(j).compression for j in range(out.metadata.num_columns)} == {
        "ZSTD"
    }
    rows = out.read().to_pylist()
    assert [r["text"] for r in rows] == docs and {r["language"] for r in rows} == {"de"}
    assert [r["token_count"] for r in rows] == [len(tok.encode(d)) for d in docs]
    assert sum(r["token_count"] for r in rows) + numbers["documents"] == numbers["tokens"]
    assert not [p for p in run.rglob(".*")]  # no temporary files or folders left

    # a data page that does not decode: one line naming the file; tokenizer/, tokens/ and data/clean/
    # unchanged (the tokenizer was saved before the encoding failed: a new tokenizer beside old shards)
    shards = {p: p.read_bytes() for p in (run / "tokens").rglob("*") if p.is_file()}
    tokenizer_files = {p: p.read_bytes() for p in (run / "tokenizer").rglob("*") if p.is_file()}
    raw = bytearray((folder / "z.parquet").read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 2000] = bytes(range(256)) * 7 + bytes(208)
    (folder / "z.parquet").write_bytes(bytes(raw))
    for tokenizer in ("train", f"gpt2:{shared_data / 'tokenizers' / 'gpt2'}"):  # sample read, task read
        with pytest.raises(ConfigError, match=r"z\.parquet could not be read as parquet"):
            job.run(_config(run, batch_size=32, tokenizer=tokenizer))
    assert {p: p.read_bytes() for p in (run / "tokens").rglob("*") if p.is_file()} == shards
    assert {p: p.read_bytes() for p in (run / "tokenizer").rglob("*") if p.is_file()} == tokenizer_files
    assert (folder / "z.parquet").read_bytes() == bytes(raw)
    assert sorted(p.name for p in folder.iterdir()) == ["z.parquet"]


def test_an_empty_output_is_refused_not_the_default_run(tmp_path, monkeypatch, capsys) -> None:
    """`raychat tokenize --output ''` (an unset shell variable) went to the default run dir, runs/tiny."""
    from pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["tokenize", "--output", ""]) == 2
    assert "run_dir: String should have at least 1 character" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_training_sample_cuts_runs_without_white_space(tmp_path: Path) -> None:
    """BPE training time grows with the square of a pre-token: one page of 2,000,000 letters took
    about 25 minutes, in Rust, where no signal stops it. The sample cuts such runs; encoding does not."""
    path = tmp_path / "long.parquet"
    texts = ["a" * 50_000 + " tail", "ordinary words here"]
    pq.write_table(pa.table({"text": texts, "id": ["x", "y"]}), path)
    cfg = _config(tmp_path, val_fraction=0.0).tokenize
    sample = list(job.training_sample([path], cfg))
    assert sample == ["a" * job.MAX_TRAINING_RUN + " tail", "ordinary words here"]
