"""VLLMEngine on real vLLM: runs only on a CUDA machine with the gpu extra installed, skipped elsewhere.

    pip install -e '.[dev,gpu]' && RAY_AUTH_MODE=disabled pytest -q tests/test_vllm_gpu.py

The same checks as the CPU suite makes of TorchEngine, with TorchEngine on the same GPU (float32 on
both sides, so greedy tokens must agree) as the reference: greedy outputs, n samples, the sampled
distribution's logprobs, stop tokens, tool rounds, weight updates in place, and the engine actor
driving vLLM.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from engine_helpers import greedy_reference, prompts_of, tiny_model, tiny_model_dir

from lm.engine import SamplingParams, ToolHook, TorchEngine

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
    reason="vLLM and a CUDA GPU are needed (pip install -e '.[gpu]' on a GPU machine)",
)
GREEDY = SamplingParams(temperature=0.0, max_tokens=16)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory, _ = tiny_model_dir(tmp_path_factory.mktemp("vllm-gpu") / "model", max_seq_len=512)
    return directory


@pytest.fixture(scope="module")
def vllm_engine(model_dir):
    from lm.engine import VLLMEngine

    engine = VLLMEngine(
        model_dir, max_batch_size=16, dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True
    )
    yield engine
    del engine


@pytest.fixture(scope="module")
def reference(model_dir) -> TorchEngine:
    return TorchEngine.from_pretrained(model_dir, device="cuda", dtype=torch.float32, max_batch_size=16)


def test_greedy_outputs_match_torch_engine(vllm_engine, reference) -> None:
    prompts = prompts_of([3, 17, 40, 9], seed=1)
    got = vllm_engine.generate(prompts, GREEDY)
    want = reference.generate(prompts, GREEDY)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert [r.request_id for r in got] == [0, 1, 2, 3] and {r.policy_version for r in got} == {0}


def test_n_samples_and_sampled_logprobs(vllm_engine, reference) -> None:
    prompt = prompts_of([12], seed=2)[0]
    params = SamplingParams(temperature=0.7, top_k=20, max_tokens=10, n=4, seed=5, logprobs=True)
    results = vllm_engine.generate([prompt], params)
    assert [r.sample_index for r in results] == [0, 1, 2, 3]
    assert len({tuple(r.token_ids) for r in results}) > 1
    model = reference.model
    for r in results:
        assert r.logprobs is None  # vLLM reports the kind it was built for ("sampled")
        with torch.no_grad():
            logits = model(torch.tensor([prompt + r.token_ids], device="cuda"))[0].float()
        scaled = logits[len(prompt) - 1 : -1] / params.temperature
        kth = scaled.topk(params.top_k, dim=-1).values[:, -1:]
        expected = torch.log_softmax(scaled.masked_fill(scaled < kth, float("-inf")), -1)
        want = expected[range(len(r.token_ids)), r.token_ids].tolist()
        assert r.sampled_logprobs == pytest.approx(want, abs=2e-3)


def test_stream_stop_tokens_and_tools(vllm_engine, reference) -> None:
    prompt = prompts_of([8], seed=5)[0]
    free = greedy_reference(reference.model, prompt, 12)
    stop = SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=[free[4]])
    res = vllm_engine.generate([prompt], stop)[0]
    assert res.token_ids == free[: free.index(free[4]) + 1] and res.finish_reason == "stop"
    events = list(vllm_engine.stream([prompt], GREEDY))
    assert [e.token_id for e in events] == reference.generate([prompt], GREEDY)[0].token_ids
    close_at = max(i for i in range(1, 5) if free[i] not in free[:i] + [prompt[-1]])
    hook = ToolHook(prompt[-1], free[close_at], lambda r, b: [200, 201, 202])
    params = SamplingParams(temperature=0.0, max_tokens=close_at + 1 + 3 + 6)
    got = vllm_engine.generate([prompt], params, tool_hooks=[hook])[0]
    want = reference.generate([prompt], params, tool_hooks=[hook])[0]
    assert got.token_ids == want.token_ids and got.forced == want.forced


def test_weight_updates_in_place(vllm_engine, reference) -> None:
    old = reference.model
    new = tiny_model(9, vocab=old.config.vocab_size, max_seq_len=512).cuda()
    a, b = prompts_of([6, 7], seed=3)
    long = SamplingParams(temperature=0.0, max_tokens=64)
    vllm_engine.add_request(a, long, "in-flight")
    for _ in range(3):
        vllm_engine.step()
    vllm_engine.update_weights(new.state_dict(), 1)  # finish: "in-flight" ends on the old weights
    vllm_engine.add_request(b, GREEDY, "after")
    while vllm_engine.has_unfinished():
        vllm_engine.step()
    before, after = vllm_engine.take_results("in-flight")[0], vllm_engine.take_results("after")[0]
    assert before.token_ids == greedy_reference(old, a, 64) and before.policy_version == 0
    assert after.token_ids == greedy_reference(new, b, 16) and after.policy_version == 1
    vllm_engine.update_weights(old.state_dict(), 2)  # back, for the other tests
    assert vllm_engine.generate([b], GREEDY)[0].token_ids == greedy_reference(old, b, 16)


def test_the_engine_actor_drives_vllm(ray_session, model_dir, reference) -> None:
    from actors.engine_actor import EngineActorConfig, start_engine_actor

    config = EngineActorConfig(
        model_dir=str(model_dir),
        engine="vllm",
        max_batch_size=8,
        engine_kwargs={"dtype": "float32", "gpu_memory_utilization": 0.3, "enforce_eager": True},
    )
    actor = start_engine_actor(config, num_gpus=0.5)
    try:
        prompts = prompts_of([5, 9], seed=4)
        results = ray_session.get(actor.generate.remote(prompts, GREEDY, request_ids=["x", "y"]))
        assert [r.token_ids for r in results] == [r.token_ids for r in reference.generate(prompts, GREEDY)]
        streamed = [e for ref in actor.stream.remote(prompts[0], GREEDY) for e in ray_session.get(ref)]
        assert [e.token_id for e in streamed] == results[0].token_ids
        assert ray_session.get(actor.stats.remote())["engine"] == "VLLMEngine"
    finally:
        ray_session.kill(actor)
