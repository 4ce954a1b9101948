"""What the serving application serves and how it scales: one pydantic model, from YAML or Serve args.

    cfg = load_serve_config({"run_dir": "runs/tiny"})                 # every model of a run
    cfg = load_serve_config({"config": "serving/models.yaml", "api_keys": [...]})
    models = resolve_models(cfg)                                      # name, path, chat or base

The same fields arrive three ways: a YAML file of ours (``raychat serve --config C``), the ``args`` of
a Ray Serve config file (``serve run serving/config.yaml``: ``applications[].args``), or keyword
arguments of ``serving.app:build_app``. ``args`` may hold ``config`` (a path to a YAML file of ours)
and any field beside it; the fields given beside it win.

Which models are served, and for what (the rule):
- ``models`` lists model directories by path (and optional name); ``run_dir`` adds every directory
  under ``<run_dir>/models/`` that holds a ``config.json`` (each named after its folder), unless a
  listed model already has that name.
- A model is a **chat model** (``/v1/chat/completions`` and ``/v1/completions``) when its entry says
  ``chat: true``; otherwise when its ``raychat.json`` says ``"chat": true``; otherwise when the stage
  that wrote it trains on the chat format (sft, rl, grpo, student, distill); otherwise when its EOS
  tokens include ``<|im_end|>`` (the end of an assistant turn: what save_pretrained gets for chat
  models). Anything else is a **base model**: ``/v1/completions`` only, and a chat request for it is a
  400 that says so. ``include_base_models: false`` leaves base models out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError

from lm.config_base import StrictModel
from lm.files import read_json_object
from pipelines.config import ConfigError

CHAT_STAGES = frozenset({"sft", "rl", "grpo", "student", "distill"})
API_KEYS_ENV = "RAYCHAT_API_KEYS"
DEFAULT_TOOLS_NOTE = "You can use the search tool and the calculator."


class EngineSettings(StrictModel):
    """How each model's engine actor runs (one per model in every replica; see serving/app.py)."""

    engine: Literal["auto", "torch", "vllm"] = Field(
        "auto", description="auto: vLLM when installed with a GPU, else our TorchEngine"
    )
    device: str | None = Field(None, description="torch engine device (default: cuda if present)")
    max_batch_size: int = Field(32, ge=1, description="samples generated at once (KV cache slots)")
    max_queued: int = Field(64, ge=0, description="requests waiting beyond the running ones; more get 503")
    max_seq_len: int | None = Field(None, ge=2, description="context length (default: the model's)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs of the engine actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs of the engine actor (1 on a GPU node)")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more engine arguments")


class ModelSpec(EngineSettings):
    """One served model: its directory, the name requests use, and its engine settings."""

    path: str = Field(description="a model directory (Hugging Face layout with the tokenizer)")
    name: str | None = Field(None, description="the `model` field of requests (default: folder name)")
    chat: bool | None = Field(None, description="chat model? None: decided by the rule in this module")
    tools_note: str | None = Field(
        None,
        description="system note added when server tools are on (default: raychat.json's, else tools.note)",
    )


class SearchSettings(StrictModel):
    """The search tool: a BM25 index over a corpus (actors/search.py), one actor per replica."""

    corpus: str | list[str] | None = Field(
        None, description="JSONL/JSON/parquet documents (default: <run_dir>/world/search_index.jsonl)"
    )
    index_dir: str | None = Field(None, description="where the built index is saved and loaded from")
    k: int = Field(3, ge=1, description="passages per search")
    max_chars: int = Field(400, ge=1, description="characters of the result the model sees")
    timeout_s: float = Field(10.0, gt=0, description="a slower search answers 'error: ...'")
    num_cpus: float = Field(0.25, ge=0)


class ToolSettings(StrictModel):
    """Server-side tools chat models may call mid-generation (the request's `raychat_tools` narrows)."""

    calculator: bool = True
    search: bool = Field(True, description="on when a corpus is configured or the run has one")
    search_settings: SearchSettings = SearchSettings()
    note: str | None = Field(
        DEFAULT_TOOLS_NOTE, description="system note the model was trained to see when it may use tools"
    )


