"""VLLMEngine's own bookkeeping (n, logprob kinds, tool rounds, weight updates, abort), run against a
stand-in for vLLM's ``LLM``/``LLMEngine`` built on TorchEngine, since vLLM needs a GPU.

The stand-in speaks the parts of vLLM 0.29's API that VLLMEngine uses (``llm_engine.add_request`` with
``RequestOutputKind.DELTA``, ``step`` returning ``RequestOutput``s of new tokens, ``abort_request``,
``collective_rpc("reload_weights")``, ``reset_prefix_cache``, ``update_weight_version``), so these tests
check our side of that contract and nothing about vLLM itself: tests/test_vllm_gpu.py runs the real one.
"""

from __future__ import annotations

import sys
import types
from concurrent.futures import Future
from enum import Enum
from types import SimpleNamespace

import pytest
import torch
from engine_helpers import greedy_reference, prompts_of, tiny_model, tiny_model_dir

from lm.engine import SamplingParams, ToolHook, TorchEngine


class RequestOutputKind(Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


class FakeSamplingParams(SimpleNamespace):
    pass


class FakeCore:
    """vLLM's LLMEngine as VLLMEngine drives it, generating with a TorchEngine."""

    def __init__(self, engine: TorchEngine, mode: str) -> None:
        self.engine, self.mode = engine, mode
        self.vllm_config = SimpleNamespace(
            scheduler_config=SimpleNamespace(max_num_seqs=engine.max_batch_size)
        )
        self.children: dict[str, int] = {}

    def add_request(self, vid: str, prompt: dict, sp: FakeSamplingParams) -> str:
        assert sp.output_kind is RequestOutputKind.DELTA and sp.detokenize is False and sp.ignore_eos is True
        if sp.temperature == 0 and sp.n > 1:  # as vLLM 0.29's SamplingParams refuses it
            raise ValueError(f"n must be 1 when using greedy sampling, got {sp.n}.")
        ours = SamplingParams(
            temperature=sp.temperature,
            top_k=sp.top_k,
            top_p=sp.top_p,
            max_tokens=sp.max_tokens,
            n=sp.n,
            stop_token_ids=sp.stop_token_ids,
            ignore_eos=True,
            seed=sp.seed,
            logprobs=sp.logprobs is not None,
        )
        self.engine.add_request(prompt["prompt_token_ids"], ours, request_id=vid)
        self.children[vid] = sp.n
        return vid

    def step(self) -> list[SimpleNamespace]:
        events = self.engine.step()
        grouped: dict[tuple[str, int], list] = {}
        for e in events:
            grouped.setdefault((e.request_id, e.sample_index), []).append(e)
        outputs = []
        for (vid, j), mine in grouped.items():
            lp = [e.sampled_logprob if self.mode == "processed_logprobs" else e.logprob for e in mine]
            reason = mine[-1].finish_reason
            done = SimpleNamespace(
                index=j,
                token_ids=[e.token_id for e in mine],
                logprobs=None
                if lp[0] is None
                else [{e.token_id: SimpleNamespace(logprob=v)} for e, v in zip(mine, lp, strict=True)],
                finish_reason=reason,
                stop_reason=mine[-1].token_id if reason == "stop" else None,
            )
            if reason is not None:
                self.children[vid] -= 1
            outputs.append(SimpleNamespace(request_id=vid, outputs=[done], finished=self.children[vid] == 0))
        for vid in list(self.engine.finished):
            self.engine.take_results(vid)
        return outputs

    def abort_request(self, ids: list[str]) -> None:
        for vid in ids:
            self.engine.abort(vid)

    def has_unfinished_requests(self) -> bool:
        return self.engine.has_unfinished()


class FakeLLM:
    made: list[FakeLLM] = []

    def __init__(self, model: str, **kwargs) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple] = []
        engine = TorchEngine.from_pretrained(model, max_batch_size=kwargs.get("max_num_seqs", 8))
        self.llm_engine = FakeCore(engine, kwargs["logprobs_mode"])
        FakeLLM.made.append(self)

    def collective_rpc(self, method: str, kwargs: dict) -> list[None]:
        assert method == "reload_weights" and kwargs["is_checkpoint_format"] is True
        assert not self.llm_engine.engine.has_unfinished()  # VLLMEngine never reloads under running requests
        with torch.no_grad():
            self.llm_engine.engine.model.load_state_dict(dict(kwargs["weights_iterator"]), strict=False)
        self.calls.append(("reload_weights", len(kwargs["weights_iterator"])))
        return [None]

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache",))
        return True

    def update_weight_version(self, version: str) -> None:
        self.calls.append(("update_weight_version", version))


