"""What RL (GRPO) needs from TorchEngine: n samples per prompt sharing one prefill, logprobs of the
distribution actually sampled from, in-place weight updates tagged with a version (and what happens to
requests in flight), and tools whose replies come later without stalling the batch."""

from __future__ import annotations

import copy
from concurrent.futures import Future

import pytest
import torch
from engine_helpers import greedy_reference, one_thread, prompts_of, tiny_model  # noqa: F401

from lm.engine import SamplingParams, ToolHook, TorchEngine, text_tool
from lm.model import Transformer

GREEDY = SamplingParams(temperature=0.0, max_tokens=10)


@pytest.fixture(scope="module")
def model() -> Transformer:
    return tiny_model(3)


def full_logits(model: Transformer, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Float32 logits predicting each of ``tokens`` (no cache)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens]))[0].float()
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]


# -- n samples per prompt ---------------------------------------------------------------------------


def test_n_samples_share_one_prefill_and_equal_separate_seeded_requests(model: Transformer) -> None:
    prompt = prompts_of([20], seed=2)[0]
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=11, n=4, logprobs=True)
    engine = TorchEngine(model, max_batch_size=4)
    results = engine.generate([prompt], params)
    assert [(r.request_id, r.sample_index) for r in results] == [(0, j) for j in range(4)]
    assert engine.counters.prefill_tokens == 20  # the prompt ran through the model once for 4 samples

    alone = TorchEngine(model, max_batch_size=4)
    separate = alone.generate(
        [prompt] * 4, [params.model_copy(update={"n": 1, "seed": 11 + j}) for j in range(4)]
    )
    assert alone.counters.prefill_tokens == 80
    assert [r.token_ids for r in results] == [r.token_ids for r in separate]  # sample j is seeded seed + j
    for mine, theirs in zip(results, separate, strict=True):
        assert mine.logprobs == pytest.approx(theirs.logprobs, abs=1e-5)
        assert mine.sampled_logprobs == pytest.approx(theirs.sampled_logprobs, abs=1e-5)
    assert len({tuple(r.token_ids) for r in results}) > 1  # four different samples

    events = list(TorchEngine(model, max_batch_size=4).stream([prompt], params))
    for r in results:
        mine = [e for e in events if e.sample_index == r.sample_index]
        assert [e.token_id for e in mine] == r.token_ids and mine[-1].finish_reason == r.finish_reason


def test_groups_wait_for_enough_slots_and_results_are_prompt_major(model: Transformer) -> None:
    a, b, one = prompts_of([9, 14, 1], seed=4)  # a 1-token prompt is prefilled by the decode forward
    params = [GREEDY.model_copy(update={"n": 3}), GREEDY, GREEDY.model_copy(update={"n": 2})]
    engine = TorchEngine(model, max_batch_size=3)  # the groups of 3 and 2 cannot run together
    results = engine.generate([a, b, one], params)
    assert [(r.request_id, r.sample_index) for r in results] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (2, 0),
        (2, 1),
    ]
    for r in results:
        assert r.token_ids == greedy_reference(model, [a, b, one][r.request_id], 10)
    assert engine.counters.prefill_tokens == 9 + 14 + 1
    with pytest.raises(ValueError, match="n=4 samples .* max_batch_size 3"):
        engine.add_request(a, GREEDY.model_copy(update={"n": 4}))


def test_aborting_a_group_frees_every_slot(model: Transformer) -> None:
    engine = TorchEngine(model, max_batch_size=4)
    engine.add_request(prompts_of([6])[0], GREEDY.model_copy(update={"n": 3}), request_id="g")
    engine.step()
    assert engine.load().running == 3
    engine.abort("g")
    assert engine.load() == (0, 0, 4) and not engine.has_unfinished()
    assert engine.counters.requests_aborted == 1 and engine.step() == []


