"""The serving layer's pure parts, without Ray: the reply decoder (text, tools, stop strings,
logprobs), the serving config and the chat-model rule. Requests are in test_serving_requests.py,
function calls in test_serving_function_calls.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from decoder_helpers import CHAT, TOK, decode, sp
from serving_helpers import base_model_dir, make_run

from pipelines.errors import ConfigError
from serving.config import ServeConfig
from serving.decode import ReplyDecoder
from serving.resolve import api_keys, app_settings, is_chat_model, resolve_models, search_source


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
    text, started, done = decode(dec, ids, stop_last=True)
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
    sent, _, _ = decode(dec, TOK.encode(text))
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
    text, _, _ = decode(dec, ids)
    assert text == dec.content == "ml\nmore" and not dec.stopped
    assert "".join(t.text for t in dec.logprobs) == text and len(dec.logprobs) == len(ids) - 2
    dec = ReplyDecoder(TOK, chat=False, stops=["ml"], logprobs=True)  # matched across the dropped token
    text, _, _ = decode(dec, TOK.encode("am") + [sp("<|calc_end|>")] + TOK.encode("lz"))
    assert text == dec.content == "a" and dec.stopped and [t.text for t in dec.logprobs] == ["a"]
    # a character whose bytes a control token splits comes out whole
    e_acute = TOK.encode("é")
    dec = ReplyDecoder(TOK, chat=False)
    assert decode(dec, e_acute[:1] + [sp("<|im_start|>")] + e_acute[1:])[0] == "é"


def test_stop_string_does_not_span_a_tool_call():
    ids = reply_ids(
        [
            {"type": "text", "text": "ab"},
            {"type": "calc", "expression": "1", "result": "1"},
            {"type": "text", "text": "cd"},
        ]
    )
    dec = ReplyDecoder(TOK, chat=True, stops=["bc"])
    text, _, _ = decode(dec, ids)
    assert text == "abcd" and not dec.stopped


def test_raw_mode_drops_control_tokens_and_the_final_stop():
    ids = TOK.encode("a") + [sp("<|im_start|>")] + TOK.encode("b") + [TOK.eot_id]
    dec = ReplyDecoder(TOK, chat=False)
    text, _, _ = decode(dec, ids, stop_last=True)
    assert text == "ab"


def test_chat_mode_drops_stray_control_tokens_and_a_call_without_result():
    ids = TOK.encode("x") + [sp("<|result_end|>"), sp("<|im_start|>")] + [sp("<|calc_start|>")]
    ids += TOK.encode("1+1") + [sp("<|calc_end|>")] + TOK.encode("y")  # tools off: no result follows
    dec = ReplyDecoder(TOK, chat=True)
    text, started, done = decode(dec, ids)
    assert text == "xy" and started[0]["expression"] == "1+1" and done == []
    assert dec.tool_uses[0].result is None


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
    text, started, done = decode(dec, generated)
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
