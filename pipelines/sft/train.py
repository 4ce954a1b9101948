"""Fine-tune a chat model on conversations: render, pack, train on Ray Train, export with the chat format.

One function, ``train_chat_model``, serves every stage that fine-tunes on conversations: the SFT stage
itself, the "I don't know" stage's retraining with its refusals added, and the arithmetic layout
ablation. Each call is its own Ray Train run (``stage`` names its checkpoints under
``<run>/checkpoints/<stage>/`` and its curve ``metrics/<stage>.jsonl``), so each resumes on its own.

The exported directory carries the chat format for other tools: ``generation_config.json`` lists
``<|endoftext|>`` and ``<|im_end|>`` as end-of-sequence tokens (a chat reply ends with ``<|im_end|>``),
and the tokenizer files hold the Jinja ``chat_template`` (lm/chat_template.py), so ``transformers``'
``apply_chat_template`` and vLLM's chat endpoint produce our format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm.chat_messages import Conversation
from pipelines.config import RunConfig
from pipelines.errors import ConfigError
from pipelines.run_dir import RunDir
from pipelines.sft.config import SFTConfig

if TYPE_CHECKING:
    from lm.train.logit_distill import LogitDistillation

log = logging.getLogger("raychat.sft")


@dataclass
class ChatModelSource:
    """The model a fine-tune starts from, and the tokenizer that goes with it."""

    model_dir: Path
    tokenizer: Any
    model_config: Any  # lm.model.ModelConfig

    @classmethod
    def resolve(cls, run: RunDir, sft: SFTConfig, init: str | None = None) -> ChatModelSource:
        """The init model (``init``, else ``sft.init``, else ``<run>/models/base``), checked before any
        work: a missing or unreadable directory, or a tokenizer without the chat tokens, is a ConfigError."""
        from lm.chat import ChatFormat
        from lm.checkpoint import CheckpointError, check_model_files, config_from_hf
        from lm.tokenizer import TokenizerError, load_tokenizer

        chosen = init or sft.init
        model_dir = run.model_setting(chosen) if chosen else run.model("base").resolve()
        if not (model_dir / "config.json").is_file():
            hint = "; run the pretrain stage first" if not chosen else ""
            raise ConfigError(f"sft: no model at {model_dir} (config.json missing){hint}")
        try:
            check_model_files(model_dir)  # every small file and weight header, by name
            config = config_from_hf(json.loads((model_dir / "config.json").read_text()))
            tokenizer = load_tokenizer(sft.tokenizer or model_dir)
        except (CheckpointError, TokenizerError) as e:
            raise ConfigError(f"sft: {e}") from None
        try:
            ChatFormat(tokenizer)
        except KeyError as e:
            raise ConfigError(f"sft: the tokenizer has no chat token {e}; use a raychat tokenizer") from None
        if tokenizer.vocab_size > config.vocab_size:
            raise ConfigError(
                f"sft: the tokenizer has {tokenizer.vocab_size:,} ids but the model only {config.vocab_size:,}"
            )
        return cls(model_dir, tokenizer, config)


def split_validation(
    conversations: list[Conversation], n: int, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """(train, validation): ``n`` distinct conversations held out; a conversation the mixture repeats
    (a source with several epochs) goes wholly to one side, so validation never saw training."""
    distinct = list({id(c): c for c in conversations}.values())
    if n <= 0 or len(distinct) < 2:
        return conversations, []
    n = min(n, len(distinct) // 10 or 1)
    held = random.Random(f"sft-val:{seed}").sample(distinct, n)
    ids = {id(c) for c in held}
    return [c for c in conversations if id(c) not in ids], held


def export_chat_model(model: Any, out_dir: Path, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """A chat model directory: the weights, the tokenizer with the chat template, and
    ``generation_config.json`` ending replies at ``<|im_end|>`` (and ``<|endoftext|>``)."""
    from lm.chat_template import IM_END
    from lm.checkpoint import save_pretrained

    eos = [tokenizer.eot_id, tokenizer.token_id(IM_END)]
    return save_pretrained(model, out_dir, tokenizer=tokenizer, meta=meta, eos_token_ids=eos)


def _source_files(conversations: list[Conversation]) -> set[str]:
    """The files the conversations were read from (``meta.source_file``, set by pipelines/sft/sources.py
    and the distill stage)."""
    from pipelines.sft.sources import SOURCE_FILE

    found = (c.get("meta") for c in conversations)
    return {m[SOURCE_FILE] for m in found if isinstance(m, dict) and isinstance(m.get(SOURCE_FILE), str)}


def train_chat_model(
    cfg: RunConfig,
    stage: str,
    sft: SFTConfig,
    train: list[Conversation],
    val: list[Conversation],
    output_name: str,
    source: ChatModelSource,
    meta: dict[str, Any] | None = None,
    logit: LogitDistillation | None = None,
    skips_expected: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``source`` on ``train`` (validation loss on ``val``) and export ``models/<output_name>``.

    ``logit``: also learn a teacher's token distributions on the same tokens (the distill stage's
    logit-distilled student, lm/train/logit_distill.py); a changed teacher or setting retrains.
    ``skips_expected``: conversations that do not fit ``sft.seq_len`` are left out without a warning
    (counted in ``skipped`` all the same).
    Its checkpoints record what it trains from by name (the training and validation data, the initial
    model, a teacher and its settings), so old ones that no longer fit are set aside saying which changed.
    Returns the run's numbers: steps, examples, trained tokens, losses, tokens/s, the model directory.
    """
    from lm.chat import ChatFormat
    from pipelines.evaluation.contamination import TRAINED_ON, trained_on_record
    from pipelines.sft.data import ExampleStream, count_steps, log_skipped, render_examples
    from pipelines.sft.task import SFTTask
    from pipelines.train.curves import read_history
    from pipelines.train.driver import fit, load_trained
    from pipelines.train.fingerprints import INITIAL_MODEL, TRAINING_DATA, model_fingerprint
    from pipelines.train.loop import FitSpec

    run = RunDir(Path(cfg.run_dir).resolve())
    tok = source.tokenizer
    chat = ChatFormat(tok)
    examples = render_examples(train, chat, sft.seq_len)
    val_examples = render_examples(val, chat, sft.seq_len)
    log_skipped(stage, examples, val_examples, skips_expected)
    if not len(examples):
        raise ConfigError(f"{stage}: no trainable conversations ({dict(examples.skipped) or 'none given'})")
    seed = sft.seed if sft.seed is not None else cfg.seed
    conversations, trained_tokens = len(examples), examples.trained_tokens()
    if sft.pretrain_replay > 0:
        from pipelines.sft.replay import replay_examples, replay_windows, with_replay

        count = replay_windows(examples, sft.pretrain_replay, sft.seq_len)
        examples = with_replay(
            examples, replay_examples(run.tokens, tok.vocab_size, count, sft.seq_len, seed)
        )
    data_dir = run.scratch(stage, "tokens")
    examples.save(data_dir / "train.npz")
    val_examples.save(data_dir / "val.npz")

    model_config = source.model_config.model_copy(
        update={"max_seq_len": max(source.model_config.max_seq_len, sft.seq_len)}
    )
    stream = ExampleStream(len(examples), seed)
    steps = sft.max_steps or max(
        1,
        count_steps(examples.lengths, stream, round(sft.epochs * len(examples)), sft.batch_rows, sft.seq_len),
    )
    task = SFTTask(
        init_dir=str(source.model_dir),
        model_config=model_config,
        train_file=str(data_dir / "train.npz"),
        val_file=str(data_dir / "val.npz"),
        seq_len=sft.seq_len,
        batch_rows=sft.batch_rows,
        micro_batch_rows=sft.micro_batch_rows,
        steps=steps,
        seed=seed,
        pad_id=tok.eot_id,
        num_examples=len(examples),
        fingerprints={
            TRAINING_DATA: examples.fingerprint(),
            "the validation data": val_examples.fingerprint(),
            INITIAL_MODEL: model_fingerprint(source.model_dir),
            **(
                {
                    "the teacher model": model_fingerprint(Path(logit.teacher_dir)),
                    "the logit-distillation settings": json.dumps(dataclasses.asdict(logit)),
                }
                if logit is not None
                else {}
            ),
        },
        logit=logit,
    )
    replayed_tokens = examples.trained_tokens() - trained_tokens
    log.info(
        "%s: %s conversations (%s assistant tokens, %d cut to %d tokens, %d skipped), %d validation, "
        "%s replayed pretraining tokens; %d steps of %d rows x %d tokens from %s",
        stage, f"{conversations:,}", f"{trained_tokens:,}", examples.cut, sft.seq_len,
        sum(examples.skipped.values()), len(val_examples), f"{replayed_tokens:,}", steps,
        sft.batch_rows, sft.seq_len, source.model_dir,
    )  # fmt: skip
    result = fit(FitSpec(stage=stage, run_dir=str(run.root), config=sft, task=task), cfg.ray)
    outcome = result.return_value or {}
    with result.checkpoint.as_directory() as d:
        model, ckpt = load_trained(Path(d), task.empty_model())
    out_dir = export_chat_model(
        model,
        run.model(output_name),
        tok,
        {
            "stage": stage,
            "step": ckpt["step"],
            "init": str(source.model_dir),
            "source_run": str(run.root),
            "examples": conversations,
            "replay_windows": len(examples) - conversations,
            "val_loss": ckpt["last"].get("val_loss"),
            TRAINED_ON: trained_on_record(_source_files([*train, *val])),  # raychat eval's warning
            **(meta or {}),
        },
    )
    history, evals = read_history(run.metrics_log(stage))
    first = next((r["loss"] for r in history if r.get("loss") is not None), None)
    return {
        "init": str(source.model_dir),
        "conversations": conversations,
        "replay_windows": len(examples) - conversations,
        "validation_conversations": len(val_examples),
        "skipped": dict(examples.skipped),
        "cut": examples.cut,
        "assistant_tokens": trained_tokens,
        "replayed_tokens": replayed_tokens,
        "steps": ckpt["step"],
        "epochs": ckpt.get("epoch"),
        "first_train_loss": first,
        "final_train_loss": ckpt["last"].get("loss"),
        "val_loss_start": evals[0]["val_loss"] if evals else None,
        "val_loss": ckpt["last"].get("val_loss"),
        **({"val_kl": ckpt["last"].get("val_kl")} if logit is not None else {}),
        "tokens_per_s": outcome.get("tokens_per_s", ckpt.get("tokens_per_s")),
        "model_dir": str(out_dir),
    }