# -- logprobs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.7, top_k=20, max_tokens=8, seed=5, logprobs=True),
        SamplingParams(temperature=1.3, top_p=0.8, max_tokens=8, seed=6, logprobs=True),
        SamplingParams(temperature=0.6, max_tokens=8, seed=7, logprobs=True),
    ],
    ids=["top-k", "top-p", "tempered"],
)
def test_sampled_logprobs_are_those_of_the_distribution_drawn_from(model: Transformer, params) -> None:
    prompt = prompts_of([7], seed=8)[0]
    res = TorchEngine(model).generate([prompt], params)[0]
    logits = full_logits(model, prompt, res.token_ids)
    raw = torch.log_softmax(logits, -1)
    scaled = logits / params.temperature
    for i, tok in enumerate(res.token_ids):
        keep = torch.ones_like(scaled[i], dtype=torch.bool)
        order = scaled[i].argsort(descending=True)
        if params.top_k:
            keep[order[params.top_k :]] = False
        if params.top_p < 1.0:
            probs = torch.softmax(scaled[i][order], -1)
            keep[order[(probs.cumsum(-1) - probs) >= params.top_p]] = False
        assert bool(keep[tok])  # the drawn token lies inside the truncated distribution
        expected = torch.log_softmax(scaled[i].masked_fill(~keep, float("-inf")), -1)[tok]
        assert res.sampled_logprobs[i] == pytest.approx(float(expected), abs=1e-4)
        assert res.logprobs[i] == pytest.approx(float(raw[i, tok]), abs=1e-4)
    assert res.sampled_logprobs != pytest.approx(res.logprobs, abs=1e-3)  # they really differ here


# -- weight updates -------------------------------------------------------------------------------------


@pytest.fixture
def two_policies() -> tuple[Transformer, Transformer, Transformer]:
    """(the engine's model, a frozen copy of its starting weights, a model with other weights)."""
    policy = tiny_model(1, num_kv_heads=1)
    return policy, copy.deepcopy(policy), tiny_model(2, num_kv_heads=1)


def test_update_in_finish_mode_lets_running_requests_finish_on_the_old_weights(two_policies) -> None:
    policy, old, new = two_policies
    frozen_new = copy.deepcopy(new)
    a, b = prompts_of([9, 5], seed=3)
    engine = TorchEngine(policy, max_batch_size=2)
    engine.add_request(a, GREEDY.model_copy(update={"logprobs": True}), request_id="running")
    events = [e for _ in range(3) for e in engine.step()]
    engine.update_weights(new.state_dict(), version=1)
    with torch.no_grad():  # the engine kept a copy: the caller may go on changing its tensors
        for p in new.parameters():
            p.add_(1.0)
    assert engine.policy_version == 0  # not yet: a request is running on the old weights
    engine.add_request(b, GREEDY, request_id="queued")
    while engine.has_unfinished():
        events += engine.step()
    order = [e.request_id for e in events]
    assert order.index("queued") > max(i for i, r in enumerate(order) if r == "running")  # it waited
    running, queued = engine.take_results("running")[0], engine.take_results("queued")[0]
    assert running.token_ids == greedy_reference(old, a, 10) and running.policy_version == 0
    expected_lp = torch.log_softmax(full_logits(old, a, running.token_ids), -1)
    assert running.logprobs == pytest.approx(expected_lp[range(10), running.token_ids].tolist(), abs=1e-4)
    assert queued.token_ids == greedy_reference(frozen_new, b, 10) and queued.policy_version == 1
    assert engine.policy_version == 1


def test_update_in_recompute_mode_continues_running_requests_on_the_new_weights(two_policies) -> None:
    policy, old, new = two_policies
    prompt = prompts_of([9], seed=3)[0]
    engine = TorchEngine(policy, max_batch_size=2)
    engine.add_request(prompt, GREEDY.model_copy(update={"logprobs": True}), request_id="r")
    for _ in range(4):
        engine.step()
    engine.update_weights(new.state_dict(), version=7, in_flight="recompute")
    assert engine.policy_version == 7  # at once
    while engine.has_unfinished():
        engine.step()
    res = engine.take_results("r")[0]
    before = greedy_reference(old, prompt, 4)
    assert res.token_ids[:4] == before
    assert res.token_ids[4:] == greedy_reference(new, prompt + before, 6)  # its cache was recomputed
    assert engine.counters.prefill_tokens == len(prompt) + len(prompt) + 4
    assert res.policy_version == 0  # its oldest tokens' weights: staleness checks stay conservative
    # every token keeps the logprob of the weights that drew it, so importance ratios stay exact
    lp_old = torch.log_softmax(full_logits(old, prompt, res.token_ids), -1)[range(10), res.token_ids]
    lp_new = torch.log_softmax(full_logits(new, prompt, res.token_ids), -1)[range(10), res.token_ids]
    assert res.logprobs == pytest.approx(lp_old[:4].tolist() + lp_new[4:].tolist(), abs=1e-4)