@pytest.fixture
def fake_vllm(monkeypatch):
    import importlib.util

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = RequestOutputKind
    for name, module in (("vllm", vllm), ("vllm.inputs", inputs), ("vllm.sampling_params", sampling)):
        monkeypatch.setitem(sys.modules, name, module)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "vllm" else real(n, *a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    FakeLLM.made.clear()
    return FakeLLM.made


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory, _ = tiny_model_dir(tmp_path_factory.mktemp("vllm") / "model")
    return directory


def make(model_dir, **kwargs):
    from lm.engine import VLLMEngine

    return VLLMEngine(model_dir, max_batch_size=4, **kwargs)


@pytest.mark.parametrize("kind", ["sampled", "raw"])
def test_generate_and_stream_match_the_engine_underneath(fake_vllm, model_dir, kind) -> None:
    engine = make(model_dir, logprobs=kind, max_seq_len=100)
    llm_kwargs = fake_vllm[0].kwargs
    assert llm_kwargs["skip_tokenizer_init"] is True and llm_kwargs["max_model_len"] == 100
    assert llm_kwargs["logprobs_mode"] == {"sampled": "processed_logprobs", "raw": "raw_logprobs"}[kind]
    prompts = prompts_of([5, 9], seed=1)
    params = SamplingParams(temperature=0.9, top_k=30, max_tokens=8, seed=4, n=2, logprobs=True)
    results = engine.generate(prompts, params)
    expected = TorchEngine.from_pretrained(model_dir, max_batch_size=4).generate(prompts, params)
    assert [(r.request_id, r.sample_index) for r in results] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for mine, theirs in zip(results, expected, strict=True):
        assert mine.token_ids == theirs.token_ids and mine.finish_reason == theirs.finish_reason
        if kind == "sampled":  # vLLM reports one kind: the other is None, not zeros
            assert mine.logprobs is None and mine.sampled_logprobs == pytest.approx(theirs.sampled_logprobs)
        else:
            assert mine.sampled_logprobs is None and mine.logprobs == pytest.approx(theirs.logprobs)
    events = list(engine.stream(prompts, params))
    for r in results:
        mine = [e for e in events if (e.request_id, e.sample_index) == (r.request_id, r.sample_index)]
        assert [e.token_id for e in mine] == r.token_ids
        assert [e.finish_reason for e in mine] == [None] * (len(mine) - 1) + [r.finish_reason]
    assert not engine.has_unfinished() and not engine.finished


def test_eos_and_tool_rounds(fake_vllm, model_dir) -> None:
    prompt = prompts_of([8], seed=5)[0]
    local = TorchEngine.from_pretrained(model_dir)
    free = greedy_reference(local.model, prompt, 12)
    close_at = max(i for i in range(1, 5) if free[i] not in free[:i] + [prompt[-1]])
    reply: Future = Future()
    hooks = {
        "now": ToolHook(prompt[-1], free[close_at], lambda r, b: [200, 201]),
        "later": ToolHook(prompt[-1], free[close_at], lambda r, b: reply),
    }
    params = SamplingParams(temperature=0.0, max_tokens=close_at + 1 + 2 + 5)
    expected = local.generate([prompt], params, tool_hooks=[hooks["now"]])[0]
    engine = make(model_dir)
    assert engine.generate([prompt], params, tool_hooks=[hooks["now"]])[0].token_ids == expected.token_ids
    engine.add_request(prompt, params, "later", tool_hooks=[hooks["later"]])
    for _ in range(close_at + 3):
        engine.step()
    assert engine.load().running == 1 and "later" not in engine.finished  # parked on the reply
    reply.set_result([200, 201])
    while engine.has_unfinished():
        engine.step()
    res = engine.take_results("later")[0]
    assert res.token_ids == expected.token_ids and res.forced == expected.forced and True in res.forced
    eos = make(model_dir, eos_token_ids=[free[3]])
    stopped = eos.generate([prompt], SamplingParams(temperature=0.0, max_tokens=12))[0]
    assert stopped.token_ids == free[: free.index(free[3]) + 1] and stopped.finish_reason == "stop"


def test_weight_updates_and_abort(fake_vllm, model_dir) -> None:
    local = TorchEngine.from_pretrained(model_dir)
    old = local.model
    new = tiny_model(9, vocab=old.config.vocab_size, max_seq_len=128)
    a, b = prompts_of([6, 7], seed=2)
    engine = make(model_dir)
    with pytest.raises(ValueError, match="is not one of the model's"):
        engine.update_weights({"model.nope.weight": torch.zeros(1)}, 1)
    engine.add_request(a, GREEDY_20, "running")
    for _ in range(3):
        engine.step()
    engine.update_weights(new.state_dict(), 1)  # finish: "running" ends on the old weights
    engine.add_request(b, GREEDY_20, "held")
    assert engine.load().queued == 1 and engine.policy_version == 0
    while engine.has_unfinished():
        engine.step()
    running, held = engine.take_results("running")[0], engine.take_results("held")[0]
    assert running.token_ids == greedy_reference(old, a, 20) and running.policy_version == 0
    assert held.token_ids == greedy_reference(new, b, 20) and held.policy_version == 1
    assert fake_vllm[-1].calls[-2:] == [("reset_prefix_cache",), ("update_weight_version", "1")]

    engine.add_request(a, GREEDY_20, "recomputed")
    for _ in range(4):
        engine.step()
    engine.update_weights(old.state_dict(), 2, in_flight="recompute")
    while engine.has_unfinished():
        engine.step()
    res = engine.take_results("recomputed")[0]
    head = greedy_reference(new, a, 4)
    assert res.token_ids == head + greedy_reference(old, a + head, 16) and res.policy_version == 1

    greedy_group = engine.generate([b], GREEDY_20.model_copy(update={"n": 2}))  # one vLLM request each
    assert [r.token_ids for r in greedy_group] == [greedy_reference(old, b, 20)] * 2
    engine.add_request(b, GREEDY_20.model_copy(update={"n": 3}), "dropped")
    engine.step()
    assert engine.load().running == 3
    engine.abort("dropped")
    assert (
        engine.load() == (0, 0, 4) and not engine.has_unfinished() and engine.counters.requests_aborted == 1
    )


GREEDY_20 = SamplingParams(temperature=0.0, max_tokens=20)
