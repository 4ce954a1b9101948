"""The one Ray Train driver: ``fit(spec)`` runs any ``TrainTask`` on a ``TorchTrainer``.

The topology, in one place: one ``TorchTrainer`` with ``config.num_workers`` workers (each
``config.resources_per_worker``, CPU+gloo or GPU+NCCL), every worker running
``loop.train_loop_per_worker`` on its own share of the task's data. Checkpoints go to
``<run>/checkpoints/<stage>/`` (Ray Train's storage), so running the same command again resumes from the
latest one, and ``FailureConfig(max_failures)`` restarts a failed worker group from it by itself.

What needs the whole picture happens here, once, before any worker starts: checkpoints of other data
are set aside (so redoing an earlier stage retrains instead of continuing weights that never saw the
new data), and a checkpoint that cannot continue this run (another model, sequence length, seed) is
one clear ``ConfigError`` - inside the workers it would be retried ``max_failures`` times first.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from lm.train.trainer import Trainer
from pipelines.errors import ConfigError, Interrupted
from pipelines.run_dir import RunDir
from pipelines.runtime import init_ray, interruption, started_here
from pipelines.train.config import TrainingConfig
from pipelines.train.loop import (
    META_FILE,
    FitSpec,
    incompatibilities,
    read_meta,
    run_outcome,
    train_loop_per_worker,
    what_changed,
)

if TYPE_CHECKING:
    from pipelines.config import RayConfig

log = logging.getLogger("raychat.train")
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of its committed checkpoints


def fit(spec: FitSpec, ray_config: RayConfig) -> Any:
    """Train ``spec.task`` to ``task.total_steps`` (resuming if a checkpoint exists); Ray Train's Result.

    Raises ConfigError when the latest checkpoint cannot continue this run, and RuntimeError when
    training ended without a checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train import RunConfig as TrainRunConfig

    cfg = spec.config
    set_aside_stale_checkpoints(spec)
    latest = check_resumable(spec)
    if (finished := finished_run(spec, latest)) is not None:
        return finished
    init_ray(ray_config)
    warn_if_cluster_too_small(spec.stage, cfg)
    trainer = lean_torch_trainer()(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker
        ),
        run_config=TrainRunConfig(
            name=spec.stage,
            storage_path=str(spec.storage.parent),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    try:
        result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):  # SystemExit: Ray Train's own Ctrl-C handler exits
        stop = interruption()
        raise Interrupted(_stopped(spec, str(stop)), stop.exit_code) from None
    if result.checkpoint is None:
        raise RuntimeError(f"{spec.stage}: training ended without a checkpoint under {spec.storage}")
    return result


def lean_torch_trainer() -> type:
    """Ray Train's ``TorchTrainer`` less two helper actors our runs do not use.

    Why: each helper is one more process (Python, Ray, their imports) started and stopped for every
    fit. On a 2-core machine the two cost a third of an empty one-worker fit (10.5 -> 7.0 s,
    measured with Ray 2.60), and the demo runs eleven fits, the tests dozens.
    - ``DatasetsCallback`` starts a ``DatasetManager`` actor for every run, with datasets or none;
      our tasks read their own token files and give Ray Train no datasets.
    - ``PlacementGroupCleanerCallback`` starts a detached actor that frees the workers' placement
      group should the controller die. The embedded local cluster ends with this process, leaving
      nothing to free; on a cluster we joined it stays. The price: a controller killed from outside
      (the kernel's OOM killer) while the command lives on keeps its CPUs reserved, and a later fit
      of the same command waits for them. A worker killed is not that case: the controller itself
      frees the group and restarts it.
    Both are private classes of Ray 2.60 (pinned); should an upgrade move them, the plain
    ``TorchTrainer`` runs (tests/test_train_driver.py says so).
    """
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
    except ImportError:
        return TorchTrainer
    unused: tuple[type, ...] = (DatasetsCallback,)
    if started_here():
        unused += (PlacementGroupCleanerCallback,)

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list[Any]:
            callbacks = super()._create_default_callbacks()
            if self.datasets:  # never from fit(); kept right should a caller pass datasets
                return callbacks
            return [c for c in callbacks if not isinstance(c, unused)]

    return LeanTorchTrainer


