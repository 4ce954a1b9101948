"""What a generated reply says, read the same way in training and in evaluation: its text (what the
rewards score: the assistant's own text, without tool queries or results), its tool calls, and whether
it revises itself (one of the configured self-correction markers, as a whole word or phrase)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lm.chat_messages import text_of


@dataclass
class Reply:
    text: str
    tool_calls: dict[str, int]  # "calc" / "search" -> calls
    revises: bool


class ReplyReader:
    def __init__(self, chat: Any, markers: Sequence[str]) -> None:
        self.chat = chat
        self.patterns = [re.compile(rf"(?<!\w){re.escape(m.lower())}(?!\w)") for m in markers]

    def read(self, token_ids: Sequence[int]) -> Reply:
        message = self.chat.parse_assistant(token_ids).message
        text = text_of(message)
        parts = message["content"] if isinstance(message["content"], list) else []
        calls = Counter(p["type"] for p in parts if p.get("type") in ("calc", "search"))
        lowered = text.lower()
        return Reply(text, dict(calls), any(p.search(lowered) for p in self.patterns))
