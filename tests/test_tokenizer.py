"""lm/tokenizer.py and lm/bpe.py: sources, special tokens, saving, training, the Hugging Face copy."""

from __future__ import annotations

import base64
import json
import random

import pytest
from tokenizers import Tokenizer as HFTokenizer

from lm.bpe import mergeable_ranks_from_hf, train_bpe, train_hf_bpe
from lm.tokenizer import (
    CL100K_PATTERN,
    ENDOFTEXT,
    HF_TOKENIZER_FILE,
    O200K_PATTERN,
    R50K_PATTERN,
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerError,
    bytes_to_unicode,
    hf_pattern,
    load_tokenizer,
    split_pattern,
    to_hf_tokenizer,
)

UNICODE_SAMPLES = [
    "hello deep seek",
    "Ünïcödé: naïve café, façade — “quotes” and ‘apostrophes’ … ½ ≠ ∞",
    "日本語のテキストと中文文本, 한국어 텍스트",
    "emoji 🤖🧠👩‍👩‍👧‍👦 🇫🇷 and flags",
    "combining: e\u0301 a\u0308 ñ, zero\u200bwidth, RTL: שלום עולם مرحبا",
    "numbers 1642 12345678 3.14159 -0.5e10, code: def f(x):\n\treturn x**2  # ok\r\n",
    "  leading and trailing spaces   \n\n\n   ",
    "I'LL, we'd, they're, it's, DON'T",
    "",
]


def _corpus(n_docs: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = (
        "the of and to in is was for on that with as by at from his her city river king queen born "
        "population capital founded century mountain island language people music science history"
    ).split()
    docs = []
    for i in range(n_docs):
        sentences = []
        for _ in range(rng.randint(2, 6)):
            n = rng.randint(4, 14)
            s = " ".join(rng.choice(words) for _ in range(n)).capitalize()
            sentences.append(f"{s} in {rng.randint(1000, 2024)}.")
        docs.append(
            " ".join(sentences) + ("\n\n" if i % 3 == 0 else "") + UNICODE_SAMPLES[i % len(UNICODE_SAMPLES)]
        )
    return docs


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    return train_bpe(_corpus(), vocab_size=600, show_progress=False)


@pytest.fixture(scope="module")
def gpt2(shared_data) -> Tokenizer:
    return load_tokenizer(f"gpt2:{shared_data / 'tokenizers' / 'gpt2'}")


# -- sources ---------------------------------------------------------------------------------------


def test_gpt2_from_data_gym_files(gpt2: Tokenizer):
    assert gpt2.encode("hello deep seek") == [31373, 2769, 5380]
    assert gpt2.eot_id == 50256 == gpt2.token_id(ENDOFTEXT)
    assert gpt2.vocab_size == 50256 + len(SPECIAL_TOKENS)
    assert gpt2.decode([31373, 2769, 5380]) == "hello deep seek"
    assert gpt2.pat_str == R50K_PATTERN


def _write_tiktoken(path, merges: list[bytes]) -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    for m in merges:
        ranks[m] = len(ranks)
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    return ranks


def test_tiktoken_file_source(tmp_path):
    ranks = _write_tiktoken(
        tmp_path / "tiny.tiktoken", [b"he", b"ll", b"hell", b"hello", b" w", b" wo", b" wor"]
    )
    tok = load_tokenizer(f"tiktoken:{tmp_path / 'tiny.tiktoken'}")
    assert tok.pat_str == CL100K_PATTERN  # the default when the file name does not say
    assert tok.encode("hello world") == [ranks[b"hello"], ranks[b" wor"], ord("l"), ord("d")]
    assert tok.eot_id == max(ranks.values()) + 1
    assert tok.name == "tiny"
    # the pattern follows the file name, or the explicit option
    (tmp_path / "my_o200k_base.tiktoken").write_bytes((tmp_path / "tiny.tiktoken").read_bytes())
    assert load_tokenizer(f"tiktoken:{tmp_path / 'my_o200k_base.tiktoken'}").pat_str == O200K_PATTERN
    assert load_tokenizer(f"tiktoken:{tmp_path / 'tiny.tiktoken'}", pattern="gpt2").pat_str == R50K_PATTERN


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(f"tiktoken:{tmp_path / 'missing.tiktoken'}")
    with pytest.raises(TokenizerError, match="train"):
        load_tokenizer("train")
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "broken.tiktoken").write_text("aGVsbG8= 0\nnot-a-valid-line\n")
    with pytest.raises(TokenizerError, match="broken.tiktoken:2"):
        load_tokenizer(f"tiktoken:{tmp_path / 'broken.tiktoken'}")
    (tmp_path / "partial.tiktoken").write_text("aGVsbG8= 0\n")  # no single-byte tokens
    with pytest.raises(TokenizerError, match="not byte-level"):
        load_tokenizer(f"tiktoken:{tmp_path / 'partial.tiktoken'}")
    with pytest.raises(TokenizerError, match="vocab.bpe not found"):
        load_tokenizer(f"gpt2:{tmp_path}")
    with pytest.raises(TokenizerError, match="unknown split pattern"):
        split_pattern("nope")


