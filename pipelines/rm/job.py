"""The reward model on Ray Train: preference pairs become ``<run>/models/rm``.

    python -m pipelines.rm --config configs/tiny.yaml
    raychat rm --run-dir runs/tiny --set rm.max_steps=100
    raychat rm --config configs/tiny.yaml --set 'rm.sources=[{path: ../shared/data/preference/hh-rlhf_harmless-base_test_part1.jsonl.gz, name: hh-rlhf}]'
    ray job submit --working-dir . -- python -m pipelines.rm --config configs/gpu-124m.yaml

It starts from ``rm.init`` - by default the run's SFT model (the sft stage's ``models/sft``; in a run
without an sft stage the base model: pipelines/stages.py's ``rm_default_init``, which also draws the
stage graph's edge) - and puts a one-output head (``score``) on the last token of the decoder's body; an
init that is already a reward model is trained further. Pairs come from the tiny world (when the run
has ``world/``; pipelines/rm/world_pairs.py) and from preference files (``rm.sources``: HH-RLHF
transcripts, LLaMA-Factory's ShareGPT pairs, TRL-style pairs; pipelines/rm/preferences.py); each is
rendered with the chat format the policy generates in. Training is the shared driver's (one
``TorchTrainer``, checkpoints under ``<run>/checkpoints/rm/`` that the same command resumes from,
``FailureConfig``); the task is pipelines/rm/task.py; the tokenized pairs are written to
``<run>/rm_data/<stage>/``. At the end: the export (``LlamaForSequenceClassification``:
``transformers.AutoModelForSequenceClassification`` loads it), the held-out accuracies in
``metrics/summary.json`` under the stage's name, and its report section (``report_section``).
Every function takes the stage's ``name``, so another instance (``stages: {rm_big: {kind: rm}}``)
has its own settings, data, checkpoints and numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm import atomic
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir
from pipelines.shorthands import TRAINING
from pipelines.stages import rm_default_init
from pipelines.train.fingerprints import INITIAL_MODEL, TRAINING_DATA, model_fingerprint
from pipelines.train.tracking import TrackingUnavailable, check_tracking_available

if TYPE_CHECKING:
    from pipelines.config import RunConfig
    from pipelines.rm.task import RMTask

log = logging.getLogger("raychat.rm")
STAGE = (
    "rm"  # the default name; ``name`` is also Ray Train's run name: checkpoints in <run>/checkpoints/<name>
)


def summary_line(n: dict[str, Any]) -> str:
    acc = n.get("heldout_pairwise_accuracy")
    shown = f"{acc:.3f}" if isinstance(acc, float) else "-"
    return (
        f"reward model on {n.get('train_pairs', 0):,} preference pairs: held-out pairwise accuracy {shown} "
        f"({n.get('heldout_pairs', 0):,} pairs; chance 0.5)"
    )


def init_dir(cfg: RunConfig, name: str = STAGE) -> Path:
    """``<name>.init`` (``{run_dir}/...`` and ``models/...`` are under the run, as the stage graph reads
    them), or by default the model of ``rm_default_init``: the sft stage's, else the pretrain stage's."""
    settings = getattr(cfg, name)
    run = RunDir(Path(cfg.run_dir).resolve())
    if settings.init:
        return run.model_setting(settings.init)
    return run.model(getattr(cfg, rm_default_init(cfg)).output_name)


def data_dir(run: RunDir, name: str = STAGE) -> Path:
    """``rm_data/<name>/``: the stage's tokenized pairs, ``index.json`` and the world's pairs as JSONL."""
    return run.local("rm_data") / name


def preflight(cfg: RunConfig, name: str = STAGE) -> None:
    """Before Ray starts: the init model and every source's files exist, tracking is installed."""
    from pipelines.records import require_source_files

    settings = getattr(cfg, name)
    init = init_dir(cfg, name)
    if not (init / "config.json").is_file():
        default = rm_default_init(cfg)
        hint = (
            f"check {name}.init"
            if settings.init
            else f"run the {default} stage first, or set {name}.init (e.g. {{run_dir}}/models/base)"
        )
        raise ConfigError(f"{name}: no model to start from at {init} ({hint})")
    require_source_files(f"{name}.sources", settings.sources)
    world = RunDir(Path(cfg.run_dir)).world / "facts.json"
    if not settings.sources and not (settings.world.enabled and world.is_file()):
        raise ConfigError(
            f"{name}: no preference pairs: give {name}.sources (preference files), or run the world stage "
            "for the tiny world's pairs"
        )
    try:
        check_tracking_available(settings.tracking)
    except TrackingUnavailable as e:
        raise ConfigError(f"{name}: {e}") from None


