"""The serving layer's pure parts, without Ray: the reply decoder (text, tools, stop strings,
logprobs), request validation and error shapes, the serving config and the chat-model rule."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from serving_helpers import base_model_dir, byte_tokenizer, make_run

from lm.chat import ChatFormat
from pipelines.errors import ConfigError
from serving.config import ServeConfig
from serving.decode import ReplyDecoder
from serving.function_calls import Functions
from serving.openai_api import ChatCompletionRequest, CompletionRequest, OpenAIError, parse_request
from serving.resolve import api_keys, app_settings, is_chat_model, resolve_models, search_source
from serving.served import with_note

TOK = byte_tokenizer()
CHAT = ChatFormat(TOK)


def sp(name: str) -> int:
    return TOK.token_id(name)


def run(decoder: ReplyDecoder, ids: list[int], stop_last: bool = False):
    """Feed ids one at a time; the concatenated text handed out, and the tool events."""
    text, started, done = "", [], []
    for i, t in enumerate(ids):
        piece = decoder.feed(t, -0.5, is_stop=stop_last and i == len(ids) - 1)
        text += piece.text
        started += [u.start_delta() for u in piece.tools_started]
        done += [(u.index, u.result) for u in piece.tools_done]
        if decoder.stopped:
            break
    text += decoder.finish().text
    return text, started, done


def reply_ids(conversation_reply) -> list[int]:
    """The ids the engine would produce for an assistant reply (as render_conversation writes it)."""
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": conversation_reply}]
    full = CHAT.render_conversation(msgs).ids
    prompt = CHAT.render_prompt(msgs[:1]).ids
    return full[len(prompt) : -1]  # up to <|im_end|>, without the newline after it


def test_chat_decoder_reads_text_and_tools_like_parse_assistant():
    parts = [
        {"type": "text", "text": "Let me look. "},
        {"type": "search", "query": "Noril Clock", "result": "[1] It was <|im_end|> Velimir."},
        {"type": "text", "text": "So: "},
        {"type": "calc", "expression": "2+3", "result": "5"},
        {"type": "text", "text": "five, héllo ✓"},
    ]
    ids = reply_ids(parts)
    dec = ReplyDecoder(TOK, chat=True)
    text, started, done = run(dec, ids, stop_last=True)
    assert text == dec.content == "Let me look. So: five, héllo ✓"
    assert started == [
        {"index": 0, "type": "search", "query": "Noril Clock", "offset": 13},
        {"index": 1, "type": "calculator", "expression": "2+3", "offset": 17},
    ]
    assert done == [(0, "[1] It was <|im_end|> Velimir."), (1, "5")]
    assert dec.parts() == CHAT.parse_assistant(ids).message["content"]  # the one format, read alike


def test_text_arrives_whole_characters_only():
    ids = TOK.encode("né✓")  # multi-byte characters split over byte tokens
    dec = ReplyDecoder(TOK, chat=False)
    pieces = [dec.feed(t).text for t in ids]
    assert "".join(pieces) == "né✓" and "\ufffd" not in "".join(pieces)
    assert pieces[1] == ""  # the first byte of é alone gives nothing yet


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("Hello world, stop here please", ["stop"], "Hello world, "),
        ("abcabd", ["abd"], "abc"),
        ("no match at all", ["zzz", "qq"], "no match at all"),
        ("two stops: B then A", ["A", "B"], "two stops: "),
        ("stop at the very end", ["end"], "stop at the very "),
    ],
)
def test_stop_strings_never_send_text_that_is_taken_back(text, stops, expected):
    dec = ReplyDecoder(TOK, chat=False, stops=stops, logprobs=True)
    sent, _, _ = run(dec, TOK.encode(text))
    assert sent == dec.content == expected
    assert dec.stopped == (expected != text)
    # logprobs: one per token whose text starts in the kept content, spelling exactly that content
    assert b"".join(bytes(e["bytes"]) for e in (t.entry() for t in dec.logprobs)).decode() == expected
    assert all(t.start < max(len(expected), 1) for t in dec.logprobs)


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        # the stop string begins inside the token "the" (one of the tokenizer's merges): its text and
        # bytes are cut to "t" (they were "the": the returned text ended "t", the logprobs "the")
        ("Once their names", ["heir"], "Once t"),
        ("Once their names", ["the"], "Once "),
        ("né✓ and the rest", ["✓"], "né"),  # multi-byte characters over byte tokens
        ("héllo wörld", ["wö", "zz"], "héllo "),
        ("nothing stops the other", ["zz"], "nothing stops the other"),
    ],
)
def test_logprobs_spell_exactly_the_text_handed_out(chat, text, stops, expected):
    dec = ReplyDecoder(TOK, chat=chat, stops=stops, logprobs=True)
    pieces = []
    for t in TOK.encode(text):
        pieces.append(dec.feed(t, -0.25))
        if dec.stopped:
            break
    pieces.append(dec.finish())
    for p in pieces:  # chunk by chunk, as a stream sends them
        assert "".join(t.text for t in p.logprobs) == p.text
    tokens = [t for p in pieces for t in p.logprobs]
    assert tokens == dec.logprobs and dec.content == expected
    assert "".join(t.text for t in tokens) == expected  # the completions API's tokens
    assert b"".join(bytes(t.entry()["bytes"]) for t in tokens).decode() == expected  # the chat API's
    assert [t.start for t in tokens] == [len("".join(u.text for u in tokens[:i])) for i in range(len(tokens))]
    assert all(t.logprob == -0.25 for t in tokens)


def test_raw_mode_drops_control_tokens_from_text_stops_and_logprobs():
    """/v1/completions on a chat model returned "m<|calc_end|>l": control tokens are not text (vLLM's
    skip_special_tokens), and stop strings, stream pieces and logprobs follow the text returned."""
    ids = TOK.encode("m") + [sp("<|calc_end|>")] + TOK.encode("l") + [sp("<|im_end|>")] + TOK.encode("\nmore")
    dec = ReplyDecoder(TOK, chat=False, stops=["end|>"], logprobs=True)
    text, _, _ = run(dec, ids)
    assert text == dec.content == "ml\nmore" and not dec.stopped
    assert "".join(t.text for t in dec.logprobs) == text and len(dec.logprobs) == len(ids) - 2
    dec = ReplyDecoder(TOK, chat=False, stops=["ml"], logprobs=True)  # matched across the dropped token
    text, _, _ = run(dec, TOK.encode("am") + [sp("<|calc_end|>")] + TOK.encode("lz"))
    assert text == dec.content == "a" and dec.stopped and [t.text for t in dec.logprobs] == ["a"]
    # a character whose bytes a control token splits comes out whole
    e_acute = TOK.encode("é")
    dec = ReplyDecoder(TOK, chat=False)
    assert run(dec, e_acute[:1] + [sp("<|im_start|>")] + e_acute[1:])[0] == "é"


def test_stop_string_does_not_span_a_tool_call():
    ids = reply_ids(
        [
            {"type": "text", "text": "ab"},
            {"type": "calc", "expression": "1", "result": "1"},
            {"type": "text", "text": "cd"},
        ]
    )
    dec = ReplyDecoder(TOK, chat=True, stops=["bc"])
    text, _, _ = run(dec, ids)
    assert text == "abcd" and not dec.stopped


def test_raw_mode_drops_control_tokens_and_the_final_stop():
    ids = TOK.encode("a") + [sp("<|im_start|>")] + TOK.encode("b") + [TOK.eot_id]
    dec = ReplyDecoder(TOK, chat=False)
    text, _, _ = run(dec, ids, stop_last=True)
    assert text == "ab"


def test_chat_mode_drops_stray_control_tokens_and_a_call_without_result():
    ids = TOK.encode("x") + [sp("<|result_end|>"), sp("<|im_start|>")] + [sp("<|calc_start|>")]
    ids += TOK.encode("1+1") + [sp("<|calc_end|>")] + TOK.encode("y")  # tools off: no result follows
    dec = ReplyDecoder(TOK, chat=True)
    text, started, done = run(dec, ids)
    assert text == "xy" and started[0]["expression"] == "1+1" and done == []
    assert dec.tool_uses[0].result is None


# -- requests and errors -----------------------------------------------------------------------------


def parse(body: dict, kind=ChatCompletionRequest):
    return parse_request(json.dumps(body).encode(), kind)


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

    from serving.function_calls import Functions, forced_call_opening
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


# -- config ----------------------------------------------------------------------------------------------


def settings(run_dir, **fields):
    """The serve stage's settings as build_app gets them (``run_dir`` and fields of the serve section)."""
    return app_settings({"run_dir": str(run_dir), **fields})