# -- special tokens --------------------------------------------------------------------------------


def test_special_tokens_follow_the_ranks(trained: Tokenizer):
    first = max(trained.mergeable_ranks.values()) + 1
    assert trained.special_tokens == {t: first + i for i, t in enumerate(SPECIAL_TOKENS)}
    assert trained.vocab_size == first + len(SPECIAL_TOKENS) == 600
    for t in ("<|im_start|>", "<|im_end|>", "<|search_start|>", "<|search_end|>", "<|result_start|>"):
        assert trained.encode(t, allow_special=True) == [trained.token_id(t)]
    text = "<|im_start|>user\nhi<|im_end|>"
    # untrusted text never becomes control tokens unless asked for
    assert not set(trained.encode(text)) & set(trained.special_tokens.values())
    assert trained.decode(trained.encode(text)) == text
    ids = trained.encode(text, allow_special=True)
    assert ids[0] == trained.token_id("<|im_start|>") and ids[-1] == trained.token_id("<|im_end|>")
    assert trained.decode(ids) == text
    with pytest.raises(KeyError, match="not a special token"):
        trained.token_id("<|nope|>")


# -- encode / decode -------------------------------------------------------------------------------


def test_decode_inverts_encode_on_unicode(trained: Tokenizer):
    for text in UNICODE_SAMPLES:
        ids = trained.encode(text)
        assert trained.decode(ids) == text
        assert trained.decode_bytes(ids) == text.encode()
    expected = [trained.encode(t) for t in UNICODE_SAMPLES]
    assert trained.encode_batch(UNICODE_SAMPLES, num_threads=2) == expected
    for threads in (1, 3):
        assert [
            a.tolist() for a in trained.encode_batch_numpy(UNICODE_SAMPLES, num_threads=threads)
        ] == expected
    # special-token text stays ordinary text on the bulk path too
    (bulk,) = trained.encode_batch_numpy(["a <|endoftext|> b"])
    assert bulk.tolist() == trained.encode("a <|endoftext|> b") and trained.eot_id not in bulk


def test_decode_replaces_cut_characters(trained: Tokenizer):
    ids = trained.encode("🤖")
    assert len(ids) > 1  # not in a 600-token vocabulary: several byte tokens
    assert trained.decode(ids[:1]) == "\ufffd"


def test_gpt2_roundtrip_on_unicode(gpt2: Tokenizer):
    for text in UNICODE_SAMPLES:
        assert gpt2.decode(gpt2.encode(text)) == text


# -- training ---------------------------------------------------------------------------------------


