"""Logit distillation: the loss (KL to the teacher on trained positions only, temperature, top-k with a
rest bucket, 0 when student == teacher), the SFT task training against a teacher in the one trainer,
and the distill stage refusing teacher/student pairs whose tokenizers differ. The stage end to end with
``distill.logit.enabled`` is in tests/test_distill.py's slow test."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from lm.model import ModelConfig
from lm.scoring import kl_divergence, top_k_kl_divergence
from lm.train.config import StepConfig
from lm.train.logit_distill import LogitDistillation, logit_distillation_loss
from lm.train.losses import IGNORE_INDEX, next_token_loss, target_index
from lm.train.models import fresh_model
from lm.train.trainer import Trainer
from pipelines.errors import ConfigError
from tests.engine_helpers import byte_tokenizer, tiny_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = ModelConfig(
    vocab_size=61,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=64,
    max_seq_len=32,
)
CPU = torch.device("cpu")


def batch(seed: int = 0, rows: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    """Random rows whose targets are the next tokens, with prompt-like stretches masked out."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY.vocab_size, (rows, length + 1), generator=g)
    targets = ids[:, 1:].clone()
    targets[:, :4] = IGNORE_INDEX  # the "prompt"
    targets[1, 7:9] = IGNORE_INDEX  # a "tool result" in the middle
    return {"input_ids": ids[:, :-1], "targets": targets}


def settings(**kw) -> LogitDistillation:
    return LogitDistillation(teacher_dir="unused", **kw)


def reference_kl(student, teacher, b, temperature=1.0) -> torch.Tensor:
    """KL(teacher_T || student_T) summed over the trained positions, the slow, obvious way."""
    with torch.no_grad():
        t = (teacher(b["input_ids"]).float() / temperature).log_softmax(-1)
    s = (student(b["input_ids"]).float() / temperature).log_softmax(-1)
    keep = b["targets"] != IGNORE_INDEX
    return F.kl_div(s[keep], t[keep], log_target=True, reduction="sum")


def test_the_loss_is_zero_kl_when_the_student_is_the_teacher() -> None:
    teacher = fresh_model(TINY, 1).eval()
    student = copy.deepcopy(teacher)
    b = batch()
    for top_k in (None, 5):
        out = logit_distillation_loss(student, teacher, b, settings(weight=1.0, top_k=top_k))
        assert abs(out.total.item()) < 1e-5 and abs(float(out.sums["kl"])) < 1e-5
    mixed = logit_distillation_loss(student, teacher, b, settings(weight=0.5, temperature=2.0))
    ce = next_token_loss(student, b)
    assert mixed.total.item() == pytest.approx(0.5 * ce.total.item(), rel=1e-5)  # the KL half is 0
    assert float(mixed.sums["ce"]) == pytest.approx(ce.total.item(), rel=1e-5)


def test_only_trained_positions_count_and_the_kl_is_the_forward_kl() -> None:
    teacher, student = fresh_model(TINY, 1).eval(), fresh_model(TINY, 2)
    b = batch()
    n = int((b["targets"] != IGNORE_INDEX).sum())
    out = logit_distillation_loss(student, teacher, b, settings(weight=1.0))
    assert out.count == n and out.tokens == b["input_ids"].numel()
    expected = reference_kl(student, teacher, b)
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-4) and expected.item() > 0.1
    # the same with the positions precomputed, as the SFT task's micro-batches carry them
    indexed = {**b, "target_index": torch.from_numpy(target_index(b["targets"].numpy()))}
    again = logit_distillation_loss(student, teacher, indexed, settings(weight=1.0))
    assert again.total.item() == pytest.approx(out.total.item(), rel=1e-6)
    # what the models say at a masked position counts nowhere: with the last position of row 0
    # masked, its input token (seen by no other position: attention is causal) changes nothing
    masked = {k: v.clone() for k, v in b.items()}
    masked["targets"][0, -1] = IGNORE_INDEX
    before = logit_distillation_loss(student, teacher, masked, settings(weight=0.5)).total.item()
    masked["input_ids"][0, -1] = (masked["input_ids"][0, -1] + 1) % TINY.vocab_size
    after = logit_distillation_loss(student, teacher, masked, settings(weight=0.5)).total.item()
    assert after == pytest.approx(before, rel=1e-6)
    unmasked = {k: v.clone() for k, v in b.items()}
    unmasked["targets"][0, 0] = 7  # was IGNORE_INDEX: now it counts
    more = logit_distillation_loss(student, teacher, unmasked, settings(weight=1.0))
    assert more.count == n + 1 and more.total.item() > out.total.item()
    # gradients reach the student, never the teacher
    out.total.backward()
    assert student.lm_head.weight.grad is not None and teacher.lm_head.weight.grad is None


