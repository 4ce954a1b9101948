"""The reward stage's data: pairs from every source, held out, mixed, tokenized once, batched per rank.

Built on the driver before any worker starts (``build_pair_data``) and written under ``<run>/rm_data/``:

    index.json                   groups, sizes, what each source read and skipped, the fingerprint
    train.{ids,offsets,groups}.npy, train.mixture.npy    tokenized training pairs and the mixture
    heldout.{ids,offsets,groups}.npy                     tokenized held-out pairs
    world/{train,heldout}.jsonl  the tiny world's pairs, in the ``pairs`` file format, to read

A pair is two sequences, chosen then rejected (``lm.reward_model.reward_input_ids``: the prompt and
the reply up to its ``<|im_end|>``; the prompt's oldest exchanges dropped when a pair is longer than
``seq_len``; a pair whose reply alone is too long is dropped and counted). Workers memory-map the
arrays, so a large preference set is neither pickled to them nor copied per worker.

Held out: the world's pairs are held out by entity and problem (pipelines/rm/world_pairs.py); a file
source's by a stable hash of each pair's first user turn (``heldout_fraction``, at most
``max_heldout``), so pairs that open with the same question stay on one side. The mixture
(``epochs`` per source, or ``mixture_size`` split by ``weight``) is over training pairs only.

Batches: the mixture is visited in a seeded permutation per epoch (pretraining's ``SampleOrder``); the
data position is the number of mixture pairs consumed, so a resumed run continues with the very pairs
that would have come next. A micro-batch's sequences are packed into rows of ``seq_len`` tokens with
document ids (lm/train/packing.py): short world pairs and long HH transcripts share rows without padding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lm.chat import ChatFormat, ConversationTooLong
from lm.chat_messages import ChatFormatError
from lm.train.packing import pack_sequences
from pipelines.pretrain.data import SampleOrder
from pipelines.rm.config import RMConfig
from pipelines.rm.pairs import PreferencePair, is_heldout
from pipelines.sft.sources import mixture_counts

log = logging.getLogger("raychat.rm")
SPLITS = ("train", "heldout")


@dataclass
class PairSet:
    """Tokenized pairs: sequence ``2i`` is pair i's chosen reply, ``2i + 1`` its rejected one."""

    ids: np.ndarray  # every sequence's ids, end to end
    offsets: np.ndarray  # sequence k is ids[offsets[k]:offsets[k + 1]]
    groups: np.ndarray  # pair -> group index

    def __len__(self) -> int:
        return len(self.groups)

    def sequence(self, k: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[k] : self.offsets[k + 1]], dtype=np.int64)

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    def save(self, directory: Path, name: str) -> None:
        for part in ("ids", "offsets", "groups"):
            np.save(directory / f"{name}.{part}.npy", getattr(self, part))

    @classmethod
    def open(cls, directory: str | Path, name: str) -> PairSet:
        d = Path(directory)
        return cls(
            *(np.load(d / f"{name}.{part}.npy", mmap_mode="r") for part in ("ids", "offsets", "groups"))
        )


@dataclass
class SourcePairs:
    """One source's pairs before tokenizing, and what loading it did."""

    name: str
    train: list[PreferencePair]
    heldout: list[PreferencePair]
    sized: Any  # the config with epochs / weight
    report: dict[str, Any] = field(default_factory=dict)


def hold_out(
    pairs: list[PreferencePair], fraction: float, cap: int | None, salt: str
) -> tuple[list, list, int]:
    """(train, held out, held-out pairs left unused by ``cap``) by a stable hash of each prompt."""
    train, held = [], []
    for p in pairs:
        (held if is_heldout(p.split_key(), fraction, salt) else train).append(p)
    unused = 0
    if cap is not None and len(held) > cap:
        unused = len(held) - cap
        held = random.Random(f"rm-heldout:{salt}").sample(held, cap)
    return train, held, unused


