"""The lifecycle through its real entry points: world -> clean -> tokenize -> pretrain -> sample.

These run the same code as ``raychat run`` and ``raychat demo`` (one process, the session's Ray), on a
small tiny world, and check what each stage hands the next through the run directory; then the real
crawl and FineWeb files of ../shared/data go through ``raychat clean --input`` and
``raychat tokenize --tokenizer gpt2:...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipelines.cli import main
from pipelines.run_dir import RunDir, is_done
from pipelines.tokenize.shards import read_index

pytestmark = pytest.mark.slow


def _clean_token_counts(run: RunDir) -> tuple[int, int]:
    table = pads.dataset(
        str(run.clean), format="parquet", partitioning=pads.HivePartitioning.discover(infer_dictionary=True)
    ).to_table(columns=["token_count"])
    counts = table.column("token_count").to_pylist()
    assert None not in counts, "tokenize must fill token_count for every clean document"
    return len(counts), sum(counts)


def _shard_tokens(tokens_dir: Path) -> int:
    index = read_index(tokens_dir)
    total = 0
    for split in index.splits.values():
        for shard in split.shards:
            total += np.memmap(tokens_dir / shard.file, dtype=index.dtype, mode="r").size
    return total


@pytest.fixture(scope="module")
def lifecycle_run(ray_session, tmp_path_factory) -> RunDir:
    root = tmp_path_factory.mktemp("lifecycle") / "run"
    argv = [
        "run",
        "--config",
        str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"),
        "--run-dir",
        str(root),
        "--stages",
        "world,clean,tokenize,pretrain",
        "--set",
        "world.num_pages=600",
        "--set",
        "tokenize.vocab_size=1024",
        "--set",
        "pretrain.max_steps=60",
        "--set",
        "pretrain.eval_every=30",
        "--set",
        "pretrain.checkpoint_every=30",
    ]
    assert main(argv) == 0
    return RunDir(root)


def test_each_stage_hands_the_next_what_it_needs(lifecycle_run: RunDir) -> None:
    run = lifecycle_run
    for stage in ("world", "clean", "tokenize", "pretrain"):
        assert is_done(run, stage), stage
    stats = json.loads((run.root / "data" / "stats.json").read_text())
    assert (
        stats["counts_add_up"]
        and stats["records"] == stats["clean"] + stats["rejected"] + stats["record_errors"]
    )
    # every clean document was tokenized: one <|endoftext|> per document plus its tokens
    docs, tokens = _clean_token_counts(run)
    assert docs == stats["clean"] > 0
    assert _shard_tokens(run.root / "tokens") == docs + tokens
    summary = json.loads((run.metrics / "summary.json").read_text())
    pre = summary["pretrain"]
    assert pre["steps"] == 60
    # a model of the tiny world's own tokens predicts from context: far below the unigram entropy
    assert pre["val_loss"] < 0.6 * pre["unigram_entropy"], pre
    model_dir = run.model("base")
    for name in ("config.json", "model.safetensors", "generation_config.json", "raychat.json"):
        assert (model_dir / name).is_file(), name
    assert (run.root / "report.md").is_file()


def test_a_rerun_skips_complete_stages_and_redoing_tokenize_retrains(lifecycle_run: RunDir, caplog) -> None:
    run = lifecycle_run
    config = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    common = ["--config", config, "--run-dir", str(run.root)]
    caplog.set_level("INFO", logger="raychat")
    assert main(["run", *common, "--stages", "world,tokenize"]) == 0
    assert "stage tokenize: outputs complete, skipping" in caplog.text
    # a stage refused before any work (its input is missing) leaves its own outputs and the stages
    # after it complete
    assert main(["tokenize", *common, "--set", "tokenize.input=/nonexistent/clean"]) == 2
    assert is_done(run, "pretrain") and is_done(run, "tokenize")
    # tokenize redone with another vocabulary: pretrain is no longer complete, and its checkpoints
    # (trained on the old shards) are set aside instead of being resumed
    assert main(["tokenize", *common, "--set", "tokenize.vocab_size=700"]) == 0
    assert is_done(run, "tokenize") and not is_done(run, "pretrain")
    argv = [
        "run",
        *common,
        "--stages",
        "pretrain",
        "--set",
        "pretrain.max_steps=20",
        "--set",
        "pretrain.eval_every=20",
    ]
    assert main(argv) == 0
    assert list(run.checkpoints.glob("pretrain.stale-*")), "the old checkpoints were not set aside"
    config_json = json.loads((run.model("base") / "config.json").read_text())
    assert config_json["vocab_size"] == read_index(run.root / "tokens").vocab_size <= 700
    history = [json.loads(line) for line in (run.metrics / "pretrain.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 20


def test_sample_cli_continues_from_the_base_model(lifecycle_run: RunDir, capsys) -> None:
    model = str(lifecycle_run.model("base"))
    argv = ["sample", "--model", model, "--prompt", "The town", "-n", "3", "--max-tokens", "12", "--json"]
    assert main([*argv, "--seed", "0"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 3
    # a sample may end at once with <|endoftext|> (the model's choice): at most 12 tokens each, text in some
    assert all(len(line["token_ids"]) <= 12 for line in lines) and any(line["text"] for line in lines)


def test_real_crawl_and_fineweb_files_clean_and_tokenize_with_gpt2(
    ray_session, shared_data: Path, tmp_path: Path
) -> None:
    warcs = sorted((shared_data / "crawl").rglob("*.warc*"))  # WARC, WAT and WET
    records = sorted((shared_data / "fineweb").rglob("*.json*"))  # FineWeb/C4/Dolma shapes
    inputs = [str(p) for p in warcs + records[:3]]
    assert inputs, f"no crawl or FineWeb files under {shared_data}"
    out = tmp_path / "real"
    assert main(["clean", "--input", *inputs, "--output", str(out)]) == 0
    stats = json.loads((out / "data" / "stats.json").read_text())
    assert stats["counts_add_up"] and stats["clean"] > 0
    gpt2 = shared_data / "tokenizers" / "gpt2"
    assert main(["tokenize", "--output", str(out), "--tokenizer", f"gpt2:{gpt2}"]) == 0
    run = RunDir(out)
    index = read_index(out / "tokens")
    assert index.vocab_size >= 50257 and index.dtype == "uint16"
    docs, tokens = _clean_token_counts(run)
    assert docs == stats["clean"]
    assert _shard_tokens(out / "tokens") == docs + tokens


def test_force_redoes_pretraining_from_step_zero(lifecycle_run: RunDir) -> None:
    run = lifecycle_run
    config = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    before = set(run.checkpoints.glob("pretrain.stale-*"))
    argv = ["run", "--config", config, "--run-dir", str(run.root), "--stages", "pretrain", "--force"]
    assert main([*argv, "--set", "pretrain.max_steps=10", "--set", "pretrain.eval_every=10"]) == 0
    assert set(run.checkpoints.glob("pretrain.stale-*")) - before, "--force kept the old checkpoints"
    steps = [json.loads(line)["step"] for line in (run.metrics / "pretrain.jsonl").read_text().splitlines()]
    assert steps[-10:] == list(range(1, 11))  # trained again from the start, not resumed at the end
