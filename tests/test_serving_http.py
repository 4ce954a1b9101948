"""The serving application's HTTP side, with httpx where the ``openai`` client cannot send what is
tested: OpenAI-shaped errors for every bad request, API keys and malformed Authorization headers,
HEAD and trailing slashes, overload (503), a client that disconnects, 32 concurrent streams.
tests/test_serving_api.py has the API itself and the web chat.

One Serve application for the module (tests/serving_helpers.py's ``server``).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import serving_helpers
from serving_helpers import GREEDY, KEYS, ask, stats, wait_idle

# the module's application (tests/serving_helpers.py): pytest finds fixtures by these names
server, client, http = serving_helpers.server, serving_helpers.client, serving_helpers.http
pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")

# -- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b"[1, 2]", 400, None, "JSON object"),
        (b'{"model": "sft"}', 400, "messages", "Missing required parameter"),
        (json.dumps({"model": "nope", "messages": ask("hi")}).encode(), 404, "model", "does not exist"),
        (
            json.dumps({"model": "sft", "messages": ask("hi"), "temperature": 3}).encode(),
            400,
            "temperature",
            "less than",
        ),
        (
            json.dumps({"model": "sft", "messages": ask("hi"), "top_p": -0.5}).encode(),
            400,
            "top_p",
            "greater than or equal to 0",
        ),
        (json.dumps({"model": "sft", "messages": ask("hi"), "n": 0}).encode(), 400, "n", "greater than"),
        (json.dumps({"model": "sft", "messages": ask("hi"), "n": 9}).encode(), 400, "n", "at most 8"),
        (
            json.dumps({"model": "sft", "messages": ask("hi"), "max_tokens": -1}).encode(),
            400,
            "max_tokens",
            "greater",
        ),
        (
            json.dumps({"model": "sft", "messages": ask("hi"), "max_tokens": 10_000}).encode(),
            400,
            "messages",
            "maximum context length",
        ),
        (
            json.dumps({"model": "sft", "messages": ask("x" * 600)}).encode(),
            400,
            "messages",
            "maximum context length",
        ),
        (
            json.dumps({"model": "sft", "messages": ask("hi"), "stop": [""]}).encode(),
            400,
            "stop",
            "stop sequence",
        ),
        (  # unknown fields are ignored, but a known one's bad value still names it
            json.dumps({"model": "sft", "messages": ask("hi"), "frobnicate": 1, "seed": 2**63}).encode(),
            400,
            "seed",
            "less than",
        ),
        (
            json.dumps({"model": "sft", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
            400,
            "messages",
            "message 0: unknown role",  # the client's index: the tools note put before it is not counted
        ),
        (
            json.dumps({"model": "sft", "messages": ask("hi"), "presence_penalty": 1}).encode(),
            400,
            "presence_penalty",
            "not supported",
        ),
        (json.dumps({"model": "base", "messages": ask("hi")}).encode(), 400, "model", "base model"),
        (
            json.dumps({"model": "sft", "messages": ask("hi"), "tools": [{"foo": 1}]}).encode(),
            400,
            "tools",
            "tools[0] must be",
        ),
        (
            json.dumps(
                {"model": "sft", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}
            ).encode(),
            400,
            "messages",
            "'text' must be a string, got NoneType",
        ),
        # were 500s in plain text: JSON too deep for the parser, an integer past Python's 4300 digits
        (
            b'{"model": "sft", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            400,
            None,
            "nested too deeply",
        ),
        (
            b'{"model": "sft", "messages": [], "max_tokens": ' + b"9" * 5000 + b"}",
            400,
            None,
            "not valid JSON",
        ),
        # 120,000 messages were rendered (5 s of a blocked replica) before the length was checked
        (
            json.dumps({"model": "sft", "messages": ask("a") * 120_000}).encode(),
            400,
            "messages",
            "you requested at least 36000",  # 3 tokens a message at the least
        ),
    ],
)
def test_bad_chat_requests_get_openai_errors(http, body, status, param, fragment):
    r = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and fragment in error["message"]


def test_bad_completion_requests(http, client):
    for body, fragment in [
        ({"model": "base", "prompt": [5, 99999]}, "outside the vocabulary"),
        ({"model": "base", "prompt": []}, "empty"),
        # refused before a stream of the other prompts begins (was a 200, then an error mid-stream)
        ({"model": "base", "prompt": [[5, 6, 7], []], "stream": True}, "prompt 1: empty token list"),
        ({"model": "base", "prompt": "x", "logprobs": 2}, "not supported"),
        ({"model": "base", "prompt": "x", "suffix": "y"}, "suffix"),
        ({"model": "base", "prompt": "x" * 300}, "maximum context length"),
    ]:
        r = http.post("/v1/completions", json=body)
        assert r.status_code == 400 and fragment in r.json()["error"]["message"], (body, r.text)
    assert http.post("/v1/completions", content=b"x" * (5 * 1024 * 1024)).status_code == 413
    assert http.get("/v1/nothing").status_code == 404 and "error" in http.get("/v1/nothing").json()
    # the replica survived all of that
    assert (
        client.chat.completions.create(model="sft", messages=ask("Hello"), **GREEDY)
        .choices[0]
        .message.content
    )


def test_api_keys(server, client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEYS[0]}"}):
        r = httpx.get(f"{server}/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert KEYS[0] not in r.text
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="sft", messages=ask("Hello"))
    assert httpx.get(f"{server}/health").status_code == 200
    assert client.models.list().data  # the second key works too


def test_authorization_without_the_bearer_scheme_says_so(server, http):
    """``Authorization: sk-...`` was answered "No API key provided": the key was there, its form was
    wrong. Each case says which it is, in OpenAI's error shape, never echoing what was sent."""
    cases = {
        "": "No API key provided",
        KEYS[0]: "not of the form 'Bearer <key>'",
        f"Basic {KEYS[0]}": "not of the form 'Bearer <key>'",
        "Bearer": "not of the form 'Bearer <key>'",
        "Bearer wrong-key": "Incorrect API key provided",
    }
    for header, fragment in cases.items():
        r = httpx.get(f"{server}/v1/models", headers={"Authorization": header} if header else {})
        error = r.json()["error"]
        assert r.status_code == 401 and set(error) == {"message", "type", "param", "code"}, r.text
        assert fragment in error["message"] and error["code"] == "invalid_api_key", (header, r.text)
        assert KEYS[0] not in r.text and r.headers["www-authenticate"] == "Bearer"
    assert (
        httpx.get(f"{server}/v1/models", headers={"Authorization": f"bearer  {KEYS[0]}"}).status_code == 200
    )


