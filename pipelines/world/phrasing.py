"""Every way the tiny world asks about one fact, for any name: world entities and fresh ones alike.

The world's question templates (``sentences.QA``: two or so direct questions and one indirect "what"
form per relation) need only the entity's name and, for organisations, what their members are
called. So the same templates ask about a crawl entity, an entity the corpus never mentions, and a
fresh name drawn for "I don't know" training; a model cannot tell a refusal example from a real
question by its wording. The indirect form ("when Velimir Talwright was born") also makes more
questions ("Do you know when ... ?") and every refusal ("I don't know when ... .").
"""

from __future__ import annotations

from pipelines.world.facts import ORG_TYPES, RELATIONS
from pipelines.world.sentences import QA, cap

# questions built on the indirect form; the direct questions come from sentences.QA
ASK_WRAPPERS = (
    "Do you know {what}?",
    "Can you tell me {what}?",
    "Could you tell me {what}?",
    "I'd like to know {what}.",
    "Tell me {what}.",
    "Please tell me {what}.",
)


def member_noun(org_type: str | None) -> str:
    """What an organisation's members are called ('students' for a university)."""
    if org_type in ORG_TYPES:
        return ORG_TYPES[org_type][1]
    return "members"


def _fields(name: str, org_type: str | None) -> dict[str, str]:
    return {"name": name, "member_noun": member_noun(org_type)}


def _check(etype: str, relation: str) -> None:
    if etype not in QA or relation not in QA[etype]:
        known = ", ".join(RELATIONS.get(etype, ())) or f"types are {', '.join(QA)}"
        raise ValueError(f"no question template for {etype}.{relation} ({known})")


def what(etype: str, relation: str, name: str, org_type: str | None = None) -> str:
    """The indirect question: 'when Velimir Talwright was born'."""
    _check(etype, relation)
    return QA[etype][relation][2].format(**_fields(name, org_type))


def direct_questions(etype: str, relation: str, name: str, org_type: str | None = None) -> list[str]:
    """The world's own questions for the fact (the ones its question sets use)."""
    _check(etype, relation)
    fields = _fields(name, org_type)
    return [cap(q.format(**fields)) for q in QA[etype][relation][0]]


def questions(etype: str, relation: str, name: str, org_type: str | None = None) -> list[str]:
    """Every phrasing: the direct questions first, then the indirect form in each wrapper."""
    indirect = what(etype, relation, name, org_type)
    return direct_questions(etype, relation, name, org_type) + [w.format(what=indirect) for w in ASK_WRAPPERS]
