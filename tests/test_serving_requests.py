"""Requests as the serving layer reads them, without Ray: validation that names the field, OpenAI's
strictness and its defaults, ignored and refused fields, seeds, chat prompts built from messages
(tools notes, agent turns, forced calls) and completion prompt shapes."""

from __future__ import annotations

import logging

import pytest
from decoder_helpers import CHAT, TOK, parse

from serving.function_calls import Functions
from serving.openai_api import ChatCompletionRequest, CompletionRequest, OpenAIError, parse_request
from serving.served import with_note


def test_request_validation_names_the_field():
    ok = parse({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": "x", "user": "u"})
    assert ok.stops == ["x"] and ok.n == 1
    cases = [
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 2**63}, "seed"),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": ["a"] * 17}, "stop"),
        ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "stream_options": {"include_usage": True},
            },
            "stream_options",
        ),
    ]
    for body, param in cases:
        with pytest.raises(OpenAIError) as e:
            parse(body)
        assert e.value.status == 400 and e.value.param == param, (body, e.value.message)
        assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}


def test_request_types_are_strict_as_openai_is():
    """A value of the wrong JSON type is a 400 naming the field, never coerced: "stream": "yes" was read
    as a streaming request, "max_tokens": true as 1, "echo": "yes" as true and a prompt [true] as token 1."""
    m = [{"role": "user", "content": "hi"}]
    for body, kind, param in (
        ({"model": "m", "messages": m, "stream": "yes"}, ChatCompletionRequest, "stream"),
        ({"model": "m", "messages": m, "max_tokens": True}, ChatCompletionRequest, "max_tokens"),
        ({"model": "m", "messages": m, "n": "2"}, ChatCompletionRequest, "n"),
        ({"model": "m", "messages": m, "logprobs": "true"}, ChatCompletionRequest, "logprobs"),
        ({"model": "m", "prompt": "a", "echo": "yes"}, CompletionRequest, "echo"),
        ({"model": "m", "prompt": [True, False]}, CompletionRequest, "prompt"),
    ):
        with pytest.raises(OpenAIError) as e:
            parse(body, kind)
        assert e.value.status == 400 and e.value.param == param, (body, e.value.message)
    ok = parse({"model": "m", "messages": m, "temperature": 1, "top_p": 1, "seed": 3}, ChatCompletionRequest)
    assert ok.temperature == 1.0 and ok.top_p == 1.0  # a JSON integer is still a number


def test_null_optional_fields_mean_their_defaults():
    """OpenAI's optional fields are nullable; "n": null was a 400 and a completion's "max_tokens": null
    generated to the end of the context instead of OpenAI's default 16."""
    m = [{"role": "user", "content": "hi"}]
    nulls = dict.fromkeys(("n", "stream", "logprobs", "stop", "seed", "temperature", "top_p", "max_tokens"))
    chat = parse({"model": "m", "messages": m, **nulls, "stream_options": None, "tools": None})
    assert chat.n == 1 and chat.stream is False and chat.logprobs is False and chat.stops == []
    completion = parse({"model": "m", "prompt": "a", **nulls, "echo": None}, CompletionRequest)
    assert completion.max_tokens == 16 and completion.n == 1 and completion.echo is False
    for body, kind in (
        ({"model": None, "messages": m}, ChatCompletionRequest),
        ({"model": "m", "prompt": None}, CompletionRequest),
    ):
        with pytest.raises(OpenAIError) as e:
            parse(body, kind)  # a required field stays required
        assert e.value.status == 400


