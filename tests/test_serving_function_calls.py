"""OpenAI function calling in the chat handler: a reply's Hermes-style call text becomes ``tool_calls``,
whole and streamed as deltas, with stop strings, cuts at max_tokens and forced calls."""

from __future__ import annotations

import json

import pytest
from decoder_helpers import CHAT, TOK, decode, parse, sp

from serving.decode import ReplyDecoder
from serving.function_calls import Functions


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
    decode(dec, ids, stop_last=True)
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