def models_of(run_dir, **fields):
    app = settings(run_dir, **fields)
    return resolve_models(app.run, app.serve)


def test_config_from_run_dir_and_chat_rule(tmp_path, monkeypatch):
    run = tmp_path / "run"
    base_model_dir(run / "models" / "base")
    base_model_dir(run / "models" / "mine")
    meta = json.loads((run / "models" / "mine" / "raychat.json").read_text())
    (run / "models" / "mine" / "raychat.json").write_text(json.dumps(meta | {"stage": "sft"}))
    (run / "models" / ".sft.tmp-1").mkdir()  # a save in progress: not served
    (run / "models" / "notes").mkdir()
    assert {m.name: m.chat for m in models_of(run)} == {"base": False, "mine": True}
    assert is_chat_model(run / "models" / "base") is False
    assert [m.name for m in models_of(run, include_base_models=False)] == ["mine"]
    forced = models_of(
        tmp_path / "elsewhere",
        run_models=False,
        models=[{"path": str(run / "models" / "base"), "name": "b", "chat": True}],
    )
    assert [(m.name, m.chat) for m in forced] == [("b", True)]
    app = settings(run)
    assert search_source(app.run, app.serve) is None  # no search/ index and no world/search_index.jsonl
    (run / "world").mkdir()
    (run / "world" / "search_index.jsonl").write_text('{"id": "a", "text": "x"}\n')
    assert search_source(app.run, app.serve) == {
        "corpus": str(run / "world" / "search_index.jsonl"),
        "index_dir": None,
    }
    (run / "search").mkdir()
    (run / "search" / "raychat_search.json").write_text("{}")  # a saved index: checked against the corpus
    assert search_source(app.run, app.serve) == {
        "corpus": str(run / "world" / "search_index.jsonl"),
        "index_dir": str(run / "search"),
    }
    (run / "world" / "search_index.jsonl").unlink()
    assert search_source(app.run, app.serve) == {"corpus": None, "index_dir": str(run / "search")}
    assert search_source(app.run, settings(run, tools={"search": False}).serve) is None
    monkeypatch.setenv("RAYCHAT_API_KEYS", " k1, ,k2")
    assert api_keys(settings(run, api_keys=["k0", "k1"]).serve) == ["k0", "k1", "k2"]
    assert "k0" not in repr(settings(run, api_keys=["k0"]))  # keys never show in logs


