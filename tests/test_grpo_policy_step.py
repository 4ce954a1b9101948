"""The learner's GRPO step (lm/rl/policy_step.py) without Ray: masks, aggregation over micro-batches,
the weight broadcast group (lm/rl/broadcast.py) with gloo."""

from __future__ import annotations

import copy
import socket
import threading

import pytest
import torch
from engine_helpers import one_thread, tiny_model  # noqa: F401

from lm.rl.algos import AlgoConfig, PolicyBatch, policy_loss
from lm.rl.policy_step import Completion, PolicyStep, micro_batch
from lm.scoring import gather_logprobs
from lm.train.config import StepConfig
from lm.train.trainer import Trainer


def completions(seed: int = 0, n: int = 6) -> list[Completion]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(0, 200, (3 + i % 3,), generator=g).tolist()
        tokens = torch.randint(0, 200, (4 + 2 * i,), generator=g).tolist()
        forced = [False] * len(tokens)
        if i % 2:
            forced[1:3] = [True, True]  # a tool's reply in the middle
        lp = (-torch.rand(len(tokens), generator=g) * 3).tolist()
        out.append(Completion(prompt, tokens, forced, lp, advantage=float(i - 2.5), ref_logprobs=lp))
    return out


def test_micro_batch_aligns_tokens_and_masks_forced_ones() -> None:
    c = Completion([5, 6], [7, 8, 9], [False, True, False], [-1.0, -2.0, -3.0], 0.5, [-0.5, -0.6, -0.7])
    b = micro_batch([c], pad_id=0, device=torch.device("cpu"))
    assert b["input_ids"][0].tolist() == [5, 6, 7, 8]
    # position 1 predicts token 7, position 2 token 8 (forced: untrained), position 3 token 9
    assert b["mask"][0].tolist() == [False, True, False, True]
    assert b["targets"][0].tolist() == [-100, 7, -100, 9]
    assert b["behaviour"][0].tolist() == [0.0, -1.0, -2.0, -3.0]
    assert b["reference"][0].tolist() == pytest.approx([0.0, -0.5, -0.6, -0.7])
    assert micro_batch([], 0, torch.device("cpu"))["mask"].sum() == 0  # an empty share is one masked row


