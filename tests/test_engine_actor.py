"""The engine actor (actors/engine_actor.py) and Ray Data batch generation (pipelines/batch_generate.py),
on a local Ray with TorchEngine: many callers at once, streaming, a caller that goes away, a bounded
queue, weight updates through the object store, a tool that calls another actor."""

from __future__ import annotations

import time

import pytest
import torch
from engine_helpers import greedy_reference, prompts_of, tiny_model, tiny_model_dir

from actors.engine_actor import EngineActorConfig, EngineOverloaded, RequestAborted, start_engine_actor
from lm.engine import SamplingParams, ToolHook, TorchEngine

pytestmark = pytest.mark.slow
GREEDY = SamplingParams(temperature=0.0, max_tokens=10)
LONG = SamplingParams(temperature=0.0, max_tokens=1500, ignore_eos=True)  # seconds of work


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory, _ = tiny_model_dir(tmp_path_factory.mktemp("actor") / "model", max_seq_len=2048)
    return directory


@pytest.fixture(scope="module")
def local(model_dir) -> TorchEngine:
    """The same model in this process, for reference outputs."""
    return TorchEngine.from_pretrained(model_dir, max_batch_size=4)


@pytest.fixture(scope="module")
def search(ray_session):
    @ray_session.remote(num_cpus=0)
    class Search:
        """A stand-in search actor: answers after a pause, and remembers the queries."""

        def __init__(self) -> None:
            self.queries: list[list[int]] = []

        def lookup(self, ids: list[int]) -> list[int]:
            self.queries.append(list(ids))
            time.sleep(0.3)
            return [7, 8, 9]

        def seen(self) -> list[list[int]]:
            return self.queries

    actor = Search.remote()
    yield actor
    ray_session.kill(actor)


@pytest.fixture(scope="module")
def tool_case(local):
    """A prompt whose last token opens a call and a token the model then generates that closes it."""
    prompt = prompts_of([8], seed=5)[0]
    free = greedy_reference(local.model, prompt, 6)
    close_at = max(i for i in range(1, 5) if free[i] not in free[:i] + [prompt[-1]])
    return prompt, prompt[-1], free[close_at], close_at, free


@pytest.fixture(scope="module")
def actor(ray_session, model_dir, search, tool_case):
    _, open_id, close_id, _, _ = tool_case
    hook = ToolHook(
        open_id, close_id, lambda req, between: search.lookup.remote(between).future(), timeout_s=30
    )
    config = EngineActorConfig(model_dir=str(model_dir), engine="torch", max_batch_size=4, max_queued=16)
    handle = start_engine_actor(config, tools={"search": hook}, num_cpus=0.5)
    yield handle
    ray_session.kill(handle)


def wait_for(actor, ray, predicate, timeout_s: float = 60.0) -> dict:
    """Poll stats() until ``predicate(stats)``; the last stats (the test asserts on them)."""
    give_up = time.monotonic() + timeout_s
    while True:
        stats = ray.get(actor.stats.remote())
        if predicate(stats) or time.monotonic() > give_up:
            return stats
        time.sleep(0.05)


def test_generate_matches_the_engine_and_keeps_the_callers_ids(ray_session, actor, local) -> None:
    prompts = prompts_of([5, 11], seed=1)
    params = SamplingParams(temperature=0.9, top_k=40, max_tokens=12, seed=3, n=2, logprobs=True)
    results = ray_session.get(actor.generate.remote(prompts, params, request_ids=["q1", "q2"]))
    expected = local.generate(prompts, params)
    assert [(r.request_id, r.sample_index) for r in results] == [("q1", 0), ("q1", 1), ("q2", 0), ("q2", 1)]
    for mine, theirs in zip(results, expected, strict=True):
        assert mine.token_ids == theirs.token_ids and mine.policy_version == 0
        assert mine.sampled_logprobs == pytest.approx(theirs.sampled_logprobs, abs=1e-5)


def test_many_callers_at_once(ray_session, actor, local) -> None:
    prompts = prompts_of([3, 7, 12, 5, 9, 4, 15], seed=2)
    before = ray_session.get(actor.stats.remote())
    refs = [actor.generate.remote([p], GREEDY, request_ids=[f"c{i}"]) for i, p in enumerate(prompts[:6])]
    stream = actor.stream.remote(prompts[6], GREEDY, request_id="s")
    streamed = [e for ref in stream for e in ray_session.get(ref)]
    for i, ref in enumerate(refs):
        (res,) = ray_session.get(ref)
        assert res.request_id == f"c{i}" and res.token_ids == greedy_reference(local.model, prompts[i], 10)
    assert [e.token_id for e in streamed] == greedy_reference(local.model, prompts[6], 10)
    assert {e.request_id for e in streamed} == {"s"} and streamed[-1].finish_reason == "length"
    stats = ray_session.get(actor.stats.remote())
    assert stats["requests_finished"] - before["requests_finished"] == 7
    assert stats["tokens_generated"] - before["tokens_generated"] == 70 and stats["tokens_per_s"] > 0
    assert stats["running"] == stats["queued"] == stats["outstanding_requests"] == 0


