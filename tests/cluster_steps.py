"""A custom clean step for tests/test_cluster.py: every document takes a while, so that a node lost
once pass 1 has finished its first file finds the other files still being worked on, on a machine of
any speed (the tiny world's 60 records otherwise clean in well under a second)."""

from __future__ import annotations

import time
from typing import Any


def slow(docs: list[dict[str, Any]], seconds_per_doc: float = 0.1) -> list[dict[str, Any]]:
    time.sleep(seconds_per_doc * len(docs))
    return docs
