"""TorchEngine: KV cache exactness, continuous batching, logprobs, tools, stops, seeds, streaming.

What RL needs on top (n samples, sampled logprobs, weight updates, tools answered later) is in
tests/test_engine_rl.py; the factory, the vLLM mapping and `raychat sample` in tests/test_engine_factory.py;
the engine actor in tests/test_engine_actor.py; vLLM itself (GPU only) in tests/test_vllm_gpu.py.
"""

from __future__ import annotations

import pytest
import torch
from engine_helpers import VOCAB, greedy_reference, one_thread, prompts_of, tiny_model  # noqa: F401

from lm.engine import GenerationResult, SamplingParams, ToolHook, TorchEngine
from lm.engine.sampling import sample
from lm.model import Transformer


@pytest.fixture(scope="module")
def model() -> Transformer:
    return tiny_model(3)


GREEDY = SamplingParams(temperature=0.0, max_tokens=10)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-forward", "model-forward"])
def test_greedy_with_cache_equals_recomputing(model: Transformer, fused: bool) -> None:
    prompts = prompts_of([1, 4, 17, 30])
    results = TorchEngine(model, max_batch_size=4, fused=fused).generate(prompts, GREEDY)
    for prompt, res in zip(prompts, results, strict=True):
        assert res.token_ids == greedy_reference(model, prompt, 10)
        assert res.finish_reason == "length" and res.forced == [False] * 10 and res.logprobs is None


@pytest.mark.parametrize("fused", [True, False], ids=["fused-forward", "model-forward"])
def test_continuous_batching_matches_running_alone(model: Transformer, fused: bool) -> None:
    prompts = prompts_of([3, 25, 7, 1, 40, 12, 5])
    lengths = [6, 14, 3, 9, 5, 11, 8]
    params = [GREEDY.model_copy(update={"max_tokens": n}) for n in lengths]
    alone = [greedy_reference(model, p, q.max_tokens) for p, q in zip(prompts, params, strict=True)]

    engine = TorchEngine(model, max_batch_size=3, fused=fused)  # fewer slots than requests
    ids = [engine.add_request(prompts[i], params[i]) for i in range(3)]
    for _ in range(2):
        engine.step()
    ids += [engine.add_request(prompts[i], params[i]) for i in range(3, 5)]  # arrive mid-flight
    steps = 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
        if steps == 4:
            ids += [engine.add_request(prompts[i], params[i]) for i in range(5, 7)]
    got = [engine.take_results(i)[0].token_ids for i in ids]
    assert got == alone
    assert all(r is None for r in engine._slots) and not engine.finished


def test_logprobs_are_the_models_log_softmax(model: Transformer) -> None:
    prompts = prompts_of([5, 12])
    params = [
        SamplingParams(temperature=0.0, max_tokens=8, logprobs=True),
        SamplingParams(temperature=1.3, top_k=20, max_tokens=8, logprobs=True, seed=4),
    ]
    for prompt, res in zip(prompts, TorchEngine(model).generate(prompts, params), strict=True):
        seq = torch.tensor([prompt + res.token_ids])
        with torch.no_grad():
            expected = torch.log_softmax(model(seq)[0].float(), -1)
        positions = range(len(prompt) - 1, seq.size(1) - 1)
        want = [expected[p, t].item() for p, t in zip(positions, res.token_ids, strict=True)]
        assert res.logprobs == pytest.approx(want, abs=1e-4)


def test_stop_tokens_eos_and_limits(model: Transformer) -> None:
    prompt = prompts_of([6])[0]
    free = greedy_reference(model, prompt, 12)
    stop_at = max(i for i, t in enumerate(free[:8]) if t not in free[:i])
    stop = free[stop_at]  # the latest token among the first 8 that appears there for the first time

    res = TorchEngine(model).generate([prompt], GREEDY.model_copy(update={"stop_token_ids": [stop]}))[0]
    assert res.token_ids == free[: stop_at + 1] and res.finish_reason == "stop" and res.stop_token_id == stop

    eos_engine = TorchEngine(model, eos_token_ids=[stop])
    assert eos_engine.generate([prompt], GREEDY)[0].token_ids == free[: stop_at + 1]
    ignored = eos_engine.generate([prompt], GREEDY.model_copy(update={"ignore_eos": True}))[0]
    assert ignored.token_ids == free[:10] and ignored.finish_reason == "length"

    short = TorchEngine(model, max_seq_len=10).generate([prompt], GREEDY)[0]
    assert short.token_ids == free[:4] and short.finish_reason == "length"  # 6 prompt + 4 = max_seq_len
    with pytest.raises(ValueError, match="no room"):
        TorchEngine(model, max_seq_len=10).add_request(list(range(10)))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        TorchEngine(model).add_request([VOCAB])
    with pytest.raises(ValueError, match="empty prompt"):
        TorchEngine(model).add_request([])


