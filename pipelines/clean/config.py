"""Settings of the clean stage, and its one registry of steps.

Plain pydantic and data: nothing here imports a step's code (trafilatura, fastText, libphonenumber,
Ray), so reading a run config stays cheap and never pulls in the clean stage's implementation.
``STEPS`` is the one list of the steps: their order (FineWeb's), their settings section
(``clean.<name>``) and where their code lives, imported only when a step is built
(pipelines/clean/steps.py). A new step is one ``StepSpec`` here and its module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, create_model, field_validator

from lm.config_base import StrictModel
from pipelines.clean.filters.config import (
    C4Config,
    CustomStepConfig,
    FineWebQualityConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageConfig,
    PIIConfig,
    UrlFilterConfig,
)

MiB = 1024 * 1024


class ReadConfig(StrictModel):
    """How input records are read and mapped onto the FineWeb columns."""

    max_document_bytes: int = Field(
        4 * MiB,
        gt=0,
        description=(
            "documents larger than this become an error row (reason 'document_too_large', with the "
            "size) instead of a record. 4 MiB is 4x Common Crawl's 1 MiB payload cap, so no page of "
            "a web crawl reaches it; a larger 'document' is a dump, a log or binary that would cost "
            "the filters and dedup far more than it is worth. Raise it for books"
        ),
    )
    text_fields: list[str] = Field(
        default_factory=lambda: ["text", "content", "raw_content"],
        description="JSON/parquet fields holding plain text, tried in order (FineWeb/C4/Dolma: text)",
    )
    html_fields: list[str] = Field(
        default_factory=lambda: ["html"], description="JSON/parquet fields holding raw HTML, tried in order"
    )
    id_fields: list[str] = Field(default_factory=lambda: ["id", "doc_id"], description="dotted paths")
    url_fields: list[str] = Field(
        default_factory=lambda: ["url", "metadata.url", "meta.url"],
        description="dotted paths; metadata.url is Dolma's",
    )
    date_fields: list[str] = Field(
        default_factory=lambda: ["date", "timestamp", "created", "metadata.date_download"],
        description="dotted paths; timestamp is C4's, created is Dolma's",
    )
    dump_fields: list[str] = Field(
        default_factory=lambda: ["dump", "metadata.dump", "metadata.cc_segment"],
        description="dotted paths; a CC-MAIN-YYYY-WW inside the value is taken as the dump",
    )
    html_mime_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml"],
        description="WARC payload types read as HTML; other payloads (images, PDF) become error rows",
    )
    parquet_batch_rows: int = Field(1024, gt=0, description="rows per parquet read (one row group slice)")
    text_split: Literal["file", "line", "paragraph", "separator"] = Field(
        "file",
        description=(
            "how a plain text file (.txt, .md) becomes documents: the whole file (a book, a note), "
            "each non-blank line (LLaMA-Factory's wiki_demo.txt, one article a line), each paragraph "
            "between blank lines, or each piece between text_separator's (TinyStories); as Hugging "
            "Face datasets' text loader's sample_by"
        ),
    )
    text_separator: str = Field(
        "<|endoftext|>", min_length=1, description="what ends a document when text_split is 'separator'"
    )


class ExtractConfig(StrictModel):
    """How HTML becomes text."""

    engine: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura",
        description="trafilatura (FineWeb's extractor, best quality) or resiliparse (several times faster, "
        "lower F1 on article pages; see benchmarks/extract_quality.py)",
    )
    favor_precision: bool = Field(
        True, description="trafilatura: prefer dropping doubtful boilerplate (FineWeb)"
    )
    fast: bool = Field(
        False,
        description="trafilatura: skip its readability/jusText fallbacks. About 1.6x faster, but a page "
        "whose main extractor fails loses its whole article (held-out pages: F1 0.83 vs 0.99 without); "
        "false = FineWeb's and datatrove's setting (benchmarks/extract_quality.py)",
    )
    include_tables: bool = Field(True, description="trafilatura: keep text inside <table> (its default)")
    include_comments: bool = Field(False, description="keep user comment sections (FineWeb: no)")
    deduplicate: bool = Field(
        False,
        description="trafilatura's cross-document paragraph cache; off because it makes the output depend "
        "on the order documents reach a worker (dedup is step 7's job)",
    )
    timeout_s: float = Field(
        2.0,
        gt=0,
        description="per-document time limit; a typical page takes 5-50 ms, so 2 s only stops "
        "pathological pages while staying deterministic on a busy machine",
    )
    timeout_mode: Literal["auto", "signal", "process", "none"] = Field(
        "auto",
        description="auto: SIGALRM on the main thread, else a sandbox process (Ray Data's class UDFs run "
        "on a worker thread; the clean stage's workers always take the sandbox); signal: main thread only; "
        "process: always the sandbox; none: no limit",
    )


class TextNormConfig(StrictModel):
    """How text is simplified before hashing; defaults are datatrove's ``TextNormConfig`` (FineWeb)."""

    lowercase: bool = Field(True, description="compare case-insensitively (datatrove default)")
    remove_punctuation: bool = Field(
        True, description="drop punctuation, symbols and control characters (datatrove default)"
    )
    strip_diacritics: bool = Field(True, description="NFD-decompose and drop combining marks (datatrove)")
    normalize_numbers: bool = Field(True, description="replace every run of digits by 0 (datatrove)")
    collapse_whitespace: bool = Field(
        True, description="any run of whitespace becomes one space, ends trimmed (datatrove)"
    )


