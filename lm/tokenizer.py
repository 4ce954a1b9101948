"""Our tokenizer: a thin wrapper around one ``tiktoken.Encoding``, loadable from files only.

tiktoken does every encode and decode (it is fast and multi-threaded); this module only decides where
the ranks come from, which special tokens exist and how a tokenizer is saved beside a run or a model.

    from lm.tokenizer import load_tokenizer
    tok = load_tokenizer("gpt2:../shared/data/tokenizers/gpt2")   # GPT-2's vocab.bpe + encoder.json
    tok = load_tokenizer("tiktoken:cl100k_base.tiktoken")          # any .tiktoken ranks file
    tok = load_tokenizer("runs/tiny/tokenizer")                    # a saved raychat tokenizer
    tok = load_tokenizer("runs/tiny/models/base")                  # the tokenizer saved with a model

Special tokens (DESIGN.md) are added to every source, in ``SPECIAL_TOKENS`` order, with ids right
after the largest rank, so GPT-2's ``<|endoftext|>`` keeps its id 50256. Nothing is downloaded:
``tiktoken.get_encoding`` is never called.

A saved directory holds ``tokenizer.tiktoken`` (the ranks, tiktoken's base64 format) and
``raychat_tokenizer.json`` (name, split pattern, special tokens): those two are all we need to load
it. Beside them go ``tokenizer.json`` and ``tokenizer_config.json``, the same tokenizer for Hugging
Face ``tokenizers``/``transformers``/vLLM users (our own metadata does not live in
``tokenizer_config.json`` because transformers reads that name as its own).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
import tiktoken.load

from lm import atomic
from lm.chat_template import CHAT_TEMPLATE
from lm.files import read_bytes, read_json_object, read_text
from lm.split_patterns import (  # the patterns are part of this module's API too
    CL100K_PATTERN,  # noqa: F401
    DEFAULT_PATTERN,
    O200K_PATTERN,  # noqa: F401
    PATTERNS,
    R50K_PATTERN,
)

log = logging.getLogger(__name__)

FORMAT = "raychat-tokenizer-v1"
RANKS_FILE = "tokenizer.tiktoken"
META_FILE = "raychat_tokenizer.json"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"

ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
# DESIGN.md's special tokens, then ones reserved for later stages (calculator tool, padding). The order
# fixes the ids: the first goes right after the ranks. Append new ones at the end only.
SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    "<|im_start|>",
    "<|im_end|>",
    "<|search_start|>",
    "<|search_end|>",
    "<|result_start|>",
    "<|result_end|>",
    "<|calc_start|>",
    "<|calc_end|>",
    PAD,
)


class TokenizerError(ValueError):
    """A tokenizer spec or file that cannot be used, described for a person."""


def _missing_bytes(ranks: dict[bytes, int]) -> list[int]:
    """The byte values without a rank of their own (a byte-level tokenizer has none)."""
    return [b for b in range(256) if bytes([b]) not in ranks]


def split_pattern(name: str) -> str:
    """The regex of a named split pattern (gpt2/r50k/p50k, cl100k/gpt4, o200k)."""
    try:
        return PATTERNS[name.lower()]
    except KeyError:
        raise TokenizerError(f"unknown split pattern {name!r}; known: {', '.join(PATTERNS)}") from None


class Tokenizer:
    """One ``tiktoken.Encoding`` plus our special tokens, and how to save it."""

    def __init__(self, encoding: tiktoken.Encoding, source: str = "") -> None:
        if ENDOFTEXT not in encoding._special_tokens:
            raise TokenizerError(f"encoding {encoding.name!r} has no {ENDOFTEXT} special token")
        self.encoding = encoding
        self.source = source

    @classmethod
    def from_ranks(
        cls,
        name: str,
        pat_str: str,
        mergeable_ranks: dict[bytes, int],
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        source: str = "",
    ) -> Tokenizer:
        """Build from ranks; special tokens get the ids right after the largest rank, in order."""
        if not mergeable_ranks:
            raise TokenizerError(f"tokenizer {name!r} has no ranks")
        missing = _missing_bytes(mergeable_ranks)
        if missing:
            raise TokenizerError(
                f"tokenizer {name!r} is not byte-level: {len(missing)} single bytes have no rank "
                f"(first: {missing[0]})"
            )
        first = max(mergeable_ranks.values()) + 1
        specials = {tok: first + i for i, tok in enumerate(special_tokens)}
        encoding = tiktoken.Encoding(
            name=name, pat_str=pat_str, mergeable_ranks=mergeable_ranks, special_tokens=specials
        )
        return cls(encoding, source=source)

    # -- facts ----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.encoding.name

    @property
    def pat_str(self) -> str:
        return self.encoding._pat_str

    @property
    def mergeable_ranks(self) -> dict[bytes, int]:
        return self.encoding._mergeable_ranks

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self.encoding._special_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the model's embedding rows)."""
        return self.encoding.n_vocab

    @property
    def eot_id(self) -> int:
        return self.encoding.eot_token

    def token_id(self, special: str) -> int:
        try:
            return self.encoding._special_tokens[special]
        except KeyError:
            raise KeyError(
                f"{special!r} is not a special token of {self.name}; they are: {', '.join(self.special_tokens)}"
            ) from None

    # -- encode / decode --------------------------------------------------------------------------

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``.

        With ``allow_special=False`` (the default) special-token text such as ``<|im_end|>`` is
        encoded as ordinary text, so untrusted text can never inject control tokens; with True it
        becomes the special token.
        """
        if allow_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """Encode many texts as ordinary text on ``num_threads`` threads (tiktoken drops the GIL)."""
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def encode_batch_numpy(self, texts: Sequence[str], num_threads: int = 1) -> list[np.ndarray]:
        """Like ``encode_batch`` but each result is a uint32 numpy array straight from tiktoken's
        buffer: no Python int objects, which is what bulk tokenization wants (see
        benchmarks/tokenize_throughput.py). One thread encodes in the calling thread, with no pool."""

        def one(text: str) -> np.ndarray:
            return self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())

        if num_threads <= 1:
            return [one(t) for t in texts]
        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(one, texts, chunksize=max(1, len(texts) // (4 * num_threads))))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 (a cut multi-byte character) become U+FFFD."""
        return self.encoding.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self.encoding.decode_bytes(list(ids))

    def token_bytes(self, token_id: int) -> bytes:
        return self.encoding.decode_single_token_bytes(token_id)

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, source={self.source!r})"

    # -- saving -----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], hf: bool = True) -> Path:
        """Write the tokenizer's files into ``directory`` (created if needed; other files are kept).

        ``hf=False`` skips the Hugging Face files (converting a 200k vocabulary takes seconds).
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        ranks = sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])
        lines = b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for tok, rank in ranks)
        atomic.write_bytes(out / RANKS_FILE, lines)
        meta = {
            "format": FORMAT,
            "name": self.name,
            "pat_str": self.pat_str,
            "special_tokens": self.special_tokens,
            "vocab_size": self.vocab_size,
            "eot_id": self.eot_id,
            "source": self.source,
        }
        atomic.write_json(out / META_FILE, meta, ensure_ascii=False, default=None)
        if hf:
            self._save_hf(out)
        return out

    def _save_hf(self, out: Path) -> None:
        try:
            hf = to_hf_tokenizer(self)
        except Exception as e:  # the ecosystem copy is a convenience; our own files are complete
            log.warning("could not build a Hugging Face tokenizer.json for %s: %s", self.name, e)
            return
        atomic.write_text(out / HF_TOKENIZER_FILE, hf.to_str())
        hf_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": None,
            "eos_token": ENDOFTEXT,
            "pad_token": PAD if PAD in self.special_tokens else ENDOFTEXT,
            "unk_token": None,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
            "extra_special_tokens": {},
            "chat_template": CHAT_TEMPLATE,  # lm/chat.py's format, for transformers/vLLM users
        }
        atomic.write_json(out / HF_CONFIG_FILE, hf_config, default=None)


# -- loading --------------------------------------------------------------------------------------

SPEC_HELP = (
    "a tokenizer is one of: a raychat tokenizer or model directory (with tokenizer.tiktoken and "
    "raychat_tokenizer.json), 'gpt2:<dir>' (GPT-2's vocab.bpe + encoder.json), "
    "'tiktoken:<file>' (a .tiktoken ranks file)"
)


def load_tokenizer(spec: str | os.PathLike[str], pattern: str | None = None) -> Tokenizer:
    """Load a tokenizer from files (see ``SPEC_HELP``); ``pattern`` names the split pattern of a
    ``tiktoken:`` file (default: guessed from the file name, else cl100k)."""
    text = os.fspath(spec)
    if text.startswith("gpt2:"):
        return load_gpt2(text[len("gpt2:") :])
    if text.startswith("tiktoken:"):
        return load_tiktoken_file(text[len("tiktoken:") :], pattern=pattern)
    path = Path(text)
    if path.is_dir():
        if (path / META_FILE).exists():
            return load_saved(path)
        if (path / "vocab.bpe").is_file() and (path / "encoder.json").is_file():
            return load_gpt2(path)
        raise TokenizerError(f"{path} holds no tokenizer ({META_FILE} missing); {SPEC_HELP}")
    if path.is_file() and path.suffix == ".tiktoken":
        return load_tiktoken_file(path, pattern=pattern)
    if text == "train":
        raise TokenizerError("'train' means 'train a tokenizer in the tokenize stage'; " + SPEC_HELP)
    raise TokenizerError(f"tokenizer not found: {text!r}; {SPEC_HELP}")


def load_saved(directory: str | os.PathLike[str]) -> Tokenizer:
    """A directory written by ``Tokenizer.save`` (a tokenizer directory or a model directory).

    Both files are checked against each other, so that a corrupt, truncated or mismatched pair is
    refused with the file's name instead of loading as a different tokenizer: every single byte has a
    rank, and the special tokens start right after the largest rank, as ``from_ranks`` places them.
    """
    d = Path(directory)
    meta_path, ranks_path = d / META_FILE, d / RANKS_FILE
    try:
        meta = read_json_object(meta_path, TokenizerError)
    except FileNotFoundError:
        raise TokenizerError(f"{meta_path} not found; {SPEC_HELP}") from None
    if meta.get("format") != FORMAT:
        raise TokenizerError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    ranks = read_tiktoken_ranks(ranks_path)
    try:
        specials = {str(k): int(v) for k, v in meta["special_tokens"].items()}
        encoding = tiktoken.Encoding(
            name=str(meta["name"]),
            pat_str=str(meta["pat_str"]),
            mergeable_ranks=ranks,
            special_tokens=specials,
        )
        tokenizer = Tokenizer(encoding, source=str(meta.get("source", "")))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise TokenizerError(f"{meta_path} is incomplete or inconsistent with {RANKS_FILE}: {e}") from None
    missing = _missing_bytes(ranks)
    first_special, last_rank = min(specials.values()), max(ranks.values())
    if missing or first_special != last_rank + 1:
        problem = (
            f"{len(missing)} of the 256 single bytes have no rank (first: {missing[0]})"
            if missing
            else f"its ranks end at {last_rank} but {META_FILE}'s special tokens start at {first_special}"
        )
        raise TokenizerError(
            f"{ranks_path}: {problem}; the file is truncated or corrupt, or does not belong with {meta_path}"
        )
    return tokenizer


def load_gpt2(directory: str | os.PathLike[str]) -> Tokenizer:
    """GPT-2 from its ``vocab.bpe`` + ``encoder.json`` (the files tiktoken's ``gpt2`` is built from)."""
    d = Path(directory)
    vocab_bpe, encoder_json = d / "vocab.bpe", d / "encoder.json"
    for f in (vocab_bpe, encoder_json):
        if not f.exists():
            raise TokenizerError(f"gpt2:{d}: {f.name} not found in {d}")
    # each file on its own first, so that a corrupt one is named; tiktoken's errors name neither
    read_text(vocab_bpe, TokenizerError)
    read_json_object(encoder_json, TokenizerError)
    try:
        with _no_tiktoken_cache():
            ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
    except (AssertionError, ValueError, KeyError) as e:
        raise TokenizerError(
            f"gpt2:{d}: vocab.bpe and encoder.json do not match or are malformed ({e!r})"
        ) from None
    return Tokenizer.from_ranks("gpt2", R50K_PATTERN, ranks, source=f"gpt2:{d}")


def load_tiktoken_file(path: str | os.PathLike[str], pattern: str | None = None) -> Tokenizer:
    """Any ``.tiktoken`` ranks file; the split pattern is ``pattern`` or guessed from the file name."""
    p = Path(path)
    if not p.exists():
        raise TokenizerError(f"tiktoken:{p}: file not found")
    name = pattern or _guess_pattern(p.name)
    ranks = read_tiktoken_ranks(p)
    return Tokenizer.from_ranks(
        p.name.removesuffix(".tiktoken"), split_pattern(name), ranks, source=f"tiktoken:{p}"
    )


def _guess_pattern(filename: str) -> str:
    low = filename.lower()
    for key in ("o200k", "cl100k", "r50k", "p50k", "gpt2"):
        if key in low:
            return key
    return DEFAULT_PATTERN


def read_tiktoken_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file (``base64(token) rank`` per line).

    Not ``tiktoken.load.load_tiktoken_bpe``: that caches local files in /tmp keyed by their path, so
    a tokenizer retrained into the same directory would load stale ranks.
    """
    p = Path(path)
    try:
        data = read_bytes(p, TokenizerError)
    except FileNotFoundError:
        raise TokenizerError(f"{p} not found") from None
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:
            raise TokenizerError(f"{p}:{lineno}: expected 'base64-token rank', got {line[:80]!r}") from None
    if not ranks:
        raise TokenizerError(f"{p} holds no ranks")
    return ranks


@contextlib.contextmanager
def _no_tiktoken_cache() -> Iterator[None]:
    """tiktoken caches even local files in /tmp by path; an empty TIKTOKEN_CACHE_DIR turns that off."""
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


# -- the Hugging Face copy ------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level BPE files use to spell bytes."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _bpe_parts(ranks: Mapping[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Run tiktoken's merge rule on ``token`` using only ranks below ``max_rank``."""
    parts = [bytes([b]) for b in token]
    while True:
        best_i, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best_i, best_rank = i, r
        if best_i < 0:
            return parts
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]