def test_fields_accepted_and_ignored_are_still_checked_and_tool_choice_is_checked_against_tools():
    """``user``, ``metadata``, ``store``, ``service_tier`` and ``parallel_tool_calls`` were dropped before
    validation: ``"user": 123`` or ``"metadata": "x"`` answered 200 where OpenAI says 400."""
    m = [{"role": "user", "content": "hi"}]
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    ok = parse({"model": "m", "messages": m, "user": "u", "metadata": {"k": "v"}, "store": True,
                "service_tier": "auto", "modalities": ["text"], "stream": True,
                "stream_options": {"include_usage": True, "include_obfuscation": False}})  # fmt: skip
    assert ok.include_usage and ok.forced_function is None
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert (
        parse({"model": "m", "messages": m, "tools": [weather], "tool_choice": named}).forced_function
        == "get_weather"
    )
    assert (
        parse({"model": "m", "messages": m, "tools": [weather], "tool_choice": "required"}).forced_function
        == "get_weather"
    )
    assert (
        parse({"model": "m", "messages": m, "tool_choice": "auto"}).forced_function is None
    )  # clients send it
    for extra, param, says in (
        ({"user": 123}, "user", "valid string"),
        ({"metadata": "x"}, "metadata", "dictionary"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16 pairs"),
        ({"store": "yes"}, "store", "boolean"),
        ({"service_tier": "bogus"}, "service_tier", "'auto'"),
        ({"parallel_tool_calls": "x"}, "parallel_tool_calls", "boolean"),
        ({"modalities": ["audio"]}, "modalities.0", "'text'"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tools": [weather], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "'nope'"),
        ({"tools": [weather, weather], "tool_choice": "required"}, "tool_choice", "over several tools"),
        ({"tools": [{"type": "function", "function": {"name": "a<|im_end|>b"}}]}, "tools", "1 to 64 letters"),
    ):  # fmt: skip
        with pytest.raises(OpenAIError) as e:
            parse({"model": "m", "messages": m, **extra})
        assert e.value.status == 400 and e.value.param == param and says in e.value.message, (
            extra,
            e.value.message,
        )
    for raw, says in ((b'{"model": "m", "messages": [], "temperature": NaN}', "NaN is not a JSON value"),
                      (b'{"model": "m", "n": ' + b"9" * 5000 + b"}", "more than 4300 digits")):  # fmt: skip
        with pytest.raises(OpenAIError, match=says):
            parse_request(raw, ChatCompletionRequest)


CLIENT_EXTRAS = {  # what the openai SDK, langchain-openai and Open WebUI were seen sending
    "reasoning_effort": "low",
    "verbosity": "low",
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {},
    "repetition_penalty": 1.1,
    "min_p": 0.05,
    "chat_template_kwargs": {"enable_thinking": False},
    "keep_alive": "5m",
    "num_keep": 4,
    "tool_servers": [],
}


def test_unknown_fields_are_ignored_with_one_warning_naming_them(caplog):
    """Any unknown field was a 400 ("Unrecognized request argument"): real clients send fields of newer
    versions of the spec and other servers' extras. vLLM accepts and ignores them, and so does this."""
    m = [{"role": "user", "content": "hi"}]
    known = {"safety_identifier": "u1", "prompt_cache_key": "k", "prompt_cache_retention": "24h"}
    stream = {"stream": True, "stream_options": {"include_usage": True, "future_flag": 1}}
    with caplog.at_level(logging.WARNING, logger="raychat.serving"):
        req = parse(
            {"model": "m", "messages": m, **CLIENT_EXTRAS, **known, **stream, "function_call": "auto"}
        )
        parse({"model": "m", "prompt": "a", "min_p": 0.1}, CompletionRequest)
        parse({"model": "m", "messages": m, **known})  # ignored by name: no warning
    assert req.include_usage and req.messages == m
    warnings = [r.getMessage() for r in caplog.records if r.name == "raychat.serving"]
    assert len(warnings) == 2, warnings  # one line per request, naming each ignored field
    assert warnings[0].endswith(": " + ", ".join(map(repr, [*CLIENT_EXTRAS, "stream_options.future_flag"])))
    assert warnings[1].endswith(": 'min_p'") and not any(k in " ".join(warnings) for k in known)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raychat.serving"):  # a key cannot forge a log line
        parse({"model": "m", "messages": m, "a\nFAKE LINE": 1, **{f"k{i}": 0 for i in range(30)}})
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "'a\\nFAKE LINE'" in line and line.endswith("and 11 more")
    for extra, param in (  # a known field with a bad value is still a 400 naming it
        ({"safety_identifier": 7}, "safety_identifier"),
        ({"prompt_cache_retention": "forever"}, "prompt_cache_retention"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"function_call": {"name": "f"}}, "function_call"),
    ):
        with pytest.raises(OpenAIError) as e:
            parse({"model": "m", "messages": m, **extra})
        assert e.value.status == 400 and e.value.param == param, e.value.message
    assert "'tools'" in e.value.message  # the deprecated functions API: told what to send instead


def test_refusals_name_their_field():
    """Settings refused by a check across fields carried ``param: null``; OpenAI names the field."""
    m = [{"role": "user", "content": "hi"}]
    chat_cases = [
        ({"presence_penalty": 1}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"logit_bias": {"5": 1.0}}, "logit_bias"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"logprobs": True, "top_logprobs": 2}, "top_logprobs"),
        ({"top_logprobs": 0}, "top_logprobs"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
    ]
    completion_cases = [
        ({"logprobs": 2}, "logprobs"),
        ({"suffix": "y"}, "suffix"),
        ({"best_of": 3, "n": 2}, "best_of"),
        ({"prompt": []}, "prompt"),
    ]
    for cases, kind, base in (
        (chat_cases, ChatCompletionRequest, {"model": "m", "messages": m}),
        (completion_cases, CompletionRequest, {"model": "m", "prompt": "a"}),
    ):
        for extra, param in cases:
            with pytest.raises(OpenAIError) as e:
                parse(base | extra, kind)
            assert e.value.status == 400 and e.value.param == param, (extra, e.value.message)
            assert e.value.message.startswith(f"Invalid value for '{param}': "), e.value.message
    assert parse({"model": "m", "prompt": "a", "best_of": 2, "n": 2}, CompletionRequest).best_of == 2


