"""The run config: one pydantic model per stage, grouped in one YAML file.

Why one file: a run is reproducible from a single document, and `--set clean.language.threshold=0.5`
reaches any field without a zoo of CLI flags. Unknown keys are errors (``extra="forbid"``) so a typo
fails at start with the key's name instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from lm.config_base import StrictModel
from pipelines.clean.config import CleanConfig
from pipelines.pretrain.config import PretrainConfig
from pipelines.rm.config import RMConfig
from pipelines.tokenize.config import TokenizeConfig
from pipelines.world.config import WorldConfig


class RayConfig(StrictModel):
    """How a job starts Ray when it is not inside a cluster (inside one, these are ignored)."""

    num_cpus: int | None = Field(None, description="CPUs of the embedded local cluster; None = all")
    object_store_memory_mb: int | None = Field(
        None, description="cap on the local object store; None = Ray's default"
    )
    include_dashboard: bool = False


class RunConfig(StrictModel):
    run_dir: str = Field("runs/tiny", description="local path or pyarrow filesystem URI of the run")
    seed: int = 0
    ray: RayConfig = RayConfig()
    world: WorldConfig = WorldConfig()
    clean: CleanConfig = CleanConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    pretrain: PretrainConfig = PretrainConfig()
    rm: RMConfig = RMConfig()


class ConfigError(ValueError):
    """A config problem described for a person: which key, what was expected."""


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


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(root)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            got = item.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
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
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from None
