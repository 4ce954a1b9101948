"""The ``raychat`` command: every stage, the runner, the demo, the report and sampling behind one entry point.

    raychat clean --config configs/tiny.yaml --set clean.language.threshold=0.5
    raychat clean --input 'crawl/*.warc.gz' --output runs/mine --steps extract,pii
    raychat run --config configs/tiny.yaml --stages clean,tokenize
    raychat grpo_final --config configs/r1.yaml        # a stage the run config declares (stages:)
    raychat demo --run-dir runs/demo
    raychat report --config configs/tiny.yaml
    raychat sample --model runs/tiny/models/base --prompt "The capital of" -n 5
    raychat tokens "hello deep seek" --tokenizer runs/tiny/tokenizer
    raychat chat --model runs/tiny/models/sft
    raychat serve --run-dir runs/tiny --port 8000      # the long-running serve stage, until Ctrl-C

``python -m pipelines.<stage>`` is the same as ``raychat <stage>``, which is what
``ray job submit --working-dir . -- python -m pipelines.clean --config ...`` runs on a cluster.
This module only reads arguments: what running a stage means is pipelines/runner.py's, which stages
exist and what they consume is pipelines/stages.py's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.config import COMMANDS, RunConfig, load_config
from pipelines.errors import ConfigError, Interrupted, StageFailed
from pipelines.run_dir import RunDir, is_done
from pipelines.runner import forgotten_if_refused, log_to_run, preflight, run_stage, run_stages
from pipelines.runtime import init_ray, interruption, setup_logging
from pipelines.shorthands import add_shorthands, shorthand_overrides
from pipelines.stages import STAGES, Graph

log = logging.getLogger("raychat")
REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "configs" / "tiny.yaml"


CONFIG_HELP = (
    "run config YAML (default: the built-in settings, which are not configs/tiny.yaml's: "
    "give the config a run was made with, e.g. --config configs/tiny.yaml for make demo's runs/tiny)"
)


def _common_args(p: argparse.ArgumentParser, config_help: str = CONFIG_HELP) -> None:
    p.add_argument("--config", help=config_help)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set pretrain.max_steps=50 (repeatable)",
    )
    p.add_argument("--run-dir", help="shorthand for --set run_dir=DIR")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show every log line, Ray's included, on the console (by default they go to <run>/logs/raychat.log)",
    )


def _overrides(args: argparse.Namespace) -> list[str]:
    extra = list(args.overrides)
    if getattr(args, "run_dir", None) is not None:  # --run-dir '' is refused, not the default run
        extra.append(f"run_dir={json.dumps(args.run_dir)}")
    return extra


def _stage_parser(sub: argparse._SubParsersAction, name: str, help_text: str, module: Any = None) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    _common_args(p)
    p.add_argument("--force", action="store_true", help="redo it from scratch instead of resuming")
    if module is not None and hasattr(module, "SHORTHANDS"):
        add_shorthands(p, name, module.SHORTHANDS)
    if module is not None and hasattr(module, "add_cli_args"):
        module.add_cli_args(p)
    p.set_defaults(command="stage", stage=name)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raychat", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv else None
    for stage in STAGES:  # importing a stage's module pulls in Ray/torch: only for the stage being run
        _stage_parser(sub, stage.name, stage.help, stage.module() if stage.name == chosen else None)
    if (
        chosen
        and not chosen.startswith("-")
        and chosen not in COMMANDS
        and chosen not in {s.name for s in STAGES}
    ):
        # a stage the run config declares (stages: {name: {kind: ...}}); checked once the config is read
        _stage_parser(
            sub,
            chosen,
            f"'{chosen}' is not a raychat command: it runs only as a stage that the run config "
            f"(--config) declares, stages: {{{chosen}: {{kind: K}}}} with K one of "
            f"{', '.join(s.name for s in STAGES)}",
        )

    p = _command(sub, "run", "run stages in graph order, skipping those whose outputs are complete")
    _common_args(p)
    p.add_argument(
        "--stages",
        help=f"comma-separated subset of: {','.join(s.name for s in STAGES)}, or of the stages the "
        "config declares (stages: {name: {kind: K}}, e.g. make demo's pretrain_student)",
    )
    p.add_argument("--force", action="store_true", help="rerun stages even if complete")

    p = _command(sub, "demo", "the tiny lifecycle on an embedded local Ray (CPU, minutes)")
    _common_args(p, "run config YAML (default: configs/tiny.yaml)")
    p.add_argument("--force", action="store_true", help="rerun stages even if complete")

    p = _command(sub, "report", "write <run>/report.md again from what the stages left")
    _common_args(p)

    p = _command(sub, "sample", "sample continuations from a model directory")
    if chosen == "sample":
        from pipelines.sample import add_sample_args

        add_sample_args(p)

    p = _command(sub, "tokens", "show how a tokenizer splits a text: token boundaries and ids")
    if chosen == "tokens":
        from pipelines.tokens_cmd import add_tokens_args

        add_tokens_args(p)

    p = _command(sub, "eval", "accuracy and pass@k of a model or a served model on a task")
    if chosen == "eval":
        from pipelines.eval_cmd import add_eval_args

        _common_args(p)
        add_eval_args(p)

    p = _command(sub, "chat", "chat with a model in the terminal: streamed replies, search and calculator")
    if chosen == "chat":
        from pipelines.chat_cmd import add_chat_args

        add_chat_args(p)
    for p in sub.choices.values():  # what parse_args refuses an argument with (a stage's command is "stage")
        p.set_defaults(command_parser=p)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line, with an argument the command does not take refused by the command's own
    parser: ``raychat sample --model M hello extra`` says ``raychat sample: error: unrecognized
    arguments: hello extra`` under the sample usage. Why: argparse hands a subcommand's leftovers up
    to the top-level parser, whose error shows the list of every command and not the one run."""
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    command_parser = vars(args).pop("command_parser", None)
    if extra:
        word = command_parser.prog.split()[-1] if command_parser else None
        after = argv[argv.index(word) + 1 :] if word in argv else []
        # a stray argument before the command word (raychat --bogus sample) is the top level's
        owner = command_parser if command_parser and all(x in after for x in extra) else parser
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _command(sub: Any, name: str, what: str) -> argparse.ArgumentParser:
    """A command whose --help opens with what it does (the list of commands shows the same line)."""
    return sub.add_parser(name, help=what, description=what)


