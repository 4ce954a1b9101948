"""``raychat eval``: accuracy and pass@k of a model on a task, by the rule rewards, before and after
any stage, and of any served model.

    raychat eval --model runs/tiny/models/sft --task tinyworld-arith
    raychat eval --model runs/tiny/models/rl --task gsm8k --data ../shared/data/gsm8k/train.jsonl --limit 200 -n 4
    raychat eval --base-url http://localhost:8000/v1 --served-model rl --task tinyworld-arith --run-dir runs/tiny

With ``--model`` the replies come from an engine actor through Ray Data (the path the post-training
stages evaluate with, on an embedded local Ray or the cluster under ``ray job submit``); with
``--base-url`` from any OpenAI-compatible server, so the same task judges a model served by raychat,
vLLM or anyone else. ``-n K`` samples each problem K times (temperature 0.8 unless given; one sample
is greedy): accuracy is the mean share of right samples, with its standard error, and pass@k the
unbiased estimate for k = 1, 2, 4, ... up to K. The numbers go to ``<run>/metrics/eval/`` (every
reply and its verdict) and to the run's summary and report under ``eval``, keyed ``<model>:<task>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from lm.files import model_dir_problem
from pipelines.errors import ConfigError

log = logging.getLogger("raychat.eval")
MAX_SAMPLES = 128


def add_eval_args(p: argparse.ArgumentParser) -> None:
    """The command's own arguments (``--config``, ``--set``, ``--run-dir`` and ``--verbose`` are the
    CLI's common ones: ``--run-dir`` defaults to the run the model directory belongs to)."""
    from pipelines.evaluation.tasks import TASKS

    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="a model directory (Hugging Face Llama layout, with its tokenizer)")
    where.add_argument(
        "--base-url", help="an OpenAI-compatible server, as the OpenAI client takes it: http://host:8000/v1"
    )
    p.add_argument("--task", required=True, choices=TASKS, help="what to ask and how to judge it")
    p.add_argument("--data", help="the question/answer JSONL of the gsm8k and jsonl tasks")
    p.add_argument("-n", "--samples", type=int, default=1, help="samples per problem (pass@k up to n)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="at most this many problems: a file's first ones; a world set's seeded sample, as the stages take it (default: sft.eval.max_per_set)",
    )
    p.add_argument(
        "--temperature", type=float, default=None, help="default: 0 (greedy) for one sample, 0.8 for more"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="new tokens per reply (default: sft.eval.max_new_tokens for a world set, 256 for a file)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="the samples' seed (default: none, fresh samples each run)"
    )
    p.add_argument(
        "--reward",
        default=None,
        help="gsm8k/jsonl: a rule reward of lm/rewards.py or package.module:function (default numeric_accuracy)",
    )
    p.add_argument("--system", default=None, help="gsm8k/jsonl: a system message before each question")
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument(
        "--tools",
        action="store_true",
        help="gsm8k/jsonl with --model: let replies call the calculator (and the run's search index)",
    )
    p.add_argument(
        "--served-model",
        default=None,
        help="with --base-url: the model's name (default: the server's only one)",
    )
    p.add_argument("--api-key", default=None, help="with --base-url (default: $OPENAI_API_KEY)")
    p.add_argument("--concurrency", type=int, default=8, help="with --base-url: requests in flight")
    p.add_argument("--json", action="store_true", help="print only the numbers, as one JSON object")


def _run_dir_of(args: argparse.Namespace, cfg: Any) -> Path:
    """--run-dir, else the run a ``<run>/models/<name>`` directory belongs to, else the config's."""
    if args.run_dir:
        return Path(args.run_dir)
    if args.model:
        model = Path(args.model).resolve()
        if model.parent.name == "models" and (model.parent.parent / "metrics").is_dir():
            return model.parent.parent
    return Path(cfg.run_dir)