def test_temperature_softens_both_and_scales_by_t_squared() -> None:
    teacher, student = fresh_model(TINY, 1).eval(), fresh_model(TINY, 2)
    b = batch(seed=3)
    for t in (0.5, 2.0, 4.0):
        out = logit_distillation_loss(student, teacher, b, settings(weight=1.0, temperature=t))
        expected = reference_kl(student, teacher, b, temperature=t)
        assert float(out.sums["kl"]) == pytest.approx(expected.item(), rel=1e-4)
        assert out.total.item() == pytest.approx(t * t * expected.item(), rel=1e-4)
    hot = logit_distillation_loss(student, teacher, b, settings(weight=1.0, temperature=4.0))
    cold = logit_distillation_loss(student, teacher, b, settings(weight=1.0, temperature=1.0))
    assert float(hot.sums["kl"]) < float(cold.sums["kl"])  # softer distributions are closer


def test_top_k_kl_keeps_the_rest_as_one_bucket() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2]]).log()
    q = torch.tensor([[0.2, 0.3, 0.5]]).log()
    by_hand = 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)  # {top-1, rest}
    assert top_k_kl_divergence(p, q, 1).item() == pytest.approx(by_hand, rel=1e-5)
    full = kl_divergence(p, q)
    torch.testing.assert_close(top_k_kl_divergence(p, q, 2), full)  # k = vocab - 1: the same
    torch.testing.assert_close(top_k_kl_divergence(p, q, 3), full)
    torch.testing.assert_close(top_k_kl_divergence(p, p, 1), torch.zeros(1), atol=1e-6, rtol=0)
    # a teacher whose top token holds (numerically) all the mass: finite loss and gradients
    sharp = torch.tensor([[60.0, 0.0, 0.0, 0.0]]).log_softmax(-1)
    logits = torch.zeros(1, 4, requires_grad=True)
    kl = top_k_kl_divergence(sharp, logits.log_softmax(-1), 2)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(logits.grad).all() and kl.item() > 0
    with pytest.raises(ValueError, match="top_k"):
        LogitDistillation("x", top_k=0)
    with pytest.raises(ValueError, match="weight"):
        LogitDistillation("x", weight=1.5)


def test_the_trainer_pulls_a_student_onto_its_teacher() -> None:
    """The one trainer, the distillation loss: 30 steps cut the student's KL to a teacher by over half."""
    teacher = fresh_model(TINY.model_copy(update={"init_std": 0.1}), 7).eval()
    trainer = Trainer(fresh_model(TINY, 0), StepConfig(lr=1e-2, warmup_steps=0), total_steps=30, device=CPU)
    loss = LogitDistillation("unused", weight=1.0)
    batches = [batch(seed=s) for s in range(2)]
    kls = [trainer.train_step(batches, lambda m, b: logit_distillation_loss(m, teacher, b, loss))["kl"]]
    for _ in range(29):
        kls.append(
            trainer.train_step(batches, lambda m, b: logit_distillation_loss(m, teacher, b, loss))["kl"]
        )
    assert kls[-1] < 0.5 * kls[0], kls


