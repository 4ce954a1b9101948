"""The Ray Serve application: an OpenAI-compatible API and a web chat over the run's models.

    serve run serving/config.yaml                      # Serve's own CLI (import path below)
    raychat serve --run-dir runs/tiny [--port 8000]    # the serve stage: the same app (serving/job.py)
    app = build_app({"run_dir": "runs/tiny", "config": "configs/tiny.yaml"})   # a Serve app builder

``build_app``'s args (serving/resolve.py's ``app_settings``): ``config`` (a run config; its ``serve:``
section holds serving/config.py's settings), ``run_dir``, ``stage`` (another serve stage of the run
config) and any field of the serve section, which replaces the config's. cluster/kuberay-rayservice.yaml
deploys it with ``{run_dir, config}``.

Topology (one deployment, ``ChatModel``, a FastAPI ingress):
- every replica owns one engine actor per served model (serving/served.py) and, when search is on,
  one search actor. A replica given GPUs by Serve (``ray_actor_options: {num_gpus: 1}``, as the
  RayService manifest does) lends them to its engines. The replica holds the HTTP work (parsing, rendering, decoding, SSE); the engine
  actor holds the model (and on a GPU node the GPU: ``num_gpus`` of the model's settings) and batches
  every request the replica sends it, continuously. Why one engine per replica, not engines shared
  by replicas: Serve's autoscaling then adds engine capacity with replicas, a replica's requests
  never cross the network to reach the model, and engine and replica live and die together (an
  engine started by a replica is owned by it), so scaling down or losing a node leaves nothing
  behind. Serve routes each request to the replica with the fewest in flight, so batches fill evenly.
- ``max_ongoing_requests`` per replica is set above the engine's batch, so one replica can fill its
  engine's batch; ``target_ongoing_requests`` is what autoscaling aims for.
- Routes: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models`` (and
  ``/v1/models/{id}``), ``GET /health`` (always open), ``GET /`` (the web chat, a static page; the
  page asks for the key itself), ``GET /v1/raychat/stats`` (each engine's queue, slots, tokens/s).
  Every GET route answers HEAD (RFC 9110 asks it of GET resources; FastAPI's ``@get`` answered 405,
  which load balancers and uptime probes read as down). A path with a trailing slash is served as
  the path without it: Starlette redirected it (307), and many clients do not follow a redirect of
  a POST. A 405 says which methods the path takes (``Allow``).
- CORS (serving/cors.py), off unless ``cors_allow_origins`` names origins: then a browser's preflight
  is answered without a key (browsers never send one on it) and every answer carries the headers.

API keys: when any are configured (``api_keys`` or ``RAYCHAT_API_KEYS`` in the replica's environment)
every ``/v1`` route needs ``Authorization: Bearer <key>`` (a header without the scheme, such as
``Authorization: sk-...``, is told so rather than "no key"). The presented key and every configured
key are hashed (SHA-256) and compared with ``hmac.compare_digest``, all of them every time, so the
time taken tells nothing about the keys; keys are never logged or put in an error message.
"""

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.config import ServeConfig
from serving.cors import ReplicaCors
from serving.handlers import chat_completions, completions
from serving.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    model_card,
    parse_request,
)
from serving.resolve import ResolvedModel, api_keys, app_settings, resolve_models, search_source
from serving.served import ServedModel

log = logging.getLogger("raychat.serving")
PAGE = Path(__file__).parent / "static" / "chat.html"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

api = FastAPI(title="raychat", docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)


class NoTrailingSlash:
    """ASGI middleware: ``/v1/chat/completions/`` is routed as ``/v1/chat/completions`` (any path but
    the root). Starlette answered it with a 307 redirect, which many HTTP clients do not follow for a
    POST (and those that do may resend it as a GET)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            root, path = scope.get("root_path", ""), scope["path"]
            route = path[len(root) :] if path.startswith(root) else path
            if len(route) > 1 and route.endswith("/"):
                trimmed = route.rstrip("/") or "/"
                scope = dict(scope, path=path[: len(path) - len(route)] + trimmed)
                if scope.get("raw_path"):
                    scope["raw_path"] = scope["raw_path"].rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


api.add_middleware(NoTrailingSlash)
# outermost of the two (added last), around the exception handlers: the answers they make (a 401, a
# 404) carry the CORS headers too, and a preflight is answered before any route asks for a key
api.add_middleware(ReplicaCors)


def get_route(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A GET route that answers HEAD as well (the same status and headers, no body: the server drops
    it), as HTTP asks of every GET resource; FastAPI's ``@api.get`` answers HEAD with 405."""
    return api.api_route(path, methods=["GET", "HEAD"])


