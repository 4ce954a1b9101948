"""Reward workers: the isolated scoring process (hard per-item limit) and the Ray actor pool (order,
errors, timeouts, a killed worker restarted with no item lost or scored twice)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lm.reward_process import IsolatedScorer
from lm.rewards import RewardConfig, RewardItem

PLUGIN = """
import os, time

def behave(completion, reference):
    '''The completion says what to do; otherwise its length is the reward.'''
    if completion == "sleep":
        time.sleep(1000)
    if completion == "spin":
        9 ** 9 ** 9  # one C call that runs for minutes: only killing the process stops it
    if completion == "die":
        os._exit(3)
    if completion == "segfault":
        import ctypes
        ctypes.string_at(0)
    if completion == "raise":
        raise RuntimeError("reward failed on purpose")
    if completion.startswith("slow"):
        time.sleep(float(completion.split()[1]))
    return float(len(completion))


class EchoScorer:
    # A scorer that is not a rule (as a reward model's will be): its length; "hang" never returns.

    def score(self, items):
        from lm.rewards import ItemScore

        for item in items:
            if item.completion == "hang":
                time.sleep(1000)
        return [ItemScore(it.id, float(len(it.completion)), components={"echo": 1.0}) for it in items]
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("plugin")
    name = f"pool_rewards_{os.getpid()}"
    (folder / f"{name}.py").write_text(PLUGIN)
    sys.path.insert(0, str(folder))
    yield name, str(folder)
    sys.path.remove(str(folder))
    sys.modules.pop(name, None)


def config(plugin: tuple[str, str], time_limit_s: float = 3.0) -> RewardConfig:
    return RewardConfig(
        rules=[{"name": f"{plugin[0]}:behave"}, {"name": "numeric_accuracy", "weight": 10.0}],
        time_limit_s=time_limit_s,
    )


@pytest.mark.slow
def test_isolated_scorer_survives_hangs_crashes_and_errors(plugin: tuple[str, str]) -> None:
    texts = ["a", "sleep", "bb", "spin", "ccc", "die", "raise", "segfault", "7"]
    items = [RewardItem(f"id{i}", t, reference="#### 7") for i, t in enumerate(texts)]
    with IsolatedScorer(config(plugin, time_limit_s=2.0)) as scorer:
        scores = scorer.score(items)
        assert [s.id for s in scores] == [it.id for it in items]
        assert [s.status for s in scores] == [
            "ok",
            "timeout",
            "ok",
            "timeout",
            "ok",
            "error",
            "error",
            "error",
            "ok",
        ]
        assert [s.reward for s in scores] == [1.0, 0, 2.0, 0, 3.0, 0, 0, 0, 1.0 + 10.0]
        assert "exit code 3" in scores[5].error
        assert "reward failed on purpose" in scores[6].error
        assert f"exit code -{signal.SIGSEGV}" in scores[7].error
        assert scorer.stats["timeout"] == 2 and scorer.stats["crashed"] == 2
        # every kill started a fresh process for the items after it; the next batch reuses the last one
        assert scorer.stats["started"] == 5
        assert [s.reward for s in scorer.score([RewardItem(9, "dddd")])] == [4.0]
        assert scorer.stats["started"] == 5


def test_isolated_scorer_reports_rules_that_do_not_load(tmp_path: Path) -> None:
    # valid in this process, but the module is gone by the time the scoring process imports it
    (tmp_path / "vanishing_reward.py").write_text("def f(c, r):\n    return 1.0\n")
    sys.path.insert(0, str(tmp_path))
    try:
        cfg = RewardConfig(rules=[{"name": "vanishing_reward:f"}])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_reward", None)
    (tmp_path / "vanishing_reward.py").unlink()
    with IsolatedScorer(cfg) as scorer:
        scores = scorer.score([RewardItem(1, "x"), RewardItem(2, "y")])
    assert [s.status for s in scores] == ["error", "error"]
    assert "could not be loaded" in scores[0].error and "vanishing_reward" in scores[0].error


# --- the Ray pool ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_env(ray_session, plugin: tuple[str, str]) -> dict:
    """Workers import the plug-in from its folder, as a cluster's working_dir would provide it."""
    return {"env_vars": {"PYTHONPATH": os.pathsep.join([plugin[1], *sys.path])}}