@dataclass(frozen=True)
class FinishedRun:
    """What a caller reads of Ray Train's ``Result`` (``checkpoint``, ``return_value``), for a run whose
    latest checkpoint is at its last step already."""

    checkpoint: Any
    return_value: dict[str, Any]


def finished_run(spec: FitSpec, latest: tuple[Path, dict[str, Any]] | None) -> FinishedRun | None:
    """The run's final checkpoint when training already reached ``task.total_steps``, else None.

    ``latest``: what ``check_resumable`` found (the checkpoint a run would resume from, its meta).
    Why: the stage around the training may have stopped after it (in an evaluation, an export), and
    the same command then runs again. Ray Train would start a controller and a worker group (7-15 s
    on a 2-core machine), load the checkpoint and train nothing.
    """
    from ray.train import Checkpoint

    if latest is None or latest[1].get("step") != spec.task.total_steps:
        return None
    path, meta = latest
    log.info(
        "%s: trained to step %d already (%s); Ray Train not started again",
        spec.stage, meta["step"], path, extra={"console": True},
    )  # fmt: skip
    outcome = run_outcome(
        spec.task, meta["step"], meta["position"], meta.get("last") or {},
        meta.get("tokens_per_s"), meta.get("device"), meta.get("world_size"),
    )  # fmt: skip
    return FinishedRun(checkpoint=Checkpoint(str(path)), return_value=outcome)


def _stopped(spec: FitSpec, why: str) -> str:
    """What an interrupted fit says: why, and where the same command will go on from."""
    latest = latest_checkpoint(spec.storage)
    if latest is None:
        return f"{spec.stage}: {why} before its first checkpoint; the same command starts it again"
    try:
        step = read_meta(latest).get("step")
    except (OSError, json.JSONDecodeError):
        step = "?"
    return f"{spec.stage}: {why}; the same command goes on from its checkpoint at step {step} ({latest})"


def latest_checkpoint(storage: Path) -> Path | None:
    """The checkpoint Ray Train resumes from: its snapshot's latest, else the highest step on disk."""
    snapshot = storage / SNAPSHOT_FILE
    try:
        name = json.loads(snapshot.read_text())["latest_checkpoint_result"]["checkpoint_dir_name"]
        if (storage / name / META_FILE).is_file():
            return storage / name
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        pass
    metas = sorted(storage.glob(f"checkpoint_*/{META_FILE}"))
    return metas[-1].parent if metas else None


def check_resumable(spec: FitSpec) -> tuple[Path, dict[str, Any]] | None:
    """ConfigError when the checkpoint a run would resume from was made for another model, sequence
    length or seed: said once, before any worker starts. Returns that checkpoint and its meta, if any."""
    latest = latest_checkpoint(spec.storage)
    if latest is None:
        return None
    try:
        meta = read_meta(latest)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{spec.stage}: cannot read {latest / META_FILE} ({e})") from None
    if damaged := _damaged_state(latest):  # was a traceback from the worker, or from the export
        raise ConfigError(
            f"{spec.stage}: the checkpoint in {latest} is damaged ({damaged}); rerun with --force to set "
            f"the checkpoints in {spec.storage} aside and train from step 0"
        )
    problems = incompatibilities(meta, spec.task)
    step, total = meta.get("step", 0), spec.task.total_steps
    if step > total:  # the model would come out with more steps than asked for, unsaid
        problems.append(f"it is at step {step}, past the {total} steps this run is set to")
    elif step < total and meta.get("total_steps", total) != total:
        log.info(
            "%s: resuming at step %d of a run now set to %d steps (it was %d): the learning-rate "
            "schedule follows the new length from here",
            spec.stage, step, total, meta["total_steps"], extra={"console": True},
        )  # fmt: skip
    if problems:
        raise ConfigError(
            f"{spec.stage}: the checkpoint in {latest} was made with different settings "
            f"({'; '.join(problems)}); use another run_dir, or rerun with --force to set the "
            f"checkpoints in {spec.storage} aside and train from step 0"
        )
    return latest, meta