def test_any_int64_seed_and_top_p_zero_reach_the_engine(monkeypatch):
    """The spec allows any int64 seed and top_p 0; both were 400s. A negative seed maps to one engine
    seed; top_p 0 keeps only the most likely token (the engine's nucleus keeps nothing at 0 and
    refuses it, so it is asked for top-k 1)."""
    from types import SimpleNamespace

    import torch

    from lm.engine.sampling import sample
    from serving.served import ServedModel

    m = [{"role": "user", "content": "hi"}]
    model = SimpleNamespace(max_seq_len=64, chat=True, chat_format=CHAT)

    def params(**fields):
        return ServedModel.sampling(model, parse({"model": "m", "messages": m, **fields}), 10, None, False)  # type: ignore[arg-type]

    assert params(seed=-3).seed == params(seed=-3).seed == 2**63 - 3 and params(seed=-(2**63)).seed == 0
    assert params(seed=5).seed == 5 and params().seed is None
    assert (params(top_p=0).top_p, params(top_p=0).top_k) == (1.0, 1)
    assert (params(top_p=0.5, top_k=7).top_p, params(top_p=0.5, top_k=7).top_k) == (0.5, 7)
    p = params(top_p=0, top_k=40, temperature=2.0)
    logits = torch.randn(64, 50)
    drawn = sample(logits, torch.full((64,), 2.0), torch.full((64,), p.top_k), torch.full((64,), p.top_p),
                   torch.rand(64), want_logprobs=True)  # fmt: skip
    assert torch.equal(drawn.tokens, logits.argmax(-1)) and torch.allclose(
        drawn.sampled_logprobs, torch.zeros(64)
    )


def _chat_prompt(messages, note="You can use tools."):
    from types import SimpleNamespace

    from serving.served import ServedModel

    model = SimpleNamespace(name="m", chat_format=CHAT, tools_note=note, max_seq_len=4096)
    return ServedModel.chat_prompt(model, messages, None, ["calculator"])  # type: ignore[arg-type]