class DedupConfig(StrictModel):
    """Settings of the dedup step. The MinHash defaults are FineWeb's (datatrove ``MinhashConfig``)."""

    exact: bool = Field(True, description="drop documents whose normalized text is identical")
    fuzzy: bool = Field(True, description="drop near duplicates found by MinHash LSH")
    ngram_size: int = Field(5, ge=1, description="words per shingle; FineWeb uses 5-grams")
    num_bands: int = Field(14, ge=1, description="LSH bands; FineWeb: 14 buckets")
    rows_per_band: int = Field(
        8,
        ge=1,
        description="hashes per band; FineWeb: 8, so 112 permutations. Candidate probability "
        "1-(1-s^8)^14: 0.92 at Jaccard 0.8, 0.01 at 0.5",
    )
    seed: int = Field(1, ge=0, description="seed of the permutations (datatrove's default is 1)")
    normalization: TextNormConfig = Field(
        default_factory=TextNormConfig, description="text simplification before hashing (datatrove's)"
    )
    num_partitions: int | None = Field(
        None, ge=1, description="hash-shuffle partitions; None = from data size and cluster CPUs"
    )
    partition_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024, description="target bytes per shuffle partition when automatic"
    )
    signature_batch_size: int = Field(
        1024, ge=1, description="documents per map_batches call that computes signatures"
    )
    max_cc_rounds: int = Field(
        64, ge=1, description="safety bound on connected-component rounds (O(log^2 n) expected)"
    )


# -- the steps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepSpec:
    """One clean step: its name (in ``clean.steps``, stats and rejected rows), its settings model
    (``clean.<name>``) and its code as ``"module:attribute"``, imported only when the step is built."""

    name: str
    config: type[StrictModel]
    code: str
    group: str | None = None  # an alias that selects several steps at once ("quality")
    repeated: bool = False  # the section is a list, one step per entry (custom)
    per_document: bool = True  # False: a pass over the whole dataset (dedup), not a document step


# FineWeb's order; extraction is implied for HTML records (see implied_steps)
STEPS: tuple[StepSpec, ...] = (
    StepSpec("url", UrlFilterConfig, "pipelines.clean.filters.url:UrlFilter"),
    StepSpec("extract", ExtractConfig, "pipelines.clean.extract:HtmlExtractor"),
    StepSpec("language", LanguageConfig, "pipelines.clean.filters.language:LanguageFilter"),
    StepSpec(
        "gopher_repetition",
        GopherRepetitionConfig,
        "pipelines.clean.filters.gopher:GopherRepetitionFilter",
        group="quality",
    ),
    StepSpec(
        "gopher_quality",
        GopherQualityConfig,
        "pipelines.clean.filters.gopher:GopherQualityFilter",
        group="quality",
    ),
    StepSpec("c4", C4Config, "pipelines.clean.filters.c4:C4QualityFilter", group="quality"),
    StepSpec(
        "fineweb",
        FineWebQualityConfig,
        "pipelines.clean.filters.fineweb:FineWebQualityFilter",
        group="quality",
    ),
    StepSpec("pii", PIIConfig, "pipelines.clean.filters.pii:PIIMasker"),
    StepSpec("custom", CustomStepConfig, "pipelines.clean.filters.custom:CustomStep", repeated=True),
    StepSpec("dedup", DedupConfig, "pipelines.clean.dedup:deduplicate", per_document=False),
)
STEP_NAMES = [s.name for s in STEPS]
QUALITY_STEPS = [s.name for s in STEPS if s.group == "quality"]
ALIASES = {"quality": QUALITY_STEPS, "all": STEP_NAMES}


def step_spec(name: str) -> StepSpec:
    for spec in STEPS:
        if spec.name == name:
            return spec
    raise ValueError(f"unknown clean step {name!r}; steps are: {', '.join([*STEP_NAMES, *ALIASES])}")


def resolve_steps(names: list[str]) -> list[str]:
    """Expand aliases and check names; the result is always in pipeline order."""
    wanted: set[str] = set()
    for raw in names:
        name = raw.strip()
        if name in ALIASES:
            wanted.update(ALIASES[name])
        else:
            wanted.add(step_spec(name).name)
    return [s for s in STEP_NAMES if s in wanted]


def implied_steps(names: list[str]) -> list[str]:
    """Steps that run although ``names`` does not select them: ``extract``, for HTML records.

    ``extract`` is how an HTML record gets any text at all (``--steps pii`` on a WARC masks PII in the
    extracted text; without extraction every page would be an empty document). Text records (JSONL,
    parquet, WET) pass through the extractor unchanged, so implying it costs them nothing.
    """
    return [] if "extract" in resolve_steps(names) else ["extract"]


def running_steps(names: list[str]) -> list[str]:
    """The steps that really run for ``clean.steps = names``, in pipeline order."""
    wanted = set(resolve_steps(names)) | set(implied_steps(names))
    return [s for s in STEP_NAMES if s in wanted]


def _section(spec: StepSpec) -> tuple[Any, Any]:
    if spec.repeated:
        return list[spec.config], Field(default_factory=list, description="user steps, run in order")
    return spec.config, Field(default_factory=spec.config)


class _CleanRun(StrictModel):
    """What CleanConfig holds besides the step sections: inputs, which steps run, batching, writing."""

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


# ``clean:``: the fields above, how files are read (``clean.read``), and one section per step, named as
# the step is (``clean.url``, ``clean.language``, ... ``clean.custom``, ``clean.dedup``): from ``STEPS``.
CleanConfig = create_model(
    "CleanConfig",
    __base__=_CleanRun,
    __module__=__name__,
    __doc__="Settings of the clean stage (``clean:`` in the run config).",
    read=(ReadConfig, Field(default_factory=ReadConfig)),
    **{spec.name: _section(spec) for spec in STEPS},
)
