"""Optional experiment tracking: TensorBoard or Weights & Biases, off by default.

Both libraries are imported only when the config asks for them, and the driver checks they are
installed before any worker starts, so a missing package is one clear line instead of a stack trace
from inside a Ray actor.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Protocol

from pipelines.run_dir import RunDir

INSTALL_HINT = "pip install 'raychat[tracking]' (or the package alone)"
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class TrackingUnavailable(RuntimeError):
    """The configured tracker's package is not installed."""


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NoTracker:
    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, project: str, run: RunDir, name: str, config: dict[str, Any]) -> None:
        import wandb

        # the same run dir always maps to the same W&B run id, so a resumed job continues its curves
        run_id = hashlib.sha1(str(run.root.resolve()).encode()).hexdigest()[:16] + "-" + name
        self.run = wandb.init(
            project=project,
            name=f"{run.root.name}-{name}",
            id=run_id,
            resume="allow",
            config=config,
            dir=str(run.metrics),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def check_tracking_available(kind: str) -> None:
    """Raise ``TrackingUnavailable`` with the install command when ``kind``'s package is missing."""
    if kind == "none":
        return
    if kind not in PACKAGES:
        raise TrackingUnavailable(f"unknown tracking {kind!r}; use none, tensorboard or wandb")
    if importlib.util.find_spec(PACKAGES[kind]) is None:
        raise TrackingUnavailable(
            f"tracking: {kind} is set but the {PACKAGES[kind]} package is not installed; {INSTALL_HINT}"
        )


def make_tracker(kind: str, run: RunDir, stage: str, config: dict[str, Any], project: str) -> Tracker:
    check_tracking_available(kind)
    if kind == "tensorboard":
        return TensorBoardTracker(run.tensorboard(stage))
    if kind == "wandb":
        return WandbTracker(project, run, stage, config)
    return NoTracker()
