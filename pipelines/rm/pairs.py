"""A preference pair: one prompt, the reply people prefer and the one they do not.

Every source (the tiny world's generators, HH-RLHF, LLaMA-Factory's DPO data, TRL-style files) becomes
``PreferencePair``s; the reward stage renders each side with the chat format
(``lm.reward_model.reward_input_ids``) and trains on the difference of their scores. The shared prompt
matters: both replies are judged after the very same context, and held-out splits go by the prompt,
so two pairs that open the same way never land on both sides.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from lm.chat import ChatFormat, ConversationTooLong
from lm.chat_messages import Conversation, Message, normalize_conversation
from lm.reward_model import reward_input_ids
from pipelines.sft.world_data import conversation_text


@dataclass
class PreferencePair:
    """``prompt``: a conversation (``messages``, optionally ``tools``) ending with a user or tool turn;
    ``chosen`` / ``rejected``: the assistant message(s) that follow it. ``group`` is what accuracies are
    reported by (the source's name, or ``world/<kind>``)."""

    prompt: Conversation
    chosen: list[Message]
    rejected: list[Message]
    group: str
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    rendered: tuple[int, list[int], list[int]] | None = field(default=None, repr=False, compare=False)

    def split_key(self) -> str:
        """The prompt's first user turn: pairs that open with the same question are held out together."""
        first = next((m for m in self.prompt["messages"] if m["role"] == "user"), None)
        return conversation_text({"messages": [first]}) if first else ""

    def text(self) -> str:
        """Everything the pair shows the model (not tool results), for held-out name audits."""
        return "\n".join(
            conversation_text({"messages": m}) for m in (self.prompt["messages"], self.chosen, self.rejected)
        )

    def input_ids(self, chat: ChatFormat, max_tokens: int) -> tuple[list[int], list[int]]:
        """The chosen and rejected sequences the reward model scores (``reward_input_ids``; raises
        ``ConversationTooLong`` past ``max_tokens``), rendered once and kept."""
        if self.rendered is None or self.rendered[0] != max_tokens:
            chosen, rejected = reward_input_ids(chat, self.prompt, [self.chosen, self.rejected], max_tokens)
            self.rendered = (max_tokens, chosen, rejected)
        return self.rendered[1], self.rendered[2]

    def fits(self, chat: ChatFormat, max_tokens: int) -> bool:
        try:
            self.input_ids(chat, max_tokens)
        except ConversationTooLong:
            return False
        return True

    def record(self) -> dict[str, Any]:
        """The pair in the ``pairs`` file format (pipelines/rm/preferences.py reads it back)."""
        out: dict[str, Any] = {
            "prompt": self.prompt["messages"],
            "chosen": self.chosen,
            "rejected": self.rejected,
            "meta": {"group": self.group, **self.meta},
        }
        if self.prompt.get("tools"):
            out["tools"] = self.prompt["tools"]
        return out


def make_pair(
    prompt: list[Message],
    chosen: list[Message],
    rejected: list[Message],
    group: str,
    where: str = "",
    tools: list[Any] | None = None,
    **meta: Any,
) -> PreferencePair:
    """A checked pair: the messages in canonical form (``ChatFormatError`` names what is wrong)."""
    conv = normalize_conversation({"messages": prompt, **({"tools": tools} if tools else {})})
    return PreferencePair(
        prompt=conv,
        chosen=normalize_conversation(chosen)["messages"],
        rejected=normalize_conversation(rejected)["messages"],
        group=group,
        where=where,
        meta=meta,
    )


def is_heldout(key: str, fraction: float, salt: str = "") -> bool:
    """A stable draw: ``fraction`` of all keys are held out, the same ones on every run and machine."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
