"""The GRPO stage end to end on a toy task whose signal is easy: a tiny model, fine-tuned for seconds to
answer with a random string of a's and b's, is rewarded for starting with 'a' (and for ending with
one). Asynchronous GRPO must raise the reward; the sample records prove the staleness bound and that
no sample is lost or counted twice when a generator or a reward worker is killed, and a crashed run
resumes from its checkpoint when the command runs again. A reward model that the rm stage trains to
prefer replies starting with 'a' steers GRPO beside a rule that rewards something else."""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_helpers import one_thread, tiny_model_dir  # noqa: F401

from pipelines.config import load_config

QUESTION = "Write some letters, please."


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    return make_toy(tmp_path_factory.mktemp("toy"))


def make_toy(root: Path) -> dict[str, Path]:
    """A model that answers with 4-9 random letters from {a, b}, and the problem files."""
    from pipelines.grpo.control import cold_start_sft

    base, _ = tiny_model_dir(root / "base", seed=0, max_seq_len=64)
    rng = random.Random(0)
    with (root / "sft.jsonl").open("w") as f:
        for _ in range(200):
            reply = "".join(rng.choice("ab") for _ in range(rng.randint(4, 9)))
            f.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": QUESTION},
                            {"role": "assistant", "content": reply},
                        ]
                    }
                )
                + "\n"
            )
    cold_start_sft(
        str(base), str(root / "sft.jsonl"), str(root / "sft"), lr=3e-3, max_steps=60, max_seq_len=64
    )
    for name, n in (("train", 400), ("test", 16)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps({"question": QUESTION, "answer": "a"}) + "\n" for _ in range(n))
        )
    return {"root": root, "model": root / "sft"}


def toy_config(
    toy: dict[str, Path], run_dir: Path, name: str = "grpo", sets: Sequence[str] = (), **grpo: Any
):
    """The run config of a GRPO run on the toy; ``name`` other than grpo declares another instance;
    ``sets``: more ``key=value`` settings (another stage's)."""
    overrides = {
        "init": str(toy["model"]),
        "tools": [],
        "data": {
            "source": "jsonl",
            "train_path": str(toy["root"] / "train.jsonl"),
            "test_path": str(toy["root"] / "test.jsonl"),
        },
        "rewards": {
            "rules": [
                {"name": "r1_format", "args": {"pattern": "a.*"}, "label": "starts_a"},
                {"name": "r1_format", "args": {"pattern": ".*a"}, "label": "ends_a", "weight": 0.5},
            ]
        },
        "steps": 8,
        "prompts_per_step": 4,
        "group_size": 8,
        "max_new_tokens": 12,
        "learner": {"lr": 3e-3, "num_cpus": 0.5},
        "generators": {"num_cpus": 0.5, "max_batch_size": 32, "prompts_in_flight": 2},
        "reward_pool": {"num_workers": 1, "num_cpus": 0.25},
        "reference": {"num_cpus": 0.25},
        "eval": {"problems": 16, "samples": 4, "temperature": 1.0},
        "checkpoint_every": 4,
        "max_staleness": 1,
    }
    overrides.update(grpo)
    all_sets = [f"run_dir={run_dir}", "ray.num_cpus=2", *sets] + [
        f"{name}.{k}={json.dumps(v)}" for k, v in overrides.items()
    ]
    if name != "grpo":
        all_sets.append(f"stages={json.dumps({name: {'kind': 'grpo'}})}")
    return load_config(None, all_sets)


def records(run_dir: Path, name: str = "grpo") -> list[dict[str, Any]]:
    path = run_dir / "metrics" / f"{name}_samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_accounting(
    run_dir: Path, steps: int, per_step: int, group: int, bound: int, name: str = "grpo"
) -> list[dict[str, Any]]:
    """No sample lost or counted twice, and the staleness bound, from the recorded samples."""
    rows = records(run_dir, name)
    samples = [r for r in rows if r["kind"] == "sample"]
    assert len({r["id"] for r in samples}) == len(samples), "a sample id was recorded twice"
    trained = [r for r in samples if r["status"] == "trained"]
    assert len(trained) == steps * per_step * group
    per_position = Counter(r["position"] for r in trained)
    assert all(n == group for n in per_position.values()), "a prompt trained twice or in part"
    assert Counter(r["step"] for r in trained) == {s: per_step * group for s in range(1, steps + 1)}
    for r in trained:
        assert r["staleness"] == r["step"] - 1 - r["version"]
        assert 0 <= r["staleness"] <= bound, r
    return rows


