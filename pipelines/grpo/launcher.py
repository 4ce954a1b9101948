"""The GRPO topology in one place: which pools run, with what resources, where.

    topology = launch(cfg, spec, tools, total_steps, rm_dir)   # a placement group and its pools
    ...                                                         # pipelines/grpo/loop.py drives them
    topology.close()

    placement group (cfg.placement_strategy)
    +-- generators x N      GeneratorActor (actors/generator.py): an engine (TorchEngine or vLLM) with
    |                       the tool hooks; samples G completions per prompt with per-token logprobs
    +-- reward workers x M  RewardPool (actors/rewards.py): rule rewards in killable child processes
    +-- reward model x K    RewardPool.for_model (only with rewards.rm): the reward model, loaded once
    |                       per actor, scores each group's G samples as one padded batch
    +-- learner ranks x R   LearnerActor (actors/learner.py): lm/train's Trainer (DDP or FSDP2) over
    |                       one torch.distributed group; rank 0 sends the weights to the generators
    +-- reference x 0|1     ReferenceActor (actors/learner.py): the frozen starting model, for the KL

Each pool's actors take their own bundles ({"CPU": c} or {"CPU": c, "GPU": g}), so a GPU config puts
generators and learner ranks on separate GPUs. Weights go from the learner to the generators through
the object store (CPU) or a broadcast group (``weight_sync: collective``: NCCL on GPU; the default
when generators have GPUs), set up here. The driver (this process) runs the rollout collector and the
loop; it reserves no resources.

With a reward model, each group goes to the rule workers and the reward-model actors at once, and its
rewards are the rules' weighted sum plus ``rewards.rm.weight`` times the model's score standardised
within the group (``lm.rewards.with_model_scores``; ``rewards.rm.normalize: none`` for the raw score).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.engine_actor import EngineActorConfig
from actors.generator import start_generator
from actors.learner import LearnerGroup, LearnerSpec, ReferenceActor
from actors.rewards import RewardPool, RewardPoolConfig
from lm.reward_process import scorer_for
from lm.rewards import ItemScore, RewardConfig, RewardItem, with_model_scores
from pipelines.grpo.config import GRPOConfig

log = logging.getLogger("raychat.grpo")
PLACEMENT_TIMEOUT_S = 300


@dataclass
class Topology:
    generators: list[Any]
    rewards: RewardPool | None
    learner: LearnerGroup
    reference: Any
    score: Any  # items -> scores, through the reward pool or in this process
    weight_sync: str
    placement: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    reward_model: RewardPool | None = None  # with rewards.rm: the reward model's actors

    def close(self) -> None:
        self.learner.close()
        if self.reward_model is not None:
            self.reward_model.close()
        for g in self.generators:
            ray.kill(g, no_restart=True)
        if self.reference is not None:
            ray.kill(self.reference, no_restart=True)
        if self.rewards is not None:
            self.rewards.close()
        if self.placement is not None:
            remove_placement_group(self.placement)


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    b = {"CPU": cpus} if cpus else {}
    if gpus:
        b["GPU"] = gpus
    return b or {"CPU": 0.01}  # a bundle must ask for something


def launch(
    cfg: GRPOConfig, spec: LearnerSpec, tools: dict[str, Any], total_steps: int, rm_dir: str | None = None
) -> Topology:
    """Start every pool in one placement group (see the module docstring); ``rm_dir``: the reward
    model's directory, required when ``cfg.rewards.rm`` is set."""
    g, r, lrn, ref, rmp = cfg.generators, cfg.reward_pool, cfg.learner, cfg.reference, cfg.rm_pool
    if cfg.rewards.rm is not None and rm_dir is None:
        raise ValueError("grpo: rewards.rm is set but no reward model directory was given")
    rm_workers = rmp.num_workers if cfg.rewards.rm is not None else 0
    bundles = [_bundle(g.num_cpus, g.num_gpus)] * g.num
    bundles += [_bundle(r.num_cpus, 0)] * r.num_workers
    bundles += [_bundle(rmp.num_cpus, rmp.num_gpus)] * rm_workers
    bundles += [_bundle(lrn.num_cpus, lrn.num_gpus)] * lrn.num_workers
    bundles += [_bundle(ref.num_cpus, ref.num_gpus)] * int(cfg.use_reference)
    pg = placement_group(bundles, strategy=cfg.placement_strategy, name="grpo")
    try:
        ray.get(pg.ready(), timeout=PLACEMENT_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        raise RuntimeError(
            f"grpo: the cluster cannot hold the GRPO placement group {bundles} "
            f"(cluster: {ray.cluster_resources()}); shrink the pools in the grpo section"
        ) from None
    slots = iter(range(len(bundles)))

    def at(bundle: int) -> dict[str, Any]:
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=bundle)
        }

    engine = EngineActorConfig(
        model_dir=spec.init_dir,
        engine=g.engine,
        device="cuda" if g.num_gpus else "cpu",
        max_batch_size=g.max_batch_size,
        max_queued=max(256, g.prompts_in_flight * 4),
        seed=spec.seed,
        engine_kwargs=g.engine_kwargs,
    )
    generators = [
        start_generator(
            engine,
            tools,
            num_cpus=g.num_cpus,
            num_gpus=g.num_gpus,
            max_restarts=g.max_restarts,
            **at(next(slots)),
        )
        for _ in range(g.num)
    ]

    pool = None
    rules = cfg.rewards.model_copy(update={"rm": None})  # the reward model is scored by its own pool
    if r.num_workers:
        pool_cfg = RewardPoolConfig(
            num_workers=r.num_workers, num_cpus=r.num_cpus, isolate=r.isolate, max_restarts=r.max_restarts
        )
        pool = RewardPool.for_rules(
            rules, pool_cfg, worker_options=[at(next(slots)) for _ in range(r.num_workers)]
        )
        score = _pool_scores(pool)
    else:
        score = scorer_for(rules).score

    model_pool = None
    if rm_workers:
        rm_cfg = RewardPoolConfig(
            num_workers=rm_workers,
            num_cpus=rmp.num_cpus,
            num_gpus=rmp.num_gpus,
            chunk_size=cfg.group_size,  # a group is one batch: its G samples share the prompt
            max_restarts=rmp.max_restarts,
        )
        model_pool = RewardPool.for_model(
            cfg.rewards,
            rm_dir,
            rm_cfg,
            batch_tokens=rmp.batch_tokens,
            worker_options=[at(next(slots)) for _ in range(rm_workers)],
        )
        score = rules_and_model(score, model_pool.score, cfg.rewards)

    per_rank = [
        {"num_cpus": lrn.num_cpus, "num_gpus": lrn.num_gpus, **at(next(slots))}
        for _ in range(lrn.num_workers)
    ]
    learner = LearnerGroup(spec, lrn.num_workers, per_rank)

    reference = None
    if cfg.use_reference:
        reference = (
            ray.remote(ReferenceActor)
            .options(
                num_cpus=ref.num_cpus,
                num_gpus=ref.num_gpus,
                max_restarts=-1,
                max_task_retries=-1,
                **at(next(slots)),
            )
            .remote(spec.init_dir, cfg.temperature, use_gpu=ref.num_gpus > 0)
        )

    sync = cfg.weight_sync
    if sync == "auto":  # NCCL needs each member on its own GPU; fractional GPUs share one
        sync = "collective" if g.num_gpus >= 1 and lrn.num_gpus >= 1 else "object_store"
    topo = Topology(generators, pool, learner, reference, score, sync, pg, reward_model=model_pool)
    ray.get([gen.stats.remote() for gen in generators])  # every engine loaded
    if pool is not None:
        pool.wait_ready()
    if model_pool is not None:
        model_pool.wait_ready()  # every reward model loaded (a broken directory fails here, by name)
    if sync == "collective":
        join_weight_group(topo, backend="nccl" if g.num_gpus and lrn.num_gpus else "gloo")
    log.info(
        "grpo topology: %d generator(s) x %s, %d reward worker(s), %d reward model actor(s) x %s, "
        "%d learner rank(s) x %s, reference %s; weights by %s",
        g.num, _bundle(g.num_cpus, g.num_gpus), r.num_workers, rm_workers, _bundle(rmp.num_cpus, rmp.num_gpus),
        lrn.num_workers, _bundle(lrn.num_cpus, lrn.num_gpus), "on" if reference is not None else "off", sync,
    )  # fmt: skip
    return topo


