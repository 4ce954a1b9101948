"""Rejection sampling and distillation (DeepSeek-R1's last step): the teacher writes reasoning traces,
only the correct, well-formatted ones are kept, and a smaller student learns from them by SFT.

    python -m pipelines.distill --config configs/tiny.yaml
    raychat distill --run-dir runs/tiny --set distill.sampling.samples=8
    raychat distill --run-dir runs/gsm --set distill.teacher=/models/my-rl \\
        --set 'distill.prompts=[{path: ../shared/data/gsm8k/train.jsonl, answer_field: answer}]'

1. **Teacher**: ``distill.teacher``, by default the most trained chat model of the run (``models/rl``
   when a grpo stage makes it, else ``models/sft``), answers every problem of ``distill.prompts``
   (default: the tiny world's RL split, answers only, no held-out entity) ``sampling.samples`` times
   through Ray Data batch generation on the engine actor (pipelines/distill/teacher.py).
2. **Rejection sampling** (pipelines/distill/rejection.py): finished, well formatted and correct by
   the rule rewards, deduplicated, at most ``rejection.per_prompt`` per problem; every rejected reply
   is counted by reason.
3. **Data**: the kept traces plus ``other_share`` of non-reasoning SFT conversations, written as an
   SFT dataset in the OpenAI ``messages`` layout: ``distill_data/train.jsonl`` (what the student
   learns), ``traces.jsonl`` (the kept traces alone), ``rejected.jsonl`` and ``counts.json``.
4. **Student**: fresh weights of ``distill.student``'s size with the teacher's tokenizer, fine-tuned on
   that data by the sft stage's ``train_chat_model`` -> ``models/student``.
5. **Control**: the same student, same init, same settings and number of steps (the same compute),
   on the sft stage's mixture alone -> ``models/student_sft_only``.
6. **Logit distillation** (``distill.logit.enabled``, off by default): the same student, same init,
   data, settings and steps, trained on KL to the teacher's token distributions mixed with the
   cross-entropy (lm/train/logit_distill.py; the teacher runs forward beside it on the same rows)
   -> ``models/student_logit``. Teacher and student must share the tokenizer.
7. **Measure**: teacher, student, control (and the logit-distilled student) on held-out problems
   with the chat evaluation (``teacher_accuracy``, ``student_accuracy``,
   ``student_sft_only_accuracy``, ``student_logit_accuracy``), and which distillation won.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.config import RunConfig
from pipelines.console import number
from pipelines.distill.report import control_stage, logit_stage
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir

log = logging.getLogger("raychat.distill")
STAGE = "distill"
_COUNTED = ("samples", "kept", "problems", "problems_with_a_kept_reply", "keep_rate", "rejected")


def summary_line(n: dict[str, Any]) -> str:
    def f(key: str) -> str:
        return number(n, key, 3)

    logit = f", logit-distilled {f('student_logit_accuracy')}" if "student_logit_accuracy" in n else ""
    return (
        f"kept {n.get('kept', 0):,} of {n.get('samples', 0):,} teacher replies; held-out accuracy: teacher "
        f"{f('teacher_accuracy')}, student {f('student_accuracy')}, same student by SFT alone "
        f"{f('student_sft_only_accuracy')}{logit}"
    )


def _setup(cfg: RunConfig, name: str) -> tuple[RunDir, Any, Path, Path | None]:
    from pipelines.distill.teacher import check_teacher, teacher_dir
    from pipelines.sft.scorecard import world_data_dir

    run = RunDir(Path(cfg.run_dir).resolve())
    d = getattr(cfg, name)
    teacher = teacher_dir(cfg, name)
    check_teacher(teacher)
    data_dir = world_data_dir(run)
    has_world = (data_dir / "counts.json").is_file()
    if d.heldout is None and not (data_dir / "splits" / "arithmetic_test.jsonl").is_file():
        raise ConfigError(
            f"{name}: no held-out problems: the run has no tiny world data ({data_dir}); set "
            f"{name}.heldout (e.g. GSM8K's test file) or run the sft stage on a world"
        )
    return run, d, teacher, data_dir if has_world else None


def preflight(cfg: RunConfig, name: str = STAGE) -> None:
    """The teacher, the prompt files, the rules and the held-out set, before Ray starts (run after
    the stages before it, so models/sft exists by then in ``raychat run``)."""
    from lm.rewards import get_reward
    from pipelines.distill.prompts import source_path

    _, d, teacher, _ = _setup(cfg, name)
    if d.logit.enabled:
        from pipelines.distill.student import check_logit_pair

        check_logit_pair(name, teacher, d.student_init)
    for source in [*d.prompts, *([d.heldout] if d.heldout else [])]:
        path = source_path(source, cfg.run_dir)
        if not path.is_file():
            raise ConfigError(f"{name}: prompt file {path} not found")
    for rule in (d.rejection.correctness, d.rejection.format):
        if rule is not None:
            try:
                get_reward(rule)
            except ValueError as e:
                raise ConfigError(f"{name}.rejection: {e}") from None


def start_over(cfg: RunConfig, name: str = STAGE) -> None:
    """``--force``: new teacher samples, and student and control train from step 0."""
    from pipelines.train.driver import set_aside

    run = RunDir(Path(cfg.run_dir).resolve())
    (run.local("distill_data") / "samples.stamp.json").unlink(missing_ok=True)
    for stage in (name, control_stage(name), logit_stage(name)):
        set_aside(run, stage, "--force")


def report_section(run: RunDir, name: str = STAGE) -> str:
    from pipelines.distill.report import distill_section

    return distill_section(run, name)


def run(cfg: RunConfig, name: str = STAGE) -> dict[str, Any]:
    from pipelines.distill.prompts import heldout_rows, read_problems, source_name
    from pipelines.distill.rejection import TraceFilter
    from pipelines.distill.report import logit_verdict, write_fragment
    from pipelines.distill.student import (
        other_conversations,
        student_source,
        training_settings,
        write_jsonl,
    )
    from pipelines.distill.teacher import sample_teacher
    from pipelines.sft.data import TOO_LONG
    from pipelines.sft.job import build_world_data, load_conversations
    from pipelines.sft.scorecard import evaluate_model, score
    from pipelines.sft.train import ChatModelSource, split_validation, train_chat_model
    from pipelines.sft.world_data import load_heldout
    from pipelines.storage import write_json

    run_dir, d, teacher, data_dir = _setup(cfg, name)
    seed = d.seed if d.seed is not None else cfg.seed
    out = run_dir.local("distill_data")

    # 1-2. the teacher's samples, filtered
    problems, skipped = [], {}
    for source in d.prompts:
        got, bad = read_problems(source, cfg.run_dir)
        problems += got
        skipped[source_name(source)] = bad
    sample_seed = d.sampling.seed if d.sampling.seed is not None else seed
    candidates, reused = sample_teacher(cfg, run_dir, teacher, problems, d, sample_seed)
    heldout = load_heldout(str(data_dir)).mentions if data_dir is not None else None
    chooser = TraceFilter(d.rejection, cfg.sft_data.arithmetic.final_style, heldout)
    selection = chooser.select(candidates)
    counts = selection.counts() | {"rows_skipped": skipped, "samples_reused": reused}
    log.info(
        "distill: kept %d of %d teacher replies (%d of %d problems); rejected %s",
        counts["kept"], counts["samples"], counts["problems_with_a_kept_reply"], counts["problems"],
        {k: v for k, v in counts["rejected"].items() if v},
    )  # fmt: skip
    if not selection.kept:
        # nothing to distill: say so and stop here rather than train a student on nothing
        log.warning(
            "distill: the teacher (%s) got no reply right and well formatted out of %d %s; no student "
            "trained: sample more (distill.sampling.samples), use a stronger teacher or check distill.rejection",
            teacher, counts["samples"], {k: v for k, v in counts["rejected"].items() if v},
        )  # fmt: skip
        write_json(out / "counts.json", counts)
        return {"teacher": str(teacher), **{k: counts[k] for k in _COUNTED}, "student_trained": False}

    # 3. the student's data: kept traces + a share of non-reasoning SFT data
    traces = [c.conversation({"teacher": str(teacher)}) for c in selection.kept]
    n_other = round(len(traces) * d.other_share / (1 - d.other_share))
    others = other_conversations(data_dir, d.other_kinds, n_other, seed)
    write_jsonl(out / "traces.jsonl", traces)
    write_jsonl(out / "train.jsonl", traces + others)
    write_jsonl(out / "rejected.jsonl", [c.conversation({"reason": r}) for c, r in selection.rejected])
    counts |= {"traces": len(traces), "other": len(others), "train_conversations": len(traces) + len(others)}
    write_json(out / "counts.json", counts)

    # 4. the student
    teacher_source = ChatModelSource.resolve(run_dir, cfg.sft, init=str(teacher))
    start = student_source(run_dir, name, d, teacher_source, seed)
    settings = training_settings(d, cfg.sft)
    student_data = _as_conversations(traces + others, seed, out / "train.jsonl")
    train, val = split_validation(student_data, d.val_conversations, seed)
    meta = {"teacher": str(teacher), "distill_data": str(out / "train.jsonl")}
    student = train_chat_model(cfg, name, settings, train, val, d.output_name, start, meta=meta)
    numbers: dict[str, Any] = {
        "teacher": str(teacher),
        "student_params": _params(start),
        "student_init": str(start.model_dir) if d.student_init else "",  # "": fresh weights
        "teacher_params": _params(teacher_source),
        **{k: counts[k] for k in _COUNTED},
        "student_trained": True,
        "other_conversations": len(others),
        "steps": student["steps"],
        "compute_tokens": student["steps"] * d.batch_rows * d.seq_len,
        "student_val_loss": student["val_loss"],
        "student_model": student["model_dir"],
    }

    # 5. the control: the sft stage's mixture, the same init, settings and steps
    control = None
    if d.control:
        mixture, _ = load_conversations(
            cfg, build_world_data(cfg, run_dir, bool(cfg.sft.world_kinds)), cfg.sft.world_kinds
        )
        c_train, c_val = split_validation(mixture, d.val_conversations, seed)
        c_settings = settings.model_copy(
            update={"max_steps": student["steps"], "output_name": d.control_output_name}
        )
        control = train_chat_model(
            cfg, control_stage(name), c_settings, c_train, c_val, d.control_output_name, start,
            meta={"control_of": name}, skips_expected=True,
        )  # fmt: skip
        numbers |= {
            "control_steps": control["steps"],
            "control_model": control["model_dir"],
            "control_left_out_too_long": control["skipped"].get(TOO_LONG, 0),
        }

    # 6. logit distillation: the student's init, data, settings and steps, plus KL to the teacher
    if d.logit.enabled:
        numbers |= _train_logit_student(
            cfg, name, settings, teacher_source, start, student["steps"], train, val
        )

    # 7. held-out accuracy of them all
    condition = d.eval_condition
    rows = None
    if d.heldout is not None:
        held, _ = read_problems(d.heldout, cfg.run_dir)
        rows = {"arithmetic_test": heldout_rows(held)}

    def accuracy(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
        label = Path(model_dir).name + (f"_{name}_heldout" if rows else "")
        result = evaluate_model(cfg, model_dir, [condition], label=label, rows_by_set=rows)
        return score(result, condition), result[condition]

    results = {"teacher": accuracy(teacher), "student": accuracy(student["model_dir"])}
    if control is not None:
        results["student_sft_only"] = accuracy(control["model_dir"])
    if "student_logit_model" in numbers:
        results["student_logit"] = accuracy(numbers["student_logit_model"])
    numbers |= {f"{who}_accuracy": acc for who, (acc, _) in results.items()}
    numbers["n_heldout"] = results["teacher"][1]["n"]
    t, s = numbers["teacher_accuracy"], numbers["student_accuracy"]
    numbers["student_to_teacher"] = round(s / t, 4) if t else None
    if "student_logit_accuracy" in numbers:
        numbers |= logit_verdict(numbers)
    write_fragment(run_dir, name, numbers, counts, {who: r for who, (_, r) in results.items()})
    log.info(
        "distill: held-out accuracy: teacher %.3f, student %.3f, student by SFT alone %s%s (%d problems)",
        t, s, _r(numbers.get("student_sft_only_accuracy")),
        f", logit-distilled student {_r(numbers['student_logit_accuracy'])}" if d.logit.enabled else "",
        numbers["n_heldout"],
    )  # fmt: skip
    return numbers


def _train_logit_student(
    cfg: RunConfig,
    name: str,
    student_settings: Any,
    teacher: Any,
    start: Any,
    steps: int,
    train: list[Any],
    val: list[Any],
) -> dict[str, Any]:
    """The logit-distilled student (``models/<logit.output_name>``) at the sequence-level student's
    compute: its init, conversations, validation split, settings and number of steps."""
    from lm.train.logit_distill import LogitDistillation
    from pipelines.sft.train import train_chat_model

    d = getattr(cfg, name)
    lg = d.logit
    settings = student_settings.model_copy(update={"max_steps": steps, "output_name": lg.output_name})
    loss = LogitDistillation(str(teacher.model_dir), lg.weight, lg.temperature, lg.top_k)
    out = train_chat_model(
        cfg, logit_stage(name), settings, train, val, lg.output_name, start,
        meta={"logit_distilled_from": str(teacher.model_dir), **lg.model_dump(exclude={"enabled"})}, logit=loss,
    )  # fmt: skip
    # the teacher's forward on the same rows comes on top of the student's training step (a forward
    # is a third of forward + backward): the share of extra FLOPs per token
    extra = teacher.model_config.flops_per_token(d.seq_len) / 3
    return {
        "logit_steps": out["steps"],
        "student_logit_model": out["model_dir"],
        "student_logit_val_loss": out["val_loss"],
        "student_logit_val_kl": out.get("val_kl"),
        "logit_settings": lg.model_dump(exclude={"enabled", "output_name"}),
        "logit_teacher_forward_share": round(extra / start.model_config.flops_per_token(d.seq_len), 3),
    }


def _as_conversations(rows: list[dict[str, Any]], seed: int, written_to: Path) -> list[dict[str, Any]]:
    """The written records as the trainer's conversations (checked like any ``messages`` source),
    each from the file they were written to, which the students' raychat.json then records."""
    import random

    from lm.chat_messages import normalize_conversation
    from pipelines.sft.sources import SOURCE_FILE

    convs = [normalize_conversation(r) for r in rows]
    for c in convs:
        c["meta"] = {**(c.get("meta") or {}), SOURCE_FILE: str(written_to)}
    random.Random(f"distill-order:{seed}").shuffle(convs)
    return convs


def _params(source: Any) -> int:
    return int(source.model_config.num_params())


def _r(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