def test_trained_tiktoken_equals_the_hf_trainer(shared_data):
    """tiktoken with the converted ranks splits text exactly as the trained HF tokenizer does."""
    wiki = (shared_data / "text" / "wiki_demo.txt").read_text().splitlines()
    train_docs = wiki[:20]
    hf = train_hf_bpe(train_docs, n_ranks=2000, pat_str=CL100K_PATTERN, show_progress=False)
    ranks = mergeable_ranks_from_hf(hf)
    assert len(ranks) == 2000
    tok = Tokenizer.from_ranks("t", CL100K_PATTERN, ranks)
    unspell = {c: b for b, c in bytes_to_unicode().items()}
    held_out = "\n".join(wiki[20:24])[:200_000]
    for text in [held_out, *UNICODE_SAMPLES]:
        ours = [tok.token_bytes(i) for i in tok.encode(text)]
        theirs = [bytes(unspell[c] for c in t) for t in hf.encode(text).tokens]
        assert ours == theirs


def test_train_bpe_learns_the_corpus(trained: Tokenizer):
    corpus = _corpus(seed=1)
    text = " ".join(corpus)
    byte_len = len(text.encode())
    # frequent words became single tokens: far fewer tokens than bytes
    assert len(trained.encode(text)) < byte_len / 2.5
    assert len(trained.encode(" population")) == 1
    # single bytes keep their byte value as rank
    assert all(trained.mergeable_ranks[bytes([b])] == b for b in range(256))


def test_hf_pattern_matches_tiktoken_semantics():
    assert hf_pattern(r"\p{N}{1,3}+|\s++$") == r"(?>\p{N}{1,3})|\s++\z"
    assert hf_pattern(O200K_PATTERN) == O200K_PATTERN  # nothing to translate


# -- saving and the Hugging Face copy --------------------------------------------------------------


def test_save_load_roundtrip_and_model_dir(tmp_path, trained: Tokenizer):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    trained.save(model_dir)
    assert (model_dir / "config.json").read_text().startswith("{")  # other files kept
    loaded = load_tokenizer(model_dir)
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.mergeable_ranks == trained.mergeable_ranks
    assert loaded.pat_str == trained.pat_str and loaded.name == trained.name
    for text in UNICODE_SAMPLES:
        assert loaded.encode(text) == trained.encode(text)
    # saving again over the same directory (a retrained tokenizer) is read fresh, not from a cache
    other = train_bpe(_corpus(seed=5)[:50], vocab_size=400, show_progress=False)
    other.save(model_dir)
    assert load_tokenizer(model_dir).vocab_size == 400
    meta = json.loads((model_dir / "raychat_tokenizer.json").read_text())
    assert meta["eot_id"] == other.eot_id


def test_hf_tokenizer_json_encodes_identically(tmp_path, trained: Tokenizer):
    trained.save(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / HF_TOKENIZER_FILE))
    samples = [*UNICODE_SAMPLES, " ".join(_corpus(seed=3)[:30]), "a<|endoftext|>b<|im_start|>x<|im_end|>"]
    for text in samples:
        ids = trained.encode(text, allow_special=True)
        assert hf.encode(text, add_special_tokens=False).ids == ids
        assert hf.decode(ids, skip_special_tokens=False) == text
    assert hf.token_to_id(ENDOFTEXT) == trained.eot_id
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["eos_token"] == ENDOFTEXT


def test_gpt2_hf_copy_matches(gpt2: Tokenizer, shared_data):
    hf = to_hf_tokenizer(gpt2)
    text = (shared_data / "text" / "tinyshakespeare_input.txt").read_text()[:100_000]
    for sample in [text, *UNICODE_SAMPLES]:
        assert hf.encode(sample, add_special_tokens=False).ids == gpt2.encode(sample)


def test_transformers_loads_the_saved_directory(tmp_path, trained: Tokenizer):
    transformers = pytest.importorskip("transformers")
    trained.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = UNICODE_SAMPLES[1] + " " + UNICODE_SAMPLES[3]
    assert hf.encode(text, add_special_tokens=False) == trained.encode(text)
    assert hf.eos_token_id == trained.eot_id
    assert hf.decode(trained.encode(text)) == text
