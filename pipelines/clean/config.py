"""Settings of the clean stage: one section per step, named as the step is in ``clean.steps``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lm.config_base import StrictModel
from pipelines.clean.dedup_config import DedupConfig
from pipelines.clean.extract import ExtractConfig
from pipelines.clean.filters.c4 import C4Config
from pipelines.clean.filters.custom import CustomStepConfig
from pipelines.clean.filters.fineweb import FineWebQualityConfig
from pipelines.clean.filters.gopher import GopherQualityConfig, GopherRepetitionConfig
from pipelines.clean.filters.language import LanguageConfig
from pipelines.clean.filters.pii import PIIConfig
from pipelines.clean.filters.url import UrlFilterConfig
from pipelines.clean.readers import ReadConfig
from pipelines.clean.steps import resolve_steps


class CleanConfig(StrictModel):
    inputs: list[str] = Field(
        default_factory=lambda: ["{run_dir}/world/crawl"],
        description="files, globs, folders or URIs; {run_dir} is replaced by the run directory",
    )
    missing_inputs: Literal["fail", "skip"] = Field(
        "fail",
        description="an input (path, glob or folder) that matches no file: 'fail' stops the stage before "
        "any work, naming them; 'skip' cleans the others and lists them in stats.json (missing_inputs)",
    )
    steps: list[str] = Field(
        default_factory=lambda: ["all"],
        description="steps to run, in pipeline order; 'quality' = the four quality filters, 'all' = every step; "
        "HTML records are always extracted (extract is implied when left out)",
    )
    read: ReadConfig = ReadConfig()
    url: UrlFilterConfig = UrlFilterConfig()
    extract: ExtractConfig = ExtractConfig()
    language: LanguageConfig = LanguageConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebQualityConfig = FineWebQualityConfig()
    pii: PIIConfig = PIIConfig()
    custom: list[CustomStepConfig] = Field(default_factory=list, description="user steps, run in order")
    dedup: DedupConfig = DedupConfig()
    batch_size: int = Field(256, ge=1, description="documents per step batch inside a worker")
    num_workers: int | None = Field(None, ge=1, description="pass-1 actors; None = one per free CPU")
    cpus_per_worker: float = Field(1.0, gt=0)
    min_rows_per_file: int = Field(50_000, ge=1, description="rows per output parquet file (at least)")
    write_chunk_rows: int = Field(
        2_000,
        ge=1,
        description="pass 1 writes a file's rows every N documents (a parquet row group), so an actor's "
        "memory does not grow with the size of the input file",
    )
    write_chunk_mb: int = Field(
        64, ge=1, description="... or as soon as the text held for writing reaches this many MiB"
    )
    rejected_max_chars: int | None = Field(
        65_536,
        ge=0,
        description="a rejected document without text (dropped before extraction) stores its raw content "
        "cut to this many characters (column text_truncated); None stores all of it",
    )

    @field_validator("steps")
    @classmethod
    def _known_steps(cls, value: list[str]) -> list[str]:
        resolve_steps(value)  # raises with the list of known steps
        return value
