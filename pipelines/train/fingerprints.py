"""What a training run is trained from, as short hashes by name, so that checkpoints of other inputs
are set aside rather than continued, and the message says which input changed (a re-pretrained base
model is not "the training data changed").

    fingerprint("a", b"b")                 # one short hash of several parts
    model_fingerprint(Path("runs/x/models/base"))
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lm.train.task import TRAINING_DATA, TrainTask

__all__ = ["INITIAL_MODEL", "TRAINING_DATA", "file_stamp", "fingerprint", "model_fingerprint"]

INITIAL_MODEL = "the initial model"


def fingerprint(*parts: str | bytes) -> str:
    """One short hash of several parts (each ended by a NUL, so no two splits of a string collide)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_stamp(path: str | Path) -> str:
    """A file's size and modification time: what tells a rewritten file without reading it."""
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def model_fingerprint(model_dir: Path) -> str:
    """Which weights a run starts from: its config, its raychat.json, a sharded checkpoint's index and
    every weights file's name, size and time (a re-pretrained base rewrites them; hashing gigabytes of
    weights is not needed to tell)."""
    names = ("config.json", "raychat.json", "model.safetensors.index.json")
    parts: list[str | bytes] = [(model_dir / n).read_bytes() for n in names if (model_dir / n).is_file()]
    for weights in sorted(model_dir.glob("*.safetensors")):
        size_time = file_stamp(weights)  # one file: as checkpoints before shards recorded it
        parts.append(size_time if weights.name == "model.safetensors" else f"{weights.name}:{size_time}")
    return fingerprint(*parts)


class NamedInputs:
    """A task trained from several inputs (data, an initial model, a teacher...): it holds their
    ``fingerprints`` by name, their hash is its ``data_fingerprint``, and the names are what a stale
    checkpoint's message says changed. Mixed in before ``TrainTask``."""

    fingerprints: dict[str, str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        mro = cls.__mro__
        if TrainTask in mro and mro.index(TrainTask) < mro.index(NamedInputs):
            # TrainTask's data_fingerprint (None) would win: stale checkpoints would be resumed
            raise TypeError(f"{cls.__name__}: list NamedInputs before TrainTask among its bases")

    def data_fingerprint(self) -> str | None:
        return fingerprint(*self.fingerprints.values()) if self.fingerprints else None

    def fingerprint_parts(self) -> dict[str, str]:
        return dict(self.fingerprints)
