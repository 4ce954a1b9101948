"""The run directory's helpers: atomic writes and folder swaps, and a summary that loses no update."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from lm import atomic
from pipelines import storage
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir, read_summary, update_summary


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_replace_dir_swaps_whole_folders_and_recovers_a_swap_cut_short(tmp_path: Path) -> None:
    target = tmp_path / "tokens"
    with atomic.staged_dir(target) as new:
        (new / "x").write_text("1")
    with atomic.staged_dir(target) as new:
        (new / "x").write_text("2")
    assert (target / "x").read_text() == "2"
    with pytest.raises(ValueError), atomic.staged_dir(target) as new:
        (new / "x").write_text("3")
        raise ValueError("counts do not add up")
    assert (target / "x").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["tokens"]
    # a process killed between the two renames: the old folder is aside, the target missing
    os.replace(target, tmp_path / ".tokens.old-123-456")
    assert atomic.recover_dir(target) and (target / "x").read_text() == "2"
    assert sorted(os.listdir(tmp_path)) == ["tokens"]


def _update_many(root: str, stage: str, n: int) -> None:
    run = RunDir(root)
    for i in range(n):
        update_summary(run, stage, {"i": i, "stage": stage})


def test_two_stages_updating_the_summary_at_once_lose_nothing(tmp_path: Path) -> None:
    """Each process rewrites summary.json 40 times; without the lock, one's entry would be lost."""
    ctx = multiprocessing.get_context("spawn")
    stages = ["pretrain", "rm", "sft"]
    workers = [ctx.Process(target=_update_many, args=(str(tmp_path), s, 40)) for s in stages]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    on_disk = json.loads((tmp_path / "metrics" / "summary.json").read_text())
    assert on_disk == read_summary(RunDir(tmp_path))
    assert on_disk == {s: {"i": 39, "stage": s} for s in stages}


def test_the_summary_merges_each_stages_file_over_an_older_summary(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    storage.write_json(run.summary, {"world": {"pages": 10}, "clean": {"clean": 1}})  # an older run
    update_summary(run, "clean", {"clean": 5})
    assert read_summary(run) == {"world": {"pages": 10}, "clean": {"clean": 5}}
    assert json.loads(Path(run.summary).read_text()) == read_summary(run)
    assert json.loads(Path(run.summary_part("clean")).read_text()) == {"clean": 5}


def test_path_settings_name_the_run_one_way(tmp_path: Path) -> None:
    """``{run_dir}/...`` and ``models/...`` mean the run's own outputs in every stage's settings (the R1
    recipe's distill stage once read ``{run_dir}/models/base`` as a folder named ``{run_dir}``)."""
    from pipelines.sft.config import SFTConfig
    from pipelines.sft.train import ChatModelSource

    run = RunDir(tmp_path / "run")
    assert run.expand("{run_dir}/world/crawl") == f"{tmp_path}/run/world/crawl"
    assert RunDir("s3://bucket/run").expand("{run_dir}/data") == "s3://bucket/run/data"
    want = (tmp_path / "run" / "models" / "base").resolve()
    assert run.model_setting("{run_dir}/models/base") == want
    assert run.model_setting("models/base") == want
    assert run.model_setting(str(tmp_path / "elsewhere")) == (tmp_path / "elsewhere").resolve()
    with pytest.raises(ConfigError, match=f"no model at {want}"):
        ChatModelSource.resolve(run, SFTConfig(), init="{run_dir}/models/base")
