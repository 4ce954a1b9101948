"""The settings of chat-data sources and their mixture (``sft.sources``, ``rm.sources``...): plain
pydantic models, so that reading a run config imports no loader (pipelines/sft/sources.py loads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from lm.config_base import StrictModel

# the record formats and GSM8K calculator modes of pipelines/sft/formats.py (sources.py checks they agree)
FORMATS = ("messages", "alpaca", "sharegpt", "oasst", "gsm8k")
CALCULATOR_MODES = ("tool", "strip", "keep")


class SourceConfig(StrictModel):
    """One chat-data source of a mixture."""

    path: str | list[str] = Field(
        description="file, glob or folder (or a list of them); JSONL, JSON or parquet"
    )
    format: Literal[("auto", *FORMATS)] = Field(  # type: ignore[valid-type]
        "auto", description="the records' format; auto = told from the records of each file"
    )
    name: str | None = Field(
        None, description="name in reports and in each example's meta; default: the path"
    )
    weight: float = Field(1.0, gt=0, description="share of the mixture when MixtureConfig.size is set")
    epochs: float = Field(1.0, gt=0, description="passes over the source when MixtureConfig.size is not set")
    max_records: int | None = Field(None, ge=1, description="use at most this many conversations (the first)")
    gsm8k_calculator: Literal[CALCULATOR_MODES] = Field(  # type: ignore[valid-type]
        "tool", description="GSM8K <<expr=value>> annotations: calc tool calls, removed, or kept as text"
    )
    oasst_languages: list[str] | None = Field(None, description="oasst: keep trees in these languages only")

    @property
    def label(self) -> str:
        return self.name or (self.path if isinstance(self.path, str) else ",".join(self.path))


class MixtureConfig(StrictModel):
    sources: list[SourceConfig] = Field(default_factory=list)
    size: int | None = Field(
        None, ge=1, description="examples in the mixture, split by weight; None = by epochs"
    )
    seed: int = 0
    max_bad_fraction: float = Field(
        0.5, ge=0, le=1, description="a source with more bad records than this is an error (wrong format?)"
    )

    @model_validator(mode="after")
    def _sizes_one_way(self) -> MixtureConfig:
        check_sized_one_way(self.size, [(f"sources.{i}", s) for i, s in enumerate(self.sources)])
        return self


def check_sized_one_way(size: int | None, sources: Sequence[tuple[str, Any]], size_key: str = "size") -> None:
    """A mixture is sized one way: each source's ``epochs`` without a size, or the size split by the
    sources' ``weight`` (pydantic models; a field counts when it was set). ValueError names the source.
    The SFT mixture and the reward model's pair mixture (``rm.mixture_size``) both check with it."""
    for where, s in sources:
        if size is None and "weight" in s.model_fields_set:
            raise ValueError(f"{where}.weight needs {size_key} (the weights split that many examples)")
        if size is not None and "epochs" in s.model_fields_set:
            raise ValueError(
                f"{where}.epochs conflicts with {size_key}: give per-source epochs or {size_key} + weights"
            )