def _warn_without_config(
    config: str | None,
    graph: Graph,
    stage: str | None = None,
    risk: str = "this stage may redo its work on other data",
) -> None:
    """Without --config the built-in settings apply; on a run that stages already wrote (made with a
    config file, say make demo's runs/tiny with configs/tiny.yaml) they can differ from what made it,
    and a stage run with them redoes its work on other data (SFT set the demo's checkpoints aside);
    ``risk`` says what the command at hand may do wrong. The stage being run does not count:
    ``raychat clean --input ... --output DIR`` again is no surprise. A server redoes no work
    (``raychat serve --run-dir runs/tiny`` serves every model of the demo's run, as documented)."""
    if config is not None or (stage is not None and graph[stage].long_running):
        return
    run = RunDir(graph.cfg.run_dir)
    done = [s.name for s in graph if not s.long_running and s.name != stage and is_done(run, s.name)]
    if done:
        log.warning(
            "no --config: using the built-in settings on %s, which stages (%s) already wrote; if a config "
            "file made this run (make demo: configs/tiny.yaml), pass it with --config, or %s",
            run.location,
            ", ".join(done),
            risk,
        )


def _run_command(cfg: RunConfig, stages: str | None, force: bool, config: str | None = None) -> int:
    graph = Graph(cfg)
    _warn_without_config(config, graph)
    if stages:
        names = [s.strip() for s in stages.split(",") if s.strip()]
        unknown = [n for n in names if n not in graph]
        if unknown:
            raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages are: {', '.join(graph.names)}")
    else:  # a long-running stage (a server) runs only when named
        names = _without_an_unasked_world(graph, [s.name for s in graph if not s.long_running])
    results = run_stages(graph, names, force=force)
    print(json.dumps(results, indent=2, default=str))
    return 0