def test_the_sft_task_trains_against_a_teacher(tmp_path) -> None:
    """SFTTask with ``logit``: the teacher loaded in ``setup``, the loss's kl and ce in the step's
    record, validation cross-entropy plus ``val_kl``; without it, the plain SFT loss."""
    from lm.chat import ChatFormat
    from lm.checkpoint import config_from_hf
    from pipelines.sft.data import render_examples
    from pipelines.sft.task import SFTTask

    teacher_dir, tok = tiny_model_dir(tmp_path / "teacher", seed=1)
    student_dir, _ = tiny_model_dir(tmp_path / "student", seed=2)
    convs = [
        {
            "messages": [
                {"role": "user", "content": f"what is {i} + {i}?"},
                {"role": "assistant", "content": str(2 * i)},
            ]
        }
        for i in range(12)
    ]
    examples = render_examples(convs, ChatFormat(tok), 64)
    examples.save(tmp_path / "train.npz")
    examples.save(tmp_path / "val.npz")
    config = json.loads((student_dir / "config.json").read_text())
    common = dict(
        init_dir=str(student_dir), model_config=config_from_hf(config), train_file=str(tmp_path / "train.npz"),
        val_file=str(tmp_path / "val.npz"), seq_len=64, batch_rows=2, micro_batch_rows=1, steps=3, seed=0,
        pad_id=tok.eot_id, num_examples=len(examples),
    )  # fmt: skip
    for logit in (LogitDistillation(str(teacher_dir), weight=0.5, temperature=2.0), None):
        task = SFTTask(**common, logit=logit)
        task.setup(0, 1, CPU)
        trainer = Trainer(task.build_model(), StepConfig(), total_steps=3, device=CPU)
        batches, _ = task.next_batches(0)
        out = trainer.train_step(batches, task.loss)
        metrics = task.evaluate(trainer)
        if logit is None:
            assert "kl" not in out and set(metrics) == {"val_loss"}
            continue
        assert out["kl"] > 0 and out["ce"] > 0
        assert out["loss"] == pytest.approx(0.5 * 4.0 * out["kl"] + 0.5 * out["ce"], rel=1e-4)
        assert metrics["val_kl"] > 0 and metrics["val_loss"] > 0 and "val KL" in task.eval_summary(metrics)


def test_logit_distillation_refuses_another_tokenizer(tmp_path) -> None:
    """Same vocabulary size, other merges: sequence-level distillation's size check would pass, logit
    distillation's preflight says no, naming the difference."""
    from lm.checkpoint import save_pretrained
    from lm.tokenizer import Tokenizer
    from lm.train.models import pretrained_model
    from pipelines.config import load_config
    from pipelines.distill.job import preflight
    from pipelines.distill.student import check_logit_pair, tokenizer_differences

    teacher, tok = tiny_model_dir(tmp_path / "teacher", seed=1)
    same, _ = tiny_model_dir(tmp_path / "same", seed=2)
    ranks = {bytes([b]): b for b in range(256)} | {b"an": 256, b"he": 257, b"and": 258}
    other_tok = Tokenizer.from_ranks("other", r"""\s?\w+|\s?[^\s\w]+|\s+""", ranks)
    assert other_tok.vocab_size == tok.vocab_size
    other = save_pretrained(pretrained_model(same), tmp_path / "other", tokenizer=other_tok)
    assert tokenizer_differences(tok, byte_tokenizer("again")) == []
    check_logit_pair("distill", teacher, str(same))  # the same tokenizer: fine
    check_logit_pair("distill", teacher, None)  # a fresh student takes the teacher's

    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"question": "1 + 1?", "final": 2}\n')
    base = [
        f"run_dir={tmp_path / 'run'}",
        f"distill.teacher={teacher}",
        f"distill.student_init={other}",
        f"distill.prompts=[{{path: {problems}}}]",
        f"distill.heldout={{path: {problems}}}",
    ]
    preflight(load_config(None, base))  # sequence-level distillation: not its business
    with pytest.raises(ConfigError, match=r"distill.logit: .*share a tokenizer.*2 tokens with another id"):
        preflight(load_config(None, [*base, "distill.logit.enabled=true"]))