def _step(model, micro_batch_tokens: int, algo: AlgoConfig) -> tuple[dict[str, float], torch.nn.Module]:
    trainer = Trainer(
        model,
        StepConfig(lr=1e-2, warmup_steps=0, decay="constant", grad_clip=None),
        total_steps=10,
        device=torch.device("cpu"),
    )
    step = PolicyStep(trainer, algo, temperature=0.7, micro_batch_tokens=micro_batch_tokens, norm_length=16)
    return step.train(completions()), trainer.model


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_the_step_is_the_whole_batch_loss_however_it_is_split(aggregation: str) -> None:
    algo = AlgoConfig(aggregation=aggregation, kl_coef=0.1, policy_loss="ppo_clip")
    base = tiny_model(seed=1, vocab=256)
    # the loss by hand: one padded batch, policy_loss over it
    batch = micro_batch(completions(), 0, torch.device("cpu"))
    logprobs = gather_logprobs(base(batch["input_ids"]), batch["targets"], 0.7)
    expected, _ = policy_loss(
        algo.model_copy(update={"norm_length": 16}),
        logprobs,
        PolicyBatch(batch["behaviour"], batch["advantages"], batch["mask"], ref_logprobs=batch["reference"]),
    )
    whole, after_whole = _step(copy.deepcopy(base), 10_000, algo)
    split, after_split = _step(copy.deepcopy(base), 16, algo)  # one completion per micro-batch
    assert whole["loss"] == pytest.approx(float(expected.detach()), rel=1e-4)
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-4)
    assert whole["kl"] == pytest.approx(split["kl"], rel=1e-4)
    for a, b in zip(after_whole.parameters(), after_split.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_several_updates_use_the_proximal_policy_and_report_clipping() -> None:
    algo = AlgoConfig(policy_loss="decoupled_ppo", updates_per_batch=3, minibatch_size=3)
    metrics, _ = _step(tiny_model(seed=2, vocab=256), 64, algo)
    assert metrics["optimizer_steps"] == 6  # 3 passes x 2 minibatches of 3
    assert 0.0 <= metrics["clip_frac"] <= 1.0
    assert metrics["is_weight_mean"] > 0 and metrics["entropy"] > 0
    assert metrics["trained_tokens"] == 3 * sum(len(c.token_ids) - sum(c.forced) for c in completions())


def test_the_learner_scores_the_engines_own_rollouts_as_the_generator_did() -> None:
    """End to end on rollouts (not hand-made batches): samples with tool calls, stopped by a stop
    token and cut at max_tokens. The learner trains exactly the sampled tokens, never the prompt or a
    tool's injected reply, and its log-probabilities at the sampling temperature equal the generator's
    on the same weights (next-token alignment: an off-by-one gives differences of whole nats)."""
    from lm.engine import SamplingParams, ToolHook, TorchEngine

    model = tiny_model(seed=5, vocab=256)
    engine = TorchEngine(copy.deepcopy(model), max_batch_size=32, seed=0)
    prompts = [
        torch.randint(0, 256, (4 + i,), generator=torch.Generator().manual_seed(i)).tolist() for i in range(4)
    ]
    free = engine.generate(prompts, SamplingParams(temperature=0.7, n=8, max_tokens=24, seed=1))
    common = torch.bincount(torch.tensor([t for r in free for t in r.token_ids]), minlength=256).argsort(
        descending=True
    )
    open_id, close_id, stop_id = (int(t) for t in common[:3])
    injected = [250, 251, 252]
    hook = ToolHook(open_id, close_id, lambda request, between: injected)
    params = SamplingParams(
        temperature=0.7, n=8, max_tokens=24, logprobs=True, stop_token_ids=[stop_id], seed=2
    )
    results = engine.generate(prompts, params, [hook])
    assert {"stop", "length"} <= {r.finish_reason for r in results} and any(any(r.forced) for r in results)

    trainer = Trainer(
        copy.deepcopy(model), StepConfig(lr=1e-3, warmup_steps=0), total_steps=1, device=torch.device("cpu")
    )
    step = PolicyStep(trainer, AlgoConfig(), temperature=0.7, micro_batch_tokens=4096, pad_id=255)
    items = [Completion(r.prompt_ids, r.token_ids, r.forced, r.sampled_logprobs, 1.0) for r in results]
    batch = micro_batch(items, 255, torch.device("cpu"))
    with torch.no_grad():
        learner, _ = step._scores(trainer.module.eval(), batch)
    for i, r in enumerate(results):
        start, n = len(r.prompt_ids) - 1, len(r.token_ids)
        trained = batch["mask"][i]
        assert trained[start : start + n].tolist() == [not f for f in r.forced]
        assert not trained[:start].any() and not trained[start + n :].any()
        targets = batch["targets"][i, start : start + n].tolist()
        assert [t for t, f in zip(targets, r.forced, strict=True) if not f] == [
            t for t, f in zip(r.token_ids, r.forced, strict=True) if not f
        ]
    diff = (learner - batch["behaviour"]).abs()[batch["mask"]]
    assert diff.numel() > 100 and float(diff.max()) < 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mixed_state() -> dict[str, torch.Tensor]:
    """A model's weights in two dtypes (norm gains in bf16), so the broadcast's buckets are tested."""
    state = tiny_model(seed=4, vocab=64).state_dict()
    return {k: v.to(torch.bfloat16) if "norm" in k else v for k, v in state.items()}


def _member(rank: int, port: int, spec, got: dict) -> None:
    from lm.rl.broadcast import WeightBroadcast

    group = WeightBroadcast("127.0.0.1", port, rank, 3, "gloo", timeout_s=60)
    if rank == 0:
        group.send(_mixed_state().items())
    else:
        got[rank] = {k: v.clone() for k, v in group.receive(spec)}


def test_weights_broadcast_to_every_member_in_one_group() -> None:
    """Three members (the learner's rank 0 and two generators) as threads: gloo needs no GPU."""
    from lm.rl.broadcast import weight_spec

    expected = _mixed_state()
    spec = weight_spec(expected.items())
    assert {dtype for _, _, dtype in spec} == {"float32", "bfloat16"}
    got: dict[int, dict[str, torch.Tensor]] = {}
    port = _free_port()
    threads = [threading.Thread(target=_member, args=(r, port, spec, got)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for rank in (1, 2):
        assert list(got[rank]) == list(expected)
        for name, t in expected.items():
            torch.testing.assert_close(got[rank][name], t)
