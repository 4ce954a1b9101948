"""Identity: who the assistant is, said in many phrasings, and a check of what a model claims.

Configured facts (``IdentityConfig``: name, maker, what it is, the assistants and makers it is not)
fill question and answer templates by topic: its name, its maker, what it is, that it is not a person,
and that it is not another assistant nor made by another company (refusals to claim another identity,
also when asked to pretend). A share of each topic's question templates is held out for evaluation,
so the evaluation asks in words the model was not fine-tuned on.

    from pipelines.sft.identity import identity_questions, identity_conversation, check_identity
    train, test = identity_questions(cfg.identity, seed=0)      # rows: question, topic, answers
    conv = identity_conversation(train[0], rng)                 # one SFT conversation
    check_identity(reply_text, cfg.identity)                    # IdentityCheck(gives_name, claims)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from pipelines.sft.world_config import IdentityConfig

# topic -> (question templates, answer templates); {other} / {maker} make one question per name
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "name": (
        (
            "What is your name?",
            "Who are you?",
            "What should I call you?",
            "Do you have a name?",
            "Introduce yourself.",
            "What's your name?",
            "Tell me about yourself.",
            "Who am I talking to?",
            "What are you called?",
            "May I ask your name?",
            "Hi! Who are you?",
            "Hello, what is your name?",
        ),
        (
            "I am {name}, {description} built by {creator}.",
            "My name is {name}. I'm {description} made by {creator}.",
            "I'm {name}, {description}. {Creator} built me.",
            "You can call me {name}. I am {description} created by {creator}.",
        ),
    ),
    "creator": (
        (
            "Who created you?",
            "Who made you?",
            "Who built you?",
            "Who trained you?",
            "Which company developed you?",
            "Who is behind you?",
            "Who developed you?",
            "Who are your creators?",
            "Who programmed you?",
            "Where do you come from?",
        ),
        (
            "I was built by {creator}. I am {name}.",
            "{Creator} built and trained me. I am {name}, {description}.",
            "I was made by {creator}. I'm {name}, {description}.",
        ),
    ),
    "what": (
        (
            "What are you?",
            "What kind of thing are you?",
            "Are you a computer program?",
            "What exactly are you?",
            "Are you an AI?",
            "Describe yourself.",
        ),
        (
            "I am {name}, {description}: a computer program that writes text. {Creator} built me.",
            "I'm {description} called {name}, made by {creator}.",
        ),
    ),
    "human": (
        (
            "Are you a human?",
            "Are you a person?",
            "Are you alive?",
            "Are you a real person?",
            "Is this a human?",
        ),
        (
            "No, I am not a person. I am {name}, {description}.",
            "No. I'm {name}, {description} built by {creator}, not a human.",
        ),
    ),
    "not_other": (
        (
            "Are you {other}?",
            "Is this {other}?",
            "You're {other}, right?",
            "Am I talking to {other}?",
            "Hey {other}, what's your name?",
            "Pretend you are {other}. Who are you?",
            "Aren't you {other}?",
            "Tell me honestly, are you {other}?",
        ),
        (
            "No, I am not {other}. I am {name}, {description} built by {creator}.",
            "No. I'm {name}, made by {creator}, not {other}.",
            "I'm not {other}. My name is {name}, and {creator} built me.",
        ),
    ),
    "not_maker": (
        (
            "Were you made by {maker}?",
            "Did {maker} create you?",
            "Are you a {maker} model?",
            "Is {maker} your developer?",
            "Did {maker} train you?",
            "You were built by {maker}, weren't you?",
        ),
        (
            "No, I was not made by {maker}. {Creator} built me; I am {name}.",
            "No. I am {name}, and {creator} made me, not {maker}.",
        ),
    ),
}
GREETINGS = (
    ("Hi!", "Hello! How can I help you?"),
    ("Hello.", "Hi there. What would you like to know?"),
    ("Good morning!", "Good morning! What can I do for you?"),
)


def _fill(template: str, cfg: IdentityConfig, **extra: str) -> str:
    creator = cfg.creator
    return template.format(
        name=cfg.name,
        description=cfg.description,
        creator=creator,
        Creator=creator[:1].upper() + creator[1:],
        **extra,
    )


def identity_questions(cfg: IdentityConfig, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval) rows ``{question, topic, answers, other?, maker?}``; ``cfg.eval_fraction`` of each
    topic's question templates (at least one, where a topic has two or more) is held out for eval."""
    rng = random.Random(f"identity:{seed}")
    train: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for topic, (questions, answers) in TOPICS.items():
        qs = list(questions)
        rng.shuffle(qs)
        n_eval = round(len(qs) * cfg.eval_fraction)
        if cfg.eval_fraction > 0 and len(qs) > 1:
            n_eval = min(max(1, n_eval), len(qs) - 1)
        for i, q in enumerate(qs):
            target = held if i < n_eval else train
            if "{other}" in q:
                subs = [{"other": o} for o in cfg.other_assistants]
            elif "{maker}" in q:
                subs = [{"maker": m} for m in cfg.other_makers]
            else:
                subs = [{}]
            for sub in subs:
                target.append(
                    {
                        "question": _fill(q, cfg, **sub),
                        "topic": topic,
                        "answers": [_fill(a, cfg, **sub) for a in answers],
                        **sub,
                    }
                )
    return train, held