def load_sources(cfg: RunConfig, name: str, run: RunDir, chat: Any, seq_len: int) -> tuple[list[Any], Any]:
    """Every source's training and held-out pairs (the world's first) and the world's pairs (None
    without a world); ConfigError for a bad source."""
    from pipelines.rm.data import SourcePairs, hold_out
    from pipelines.rm.preferences import load_preferences
    from pipelines.rm.world_pairs import build_world_pairs
    from pipelines.sft.sources import SourceError
    from pipelines.sft.world_splits import WorldDataError, load_world

    settings = getattr(cfg, name)
    seed = settings.seed if settings.seed is not None else cfg.seed
    out, world = [], None
    if settings.world.enabled and (run.world / "facts.json").is_file():
        try:
            world = build_world_pairs(
                load_world(str(run.world)),
                cfg.sft_data,  # its settings fix which entities are held out, as in the SFT data
                settings.world,
                seed,
                fits=lambda p: p.fits(chat, seq_len),
            )
        except WorldDataError as e:
            raise ConfigError(f"{name}: {e}") from None
        out.append(
            SourcePairs("world", world.train, world.heldout, settings.world, {"dropped": dict(world.dropped)})
        )
    for src in settings.sources:
        try:
            pairs, report = load_preferences(src, settings.max_bad_fraction)
        except SourceError as e:
            raise ConfigError(f"{name}: {e}") from None
        train, held, unused = hold_out(pairs, src.heldout_fraction, src.max_heldout, src.label)
        info = {
            k: v
            for k, v in report.as_dict().items()
            if k in ("files", "formats", "records", "skipped", "first_problems")
        }
        info["pairs_read"] = len(pairs)
        info["heldout_unused"] = unused
        out.append(SourcePairs(src.label, train, held, src, info))
    names = [s.name for s in out]
    if len(set(names)) < len(names):
        raise ConfigError(f"{name}.sources: two sources are called the same ({names}); give each a name")
    return out, world


def _write_world_pairs(directory: Path, world: Any) -> None:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    for split, pairs in (("train", world.train), ("heldout", world.heldout)):
        lines = "".join(json.dumps(p.record(), ensure_ascii=False) + "\n" for p in pairs)
        (directory / f"{split}.jsonl").write_text(lines)


def prepare(cfg: RunConfig, name: str = STAGE) -> tuple[RMTask, Any, dict[str, Any]]:
    """Everything the workers need, resolved, built and checked before any of them starts: the task,
    the tokenizer, and rm_data/<name>/index.json. Config and data problems raise ConfigError."""
    from lm.chat import ChatFormat
    from lm.checkpoint import CheckpointError, config_from_hf
    from lm.files import read_json_object
    from lm.tokenizer import TokenizerError, load_tokenizer
    from pipelines.rm.data import write_pair_data
    from pipelines.rm.task import RMTask

    settings = getattr(cfg, name)
    run = RunDir(Path(cfg.run_dir).resolve())  # Ray workers change directory: hand them absolute paths
    init = init_dir(cfg, name)
    try:
        hf = read_json_object(init / "config.json", CheckpointError)
        model_config = config_from_hf(hf, str(init / "config.json"))
        tokenizer = load_tokenizer(init)
    except (CheckpointError, TokenizerError, FileNotFoundError) as e:
        raise ConfigError(f"{name}: cannot start from {init}: {e}") from None
    is_rm = any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or [])
    seq_len = settings.seq_len or model_config.max_seq_len
    if seq_len > model_config.max_seq_len:  # RoPE has no position table: the longer context is trained here
        log.info(
            "%s: seq_len %d extends the context of %s (%d)", name, seq_len, init, model_config.max_seq_len
        )
        model_config = model_config.model_copy(update={"max_seq_len": seq_len})
    chat = ChatFormat(tokenizer)
    seed = settings.seed if settings.seed is not None else cfg.seed
    sources, world = load_sources(cfg, name, run, chat, seq_len)
    out = data_dir(run, name)
    with atomic.staged_dir(out) as staging:  # a failed build leaves the last complete data in place
        if world is not None:
            _write_world_pairs(staging / "world", world)
        try:
            index = write_pair_data(staging, sources, chat, settings, seq_len, seed)
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
        if not index["heldout"]["pairs"]:
            raise ConfigError(
                f"{name}: no held-out pairs to measure the model on; keep the tiny world's pairs or set a "
                "source's heldout_fraction above 0"
            )
    task = RMTask(
        rm=settings,
        model_config=model_config,
        init_dir=str(init),
        init_is_reward_model=is_rm,
        data_dir=str(out),
        groups=index["groups"],
        mixture_pairs=index["train"]["mixture"],
        seq_len=seq_len,
        pad_id=chat.special_ids.get("<|pad|>", tokenizer.eot_id),
        seed=seed,
        # the weights it starts from too: redoing sft retrains the rm
        fingerprints={TRAINING_DATA: index["fingerprint"], INITIAL_MODEL: model_fingerprint(init)},
    )
    return task, tokenizer, index


