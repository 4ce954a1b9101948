"""Was a model trained on the file ``raychat eval`` is asked to score? Scores on training data overstate
a model, so the command warns (one line) rather than print them as if they were held out.

    trained_on_record(["data/train.jsonl"])   # what a stage writes into raychat.json's "trained_on"
    contamination_warning("runs/x/models/rl", "data/train.jsonl")   # a warning line, or None

Each stage that trains a model on files records them in the model's ``raychat.json`` under
``trained_on``: the resolved path, size and SHA-256 of every file its conversations (sft, idk,
distill) or problems (grpo) came from. A model fine-tuned from another (``init``) inherits what that one
was trained on, so the check follows the ``init`` chain. An eval file matches by its resolved path or by
its bytes (a renamed copy); a file that holds only some of the training records, or the same records
reformatted, is not caught: that would take a record-level (n-gram) overlap check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm.checkpoint import META_FILE
from pipelines import storage

TRAINED_ON = "trained_on"  # the key in raychat.json
MAX_INIT_CHAIN = 32  # models fine-tuned from models...: a loop in hand-edited metadata stops here


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def trained_on_record(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """``[{"path", "bytes", "sha256"}]`` of the local files among ``paths`` (a URI, or a file gone since
    it was read, is left out: the record is for the warning, not a condition of training)."""
    out = []
    for p in sorted({str(Path(p).resolve()) for p in paths if not storage.is_uri(str(p))}):
        try:
            out.append({"path": p, "bytes": Path(p).stat().st_size, "sha256": sha256_of(Path(p))})
        except OSError:
            continue
    return out


@dataclass(frozen=True)
class TrainingFile:
    """A file a model (or a model it was fine-tuned from) was trained on."""

    path: str
    size: int
    sha256: str
    model: Path
    stage: str


def training_files(model_dir: str | Path) -> Iterator[TrainingFile]:
    """The recorded training files of ``model_dir`` and of the models on its ``init`` chain."""
    model, seen = Path(model_dir).resolve(), set()
    while model not in seen and len(seen) < MAX_INIT_CHAIN:
        seen.add(model)
        meta = _meta(model)
        for f in meta.get(TRAINED_ON) or []:
            if isinstance(f, dict) and {"path", "bytes", "sha256"} <= f.keys():
                yield TrainingFile(
                    str(f["path"]), int(f["bytes"]), str(f["sha256"]), model, str(meta.get("stage", "?"))
                )
        init = meta.get("init")
        if not isinstance(init, str) or storage.is_uri(init):
            return
        model = Path(init).resolve()


def trained_on(model_dir: str | Path, data: str | Path) -> tuple[TrainingFile, bool] | None:
    """The recorded training file that ``data`` is, and whether its bytes are the same: a file with
    the same bytes (a renamed copy too), else the file at the same path (regenerated, appended to:
    it may still hold the records). Hashed only when its size or path matches a recorded one."""
    path = Path(data).resolve()
    try:
        size = path.stat().st_size
    except OSError:
        return None  # the evaluation says what is wrong with it
    digest, same_path = None, None
    for f in training_files(model_dir):
        if f.size == size or f.path == str(path):
            digest = digest or sha256_of(path)
            if digest == f.sha256:
                return f, True
        if f.path == str(path) and same_path is None:
            same_path = f
    return (same_path, False) if same_path is not None else None


def contamination_warning(model_dir: str | Path, data: str | Path) -> str | None:
    """The warning line for evaluating ``model_dir`` on ``data``, or None when it is not training data."""
    found = trained_on(model_dir, data)
    if found is None:
        return None
    f, same_bytes = found
    if not same_bytes:
        return (
            f"warning: {data} was training data of {f.model} (stage {f.stage}) and has changed since; "
            "if it still holds those records, scores on them overstate the model (contamination)"
        )
    same = "is" if f.path == str(Path(data).resolve()) else f"has the same bytes as {f.path}, which is"
    return (
        f"warning: {data} {same} training data of {f.model} (stage {f.stage}): scores on it overstate "
        "the model (contamination); evaluate on held-out data"
    )


def _meta(model: Path) -> dict[str, Any]:
    """raychat.json, or nothing: a check that cannot read it says nothing rather than stop the eval."""
    try:
        meta = json.loads((model / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}