def tokenize(
    pairs: list[PreferencePair], chat: ChatFormat, max_tokens: int, groups: dict[str, int]
) -> tuple[PairSet, list[int], Counter[str]]:
    """The pairs that fit, as a PairSet; the indices of those kept; what was dropped and why."""
    chunks: list[list[int]] = []
    kept: list[int] = []
    group_ids: list[int] = []
    dropped: Counter[str] = Counter()
    for i, p in enumerate(pairs):
        try:
            chosen, rejected = p.input_ids(chat, max_tokens)
        except ConversationTooLong:
            dropped[f"{p.group}: longer than seq_len"] += 1
            continue
        except (ChatFormatError, ValueError) as e:
            dropped[f"{p.group}: {type(e).__name__}"] += 1
            log.warning("rm: pair %s cannot be rendered: %s", p.where, e)
            continue
        if chosen == rejected:
            dropped[f"{p.group}: both replies render the same"] += 1
            continue
        chunks += [chosen, rejected]
        kept.append(i)
        group_ids.append(groups[p.group])
    lengths = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dtype = np.uint32 if max((max(c) for c in chunks), default=0) >= 2**16 else np.uint16
    ids = np.fromiter((t for c in chunks for t in c), dtype=dtype, count=int(offsets[-1]))
    return PairSet(ids, offsets, np.array(group_ids, dtype=np.int32)), kept, dropped


def mixture(sources: list[SourcePairs], train_sizes: list[int], cfg: RMConfig, seed: int) -> np.ndarray:
    """Indices into the tokenized training pairs (sources end to end, in order), repeated or sampled
    per source by ``epochs`` or by ``weight`` of ``mixture_size``."""
    counts = mixture_counts(cfg.mixture_size, [s.sized for s in sources], train_sizes)
    rng = random.Random(f"rm-mixture:{seed}")
    out: list[int] = []
    start = 0
    for src, size, count in zip(sources, train_sizes, counts, strict=True):
        if size:
            whole, part = divmod(count, size)
            indices = list(range(start, start + size))
            out += indices * whole + rng.sample(indices, part)
            src.report["mixture_pairs"] = count
            src.report["epochs"] = round(count / size, 3)
        start += size
    return np.array(out, dtype=np.int64)


def write_pair_data(
    out: Path, sources: list[SourcePairs], chat: ChatFormat, cfg: RMConfig, seq_len: int, seed: int
) -> dict[str, Any]:
    """Tokenize, mix and write everything under ``out`` (module docstring); returns index.json."""
    groups = sorted({p.group for s in sources for p in (*s.train, *s.heldout)})
    group_index = {g: i for i, g in enumerate(groups)}
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"groups": groups, "seq_len": seq_len, "dropped": {}}
    digest = hashlib.sha256(json.dumps([groups, seq_len]).encode())
    sets: dict[str, list[PairSet]] = {split: [] for split in SPLITS}
    for src in sources:
        for split in SPLITS:
            pairs = src.train if split == "train" else src.heldout
            tokenized, kept, dropped = tokenize(pairs, chat, seq_len, group_index)
            sets[split].append(tokenized)
            src.report[f"{split}_pairs"] = len(kept)
            for reason, n in dropped.items():
                index["dropped"][f"{split} {reason}"] = n
    if index["dropped"]:  # a user's file of long pairs can lose most of them to seq_len: say so here
        total = sum(index["dropped"].values())
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(index["dropped"].items()))
        log.warning("rm: %d pairs left out (%s); the counts are in %s", total, reasons, out / "index.json")
    train_sizes = [len(s) for s in sets["train"]]
    if not sum(train_sizes):
        raise ValueError("no training pair fits: every pair was dropped (see rm_data/index.json 'dropped')")
    for split in SPLITS:
        merged = concat(sets[split])
        merged.save(out, split)
        digest.update(np.ascontiguousarray(merged.ids).tobytes())
        digest.update(np.ascontiguousarray(merged.groups).tobytes())
        index[split] = {
            "pairs": len(merged),
            "tokens": merged.tokens,
            "by_group": dict(Counter(groups[g] for g in np.asarray(merged.groups).tolist())),
        }
    mixed = mixture(sources, train_sizes, cfg, seed)
    np.save(out / "train.mixture.npy", mixed)
    digest.update(mixed.tobytes())
    index["train"]["mixture"] = len(mixed)
    index["sources"] = [{"name": s.name, **s.report} for s in sources]
    index["fingerprint"] = digest.hexdigest()[:16]
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")  # last: its presence means complete
    return index