def test_config_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="no model to serve: .* has no model"):
        models_of(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        models_of(tmp_path, models=[{"path": str(tmp_path / "nope")}])
    with pytest.raises(ConfigError, match="serve.autoscaling.max_replicas"):
        settings(tmp_path, autoscaling={"max_replicas": 0})
    with pytest.raises(ConfigError, match="min_replicas \\(3\\) > max_replicas \\(2\\)"):
        settings(tmp_path, autoscaling={"min_replicas": 3, "max_replicas": 2})
    with pytest.raises(ConfigError, match="serve.tools.serch: unknown key"):
        settings(tmp_path, tools={"serch": True})
    with pytest.raises(ConfigError, match="not found"):
        app_settings({"config": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="stage pretrain is a pretrain stage, not a serve stage"):
        app_settings({"stage": "pretrain"})
    base_model_dir(tmp_path / "a")
    with pytest.raises(ConfigError, match="two models are named 'a'"):
        models_of(tmp_path, models=[{"path": str(tmp_path / "a")}] * 2)


def test_app_args_are_a_run_config_and_its_serve_section(tmp_path):
    """build_app's args as cluster/kuberay-rayservice.yaml and serving/config.yaml give them: a run
    config and a run directory; fields beside them replace the serve section's; another serve stage
    of the run config is chosen with ``stage``."""
    repo = Path(__file__).resolve().parents[1]
    serve_file = yaml.safe_load((repo / "serving" / "config.yaml").read_text())
    (application,) = serve_file["applications"]
    args = dict(application["args"])
    args["config"] = str(repo / args["config"])
    app = app_settings(args)
    assert app.run.location == "runs/tiny" and app.serve.autoscaling.max_replicas == 2
    ours = tmp_path / "run.yaml"
    ours.write_text(
        "run_dir: /somewhere\nserve: {replica: {num_cpus: 2}, max_n: 4}\n"
        "stages: {serve_big: {kind: serve}}\nserve_big: {max_n: 3}\n"
    )
    app = app_settings({"config": str(ours), "run_dir": "/elsewhere", "max_n": 5})
    assert app.run.location == "/elsewhere" and app.serve.replica.num_cpus == 2 and app.serve.max_n == 5
    assert app_settings({"config": str(ours), "stage": "serve_big"}).serve.max_n == 3


def test_serve_is_a_long_running_stage_after_the_models_it_serves():
    from pipelines.config import load_config
    from pipelines.stages import Graph

    graph = Graph(load_config(None, ["stages={base2: {kind: pretrain}}", "base2.output_name=base2"]))
    assert graph["serve"].long_running and graph.names[-1] == "serve"
    assert graph.consumes("serve") == ["pretrain", "sft", "idk", "rm", "grpo", "distill", "base2"]
    assert "serve" not in graph.built_on("pretrain")  # a server holds no done marker to clear
    only_listed = Graph(load_config(None, ["serve.run_models=false"]))
    assert only_listed.consumes("serve") == []
    listed = Graph(
        load_config(None, ["serve.run_models=false", 'serve.models=[{path: "{run_dir}/models/base"}]'])
    )
    assert listed.consumes("serve") == ["pretrain"]


def test_function_calls_become_openai_tool_calls():
    """A reply in the model's Hermes-style function-call text comes back as OpenAI ``tool_calls``."""

    from serving.handlers import _chat_choice

    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rivmouth"}}}
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
    ]
    ids = CHAT.render_conversation(msgs).ids[len(CHAT.render_prompt(msgs[:1]).ids) : -1]
    dec = ReplyDecoder(TOK, chat=True)
    run(dec, ids, stop_last=True)
    req = parse(
        {
            "model": "m",
            "messages": msgs[:1],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        }
    )
    choice = _chat_choice(0, dec, "stop", req, Functions(True))
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Checking."
    (tc,) = choice["message"]["tool_calls"]
    assert tc["type"] == "function" and tc["id"].startswith("call_")
    assert tc["function"] == {"name": "get_weather", "arguments": '{"city": "Rivmouth"}'}
    plain = _chat_choice(0, dec, "stop", req, Functions())
    assert "tool_calls" not in plain["message"] and plain["finish_reason"] == "stop"


def _streamed(
    ids: list[int], body: dict, forced: str | None = None, finish: str = "stop"
) -> tuple[dict, dict]:
    """A reply of ``ids`` streamed through the chat handler token by token, accumulated as the
    openai client's stream helper does; and the same reply answered whole."""
    import asyncio

    from serving.handlers import _chat_choice, _chat_stream
    from serving.served import ChoiceUpdate, Job

    req = parse(body)
    fn = bool(req.tools)
    dec = ReplyDecoder(TOK, chat=True, stops=req.stops, logprobs=True, calls=fn, in_call=bool(forced))
    job = Job([1, 2], None, [], [dec], 0)  # type: ignore[arg-type]
    functions = Functions(fn, forced, req.parallel_tool_calls is not False)

    async def updates():
        for i, t in enumerate(ids):
            last = i == len(ids) - 1
            piece = dec.feed(t, -0.5, is_stop=last and t == sp("<|im_end|>"))
            if last or dec.stopped:
                yield ChoiceUpdate(0, piece)
                yield ChoiceUpdate(0, dec.finish(), finish)
                return
            yield ChoiceUpdate(0, piece)

    async def collect():
        stream = _chat_stream("id", "m", req, job, functions, updates())
        return [chunk async for chunk in stream]

    events = [e.removeprefix("data: ").strip() for e in asyncio.run(collect())]
    assert events[-1] == "[DONE]"
    got: dict = {
        "content": None,
        "early": "",
        "tool_calls": {},
        "logprobs": [],
        "finish_reason": None,
        "chunks": [],
    }
    for event in events[:-1]:
        (choice,) = json.loads(event)["choices"]
        delta = choice["delta"]
        got["chunks"].append((delta, choice["finish_reason"]))
        if delta.get("content"):
            got["content"] = (got["content"] or "") + delta["content"]
            got["early"] += delta["content"] if choice["finish_reason"] is None else ""
        for tc in delta.get("tool_calls") or ():
            call = got["tool_calls"].setdefault(tc["index"], {"name": "", "arguments": ""})
            call["id"] = tc.get("id", call.get("id"))
            call["name"] += tc.get("function", {}).get("name") or ""
            call["arguments"] += tc.get("function", {}).get("arguments") or ""
        got["logprobs"] += [e["token"] for e in (choice["logprobs"] or {}).get("content", [])]
        got["finish_reason"] = choice["finish_reason"] or got["finish_reason"]
    dec.finish()  # the whole reply reads the same decoder's state
    whole = _chat_choice(0, dec, finish, req, functions)
    return got, whole


def _reply_ids(message: dict) -> list[int]:
    msgs = [{"role": "user", "content": "q"}, message]
    return CHAT.render_conversation(msgs).ids[len(CHAT.render_prompt(msgs[:1]).ids) : -1]


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather"}}
WITH_TOOLS = {
    "model": "m",
    "messages": [{"role": "user", "content": "q"}],
    "tools": [WEATHER_TOOL],
    "logprobs": True,
}


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": "Checking.", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rivmouth"}}}]},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "A"}}}, {"type": "function", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "assistant", "content": "A <tool> is not\n<tool_cal a call; <tool_call> alone neither."},
        {"role": "assistant", "content": "Line one.\n"},
    ],
)  # fmt: skip
def test_function_calls_stream_as_openai_tool_call_deltas(message):
    """Agent frameworks stream with tools on (it was a 400): call text is never sent as content, the
    calls come as ``tool_calls`` deltas, and the stream adds up to the whole reply."""
    got, whole = _streamed(_reply_ids(message), WITH_TOOLS)
    want = whole["message"]
    assert got["content"] == (want["content"] or None)
    calls = [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in want.get("tool_calls", [])
    ]
    assert [{"name": c["name"], "arguments": c["arguments"]} for c in got["tool_calls"].values()] == calls
    assert all(c["id"].startswith("call_") for c in got["tool_calls"].values())
    assert got["finish_reason"] == whole["finish_reason"] == ("tool_calls" if calls else "stop")
    assert got["logprobs"] == [e["token"] for e in whole["logprobs"]["content"]]  # every token's, once
    if "tool_calls" in message:
        assert "<tool_call>" not in (got["content"] or "")
    assert got["early"] == (want["content"] or "").removesuffix("\n")  # the text before a call as it comes