@api.exception_handler(OpenAIError)
async def _openai_error(_: Request, e: OpenAIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    # OpenAI's words for a path it does not have, which clients match on
    message = f"Invalid URL ({request.method} {request.url.path})" if e.status_code == 404 else str(e.detail)
    body = OpenAIError(message, e.status_code).body()
    return JSONResponse(body, status_code=e.status_code, headers=e.headers)  # a 405's Allow


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
    return JSONResponse(OpenAIError(f"invalid request: {e.errors()[0].get('msg')}").body(), status_code=400)


# Defined before the class on purpose: ``serve.ingress`` pickles the FastAPI app (and with it the
# class's methods and the globals they use) when the class is decorated; a function defined below
# the class would be missing in the replica (NameError).
def _wait_for_engines(models: dict[str, ServedModel]) -> None:
    """Block until every engine actor has loaded its model (before traffic), saying every 30 s which
    ones still wait and what the cluster has free: an engine that asks for more CPUs or GPUs than any
    node offers would otherwise leave the replica starting for ever without a word."""
    import ray

    pending = {m.actor.stats.remote(): m for m in models.values()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=30)
        for ref in ready:
            ray.get(ref)  # an engine that failed to load raises here, with its reason
            pending.pop(ref)
        if pending:
            log.warning(
                "still waiting for the engine actors of %s (each asks for CPU %s, GPU %s); the cluster "
                "has free: %s. Lower the models' num_cpus/num_gpus or add nodes.",
                ", ".join(m.name for m in pending.values()),
                [m.resources["CPU"] for m in pending.values()],
                [m.resources["GPU"] for m in pending.values()],
                ray.available_resources(),
            )


@serve.deployment(name="ChatModel")
@serve.ingress(api)
class ChatModel:
    """One replica: the API over one engine actor per model (module docstring)."""

    def __init__(self, cfg: ServeConfig, models: list[ResolvedModel], search: dict[str, Any] | None) -> None:

        from lm.calculator import calculator_tool

        self.cfg = cfg
        self._keys = [hashlib.sha256(k.encode()).digest() for k in api_keys(cfg)]
        factories: dict[str, Any] = {}
        if cfg.tools.calculator:
            factories["calculator"] = calculator_tool
        s = cfg.tools.search_settings
        if search is not None:
            from actors.search import search_tool, start_search_actor

            self.search = start_search_actor(
                **search,
                name=None,
                num_cpus=s.num_cpus,
                k=s.k,
                max_chars=s.max_chars,
                wait=False,  # its process starts beside the engines'
            )
            factories["search"] = lambda tok: search_tool(tok, self.search, timeout_s=s.timeout_s)
        self.models = {m.name: ServedModel(m, factories, cfg.tools.note) for m in models}
        _wait_for_engines(self.models)  # says every 30 s what is still loading
        if search is not None:
            from actors.search import search_ready

            search_ready(self.search)  # its index was built meanwhile
        self.created = int(time.time())
        log.info(
            "replica ready: %s",
            ", ".join(f"{n} ({'chat' if m.chat else 'base'})" for n, m in self.models.items()),
        )

    async def check_health(self) -> None:
        """Serve's health check: a replica whose engine actor died is replaced."""
        await asyncio.wait_for(asyncio.gather(*(m.stats() for m in self.models.values())), timeout=20)

    # -- helpers -------------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        """401 unless the request carries ``Authorization: Bearer <key>`` with a configured key; the
        message says which of the three went wrong (no header, a header not of that form, a wrong
        key) without repeating what was sent."""
        if not self._keys:
            return
        header = request.headers.get("authorization", "").strip()
        scheme, _, given = header.partition(" ")
        given = given.strip()
        digest = hashlib.sha256(given.encode()).digest()
        ok = False
        for key in self._keys:  # every key, every time: no early exit
            ok |= hmac.compare_digest(digest, key)
        bearer = scheme.lower() == "bearer" and bool(given)
        if not ok or not bearer:
            if not header:
                what = "No API key provided"
            elif not bearer:  # e.g. "Authorization: sk-..." (was reported as no key at all)
                what = "The Authorization header is not of the form 'Bearer <key>'"
            else:
                what = "Incorrect API key provided"
            raise OpenAIError(
                f"{what}. Send it as 'Authorization: Bearer <key>'.",
                401,
                "invalid_request_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _model(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise OpenAIError(
                f"The model '{name}' does not exist; available: {', '.join(self.models)}",
                404,
                "invalid_request_error",
                param="model",
                code="model_not_found",
            )
        return model

    async def _body(self, request: Request) -> bytes:
        coding = request.headers.get("content-encoding", "").strip().lower()
        if coding not in ("", "identity"):  # a gzip body was a 400 "not valid JSON", a br label ignored
            raise OpenAIError(
                f"Content-Encoding {coding!r} is not supported: send the body uncompressed", 415
            )
        limit = self.cfg.max_request_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise OpenAIError(f"request body over {limit} bytes", 413)
        body = await request.body()
        if len(body) > limit:
            raise OpenAIError(f"request body over {limit} bytes", 413)
        return body

    @staticmethod
    def _answer(result: Any) -> Response:
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)

    # -- routes --------------------------------------------------------------------------------------

    @get_route("/health")
    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "models": list(self.models)}

    @get_route("/")
    async def page(self) -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @get_route("/v1/models")
    async def list_models(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return {"object": "list", "data": [self._card(m) for m in self.models.values()]}

    @get_route("/v1/models/{name:path}")
    async def get_model(self, name: str, request: Request) -> dict[str, Any]:
        self._authorize(request)
        return self._card(self._model(name))

    def _card(self, m: ServedModel) -> dict[str, Any]:
        return model_card(m.name, self.created, m.chat, m.max_seq_len, m.tools)

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Response:
        self._authorize(request)
        req = parse_request(await self._body(request), ChatCompletionRequest)
        model = self._model(req.model)
        return self._answer(await chat_completions(model, req, self.cfg.max_n, self.cfg.default_max_tokens))

    @api.post("/v1/completions")
    async def complete(self, request: Request) -> Response:
        self._authorize(request)
        req = parse_request(await self._body(request), CompletionRequest)
        return self._answer(await completions(self._model(req.model), req, self.cfg.max_n))

    @get_route("/v1/raychat/stats")
    async def stats(self, request: Request) -> dict[str, Any]:
        self._authorize(request)
        names = list(self.models)
        values = await asyncio.gather(*(self.models[n].stats() for n in names))
        return {"object": "raychat.stats", "models": dict(zip(names, values, strict=True))}


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application (Ray Serve's app builder: ``serve run serving.app:build_app run_dir=...``).

    ``args``: the module docstring's; a bad config or a missing model raises pipelines.errors'
    ConfigError with one line per problem."""
    app = app_settings(args)
    return bind_app(app.serve, resolve_models(app.run, app.serve), search_source(app.run, app.serve))


def bind_app(cfg: ServeConfig, models: list[ResolvedModel], search: dict[str, Any] | None) -> Any:
    """The ``ChatModel`` deployment with the settings' autoscaling and resources, bound to its models."""
    a, r = cfg.autoscaling, cfg.replica
    deployment = ChatModel.options(
        autoscaling_config=a.model_dump(exclude_none=True),
        max_ongoing_requests=r.max_ongoing_requests,
        max_queued_requests=r.max_queued_requests,
        ray_actor_options={"num_cpus": r.num_cpus, "num_gpus": r.num_gpus},
        health_check_period_s=10,
        health_check_timeout_s=30,
    )
    return deployment.bind(cfg, models, search)