def test_update_when_idle_applies_at_once_and_bad_weights_change_nothing(two_policies) -> None:
    policy, old, new = two_policies
    prompt = prompts_of([6], seed=9)[0]
    engine = TorchEngine(policy)
    state = new.state_dict()
    with pytest.raises(ValueError, match="is not one of the model.s"):
        engine.update_weights({**state, "model.layers.9.mlp.w1.weight": torch.zeros(2)}, 1)
    with pytest.raises(ValueError, match="has shape"):
        engine.update_weights({"lm_head.weight": torch.zeros(3, 3)}, 1)
    with pytest.raises(ValueError, match="in_flight"):
        engine.update_weights(state, 1, in_flight="later")
    assert engine.policy_version == 0
    assert engine.generate([prompt], GREEDY)[0].token_ids == greedy_reference(old, prompt, 10)
    engine.update_weights(state.items(), 3)  # (name, tensor) pairs work too
    assert engine.policy_version == 3
    res = engine.generate([prompt], GREEDY)[0]
    assert res.token_ids == greedy_reference(new, prompt, 10) and res.policy_version == 3


# -- tools answered later ---------------------------------------------------------------------------------


def _tool_setup(model: Transformer):
    prompt = prompts_of([8], seed=5)[0]
    free = greedy_reference(model, prompt, 6)
    close_at = max(i for i in range(1, 5) if free[i] not in free[:i] + [prompt[-1]])
    params = SamplingParams(temperature=0.0, max_tokens=close_at + 1 + 3 + 6)
    return prompt, prompt[-1], free[close_at], params


def test_a_tool_answered_later_does_not_stall_the_batch(model: Transformer) -> None:
    prompt, open_id, close_id, params = _tool_setup(model)
    injected = [200, 201, 202]
    sync = TorchEngine(model).generate(
        [prompt], params, [ToolHook(open_id, close_id, lambda r, b: injected)]
    )[0]

    reply: Future = Future()
    engine = TorchEngine(model, max_batch_size=2)
    engine.add_request(prompt, params, "tool", tool_hooks=[ToolHook(open_id, close_id, lambda r, b: reply)])
    other = prompts_of([4], seed=12)[0]
    engine.add_request(other, GREEDY.model_copy(update={"max_tokens": 20}), "other")
    while "other" not in engine.finished:  # the other request runs to its end while the tool waits
        engine.step()
    assert "tool" not in engine.finished and engine.load().running == 1
    assert engine.take_results("other")[0].token_ids == greedy_reference(model, other, 20)
    reply.set_result(injected)
    while engine.has_unfinished():
        engine.step()
    res = engine.take_results("tool")[0]
    assert res.token_ids == sync.token_ids and res.forced == sync.forced and True in res.forced


def test_a_tool_that_fails_or_never_answers_ends_only_its_sample(model: Transformer) -> None:
    prompt, open_id, close_id, params = _tool_setup(model)
    silent: Future = Future()
    broken: Future = Future()
    broken.set_exception(ConnectionError("search actor died"))
    hooks = {"silent": ToolHook(open_id, close_id, lambda r, b: silent, timeout_s=0.05)}
    hooks["broken"] = ToolHook(open_id, close_id, lambda r, b: broken)
    engine = TorchEngine(model, max_batch_size=3)
    for name, hook in hooks.items():
        engine.add_request(prompt, params, name, tool_hooks=[hook])
    engine.add_request(prompt, params, "plain")
    while engine.has_unfinished():
        engine.step()
    silent_res, broken_res = engine.take_results("silent")[0], engine.take_results("broken")[0]
    assert silent_res.finish_reason == "tool_error" and "no tool reply within 0.05 s" in silent_res.error
    assert silent.cancelled()
    assert (
        broken_res.finish_reason == "tool_error" and "ConnectionError: search actor died" in broken_res.error
    )
    assert engine.take_results("plain")[0].token_ids == greedy_reference(model, prompt, params.max_tokens)


def test_text_tool_answered_by_a_future() -> None:
    from lm.tokenizer import R50K_PATTERN, Tokenizer

    tok = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})
    answers: list[Future] = []

    def later(query: str) -> Future:
        answers.append(Future())
        return answers[-1]

    hook = text_tool(tok, "<|search_start|>", "<|search_end|>", later)
    pending = hook.callback(None, tok.encode("capital of France"))
    assert isinstance(pending, Future) and not pending.done()
    answers[0].set_result("Paris")
    assert pending.result() == [
        tok.token_id("<|result_start|>"),
        *tok.encode("Paris"),
        tok.token_id("<|result_end|>"),
    ]
    failing = hook.callback(None, tok.encode("q"))
    answers[1].set_exception(TimeoutError("search timed out"))
    with pytest.raises(TimeoutError, match="search timed out"):
        failing.result()
