"""Pretraining: data order and resume, schedule, MFU table, learning, and the Ray Train job (the shared
driver's first user; the per-rank trainer itself is tested in tests/test_train.py).

The corpus is generated: short documents of templated facts ("The owl lives in Lima and eats figs."),
where the animal fixes the rest of the sentence, tokenized with a small BPE trained on them. A model
that uses context gets far below the unigram entropy of those tokens; one that does not cannot.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lm.bpe import train_bpe
from lm.train.mfu import mfu, peak_flops_for
from lm.train.optim import lr_factor
from lm.train.trainer import Trainer
from pipelines.config import ConfigError, load_config
from pipelines.pretrain.config import PretrainConfig
from pipelines.pretrain.data import (
    SampleOrder,
    TokenSplit,
    TrainBatches,
    eval_targets,
    eval_windows,
    token_byte_lengths,
    unigram_entropy,
)
from pipelines.pretrain.task import PretrainTask, padded_eval_batches
from pipelines.run_dir import RunDir, update_summary
from pipelines.tokenize.shards import ShardWriter, TokenIndex, write_index
from pipelines.train.curves import read_history

REPO = Path(__file__).resolve().parents[1]
ANIMALS = ["cat", "dog", "owl", "fox", "bear", "wolf", "deer", "hare", "lynx", "mole", "newt", "seal"]
CITIES = [
    "Paris",
    "Oslo",
    "Lima",
    "Cairo",
    "Quito",
    "Perth",
    "Riga",
    "Kyiv",
    "Dakar",
    "Hanoi",
    "Bern",
    "Doha",
]
FOODS = [
    "apples",
    "bread",
    "fish",
    "honey",
    "rice",
    "corn",
    "cheese",
    "plums",
    "nuts",
    "beans",
    "figs",
    "soup",
]


def fact_document(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 6)):
        i = rng.randrange(len(ANIMALS))
        sentences.append(f"The {ANIMALS[i]} lives in {CITIES[i]} and eats {FOODS[(5 * i) % len(FOODS)]}.")
    return " ".join(sentences)


def make_token_run(root: Path, num_docs: int = 1500, shard_tokens: int = 20_000, seed: int = 0):
    """A run directory with tokenizer/ and tokens/ as the tokenize stage writes them."""
    rng = random.Random(seed)
    docs = [fact_document(rng) for _ in range(num_docs)]
    tok = train_bpe(docs[:300], vocab_size=300, show_progress=False)
    tok.save(root / "tokenizer", hf=False)
    tokens_dir = root / "tokens"
    cut = int(0.9 * num_docs)
    splits = {}
    for split, part in (("train", docs[:cut]), ("val", docs[cut:])):
        writer = ShardWriter(tokens_dir, split, "uint16", shard_tokens, tok.eot_id)
        for d in part:
            writer.write(np.array([tok.eot_id, *tok.encode(d)]))
        splits[split] = writer.close()
    index = TokenIndex(
        dtype="uint16", vocab_size=tok.vocab_size, eot_id=tok.eot_id, tokenizer="../tokenizer", splits=splits
    )
    write_index(tokens_dir, index)
    return tok


@pytest.fixture(scope="module")
def token_run(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("pretrain_tokens")
    return root, make_token_run(root)


# -- config ---------------------------------------------------------------------------------------


def test_batch_that_does_not_divide_is_a_clear_config_error():
    with pytest.raises(
        ConfigError, match=r"multiple of micro_batch_size x seq_len x num_workers = 5 x 128 x 2"
    ):
        load_config(None, ["pretrain.micro_batch_size=5", "pretrain.num_workers=2"])
    cfg = PretrainConfig(seq_len=64, global_batch_tokens=4096, micro_batch_size=8, num_workers=2)
    assert cfg.grad_accum_steps == 4 and cfg.sequences_per_step == 64
    assert PretrainConfig(max_tokens=10_000, global_batch_tokens=2048).total_steps == 5


def test_model_spec_takes_the_tokenizers_vocabulary_and_the_depth_dial():
    spec = PretrainConfig().model
    config = spec.build(vocab_size=4096, seq_len=128)
    assert (config.vocab_size, config.num_layers, config.hidden_size, config.max_seq_len) == (
        4096,
        2,
        128,
        128,
    )
    assert 1_000_000 <= config.num_params() <= 3_000_000  # the tiny demo's model
    explicit = PretrainConfig(model={"depth": None, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 4})
    assert explicit.model.build(300, 64).hidden_size == 64
    with pytest.raises(ValueError, match="shorter than pretrain.seq_len"):
        PretrainConfig(model={"max_seq_len": 64}).model.build(300, 128)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        PretrainConfig(model={"vocab_size": 100}).model.build(300, 128)


def test_cli_shorthands_become_overrides():
    from pipelines.cli import build_parser
    from pipelines.pretrain.job import SHORTHANDS
    from pipelines.shorthands import shorthand_overrides

    argv = ["pretrain", "--max-steps", "7", "--num-workers", "2", "--gpu", "--strategy", "fsdp"]
    args = build_parser(argv).parse_args(argv)
    overrides = shorthand_overrides(args, args.stage, SHORTHANDS)
    assert set(overrides) == {
        "pretrain.max_steps=7",
        "pretrain.num_workers=2",
        "pretrain.use_gpu=true",
        'pretrain.strategy="fsdp"',
    }
    assert load_config(None, [*overrides, "pretrain.global_batch_tokens=4096"]).pretrain.max_steps == 7


def test_a_stage_instance_shorthand_sets_its_own_section():
    """The training stages share their shorthands; the flags set the section of the stage named (a
    path with braces, such as {run_dir}/..., stays a string)."""
    import argparse

    from pipelines.shorthands import TRAINING, add_shorthands, shorthand_overrides

    parser = argparse.ArgumentParser()
    add_shorthands(parser, "sft_rs", TRAINING)
    args = parser.parse_args(["--init", "{run_dir}/models/base", "--epochs", "1.5"])
    overrides = shorthand_overrides(args, "sft_rs", TRAINING)
    assert overrides == ['sft_rs.init="{run_dir}/models/base"', "sft_rs.epochs=1.5"]
    cfg = load_config(None, ["stages={sft_rs: {kind: sft}}", *overrides])
    assert cfg.sft_rs.init == "{run_dir}/models/base" and cfg.sft_rs.epochs == 1.5 and cfg.sft.epochs != 1.5


# -- schedule and MFU -----------------------------------------------------------------------------


def test_lr_warms_up_then_decays_to_the_floor():
    f = lambda s, decay="cosine": lr_factor(s, warmup_steps=10, total_steps=110, min_ratio=0.1, decay=decay)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55)  # cosine halfway: the middle of [0.1, 1]
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert f(60, "linear") == pytest.approx(0.55) and f(35, "linear") == pytest.approx(0.775)
    assert f(100, "constant") == 1.0


def test_peak_flops_come_from_a_table_of_devices():
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for("NVIDIA H200") == 989e12
    assert peak_flops_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for("NVIDIA A10") == 125e12  # not the A100's entry
    assert peak_flops_for("NVIDIA L4") == 121e12 and peak_flops_for("NVIDIA L40S") == 362e12
    assert peak_flops_for("Some Future Accelerator") is None
    assert mfu(6e9, 50_000, 989e12, num_devices=2) == pytest.approx(6e9 * 50_000 / (2 * 989e12))
    assert mfu(6e9, 50_000, None) is None


def test_tracking_is_lazy_and_says_what_to_install(tmp_path, monkeypatch):
    from pipelines.train import tracking

    tracking.make_tracker("none", RunDir(tmp_path), "pretrain", {}, "p").log({"loss": 1.0}, 1)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real_find_spec(name)
    )
    with pytest.raises(tracking.TrackingUnavailable, match=r"wandb package is not installed; pip install"):
        tracking.check_tracking_available("wandb")
    from pipelines.pretrain.job import prepare

    make_token_run(tmp_path, num_docs=100)
    with pytest.raises(ConfigError, match="wandb package is not installed"):  # before any worker starts
        prepare(load_config(None, [f"run_dir={tmp_path}", "pretrain.tracking=wandb"]))
    if real_find_spec("tensorboard") is not None:
        tracker = tracking.make_tracker("tensorboard", RunDir(tmp_path), "pretrain", {}, "p")
        tracker.log({"loss": 2.5, "lr": 1e-3}, 3)
        tracker.close()
        assert list((tmp_path / "metrics" / "tensorboard" / "pretrain").glob("events.out.tfevents.*"))


def test_missing_or_too_small_token_shards_are_clear_errors(tmp_path):
    from pipelines.pretrain.job import prepare

    with pytest.raises(ConfigError, match="run the tokenize stage first"):
        prepare(load_config(None, [f"run_dir={tmp_path}"]))
    make_token_run(tmp_path, num_docs=100)
    with pytest.raises(ConfigError, match="fewer than one step's"):
        prepare(load_config(None, [f"run_dir={tmp_path}", "pretrain.global_batch_tokens=1048576"]))


# -- data -----------------------------------------------------------------------------------------


def test_token_split_reads_windows_across_shard_boundaries():
    shards = [np.arange(0, 5), np.arange(5, 7), np.arange(7, 20)]
    split = TokenSplit(shards)
    assert split.num_tokens == 20
    assert split.read(3, 10).tolist() == list(range(3, 13))
    with pytest.raises(IndexError):
        split.read(15, 6)


def test_sample_order_is_a_seeded_permutation_per_epoch():
    order = SampleOrder(num_windows=10, seed=3)
    epoch0, epoch1 = order.windows(0, 10), order.windows(10, 10)
    assert sorted(epoch0) == list(range(10)) and sorted(epoch1) == list(range(10))
    assert epoch0.tolist() != epoch1.tolist()
    assert order.windows(7, 6).tolist() == epoch0[7:].tolist() + epoch1[:3].tolist()  # across the boundary
    assert SampleOrder(10, 3).windows(0, 10).tolist() == epoch0.tolist()
    assert SampleOrder(10, 4).windows(0, 10).tolist() != epoch0.tolist()


def test_ranks_split_the_same_global_batch_whatever_the_world_size():
    split = TokenSplit([np.arange(2000) % 251])

    def global_batch(world_size: int, position: int) -> list[list[int]]:
        rows = []
        for rank in range(world_size):
            batches = TrainBatches(split, 16, 8, 2, rank, world_size, seed=1).step_batches(position)
            rows += [row.tolist() for x, _ in batches for row in x]
        return rows

    assert global_batch(1, 24) == global_batch(2, 24) == global_batch(4, 24)
    x, y = TrainBatches(split, 16, 8, 2, 0, 1, seed=1).step_batches(0)[0]
    assert x.shape == (2, 16) and (x[:, 1:] == y[:, :-1]).all()


def test_validation_pads_ranks_to_the_same_number_of_forwards(token_run):
    root, _ = token_run
    val = TokenSplit.open(root / "tokens", "val")
    cfg = PretrainConfig(seq_len=32, global_batch_tokens=512, micro_batch_size=4)
    n = 9  # 9 windows over 2 ranks: 5 and 4 -> 2 batches of 4 each, the short rank padded
    mine = [padded_eval_batches(val, cfg, n, rank, 2) for rank in (0, 1)]
    assert len(mine[0]) == len(mine[1]) == 2
    assert sum(int(b["valid"].sum()) for rank in mine for b in rank) == n


def test_bytes_per_token_and_unigram_entropy(token_run):
    root, tok = token_run
    lengths = token_byte_lengths(tok, 300)
    assert lengths[tok.eot_id] == 0 and lengths[ord("a")] == 1
    assert all(lengths[t] == len(tok.token_bytes(t)) for t in tok.encode("The owl lives in Lima"))
    assert unigram_entropy(np.array([1, 1, 2, 2]), 4) == pytest.approx(np.log(2))


# -- the per-rank trainer, in process --------------------------------------------------------------


def _local_task(root: Path, cfg: PretrainConfig, seed: int = 0) -> tuple[PretrainTask, Trainer]:
    """The pretrain task and a trainer in this process: exactly what one Ray Train worker builds."""
    from pipelines.config import RunConfig
    from pipelines.pretrain.job import prepare

    task, _, _ = prepare(RunConfig(run_dir=str(root), pretrain=cfg.model_copy(update={"seed": seed})))
    device = torch.device("cpu")
    trainer = Trainer(task.build_model(), task.pretrain, total_steps=task.total_steps, device=device)
    task.setup(0, 1, device)
    return task, trainer


def _steps(task: PretrainTask, trainer: Trainer, positions) -> list[dict[str, float]]:
    return [trainer.train_step(task.next_batches(p)[0], task.loss) for p in positions]


def test_a_tiny_model_learns_far_below_the_unigram_entropy(token_run, one_thread):
    root, tok = token_run
    cfg = PretrainConfig(
        seq_len=32,
        global_batch_tokens=512,
        micro_batch_size=8,
        max_steps=40,
        warmup_steps=4,
        eval_tokens=4096,
    )
    task, trainer = _local_task(root, cfg)
    val = TokenSplit.open(root / "tokens", "val")
    n = eval_windows(val, 32, 4096)
    baseline = unigram_entropy(eval_targets(val, 32, n), task.model_config.vocab_size)
    before = task.evaluate(trainer)
    position = 0
    for _ in range(cfg.max_steps):
        batches, position = task.next_batches(position)
        out = trainer.train_step(batches, task.loss)
        assert np.isfinite(out["loss"]) and out["grad_norm"] > 0
        assert out["count"] == out["tokens"] == cfg.global_batch_tokens  # every token is a target
    after = task.evaluate(trainer)
    assert before["val_loss"] > baseline  # an untrained model is worse than counting tokens
    assert after["val_loss"] < 0.5 * baseline, (after, baseline)
    assert 0 < after["val_bpb"] < before["val_bpb"]


def test_restored_state_continues_with_identical_steps(token_run, one_thread, tmp_path):
    root, tok = token_run
    cfg = PretrainConfig(
        seq_len=32, global_batch_tokens=256, micro_batch_size=4, max_steps=10, warmup_steps=2
    )
    first_task, first = _local_task(root, cfg, seed=5)
    positions = [s * cfg.sequences_per_step for s in range(5)]
    _steps(first_task, first, positions[:3])
    first.save(tmp_path, first.state())
    expected = [out["loss"] for out in _steps(first_task, first, positions[3:])]
    task, second = _local_task(root, cfg, seed=5)
    # a different init: everything must come from the state
    with torch.no_grad():
        for param in second.model.parameters():
            param.add_(1.0)
    second.load_state(Trainer.read(tmp_path))
    assert [out["loss"] for out in _steps(task, second, positions[3:])] == expected


# -- benchmarks' CPU paths ------------------------------------------------------------------------


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_mfu_script_dry_run_counts_flops_and_refuses_without_cuda(capsys, monkeypatch):
    gpu_mfu = _load_benchmark("gpu_mfu")
    assert gpu_mfu.main(["--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the benchmark contract's keys, null where nothing was measured
    assert {k: plan[k] for k in ("benchmark", "ours", "baseline", "ratio", "measured", "ok")} == {
        "benchmark": "gpu_mfu",
        "ours": None,
        "baseline": None,
        "ratio": None,
        "measured": False,
        "ok": False,
    }
    assert plan["unit"] and plan["baseline_name"] and plan["target"] == 0.45
    sizes = {row["name"]: row for row in plan["sizes"]}
    assert 100e6 < sizes["124M"]["params"] < 150e6 and 400e6 < sizes["500M"]["params"] < 600e6
    # FLOPs per token at 2,048 tokens, by hand: 6 x (matmul weights) + 12 x layers x width x seq_len.
    # 124M: 12 x (4 x 768^2 attention + 3 x 768 x 2048 MLP) + 768 x 50,304 tied head = 123,568,128
    assert sizes["124M"]["flops_per_token"] == 6 * 123_568_128 + 12 * 12 * 768 * 2048
    # 500M: 20 x (2 x 1280^2 q/o + 2 x 1280 x 320 k/v + 3 x 1280 x 3456 MLP) + 1280 x 50,304 head
    assert sizes["500M"]["flops_per_token"] == 6 * 411_729_920 + 12 * 20 * 1280 * 2048
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_mfu.main(["--quick"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_mfu_script_measures_and_compares_both_loops(capsys, one_thread):
    """The GPU script's own code, run on a CPU with a tiny model: both loops, same batches, outputs compared."""
    gpu_mfu = _load_benchmark("gpu_mfu")
    argv = ["--device", "cpu", "--sizes", "tiny", "--steps", "3", "--warmup", "1", "--seq-len", "32"]
    argv += ["--micro-batch", "2", "--grad-accum", "2", "--no-compile", "--peak-flops", "1e12"]
    assert gpu_mfu.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["measured"] and summary["ok"] and summary["mismatch"] == []
    assert summary["ours"] > 0 and summary["baseline"] > 0
    assert summary["ratio"] == pytest.approx(summary["ours"] / summary["baseline"])
    # a loop whose loss differs is a failure in the JSON and the exit status
    first = {"first_loss": 10.0, "final_loss": 5.0}
    assert gpu_mfu.compare(first, {"first_loss": 10.0, "final_loss": 5.01}) == []
    assert gpu_mfu.compare(first, {"first_loss": 10.5, "final_loss": 5.0})