class AutoscalingSettings(StrictModel):
    """Ray Serve's autoscaling_config of the deployment (min = max: a fixed number of replicas)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(
        16, gt=0, description="requests in flight per replica that Serve aims for (about half the batch)"
    )
    upscale_delay_s: float = Field(10.0, ge=0)
    downscale_delay_s: float = Field(300.0, ge=0)


class ReplicaSettings(StrictModel):
    """Resources and admission of each replica of the API deployment."""

    num_cpus: float = Field(0.5, ge=0, description="CPUs of the replica itself (HTTP, rendering, SSE)")
    num_gpus: float = Field(0.0, ge=0)
    max_ongoing_requests: int = Field(
        96, ge=1, description="requests a replica handles at once (>= the engines' batch, for batching)"
    )
    max_queued_requests: int = Field(
        256, ge=-1, description="requests Serve queues for the replicas; more get 503 (-1: no bound)"
    )


class ServeConfig(StrictModel):
    """Everything the serving application needs; every field has a default that works locally."""

    run_dir: str | None = Field(None, description="serve every model under <run_dir>/models/")
    models: list[ModelSpec] = Field(default_factory=list, description="model directories to serve")
    include_base_models: bool = Field(True, description="serve base models for /v1/completions")
    model_defaults: EngineSettings = Field(
        default_factory=EngineSettings, description="engine settings of models found in run_dir"
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list, description=f"bearer tokens; also {API_KEYS_ENV} (comma-separated)"
    )
    tools: ToolSettings = ToolSettings()
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    replica: ReplicaSettings = ReplicaSettings()
    max_n: int = Field(16, ge=1, description="largest `n` a request may ask for")
    default_max_tokens: int | None = Field(
        None,
        ge=1,
        description="chat replies' max_tokens when the request gives none (None: the rest of the context)",
    )
    max_request_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    app_name: str = Field("raychat", description="the Serve application's name")
    route_prefix: str = Field("/", description="where the app is mounted on the HTTP proxy")


class ResolvedModel(StrictModel):
    """A model as a replica serves it: a unique name, its directory, chat or base, its settings."""

    name: str
    path: str
    chat: bool
    spec: ModelSpec


def load_serve_config(args: dict[str, Any] | None = None) -> ServeConfig:
    """A ServeConfig from Serve-style ``args``: ``config`` (a YAML file of ours, or a Serve config file
    whose first application's ``args`` are used) plus any field given beside it."""
    args = dict(args or {})
    data: dict[str, Any] = {}
    path = args.pop("config", None)
    if path is not None:
        data = read_config_file(path)
    data.update({k: v for k, v in args.items() if v is not None})
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for item in e.errors():
            key = ".".join(str(p) for p in item["loc"]) or "(root)"
            lines.append(f"  {key}: {'unknown key' if item['type'] == 'extra_forbidden' else item['msg']}")
        raise ConfigError("invalid serving config:\n" + "\n".join(lines)) from None


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"serving config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"serving config {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"serving config {p} must hold a mapping at the top level")
    if "applications" in data:  # a Serve config file: our fields are the first application's args
        apps = data["applications"]
        if not isinstance(apps, list) or not apps or not isinstance(apps[0], dict):
            raise ConfigError(f"{p}: 'applications' must be a non-empty list of applications")
        args = dict(apps[0].get("args") or {})
        nested = args.pop("config", None)
        if nested is not None:
            base = read_config_file(p.parent / nested if not Path(nested).is_absolute() else nested)
            return base | args
        return args
    return data


def api_keys(cfg: ServeConfig) -> list[str]:
    """The configured keys plus those in RAYCHAT_API_KEYS (read where this runs: the replica)."""
    keys = [k.get_secret_value() for k in cfg.api_keys]
    keys += [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",")]
    return [k for k in dict.fromkeys(keys) if k]


def is_chat_model(path: str | os.PathLike[str]) -> bool:
    """The module docstring's rule, from the directory's own files."""
    root = Path(path)
    meta_path = root / "raychat.json"
    meta = read_json_object(meta_path, ConfigError) if meta_path.is_file() else {}
    if isinstance(meta.get("chat"), bool):
        return meta["chat"]
    if meta.get("stage") in CHAT_STAGES:
        return True
    from lm.checkpoint import CheckpointError, eos_token_ids
    from lm.tokenizer import TokenizerError, load_tokenizer

    try:
        im_end = load_tokenizer(root).token_id("<|im_end|>")
        return im_end in eos_token_ids(root)
    except (KeyError, TokenizerError, CheckpointError, FileNotFoundError):
        return False


def resolve_models(cfg: ServeConfig) -> list[ResolvedModel]:
    """The models to serve, checked: each directory exists with a config.json, names are unique."""
    specs = list(cfg.models)
    listed = {s.name or Path(s.path).name for s in specs}
    if cfg.run_dir is not None:
        models_dir = Path(cfg.run_dir) / "models"
        if not models_dir.is_dir():
            raise ConfigError(f"run_dir {cfg.run_dir} has no models/ folder; train a model first")
        for d in sorted(models_dir.iterdir()):
            if d.name.startswith(".") or not (d / "config.json").is_file() or d.name in listed:
                continue  # hidden: a save in progress; no config.json: not a model
            specs.append(ModelSpec(path=str(d), name=d.name, **cfg.model_defaults.model_dump()))
    out: list[ResolvedModel] = []
    for spec in specs:
        path = Path(spec.path)
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise ConfigError(f"model directory {path} {what}")
        name = spec.name or path.name
        if any(m.name == name for m in out):
            raise ConfigError(f"two models are named {name!r}; give one a different `name`")
        chat = spec.chat if spec.chat is not None else is_chat_model(path)
        if chat or cfg.include_base_models:
            out.append(ResolvedModel(name=name, path=str(path.resolve()), chat=chat, spec=spec))
    if not out:
        where = f" under {cfg.run_dir}/models" if cfg.run_dir else ""
        raise ConfigError(f"no model to serve{where}: list `models` or give a run_dir with trained models")
    return out


def replica_resources(cfg: ServeConfig, models: list[ResolvedModel]) -> dict[str, float]:
    """CPUs and GPUs one replica holds with its engine actors (and its search actor)."""
    cpus = cfg.replica.num_cpus + sum(m.spec.num_cpus for m in models)
    gpus = cfg.replica.num_gpus + sum(m.spec.num_gpus for m in models)
    if search_corpus(cfg) is not None or (cfg.tools.search and cfg.tools.search_settings.index_dir):
        cpus += cfg.tools.search_settings.num_cpus
    return {"CPU": cpus, "GPU": gpus}


def search_corpus(cfg: ServeConfig) -> str | list[str] | None:
    """The search tool's corpus: configured, else the run's world index when it exists, else None."""
    s = cfg.tools.search_settings
    if not cfg.tools.search:
        return None
    if s.corpus is not None or s.index_dir is not None:
        return s.corpus
    if cfg.run_dir is not None:
        default = Path(cfg.run_dir) / "world" / "search_index.jsonl"
        if default.is_file():
            return str(default.resolve())
    return None
