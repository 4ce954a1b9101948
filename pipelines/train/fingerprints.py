"""What a training run is trained from, as short hashes by name, so that checkpoints of other inputs
are set aside rather than continued, and the message says which input changed (a re-pretrained base
model is not "the training data changed").

    fingerprint("a", b"b")                 # one short hash of several parts
    model_fingerprint(Path("runs/x/models/base"))
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lm.train.task import TRAINING_DATA

__all__ = ["INITIAL_MODEL", "TRAINING_DATA", "fingerprint", "model_fingerprint"]

INITIAL_MODEL = "the initial model"


def fingerprint(*parts: str | bytes) -> str:
    """One short hash of several parts (each ended by a NUL, so no two splits of a string collide)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def model_fingerprint(model_dir: Path) -> str:
    """Which weights a run starts from: its config, its raychat.json and the weights file's size and
    time (a re-pretrained base rewrites all three; hashing gigabytes of weights would not be needed)."""
    parts = [
        (model_dir / n).read_bytes() for n in ("config.json", "raychat.json") if (model_dir / n).is_file()
    ]
    weights = model_dir / "model.safetensors"
    if weights.is_file():
        st = weights.stat()
        parts.append(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return fingerprint(*parts)


class NamedInputs:
    """A task trained from several inputs (data, an initial model, a teacher...): it holds their
    ``fingerprints`` by name, their hash is its ``data_fingerprint``, and the names are what a stale
    checkpoint's message says changed. Mixed in before ``TrainTask``."""

    fingerprints: dict[str, str]

    def data_fingerprint(self) -> str | None:
        return fingerprint(*self.fingerprints.values()) if self.fingerprints else None

    def fingerprint_parts(self) -> dict[str, str]:
        return dict(self.fingerprints)