# -- the Ray Train job ------------------------------------------------------------------------------


def _job_config(root: Path, *extra: str):
    return load_config(
        None,
        [
            f"run_dir={root}",
            "pretrain.seq_len=32",
            "pretrain.global_batch_tokens=512",
            "pretrain.micro_batch_size=8",
            "pretrain.warmup_steps=4",
            "pretrain.eval_tokens=2048",
            *extra,
        ],
    )


@pytest.mark.slow
def test_two_gloo_workers_survive_a_killed_worker_and_a_rerun_does_not_retrain(
    ray_session, tmp_path, one_thread, caplog
):
    from lm.checkpoint import load_pretrained
    from pipelines.pretrain import job

    tok = make_token_run(tmp_path)
    cfg = _job_config(
        tmp_path,
        "pretrain.num_workers=2",
        "pretrain.resources_per_worker={CPU: 1}",
        "pretrain.max_steps=24",
        "pretrain.checkpoint_every=8",
        "pretrain.eval_every=8",
        "pretrain.fail_at_step=12",
        "pretrain.fail_rank=1",
    )
    numbers = job.run(cfg)

    # the fault really happened, and the run finished by itself from the step-8 checkpoint
    assert (tmp_path / "checkpoints" / "pretrain.fault_injected_at_step_12").is_file()
    metrics = tmp_path / "metrics" / "pretrain.jsonl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    starts = [r["step"] for r in records if r.get("event") == "start"]
    assert starts == [0, 8]
    assert numbers["steps"] == 24 and numbers["tokens"] == 24 * 512 and numbers["world_size"] == 2
    meta = json.loads((Path(numbers["checkpoint"]) / "meta.json").read_text())
    assert meta["step"] == 24 and meta["samples_seen"] == 24 * 16
    # steps 9-12 ran twice; the resumed run saw exactly the same batches and state
    by_step: dict[int, list[float]] = {}
    for r in records:
        if "loss" in r:
            by_step.setdefault(r["step"], []).append(r["loss"])
    assert sorted(s for s, losses in by_step.items() if len(losses) == 2) == [9, 10, 11, 12]
    for s in (9, 10, 11, 12):
        assert by_step[s][0] == pytest.approx(by_step[s][1], rel=1e-5)
    # two ranks over gloo compute the same step as one process over the whole batch
    task, single = _local_task(tmp_path, cfg.pretrain, seed=cfg.seed)
    assert _steps(task, single, [0])[0]["loss"] == pytest.approx(by_step[1][0], rel=1e-5)

    # it learned, and the outputs of the stage exist
    assert numbers["val_loss"] < 0.6 * numbers["unigram_entropy"], numbers
    model, model_meta = load_pretrained(numbers["model_dir"], "cpu")
    assert model_meta["step"] == 24 and model.config.vocab_size == tok.vocab_size
    assert (Path(numbers["model_dir"]) / "raychat_tokenizer.json").is_file()
    # its report section, from what it left in the run directory and the summary the runner writes
    update_summary(RunDir(tmp_path), "pretrain", numbers)
    section = job.report_section(RunDir(tmp_path), "pretrain")
    assert "unigram" in section and "![pretrain_loss](plots/pretrain_loss.png)" in section
    assert (tmp_path / "plots" / "pretrain_loss.png").stat().st_size > 0
    train_history, evals = read_history(metrics)
    assert [r["step"] for r in train_history] == list(range(1, 25))
    assert [r["step"] for r in evals] == [0, 8, 16, 24]  # step 0: the untrained model
    assert evals[0]["val_loss"] > numbers["unigram_entropy"] > evals[-1]["val_loss"]

    # the same command again: its checkpoint is at the last step, so Ray Train is not started (it
    # would start a worker group to train nothing), and the same model is reported
    caplog.set_level("INFO", logger="raychat.train")
    again = job.run(cfg)
    assert "pretrain: trained to step 24 already" in caplog.text
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if r.get("event") == "start"] == [0, 8]
    assert sum("loss" in r for r in records) == 24 + 4
    assert again["steps"] == 24 and again["val_loss"] == numbers["val_loss"]
    assert (again["tokens_per_s"], again["world_size"]) == (numbers["tokens_per_s"], 2)
    assert again["device"] == numbers["device"] is not None