def concat(parts: list[PairSet]) -> PairSet:
    if not parts:
        return PairSet(np.zeros(0, np.uint16), np.zeros(1, np.int64), np.zeros(0, np.int32))
    ids = np.concatenate([np.asarray(p.ids, dtype=np.uint32) for p in parts])
    offsets = [np.zeros(1, np.int64)]
    for p in parts:
        offsets.append(np.asarray(p.offsets[1:]) + offsets[-1][-1])
    dtype = np.uint16 if not len(ids) or ids.max() < 2**16 else np.uint32
    return PairSet(ids.astype(dtype), np.concatenate(offsets), np.concatenate([p.groups for p in parts]))


# -- batches on the workers ---------------------------------------------------------------------------


def pair_batch(
    pairs: PairSet, index: np.ndarray, row_len: int, pad_id: int, valid: bool = True
) -> dict[str, np.ndarray]:
    """Pairs ``index`` packed into rows: what ``lm.reward_model.bradley_terry_loss`` takes, plus each
    pair's group and a ``valid`` weight (0: padding that only keeps ranks in step)."""
    m = len(index)
    seqs = [pairs.sequence(2 * int(i)) for i in index] + [pairs.sequence(2 * int(i) + 1) for i in index]
    rows, ends = pack_sequences(seqs, row_len, pad_id)
    return {
        **rows,
        "chosen_last": ends[:m],
        "rejected_last": ends[m:],
        "group": np.asarray(pairs.groups[index], dtype=np.int64),
        "valid": np.full(m, float(valid)),
    }


class PairBatches:
    """One rank's training micro-batches of one optimizer step (module docstring)."""

    def __init__(
        self,
        pairs: PairSet,
        mixture: np.ndarray,
        batch_pairs: int,
        micro_batch_pairs: int,
        rank: int,
        world_size: int,
        seed: int,
        row_len: int,
        pad_id: int,
    ) -> None:
        self.pairs, self.mixture = pairs, mixture
        self.per_rank = batch_pairs // world_size
        self.micro, self.rank = micro_batch_pairs, rank
        self.row_len, self.pad_id = row_len, pad_id
        self.order = SampleOrder(len(mixture), seed)

    def step_batches(self, position: int) -> list[dict[str, np.ndarray]]:
        picks = self.order.windows(position + self.rank * self.per_rank, self.per_rank)
        index = np.asarray(self.mixture[picks])
        return [
            pair_batch(self.pairs, index[i : i + self.micro], self.row_len, self.pad_id)
            for i in range(0, self.per_rank, self.micro)
        ]


def eval_batches(
    pairs: PairSet, batch_pairs: int, rank: int, world_size: int, row_len: int, pad_id: int
) -> list[dict[str, np.ndarray]]:
    """This rank's share (pairs ``rank, rank + W, ...``) of the held-out pairs, padded with a zero-weight
    batch so that every rank runs the same number of forwards."""
    mine = np.arange(rank, len(pairs), world_size)
    out = [
        pair_batch(pairs, mine[i : i + batch_pairs], row_len, pad_id)
        for i in range(0, len(mine), batch_pairs)
    ]
    per_rank = -(-len(pairs) // world_size)
    needed = -(-per_rank // batch_pairs)
    while len(out) < max(1, needed):
        out.append(pair_batch(pairs, np.zeros(1, dtype=np.int64), row_len, pad_id, valid=False))
    return out