def test_an_agent_turn_after_a_call_with_invalid_json_arguments_is_rendered_as_given():
    """The server returns a model's invalid JSON arguments as written; the agent's next request, which
    sends that turn back, was a 400 "'arguments' is not valid JSON". OpenAI accepts any string."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1'}}
    loop = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "oops"},
    ]
    text = TOK.decode(_chat_prompt(loop))
    assert '<tool_call>\n{"name": "f", "arguments": {"x": 1}\n</tool_call>' in text
    assert text.endswith("<|im_start|>assistant\n")


def test_a_conversation_ending_with_an_assistant_message_gets_a_new_turn():
    """It was a 400 ("already ends with an assistant reply"); OpenAI and vLLM answer it."""
    last = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Hello"}]
    noted = [{"role": "system", "content": "You can use tools."}, *last]
    header = CHAT.render_prompt(noted[:2]).ids[len(CHAT.render_conversation(noted[:2]).ids) :]
    assert _chat_prompt(last) == CHAT.render_conversation(noted).ids + header  # a new turn after "Hello"


def test_errors_name_the_clients_message_not_the_tools_notes():
    """With the tools note put before the client's messages, a bad message 0 was "message 1"."""
    for messages, index in (
        ([{"role": "wizard", "content": "x"}], 0),
        ([{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}], 1),
        ([{"role": "system", "content": "s"}, {"role": "user"}], 1),  # the note joins this one
    ):
        with pytest.raises(OpenAIError) as e:
            _chat_prompt(messages)
        assert e.value.param == "messages", e.value.message
        assert e.value.message.startswith(f"messages: message {index}:"), e.value.message


def test_a_forced_call_returns_the_arguments_the_model_wrote():
    from types import SimpleNamespace

    from serving.function_calls import forced_call_opening
    from serving.handlers import _chat_choice

    assert forced_call_opening("f") == '<tool_call>\n{"name": "f", "arguments":'
    req = parse({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for written, arguments in (
        (' {"city":  "Paris"}}\n</tool_call>', '{"city": "Paris"}'),  # JSON: re-serialised
        ('{"city": "Par}\n</tool_call>', '{"city": "Par'),  # not JSON: as written, less the call's brace
        ("Paris", "Paris"),
    ):
        dec = SimpleNamespace(content=written, logprobs=[], token_ids=[], tool_uses=[])
        choice = _chat_choice(0, dec, "stop", req, Functions(True, "f"))  # type: ignore[arg-type]
        assert choice["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": arguments}
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert _chat_choice(0, dec, "length", req, Functions(True, "f"))["finish_reason"] == "length"  # type: ignore[arg-type]
    # a whole JSON object before the token limit came: the call was made, its closing tag cut
    dec.content = ' {"city": "Paris"}}\n</tool'
    assert _chat_choice(0, dec, "length", req, Functions(True, "f"))["finish_reason"] == "tool_calls"  # type: ignore[arg-type]


def test_completion_prompt_shapes():
    assert parse({"model": "m", "prompt": "a"}, CompletionRequest).prompts() == ["a"]
    assert parse({"model": "m", "prompt": [1, 2]}, CompletionRequest).prompts() == [[1, 2]]
    assert parse({"model": "m", "prompt": [[1], [2, 3]]}, CompletionRequest).prompts() == [[1], [2, 3]]
    assert parse({"model": "m", "prompt": ["a", "b"]}, CompletionRequest).max_tokens == 16  # OpenAI's default
    for bad in (
        {"model": "m", "prompt": 5},
        {"model": "m", "prompt": [1.5]},
        {"model": "m", "prompt": "a", "best_of": 3},
    ):
        with pytest.raises(OpenAIError) as e:
            parse(bad, CompletionRequest)
        assert e.value.status == 400


def test_tools_note_goes_into_the_system_message():
    note = "You can use tools."
    assert with_note([{"role": "user", "content": "q"}], note)[0] == {"role": "system", "content": note}
    merged = with_note([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}], note)
    assert merged[0]["content"] == "Be brief.\nYou can use tools." and len(merged) == 2
    already = [{"role": "system", "content": note}, {"role": "user", "content": "q"}]
    assert with_note(already, note) == already