@pytest.mark.slow
def test_fsdp2_on_two_gloo_workers_matches_one_process(ray_session, tmp_path, one_thread):
    from pipelines.pretrain import job

    make_token_run(tmp_path, num_docs=600)
    cfg = _job_config(
        tmp_path,
        "pretrain.num_workers=2",
        "pretrain.resources_per_worker={CPU: 1}",
        "pretrain.strategy=fsdp",
        "pretrain.max_steps=4",
        "pretrain.checkpoint_every=4",
        "pretrain.eval_every=4",
    )
    numbers = job.run(cfg)
    assert numbers["steps"] == 4
    train_history, _ = read_history(tmp_path / "metrics" / "pretrain.jsonl")
    p = cfg.pretrain
    task, single = _local_task(tmp_path, p.model_copy(update={"strategy": "ddp"}), seed=cfg.seed)
    expected = [out["loss"] for out in _steps(task, single, [s * p.sequences_per_step for s in range(4)])]
    assert [r["loss"] for r in train_history] == pytest.approx(expected, rel=1e-4)


def _write_checkpoint_meta(root: Path, step: int, meta: dict) -> Path:
    directory = root / "checkpoints" / "pretrain" / f"checkpoint_step{step:07d}"
    directory.mkdir(parents=True)
    (directory / "meta.json").write_text(json.dumps({"step": step, **meta}))
    return directory


