"""Probe a chat model the Llama 3 way and turn what it does not know into refusal conversations.

    with ChatSession("runs/tiny/models/sft", eval_cfg) as session:
        probes = probe(session, rows, cfg.idk)         # k sampled answers per question, each judged
    convs, counts = probe_conversations(probes, heldout, seed=0)

For each question with a known answer (the tiny world's ``idk_probe`` split: facts of entities the
corpus teaches, asked in words the model was never fine-tuned on), the model answers ``k`` times at
the probe temperature through Ray Data batch generation on the engine actor; pipelines/idk/judge.py
judges every answer against the reference. A question the model answers correctly in at least
``min_correct_share`` of its samples (never hedging) is one it knows: with ``known_answers`` it
becomes an answered conversation. Every other one becomes a refusal ("I don't know who founded the
Ashwell Museum."), in another phrasing of the question than the probe's. So the refusal data says
exactly where this model's knowledge ends.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from lm.chat_messages import Conversation, text_of
from lm.engine import SamplingParams
from pipelines.idk.config import IDKStageConfig
from pipelines.idk.judge import ProbeSummary, judge, summarize
from pipelines.sft.conversations import idk_conversation, qa_conversation
from pipelines.sft.world_splits import HeldOut


@dataclass
class Probe:
    row: dict[str, Any]
    answers: list[str]
    summary: ProbeSummary
    knows: bool


def split_validation_entities(
    rows: list[dict[str, Any]], share: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(probe rows, validation rows): ``share`` of the entities (whole, with all their facts) kept out
    of the probing, so tuning has known entities the training never touched."""
    entities = sorted({r["entity"] for r in rows})
    random.Random(f"idk-validation:{seed}").shuffle(entities)
    held = set(entities[: round(share * len(entities))])
    return [r for r in rows if r["entity"] not in held], [r for r in rows if r["entity"] in held]


def validation_fresh_rows(count: int, seed: int, taken: list[str]) -> list[dict[str, Any]]:
    """Questions about ``count`` fresh names unused by the world and by every training draw (``taken``):
    the validation set of unknown entities."""
    from pipelines.world.fresh import FreshNames, fresh_entities, fresh_questions

    drawer = FreshNames(seed=1_000_003 + seed, taken=taken)  # another stream than the training names
    return fresh_questions(fresh_entities(count, seed, drawer=drawer), seed)


def probe(session: Any, rows: list[dict[str, Any]], cfg: IDKStageConfig, seed: int = 0) -> list[Probe]:
    """Ask each row's question ``cfg.samples`` times on the session's engine actor and judge the answers."""
    prompts = [session.prompt_ids([{"role": "user", "content": r["question"]}]) for r in rows]
    params = SamplingParams(
        temperature=cfg.temperature, max_tokens=cfg.max_new_tokens, n=cfg.samples, seed=seed
    )
    out = []
    for row, samples in zip(rows, session.generate(prompts, params), strict=True):
        answers = [text_of(session.reply(s)) for s in samples]
        summary = summarize(judge(a, row.get("short_answer"), row["question"]) for a in answers)
        knows = summary.knows(cfg.min_correct_share)
        out.append(Probe(row, answers, summary, knows))
    return out


def probe_conversations(
    probes: list[Probe], heldout: HeldOut, seed: int = 0, known_answers: bool = True
) -> tuple[list[Conversation], dict[str, Any]]:
    """Refusals for what the model does not know, answers for what it knows (``known_answers``);
    each in a phrasing other than the probed one where the row has several. A conversation that would
    name a held-out entity is dropped and counted."""
    rng = random.Random(f"idk-probe:{seed}")
    convs: list[Conversation] = []
    counts: Counter[str] = Counter()
    for p in probes:
        others = [q for q in p.row.get("questions", []) if q != p.row["question"]] or [p.row["question"]]
        question = rng.choice(others)
        if p.knows:
            counts["known"] += 1
            if not known_answers:
                continue
            conv = qa_conversation(p.row, question, "short", kind="idk_known")
        else:
            counts["not_known"] += 1
            row = {**p.row, "reason": p.row.get("reason") or "the model does not know it"}
            conv = idk_conversation(row, rng, question)
        text = "\n".join(str(m["content"]) for m in conv["messages"])
        if heldout.mentions(text):
            counts["dropped: names a held-out entity"] += 1
            continue
        convs.append(conv)
    labels = Counter()
    for p in probes:
        labels.update(p.summary.counts)
    total = sum(labels.values())
    stats = {
        "questions": len(probes),
        "samples": total,
        "known": counts["known"],
        "not_known": counts["not_known"],
        "known_share": round(counts["known"] / len(probes), 4) if probes else 0.0,
        "answer_labels": {k: round(v / total, 4) for k, v in labels.items()} if total else {},
        "conversations": len(convs),
        "dropped": counts["dropped: names a held-out entity"],
    }
    return convs, stats