def _damaged_state(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint's torch files, if anything: each is a zip archive, whose
    directory at its end a cut-short file lacks (read without loading the tensors)."""
    for path in sorted(checkpoint.glob("*.pt")):
        try:
            with zipfile.ZipFile(path):
                pass
        except (OSError, zipfile.BadZipFile) as e:
            return f"{path.name}: {e}"
    return None


def set_aside_stale_checkpoints(spec: FitSpec) -> Path | None:
    """Move away checkpoints of other inputs, so that redoing tokenize (or clean, or the model a
    fine-tune starts from) retrains from scratch, saying which input changed.

    Ray Train resumes from whatever its storage holds; weights trained on the old data would be
    continued on, or exported with, a tokenizer they never saw. They are renamed, not deleted.
    """
    fingerprint = spec.task.data_fingerprint()
    latest = latest_checkpoint(spec.storage)
    if latest is None or fingerprint is None:
        return None
    try:
        meta = read_meta(latest)
    except (OSError, json.JSONDecodeError):
        return None  # check_resumable says what is wrong with it
    seen = meta.get("data_fingerprint")
    if seen is None or seen == fingerprint:
        return None
    return set_aside(spec.run, spec.stage, f"{what_changed(meta, spec.task)} changed since they were written")


def set_aside(run: RunDir, stage: str, why: str) -> Path | None:
    """Rename Ray Train's storage of ``stage`` (checkpoints and its own state) so training starts anew."""
    root = run.checkpoints_of(stage)
    if not root.is_dir():
        return None
    aside = run.checkpoints_aside(stage, f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    root.rename(aside)
    log.warning("%s: %s: moved the checkpoints in %s to %s; training from step 0", stage, why, root, aside)
    return aside


def warn_if_cluster_too_small(stage: str, cfg: TrainingConfig) -> None:
    """Ray Train waits (silently, to a newcomer) for resources the cluster does not have; say so up front.

    A warning on a cluster this process joined (an autoscaler's nodes may be on their way); a
    ConfigError on the embedded local cluster, which never grows: the run would wait forever.
    """
    import ray

    available = ray.cluster_resources()
    for name, amount in cfg.worker_resources().items():
        need, have = amount * cfg.num_workers, available.get(name, 0)
        if need > have and started_here():
            raise ConfigError(
                f"{stage}: {cfg.num_workers} workers x {amount:g} {name} = {need:g}, but this machine's "
                f"local Ray cluster has {have:g}, and it never grows; lower {stage}.num_workers or "
                f"{stage}.resources_per_worker"
            )
        if need > have:
            log.warning(
                "%s: %d workers x %s %s = %s, but the cluster has %s %s now; training waits until "
                "an autoscaler adds them (lower %s.num_workers or resources_per_worker otherwise)",
                stage, cfg.num_workers, amount, name, need, have, name, stage,
            )  # fmt: skip


def load_trained(directory: Path, model: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """``model`` (CPU) with a checkpoint directory's weights loaded, and the checkpoint's meta.json.

    ``model`` is the stage's module with any weights (they are all replaced). A weight that is missing
    from the checkpoint is an error unless it is tied to one that is there (a tied lm_head).
    """
    meta = read_meta(directory)
    state = Trainer.read(directory)["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if untied or unexpected:
        raise RuntimeError(
            f"checkpoint {directory} does not fit the model: missing {untied}, unexpected {unexpected}"
        )
    return model, meta