def _without_an_unasked_world(graph: Graph, names: list[str]) -> list[str]:
    """A run whose clean stage reads the user's own data leaves out the tiny world, and the stages
    that cannot run without it, unless ``--stages`` names them.

    Why: every stage defaults to the tiny world where it has nothing else (GRPO's problems, the
    reward model's pairs, SFT's conversations), so ``raychat run`` on a config for one's own crawl
    built the world and quietly mixed its made-up facts into the chat model.
    """
    if "world" not in graph or "clean" not in graph or "world" in graph.consumes("clean"):
        return names
    left_out = {"world", *graph.needing("world")}
    if not left_out & set(names):
        return names
    shown = ", ".join(n for n in graph.names if n in left_out)
    log.info(
        "raychat run: leaving out %s: the clean stage reads your own data, and these are (or need) "
        "the tiny world; name them with --stages to run them",
        shown,
        extra={"console": True},
    )
    return [n for n in names if n not in left_out]


def _report_command(cfg: RunConfig, config: str | None) -> int:
    from pipelines.report import write_report
    from pipelines.run_dir import read_summary

    _warn_without_config(
        config,
        Graph(cfg),
        risk="report.md may leave out stages the config declares (make demo's pretrain_student)",
    )
    run = RunDir(cfg.run_dir)
    if not read_summary(run):  # a mistyped --run-dir: say so rather than write an empty report there
        raise ConfigError(
            f"nothing to report in {run.location}: no stage has left its numbers there "
            "(metrics/summary.json); check --run-dir or the config's run_dir"
        )
    print(write_report(Graph(cfg)))
    return 0


def _stage_command(args: argparse.Namespace) -> int:
    module = None
    overrides = _overrides(args)
    if args.stage in {s.name for s in STAGES}:
        module = next(s for s in STAGES if s.name == args.stage).module()
        if hasattr(module, "SHORTHANDS"):
            overrides += shorthand_overrides(args, args.stage, module.SHORTHANDS)
        if hasattr(module, "cli_overrides"):
            overrides += module.cli_overrides(args)
    graph = Graph(load_config(args.config, overrides))
    graph[args.stage]  # noqa: B018 - an unknown (undeclared) stage is a ConfigError naming the stages
    _warn_without_config(args.config, graph, args.stage)
    run = RunDir(graph.cfg.run_dir)
    with forgotten_if_refused(run):
        log_to_run(run)
        preflight(graph, args.stage)
    init_ray(graph.cfg.ray)
    numbers = run_stage(graph, args.stage, force=args.force)
    print(json.dumps(numbers, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if getattr(args, "verbose", False):
        setup_logging(verbose=True)
    try:
        if args.command == "sample":
            from pipelines.sample import main_sample

            return main_sample(args)
        if args.command == "tokens":
            from pipelines.tokens_cmd import main_tokens

            return main_tokens(args)
        if args.command == "eval":
            from pipelines.eval_cmd import main_eval

            return main_eval(args)
        if args.command == "chat":
            from pipelines.chat_cmd import main_chat

            return main_chat(args)
        if args.command == "demo":
            from pipelines.demo import run_demo

            tiny = TINY_CONFIG if TINY_CONFIG.is_file() else None
            return run_demo(load_config(args.config or tiny, _overrides(args)), force=args.force)
        if args.command == "report":
            return _report_command(load_config(args.config, _overrides(args)), args.config)
        if args.command == "run":
            return _run_command(
                load_config(args.config, _overrides(args)), args.stages, args.force, args.config
            )
        return _stage_command(args)
    except BrokenPipeError:  # `raychat sample --json | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE, as a shell tool ends
    except ConfigError as e:
        print(f"raychat: {e}", file=sys.stderr)
        return 2
    except StageFailed as e:
        print(f"raychat: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"raychat: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        stop = interruption()
        print(f"raychat: {stop}", file=sys.stderr)
        return stop.exit_code


def stage_main(name: str) -> None:
    """``python -m pipelines.<name>``: the same as ``raychat <name>``."""
    sys.exit(main([name, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
