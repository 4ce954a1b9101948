"""The per-rank trainer of every gradient stage (lm/train/), packing with document masks, and scoring.

No Ray here: the trainer runs in this process, or in two processes that set up ``torch.distributed``
themselves (as an RL learner's actors would).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lm.model import ModelConfig, Transformer, document_positions
from lm.scoring import gather_logprobs, kl_divergence, kl_estimate, sequence_logprobs, token_logprobs
from lm.train.config import StepConfig
from lm.train.losses import IGNORE_INDEX, Loss, next_token_loss
from lm.train.models import fresh_model, pretrained_model
from lm.train.packing import PAD_DOCUMENT, pack
from lm.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = ModelConfig(
    vocab_size=97,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=64,
    max_seq_len=64,
)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_lm_never_imports_ray():
    """lm/ is the model's own code: importing every module of it (in a fresh interpreter) loads no Ray."""
    code = (
        "import importlib, pkgutil, sys, lm\n"
        "for m in pkgutil.walk_packages(lm.__path__, 'lm.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        assert 'ray' not in str(e), e\n"  # optional GPU packages (vLLM) may be missing here
        "bad = sorted(n for n in sys.modules if n == 'ray' or n.startswith('ray.'))\n"
        "assert not bad, bad\n"
        "assert 'lm.train.trainer' in sys.modules and 'lm.scoring' in sys.modules\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=120)


# -- normalisation: a sum over targets, divided once ------------------------------------------------


def _rows(rng: np.random.Generator, rows: int, targets: int, length: int = 16) -> dict[str, np.ndarray]:
    """``rows`` sequences of ``length`` ids with ``targets`` of their targets kept (the rest masked)."""
    ids = rng.integers(0, TINY.vocab_size, size=(rows, length + 1))
    y = ids[:, 1:].copy()
    keep = np.zeros(y.size, dtype=bool)
    keep[rng.choice(y.size, size=targets, replace=False)] = True
    y.reshape(-1)[~keep] = IGNORE_INDEX
    return {"input_ids": ids[:, :-1], "targets": y}


def _uneven_batches() -> list[dict[str, np.ndarray]]:
    """Micro-batches whose numbers of target tokens differ by up to 200x (a masked SFT batch with a few
    assistant tokens next to a full one)."""
    rng = np.random.default_rng(0)
    return [_rows(rng, 2, 3), _rows(rng, 16, 200), _rows(rng, 4, 50), _rows(rng, 1, 1)]


def _together(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([b[k] for b in batches]) for k in ("input_ids", "targets")}


def _gradients(batches, config: StepConfig | None = None) -> dict[str, torch.Tensor]:
    trainer = Trainer(fresh_model(TINY, 0), config or StepConfig(grad_clip=None), total_steps=1, device=CPU)
    trainer.compute_gradients(batches, next_token_loss)
    return {name: p.grad.clone() for name, p in trainer.model.named_parameters()}


def _reference_gradients(batches) -> dict[str, torch.Tensor]:
    """The gradient of the mean loss over every target, written out by hand."""
    model = fresh_model(TINY, 0)
    both = _together(batches)
    logits = model(torch.from_numpy(both["input_ids"]))
    loss = F.cross_entropy(logits.view(-1, TINY.vocab_size), torch.from_numpy(both["targets"]).view(-1))
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _assert_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_micro_batches_with_very_different_target_counts_give_the_gradient_of_one_batch():
    batches = _uneven_batches()
    expected = _reference_gradients(batches)
    _assert_close(_gradients(batches), expected)
    _assert_close(_gradients([_together(batches)]), expected)
    # the data can tell the difference: averaging each micro-batch first gives another gradient
    model = fresh_model(TINY, 0)
    for b in batches:
        logits = model(torch.from_numpy(b["input_ids"]))
        mean = F.cross_entropy(logits.view(-1, TINY.vocab_size), torch.from_numpy(b["targets"]).view(-1))
        (mean / len(batches)).backward()
    naive = dict(model.named_parameters())["model.layers.0.mlp.up_proj.weight"].grad
    right = expected["model.layers.0.mlp.up_proj.weight"]
    assert (naive - right).norm() > 0.2 * right.norm()


def test_precision_bf16_runs_cpu_steps_under_autocast_and_keeps_fp32_weights():
    batches = _uneven_batches()
    expected = _reference_gradients(batches)
    assert not Trainer(
        fresh_model(TINY, 0), StepConfig(), total_steps=1, device=CPU
    ).bf16  # auto: fp32 on CPU
    bf16 = _gradients(batches, StepConfig(grad_clip=None, precision="bf16"))
    fp32 = _gradients(batches, StepConfig(grad_clip=None, precision="fp32"))
    _assert_close(fp32, expected)
    # the weights' gradients stay fp32 and near the exact ones, but bf16's rounding shows: it really ran
    assert all(g.dtype == torch.float32 for g in bf16.values())
    errors = [((bf16[n] - g).norm() / g.norm()).item() for n, g in expected.items() if g.norm() > 0]
    assert max(errors) < 0.1 and sum(errors) / len(errors) > 1e-4, errors
    trainer = Trainer(
        fresh_model(TINY, 0),
        StepConfig(precision="bf16", lr=1e-2, warmup_steps=0),
        total_steps=20,
        device=CPU,
    )
    first = trainer.train_step(batches, next_token_loss)["loss"]
    for _ in range(15):
        last = trainer.train_step(batches, next_token_loss)["loss"]
    assert last < first - 0.5 and all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_a_step_reports_the_mean_over_targets_extra_sums_and_clips_the_normalised_gradient():
    batches = _uneven_batches()
    counts = [int((b["targets"] != IGNORE_INDEX).sum()) for b in batches]

    def loss_with_hits(model, batch) -> Loss:
        out = next_token_loss(model, batch)
        logits = model(batch["input_ids"])
        hits = ((logits.argmax(-1) == batch["targets"]) & (batch["targets"] != IGNORE_INDEX)).sum()
        return Loss(out.total, out.count, out.tokens, sums={"accuracy": hits})

    trainer = Trainer(fresh_model(TINY, 0), StepConfig(grad_clip=0.5), total_steps=10, device=CPU)
    expected = _reference_gradients(batches)
    true_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in expected.values()])).item()
    stats = trainer.compute_gradients(batches, loss_with_hits).values()
    assert stats["count"] == sum(counts) == 254
    assert stats["tokens"] == sum(b["input_ids"].size for b in batches)
    assert stats["grad_norm"] == pytest.approx(true_norm, rel=1e-5)
    assert 0 <= stats["accuracy"] <= 1
    clipped = {n: p.grad for n, p in trainer.model.named_parameters()}
    _assert_close(clipped, {n: g * (0.5 / (true_norm + 1e-6)) for n, g in expected.items()})
    model = fresh_model(TINY, 0)
    both = _together(batches)
    mean = F.cross_entropy(
        model(torch.from_numpy(both["input_ids"])).view(-1, TINY.vocab_size),
        torch.from_numpy(both["targets"]).view(-1),
    )
    out = trainer.train_step(batches, loss_with_hits)
    assert out["loss"] == pytest.approx(mean.item(), rel=1e-5) and out["lr"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_rank_worker(rank: int, port: int, out_dir: str) -> None:
    """One of two ranks, each with its own uneven micro-batches; saves the full gradient per strategy."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        batches = _uneven_batches()
        mine = batches[:2] if rank == 0 else batches[2:]  # 3 + 200 targets here, 50 + 1 there
        for strategy, precision in (("ddp", "auto"), ("fsdp", "auto"), ("ddp", "bf16"), ("fsdp", "bf16")):
            config = StepConfig(strategy=strategy, grad_clip=None, precision=precision)
            trainer = Trainer(fresh_model(TINY, 0), config, total_steps=1, device=CPU)
            stats = trainer.compute_gradients(mine, next_token_loss).values()
            grads = {}
            for name, p in trainer.model.named_parameters():
                grads[name] = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            if rank == 0:
                torch.save({"grads": grads, "stats": stats}, Path(out_dir) / f"{strategy}-{precision}.pt")
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: about one run in ten, torch's C++ static destructors
    # abort a spawned gloo rank after its work is done and saved ("terminate called without an active
    # exception", no Python frame left). An exception above still exits non-zero and fails the test.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.mark.slow
def test_two_ranks_with_uneven_targets_give_the_gradient_of_one_batch(tmp_path):
    """A process group made by hand (no Ray Train), DDP and FSDP2: ranks holding 203 and 51 targets."""
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    expected = _reference_gradients(_uneven_batches())
    for strategy in ("ddp", "fsdp"):
        saved = torch.load(tmp_path / f"{strategy}-auto.pt", weights_only=True)
        assert saved["stats"]["count"] == 254, strategy
        _assert_close(saved["grads"], expected)
        # bf16 autocast over gloo (FSDP2 gathering fp32 on CPU): the same gradient up to bf16's rounding
        bf16 = torch.load(tmp_path / f"{strategy}-bf16.pt", weights_only=True)["grads"]
        for name, g in expected.items():
            assert bf16[name].dtype == torch.float32, name
            assert (bf16[name] - g).norm() <= 0.1 * g.norm() + 1e-6, (strategy, name)


def test_trainer_state_restores_and_exports_full_weights(tmp_path):
    batches = _uneven_batches()
    first = Trainer(fresh_model(TINY, 0), StepConfig(), total_steps=5, device=CPU)
    first.train_step(batches, next_token_loss)
    first.save(tmp_path, first.state())
    expected = first.train_step(batches, next_token_loss)["loss"]
    second = Trainer(fresh_model(TINY, 1), StepConfig(), total_steps=5, device=CPU)
    second.load_state(Trainer.read(tmp_path))
    assert second.train_step(batches, next_token_loss)["loss"] == expected
    state = second.model_state()
    assert state.keys() == second.model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in second.model.state_dict().items())


def test_a_stage_can_start_from_a_model_directory(tmp_path):
    from lm.checkpoint import save_pretrained

    base = fresh_model(TINY, 3)
    save_pretrained(base, tmp_path / "base")
    model = pretrained_model(tmp_path / "base")
    assert model.training and next(model.parameters()).dtype == torch.float32
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), base.state_dict().values(), strict=True)
    )
    trainer = Trainer(model, StepConfig(), total_steps=1, device=CPU)
    assert np.isfinite(trainer.train_step(_uneven_batches(), next_token_loss)["loss"])


# -- packing with document masks -------------------------------------------------------------------


def _sequences() -> list[list[int]]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, TINY.vocab_size, size=n).tolist() for n in (6, 10, 4, 12, 3)]


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_a_packed_rows_logits_equal_each_sequence_alone(kv_heads):
    model = fresh_model(TINY.model_copy(update={"num_kv_heads": kv_heads}), 0).eval()
    seqs = _sequences()
    rows, consumed = pack([(s, s) for s in seqs], row_len=20)
    assert consumed == 5 and rows.input_ids.shape == (2, 20)  # [6, 10, 4] and [12, 3] + padding
    assert (rows.document_ids[1, 15:] == PAD_DOCUMENT).all()
    with torch.no_grad():
        packed = model(torch.from_numpy(rows.input_ids), document_ids=torch.from_numpy(rows.document_ids))
        naive = model(torch.from_numpy(rows.input_ids))  # without the mask, sequences see each other
        placed = [(0, 0), (0, 6), (0, 16), (1, 0), (1, 12)]
        for s, (row, start) in zip(seqs, placed, strict=True):
            alone = model(torch.tensor([s]))[0]
            torch.testing.assert_close(packed[row, start : start + len(s)], alone, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(naive[0, 6:16], model(torch.tensor([seqs[1]]))[0], atol=1e-3)


def test_packing_positions_targets_and_resumable_counts():
    docs = torch.tensor([[0, 0, 0, 1, 1, 2, -1, -1]])
    assert document_positions(docs).tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]
    examples = [([1, 2, 3], [2, 3, IGNORE_INDEX]), ([4, 5], [5, 6]), ([7, 8, 9, 10], [8, 9, 10, 11])]
    rows, consumed = pack(examples, row_len=5, num_rows=1)
    assert consumed == 2  # the third does not fit the one row: it is where the next step starts
    assert rows.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert rows.targets.tolist() == [[2, 3, IGNORE_INDEX, 5, 6]]
    rows, consumed = pack(examples[consumed:], row_len=5, num_rows=2)
    assert consumed == 1 and rows.targets[1].tolist() == [IGNORE_INDEX] * 5  # an empty row counts nowhere
    with pytest.raises(ValueError, match="more than a row's 5"):
        pack([([1] * 6, [1] * 6)], row_len=5)
    # the loss of a packed batch is the sum of the sequences' losses, with their own target counts
    model = fresh_model(TINY, 0)
    seqs = _sequences()
    rows, _ = pack([(s[:-1], s[1:]) for s in seqs], row_len=20)
    out = next_token_loss(model, {k: torch.from_numpy(v) for k, v in rows.batch().items()})
    alone = [
        next_token_loss(model, {"input_ids": torch.tensor([s[:-1]]), "targets": torch.tensor([s[1:]])})
        for s in seqs
    ]
    assert int(out.count) == sum(len(s) - 1 for s in seqs)
    assert out.total.item() == pytest.approx(sum(a.total.item() for a in alone), rel=1e-5)


# -- scoring ---------------------------------------------------------------------------------------


def test_sequence_logprobs_are_each_sequences_own_batched_by_packing():
    model = fresh_model(TINY, 0).eval()
    seqs = [*_sequences(), [5], []]
    got = sequence_logprobs(model, seqs, row_len=16, rows_per_batch=2)
    assert [len(g) for g in got] == [5, 9, 3, 11, 2, 0, 0]
    with torch.no_grad():
        for s, g in zip(seqs[:5], got, strict=False):
            logp = model(torch.tensor([s]))[0].log_softmax(-1)
            expected = logp[torch.arange(len(s) - 1), torch.tensor(s[1:])].numpy()
            np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        sequence_logprobs(model, [list(range(20))], row_len=8)


def test_token_logprobs_carry_gradients_and_the_kl_helpers():
    model = fresh_model(TINY, 0)
    ids = torch.tensor([_sequences()[1]])
    logp = token_logprobs(model, ids)
    assert logp.shape == ids.shape and logp[0, -1] == 0  # the last position has no target
    logp.sum().backward()
    assert model.lm_head.weight.grad is not None
    logits = torch.randn(2, 3, 11)
    targets = torch.tensor([[1, 2, IGNORE_INDEX], [0, 10, 4]])
    expected = (logits / 0.7).log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected[0, 2] = 0
    torch.testing.assert_close(gather_logprobs(logits, targets, temperature=0.7), expected)
    p, q = torch.randn(4, 11).log_softmax(-1), torch.randn(4, 11).log_softmax(-1)
    torch.testing.assert_close(kl_divergence(p, q), F.kl_div(q, p, log_target=True, reduction="none").sum(-1))
    assert torch.all(kl_divergence(p, p).abs() < 1e-6)
    a, b = torch.randn(100), torch.randn(100)
    assert torch.all(kl_estimate(a, b, "k3") >= 0) and torch.all(kl_estimate(a, a, "k3") == 0)
    torch.testing.assert_close(kl_estimate(a, b, "k1"), a - b)
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        kl_estimate(a, b, "k4")


def test_transformer_refuses_document_ids_with_a_cache():
    model = Transformer(TINY)
    with pytest.raises(ValueError, match="not for a KV cache"):
        model(
            torch.zeros(1, 2, dtype=torch.long),
            cache=object(),
            document_ids=torch.zeros(1, 2, dtype=torch.long),
        )


# -- a model with a scalar head trains on the same trainer -------------------------------------------


def test_reward_model_is_llama_for_sequence_classification_and_learns_preferences():
    from lm.checkpoint import hf_config_dict
    from lm.reward_model import RewardModel, bradley_terry_loss

    transformers = pytest.importorskip("transformers")
    base = fresh_model(TINY, 0)
    rm = RewardModel.from_base(base, seed=1)
    assert torch.equal(rm.model.embed_tokens.weight, base.model.embed_tokens.weight)
    assert set(rm.state_dict()) == {k for k in base.state_dict() if k != "lm_head.weight"} | {"score.weight"}
    hf_config = {**hf_config_dict(TINY, torch.float32, None, []), "num_labels": 1, "pad_token_id": 96}
    hf = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**hf_config)).eval()
    hf.load_state_dict(rm.state_dict())
    ids = torch.randint(0, 96, (3, 9), generator=torch.Generator().manual_seed(0))  # no pad token inside
    with torch.no_grad():
        torch.testing.assert_close(
            rm.eval()(ids)[:, -1], hf(input_ids=ids).logits[:, 0], rtol=1e-4, atol=1e-5
        )

    # preference pairs: the chosen sequence ends in a token below 48, the rejected one at or above
    rng = np.random.default_rng(0)

    def pairs(n: int) -> dict[str, np.ndarray]:
        ids = rng.integers(0, TINY.vocab_size, size=(2 * n, 8))
        ids[:n, -1] = rng.integers(0, 48, size=n)
        ids[n:, -1] = rng.integers(48, TINY.vocab_size, size=n)
        last = np.stack([np.arange(2 * n), np.full(2 * n, 7)], axis=1)
        return {"input_ids": ids, "chosen_last": last[:n], "rejected_last": last[n:]}

    trainer = Trainer(rm.train(), StepConfig(lr=1e-2, warmup_steps=0), total_steps=60, device=CPU)
    first = trainer.train_step([pairs(8), pairs(3)], bradley_terry_loss)
    assert first["count"] == 11  # pairs, not tokens
    for _ in range(59):
        out = trainer.train_step([pairs(8), pairs(3)], bradley_terry_loss)
    assert out["loss"] < 0.3 < first["loss"] and out["accuracy"] > 0.9


def test_the_validation_table_shows_only_what_the_stage_recorded() -> None:
    """SFT's table had a 'tokens seen' column of zeros and 'val bits/byte' of nan on every row."""
    from pipelines.train.curves import markdown

    sft = markdown(
        {},
        [
            {"step": 0, "examples_seen": 0, "val_loss": 9.6},
            {"step": 55, "examples_seen": 1873, "val_loss": 1.62},
        ],
    )
    assert sft.splitlines()[0] == "| step | examples seen | val loss |" and "nan" not in sft
    assert "| 55 | 1,873 | 1.6200 |" in sft
    pretrain = markdown(
        {"val_loss": 1.41, "unigram_entropy": 5.7, "val_bpb": 0.41},
        [{"step": 150, "tokens_seen": 307200, "samples_seen": 2400, "val_loss": 1.41, "val_bpb": 0.41}],
    )
    assert (
        "| step | tokens seen | val loss | val bits/byte |" in pretrain
        and "(0.4100 bits per byte)" in pretrain
    )
    assert "nan" not in markdown({"val_loss": 1.0, "unigram_entropy": 5.0}, [])
