"""CORS for browser clients on other origins (Open WebUI's Direct Connections, a page calling ``fetch``),
by the replica's ``cors_allow_origins`` (serving/config.py); none configured: no CORS header at all.

Why a middleware that looks its settings up, rather than Starlette's ``CORSMiddleware`` added with
them: ``serve.ingress`` pickles the module's FastAPI app when serving/app.py is imported, before any
settings exist; they reach the replica as ``ChatModel``'s constructor arguments. So ``ReplicaCors`` is
added at import and, on the replica's first request, builds the policy from the settings of the
replica it runs in (Serve's replica context, where the routes find ``self`` too).
"""

from __future__ import annotations

from collections.abc import Sequence

from ray import serve
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

METHODS = ("GET", "POST", "HEAD", "OPTIONS")
# what every API client sends; a preflight's own list (the openai SDK's x-stainless-*) is added to it
HEADERS = ("authorization", "content-type")
MAX_AGE_S = 600


class OriginCors(CORSMiddleware):
    """Starlette's CORS with two changes: a preflight from an origin not allowed is refused with no
    ``Access-Control-*`` header at all (Starlette's still names the methods and headers allowed), and
    an allowed one is told ``authorization`` and ``content-type`` besides the headers it asked for."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=METHODS,
            allow_headers=["*"],  # echo what the preflight asks for
            max_age=MAX_AGE_S,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        if not self.is_allowed_origin(request_headers["origin"]):
            return PlainTextResponse("Disallowed CORS origin", status_code=400, headers={"Vary": "Origin"})
        response = super().preflight_response(request_headers)
        asked = request_headers.get("access-control-request-headers", "").split(",")
        allowed = dict.fromkeys([*HEADERS, *(h.strip().lower() for h in asked if h.strip())])
        response.headers["Access-Control-Allow-Headers"] = ", ".join(allowed)
        return response


class ReplicaCors:
    """ASGI middleware: ``OriginCors`` over the app when the replica's settings allow any origin, else
    the app untouched (today's behaviour); decided on the first request, when the settings are in."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handler: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan startup may run before the replica's settings are in
            await self.app(scope, receive, send)
            return
        if self.handler is None:
            # the ChatModel the routes are handed as ``self`` (serve.ingress finds it the same way)
            origins = serve.get_replica_context().servable_object.cfg.cors_allow_origins
            self.handler = OriginCors(self.app, origins) if origins else self.app
        await self.handler(scope, receive, send)
