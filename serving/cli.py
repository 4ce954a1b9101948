"""``raychat serve``: the serving application on this machine's Ray (or the cluster it is part of).

    raychat serve --run-dir runs/tiny [--port 8000] [--host 127.0.0.1]
    raychat serve --config serving/config.yaml        # our fields, or a Serve config file's first app

It builds the same application as ``serve run serving/config.yaml`` (serving.app:build_app), starts
Serve's HTTP proxy on ``--host``/``--port``, prints where the web chat and the API are, and runs until
Ctrl-C (or SIGTERM), then deletes the application. A bad config, a missing model or a port in use is
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import sys
import time
from typing import Any


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", help="serve every model under RUN_DIR/models/")
    parser.add_argument(
        "--config", help="a serving config YAML (serving/config.py's fields, or a Serve config file)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")


def main_serve(args: argparse.Namespace) -> int:
    from pipelines.config import ConfigError, RayConfig
    from pipelines.runtime import init_ray

    try:
        if not args.run_dir and not args.config:
            raise ConfigError("give --run-dir DIR (serve that run's models) or --config FILE")
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port {args.port} is not a TCP port")
        from serving.app import build_app
        from serving.config import load_serve_config, replica_resources, resolve_models

        serve_args: dict[str, Any] = {"config": args.config, "run_dir": args.run_dir}
        cfg = load_serve_config(serve_args)
        models = resolve_models(cfg)
        names = [f"{m.name} ({'chat' if m.chat else 'base'})" for m in models]
        app = build_app(serve_args)
        _check_port(args.host, args.port)
    except ConfigError as e:
        print(f"raychat serve: {e}", file=sys.stderr)
        return 2
    from ray import serve

    # A local Ray (no RAY_ADDRESS) gets at least the logical CPUs the first replicas ask for, so a run
    # with several models starts on a small machine (their engines then share its cores); a cluster
    # is used as it is.
    replicas = max(cfg.autoscaling.min_replicas, cfg.autoscaling.initial_replicas or 1)
    wanted = math.ceil(replica_resources(cfg, models)["CPU"] * replicas)
    init_ray(RayConfig(num_cpus=max(os.cpu_count() or 1, wanted)))
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(app, name=cfg.app_name, route_prefix=cfg.route_prefix)
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown}:{args.port}{cfg.route_prefix.rstrip('/')}"
    print(f"raychat: serving {', '.join(names)}", flush=True)
    print(f"raychat: web chat at {url}/ ; OpenAI API at {url}/v1 ; Ctrl-C stops", flush=True)
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("raychat: stopping", flush=True)
    serve.delete(cfg.app_name)
    serve.shutdown()
    return 0


def _check_port(host: str, port: int) -> None:
    """Fail before Ray starts when the port is taken (Serve's proxy would retry for ever)."""
    from pipelines.config import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port)"
            ) from None
