"""The teacher and its replies: which model teaches, and its ``n`` samples per problem, generated
through Ray Data batch generation on one engine actor (pipelines/chat_eval.py's ``ChatSession``:
pipelines/batch_generate.py over actors/engine_actor.py, with the calculator and search tools).

The samples are kept under ``distill_data/samples.jsonl`` with a stamp (the teacher's raychat.json,
the problems, the sampling settings, the prompt format): a rerun with the same stamp reads them
instead of generating again, so a stage cut short in training does not sample anew.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from lm import atomic
from lm.files import read_jsonl
from pipelines.distill.config import DistillConfig
from pipelines.distill.prompts import Problem, messages
from pipelines.distill.rejection import Candidate
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir
from pipelines.storage import read_json

log = logging.getLogger("raychat.distill")


def teacher_dir(cfg: Any, name: str) -> Path:
    """``distill.teacher``, else the most trained chat model the run has: the grpo stage's model
    (``grpo.output_name``, models/rl by default) when it is there, else the sft stage's model. (The
    graph runs distill after that grpo stage, so in a whole run the RL model is there by then; run
    alone before grpo, distill learns from the SFT model.)"""
    run = RunDir(Path(cfg.run_dir).resolve())
    chosen = getattr(cfg, name).teacher
    if chosen:
        return run.model_setting(chosen)
    rl = run.model(cfg.grpo.output_name)
    if (rl / "config.json").is_file():
        return rl
    return run.model(cfg.sft.output_name)


def check_teacher(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"distill: no teacher model at {path} (config.json missing); run the stage that makes it "
            "(sft or grpo) or set distill.teacher"
        )


def _stamp(
    teacher: Path, problems: list[Problem], d: DistillConfig, tools_note: str | None, seed: int
) -> str:
    """What the drawn samples depend on: the teacher's files (a model imported without raychat.json
    too), the problems, the sampling settings and the seed they were drawn with."""
    from pipelines.train.fingerprints import model_fingerprint

    h = hashlib.sha256()
    h.update(model_fingerprint(teacher).encode())
    h.update(str(seed).encode())
    h.update(json.dumps([p.__dict__ for p in problems], sort_keys=True).encode())
    h.update(json.dumps([d.sampling.model_dump(mode="json"), tools_note], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _candidate(row: dict[str, Any]) -> Candidate:
    return Candidate(
        problem=Problem(**row["problem"]),
        messages=row["messages"],
        reply=row["reply"],
        finish_reason=row["finish_reason"],
        sample_index=row["sample_index"],
        error=row.get("error"),
    )


def sample_teacher(
    cfg: Any, run: RunDir, teacher: Path, problems: list[Problem], d: DistillConfig, seed: int
) -> tuple[list[Candidate], bool]:
    """(every reply, problem-major in sample order; whether they were read back from a former run)."""
    from lm.engine import SamplingParams
    from pipelines.chat_eval import ChatSession

    s = d.sampling
    note = cfg.sft_data.tools_note if s.tools else None
    out = run.local("distill_data")
    stamp = _stamp(teacher, problems, d, note, seed)
    saved = read_json(out / "samples.stamp.json") or {}
    if saved.get("stamp") == stamp and (out / "samples.jsonl").is_file():
        rows = read_jsonl(out / "samples.jsonl")
        log.info("distill: %d teacher samples already drawn (%s), reusing them", len(rows), out)
        return [_candidate(row) for row in rows], True

    asked = [messages(p, note) for p in problems]
    corpus = run.world / "search_index.jsonl" if s.tools else None
    params = SamplingParams(
        temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens, n=s.samples, seed=seed
    )
    log.info(
        "distill: %s answers %d problems x %d samples (temperature %g, up to %d tokens, tools %s)",
        teacher, len(problems), s.samples, s.temperature, s.max_new_tokens, "on" if s.tools else "off",
    )  # fmt: skip
    with ChatSession(teacher, cfg.sft.eval, search_corpus=corpus, search=cfg.sft_data) as session:
        prompts = [session.prompt_ids(m, room=min(s.max_new_tokens, session.max_seq_len // 2)) for m in asked]
        samples = session.generate(prompts, params, tools=s.tools)
        candidates = [
            Candidate(p, m, session.reply(x), x["finish_reason"], x["sample_index"], x["error"])
            for p, m, xs in zip(problems, asked, samples, strict=True)
            for x in xs
        ]
    rows = [
        {
            "problem": c.problem.__dict__,
            "messages": c.messages,
            "reply": c.reply,
            "finish_reason": c.finish_reason,
            "sample_index": c.sample_index,
            "error": c.error,
        }
        for c in candidates
    ]
    atomic.write_text(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic.write_json(
        out / "samples.stamp.json", {"stamp": stamp, "teacher": str(teacher), "samples": len(rows)}
    )
    return candidates, False
