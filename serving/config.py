"""The ``serve`` stage's settings: what the serving application serves and how it scales.

Settings only (a section of the run config, read without importing Ray or the app; tests/test_imports.py):
the run config's ``serve:`` section, or the section of another serve stage the config declares
(``stages: {serve_big: {kind: serve}}``). serving/resolve.py turns them into the models to serve.

Which models are served, and for what (the rule):
- ``run_models`` (default on) serves every directory under ``<run_dir>/models/`` that holds a
  ``config.json``, each named after its folder; ``models`` lists more directories by path (and
  optional name); a listed model wins over a folder of the same name.
- A model is a **chat model** (``/v1/chat/completions`` and ``/v1/completions``) when its entry says
  ``chat: true``; otherwise when its ``raychat.json`` says ``"chat": true``; otherwise when the stage
  that wrote it trains on the chat format (sft, idk, rl, grpo, student, distill); otherwise when its EOS
  tokens include ``<|im_end|>`` (the end of an assistant turn: what save_pretrained gets for chat
  models). Anything else is a **base model**: ``/v1/completions`` only, and a chat request for it is a
  400 that says so. ``include_base_models: false`` leaves base models out.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from lm.config_base import StrictModel
from pipelines.sft.world_config import SFTDataConfig

API_KEYS_ENV = "RAYCHAT_API_KEYS"
# the system note the SFT data shows where the tools are available: what the model was trained to see
DEFAULT_TOOLS_NOTE = SFTDataConfig.model_fields["tools_note"].default


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
        None,
        description="JSONL/JSON/parquet documents (default: the run's saved index <run_dir>/search/, "
        "else <run_dir>/world/search_index.jsonl)",
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

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


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
    """The serve stage's settings; every field has a default that works locally."""

    run_models: bool = Field(True, description="serve every model under <run_dir>/models/")
    models: list[ModelSpec] = Field(default_factory=list, description="more model directories to serve")
    include_base_models: bool = Field(True, description="serve base models for /v1/completions")
    model_defaults: EngineSettings = Field(
        default_factory=EngineSettings,
        description="engine settings of the models found in <run_dir>/models/, and of listed models for "
        "each setting they do not give",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list, description=f"bearer tokens; also {API_KEYS_ENV} (comma-separated)"
    )

    @field_validator("api_keys")
    @classmethod
    def _no_blank_key(cls, keys: list[SecretStr]) -> list[SecretStr]:
        # a blank key was dropped, and a list of only blank keys served with no authentication at all
        if any(not k.get_secret_value().strip() for k in keys):
            raise ValueError(
                "an empty key would leave the server open to anyone: remove it or give a real key"
            )
        return keys

    cors_allow_origins: list[str] = Field(
        default_factory=list,
        description="origins whose browser pages may call the API (CORS): exact origins such as "
        "'http://localhost:3000', or '*' for any; empty: no CORS headers (serving/cors.py)",
    )

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        # a browser's Origin has no path and a lowercase host: "http://host:3000/" would never match
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/\s]+", origin.lower()):
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme://host[:port], no path or trailing "
                    "slash (as browsers send it), or '*'"
                )
        return [origin.lower() for origin in origins]

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
    host: str = Field("127.0.0.1", description="where `raychat serve` listens (0.0.0.0: every interface)")
    port: int = Field(8000, ge=1, le=65535, description="the HTTP port of `raychat serve`")
