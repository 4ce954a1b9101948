"""The student: its fresh weights (its own size, the teacher's tokenizer), its training settings, and
the data it and its control learn from.

Student and control start from the same weights (``scratch/<stage>/student_init``, written once and
reused while its size and seed are unchanged, so a rerun resumes their checkpoints) and train with
the same settings for the same number of steps of the same packed rows: the same compute. Only the
data differs: the student's is the kept traces plus ``other_share`` of non-reasoning SFT data, the
control's the sft stage's own mixture (the cold-start data).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lm import atomic
from pipelines.distill.config import DistillConfig
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir
from pipelines.sft.config import SFTConfig
from pipelines.sft.train import ChatModelSource
from pipelines.train.config import TrainingConfig


def training_settings(d: DistillConfig, sft: SFTConfig) -> SFTConfig:
    """The sft stage's settings model filled from ``distill:``, for ``train_chat_model``."""
    shared = {k: getattr(d, k) for k in TrainingConfig.model_fields}
    return SFTConfig(
        **shared,
        seq_len=d.seq_len,
        batch_rows=d.batch_rows,
        micro_batch_rows=d.micro_batch_rows,
        epochs=d.epochs,
        max_steps=d.max_steps,
        val_conversations=d.val_conversations,
        output_name=d.output_name,
        world_kinds=[],
        eval=sft.eval,
        ablation={"enabled": False},
    )


def student_source(
    run: RunDir, name: str, d: DistillConfig, teacher: ChatModelSource, seed: int
) -> ChatModelSource:
    """Where student and control start: ``distill.student_init``, or fresh weights of
    ``distill.student``'s size with the teacher's tokenizer."""
    settings = SFTConfig()
    if d.student_init:
        source = ChatModelSource.resolve(run, settings, init=d.student_init)
        if source.tokenizer.vocab_size != teacher.tokenizer.vocab_size:
            raise ConfigError(
                f"distill: student_init {d.student_init} has another tokenizer ({source.tokenizer.vocab_size} "
                f"ids, the teacher {teacher.tokenizer.vocab_size}); distillation needs the teacher's"
            )
        return source
    try:
        # as long a context as the teacher's (RoPE positions cost nothing): the student is asked the same
        config = d.student.build(
            teacher.model_config.vocab_size, max(d.seq_len, teacher.model_config.max_seq_len)
        )
    except ValueError as e:
        raise ConfigError(f"{name}.student: {e}") from None
    out = run.scratch(name, "student_init")
    wanted = {
        "stage": name,
        "init": "fresh",
        "seed": seed,
        "config": config.model_dump(mode="json"),
        "tokenizer": _tokenizer_fingerprint(teacher.tokenizer),  # a re-trained tokenizer of the same size
    }
    meta = out / "raychat.json"
    if not (meta.is_file() and {k: json.loads(meta.read_text()).get(k) for k in wanted} == wanted):
        from lm.train.models import fresh_model
        from pipelines.sft.train import export_chat_model

        export_chat_model(fresh_model(config, seed), out, teacher.tokenizer, wanted)
    return ChatModelSource.resolve(run, settings, init=str(out))


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    """The merges, split pattern and special tokens as one short hash: a tokenizer trained again on
    other text has the same vocabulary size but other ids for the same text."""
    from pipelines.train.fingerprints import fingerprint

    merges = sorted(tokenizer.mergeable_ranks.items(), key=lambda item: item[1])
    specials = json.dumps(tokenizer.special_tokens, sort_keys=True)
    return fingerprint(tokenizer.pat_str, specials, *(token for token, _ in merges))


def other_conversations(data_dir: Path | None, kinds: list[str], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` non-reasoning conversations of the world's ``kinds`` (a seeded sample, none repeated
    unless there are fewer than ``n``)."""
    from pipelines.sft.sources import MixtureConfig, SourceError, build_mixture
    from pipelines.sft.world_data import mixture_sources

    if n <= 0 or data_dir is None or not kinds:
        return []
    try:
        pool = build_mixture(MixtureConfig(sources=mixture_sources(str(data_dir), tuple(kinds)), seed=seed))
    except SourceError as e:
        raise ConfigError(f"distill: {e}") from None
    convs = pool.conversations
    if not convs:
        return []
    rng = random.Random(f"distill-other:{seed}")
    picks = rng.sample(convs, n) if n <= len(convs) else [rng.choice(convs) for _ in range(n)]
    return picks


def write_jsonl(path: Path, conversations: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(c, ensure_ascii=False, sort_keys=True) + "\n" for c in conversations)
    return atomic.write_text(path, text)


def check_logit_pair(name: str, teacher: Path, student_init: str | None) -> None:
    """ConfigError unless teacher and student score the same vocabulary with the same tokenizer: logit
    distillation compares their distributions id by id. A fresh student takes the teacher's tokenizer
    and output size; a ``student_init`` model must have them already."""
    from lm.checkpoint import CheckpointError, config_from_hf
    from lm.tokenizer import TokenizerError, load_tokenizer

    if not student_init:
        return
    student = Path(student_init).resolve()
    try:
        toks = [load_tokenizer(path) for path in (teacher, student)]
        sizes = [
            config_from_hf(json.loads((p / "config.json").read_text())).vocab_size for p in (teacher, student)
        ]
    except (TokenizerError, CheckpointError, OSError, ValueError) as e:
        raise ConfigError(
            f"{name}.logit: cannot compare the teacher's and the student's tokenizers: {e}"
        ) from None
    differ = tokenizer_differences(*toks)
    if differ:
        raise ConfigError(
            f"{name}.logit: logit distillation needs teacher and student to share a tokenizer, but "
            f"{teacher} and {student} differ ({'; '.join(differ)}); turn distill.logit off (sequence-level "
            "distillation works across tokenizers) or start the student from a model with the teacher's"
        )
    if sizes[0] != sizes[1]:
        raise ConfigError(
            f"{name}.logit: the teacher scores {sizes[0]:,} ids and the student {sizes[1]:,}: logit "
            "distillation needs the same output size"
        )


def tokenizer_differences(a: Any, b: Any) -> list[str]:
    """How two tokenizers differ, in words (empty: the same ids mean the same tokens)."""
    out = []
    if a.vocab_size != b.vocab_size:
        out.append(f"{a.vocab_size:,} ids against {b.vocab_size:,}")
    if a.mergeable_ranks != b.mergeable_ranks:
        ra, rb = a.mergeable_ranks, b.mergeable_ranks
        out.append(f"{sum(1 for t, r in ra.items() if rb.get(t) != r):,} tokens with another id or none")
    if a.special_tokens != b.special_tokens:
        out.append("other special tokens")
    if a.pat_str != b.pat_str:
        out.append("another split pattern")
    return out
