"""The run directory: every path a stage reads or writes, its done markers, metrics and summary.

Stages talk only through the run directory (DESIGN.md, "the artifact contract"), so its layout lives
here, in one place; a stage never spells a path under the run by hand. ``RunDir(root)`` takes a local
path or a pyarrow filesystem URI (``s3://bucket/run?region=...``):

* ``path(*parts)`` and the URI-capable locations (``at(name)``, the done markers, the summary) are
  strings that work for both; they are what the clean stage, which can write to object stores, and the
  runner use;
* the ``Path`` properties (``world``, ``clean``, ``tokens``, ``model(name)``, ``checkpoints_of(stage)``,
  ``scratch(stage)``...) are for the stages that need a mounted directory; on a URI they raise a
  ``ConfigError`` saying so, rather than writing to a local folder named ``s3:``.

``metrics/summary.json`` holds each stage's headline numbers under its name. Two stages may finish at
once (a long run beside a short one), so an update loses nothing: each stage's numbers go to their
own file, ``metrics/summary/<stage>.json``, and ``summary.json`` is rebuilt from all of them under a
lock (``fcntl.flock``) on local disk. Object stores have no lock: there ``summary.json`` is rebuilt
the same way but two stages finishing in the same second may leave it without one of them until the
next update; ``read_summary`` merges the per-stage files and is always complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines import storage
from pipelines.errors import ConfigError

# name -> location under the run directory (DESIGN.md's artifact contract, plus the stages' scratch)
LAYOUT = {
    "world": "world",
    "data": "data",
    "clean": "data/clean",
    "rejected": "data/rejected",
    "errors": "data/errors",
    "stats": "data/stats.json",
    "clean_work": "data/_work",  # clean's pass 1, per input file: what a resumed run reuses
    "clean_staging": "data/_staging",  # clean's pass 2 writes here, then swaps into data/
    "tokenizer": "tokenizer",
    "tokens": "tokens",
    "models": "models",
    "checkpoints": "checkpoints",
    "metrics": "metrics",
    "plots": "plots",
    "scratch": "scratch",
    "sft_data": "sft_data",  # the tiny world's post-training data (pipelines/sft/world_data.py)
    "idk_data": "idk_data",  # the idk stage's probes and refusal conversations
    "rm_data": "rm_data",  # a reward-model stage's pairs, per stage: rm_data/<stage>/ (pipelines/rm/data.py)
    "distill_data": "distill_data",  # the teacher's samples, the kept traces, the student's SFT data
    "search": "search",  # a saved search index of the run's search corpus (world/search_index.jsonl)
    "report": "report.md",
    "logs": "logs",  # raychat.log: every log line of the run's commands (the console shows a summary)
}


RUN_DIR_PLACEHOLDER = "{run_dir}"  # in path settings: the run directory


class RunDir:
    """Paths of one run (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.location = str(root)
        self.is_remote = storage.is_uri(self.location)

    def __repr__(self) -> str:
        return f"RunDir({self.location!r})"

    # -- locations as strings: local paths or URIs ------------------------------------------------

    def path(self, *parts: str) -> str:
        """A path under the run directory as a string: a local path, or a URI on the same store."""
        return storage.join(self.location, *parts)

    def at(self, name: str) -> str:
        """The location ``name`` of ``LAYOUT`` as a string (local path or URI)."""
        return self.path(*LAYOUT[name].split("/"))

    def expand(self, setting: str) -> str:
        """A configured path with ``{run_dir}`` replaced by this run's location: how configs point at
        the run's own outputs (``{run_dir}/models/rl``, ``{run_dir}/world/crawl``)."""
        return setting.replace(RUN_DIR_PLACEHOLDER, self.location)

    def model_setting(self, setting: str) -> Path:
        """A model directory setting as the stage graph reads it (pipelines/stages.py):
        ``{run_dir}/...`` and ``models/...`` are under this run, anything else is a path of its own."""
        path = self.expand(setting)
        return (self.root / path if path.startswith("models/") else Path(path)).resolve()

    @property
    def summary(self) -> str:
        return self.path("metrics", "summary.json")

    def summary_part(self, stage: str) -> str:
        return self.path("metrics", "summary", f"{stage}.json")

    def done_marker(self, stage: str) -> str:
        return self.path("metrics", f"{stage}.done.json")

    # -- locations as Paths, for stages that need a mounted run directory ----------------------------

    @property
    def root(self) -> Path:
        if self.is_remote:
            raise ConfigError(
                f"run_dir {self.location} is a URI: this stage needs a mounted (local or network-mounted) "
                "run directory; only the clean stage writes to object stores"
            )
        return Path(self.location)

    def local(self, name: str) -> Path:
        return self.root / LAYOUT[name]

    world = property(lambda self: self.local("world"))
    clean = property(lambda self: self.local("clean"))
    rejected = property(lambda self: self.local("rejected"))
    errors = property(lambda self: self.local("errors"))
    stats = property(lambda self: self.local("stats"))
    tokenizer = property(lambda self: self.local("tokenizer"))
    tokens = property(lambda self: self.local("tokens"))
    checkpoints = property(lambda self: self.local("checkpoints"))
    metrics = property(lambda self: self.local("metrics"))
    plots = property(lambda self: self.local("plots"))
    report = property(lambda self: self.local("report"))

    def model(self, name: str) -> Path:
        """``models/<name>``: a finished model in the Hugging Face layout."""
        return self.local("models") / name

    def checkpoints_of(self, stage: str) -> Path:
        """``checkpoints/<stage>``: Ray Train's storage of one stage (resumable training state)."""
        return self.checkpoints / stage

    def checkpoints_aside(self, stage: str, stamp: str) -> Path:
        """``checkpoints/<stage>.stale-<stamp>``: checkpoints set aside so that training starts anew."""
        return self.checkpoints / f"{stage}.stale-{stamp}"

    def fault_marker(self, stage: str, step: int) -> Path:
        """Where a test's injected fault leaves its mark, so that the restarted worker does not fail again."""
        return self.checkpoints / f"{stage}.fault_injected_at_step_{step}"

    def scratch(self, stage: str, *parts: str) -> Path:
        """``scratch/<stage>/...``: a stage's intermediate files (kept for a resume, or until it ends);
        on the run's own filesystem, so what is built there can be renamed into place."""
        return self.local("scratch").joinpath(stage, *parts)

    def metrics_log(self, stage: str) -> Path:
        """``metrics/<stage>.jsonl``: one JSON object per line (training steps, evaluations...)."""
        return self.metrics / f"{stage}.jsonl"

    def tensorboard(self, stage: str) -> Path:
        """``metrics/tensorboard/<stage>``: TensorBoard's event files of a training stage."""
        return self.metrics / "tensorboard" / stage

    def status_file(self, stage: str) -> Path:
        """``metrics/<stage>.status``: the newest progress line of a stage's workers (pipelines/console.py)."""
        return self.metrics / f"{stage}.status"

    @property
    def log_file(self) -> Path:
        """``logs/raychat.log``: every log line of the commands run on this run directory."""
        return self.local("logs") / "raychat.log"

    def fragment(self, stage: str, part: str) -> Path:
        """``metrics/<stage>.<part>.md``: markdown a stage's report section includes (e.g. samples)."""
        return self.metrics / f"{stage}.{part}.md"

    @property
    def search_index(self) -> Path:
        """``search/``: the search index built from the tiny world's ``world/search_index.jsonl``."""
        return self.local("search")

    def plot(self, stage: str, name: str) -> tuple[str, str]:
        """``plots/<stage>_<name>.png``: (its location, local or URI; the link report.md gives it)."""
        relative = f"{LAYOUT['plots']}/{stage}_{name}.png"
        return self.path(*relative.split("/")), relative


# -- done markers ------------------------------------------------------------------------------------


def mark_done(run: RunDir, stage: str, info: dict[str, Any] | None = None) -> None:
    storage.write_json(run.done_marker(stage), {"stage": stage, "finished_at": time.time(), **(info or {})})


def is_done(run: RunDir, stage: str) -> bool:
    return storage.exists(run.done_marker(stage))


def clear_done(run: RunDir, stage: str) -> None:
    storage.remove(run.done_marker(stage))


# -- metrics/summary.json ------------------------------------------------------------------------------


@contextlib.contextmanager
def _summary_lock(run: RunDir) -> Iterator[None]:
    if run.is_remote:  # object stores have no lock; see the module docstring
        yield
        return
    import fcntl

    run.metrics.mkdir(parents=True, exist_ok=True)
    with open(run.metrics / ".summary.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_summary(run: RunDir) -> dict[str, Any]:
    """Every stage's headline numbers: ``summary.json`` with each stage's own file laid over it."""
    merged: dict[str, Any] = storage.read_json(run.summary, {}) or {}
    for path in storage.list_files(run.path("metrics", "summary"), ".json"):
        name = path.split("?", 1)[0].rsplit("/", 1)[-1][: -len(".json")]
        try:
            merged[name] = storage.read_json(path)
        except json.JSONDecodeError:  # another process is writing it on a store without renames
            continue
    return merged


def update_summary(run: RunDir, stage: str, numbers: dict[str, Any]) -> None:
    """Put a stage's headline numbers under its own name in metrics/summary.json (see the module)."""
    storage.write_json(run.summary_part(stage), numbers)
    with _summary_lock(run):
        storage.write_json(run.summary, read_summary(run))


class MetricsWriter:
    """Appends one JSON object per line to metrics/<stage>.jsonl."""

    def __init__(self, run: RunDir, stage: str) -> None:
        run.metrics.mkdir(parents=True, exist_ok=True)
        self.path = run.metrics_log(stage)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")