def test_text_after_a_call_and_a_broken_call_stream_as_the_whole_reply():
    call = _reply_ids({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]})  # fmt: skip
    after = TOK.encode(" Done.")
    got, whole = _streamed(call[:-1] + after + call[-1:], WITH_TOOLS)
    assert got["content"] == whole["message"]["content"] == " Done." and len(got["tool_calls"]) == 1
    broken = TOK.encode("Sure.\n<tool_call>\n{not json}\n</tool_call>") + [sp("<|im_end|>")]
    got, whole = _streamed(broken, WITH_TOOLS)
    assert got["content"] == whole["message"]["content"] == "Sure.\n<tool_call>\n{not json}\n</tool_call>"
    assert got["tool_calls"] == {} and got["finish_reason"] == "stop"
    # a stop string cut the reply inside its only call: that call is neither content nor a call
    got, whole = _streamed(call, WITH_TOOLS | {"stop": "}}"})
    assert (got["content"] or "") == whole["message"]["content"] == "" and got["tool_calls"] == {}


def _call(city: str) -> dict:
    return {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}


def test_a_reply_cut_after_a_call_keeps_the_calls_it_finished_and_says_length():
    """An agent saw finish_reason "tool_calls" and content "Checking both.\n<tool_cal", ran the one
    call and stored the markup: the half-written call is dropped and the finish stays "length"."""
    both = _reply_ids(
        {"role": "assistant", "content": "Checking both.", "tool_calls": [_call("Oslo"), _call("Rome")]}
    )
    text = TOK.decode(both)
    for cut in (text.index("<tool_call>", text.index("Oslo")) + 5, text.index("Rome") + 2):
        ids = TOK.encode(text[:cut])
        got, whole = _streamed(ids, WITH_TOOLS, finish="length")
        assert got["content"] == whole["message"]["content"] == "Checking both."
        assert [json.loads(c["arguments"]) for c in got["tool_calls"].values()] == [{"city": "Oslo"}]
        assert got["finish_reason"] == whole["finish_reason"] == "length"
    # a stop string inside the second call: the first one is kept (it was thrown away with the cut)
    got, whole = _streamed(both, WITH_TOOLS | {"stop": "Rome"})
    assert got["content"] == whole["message"]["content"] == "Checking both."
    assert [json.loads(c["arguments"]) for c in got["tool_calls"].values()] == [{"city": "Oslo"}]
    assert got["finish_reason"] == whole["finish_reason"] == "tool_calls"
    # parallel_tool_calls: false returns the first call only
    got, whole = _streamed(both, WITH_TOOLS | {"parallel_tool_calls": False})
    assert len(got["tool_calls"]) == len(whole["message"]["tool_calls"]) == 1