@pytest.mark.parametrize("fused", [True, False], ids=["fused-forward", "model-forward"])
def test_tool_hook_injects_forced_tokens_and_generation_continues(model: Transformer, fused: bool) -> None:
    prompt = prompts_of([8], seed=5)[0]
    free = greedy_reference(model, prompt, 6)
    # the prompt's last token opens a "call"; the model's own 3rd token closes it (chosen so neither
    # appears earlier in the output)
    open_id, close_at = prompt[-1], max(i for i in range(1, 5) if free[i] not in free[:i] + [prompt[-1]])
    close_id = free[close_at]
    calls: list[list[int]] = []
    injected = [200, 201, 202]

    def tool(request, between):
        assert request.index == 0  # the prompt's position in the call, as on VLLMEngine
        calls.append(list(between))
        return injected

    hook = ToolHook(open_id, close_id, tool)
    params = SamplingParams(temperature=0.0, max_tokens=close_at + 1 + len(injected) + 6)
    others = prompts_of([3, 20], seed=6)  # share the batch, so extend and decode run in the same steps
    engine = TorchEngine(model, max_batch_size=3, fused=fused)
    res, *rest = engine.generate([prompt, *others], params, tool_hooks=[hook])

    assert calls == [free[:close_at]]
    head = free[: close_at + 1]
    assert res.token_ids[: len(head) + 3] == head + injected
    assert res.forced == [False] * len(head) + [True] * 3 + [False] * 6
    continued = greedy_reference(model, prompt + head + injected, 6)
    assert res.token_ids[len(head) + 3 :] == continued
    for p, r in zip(others, rest, strict=True):
        reference = greedy_reference(model, p, params.max_tokens)
        # these prompts never open a call, so the hook leaves them alone: plain greedy, every token
        assert open_id not in p + reference, "test data: the other prompts must not contain the open token"
        assert r.token_ids == reference and r.forced == [False] * params.max_tokens


@pytest.mark.parametrize("kv_heads,tie", [(4, True), (1, False)], ids=["mha-tied", "mqa"])
def test_other_head_layouts_match_recomputing(kv_heads: int, tie: bool) -> None:
    m = tiny_model(5, num_kv_heads=kv_heads, intermediate_size=96, max_seq_len=64, tie_embeddings=tie)
    prompts = prompts_of([2, 13, 6], seed=9)
    for prompt, res in zip(prompts, TorchEngine(m, max_batch_size=2).generate(prompts, GREEDY), strict=True):
        assert res.token_ids == greedy_reference(m, prompt, 10)


def test_fused_weights_follow_weight_updates() -> None:
    """The engine shares storage with the model: loading new weights (an RL weight sync) reaches it,
    and replacing a weight tensor outright is detected and re-fused."""
    shape = dict(num_kv_heads=1, intermediate_size=96, max_seq_len=64)
    policy, other = tiny_model(1, **shape), tiny_model(2, **shape)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    engine = TorchEngine(policy)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())  # fusing changes no value
    prompt = prompts_of([9], seed=3)[0]
    assert engine.generate([prompt], GREEDY)[0].token_ids == greedy_reference(policy, prompt, 10)

    policy.load_state_dict(other.state_dict())  # in-place copies into the fused storage
    assert engine.generate([prompt], GREEDY)[0].token_ids == greedy_reference(other, prompt, 10)

    with torch.no_grad():
        layer = policy.model.layers[1]
        layer.self_attn.q_proj.weight = torch.nn.Parameter(layer.self_attn.q_proj.weight * 3)
        layer.mlp.up_proj.weight = torch.nn.Parameter(layer.mlp.up_proj.weight * 2)
    assert engine.generate([prompt], GREEDY)[0].token_ids == greedy_reference(policy, prompt, 10)
    loss = policy.loss(torch.tensor([prompt]), torch.tensor([prompt]))
    loss.backward()  # weights stay trainable after fusing (no inference tensors)
    assert policy.model.layers[1].self_attn.k_proj.weight.grad is not None


def test_tool_error_ends_only_that_request(model: Transformer) -> None:
    prompt = prompts_of([8], seed=5)[0]
    free = greedy_reference(model, prompt, 4)

    def broken(request, between):
        raise RuntimeError("search index offline")

    hook = ToolHook(prompt[-1], free[0], broken)
    res = TorchEngine(model).generate([prompt, [1, 2, 3]], GREEDY, tool_hooks=[hook])
    assert res[0].finish_reason == "tool_error" and "search index offline" in res[0].error
    assert res[0].token_ids == free[:1]