@pytest.mark.slow
def test_async_grpo_raises_the_reward_within_the_staleness_bound(ray_session, toy, tmp_path) -> None:
    from pipelines.runner import run_stage
    from pipelines.stages import Graph

    cfg = toy_config(
        toy, tmp_path, generators={"num": 2, "num_cpus": 0.25, "max_batch_size": 32, "prompts_in_flight": 2}
    )
    numbers = run_stage(Graph(cfg), "grpo")  # as raychat grpo runs it: summary, done marker, report
    assert numbers["reward_last_steps"] > numbers["reward_first_steps"] + 0.2, numbers
    assert numbers["heldout_accuracy_after"] > numbers["heldout_accuracy_before"]
    check_accounting(tmp_path, 8, 4, 8, bound=1)
    metrics = [json.loads(x) for x in (tmp_path / "metrics" / "grpo.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 9))
    for key in (
        "reward_mean",
        "reward_starts_a",
        "accuracy",
        "kl",
        "entropy",
        "response_length",
        "clip_frac",
        "samples_per_s",
        "idle_generators",
        "idle_learner",
        "staleness",
    ):
        assert key in metrics[-1], key
    assert (tmp_path / "models" / "rl" / "model.safetensors").is_file()
    report = (tmp_path / "report.md").read_text()
    for plot in ("heldout", "curves", "throughput"):
        assert (tmp_path / "plots" / f"grpo_{plot}.png").is_file()
        assert f"(plots/grpo_{plot}.png)" in report
    assert "### Held-out accuracy" in report and "heldout_accuracy_after" in report


@pytest.mark.slow
def test_staleness_zero_is_the_synchronous_algorithm(ray_session, toy, tmp_path, caplog) -> None:
    from pipelines.grpo.job import run

    caplog.set_level("INFO", logger="raychat")

    control = {
        "enabled": True,
        "conversations": str(toy["root"] / "sft.jsonl"),
        "cpu_seconds": 3,
        "num_cpus": 1,
    }
    cfg = toy_config(toy, tmp_path, max_staleness=0, steps=4, reference={"enabled": "off"}, control=control)
    numbers = run(cfg)
    rows = check_accounting(tmp_path, 4, 4, 8, bound=0)
    assert {r["version"] for r in rows if r["kind"] == "sample" and r["step"] == 4} == {3}
    assert numbers["staleness_histogram"] == {"0": 4 * 4 * 8}
    # the SFT control: trained for its CPU budget, evaluated like the policy, shown beside it
    assert numbers["control_sft_cpu_s"] >= 3 and numbers["control_sft_steps"] >= 1
    assert 0 <= numbers["control_sft_accuracy"] <= 1
    assert "SFT control" in (tmp_path / "metrics" / "grpo.results.md").read_text()
    # minutes of evaluation and control training after the last step show on the console: the
    # evaluations' progress lines, the control's line through the stage's status file
    shown = {r.progress_key for r in caplog.records if getattr(r, "progress", False)}
    assert {"evaluating (sft)", "evaluating (rl)", "evaluating (rl_control_sft)"} <= shown, shown
    meta = json.loads((tmp_path / "models" / "rl_control_sft" / "raychat.json").read_text())
    assert [f["path"] for f in meta["trained_on"]] == [str((toy["root"] / "sft.jsonl").resolve())]
    status = (tmp_path / "metrics" / "grpo.status").read_text()
    assert status.startswith("grpo_control step ") and "/3 s | ETA " in status, status


@pytest.fixture(scope="module")
def faulty_run(ray_session, toy, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    from pipelines.grpo.job import run

    run_dir = tmp_path_factory.mktemp("faulty")
    cfg = toy_config(
        toy, run_dir, steps=6, faults={"kill_generator_at_step": 2, "kill_reward_worker_at_step": 3}
    )
    return run_dir, run(cfg)


@pytest.mark.slow
def test_a_killed_generator_is_restarted_and_its_prompts_requeued(faulty_run) -> None:
    run_dir, numbers = faulty_run
    assert numbers["counts"]["generator_lost"] == 1 and numbers["counts"]["generator_restarts"] == 1
    rows = check_accounting(run_dir, 6, 4, 8, bound=1)
    requeued = [r for r in rows if r["kind"] == "requeued"]
    assert requeued and all(r["reason"] == "generator_lost" for r in requeued)
    trained = {
        r["position"]: r["attempt"] for r in rows if r["kind"] == "sample" and r["status"] == "trained"
    }
    assert any(trained.get(r["position"]) == r["attempt"] + 1 for r in requeued)  # asked again, then trained


@pytest.mark.slow
def test_a_killed_reward_worker_loses_no_sample(faulty_run) -> None:
    run_dir, numbers = faulty_run
    assert numbers["counts"]["reward_worker_restarts"] == 1  # killed while scoring, and restarted
    rows = check_accounting(run_dir, 6, 4, 8, bound=1)
    assert all(r["reward_status"] == "ok" for r in rows if r["kind"] == "sample")


@pytest.mark.slow
def test_a_crashed_run_resumes_from_its_checkpoint(ray_session, toy, tmp_path) -> None:
    """As a second grpo instance (R1's final GRPO): its own settings, checkpoints, metrics and model."""
    from pipelines.grpo.job import run
    from pipelines.grpo.loop import InjectedCrash

    name = "grpo_final"
    cfg = toy_config(
        toy, tmp_path, name, steps=6, checkpoint_every=2, faults={"crash_at_step": 3}, output_name="rl_final"
    )
    with pytest.raises(InjectedCrash):
        run(cfg, name)
    first = records(tmp_path, name)
    assert max(r["step"] for r in first if r.get("status") == "trained") == 3
    numbers = run(cfg, name)  # the same command again
    assert numbers["steps"] == 6
    check_accounting(tmp_path, 6, 4, 8, bound=1, name=name)
    metrics = [json.loads(x) for x in (tmp_path / "metrics" / f"{name}.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert (tmp_path / "models" / "rl_final" / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "models" / "rl_final" / "raychat.json").read_text())
    assert [f["path"] for f in meta["trained_on"]] == [
        str((toy["root"] / "train.jsonl").resolve())
    ]  # problems
    assert not (tmp_path / "metrics" / "grpo.jsonl").exists() and not (tmp_path / "models" / "rl").exists()
    # the records up to the checkpoint (step 2) are the first run's own
    kept = [r for r in records(tmp_path, name) if r.get("status") == "trained" and r["step"] <= 2]
    assert kept == [r for r in first if r.get("status") == "trained" and r["step"] <= 2]
    last = sorted((tmp_path / "checkpoints" / name).glob("step_*"))[-1]
    assert json.loads((last / "driver.json").read_text())["loop"]["version"] == 6
    optimizer = torch.load(last / "state.pt", weights_only=True)["optimizer"]["state"]
    assert {int(s["step"]) for s in optimizer.values()} == {6}  # AdamW continued from step 2's state


def test_a_checkpoint_of_another_starting_model_is_set_aside_not_continued(
    ray_session, toy, tmp_path, caplog
) -> None:
    """Redoing SFT rewrites the model at the same path: the policy trained from the old one must not be
    resumed and exported as if it came from the new one (the settings are unchanged, so no error)."""
    import shutil

    from pipelines.grpo.job import run

    init = tmp_path / "sft"
    shutil.copytree(toy["model"], init)
    cfg = toy_config(toy, tmp_path / "run", steps=2, checkpoint_every=2, init=str(init), eval={"problems": 4})
    run(cfg)
    before = json.loads(
        (tmp_path / "run" / "checkpoints" / "grpo" / "step_000002" / "driver.json").read_text()
    )
    assert set(before["inputs"]) == {"the initial model", "the training data"}
    assert run(cfg)["steps"] == 2  # unchanged inputs: the finished run is resumed, nothing set aside
    assert not list((tmp_path / "run" / "checkpoints").glob("grpo.stale-*"))

    weights = init / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "re-trained"
    with caplog.at_level(logging.WARNING, logger="raychat.train"):
        numbers = run(cfg)
    assert numbers["steps"] == 2
    assert "the initial model changed since they were written" in caplog.text, caplog.text
    (aside,) = (tmp_path / "run" / "checkpoints").glob("grpo.stale-*")
    assert (aside / "step_000002" / "driver.json").is_file()
    after = json.loads(
        (tmp_path / "run" / "checkpoints" / "grpo" / "step_000002" / "driver.json").read_text()
    )
    assert after["inputs"]["the initial model"] != before["inputs"]["the initial model"]
    assert after["inputs"]["the training data"] == before["inputs"]["the training data"]
    metrics = (tmp_path / "run" / "metrics" / "grpo.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics] == [1, 2]  # trained anew, not appended to

    # other eval settings on a finished run: the starting model is scored again on the same problems
    fewer = toy_config(
        toy, tmp_path / "run", steps=2, checkpoint_every=2, init=str(init), eval={"problems": 3}
    )
    assert run(fewer)["heldout_problems"] == 3
    before = json.loads((tmp_path / "run" / "metrics" / "grpo_eval_before.json").read_text())
    assert before["problems"] == 3


def weight_sync_round_trip(toy: dict[str, Path], backend_gpus: float) -> None:
    """A learner rank and a generator form the broadcast group; after a training step the generator
    holds exactly the learner's new weights, tagged with the new version."""
    import ray

    from actors.engine_actor import EngineActorConfig
    from actors.generator import start_generator
    from actors.learner import LearnerGroup, LearnerSpec
    from lm.rl.algos import AlgoConfig
    from lm.rl.policy_step import Completion
    from lm.train.config import StepConfig
    from pipelines.grpo.launcher import Topology, join_weight_group

    spec = LearnerSpec(
        init_dir=str(toy["model"]),
        step=StepConfig(lr=1e-2, warmup_steps=0, decay="constant"),
        algo=AlgoConfig(),
        temperature=1.0,
        total_steps=4,
        micro_batch_tokens=512,
        norm_length=12,
        seed=0,
        use_gpu=backend_gpus > 0,
    )
    device = "cuda" if backend_gpus else "cpu"
    gen = start_generator(
        EngineActorConfig(model_dir=str(toy["model"]), engine="torch", device=device),
        num_cpus=0.25,
        num_gpus=backend_gpus,
    )
    learner = LearnerGroup(spec, 1, [{"num_cpus": 0.25, "num_gpus": backend_gpus}])
    topo = Topology([gen], None, learner, None, None, "collective")
    try:
        join_weight_group(topo, backend="nccl" if backend_gpus else "gloo")
        before = ray.get(gen.weight_sums.remote())
        batch = [
            Completion([1, 2, 3], [97, 98, 97], [False] * 3, [-0.7] * 3, advantage=a) for a in (1.0, -1.0)
        ]
        ray.get(learner.train_async(batch))
        ray.get([learner.ranks[0].broadcast_weights.remote(), gen.receive_weights.remote(1, "finish")])
        after = ray.get(gen.weight_sums.remote())
        expected = {
            k: float(v.double().sum())
            for k, v in ray.get(ray.get(learner.ranks[0].weights_ref.remote())[0]).items()
        }
        assert after == pytest.approx(expected, rel=1e-6)
        assert after != pytest.approx(before, rel=1e-6)
        assert ray.get(gen.stats.remote())["policy_version"] == 1
    finally:
        topo.close()


@pytest.mark.slow
def test_collective_weight_sync_reaches_the_generators(ray_session, toy) -> None:
    weight_sync_round_trip(toy, backend_gpus=0)  # gloo on CPU: the same code as NCCL on GPUs


def preference_pairs(path: Path, n: int = 320) -> None:
    """Pairs that say a reply starting with 'a' beats the same letters starting with 'b' (prompts vary, so
    the rm stage can hold some out by prompt; a third are the toy's own question)."""
    rng = random.Random(1)
    with path.open("w") as f:
        for i in range(n):
            rest = "".join(rng.choice("ab") for _ in range(rng.randint(3, 8)))
            prompt = QUESTION if i % 3 == 0 else f"Letters {i % 40}, please."
            f.write(json.dumps({"prompt": prompt, "chosen": "a" + rest, "rejected": "b" + rest}) + "\n")


@pytest.mark.slow
def test_a_reward_model_from_the_rm_stage_steers_grpo_beside_the_rules(ray_session, toy, tmp_path) -> None:
    """The rm stage trains on the pairs; GRPO in the same run consumes models/rm (ordered after it),
    scores every group with the rules and the reward model, and learns what only the model rewards
    (starting with 'a': the starts_a rule has weight 0 and is logged for the check); the recorded
    rewards are the configured combination, per group, of the rule and the model's raw scores."""
    from pipelines.runner import run_stage
    from pipelines.stages import Graph

    preference_pairs(tmp_path / "pairs.jsonl")
    rm_sets = [
        f"rm.init={toy['model']}",
        "rm.world.enabled=false",
        f"rm.sources=[{{path: {tmp_path / 'pairs.jsonl'}}}]",
        "rm.max_steps=30",
        "rm.batch_pairs=16",
        "rm.micro_batch_pairs=16",
        "rm.lr=0.003",
        "rm.warmup_steps=3",
        "rm.eval_every=30",
    ]
    rules = [
        {"name": "r1_format", "args": {"pattern": "a.*"}, "label": "starts_a", "weight": 0.0},
        {"name": "r1_format", "args": {"pattern": ".*a"}, "label": "ends_a", "weight": 0.5},
    ]
    cfg = toy_config(toy, tmp_path, sets=rm_sets, rewards={"rules": rules, "rm": {"weight": 1.0}})
    graph = Graph(cfg)
    assert "rm" in graph.consumes("grpo") and graph.order(["grpo", "rm"]) == ["rm", "grpo"]
    rm = run_stage(graph, "rm")
    assert rm["heldout_pairwise_accuracy"] > 0.8, rm  # the model tells the letters apart
    numbers = run_stage(graph, "grpo")

    metrics = [json.loads(x) for x in (tmp_path / "metrics" / "grpo.jsonl").read_text().splitlines()]
    assert all(m["rm_failed"] == 0.0 and "reward_rm" in m and "reward_ends_a" in m for m in metrics)
    print("rm:", rm["heldout_pairwise_accuracy"], "grpo per reward:", numbers["reward_components"])
    starts_a, by_model = numbers["reward_components"]["starts_a"], numbers["reward_components"]["rm"]
    assert starts_a["last_steps"] > starts_a["first_steps"] + 0.2, numbers["reward_components"]
    assert by_model["last_steps"] > by_model["first_steps"], numbers["reward_components"]
    counts = numbers["counts"]
    assert counts["rm_ok"] >= 8 * 4 * 8 and counts.get("rm_error", 0) == counts.get("rm_timeout", 0) == 0

    rows = check_accounting(tmp_path, 8, 4, 8, bound=1)
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] == "sample" and r["status"] == "trained":
            groups.setdefault((r["position"], r["attempt"]), []).append(r)
    for group in groups.values():
        raw = torch.tensor([r["components"]["rm"] for r in group], dtype=torch.float64)
        z = (raw - raw.mean()) / max(float(raw.std(unbiased=False)), 1e-3)
        for r, zj in zip(group, z.tolist(), strict=True):
            assert r["reward"] == pytest.approx(0.5 * r["components"]["ends_a"] + zj, abs=1e-5), group
    report = (tmp_path / "report.md").read_text()
    assert "rm is the reward model's raw score" in report and "starts_a" in report
