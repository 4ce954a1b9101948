"""The serve stage: the serving application (serving/app.py) on this machine's Ray, or the cluster's,
until it is stopped. A long-running stage (pipelines/stages.py): no done marker, never skipped, and
``raychat run`` starts it only when named, after the stages whose models it serves.

    raychat serve --run-dir runs/tiny [--port 8000] [--host 0.0.0.0]
    raychat serve --config configs/tiny.yaml --set serve.autoscaling.max_replicas=2
    raychat run --config configs/tiny.yaml --stages pretrain,serve

It builds the same application as ``serve run serving/config.yaml`` (serving.app:build_app), starts
Serve's HTTP proxy on ``serve.host``/``serve.port``, prints where the web chat and the API are, and runs
until Ctrl-C (or SIGTERM), then deletes the application. A bad config, a missing model or a port in
use is found by ``preflight``, before Ray starts: one line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

from pipelines.errors import ConfigError
from pipelines.shorthands import Shorthand
from serving.resolve import AppSettings, replica_resources, resolve_models, search_source, stage_settings

SHORTHANDS = (  # pipelines/shorthands.py
    Shorthand("--host", "host", "where to listen (0.0.0.0: every interface)"),
    Shorthand("--port", "port", "the HTTP port (default 8000)", int),
)


def preflight(cfg: Any, name: str) -> None:
    """The models exist, the port is free, and a local Ray will have the CPUs the app asks for."""
    app = stage_settings(cfg, name)
    s = app.serve
    models = resolve_models(app.run, s)
    _check_port(s.host, s.port)
    if os.environ.get("RAY_ADDRESS"):
        return  # a cluster is used as it is; a replica that cannot be placed says so every 30 s
    # the first replicas' logical CPUs (replica + one engine per model), so that a run with several
    # models starts on a small machine (their engines then share its cores)
    replicas = max(s.autoscaling.min_replicas, s.autoscaling.initial_replicas or 1)
    wanted = math.ceil(replica_resources(s, models, search_source(app.run, s) is not None)["CPU"] * replicas)
    if cfg.ray.num_cpus is None:
        cfg.ray.num_cpus = max(os.cpu_count() or 1, wanted)
    elif cfg.ray.num_cpus < wanted:
        raise ConfigError(
            f"ray.num_cpus is {cfg.ray.num_cpus} but {name} asks for {wanted} CPUs ({replicas} replica(s) "
            f"of {name}.replica.num_cpus plus an engine per model: {len(models)}); raise ray.num_cpus or "
            "lower the models' num_cpus"
        )


def serve_is_up() -> bool:
    """Whether Serve's controller runs on this Ray already (an application of someone else's may)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def serving(cfg: Any, name: str, shutdown: bool = True) -> Iterator[tuple[str, list[Any]]]:
    """The application up on this Ray (its proxy on ``<name>.host``/``port``) for the block: yields the
    base URL and the models served; deleted when the block ends, and Serve shut down with ``shutdown``
    (its controller and proxies would stay otherwise)."""
    from ray import serve

    from pipelines import console
    from serving.app import bind_app

    console.quiet_ray_loggers()  # Serve's logger exists now: its INFO lines go to the run's log file
    app: AppSettings = stage_settings(cfg, name)
    s = app.serve
    models = resolve_models(app.run, s)
    serve.start(http_options={"host": s.host, "port": s.port})
    try:
        serve.run(
            bind_app(s, models, search_source(app.run, s)), name=s.app_name, route_prefix=s.route_prefix
        )
        shown = "localhost" if s.host in ("0.0.0.0", "::") else s.host
        yield f"http://{shown}:{s.port}{s.route_prefix.rstrip('/')}", models
    finally:
        with contextlib.suppress(Exception):  # already gone when the cluster went first
            serve.delete(s.app_name)
            if shutdown:
                serve.shutdown()


def run(cfg: Any, name: str) -> dict[str, Any]:
    """Serve until Ctrl-C or SIGTERM; the numbers are what was served, where, and for how long."""
    started = time.time()
    with serving(cfg, name) as (url, models):
        names = [f"{m.name} ({'chat' if m.chat else 'base'})" for m in models]
        print(f"raychat: serving {', '.join(names)}", flush=True)
        print(f"raychat: web chat at {url}/ ; OpenAI API at {url}/v1 ; Ctrl-C stops", flush=True)
        stop = {"now": False}

        def _stop(*_: Any) -> None:
            stop["now"] = True

        # SIGINT too, set here rather than left to KeyboardInterrupt: a server started in the
        # background by a script (`raychat serve &` without job control) inherits SIGINT ignored
        previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stop["now"]:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        print("raychat: stopping", flush=True)
    return {
        "models": ", ".join(names),
        "url": url,
        "served_s": round(time.time() - started, 1),
    }


def smoke_requests(
    url: str, models: list[Any], api_key: str | None = None, timeout_s: float = 300
) -> list[dict]:
    """One request per served model through the OpenAI API, as any client sends it (plain HTTP): a chat
    model gets a chat completion, a base model a text completion. Returns what each answered."""
    import urllib.error
    import urllib.request

    from serving.decode import TOOL_KINDS

    results = []
    for m in models:
        if m.chat:
            path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": "Who are you?"}]}
        else:
            path, body = "/v1/completions", {"prompt": "The"}
        body |= {"model": m.name, "max_tokens": 24, "temperature": 0.0}
        request = urllib.request.Request(
            url + path,
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": f"Bearer {api_key}"} if api_key else {}),
            },
        )
        started = time.time()
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                reply = json.load(response)
            choice = reply["choices"][0]
            message = choice.get("message") or {}  # a completion's choice has none
            text = (message["content"] or "") if m.chat else choice["text"]
            tools = message.get("raychat_tool_uses") or []
            results.append(
                {
                    "model": m.name,
                    "ok": True,
                    "reply": text,
                    "finish_reason": choice.get("finish_reason"),
                    # a reply spent on a tool call is empty text: what it called says why
                    "tool_calls": [f"{u['type']}: {u[TOOL_KINDS[u['type']][2]]}" for u in tools],
                    "seconds": round(time.time() - started, 2),
                }
            )
        except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
            results.append({"model": m.name, "ok": False, "reply": f"{type(e).__name__}: {e}"})
    return results


def summary_line(n: dict[str, Any]) -> str:
    smoke = n.get("smoke") or []
    answered = sum(1 for r in smoke if r.get("ok"))
    line = f"served {n.get('models', '-')}"
    return line + (f"; {answered} of {len(smoke)} smoke requests answered" if smoke else "")


def _check_port(host: str, port: int) -> None:
    """Fail before Ray starts when the port is taken (Serve's proxy would retry for ever)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            # a taken or privileged port is the port's fault; an address this machine lacks or a name
            # that does not resolve is the host's
            port_fault = e.errno in (errno.EADDRINUSE, errno.EACCES)
            hint = "choose another --port" if port_fault else "check --host: an address of this machine"
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e} ({hint})") from None
