"""The ``raychat`` command: every stage, the runner, the demo and sampling behind one entry point.

    raychat clean --config configs/tiny.yaml --set clean.language.threshold=0.5
    raychat clean --input 'crawl/*.warc.gz' --output runs/mine --steps extract,pii
    raychat run --config configs/tiny.yaml --stages clean,tokenize
    raychat demo --run-dir runs/demo
    raychat sample --model runs/tiny/models/base --prompt "The capital of" -n 5
    raychat tokens "hello deep seek" --tokenizer runs/tiny/tokenizer
    raychat serve --run-dir runs/tiny --port 8000

``python -m pipelines.<stage>`` is the same as ``raychat <stage>``, which is what
``ray job submit --working-dir . -- python -m pipelines.clean --config ...`` runs on a cluster.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pipelines import storage
from pipelines.config import ConfigError, RunConfig, load_config
from pipelines.runtime import (
    RunDir,
    StageFailed,
    clear_done,
    init_ray,
    is_done,
    mark_done,
    setup_logging,
    update_summary,
)
from pipelines.stages import STAGES, stage_module

log = logging.getLogger("raychat")
REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "configs" / "tiny.yaml"


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run config YAML (defaults are the tiny demo's)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set pretrain.max_steps=50 (repeatable)",
    )
    p.add_argument("--run-dir", help="shorthand for --set run_dir=DIR")


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "run_dir", None):
        extra.append(f"run_dir={json.dumps(args.run_dir)}")
    return extra


def run_stage(name: str, cfg: RunConfig, force: bool = False) -> dict[str, Any]:
    """Run one stage in this process (Ray already initialised) and record it as complete.

    ``force`` also drops the stage's resumable state (a stage module's ``start_over(cfg)``, e.g.
    pretraining's checkpoints), so the stage is really redone rather than resumed at its end.
    """
    run = RunDir(cfg.run_dir)
    started = time.time()
    clear_done(run, name)
    module = stage_module(name)
    if force and hasattr(module, "start_over"):
        module.start_over(cfg)
    log.info("stage %s: starting (run dir %s)", name, run.location)
    numbers = module.run(cfg) or {}
    numbers.setdefault("seconds", round(time.time() - started, 2))
    # the later stages were built from this stage's old outputs: they are no longer complete (a
    # stage that failed leaves them be, as stages swap their outputs in only when they finish)
    for later in list(STAGES)[list(STAGES).index(name) + 1 :]:
        if is_done(run, later):
            log.info("stage %s: its input was redone, so it will run again", later)
            clear_done(run, later)
    update_summary(run, name, numbers)
    mark_done(run, name, {"seconds": numbers["seconds"]})
    log.info("stage %s: done in %.1fs", name, numbers["seconds"])
    return numbers


def preflight(name: str, cfg: RunConfig) -> None:
    """What a stage can check before any work and before Ray starts: a ``ConfigError`` if not fine.

    Every stage writes into the run directory, so that is checked for all of them (a path under a
    regular file, a read-only mount, an object store that refuses the credentials); a stage module
    may add its own checks as ``preflight(cfg)`` (clean: its inputs and step settings).
    """
    try:
        storage.check_writable(RunDir(cfg.run_dir).path("metrics"))
    except OSError as e:
        raise ConfigError(f"stage {name}: cannot write the run directory {cfg.run_dir}: {e}") from None
    module = stage_module(name)
    if hasattr(module, "preflight"):
        module.preflight(cfg)


def run_stages(cfg: RunConfig, names: list[str], force: bool = False) -> dict[str, Any]:
    """Each stage is checked (``preflight``) just before it runs: before Ray starts for the first one,
    and after the earlier stages made what a later one reads."""
    from pipelines.report import write_report

    run = RunDir(cfg.run_dir)
    results: dict[str, Any] = {}
    for name in names:
        if not force and is_done(run, name):
            log.info("stage %s: outputs complete, skipping (use --force to redo)", name)
            continue
        preflight(name, cfg)
        init_ray(cfg.ray)
        results[name] = run_stage(name, cfg, force=force)
    if run.is_remote:
        log.info("report.md is written for local run directories only; see %s", run.summary)
    else:
        write_report(run)
    return results


def _stage_parser(sub: argparse._SubParsersAction, name: str, with_stage_args: bool) -> None:
    _, help_text = STAGES[name]
    p = sub.add_parser(name, help=help_text, description=help_text)
    _common_args(p)
    if with_stage_args:  # importing a stage pulls in Ray/torch: only for the stage being run
        module = stage_module(name)
        if hasattr(module, "add_cli_args"):
            module.add_cli_args(p)
    p.set_defaults(command="stage", stage=name)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raychat", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv else None
    for name in STAGES:
        _stage_parser(sub, name, with_stage_args=name == chosen)

    p = sub.add_parser("run", help="run stages in order, skipping those whose outputs are complete")
    _common_args(p)
    p.add_argument("--stages", help=f"comma-separated subset of: {','.join(STAGES)}")
    p.add_argument("--force", action="store_true", help="rerun stages even if complete")

    p = sub.add_parser("demo", help="the tiny lifecycle on an embedded local Ray (CPU, minutes)")
    _common_args(p)
    p.add_argument("--force", action="store_true", help="rerun stages even if complete")

    p = sub.add_parser("sample", help="sample continuations from a model directory")
    if chosen == "sample":
        from pipelines.sample import add_sample_args

        add_sample_args(p)

    p = sub.add_parser("tokens", help="show how a tokenizer splits a text: token boundaries and ids")
    if chosen == "tokens":
        from pipelines.tokens_cmd import add_tokens_args

        add_tokens_args(p)

    p = sub.add_parser("serve", help="serve a run's models: OpenAI API and web chat on Ray Serve")
    if chosen == "serve":
        from serving.cli import add_serve_args

        add_serve_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        if args.command == "sample":
            from pipelines.sample import main_sample

            return main_sample(args)
        if args.command == "serve":
            from serving.cli import main_serve

            return main_serve(args)
        if args.command == "tokens":
            from pipelines.tokens_cmd import main_tokens

            return main_tokens(args)
        if args.command == "demo":
            cfg = load_config(
                args.config or (TINY_CONFIG if TINY_CONFIG.is_file() else None), _overrides(args)
            )
            from pipelines.demo import run_demo

            return run_demo(cfg, force=args.force)
        if args.command == "run":
            cfg = load_config(args.config, _overrides(args))
            names = (
                list(STAGES) if not args.stages else [s.strip() for s in args.stages.split(",") if s.strip()]
            )
            unknown = [n for n in names if n not in STAGES]
            if unknown:
                raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(STAGES)}")
            names = [n for n in STAGES if n in names]  # always lifecycle order
            results = run_stages(cfg, names, force=args.force)
            print(json.dumps(results, indent=2, default=str))
            return 0
        # a single stage
        module = stage_module(args.stage)
        overrides = _overrides(args)
        if hasattr(module, "cli_overrides"):
            overrides += module.cli_overrides(args)
        cfg = load_config(args.config, overrides)
        preflight(args.stage, cfg)
        init_ray(cfg.ray)
        numbers = run_stage(args.stage, cfg)
        print(json.dumps(numbers, indent=2, default=str))
        return 0
    except ConfigError as e:
        print(f"raychat: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"raychat: {e}", file=sys.stderr)
        return 1


def stage_main(name: str) -> None:
    """``python -m pipelines.<name>``: the same as ``raychat <name>``."""
    sys.exit(main([name, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