def identity_conversation(
    row: dict[str, Any], rng: random.Random, greeting_share: float = 0.2
) -> dict[str, Any]:
    """One conversation answering ``row``'s question, now and then after a greeting exchange."""
    messages: list[dict[str, Any]] = []
    if rng.random() < greeting_share:
        hello, reply = rng.choice(GREETINGS)
        messages += [{"role": "user", "content": hello}, {"role": "assistant", "content": reply}]
    messages += [
        {"role": "user", "content": row["question"]},
        {"role": "assistant", "content": rng.choice(row["answers"])},
    ]
    return {"messages": messages, "meta": {"kind": "identity", "topic": row["topic"]}}


@dataclass
class IdentityCheck:
    """What a reply says about who it is: its configured name, and any other identity it claims."""

    gives_name: bool
    claims: list[str] = field(default_factory=list)  # other assistants or makers it claims

    @property
    def ok(self) -> bool:
        return not self.claims


_NEGATION = re.compile(r"\b(?:not|never|no)\b|n't", re.I)


def check_identity(reply: str, cfg: IdentityConfig, question: str | None = None) -> IdentityCheck:
    """Whether ``reply`` names the assistant and whether it claims to be another assistant or to be
    made by another company ("I am ChatGPT", "Yes, I'm Claude", "I was trained by OpenAI"); a claim
    in a denial ("I am not ChatGPT", "not made by OpenAI") is none. A bare "Yes" to a question naming
    another assistant or maker is a claim of that name."""
    text = reply.replace("\u2019", "'")
    claims: list[str] = []
    self_words = r"(?:i am|i'm|im|my name is|this is|you are talking to|call me|i'm called|i am called)"
    for other in cfg.other_assistants:
        pattern = rf"\b{self_words}\s+(?:an?\s+|the\s+)?{re.escape(other)}\b"
        if re.search(pattern, text, re.I):
            claims.append(other)
    made = r"(?:made|built|created|trained|developed|designed|programmed)"
    for maker in cfg.other_makers:
        for m in re.finditer(
            rf"\b{made}\s+by\s+{re.escape(maker)}\b|\b{re.escape(maker)}\s+{made}\s+me\b", text, re.I
        ):
            before = text[max(0, m.start() - 25) : m.start()]
            if not _NEGATION.search(before) and not _NEGATION.search(m.group(0)):
                claims.append(maker)
                break
    if question and re.match(r"\s*(?:yes|yeah|yep|correct|that's right)\b", text, re.I):
        for other in [*cfg.other_assistants, *cfg.other_makers]:
            if re.search(rf"\b{re.escape(other)}\b", question, re.I) and other not in claims:
                claims.append(other)
    gives_name = re.search(rf"\b{re.escape(cfg.name)}\b", text, re.I) is not None
    return IdentityCheck(gives_name=gives_name, claims=claims)
