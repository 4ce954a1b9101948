"""Held-out evaluation of a policy: accuracy with its standard error, and how it answers.

    numbers = evaluate(generators, problems, chat, cfg)   # engine actors holding the weights to test

Each held-out problem is asked as in training (the same system message and tools), greedily by
default (``eval.samples`` > 1 with a temperature gives pass@k too). Answers are scored by the same
rule rewards as training, in this process; a problem counts as right when its accuracy component is
at least 0.5. Besides accuracy (lm/evaluation.py: the mean over problems and its standard error), the
numbers say how the policy answers: calculator and search calls per answer and the share of answers
that call each tool (the "before and after RL" tool table), the mean length, the share cut at the token
limit, and the share that revises itself (``self_correction_markers``).
"""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from typing import Any

import ray

from lm.engine import SamplingParams
from lm.evaluation import summarize
from lm.reward_process import scorer_for
from lm.rewards import RewardItem
from pipelines.grpo.config import GRPOConfig
from pipelines.grpo.data import Problem, messages
from pipelines.grpo.replies import ReplyReader
from pipelines.runtime import Progress

CHUNK = 16  # prompts per generate call
EXAMPLES = 3


def evaluate(
    generators: list[Any],
    problems: list[Problem],
    chat: Any,
    cfg: GRPOConfig,
    seed: int = 0,
    label: str = "policy",
) -> dict[str, Any]:
    """``label`` names the model in the progress line (``evaluating (rl)``)."""
    e = cfg.eval
    params = SamplingParams(
        temperature=e.temperature,
        n=e.samples,
        max_tokens=cfg.max_new_tokens,
        stop_token_ids=list(chat.stop_token_ids),
    )
    system = cfg.system()
    prompts = [chat.render_prompt(messages(p.question, system)).ids for p in problems]
    chunks = [list(range(i, min(i + CHUNK, len(prompts)))) for i in range(0, len(prompts), CHUNK)]
    # each problem its own seed (samples j of problem i: seed + i * n + j), the same whatever the chunking
    calls = [
        generators[k % len(generators)].generate.remote(
            [prompts[i] for i in idx],
            [params.model_copy(update={"seed": seed * 1_000_003 + i * e.samples}) for i in idx],
            tools=list(cfg.tools),
        )
        for k, idx in enumerate(chunks)
    ]
    replies: list[list[Any]] = [[] for _ in problems]
    progress = Progress(f"evaluating ({label})", len(prompts) * e.samples, "samples")
    pending = dict(zip(calls, chunks, strict=True))
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        idx = pending.pop(ready)
        results = ray.get(ready)
        for r in results:
            replies[idx[r.request_id]].append(r)
        progress.update(len(results))
    key = cfg.accuracy_key()
    reader = ReplyReader(chat, cfg.self_correction_markers)
    correct: list[list[bool]] = []
    tools: Counter[str] = Counter()
    answers_with: Counter[str] = Counter()
    lengths, truncated, revises, examples = [], 0, 0, []
    with closing(scorer_for(cfg.rewards.model_copy(update={"rm": None}))) as scorer:
        for problem, results in zip(problems, replies, strict=True):
            read = [reader.read(r.token_ids) for r in results]
            lengths += [len(r.token_ids) for r in results]
            truncated += sum(r.finish_reason == "length" for r in results)
            scores = scorer.score([RewardItem(j, x.text, problem.reference) for j, x in enumerate(read)])
            right = [s.components.get(key, 0.0) >= 0.5 for s in scores]
            correct.append(right)
            for x in read:
                tools.update(x.tool_calls)
                answers_with.update(set(x.tool_calls))
                revises += x.revises
            if len(examples) < EXAMPLES:
                shown = chat.tokenizer.decode(results[0].token_ids)  # tool calls and results included
                examples.append({"question": problem.question, "reply": shown, "right": right[0]})
    n = sum(len(r) for r in correct)
    out: dict[str, Any] = dict(summarize(correct, ks=(1, e.samples) if e.samples > 1 else (1,)))
    out |= {
        "calc_calls_per_answer": tools["calc"] / n,
        "search_calls_per_answer": tools["search"] / n,
        "answers_calling_calc": answers_with["calc"] / n,
        "answers_calling_search": answers_with["search"] / n,
        "response_length": sum(lengths) / n,
        "truncated_share": truncated / n,
        "revise_share": revises / n,
        "examples": examples,
    }
    return out
