"""SFT examples as token arrays: conversations rendered once, then packed into rows step by step.

Why render on the driver, once: every rank and every restart must see the same examples in the same
order, and a rendered conversation (ids + loss mask, lm/chat.py) is what the loss needs. The examples
are stored as three flat arrays (``ids``, ``mask``, ``offsets``) in one ``.npz`` file under the run
directory, which workers memory-load; no Python objects per example travel to them.

**Loss on assistant tokens only**: an example's inputs are ``ids[:-1]`` and its targets ``ids[1:]``,
with IGNORE_INDEX wherever ``mask[1:]`` is 0 (prompt, role headers, system and user turns, tool
results). The trainer divides the summed loss by the number of targets that are left, over the whole
step (lm/train/losses.py), so the loss is per assistant token.

**Order and data position**: the examples form an endless stream, each epoch a seeded permutation;
the position is the number of examples consumed. A step packs examples from the position on into
``batch_rows`` rows (next fit, lm/train/packing.py: document ids keep packed conversations apart,
positions restart for each) and every rank takes its own rows, so a resumed run, with any number of
workers, continues with the step that would have come next.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lm.chat import ChatFormat, ChatFormatError, ConversationTooLong
from lm.train.losses import IGNORE_INDEX, target_index
from lm.train.packing import PackedRows, pack

log = logging.getLogger("raychat.sft")


@dataclass
class Examples:
    """Rendered conversations: example ``i`` is ``ids[offsets[i]:offsets[i+1]]`` with its loss mask."""

    ids: np.ndarray  # int32, flat
    mask: np.ndarray  # uint8, flat: 1 = trained
    offsets: np.ndarray  # int64, len = examples + 1
    skipped: Counter[str] = field(default_factory=Counter)  # conversation problems, by reason
    cut: int = 0  # conversations cut to fit a row (their first trained reply was cut)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Training length of each example (inputs = ids[:-1])."""
        return np.diff(self.offsets) - 1

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of example ``i``: targets IGNORE_INDEX where nothing is trained."""
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        ids = self.ids[start:end].astype(np.int64)
        targets = np.where(self.mask[start + 1 : end] > 0, ids[1:], IGNORE_INDEX)
        return ids[:-1], targets

    def trained_tokens(self) -> int:
        firsts = self.offsets[:-1]
        return int(self.mask.sum() - self.mask[firsts].sum()) if len(self) else 0

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            np.savez(f, ids=self.ids, mask=self.mask, offsets=self.offsets)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Examples:
        with np.load(path) as z:
            return cls(z["ids"], z["mask"], z["offsets"])

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.ids, self.mask, self.offsets):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


TOO_LONG = "too long: its first reply starts past seq_len"


def render_examples(conversations: Sequence[Any], chat: ChatFormat, seq_len: int) -> Examples:
    """Render each conversation to at most ``seq_len + 1`` tokens (a row of ``seq_len`` inputs).

    A conversation that is malformed, or whose first trained token does not fit, is skipped and
    counted by reason; one whose first reply had to be cut is kept and counted (``cut``). Nothing is
    logged here: a stage renders its training and validation sets (the ablation its sets twice), and
    ``log_skipped`` says once what the stage left out.
    """
    ids: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    skipped: Counter[str] = Counter()
    cut = 0
    for conv in conversations:
        try:
            r = chat.render_conversation(conv, max_tokens=seq_len + 1)
        except ConversationTooLong:
            skipped[TOO_LONG] += 1
            continue
        except ChatFormatError as e:
            skipped[f"malformed: {str(e)[:80]}"] += 1
            continue
        if not any(r.mask[1:]):
            skipped["nothing to train"] += 1
            continue
        cut += int(r.cut)
        ids.append(np.asarray(r.ids, dtype=np.int32))
        masks.append(np.asarray(r.mask, dtype=np.uint8))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    if ids:
        np.cumsum([len(x) for x in ids], out=offsets[1:])
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
    flat_mask = np.concatenate(masks) if masks else np.zeros(0, dtype=np.uint8)
    return Examples(flat, flat_mask, offsets, skipped, cut)


def log_skipped(stage: str, train: Examples, val: Examples, expected: bool = False) -> None:
    """One line for the conversations a stage left out, training and validation together, with the
    reasons. A warning about the user's data, unless the caller knowingly trains at a shorter row than
    the data was written for (``expected``: the distill stage's control on the sft mixture): INFO."""
    skipped = train.skipped + val.skipped
    if not skipped:
        return
    n = sum(skipped.values())
    n_val = sum(val.skipped.values())
    log.log(
        logging.INFO if expected else logging.WARNING,
        "%s: %d of %d conversations skipped (%d training, %d validation): %s",
        stage, n, len(train) + len(val) + n, n - n_val, n_val,
        "; ".join(f"{reason} ({count})" for reason, count in skipped.most_common()),
    )  # fmt: skip


class ExampleStream:
    """The endless, seeded order of examples: epoch ``e`` is permutation ``e`` of ``seed``."""

    def __init__(self, num_examples: int, seed: int) -> None:
        if num_examples < 1:
            raise ValueError("no examples to train on")
        self.n, self.seed = num_examples, seed
        self._perms: dict[int, np.ndarray] = {}

    def index(self, position: int) -> int:
        epoch, i = divmod(position, self.n)
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) > 2:
                self._perms.clear()
            perm = self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(perm[i])

    def from_position(self, position: int) -> Iterator[int]:
        while True:
            yield self.index(position)
            position += 1


