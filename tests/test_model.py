"""The decoder: sizes, FLOPs, Hugging Face equivalence, the cache protocol, init and loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lm.model import ModelConfig, Transformer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared, loaded machine spinning OpenMP
    threads make every small op wait. Restored for other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = dict(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=160)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    model = Transformer(ModelConfig(**{**TINY, **overrides}))
    model.init_weights(seed)
    return model.eval()


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_param_count_matches_modules(tie: bool, kv_heads: int) -> None:
    model = tiny_model(tie_embeddings=tie, num_kv_heads=kv_heads)
    assert model.num_params() == model.config.num_params()
    embed = model.config.vocab_size * model.config.hidden_size
    assert model.config.num_params(include_embeddings=False) == model.num_params() - embed


def test_shapes_and_names_are_llamas() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (3, 11))
    assert model(x).shape == (3, 11, 256)
    names = set(model.state_dict())
    for expected in [
        "model.embed_tokens.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.norm.weight",
        "lm_head.weight",
    ]:
        assert expected in names
    assert not any("bias" in n or "inv_freq" in n for n in names)
    assert model.state_dict()["model.layers.0.self_attn.k_proj.weight"].shape == (2 * 16, 64)


def test_from_depth_rule() -> None:
    cfg = ModelConfig.from_depth(12, vocab_size=50304)
    assert (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.intermediate_size) == (768, 12, 3, 2048)
    assert cfg.head_dim == 64 and cfg.num_layers == 12
    odd = ModelConfig.from_depth(3, vocab_size=100, max_seq_len=64, tie_embeddings=True)
    assert odd.num_kv_heads == odd.num_heads == 3 and odd.max_seq_len == 64 and odd.tie_embeddings
    assert ModelConfig.from_depth(20, vocab_size=100).intermediate_size % 64 == 0


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ModelConfig(hidden_size=100, num_heads=3)
    with pytest.raises(ValueError, match="divisible by num_kv_heads"):
        ModelConfig(hidden_size=96, num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="extra"):
        ModelConfig(hidden=3)


def test_flops_per_token_formula() -> None:
    cfg = ModelConfig(**TINY)
    h, i, layers, v, kv = 64, 160, 2, 256, 2 * 16
    matmuls = layers * (2 * h * h + 2 * h * kv + 3 * h * i) + v * h
    assert cfg.flops_per_token(128) == 6 * matmuls + 12 * layers * h * 128
    tied = ModelConfig(**TINY, tie_embeddings=True)
    assert tied.flops_per_token(128) == cfg.flops_per_token(128)  # the head is a matmul either way


@pytest.mark.parametrize("tie", [False, True])
def test_logits_equal_transformers_llama(tie: bool) -> None:
    transformers = pytest.importorskip("transformers")
    model = tiny_model(tie_embeddings=tie, rope_theta=500.0)
    c = model.config
    hf_cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        max_position_embeddings=c.max_seq_len,
        rms_norm_eps=c.rms_norm_eps,
        rope_theta=c.rope_theta,
        tie_word_embeddings=tie,
        attention_bias=False,
        mlp_bias=False,
    )
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("rotary" in m for m in missing)
    x = torch.randint(0, c.vocab_size, (2, 19))
    with torch.no_grad():
        ours, theirs = model(x), hf(input_ids=x).logits
    assert (ours - theirs).abs().max().item() < 1e-4


class _GrowingCache:
    """The simplest cache: concatenate keys/values; mask allows every cached key plus causal new ones."""

    def __init__(self) -> None:
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}

    def update(self, layer_idx, k, v):
        t = k.shape[2]
        if layer_idx in self.k:
            k = torch.cat([self.k[layer_idx], k], dim=2)
            v = torch.cat([self.v[layer_idx], v], dim=2)
        self.k[layer_idx], self.v[layer_idx] = k, v
        s = k.shape[2]
        mask = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        return k, v, mask[None, None]


def test_cache_protocol_matches_full_forward() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (2, 12))
    full = model(x)
    cache = _GrowingCache()
    with torch.no_grad():
        first = model(x[:, :7], positions=torch.arange(7).expand(2, 7), cache=cache)
        outs = [first]
        for pos in range(7, 12):
            outs.append(model(x[:, pos : pos + 1], positions=torch.full((2, 1), pos), cache=cache))
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-5)


def test_hidden_states_and_positions_default() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (1, 9))
    h = model.hidden_states(x)
    assert torch.allclose(model.lm_head(h), model(x, positions=torch.arange(9)[None]))
    # RoPE is relative: a uniform shift changes nothing, stretched positions change the logits
    assert torch.allclose(model(x, positions=torch.arange(9)[None] + 5), model(x), atol=1e-4)
    assert not torch.allclose(model(x, positions=torch.arange(9)[None] * 2), model(x), atol=1e-3)


def test_init_is_seeded_and_scaled() -> None:
    a, b, c = tiny_model(seed=1), tiny_model(seed=1), tiny_model(seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])
    assert torch.all(sa["model.norm.weight"] == 1)
    q_std = sa["model.layers.0.self_attn.q_proj.weight"].std().item()
    o_std = sa["model.layers.0.self_attn.o_proj.weight"].std().item()
    assert abs(q_std - 0.02) < 0.003 and abs(o_std - 0.02 / 2) < 0.002  # 0.02 / sqrt(2 * 2 layers)
    tied = tiny_model(tie_embeddings=True)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight


def test_loss_is_float32_cross_entropy_with_ignore_index() -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (2, 10))
    y = torch.randint(0, 256, (2, 10))
    y[0, :4] = -100
    expected = F.cross_entropy(model(x).view(-1, 256), y.view(-1), ignore_index=-100)
    assert torch.allclose(model.loss(x, y), expected, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(x, y)
    assert loss.dtype == torch.float32 and abs(loss.item() - expected.item()) < 0.05
    loss.backward()
    assert model.model.embed_tokens.weight.grad is not None
