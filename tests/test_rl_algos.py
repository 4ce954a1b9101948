"""Advantage estimators and policy losses against values worked out by hand in each test."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from lm.rl.algos import (
    ADVANTAGES,
    AlgoConfig,
    PolicyBatch,
    aggregate,
    compute_advantages,
    entropy_from_logits,
    informative_groups,
    kl_penalty,
    minibatches,
    policy_loss,
    register_advantage,
    training_mask,
)

# --- advantages ----------------------------------------------------------------------------------

# Two prompts of 4 completions, interleaved (groups need not be contiguous), and a prompt sampled once.
REWARDS = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 5.0])
GROUPS = torch.tensor([7, 3, 7, 3, 7, 3, 7, 3, 9])
# group 7: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt((4 x 0.25) / 3) = sqrt(1/3)
# group 3: rewards 1, 1, 1, 1 -> all equal; group 9: one completion


def test_grpo_advantages() -> None:
    adv = compute_advantages(AlgoConfig(advantage="grpo"), REWARDS, GROUPS)
    z = 0.5 / math.sqrt(1 / 3)  # 0.8660
    expected = [z, 0, -z, 0, -z, 0, z, 0, 0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-5)


def test_dr_grpo_does_not_divide_by_the_std() -> None:
    adv = compute_advantages(AlgoConfig(advantage="dr_grpo"), REWARDS, GROUPS)
    assert adv.tolist() == pytest.approx([0.5, 0, -0.5, 0, -0.5, 0, 0.5, 0, 0])


def test_rloo_uses_the_mean_of_the_others() -> None:
    adv = compute_advantages(AlgoConfig(advantage="rloo"), REWARDS, GROUPS)
    # completion 0: 1 - mean(0, 0, 1) = 2/3; completion 2: 0 - mean(1, 0, 1) = -2/3
    assert adv.tolist() == pytest.approx([2 / 3, 0, -2 / 3, 0, -2 / 3, 0, 2 / 3, 0, 0])


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_a_group_of_equal_rewards_has_zero_advantage(name: str) -> None:
    for value in (0.0, 1.0, -3.5):
        rewards = torch.full((6,), value)
        adv = compute_advantages(AlgoConfig(advantage=name), rewards, torch.tensor([0, 0, 0, 1, 1, 1]))
        assert torch.equal(adv, torch.zeros(6))


def test_informative_groups_and_a_new_estimator_in_one_function() -> None:
    assert informative_groups(REWARDS, GROUPS).tolist() == [True, False] * 4 + [False]

    @register_advantage("test_max_baseline")
    def max_baseline(rewards, group_ids, config):
        best = torch.zeros_like(rewards)
        for g in group_ids.unique():
            best[group_ids == g] = rewards[group_ids == g].max()
        return rewards - best

    try:
        adv = compute_advantages(AlgoConfig(advantage="test_max_baseline"), REWARDS, GROUPS)
        assert adv.tolist() == [0, 0, -1, 0, -1, 0, 0, 0, 0]
    finally:
        ADVANTAGES.pop("test_max_baseline")
    with pytest.raises(ValidationError, match="unknown advantage .test_max_baseline."):
        AlgoConfig(advantage="test_max_baseline")


# --- clipping ------------------------------------------------------------------------------------


def _clip_case(advantage: float, ratios: list[float], **config):
    algo = AlgoConfig(eps_low=0.2, eps_high=0.28, **config)
    behaviour = torch.full((1, len(ratios)), -1.0)
    logprobs = (behaviour + torch.log(torch.tensor([ratios]))).requires_grad_()
    batch = PolicyBatch(behaviour, torch.tensor([advantage]), torch.ones(1, len(ratios), dtype=torch.bool))
    loss, metrics = policy_loss(algo, logprobs, batch)
    loss.backward()
    # token-mean over the tokens: per-token losses and gradients are n times what the mean shows
    n = len(ratios)
    from lm.rl.algos import POLICY_LOSSES

    per_token, _ = POLICY_LOSSES[algo.policy_loss](logprobs.detach(), batch, algo)
    return per_token[0].tolist(), (logprobs.grad[0] * n).tolist(), metrics


def test_clipping_of_a_positive_advantage_at_one_plus_eps_high() -> None:
    # A = +1: loss = -min(r, clip(r, 0.8, 1.28)); above 1.28 the ratio is held (no gradient)
    losses, grads, metrics = _clip_case(1.0, [0.5, 0.9, 1.1, 1.5])
    assert losses == pytest.approx([-0.5, -0.9, -1.1, -1.28])
    assert grads == pytest.approx([-0.5, -0.9, -1.1, 0.0])  # d/dlogp of -r is -r
    assert metrics["clip_frac_high"] == pytest.approx(0.25) and metrics["clip_frac_low"] == 0.0
    # below 1 - eps_low nothing is clipped for a positive advantage: raising it is always allowed
    assert metrics["clip_frac"] == pytest.approx(0.25)


def test_clipping_of_a_negative_advantage_at_one_minus_eps_low() -> None:
    # A = -1: loss = max(r, clip(r, 0.8, 1.28)); below 0.8 the ratio is held (no gradient)
    losses, grads, metrics = _clip_case(-1.0, [0.5, 0.9, 1.1, 1.5])
    assert losses == pytest.approx([0.8, 0.9, 1.1, 1.5])
    assert grads == pytest.approx([0.0, 0.9, 1.1, 1.5])
    assert metrics["clip_frac_low"] == pytest.approx(0.25) and metrics["clip_frac_high"] == 0.0


def test_symmetric_epsilon_clips_at_one_point_two() -> None:
    algo = AlgoConfig()  # eps 0.2 both sides
    assert (algo.eps_low, algo.eps_high) == (0.2, 0.2)
    behaviour = torch.full((1, 1), -1.0)
    logprobs = behaviour + math.log(1.5)
    batch = PolicyBatch(behaviour, torch.tensor([2.0]), torch.ones(1, 1, dtype=torch.bool))
    loss, _ = policy_loss(algo, logprobs, batch)
    assert float(loss) == pytest.approx(-2.0 * 1.2)


def test_dual_clip_caps_the_loss_of_a_negative_advantage() -> None:
    losses, grads, _ = _clip_case(-1.0, [5.0, 2.0], dual_clip=3.0)
    # ratio 5: max(5, 1.28) = 5 is capped at 3 x |A| = 3 (no gradient); ratio 2: 2 < 3 unchanged
    assert losses == pytest.approx([3.0, 2.0])
    assert grads == pytest.approx([0.0, 2.0])


def test_on_the_first_update_the_loss_is_minus_the_mean_advantage() -> None:
    behaviour = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.1]])
    logprobs = behaviour.clone().requires_grad_()
    batch = PolicyBatch(behaviour, torch.tensor([1.5, -0.5]), torch.ones(2, 3, dtype=torch.bool))
    loss, metrics = policy_loss(AlgoConfig(), logprobs, batch)
    assert float(loss.detach()) == pytest.approx(-(1.5 * 3 - 0.5 * 3) / 6)
    loss.backward()
    assert logprobs.grad.flatten().tolist() == pytest.approx([-0.25] * 3 + [0.5 / 6] * 3)
    assert metrics["clip_frac"] == 0.0 and metrics["approx_kl"] == pytest.approx(0.0)


# --- KL ------------------------------------------------------------------------------------------


def test_k3_is_exp_r_minus_r_minus_one_and_never_negative() -> None:
    logprobs = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.5, -1.0, -0.5])
    # r = ref - logprob = -0.5, 1.0, 0.0
    expected = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1, 0.0]
    assert kl_penalty(logprobs, ref).tolist() == pytest.approx(expected)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=gen) * 3, torch.randn(1000, generator=gen) * 3
    assert bool((kl_penalty(a, b) >= 0).all())
    assert kl_penalty(a, b, "k1").tolist() == pytest.approx((a - b).tolist())
    assert kl_penalty(a, b, "k2").tolist() == pytest.approx((0.5 * (a - b) ** 2).tolist())


def test_kl_term_joins_the_loss_with_its_coefficient() -> None:
    behaviour = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    batch = PolicyBatch(behaviour, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool), ref_logprobs=ref)
    kl = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 2]
    without, m0 = policy_loss(AlgoConfig(kl_coef=0.0), behaviour, batch)
    with_kl, m1 = policy_loss(AlgoConfig(kl_coef=0.1), behaviour, batch)
    assert float(without) == pytest.approx(-1.0)  # KL is only logged at coefficient 0
    assert m0["kl"] == pytest.approx(sum(kl) / 2)
    assert float(with_kl) == pytest.approx(-1.0 + 0.1 * sum(kl) / 2)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(
            AlgoConfig(kl_coef=0.1), behaviour, PolicyBatch(behaviour, torch.tensor([1.0]), batch.mask)
        )


# --- decoupled PPO and the truncated importance weight ---------------------------------------------


def _decoupled(is_mode: str, proximal: bool = True):
    behaviour = torch.tensor([[-1.0, -1.0, -1.0]])
    prox = torch.tensor([[-1.0, -0.5, 0.0]])  # weights proximal/behaviour: 1, e^0.5 = 1.6487, e = 2.718
    logprobs = prox.clone().requires_grad_()
    batch = PolicyBatch(
        behaviour,
        torch.tensor([1.0]),
        torch.ones(1, 3, dtype=torch.bool),
        proximal_logprobs=prox if proximal else None,
    )
    algo = AlgoConfig(policy_loss="decoupled_ppo", is_cap=2.0, is_mode=is_mode)
    loss, metrics = policy_loss(algo, logprobs, batch)
    loss.backward()
    return float(loss.detach()), logprobs.grad[0].tolist(), metrics


def test_truncated_importance_weight_caps_at_is_cap() -> None:
    loss, grad, metrics = _decoupled("truncate")
    weights = [1.0, math.exp(0.5), 2.0]  # e is truncated to 2
    assert loss == pytest.approx(-sum(weights) / 3)  # ratio to proximal is 1: loss = -A w
    assert grad == pytest.approx([-w / 3 for w in weights])
    assert metrics["is_capped_frac"] == pytest.approx(1 / 3)
    assert metrics["is_weight_mean"] == pytest.approx(sum(weights) / 3)


def test_masked_importance_weight_drops_the_token() -> None:
    loss, grad, _ = _decoupled("mask")
    weights = [1.0, math.exp(0.5), 0.0]  # AReaL: a token over the cap does not train
    assert loss == pytest.approx(-sum(weights) / 3)
    assert grad == pytest.approx([-w / 3 for w in weights])


def test_without_proximal_logprobs_the_current_ones_stand_in() -> None:
    loss, grad, _ = _decoupled("truncate", proximal=False)
    expected_loss, expected_grad, _ = _decoupled("truncate")
    assert loss == pytest.approx(expected_loss) and grad == pytest.approx(expected_grad)


def test_ppo_clip_takes_the_ratio_against_the_generator() -> None:
    # the same tokens with ppo_clip: ratio to the behaviour logprobs is 1, e^0.5, e -> clipped at 1.2
    behaviour = torch.tensor([[-1.0, -1.0, -1.0]])
    logprobs = torch.tensor([[-1.0, -0.5, 0.0]])
    batch = PolicyBatch(behaviour, torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool))
    loss, metrics = policy_loss(AlgoConfig(), logprobs, batch)
    assert float(loss) == pytest.approx(-(1.0 + 1.2 + 1.2) / 3)
    assert metrics["clip_frac_high"] == pytest.approx(2 / 3)


# --- masks and aggregation -----------------------------------------------------------------------


def test_forced_tokens_are_excluded() -> None:
    response = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    forced = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]])  # a tool's result inside completion 0
    mask = training_mask(response, forced)
    assert mask.tolist() == [[True, False, False, True, False], [True, True, False, False, False]]
    behaviour = torch.full((2, 5), -1.0)
    logprobs = torch.full((2, 5), -1.0, requires_grad=True)
    batch = PolicyBatch(behaviour, torch.tensor([1.0, -1.0]), mask)
    loss, metrics = policy_loss(AlgoConfig(), logprobs, batch)
    loss.backward()
    assert float(loss.detach()) == pytest.approx((-1 - 1 + 1 + 1) / 4)  # 4 training tokens
    assert metrics["tokens"] == 4
    assert bool((logprobs.grad[~mask] == 0).all()) and bool((logprobs.grad[mask] != 0).all())
    # whatever sits at a forced position changes nothing: the engine records no logprob there (NaN)
    shifted = logprobs.detach().clone()
    shifted[~mask] = 50.0
    nan_behaviour = behaviour.clone()
    nan_behaviour[~mask] = float("nan")
    ref = torch.full((2, 5), -1.2)
    ref[~mask] = float("-inf")
    for lp, beh in ((shifted, behaviour), (logprobs.detach(), nan_behaviour)):
        lp = lp.clone().requires_grad_()
        other, _ = policy_loss(
            AlgoConfig(kl_coef=0.1), lp, PolicyBatch(beh, batch.advantages, mask, ref_logprobs=ref)
        )
        other.backward()
        assert math.isfinite(float(other.detach())) and bool(torch.isfinite(lp.grad).all())
        assert bool((lp.grad[~mask] == 0).all())


def test_aggregation_modes() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)  # the last is empty
    assert float(aggregate(values, mask, "token-mean")) == pytest.approx((1 + 2 + 3 + 4) / 4)  # 2.5
    assert float(aggregate(values, mask, "seq-mean-token-sum")) == pytest.approx((6 + 4) / 2)  # 5
    assert float(aggregate(values, mask, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)  # 3
    assert float(aggregate(values, mask, "seq-mean-token-sum-norm")) == pytest.approx((6 + 4) / 4 / 2)
    assert float(aggregate(values, mask, "seq-mean-token-sum-norm", norm_length=10)) == pytest.approx(0.5)
    # micro-batches with the whole batch's divisor add up to the whole batch's value
    whole = aggregate(values, mask, "token-mean")
    parts = sum(aggregate(values[i : i + 1], mask[i : i + 1], "token-mean", num_tokens=4) for i in range(3))
    assert float(parts) == pytest.approx(float(whole))
    parts = sum(
        aggregate(values[i : i + 1], mask[i : i + 1], "seq-mean-token-mean", num_seqs=2) for i in range(3)
    )
    assert float(parts) == pytest.approx(3.0)


def test_entropy_is_logged_and_can_be_a_bonus() -> None:
    logits = torch.zeros(1, 2, 8)
    logits[0, 1, 3] = 100.0  # position 0: uniform over 8; position 1: certain
    entropy = entropy_from_logits(logits)
    assert entropy[0].tolist() == pytest.approx([math.log(8), 0.0], abs=1e-5)
    behaviour = torch.full((1, 2), -1.0)
    batch = PolicyBatch(behaviour, torch.tensor([0.0]), torch.ones(1, 2, dtype=torch.bool))
    loss, metrics = policy_loss(AlgoConfig(entropy_coef=0.1), behaviour, batch, entropy=entropy)
    assert metrics["entropy"] == pytest.approx(math.log(8) / 2, abs=1e-5)
    assert float(loss) == pytest.approx(-0.1 * math.log(8) / 2, abs=1e-5)


def test_several_updates_per_batch() -> None:
    algo = AlgoConfig(updates_per_batch=2, minibatch_size=3)
    parts = list(minibatches(8, algo, torch.Generator().manual_seed(0)))
    assert [len(p) for p in parts] == [3, 3, 2, 3, 3, 2]
    for first in (0, 3):
        assert sorted(torch.cat(parts[first : first + 3]).tolist()) == list(range(8))  # each pass: all, once
    assert [p.tolist() for p in minibatches(4, AlgoConfig())] == [[0, 1, 2, 3]]


def test_bfloat16_inputs_are_computed_in_float32() -> None:
    behaviour = torch.tensor([[-1.0, -2.0, -0.5]])
    logprobs = (behaviour + 0.01).to(torch.bfloat16).requires_grad_()
    batch = PolicyBatch(behaviour.to(torch.bfloat16), torch.tensor([1.0]), torch.ones(1, 3, dtype=torch.bool))
    loss, _ = policy_loss(AlgoConfig(), logprobs, batch)
    loss.backward()
    assert loss.dtype == torch.float32 and logprobs.grad.dtype == torch.bfloat16
    assert math.isfinite(float(loss.detach()))