def test_a_checkpoint_of_another_model_seq_len_or_seed_fails_once_on_the_driver(
    tmp_path, monkeypatch, capsys, caplog
):
    """Refused before Ray Train starts (inside the workers it would be retried max_failures times)."""
    from pipelines.pretrain import job
    from pipelines.train import driver
    from pipelines.train.loop import incompatibilities

    make_token_run(tmp_path, num_docs=300)
    cfg = _job_config(tmp_path)
    task, _, _ = job.prepare(cfg)
    meta = {"position": 16, **task.identity(), "data_fingerprint": task.data_fingerprint()}
    assert incompatibilities(meta, task) == []  # the same run continues
    model = task.model_config.model_dump()
    for key, value, said in (
        ("seed", 4, "seed 4 != 0"),
        ("seq_len", 64, "seq_len 64 != 32"),
        ("model_config", {**model, "hidden_size": 64}, "model_config"),
        ("position", None, "no data position"),
    ):
        changed = {k: v for k, v in {**meta, key: value}.items() if v is not None}
        assert any(said in problem for problem in incompatibilities(changed, task)), (key, said)

    from pipelines import cli

    no_ray = lambda *_: pytest.fail("Ray started for a run that cannot go on")  # noqa: E731
    monkeypatch.setattr(driver, "init_ray", no_ray)
    monkeypatch.setattr(cli, "init_ray", lambda *_: None)  # the CLI starts Ray before any stage
    _write_checkpoint_meta(tmp_path, 1, {**meta, "seed": 7})
    with pytest.raises(ConfigError, match=r"seed 7 != 0.*--force"):
        job.run(cfg)
    argv = ["pretrain", "--run-dir", str(tmp_path), "--set", "pretrain.seq_len=32"]
    argv += ["--set", "pretrain.global_batch_tokens=512", "--set", "pretrain.micro_batch_size=8"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the stage's start line, then the error in one line, no traceback
    assert err[-1].startswith("raychat: ") and "seed 7 != 0" in err[-1] and len(err) <= 2, err
    assert not any("Traceback" in line for line in err)

    # checkpoints of other data are not an error: they are set aside, and training starts over
    monkeypatch.setattr(driver, "init_ray", lambda *_: None)
    _write_checkpoint_meta(tmp_path, 2, {**meta, "data_fingerprint": "other-shards"})
    spec = driver.FitSpec(stage="pretrain", run_dir=str(tmp_path), config=cfg.pretrain, task=task)
    aside = driver.set_aside_stale_checkpoints(spec)
    assert aside is not None and (aside / "checkpoint_step0000002").is_dir()
    driver.check_resumable(spec)  # nothing left to resume from

    # a checkpoint past the steps asked for is refused (it was exported as it was, --max-steps 10
    # giving a 200-step model); one short of a longer run goes on, saying the schedule changed
    total = task.total_steps
    _write_checkpoint_meta(tmp_path, total + 5, {**meta, "step": total + 5, "total_steps": total + 5})
    with pytest.raises(ConfigError, match=rf"at step {total + 5}, past the {total} steps.*--force"):
        driver.check_resumable(spec)
    shutil.rmtree(tmp_path / "checkpoints" / "pretrain" / f"checkpoint_step{total + 5:07d}")
    _write_checkpoint_meta(tmp_path, 3, {**meta, "step": 3, "total_steps": total // 2})
    caplog.set_level("INFO", logger="raychat.train")
    driver.check_resumable(spec)
    assert f"resuming at step 3 of a run now set to {total} steps (it was {total // 2})" in caplog.text
    # a state file cut short is one line on the driver (it was a traceback from the worker or the export)
    import torch

    state = tmp_path / "checkpoints" / "pretrain" / "checkpoint_step0000003" / "state.pt"
    torch.save({"weights": torch.zeros(1000)}, state)
    driver.check_resumable(spec)  # whole: fine
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"checkpoint_step0000003 is damaged \(state\.pt: .*--force"):
        driver.check_resumable(spec)


def test_the_latest_checkpoint_is_the_one_ray_train_committed(tmp_path):
    from pipelines.train.driver import SNAPSHOT_FILE, latest_checkpoint

    storage = tmp_path / "checkpoints" / "pretrain"
    assert latest_checkpoint(storage) is None
    for step in (8, 16):
        _write_checkpoint_meta(tmp_path, step, {})
    assert latest_checkpoint(storage).name == "checkpoint_step0000016"
    snapshot = {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_step0000008"}}
    (storage / SNAPSHOT_FILE).write_text(json.dumps(snapshot))
    assert latest_checkpoint(storage).name == "checkpoint_step0000008"


def test_more_cpus_than_the_local_cluster_has_is_an_error_and_a_warning_on_a_joined_one(
    ray_session, monkeypatch, caplog
):
    """An embedded cluster never grows: a training run asking for 64 CPUs would wait forever."""
    from pipelines.train import driver
    from pipelines.train.config import TrainingConfig

    ask = TrainingConfig(num_workers=2, resources_per_worker={"CPU": 32})
    with pytest.raises(ConfigError, match=r"sft: 2 workers x 32 CPU = 64, .* has 2, and it never grows"):
        driver.warn_if_cluster_too_small("sft", ask)
    driver.warn_if_cluster_too_small("sft", TrainingConfig(resources_per_worker={"CPU": 2}))  # fits
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # a cluster this process joined: an autoscaler may add nodes
    caplog.set_level("WARNING", logger="raychat.train")
    driver.warn_if_cluster_too_small("sft", ask)
    assert "training waits until an autoscaler adds them" in caplog.text
