"""From the run config to what the serving application serves: the serve stage's settings, the models
(checked, named, chat or base), the search tool's index, the API keys, and what one replica holds.

    app = app_settings({"config": "configs/tiny.yaml", "run_dir": "runs/tiny"})   # build_app's args
    models = resolve_models(app.run, app.serve)                                   # name, path, chat

Every path under the run comes from its ``RunDir`` (``models/``, ``search/``, ``world/``). The rule
for which models are served, and whether each is a chat model, is serving/config.py's docstring.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm.config_base import StrictModel
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir
from serving.config import API_KEYS_ENV, ModelSpec, ServeConfig

CHAT_STAGES = frozenset({"sft", "idk", "rl", "grpo", "student", "distill"})


class ResolvedModel(StrictModel):
    """A model as a replica serves it: a unique name, its directory, chat or base, its settings."""

    name: str
    path: str
    chat: bool
    spec: ModelSpec


@dataclass(frozen=True)
class AppSettings:
    """The serve stage ``stage`` of one run: its run directory and its settings."""

    run: RunDir
    serve: ServeConfig
    stage: str = "serve"


def stage_settings(cfg: Any, name: str) -> AppSettings:
    """The settings of serve stage ``name`` of a loaded run config (a ConfigError for another kind)."""
    from pipelines.stages import Graph

    stage = Graph(cfg)[name]
    if (stage.kind or stage.name) != "serve":
        raise ConfigError(f"stage {name} is a {stage.kind or stage.name} stage, not a serve stage")
    return AppSettings(RunDir(cfg.run_dir), stage.settings(cfg), name)


def app_settings(args: dict[str, Any] | None = None) -> AppSettings:
    """The serve stage of a run from Ray Serve ``args`` (``serving.app:build_app``'s): ``config`` (a run
    config YAML; default: the defaults), ``run_dir`` (replaces the config's), ``stage`` (the serve
    stage's name, default ``serve``), and any field of that stage's section, which replaces the
    config's value of that field (as ``--set serve.<field>=...`` would)."""
    from pipelines.config import load_config

    args = dict(args or {})
    config = args.pop("config", None)
    stage = str(args.pop("stage", "serve"))
    run_dir = args.pop("run_dir", None)
    overrides = [] if run_dir is None else [f"run_dir={json.dumps(str(run_dir))}"]
    overrides += [f"{stage}.{key}={json.dumps(value)}" for key, value in args.items()]
    return stage_settings(load_config(config, overrides), stage)


def api_keys(cfg: ServeConfig) -> list[str]:
    """The configured keys plus those in RAYCHAT_API_KEYS (read where this runs: the replica)."""
    keys = [k.get_secret_value() for k in cfg.api_keys]
    keys += [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",")]
    return [k for k in dict.fromkeys(keys) if k]


def is_chat_model(path: str | os.PathLike[str]) -> bool:
    """serving/config.py's rule, from the directory's own files."""
    from lm.checkpoint import META_FILE, CheckpointError, eos_token_ids
    from lm.files import read_json_object
    from lm.tokenizer import TokenizerError, load_tokenizer

    root = Path(path)
    meta = read_json_object(root / META_FILE, ConfigError) if (root / META_FILE).is_file() else {}
    if isinstance(meta.get("chat"), bool):
        return meta["chat"]
    if meta.get("stage") in CHAT_STAGES:
        return True
    try:
        im_end = load_tokenizer(root).token_id("<|im_end|>")
        return im_end in eos_token_ids(root)
    except (KeyError, TokenizerError, CheckpointError, FileNotFoundError):
        return False


def in_run(run: RunDir, path: str) -> str:
    """A configured path with ``{run_dir}`` replaced by the run directory (as the clean stage's inputs)."""
    return run.expand(path)


def resolve_models(run: RunDir, cfg: ServeConfig) -> list[ResolvedModel]:
    """The models to serve, checked: each directory exists with a config.json, names are unique; a
    reward model in the run's models/ is left out (a listed one is refused)."""
    from lm.checkpoint import is_reward_model

    defaults = cfg.model_defaults.model_dump()
    # a listed model takes model_defaults for every engine setting it does not give itself
    specs = [ModelSpec(**{**defaults, **m.model_dump(exclude_unset=True)}) for m in cfg.models]
    listed = {s.name or Path(s.path).name for s in specs}
    models_dir = run.local("models")
    if cfg.run_models and models_dir.is_dir():
        for d in sorted(models_dir.iterdir()):
            if d.name.startswith(".") or not (d / "config.json").is_file() or d.name in listed:
                continue  # hidden: a save in progress; no config.json: not a model
            if is_reward_model(d):
                continue  # a reward model scores text; the RL stages use it, it has no replies to serve
            specs.append(
                ModelSpec(path=str(run.model(d.name)), name=d.name, **cfg.model_defaults.model_dump())
            )
    out: list[ResolvedModel] = []
    for spec in specs:
        path = Path(in_run(run, spec.path))
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise ConfigError(f"model directory {path} {what}")
        if is_reward_model(path):
            raise ConfigError(f"{path} is a reward model (it scores text, it does not generate): not served")
        name = spec.name or path.name
        if any(m.name == name for m in out):
            raise ConfigError(f"two models are named {name!r}; give one a different `name`")
        chat = spec.chat if spec.chat is not None else is_chat_model(path)
        if chat or cfg.include_base_models:
            out.append(ResolvedModel(name=name, path=str(path.resolve()), chat=chat, spec=spec))
    if not out:
        where = f"{models_dir} has no model" if cfg.run_models else "run_models is off"
        raise ConfigError(f"no model to serve: {where}; train one first or list the serve stage's `models`")
    return out


def search_source(run: RunDir, cfg: ServeConfig) -> dict[str, Any] | None:
    """Where the search tool's index comes from (``corpus`` and ``index_dir`` for actors/search.py):
    the configured ones, else the run's saved index (``search/``), else the run's corpus
    (``world/search_index.jsonl``); None when search is off or there is nothing to search."""
    if not cfg.tools.search:
        return None
    s = cfg.tools.search_settings
    if s.corpus is not None or s.index_dir is not None:
        corpus = [in_run(run, c) for c in s.corpus] if isinstance(s.corpus, list) else s.corpus
        return {
            "corpus": in_run(run, corpus) if isinstance(corpus, str) else corpus,
            "index_dir": in_run(run, s.index_dir) if s.index_dir else None,
        }
    from lm.search_index import META_FILE

    saved = str(run.search_index.resolve()) if (run.search_index / META_FILE).is_file() else None
    corpus = run.world / "search_index.jsonl"
    if corpus.is_file():  # with the saved index: reused unless the corpus changed since it was built
        return {"corpus": str(corpus.resolve()), "index_dir": saved}
    return {"corpus": None, "index_dir": saved} if saved else None


def replica_resources(cfg: ServeConfig, models: list[ResolvedModel], search: bool) -> dict[str, float]:
    """CPUs and GPUs one replica holds with its engine actors (and its search actor, when ``search``).
    A replica that holds GPUs itself lends them to its engines (serving/served.py), so then its own
    GPUs are all the GPUs it holds."""
    cpus = cfg.replica.num_cpus + sum(m.spec.num_cpus for m in models)
    gpus = cfg.replica.num_gpus or sum(m.spec.num_gpus for m in models)
    if search:
        cpus += cfg.tools.search_settings.num_cpus
    return {"CPU": cpus, "GPU": gpus}