def hf_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list equivalent to ``ranks``: each multi-byte token is the merge of the two parts
    tiktoken's rule reaches just before it (tokens unreachable that way are whole-piece only)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = _bpe_parts(ranks, token, rank)
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def hf_pattern(pat_str: str) -> str:
    """tiktoken's regex (Rust fancy-regex) spelled for Oniguruma, which ``tokenizers`` uses.

    Two differences matter for our patterns: ``$`` is end of text in Rust but end of line in
    Oniguruma (so ``\\z``), and ``{m,n}+`` is possessive in Rust but "repeat the repetition" in
    Oniguruma's Ruby syntax (so it becomes the atomic group ``(?>X{m,n})`` for a single atom X).
    """
    out = re.sub(r"(?<!\\)\$", r"\\z", pat_str)
    atom = r"(\\[pP]\{\w+\}|\\.|\[(?:\\.|[^\]])*\]|[^\\()\[\]])"
    return re.sub(atom + r"(\{\d+(?:,\d*)?\})\+", r"(?>\1\2)", out)


def to_hf_tokenizer(tok: Tokenizer) -> Any:
    """The same tokenizer as a ``tokenizers.Tokenizer`` (byte-level BPE, same ids, same specials)."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    table = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(table[x] for x in b)

    ranks = tok.mergeable_ranks
    vocab = {spell(t): r for t, r in ranks.items()}
    vocab.update(tok.special_tokens)
    merges = [(spell(a), spell(b)) for a, b in hf_merges(ranks)]
    # ignore_merges: a piece that is itself a token is emitted whole, as tiktoken does.
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False)
    hf = HFTokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(hf_pattern(tok.pat_str)), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    specials = sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, _ in specials])
    for t, i in specials:
        if hf.token_to_id(t) != i:
            raise TokenizerError(f"Hugging Face copy put {t} at {hf.token_to_id(t)}, expected {i}")
    return hf