def join_weight_group(topo: Topology, backend: str) -> None:
    """Learner rank 0 and every generator form one broadcast group (lm/rl/broadcast.py)."""
    rank0 = topo.learner.ranks[0]
    host, port = ray.get(rank0.address.remote())
    spec = ray.get(rank0.weight_spec.remote())
    world = 1 + len(topo.generators)
    calls = [rank0.join_weight_group.remote(port, world, backend)]
    calls += [
        gen.join_weight_group.remote(host, port, 1 + i, world, backend, spec)
        for i, gen in enumerate(topo.generators)
    ]
    ray.get(calls)


def _pool_scores(pool: RewardPool):
    def score(items):
        return pool.score(items).scores

    return score


def rules_and_model(
    rules: Callable[[list[RewardItem]], list[ItemScore]],
    model: Callable[[Sequence[RewardItem]], Any],
    rewards: RewardConfig,
) -> Callable[[list[RewardItem]], list[ItemScore]]:
    """A group's scores from the rules and the reward model, asked at the same time (``model``: a
    RewardPool's ``score``, which never raises: a failed or late call comes back as ``error`` or
    ``timeout`` items), combined by ``lm.rewards.with_model_scores``."""

    def score(items: list[RewardItem]) -> list[ItemScore]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rm") as ex:
            judged = ex.submit(model, items)
            by_rules = rules(items)
            return with_model_scores(rewards, by_rules, judged.result().scores)

    return score