@pytest.mark.slow
def test_pool_scores_batches_in_order_with_errors_and_timeouts(plugin, ray_env) -> None:
    from actors.rewards import RewardPool, RewardPoolConfig

    pool = RewardPool.for_rules(
        config(plugin, time_limit_s=3.0),
        RewardPoolConfig(num_workers=2, num_cpus=0.5, chunk_size=5),
        runtime_env=ray_env,
    )
    try:
        infos = pool.wait_ready()
        assert len({i["pid"] for i in infos}) == 2
        texts = ["x" * (i % 7 + 1) for i in range(40)]
        texts[3], texts[17], texts[30] = "raise", "sleep", "die"
        texts[25] = "#### 7"
        items = [RewardItem(f"item-{i}", t, reference="7") for i, t in enumerate(texts)]
        batch = pool.score(items)
        assert [s.id for s in batch.scores] == [it.id for it in items]
        status = {s.id: s.status for s in batch.scores}
        assert (status["item-3"], status["item-17"], status["item-30"]) == ("error", "timeout", "error")
        expected = [float(len(t)) + (10.0 if t == "#### 7" else 0.0) for t in texts]
        for i, score in enumerate(batch.scores):
            assert score.reward == (0.0 if i in (3, 17, 30) else expected[i]), score
        assert batch.counts["ok"] == 37
        assert batch.counts["error"] == 2 and batch.counts["timeout"] == 1
        assert batch.counts["chunks"] == 8 and batch.counts["retried_chunks"] == 0
        # the pool goes on scoring after all that, for several callers at once
        with ThreadPoolExecutor(3) as callers:
            again = list(callers.map(pool.score, [items[:4], items[4:9], items[9:12]]))
        assert [b.rewards for b in again] == [expected[:3] + [0.0], expected[4:9], expected[9:12]]
        assert pool.counts["timeout"] == 1 and pool.counts["ok"] == 37 + 3 + 5 + 3
    finally:
        pool.close()


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_no_item_is_lost_or_scored_twice(plugin, ray_env) -> None:
    import ray

    from actors.rewards import RewardPool, RewardPoolConfig

    pool = RewardPool.for_rules(
        config(plugin, time_limit_s=10.0),
        RewardPoolConfig(num_workers=2, num_cpus=0.5, chunk_size=4, in_flight=1),
        runtime_env=ray_env,
    )
    try:
        before = pool.wait_ready()
        items = [RewardItem(i, f"slow 0.1 {'y' * (i % 5)}") for i in range(48)]
        victim = pool.workers[0]

        def kill_soon() -> None:
            time.sleep(1.5)  # mid-run: each chunk takes about 0.4 s, the batch about 2.5 s
            ray.kill(victim, no_restart=False)

        killer = threading.Thread(target=kill_soon)
        killer.start()
        batch = pool.score(items)
        killer.join()
        assert [s.id for s in batch.scores] == list(range(48))  # each id once, in order
        assert all(s.status == "ok" for s in batch.scores), [s for s in batch.scores if s.status != "ok"]
        assert batch.rewards == [float(len(it.completion)) for it in items]
        assert batch.counts["worker_lost"] >= 1 and batch.counts["retried_chunks"] >= 1
        after = pool.wait_ready()
        assert after[0]["restarted"] and after[0]["pid"] != before[0]["pid"]
        assert after[1]["pid"] == before[1]["pid"]
    finally:
        pool.close()


@pytest.mark.slow
def test_any_scorer_plugs_in_and_a_hung_worker_is_restarted(plugin, ray_env) -> None:
    import functools
    import importlib

    from actors.rewards import RewardPool, RewardPoolConfig

    echo = importlib.import_module(plugin[0]).EchoScorer
    pool = RewardPool(
        functools.partial(echo),
        RewardPoolConfig(num_workers=1, num_cpus=0.5, chunk_size=2, grace_s=2.0),
        item_time_limit_s=0.5,
        runtime_env=ray_env,
    )
    try:
        before = pool.wait_ready()
        items = [RewardItem(i, t) for i, t in enumerate(["a", "bb", "hang", "c", "dd", "eee"])]
        batch = pool.score(items)
        assert [s.id for s in batch.scores] == list(range(6))
        assert [s.status for s in batch.scores] == ["ok", "ok", "timeout", "timeout", "ok", "ok"]
        assert batch.rewards == [1.0, 2.0, 0.0, 0.0, 2.0, 3.0]
        assert batch.counts["hung_workers"] == 1
        after = pool.wait_ready()
        assert after[0]["restarted"] and after[0]["pid"] != before[0]["pid"]
    finally:
        pool.close()


@pytest.mark.slow
def test_a_reward_the_workers_cannot_import_fails_at_start(plugin, ray_session) -> None:
    import ray

    from actors.rewards import RewardPool, RewardPoolConfig

    # the driver imports the plug-in (its folder is on this process's path), the workers cannot
    pool = RewardPool.for_rules(config(plugin), RewardPoolConfig(num_workers=1, num_cpus=0.5))
    try:
        with pytest.raises(ray.exceptions.ActorDiedError, match=f"cannot import module '{plugin[0]}'"):
            pool.wait_ready()
    finally:
        pool.close()
