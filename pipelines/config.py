"""The run config: one pydantic model per stage, grouped in one YAML file.

Why one file: a run is reproducible from a single document, and `--set clean.language.threshold=0.5`
reaches any field without a zoo of CLI flags. Unknown keys are errors (``extra="forbid"``) so a typo
fails at start with the key's name instead of being silently ignored.

The sections are the stages of pipelines/stages.py's registry, named as the stages are, plus one for
each instance a config declares under ``stages:`` (another stage of a kind, with its own settings).
Every section's model is plain pydantic, so importing this module imports no stage's code.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, create_model

from lm.config_base import StrictModel
from pipelines.errors import ConfigError
from pipelines.sft.world_config import SFTDataConfig
from pipelines.stages import STAGES, registered

__all__ = ["ConfigError", "RayConfig", "RunConfig", "StageInstance", "load_config", "validate_config"]


class RayConfig(StrictModel):
    """How a job starts Ray when it is not inside a cluster (inside one, these are ignored)."""

    num_cpus: int | None = Field(None, ge=1, description="CPUs of the embedded local cluster; None = all")
    object_store_memory_mb: int | None = Field(
        None, ge=1, description="cap on the local object store; None = Ray's default"
    )
    include_dashboard: bool = False


class StageInstance(StrictModel):
    """A stage that runs again under another name (``stages: {grpo_final: {kind: grpo}}``)."""

    kind: str = Field(description="the registered stage it is another instance of (pipelines/stages.py)")


class _RunSettings(StrictModel):
    run_dir: str = Field(
        "runs/tiny", min_length=1, description="local path or pyarrow filesystem URI of the run"
    )
    seed: int = 0
    ray: RayConfig = RayConfig()
    stages: dict[str, StageInstance] = Field(
        default_factory=dict,
        description="more stages of a kind under their own names, each with its own section (pipelines/stages.py)",
    )
    sft_data: SFTDataConfig = Field(
        default_factory=SFTDataConfig,
        description="the tiny world's post-training data (conversations, identity, refusals): what the "
        "sft, idk and rm stages build from the world",
    )


# the run config: the fields above and one section per registered stage, named as the stage is
RunConfig = create_model(
    "RunConfig",
    __base__=_RunSettings,
    __module__=__name__,
    __doc__="A run: where it lives, its seed, Ray's settings, and one section per stage.",
    **{stage.name: (stage.config, Field(default_factory=stage.config)) for stage in STAGES},
)
# raychat's commands besides the stages (pipelines/cli.py): a stage may not take one of their names
COMMANDS = ("run", "demo", "report", "sample", "tokens", "chat", "eval")
_RESERVED = {*RunConfig.model_fields, *COMMANDS}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@functools.cache
def _with_instances(instances: tuple[tuple[str, str], ...]) -> type[StrictModel]:
    """RunConfig with a section for each declared instance, of its kind's settings model."""
    fields: dict[str, Any] = {}
    for name, kind in instances:
        if not _NAME.match(name) or name in _RESERVED:
            raise ConfigError(
                f"stages.{name}: a stage's name must be lower_case_with_underscores and not one of "
                f"{', '.join(sorted(_RESERVED))}"
            )
        try:
            config = registered(kind).config
        except ConfigError as e:
            raise ConfigError(f"stages.{name}.kind: {e}") from None
        fields[name] = (config, Field(default_factory=config))
    return create_model("RunConfig", __base__=RunConfig, __module__=__name__, **fields)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML so numbers, lists and booleans work."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set has an empty key in {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    node[path[-1]] = value


# a key whose value may be a credential: api_key(s), auth_token, secret, password, but not
# tokenize.input, max_tokens or tokenizer (words that only contain "token")
_SECRET = re.compile(r"(^|_)(api_keys?|token|secrets?|passwords?|credentials?)$", re.IGNORECASE)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            got = item.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            if any(
                _SECRET.search(str(part)) for part in item["loc"]
            ):  # an error message must not print an API key to the console or a log
                shown = "a value not shown: it may be a secret"
            lines.append(f"  {key}: {item['msg']} (got {shown[:80]})")
    return "invalid config:\n" + "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config YAML (or defaults when None) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    for text in overrides or []:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    return validate_config(data)


def validate_config(data: dict[str, Any]) -> RunConfig:
    model = RunConfig
    declared = data.get("stages")
    if isinstance(declared, dict) and declared:
        kinds = []
        for name, entry in declared.items():
            kind = entry.get("kind") if isinstance(entry, dict) else None
            if not isinstance(kind, str):
                raise ConfigError(f"stages.{name}: give the stage's kind, e.g. {{kind: pretrain}}")
            kinds.append((str(name), kind))
        model = _with_instances(tuple(sorted(kinds)))
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