def test_seeded_sampling_is_reproducible_per_request(model: Transformer) -> None:
    prompts = prompts_of([4, 9, 2])
    p = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=12, seed=7)
    alone = TorchEngine(model, max_batch_size=1).generate([prompts[0]], p)[0].token_ids
    mixed = TorchEngine(model, max_batch_size=3).generate(
        prompts, [p, p.model_copy(update={"seed": 8}), SamplingParams(temperature=0.7, max_tokens=5)]
    )
    assert mixed[0].token_ids == alone
    again = TorchEngine(model).generate([prompts[0]] * 3, [p, p.model_copy(update={"seed": 9}), p])
    assert again[0].token_ids == again[2].token_ids == alone
    assert again[1].token_ids != alone
    greedy = TorchEngine(model).generate([prompts[1]], GREEDY.model_copy(update={"max_tokens": 12}))[0]
    top1 = SamplingParams(temperature=1.0, top_k=1, max_tokens=12, seed=1)
    assert TorchEngine(model).generate([prompts[1]], top1)[0].token_ids == greedy.token_ids


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, max_tokens=12, seed=7),
        SamplingParams(temperature=0.9, top_k=20, max_tokens=12, seed=7),
        SamplingParams(temperature=1.0, top_p=0.8, max_tokens=12, seed=7),
    ],
    ids=["plain", "top-k", "top-p"],
)
def test_a_seeded_request_samples_the_same_whatever_its_batch_mates(model: Transformer, params) -> None:
    prompt = prompts_of([5], seed=11)[0]
    alone = TorchEngine(model, max_batch_size=1).generate([prompt], params)[0].token_ids
    mates = [
        SamplingParams(temperature=1.0, top_p=0.5, max_tokens=12, seed=1),
        SamplingParams(temperature=0.7, top_k=3, max_tokens=12, seed=2),
        SamplingParams(temperature=0.0, max_tokens=12),
        SamplingParams(temperature=1.3, max_tokens=12, seed=3),
    ]
    for mate in mates:
        mixed = TorchEngine(model, max_batch_size=2).generate([prompt, prompts_of([7])[0]], [params, mate])
        assert mixed[0].token_ids == alone, mate


def test_sampler_rows_do_not_depend_on_other_rows() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 3
    temperature = torch.tensor([1.0, 0.8, 1.0, 1.2, 1.0, 0.5])
    top_k = torch.tensor([0, 5, 0, 0, 12, 0])
    top_p = torch.tensor([1.0, 1.0, 0.7, 1.0, 0.9, 1.0])
    u = torch.rand(6, generator=g)
    together = sample(logits, temperature, top_k, top_p, u, want_logprobs=False).tokens
    for i in range(6):
        one = sample(
            logits[i : i + 1], temperature[i : i + 1], top_k[i : i + 1], top_p[i : i + 1], u[i : i + 1], False
        ).tokens
        assert int(one) == int(together[i]), i


def test_request_ids_are_prompt_indices(model: Transformer) -> None:
    engine = TorchEngine(model, max_batch_size=2)
    prompts = prompts_of([3, 4, 5])
    assert [r.request_id for r in engine.generate(prompts, GREEDY)] == [0, 1, 2]
    assert {e.request_id for e in engine.stream(prompts, GREEDY)} == {0, 1, 2}


def test_a_long_prompt_is_not_starved_by_short_ones(model: Transformer) -> None:
    engine = TorchEngine(model, max_batch_size=4, max_prefill_tokens=16)
    engine.add_request(prompts_of([12])[0], GREEDY, request_id="long")
    engine.add_request(prompts_of([6], seed=1)[0], GREEDY, request_id="short-0")
    engine.add_request(prompts_of([6], seed=2)[0], GREEDY, request_id="short-1")
    first = {e.request_id for e in engine.step()}
    assert first == {"short-0", "short-1"}  # 6 + 6 fit the budget, 12 more would not
    engine.abort("short-0")
    engine.abort("short-1")
    engine.add_request(prompts_of([6], seed=3)[0], GREEDY, request_id="short-2")
    engine.add_request(prompts_of([6], seed=4)[0], GREEDY, request_id="short-3")
    assert "long" in {e.request_id for e in engine.step()}  # deferred once, it goes first now
    long = next(r for r in engine._slots if r is not None and r.request_id == "long")
    assert long.deferred == 0  # its priority lasted for that wait only