def pack_step(
    examples: Examples, stream: ExampleStream, position: int, rows: int, row_len: int, pad_id: int
) -> tuple[PackedRows, int]:
    """The ``rows`` packed rows of the step that starts at ``position``, and the next position."""
    packed, consumed = pack(
        (examples.example(i) for i in stream.from_position(position)), row_len, rows, pad_id=pad_id
    )
    return packed, position + consumed


def count_steps(lengths: np.ndarray, stream: ExampleStream, until: int, rows: int, row_len: int) -> int:
    """Optimizer steps until ``until`` examples have been consumed (the same next-fit packing as
    ``pack_step``, on lengths alone)."""
    if len(lengths) and int(lengths.max()) > row_len:
        raise ValueError(f"an example has {int(lengths.max())} tokens, more than a row's {row_len}")
    steps, position = 0, 0
    while position < until:
        opened, used = 0, 0
        while True:
            n = int(lengths[stream.index(position)])
            if opened == 0 or used + n > row_len:
                if opened == rows:  # the step is full: this example opens the next one
                    break
                opened, used = opened + 1, 0
            used += n
            position += 1
        steps += 1
    return steps


def rows_for_rank(
    packed: PackedRows, rank: int, world_size: int, micro_rows: int
) -> list[dict[str, np.ndarray]]:
    """This rank's rows of a step (rows ``rank::world_size``), as micro-batches of ``micro_rows``."""
    batch = {k: v[rank::world_size] for k, v in packed.batch().items()}
    n = len(batch["input_ids"])
    micro = [{k: v[i : i + micro_rows] for k, v in batch.items()} for i in range(0, n, micro_rows)]
    for m in micro:  # only the assistant tokens go through the output layer (lm/train/losses.py)
        m["target_index"] = target_index(m["targets"])
    return micro


def eval_rows(examples: Examples, row_len: int, rank: int, world_size: int, micro_rows: int, pad_id: int):
    """Every example once, packed; this rank's share as micro-batches, padded with empty rows so
    every rank runs the same number of forwards (an empty row has no targets: it counts nowhere)."""
    if not len(examples):
        return []
    packed, _ = pack([examples.example(i) for i in range(len(examples))], row_len, pad_id=pad_id)
    total = len(packed.input_ids)
    per_rank = -(-total // world_size)
    per_rank = -(-per_rank // micro_rows) * micro_rows
    padded = per_rank * world_size
    if padded > total:
        extra = padded - total
        packed = PackedRows(
            np.concatenate([packed.input_ids, np.full((extra, row_len), pad_id, dtype=np.int64)]),
            np.concatenate([packed.targets, np.full((extra, row_len), IGNORE_INDEX, dtype=np.int64)]),
            np.concatenate([packed.document_ids, np.full((extra, row_len), -1, dtype=np.int64)]),
        )
    return rows_for_rank(packed, rank, world_size, micro_rows)