def test_head_answers_like_get(server, http):
    """HEAD on every GET route: GET's status and headers, no body (was 405 Method Not Allowed)."""
    for path in ("/health", "/", "/v1/models", "/v1/models/sft", "/v1/raychat/stats"):
        got, head = http.get(path), http.head(path)
        assert head.status_code == got.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"]
        if path != "/v1/raychat/stats":  # its numbers move between the two requests
            assert head.headers["content-length"] == got.headers["content-length"]
    assert httpx.head(f"{server}/health").status_code == 200  # open without a key, as GET is
    refused = httpx.head(f"{server}/v1/models")  # as GET would be, without the body
    assert refused.status_code == 401 and refused.content == b""
    assert http.head("/v1/models/nope").status_code == 404
    # a method a path does not take: 405 naming the ones it does (HTTP requires Allow)
    for method, path, allow in (
        ("HEAD", "/v1/chat/completions", {"POST"}),
        ("POST", "/v1/models", {"GET", "HEAD"}),
    ):
        r = http.request(method, path)
        assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == allow, (method, path)
    # CORS is off without cors_allow_origins (serving/cors.py reads it in the replica): a preflight is
    # a 405 still, and no answer names an origin
    origin = {"Origin": "http://page.example"}
    pre = http.options("/v1/chat/completions", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 405 and "access-control-allow-origin" not in pre.headers
    assert "access-control-allow-origin" not in http.get("/v1/models", headers=origin).headers


def test_a_trailing_slash_is_served_not_redirected(http):
    """``POST /v1/chat/completions/`` was a 307 redirect, which many clients do not follow on a POST."""
    chat = {"model": "sft", "messages": ask("What is your name?"), **GREEDY}
    for path, body in (
        ("/v1/chat/completions", chat),
        ("/v1/completions", {"model": "base", "prompt": "Hi", "max_tokens": 3, **GREEDY}),
    ):
        plain, slashed = http.post(path, json=body), http.post(path + "/", json=body)
        assert slashed.status_code == plain.status_code == 200, slashed.text
        assert slashed.json()["choices"] == plain.json()["choices"]
    assert (
        http.post("/v1/chat/completions//", json=chat).json()["choices"][0]["message"]["content"]
        == "My name is raychat."
    )
    assert http.get("/v1/models/").json() == http.get("/v1/models").json()
    assert http.get("/v1/models/sft/").json()["id"] == "sft"
    assert http.get("/health/").status_code == 200 and http.get("/").status_code == 200
    missing = http.post("/v1/nothing/", json=chat)
    assert missing.status_code == 404 and missing.json()["error"] == {
        "message": "Invalid URL (POST /v1/nothing)",  # OpenAI's words, which clients match on
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_a_compressed_request_body_is_415_not_misread(http):
    """A gzip body was a 400 "not valid JSON" ('utf-8' codec ...), and a ``br`` label on a plain body
    was ignored."""
    import gzip

    body = json.dumps({"model": "sft", "messages": ask("What is your name?"), **GREEDY}).encode()
    for coding, data in (("gzip", gzip.compress(body)), ("br", body)):
        r = http.post("/v1/chat/completions", content=data, headers={"content-encoding": coding,
                                                                     "content-type": "application/json"})  # fmt: skip
        assert r.status_code == 415 and "send the body uncompressed" in r.json()["error"]["message"], r.text
    plain = http.post("/v1/chat/completions", content=body, headers={"content-encoding": "identity",
                                                                     "content-type": "application/json"})  # fmt: skip
    assert plain.status_code == 200


def test_overload_is_503_not_a_hang(server, http):
    """sft-tight has one slot and no queue: of requests sent together, one runs, the others are
    refused at once with 503 and Retry-After (not queued for ever, not a 5xx of another kind)."""
    body = {"model": "sft-tight", "messages": ask("Tell me a story."), "max_tokens": 420, "ignore_eos": True}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server, timeout=60, headers=http.headers) as c:
            return await asyncio.gather(*(c.post("/v1/chat/completions", json=body) for _ in range(6)))

    started = time.monotonic()
    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503} and time.monotonic() - started < 60, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json()["error"]["code"] == "server_overloaded" and refused.headers["retry-after"]
    assert stats(http, "sft-tight")["requests_refused"] >= codes.count(503)
    assert wait_idle(http, "sft-tight")["running"] == 0


def test_disconnect_mid_stream_frees_the_slot(server, http):
    before = wait_idle(http)
    body = {
        "model": "sft",
        "messages": ask("Tell me a story."),
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.Client(base_url=server, timeout=30, headers=http.headers) as c:
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(5):
                next(lines)
            assert stats(http)["running"] == 1
        # the client has hung up; the engine must abort the request, not generate its 400 tokens
    after = wait_idle(http, timeout_s=10)
    assert after["running"] == 0 and after["capacity"] == before["capacity"]
    assert after["requests_aborted"] == before["requests_aborted"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 300


def test_32_concurrent_streams_no_5xx(server):
    async def one(client, i: int) -> tuple[str, str]:
        stream = await client.chat.completions.create(
            model="sft", messages=ask("Tell me a story."), stream=True, max_tokens=48, seed=i, temperature=0.5
        )
        text, finish = "", None
        async for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        return text, finish

    async def main():
        async with openai.AsyncOpenAI(
            base_url=f"{server}/v1", api_key=KEYS[0], max_retries=0, timeout=120
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    results = asyncio.run(main())  # any 5xx raises openai.InternalServerError / APIStatusError
    assert len(results) == 32 and all(text and finish in ("stop", "length") for text, finish in results)
