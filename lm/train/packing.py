"""Several sequences in one fixed-length row, with document ids so they never attend to each other.

Why: chat conversations and rollouts are short and uneven; padding each to the longest wastes most
of the compute, while packing them end to end into rows of ``row_len`` tokens wastes only each row's
tail. ``Transformer.forward(..., document_ids=...)`` then masks attention to each sequence's own tokens
and restarts positions per sequence (lm/model.py), so a packed sequence is computed exactly as if it
were alone (tests/test_train.py checks the logits).

Rows are filled in the examples' order (next fit): the first ``consumed`` examples go in, which makes
"examples consumed" a data position that a checkpoint can record and a resumed run can continue from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lm.train.losses import IGNORE_INDEX

PAD_DOCUMENT = -1  # the document id of a row's padding tail (it attends only to itself)


@dataclass
class PackedRows:
    """``[rows, row_len]`` int64 arrays: what ``next_token_loss`` and the model take."""

    input_ids: np.ndarray
    targets: np.ndarray
    document_ids: np.ndarray

    def batch(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "targets": self.targets, "document_ids": self.document_ids}


def pack(
    examples: Sequence[tuple[Sequence[int], Sequence[int]]],
    row_len: int,
    num_rows: int | None = None,
    pad_id: int = 0,
) -> tuple[PackedRows, int]:
    """Pack ``(input_ids, targets)`` pairs (equal lengths; targets IGNORE_INDEX where no loss) into rows.

    With ``num_rows``, fills exactly that many rows and stops at the first example that does not fit
    any more; otherwise uses as many rows as all the examples need. Returns the rows and the number of
    examples packed (from the front of ``examples``). An example longer than ``row_len`` is an error:
    the stage decides whether to truncate or drop it.
    """
    if row_len < 1:
        raise ValueError(f"row_len must be >= 1, got {row_len}")
    rows: list[list[tuple[Sequence[int], Sequence[int]]]] = []
    used = 0  # tokens in the last row
    consumed = 0
    for inputs, targets in examples:
        n = len(inputs)
        if n != len(targets):
            raise ValueError(f"example {consumed}: {n} input ids but {len(targets)} targets")
        if n > row_len:
            raise ValueError(
                f"example {consumed} has {n} tokens, more than a row's {row_len}; truncate or drop it"
            )
        if n == 0:
            consumed += 1
            continue
        if not rows or used + n > row_len:
            if num_rows is not None and len(rows) == num_rows:
                break
            rows.append([])
            used = 0
        rows[-1].append((inputs, targets))
        used += n
        consumed += 1
    total = len(rows) if num_rows is None else num_rows
    input_ids = np.full((total, row_len), pad_id, dtype=np.int64)
    target_ids = np.full((total, row_len), IGNORE_INDEX, dtype=np.int64)
    document_ids = np.full((total, row_len), PAD_DOCUMENT, dtype=np.int64)
    for r, row in enumerate(rows):
        start = 0
        for doc, (inputs, targets) in enumerate(row):
            end = start + len(inputs)
            input_ids[r, start:end] = inputs
            target_ids[r, start:end] = targets
            document_ids[r, start:end] = doc
            start = end
    return PackedRows(input_ids, target_ids, document_ids), consumed


def sequence_ends(document_ids: np.ndarray) -> np.ndarray:
    """``[n, 2]`` (row, index of the last token) of every sequence in packed rows, in packing order
    (row by row, left to right): where a reward model reads each sequence's score."""
    doc = np.asarray(document_ids)
    nxt = np.full_like(doc, PAD_DOCUMENT)
    nxt[:, :-1] = doc[:, 1:]
    rows, cols = np.nonzero((doc != PAD_DOCUMENT) & (nxt != doc))
    return np.stack([rows, cols], axis=1).astype(np.int64)


def pack_sequences(
    sequences: Sequence[Sequence[int]], row_len: int, pad_id: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every sequence (none empty, none over ``row_len``) packed longest first into as many rows as
    they need: ``{"input_ids", "document_ids"}`` and, for each sequence in the order given, its
    ``(row, last token index)``. For models that score whole sequences (a reward model), not targets."""
    if any(len(s) == 0 for s in sequences):
        raise ValueError("cannot pack an empty sequence")
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    rows, _ = pack([(sequences[i], sequences[i]) for i in order], row_len, pad_id=pad_id)
    ends = np.empty((len(sequences), 2), dtype=np.int64)
    ends[order] = sequence_ends(rows.document_ids)
    return {"input_ids": rows.input_ids, "document_ids": rows.document_ids}, ends