def test_calls_stream_a_chunk_each_and_the_finish_in_a_chunk_of_its_own():
    """The openai SDK's stream helper closes a call (its arguments.done event) when the next call
    starts or when a later chunk finishes the choice: with every call and the finish in one chunk,
    the last call never got its done event."""
    both = _reply_ids({"role": "assistant", "content": "", "tool_calls": [_call("Oslo"), _call("Rome")]})
    got, _ = _streamed(both, WITH_TOOLS)
    calls = [d["tool_calls"] for d, _ in got["chunks"] if d.get("tool_calls")]
    assert [[c["index"] for c in chunk] for chunk in calls] == [[0], [1]]
    assert got["chunks"][-1] == ({}, "tool_calls")
    assert all(f is None for _, f in got["chunks"][:-1])
    one = _reply_ids({"role": "assistant", "content": "", "tool_calls": [_call("Paris")]})
    for forced, ids in ((None, one), ("get_weather", TOK.encode(' {"city": "Paris"}}') + [sp("<|im_end|>")])):
        got, _ = _streamed(ids, WITH_TOOLS, forced=forced)  # one call: not in the finishing chunk either
        assert got["chunks"][-1] == ({}, "tool_calls") and "tool_calls" in got["chunks"][-2][0]


def test_a_forced_call_streams_its_name_first_and_its_arguments_at_the_end():
    written = TOK.encode(' {"city": "Paris"}}\n</tool_call>') + [sp("<|im_end|>")]
    got, whole = _streamed(written, WITH_TOOLS, forced="get_weather")
    (call,) = got["tool_calls"].values()
    assert whole["message"]["tool_calls"][0]["function"] == {
        "name": call["name"],
        "arguments": call["arguments"],
    }
    assert call["arguments"] == '{"city": "Paris"}' and got["content"] is None
    assert got["finish_reason"] == "tool_calls"
    # a stop string inside the arguments: they end there, and none of them is sent as content
    got, whole = _streamed(written, WITH_TOOLS | {"stop": "Paris"}, forced="get_weather")
    (call,) = got["tool_calls"].values()
    assert call["arguments"] == whole["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": "'
    assert got["content"] is None and got["logprobs"] == [e["token"] for e in whole["logprobs"]["content"]]


def test_a_stop_string_does_not_span_a_server_tool_call_with_function_tools_on():
    """Held text that could begin a call's opening ("\n") was still held at a search call, so
    the stop string "\nHello" matched across the call with tools on and not without them."""
    ids = TOK.encode("Hi\n") + [sp("<|search_start|>"), *TOK.encode("q"), sp("<|search_end|>")]
    ids += [sp("<|result_start|>"), *TOK.encode("r"), sp("<|result_end|>"), *TOK.encode("Hello world")]
    ids.append(sp("<|im_end|>"))
    plain = {
        "model": "m",
        "messages": [{"role": "user", "content": "q"}],
        "stop": "\nHello",
        "logprobs": True,
    }
    for body in (plain, plain | {"tools": [WEATHER_TOOL]}):
        got, whole = _streamed(ids, body)
        assert got["content"] == whole["message"]["content"] == "Hi\nHello world", body


def test_raychat_serve_refuses_bad_setups_in_one_line(tmp_path, capsys):
    import socket

    from pipelines.cli import main

    assert main(["serve", "--run-dir", str(tmp_path / "empty")]) == 2
    base_model_dir(tmp_path / "run" / "models" / "base")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--run-dir", str(tmp_path / "run"), "--port", str(port)]) == 2
    assert main(["serve", "--run-dir", str(tmp_path / "run"), "--set", "ray.num_cpus=1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("raychat: ") for line in lines), lines
    assert "no model to serve" in lines[0] and "cannot listen" in lines[1] and "ray.num_cpus is 1" in lines[2]


def test_a_host_this_machine_lacks_is_blamed_on_the_host_not_the_port(tmp_path, capsys):
    import socket

    from pipelines.cli import main

    base_model_dir(tmp_path / "run" / "models" / "base")
    run = ["serve", "--run-dir", str(tmp_path / "run")]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main([*run, "--port", port]) == 2
    assert main([*run, "--host", "198.51.100.7"]) == 2  # TEST-NET-2: no interface has it
    busy_line, absent = capsys.readouterr().err.strip().splitlines()
    assert busy_line.endswith("(choose another --port)"), busy_line
    assert absent.startswith("raychat: cannot listen on 198.51.100.7:8000: ") and "check --host" in absent
    assert "choose another --port" not in absent


def test_a_reward_model_in_the_run_is_not_served(tmp_path):
    """models/rm scores text (LlamaForSequenceClassification): the run's other models are served without
    it, and naming it is refused with the reason."""
    import json

    from pipelines.errors import ConfigError
    from pipelines.run_dir import RunDir
    from serving.config import ServeConfig
    from serving.resolve import resolve_models

    run = tmp_path / "run"
    shutil.copytree(make_run(tmp_path / "made"), run)
    rm = run / "models" / "rm"
    shutil.copytree(run / "models" / "base", rm)
    hf = json.loads((rm / "config.json").read_text())
    (rm / "config.json").write_text(json.dumps({**hf, "architectures": ["LlamaForSequenceClassification"]}))
    assert sorted(m.name for m in resolve_models(RunDir(run), ServeConfig())) == ["base", "sft"]
    listed = ServeConfig(run_models=False, models=[{"path": str(rm)}])
    with pytest.raises(ConfigError, match="is a reward model"):
        resolve_models(RunDir(run), listed)


def test_overlapping_calls_are_read_alike_by_the_engine_the_decoder_and_parse_assistant():
    """A model that opens a call inside another (the demo's sft model did, at temperature 0): the
    engine ran the calculator on a body holding a search and its result, whose reply the decoder then
    put in ``content``. Now another control token abandons a call everywhere: the calls the engine
    runs are the calls the decoder reports, and their results never reach the content."""
    from types import SimpleNamespace

    from lm.engine.tools import start_tool_call, text_tool

    asked: list[tuple[str, str]] = []
    hooks = [
        text_tool(
            TOK, "<|search_start|>", "<|search_end|>", lambda q: asked.append(("search", q)) or "no results"
        ),
        text_tool(TOK, "<|calc_start|>", "<|calc_end|>", lambda e: asked.append(("calc", e)) or "5"),
    ]
    ids = TOK.encode("I'll search. ") + [sp("<|search_start|>")] + TOK.encode("Narts: ")
    ids += [sp("<|calc_start|>")] + TOK.encode("80.2, ") + [sp("<|search_start|>")] + TOK.encode("Noins")
    ids += [sp("<|search_end|>")]
    generated: list[int] = []
    for t in ids + ["result"] + TOK.encode("0/31") + [sp("<|calc_end|>")] + TOK.encode(" ok"):
        if t == "result":
            continue
        generated.append(t)
        call = start_tool_call(SimpleNamespace(prompt_ids=[], token_ids=generated, tool_hooks=hooks), t)
        if call is not None:
            generated += call.poll(None)  # the engine appends the reply
    assert asked == [("search", "Noins")]  # the calculator was not run on the abandoned call
    dec = ReplyDecoder(TOK, chat=True)
    text, started, done = run(dec, generated)
    assert text == "I'll search. 0/31 ok"
    assert started == [{"index": 0, "type": "search", "query": "Noins", "offset": 13}]
    assert done == [(0, "no results")]
    parsed = CHAT.parse_assistant(generated).message["content"]
    calls = [p for p in parsed if p["type"] != "text"]
    assert [(p["type"], p.get("query") or p.get("expression"), p["result"]) for p in calls][-1] == (
        "search", "Noins", "no results",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("root_path", "path", "routed"),
    [
        ("", "/v1/chat/completions/", "/v1/chat/completions"),
        ("", "/v1/models//", "/v1/models"),
        ("", "/", "/"),
        ("", "/v1/models", "/v1/models"),
        ("/chat", "/chat/v1/completions/", "/chat/v1/completions"),  # under a route prefix
        ("/chat", "/chat/", "/chat/"),  # the prefix's own root stays the root
    ],
)
def test_a_trailing_slash_is_routed_as_the_path_without_it(root_path, path, routed):
    """serving/app.py's middleware (the HTTP test checks it through Serve; here the route prefix)."""
    import asyncio

    from serving.app import NoTrailingSlash

    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    scope = {"type": "http", "root_path": root_path, "path": path, "raw_path": path.encode()}
    asyncio.run(NoTrailingSlash(app)(scope, None, None))
    assert seen["path"] == routed and seen["raw_path"] == routed.encode()


@pytest.fixture
def replica(monkeypatch):
    """``start(**settings)``: an HTTP client of the API as a replica serves it, without Ray: the app
    frozen as ``serve.ingress`` freezes it (pickled), and a ``ChatModel`` with no models, the key
    ``k1`` and these settings, which Serve's replica context hands the routes and the CORS middleware."""
    import hashlib
    from types import SimpleNamespace

    from fastapi.testclient import TestClient
    from ray import cloudpickle, serve

    from serving.app import ChatModel, api

    def start(**settings) -> TestClient:
        model = object.__new__(ChatModel.func_or_class.__bases__[0])  # the class as written, not run
        model.cfg, model.models, model.created = ServeConfig(**settings), {}, 0
        model._keys = [hashlib.sha256(b"k1").digest()]
        monkeypatch.setattr(serve, "get_replica_context", lambda: SimpleNamespace(servable_object=model))
        return TestClient(cloudpickle.loads(cloudpickle.dumps(api)))

    return start


PREFLIGHT = {
    "Origin": "http://localhost:3000",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os",
}


@pytest.mark.parametrize("allowed", [["http://localhost:3000"], ["*"]])
def test_cors_answers_preflight_without_a_key_and_marks_every_answer(replica, allowed):
    """serving/cors.py in the API as a replica runs it: the preflight needs no key, the request does,
    and every answer, the errors' included, carries the origin."""
    from fastapi.testclient import TestClient
    from starlette.responses import StreamingResponse

    from serving.cors import OriginCors

    http = replica(cors_allow_origins=allowed)
    echo = "*" if allowed == ["*"] else "http://localhost:3000"
    pre = http.options("/v1/chat/completions", headers=PREFLIGHT)  # no Authorization: browsers never send it
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == echo
    assert set(pre.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST", "HEAD", "OPTIONS"}
    assert pre.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    assert int(pre.headers["access-control-max-age"]) > 0
    # without a preflight's own list, the headers every client sends are still allowed
    bare = http.options("/v1/models/", headers={**PREFLIGHT, "Access-Control-Request-Headers": ""})
    assert (
        bare.status_code == 200
        and bare.headers["access-control-allow-headers"] == "authorization, content-type"
    )
    origin = {"Origin": "http://localhost:3000"}
    key = {**origin, "Authorization": "Bearer k1"}
    answers = [
        http.get("/v1/models", headers=key),  # 200
        http.post("/v1/chat/completions", headers=origin, json={}),  # 401: the real request needs the key
        http.post("/v1/chat/completions", headers=key, json={"model": "x", "messages": []}),  # 400
        http.post("/v1/nothing", headers=key),  # 404 of the router
    ]
    assert [r.status_code for r in answers] == [200, 401, 400, 404]
    for r in answers:
        assert r.headers["access-control-allow-origin"] == echo, r.request.url
        assert echo == "*" or "Origin" in r.headers["vary"]
    # a stream (SSE) gets them with its start, as any answer
    sse = StreamingResponse(iter(["data: [DONE]\n\n"]), media_type="text/event-stream")
    r = TestClient(OriginCors(sse, allowed)).get("/", headers=origin)
    assert r.headers["access-control-allow-origin"] == echo and r.text == "data: [DONE]\n\n"


def test_cors_refuses_other_origins_and_is_off_by_default(replica):
    """An origin not listed gets no Access-Control-* header (the browser refuses); no setting, none."""
    http = replica(cors_allow_origins=["HTTP://LocalHost:3000"])  # origins are matched as browsers send them
    other = {**PREFLIGHT, "Origin": "http://evil.example"}
    refused = http.options("/v1/chat/completions", headers=other)
    assert refused.status_code == 400 and not any(h.startswith("access-control-") for h in refused.headers)
    r = http.get("/v1/models", headers={"Origin": "http://evil.example", "Authorization": "Bearer k1"})
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)
    assert http.options("/v1/models", headers=PREFLIGHT).status_code == 200
    # the default: no CORS header anywhere, and a preflight is the 405 it always was
    off = replica()
    assert off.options("/v1/chat/completions", headers=PREFLIGHT).status_code == 405
    r = off.get("/v1/models", headers={"Origin": "http://localhost:3000", "Authorization": "Bearer k1"})
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)
    with pytest.raises(ValueError, match="not an origin"):
        ServeConfig(cors_allow_origins=["http://localhost:3000/"])