def test_a_cancelled_stream_frees_its_slot(ray_session, actor) -> None:
    before = ray_session.get(actor.stats.remote())
    stream = actor.stream.remote(prompts_of([4])[0], LONG, request_id="long")
    for _ in range(3):
        next(stream)
    assert ray_session.get(actor.stats.remote())["running"] == 1
    ray_session.cancel(stream)  # what a Serve replica does when its client disconnects
    stats = wait_for(actor, ray_session, lambda s: s["running"] == 0)
    assert stats["running"] == 0 and stats["outstanding_requests"] == 0
    assert stats["requests_aborted"] == before["requests_aborted"] + 1
    assert stats["tokens_generated"] - before["tokens_generated"] < LONG.max_tokens  # stopped early


def test_abort_by_request_id_ends_the_callers_call(ray_session, actor) -> None:
    before = ray_session.get(actor.stats.remote())
    stream = actor.stream.remote(prompts_of([4])[0], LONG, request_id="to-abort")
    call = actor.generate.remote([prompts_of([5])[0]], LONG, request_ids=["to-abort"])
    next(stream)
    assert ray_session.get(actor.abort.remote("to-abort")) == 2
    with pytest.raises(RequestAborted, match="'to-abort' was aborted"):
        ray_session.get(call)
    with pytest.raises(RequestAborted):
        for ref in stream:
            ray_session.get(ref)
    stats = wait_for(actor, ray_session, lambda s: s["running"] == 0)
    assert stats["outstanding_requests"] == 0 and stats["requests_aborted"] == before["requests_aborted"] + 2


def test_a_streaming_caller_that_dies_frees_its_slot(ray_session, actor) -> None:
    @ray_session.remote(num_cpus=0)
    class Caller:
        def read(self, engine_actor, prompt) -> None:
            for ref in engine_actor.stream.remote(prompt, LONG):
                ray_session.get(ref)

    before = ray_session.get(actor.stats.remote())
    caller = Caller.remote()
    caller.read.remote(actor, prompts_of([6])[0])
    wait_for(actor, ray_session, lambda s: s["tokens_generated"] > before["tokens_generated"] + 20)
    ray_session.kill(caller)
    stats = wait_for(actor, ray_session, lambda s: s["running"] == 0)
    assert stats["running"] == 0 and stats["requests_aborted"] == before["requests_aborted"] + 1
    assert stats["tokens_generated"] - before["tokens_generated"] < LONG.max_tokens


def test_a_full_queue_refuses_with_a_clear_error(ray_session, model_dir) -> None:
    config = EngineActorConfig(model_dir=str(model_dir), engine="torch", max_batch_size=1, max_queued=1)
    small = start_engine_actor(config, num_cpus=0.25)
    try:
        prompt = prompts_of([4])[0]
        running = small.stream.remote(prompt, LONG)
        queued = small.stream.remote(prompt, LONG)
        stats = wait_for(small, ray_session, lambda s: s["running"] == 1 and s["queued"] == 1)
        assert (stats["running"], stats["queued"]) == (1, 1)
        with pytest.raises(EngineOverloaded, match="engine actor full: 2 requests outstanding"):
            ray_session.get(small.generate.remote([prompt], GREEDY))
        assert ray_session.get(small.stats.remote())["requests_refused"] == 1
        ray_session.cancel(running)
        ray_session.cancel(queued)
        # a cancel frees the caller's place at once and the engine's slot at the loop's next turn
        idle = wait_for(small, ray_session, lambda s: s["outstanding_requests"] == 0 and s["running"] == 0)
        assert (idle["outstanding_requests"], idle["running"], idle["queued"]) == (0, 0, 0)
        assert len(ray_session.get(small.generate.remote([prompt], GREEDY))) == 1  # room again
    finally:
        ray_session.kill(small)


def test_bad_requests_get_clear_errors(ray_session, actor) -> None:
    with pytest.raises(ValueError, match="unknown tool 'calculator'; this engine actor has \\['search'\\]"):
        ray_session.get(actor.generate.remote([[1, 2]], GREEDY, tools=["calculator"]))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        ray_session.get(actor.generate.remote([[1, 2], [10**6]], GREEDY))
    stats = ray_session.get(actor.stats.remote())
    assert stats["running"] == stats["queued"] == stats["outstanding_requests"] == 0  # nothing half-added