def _checked(args: argparse.Namespace) -> None:
    """Flags that cannot work together, or values no backend takes, refused before anything starts."""
    if args.samples < 1:
        raise ConfigError("-n must be at least 1")
    if args.samples > MAX_SAMPLES:
        raise ConfigError(f"-n is at most {MAX_SAMPLES} (OpenAI's own limit; the engine holds n at once)")
    if args.samples > 1 and args.temperature == 0:
        raise ConfigError(
            "-n above 1 with --temperature 0 gives n copies of one greedy reply; give a temperature"
        )
    if args.temperature is not None and args.temperature < 0:
        raise ConfigError("--temperature must be at least 0")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise ConfigError("--max-tokens must be at least 1")
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if args.model:
        server_only = [
            f for f, v in (("--served-model", args.served_model), ("--api-key", args.api_key)) if v
        ]
        if server_only:
            raise ConfigError(f"{', '.join(server_only)} go with --base-url, not --model")
        if problem := model_dir_problem(args.model):
            raise ConfigError(f"{problem}; give one a training stage wrote")
    else:
        if args.tools:
            raise ConfigError("--tools goes with --model: a server runs whatever tools it has itself")
        if not args.run_dir:  # else the results would land in the config's run (the demo's, by default)
            raise ConfigError(
                "--base-url needs --run-dir: the run whose sets to ask and where to keep the results"
            )


def main_eval(args: argparse.Namespace) -> int:
    import os

    from lm.engine import SamplingParams
    from pipelines.config import load_config
    from pipelines.evaluation.backends import ServerError, generate_http, generate_local
    from pipelines.evaluation.report import record
    from pipelines.evaluation.tasks import load_task
    from pipelines.run_dir import RunDir
    from pipelines.runner import log_to_run, write_report_safely
    from pipelines.sft.scorecard import world_data_dir
    from pipelines.stages import Graph

    try:
        _checked(args)
        cfg = load_config(args.config, args.overrides)
        run = RunDir(_run_dir_of(args, cfg).resolve())
        log_to_run(run)
        task = load_task(
            args.task,
            data=args.data,
            world_data=world_data_dir(run),
            data_cfg=cfg.sft_data,
            eval_cfg=cfg.sft.eval,
            limit=args.limit,
            seed=cfg.seed,  # the world sets' rows are sampled as the stages sample them
            reward=args.reward,
            system=args.system,
            question_field=args.question_field,
            answer_field=args.answer_field,
            tools=args.tools,
        )
        temperature = (
            args.temperature if args.temperature is not None else (0.0 if args.samples == 1 else 0.8)
        )
        params = SamplingParams(
            temperature=temperature,
            n=args.samples,
            max_tokens=args.max_tokens or task.max_tokens,
            seed=args.seed,
        )
    except (ConfigError, ValueError) as e:
        print(f"raychat eval: {e}", file=sys.stderr)
        return 2
    if args.model and args.data:
        from pipelines.evaluation.contamination import contamination_warning

        if warning := contamination_warning(args.model, args.data):
            print(f"raychat eval: {warning}", file=sys.stderr)
    started = time.time()
    try:
        if args.base_url:
            key = args.api_key or os.environ.get("OPENAI_API_KEY")
            model, replies = generate_http(
                args.base_url, task, params, args.served_model, key, args.concurrency
            )
            source = f"{args.base_url} ({model})"
        else:
            from pipelines.runtime import init_ray

            init_ray(cfg.ray)
            corpus = run.world / "search_index.jsonl"
            replies = generate_local(
                Path(args.model),
                task,
                params,
                corpus if corpus.is_file() else None,
                cfg.sft_data,
                cfg.sft.eval,
            )
            model, source = Path(args.model).name, str(Path(args.model).resolve())
    except (ConfigError, ServerError) as e:
        print(f"raychat eval: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the engine actor could not load or run the model: say so
        if not args.model:
            raise
        print(
            f"raychat eval: {args.model}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            file=sys.stderr,
        )
        return 1
    label = f"served:{model}" if args.base_url else model
    if args.data:
        label += f":{Path(args.data).stem}"
    numbers = record(run, task, label, source, replies, params, time.time() - started)
    if Path(run.at("report")).is_file():  # the run's report shows the evaluation beside the stages
        write_report_safely(
            Graph(load_config(args.config, [*args.overrides, f"run_dir={json.dumps(run.location)}"]))
        )
    print(json.dumps(numbers, indent=2) if args.json else _table(label, task.name, numbers))
    return 0


def _table(model: str, task: str, n: dict[str, Any]) -> str:
    lines = [f"{model} on {task}: {n['problems']} problems x {n['samples'] // n['problems']} samples"]
    lines.append(f"  accuracy  {n['accuracy']:.3f} +- {n['accuracy_stderr']:.3f}")
    for key in sorted(k for k in n if k.startswith("pass@") and not k.endswith(("_stderr", "_skipped"))):
        lines.append(f"  {key:<9} {n[key]:.3f} +- {n[key + '_stderr']:.3f}")
    lines.append(f"  replies and verdicts: {n['replies_file']}")
    return "\n".join(lines)