def test_text_tool_answers_in_text_with_the_real_special_tokens(model: Transformer) -> None:
    from lm.engine import text_tool
    from lm.tokenizer import R50K_PATTERN, Tokenizer

    tok = Tokenizer.from_ranks("bytes", R50K_PATTERN, {bytes([b]): b for b in range(256)})
    start, end = tok.token_id("<|search_start|>"), tok.token_id("<|search_end|>")
    queries: list[str] = []

    def answer(query: str) -> str:
        queries.append(query)
        return "Paris <|im_end|>"  # special-token text in a reply stays plain text

    hook = text_tool(tok, "<|search_start|>", "<|search_end|>", answer)
    assert (hook.open_token_id, hook.close_token_id) == (start, end)
    injected = hook.callback(None, tok.encode("capital of France"))
    assert queries == ["capital of France"]
    assert injected[0] == tok.token_id("<|result_start|>") and injected[-1] == tok.token_id("<|result_end|>")
    assert tok.decode(injected[1:-1]) == "Paris <|im_end|>"
    assert tok.token_id("<|im_end|>") not in injected


def test_stream_yields_tokens_as_produced(model: Transformer) -> None:
    prompts = prompts_of([3, 11, 6])
    params = [GREEDY.model_copy(update={"max_tokens": n, "logprobs": True}) for n in (4, 7, 2)]
    engine = TorchEngine(model, max_batch_size=2)
    events = list(engine.stream(prompts, params))
    expected = TorchEngine(model).generate(prompts, params)
    assert not engine.finished and not engine.has_unfinished()
    for i, (ids, res) in enumerate(zip(sorted({e.request_id for e in events}), expected, strict=True)):
        mine = [e for e in events if e.request_id == ids]
        assert [e.token_id for e in mine] == res.token_ids
        assert [e.logprob for e in mine] == pytest.approx(res.logprobs, abs=1e-5)
        assert [e.finish_reason for e in mine] == [None] * (len(mine) - 1) + ["length"], i
    # requests interleave: the third joins when the first ends, before the second's last token
    order = [e.request_id for e in events]
    first, second, third = sorted(set(order))
    assert order.index(third) < len(order) - 1 - order[::-1].index(second)


def test_sampler_truncation_and_inverse_cdf() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 4))
    u = torch.tensor([0.1, 0.6, 0.85, 0.99])
    args = dict(want_logprobs=True)
    raw = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    tokens, lp, slp = sample(
        logits, torch.ones(4), torch.zeros(4, dtype=torch.long), torch.ones(4), u, **args
    )
    assert tokens.tolist() == [0, 1, 2, 3]  # inverse CDF of [0.5, 0.8, 0.95, 1.0]
    assert lp.tolist() == pytest.approx(raw.tolist())
    assert slp.tolist() == pytest.approx(raw.tolist())  # temperature 1, no truncation: the same
    tokens, lp, slp = sample(logits, torch.ones(4), torch.full((4,), 2), torch.ones(4), u, **args)
    assert tokens.tolist() == [0, 0, 1, 1]  # top-2 renormalised: [0.625, 1.0]
    assert lp.tolist() == pytest.approx(raw[[0, 0, 1, 1]].tolist())
    assert slp.tolist() == pytest.approx(torch.log(torch.tensor([0.625, 0.625, 0.375, 0.375])).tolist())
    tokens, _, slp = sample(
        logits, torch.ones(4), torch.zeros(4, dtype=torch.long), torch.full((4,), 0.9), u, **args
    )
    assert tokens.tolist() == [0, 1, 2, 2]  # nucleus 0.9 keeps three: cdf [0.526, 0.842, 1.0]
    assert slp.tolist() == pytest.approx(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.15]) / 0.95).tolist())
    tokens, lp, slp = sample(
        logits, torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.ones(4), u, **args
    )
    assert tokens.tolist() == [0, 0, 0, 0]  # greedy ignores the uniforms
    assert slp.tolist() == pytest.approx(lp.tolist())  # no distribution was drawn from: the raw value
    hot = torch.full((4,), 2.0)  # temperature 2: probabilities proportional to sqrt(p)
    tokens, lp, slp = sample(logits, hot, torch.zeros(4, dtype=torch.long), torch.ones(4), u, **args)
    tempered = torch.log_softmax(logits[0] / 2.0, -1)
    assert slp.tolist() == pytest.approx(tempered[tokens].tolist())
    assert lp.tolist() == pytest.approx(raw[tokens].tolist())
    assert sample(logits, hot, torch.zeros(4, dtype=torch.long), torch.ones(4), u, False)[1:] == (None, None)


def test_results_are_plain_data(model: Transformer) -> None:
    res = TorchEngine(model).generate([[1, 2]], SamplingParams(max_tokens=3, seed=0, logprobs=True))[0]
    assert isinstance(res, GenerationResult) and res.prompt_ids == [1, 2]
    assert len(res.token_ids) == len(res.logprobs) == len(res.forced) == 3