def start_over(cfg: RunConfig, name: str = STAGE) -> None:
    """``--force``: the next run trains from step 0 (the old checkpoints are set aside, not deleted)."""
    from pipelines.train.driver import set_aside

    set_aside(RunDir(Path(cfg.run_dir).resolve()), name, "--force")


def report_section(run: RunDir, name: str = STAGE) -> str:
    from pipelines.rm.report import rm_report_section

    return rm_report_section(run, name)


def run(cfg: RunConfig, name: str = STAGE) -> dict[str, Any]:
    from lm.checkpoint import save_pretrained
    from pipelines.rm.report import write_fragment
    from pipelines.train.driver import fit, load_trained
    from pipelines.train.loop import FitSpec

    settings = getattr(cfg, name)
    task, tokenizer, index = prepare(cfg, name)
    run_dir = RunDir(Path(cfg.run_dir).resolve())
    c = task.model_config
    log.info(
        "%s: from %s (%s), %d training pairs (mixture %d), %d held out, %d steps of %d pairs, seq_len %d, %d %s worker(s)",
        name, task.init_dir, "a reward model" if task.init_is_reward_model else f"{c.num_layers} layers x {c.hidden_size}",
        index["train"]["pairs"], index["train"]["mixture"], index["heldout"]["pairs"], task.total_steps,
        settings.batch_pairs, task.seq_len, settings.num_workers, "GPU" if settings.use_gpu else "CPU",
    )  # fmt: skip
    result = fit(FitSpec(stage=name, run_dir=str(run_dir.root), config=settings, task=task), cfg.ray)
    outcome = result.return_value or {}
    with result.checkpoint.as_directory() as d:
        model, meta = load_trained(Path(d), task.empty_model())
    last = meta["last"]
    out_dir = save_pretrained(
        model,
        run_dir.model(settings.output_name),
        tokenizer=tokenizer,
        meta={
            "stage": name,
            "step": meta["step"],
            "pairs_seen": meta["pairs_seen"],
            "source_run": str(run_dir.root),
            "init": task.init_dir,
            "seq_len": task.seq_len,
            "heldout_pairwise_accuracy": last.get("heldout_accuracy"),
        },
    )
    by_group = {g: last.get(f"heldout_accuracy/{g}") for g in task.groups}
    numbers = {
        "heldout_pairwise_accuracy": last.get("heldout_accuracy"),
        "heldout_margin": last.get("heldout_margin"),
        "heldout_loss": last.get("val_loss"),
        "heldout_pairs": index["heldout"]["pairs"],
        "accuracy_by_group": by_group,
        "heldout_pairs_by_group": index["heldout"]["by_group"],
        "train_pairs_by_group": index["train"]["by_group"],
        "train_pairs": index["train"]["pairs"],
        "mixture_pairs": index["train"]["mixture"],
        "steps": meta["step"],
        "epochs": meta["pairs_seen"] / max(1, index["train"]["mixture"]),
        "final_train_loss": last.get("loss"),
        "params": model.num_params(),
        "init": task.init_dir,
        "seq_len": task.seq_len,
        "tokens_per_s": outcome.get("tokens_per_s", meta.get("tokens_per_s")),
        "world_size": outcome.get("world_size", settings.num_workers),
        "device": outcome.get("device"),
        "model_dir": str(out_dir),
        "checkpoint": str(result.checkpoint.path),
    }
    write_fragment(run_dir, name, numbers, index)
    log.info(
        "%s: done: step %d, held-out pairwise accuracy %.3f over %d pairs (%s) -> %s",
        name, numbers["steps"], numbers["heldout_pairwise_accuracy"], numbers["heldout_pairs"],
        ", ".join(f"{g} {a:.2f}" for g, a in by_group.items() if a is not None), out_dir,
    )  # fmt: skip
    return numbers


SHORTHANDS = TRAINING  # --init, --max-steps, --epochs, --num-workers, --gpu (pipelines/shorthands.py)
