"""Tiny models and references shared by the engine tests (tests/test_engine*.py); not a test module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lm.model import ModelConfig, Transformer
from lm.tokenizer import R50K_PATTERN, Tokenizer

VOCAB = 256


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Imported by a test module, makes it run torch on one thread: tiny models gain nothing from
    intra-op threads, and on a shared, loaded machine spinning OpenMP threads make every small op
    wait. The setting is restored for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 3, vocab: int = VOCAB, max_seq_len: int = 96, **overrides: object) -> Transformer:
    """A 2-layer GQA model; a larger init std than training's makes its distributions peaked, so
    greedy choices are not near-ties that float rounding of different batch shapes could flip."""
    settings = dict(
        vocab_size=vocab,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=160,
        max_seq_len=max_seq_len,
        init_std=0.1,
    )
    settings.update(overrides)
    m = Transformer(ModelConfig(**settings))
    m.init_weights(seed)
    return m.eval()


def byte_tokenizer(name: str = "tiny"):
    """A byte-level tokenizer (plus three merges) with every raychat special token after them."""
    from lm.tokenizer import Tokenizer

    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"th": 256, b"he": 257, b"the": 258})
    return Tokenizer.from_ranks(name, r"""\s?\w+|\s?[^\s\w]+|\s+""", ranks)


def tiny_model_dir(directory: Path, seed: int = 0, max_seq_len: int = 128):
    """An exported model directory with a byte-level tokenizer (plus three merges); (path, tokenizer)."""
    from lm.checkpoint import save_pretrained

    tok = byte_tokenizer()
    model = tiny_model(seed, vocab=tok.vocab_size, max_seq_len=max_seq_len)
    return save_pretrained(model, directory, tokenizer=tok), tok


def greedy_reference(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """Greedy continuation recomputing the whole sequence every step (no cache)."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt) :]


def prompts_of(lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def word_tokenizer(words: list[str]) -> Tokenizer:
    """Bytes plus each word (with and without a leading space) as a single token."""
    ranks = {bytes([b]): b for b in range(256)}
    for word in words:
        for w in (word, " " + word):
            data = w.encode()
            for end in range(2, len(data) + 1):
                ranks.setdefault(data[:end], len(ranks))
    return Tokenizer.from_ranks("words", R50K_PATTERN, ranks)


def scripted_model(vocab_size: int, script: dict[int, int], max_seq_len: int = 1536) -> Transformer:
    """A real Transformer whose blocks add nothing and whose head maps the last token ``a`` to
    ``script[a]``: the greedy continuation follows the script (a bigram model in Llama clothing)."""
    cfg = ModelConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        max_seq_len=max_seq_len,
    )
    model = Transformer(cfg)
    model.init_weights(0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        normed = model.model.norm(model.model.embed_tokens.weight)
        head = torch.zeros_like(model.lm_head.weight)
        for a, b in script.items():
            head[b] += 10.0 * normed[a] / cfg.hidden_size
        model.lm_head.weight.copy_(head)
    return model.eval()