def test_a_tool_that_calls_another_actor(ray_session, actor, search, tool_case, local) -> None:
    prompt, _, _, close_at, free = tool_case
    params = SamplingParams(temperature=0.0, max_tokens=close_at + 1 + 3 + 4)
    tool_ref = actor.generate.remote([prompt], params, tools=["search"])
    other = actor.generate.remote([prompts_of([5], seed=9)[0]], GREEDY)  # untouched by the tool's wait
    (res,) = ray_session.get(tool_ref)
    assert res.token_ids[: close_at + 4] == free[: close_at + 1] + [7, 8, 9]
    assert res.forced == [False] * (close_at + 1) + [True] * 3 + [False] * 4
    assert res.token_ids[close_at + 4 :] == greedy_reference(
        local.model, prompt + res.token_ids[: close_at + 4], 4
    )
    assert ray_session.get(search.seen.remote())[-1] == free[:close_at]
    assert ray_session.get(other)[0].token_ids == greedy_reference(
        local.model, prompts_of([5], seed=9)[0], 10
    )


def test_weights_pushed_through_the_object_store(ray_session, model_dir) -> None:
    config = EngineActorConfig(model_dir=str(model_dir), engine="torch", max_batch_size=2)
    gen = start_engine_actor(config, num_cpus=0.25)
    try:
        old = TorchEngine.from_pretrained(model_dir).model
        new = tiny_model(9, vocab=old.config.vocab_size, max_seq_len=2048)
        prompt, later = prompts_of([6, 8], seed=4)
        in_flight = gen.generate.remote([prompt], SamplingParams(temperature=0.0, max_tokens=300))
        wait_for(gen, ray_session, lambda s: s["running"] == 1)
        weights = ray_session.put(
            {k: v.clone() for k, v in new.state_dict().items()}
        )  # once, for many actors
        assert ray_session.get(gen.update_weights.remote(weights, 1)) == 0  # still draining the old ones
        (after,) = ray_session.get(gen.generate.remote([later], GREEDY))
        (before,) = ray_session.get(in_flight)
        # TorchEngine's greedy output is the no-cache reference's (tests/test_engine.py); it is faster here
        expected = TorchEngine(old).generate([prompt], SamplingParams(temperature=0.0, max_tokens=300))[0]
        assert before.policy_version == 0 and before.token_ids == expected.token_ids
        assert after.policy_version == 1 and after.token_ids == greedy_reference(new, later, 10)
        assert ray_session.get(gen.stats.remote())["policy_version"] == 1
        with pytest.raises(ValueError, match="has shape"):
            ray_session.get(gen.update_weights.remote({"lm_head.weight": torch.zeros(2, 2)}, 2))
    finally:
        ray_session.kill(gen)


# -- Ray Data batch generation ------------------------------------------------------------------------


def test_batch_generation_through_the_engine_actor(ray_session, actor, local) -> None:
    from pipelines.batch_generate import generate_dataset

    prompts = prompts_of([4, 9, 6, 12, 3], seed=7)
    rows = [{"id": f"q{i}", "prompt_ids": p, "seed": 100 + i} for i, p in enumerate(prompts)]
    rows.append({"id": "bad", "prompt_ids": [10**6], "seed": 0})  # kept, with the reason
    params = SamplingParams(temperature=1.0, max_tokens=6, n=3, logprobs=True)
    ds = ray_session.data.from_items(rows)
    out = generate_dataset(ds, params, actor=actor, batch_size=4).take_all()
    good = sorted((r for r in out if r["id"] != "bad"), key=lambda r: (r["id"], r["sample_index"]))
    assert len(good) == 15
    for row in good:
        i = int(row["id"][1:])
        expected = local.generate([prompts[i]], params.model_copy(update={"seed": 100 + i}))[
            row["sample_index"]
        ]
        assert list(row["token_ids"]) == expected.token_ids and list(row["prompt_ids"]) == prompts[i]
        assert row["finish_reason"] == expected.finish_reason and len(row["sampled_logprobs"]) == 6
    (bad,) = [r for r in out if r["id"] == "bad"]
    assert bad["finish_reason"] == "invalid" and "outside the model's vocabulary" in bad["error"]


def test_batch_generation_with_an_engine_of_its_own(ray_session, model_dir, local) -> None:
    from pipelines.batch_generate import generate_dataset

    prompts = prompts_of([5, 8, 3], seed=8)
    ds = ray_session.data.from_items([{"prompt_ids": p} for p in prompts])
    out = generate_dataset(
        ds,
        GREEDY,
        model_dir=str(model_dir),
        engine="torch",
        num_cpus=0.25,
        engine_kwargs={"max_batch_size": 4},
    ).take_all()
    got = {tuple(r["prompt_ids"]): list(r["token_ids"]) for r in out}
    assert got == {tuple(p): greedy_reference(local.model, p, 10) for p in prompts}
    assert {r["policy_version"] for r in out} == {0} and "logprobs" not in out[0]
