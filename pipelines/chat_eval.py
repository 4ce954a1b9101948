"""Evaluate a chat model on the tiny world's held-out sets, with and without its tools.

    with ChatSession(model_dir, eval_cfg, search_corpus="runs/tiny/world/search_index.jsonl") as s:
        results = evaluate(s, ["known", "unknown", "search_with_tool"], "runs/tiny/sft_data", data_cfg, eval_cfg)
    results["search_with_tool"]["scores"]      # {"n": 114, "accuracy": 0.71, ...}

One module for every stage that scores a chat model (SFT, "I don't know", later RL and distillation):
prompts are asked the way the training data was written (pipelines/sft/world_scores.py), replies are
generated greedily through Ray Data (pipelines/batch_generate.py) on one engine actor
(actors/engine_actor.py) whose tools are the search actor (actors/search.py, over the world's whole
search index: the facts of held-out search entities are only there) and the calculator; a
condition "with tools" adds the tools note to the prompt and lets the requests call both, one
without does neither. The same engine actor also answers ``sample`` calls (the IDK stage's k samples
per question).

A **condition** is one way of asking one held-out set (``CONDITIONS``): the known facts plainly, the
search questions with the tool and without, the probe items directly / reasoning first / with the
calculator, and so on. Each condition's result holds its scores (``score_set``), its ``primary``
number and a few example transcripts for the report.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm.engine import SamplingParams
from lm.files import read_jsonl
from pipelines.sft.config import ChatEvalConfig
from pipelines.sft.world_config import SFTDataConfig
from pipelines.sft.world_scores import eval_messages, score_set

log = logging.getLogger("raychat.eval")


@dataclass(frozen=True)
class Condition:
    set_name: str  # a held-out set (pipelines/sft/world_scores.py EVAL_SETS)
    primary: str  # the score that is this condition's headline
    tools: bool = False  # the tools note in the prompt, the search and calculator hooks on
    form: str = "direct"  # probe sets: direct / reasoning / calculator
    identity_system: bool = False  # the identity system message first


CONDITIONS: dict[str, Condition] = {
    "known": Condition("known_eval", "accuracy"),
    "unknown": Condition("unknown_eval", "idk_share"),
    "search_with_tool": Condition("search_eval", "accuracy", tools=True),
    "search_without_tool": Condition("search_eval", "accuracy"),
    "identity": Condition("identity_eval", "accuracy"),
    "identity_with_system": Condition("identity_eval", "accuracy", identity_system=True),
    "arithmetic_with_calculator": Condition("arithmetic_test", "accuracy", tools=True),
    "arithmetic_without_calculator": Condition("arithmetic_test", "accuracy"),
    "probes_direct": Condition("probes_test", "counting_accuracy"),
    "probes_reasoning": Condition("probes_test", "counting_accuracy", form="reasoning"),
    "probes_calculator": Condition("probes_test", "counting_accuracy", tools=True, form="calculator"),
}


def read_set(data_dir: str | Path, set_name: str, max_rows: int | None = None, seed: int = 0) -> list[dict]:
    """A held-out set's rows (``<data_dir>/splits/<set>.jsonl``); ``max_rows`` takes a seeded sample."""
    path = Path(data_dir) / "splits" / f"{set_name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; build the world SFT data first (the sft stage does)")
    rows = read_jsonl(path)
    if max_rows is not None and len(rows) > max_rows:
        keep = sorted(random.Random(f"eval:{set_name}:{seed}").sample(range(len(rows)), max_rows))
        rows = [rows[i] for i in keep]
    return rows


class ChatSession:
    """An engine actor on ``model_dir`` with the search and calculator tools, and Ray Data batch
    generation over it; a context manager that ends both actors."""

    def __init__(
        self,
        model_dir: str | Path,
        cfg: ChatEvalConfig,
        search_corpus: str | Path | None = None,
        search: SFTDataConfig | None = None,
    ) -> None:
        import ray

        from actors.engine_actor import EngineActorConfig, start_engine_actor
        from actors.search import search_ready, search_tool, start_search_actor
        from lm.calculator import calculator_tool
        from lm.chat import ChatFormat
        from lm.tokenizer import load_tokenizer

        self.cfg, self.model_dir = cfg, str(model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        self.chat = ChatFormat(self.tokenizer)
        tools: dict[str, Any] = {"calc": calculator_tool(self.tokenizer)}
        self._search = None
        if search_corpus is not None and Path(search_corpus).is_file():
            s = (search or SFTDataConfig()).search
            self._search = start_search_actor(
                corpus=str(search_corpus),
                name=None,
                k=s.k,
                max_chars=s.max_chars,
                passage_words=s.passage_words,
                wait=False,  # its process starts beside the engine's
            )
            tools["search"] = search_tool(self.tokenizer, self._search)
        self.tool_names = sorted(tools)
        self.actor = None
        try:
            self.actor = start_engine_actor(
                EngineActorConfig(
                    model_dir=self.model_dir, max_batch_size=cfg.engine_batch_size, max_queued=4096
                ),
                tools,
            )
            if self._search is not None:
                search_ready(self._search)
            ray.get(self.actor.stats.remote())  # a bad model directory fails here, by name
        except BaseException:
            self.close()  # neither actor outlives a session that never started
            raise
        config = json.loads((Path(self.model_dir) / "config.json").read_text())
        self.max_seq_len = int(config.get("max_position_embeddings", 2048))

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        import ray

        for actor in (self.actor, self._search):
            if actor is not None:
                ray.kill(actor)
        self.actor = self._search = None

    def prompt_ids(self, messages: list[dict[str, Any]], room: int = 32) -> list[int]:
        """The prompt's ids, oldest exchanges dropped to leave ``room`` tokens for the reply (the engine
        ends a reply at the model's length, as finish_reason "length")."""
        return self.chat.render_prompt(messages, max_tokens=self.max_seq_len - room).ids

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, tools: bool = False
    ) -> list[list[dict[str, Any]]]:
        """Every prompt's ``params.n`` samples (dicts with token_ids, finish_reason, error), through
        Ray Data on the engine actor; ``tools`` lets the requests call the search tool and calculator."""

        from pipelines.batch_generate import generate_dataset
        from pipelines.runtime import Progress, quiet_ray_data

        if not prompts:
            return []
        items = [{"key": i, "prompt_ids": p} for i, p in enumerate(prompts)]
        blocks = max(1, min(len(items) // self.cfg.batch_size, 64))
        ds = quiet_ray_data().from_items(items, override_num_blocks=blocks)
        out = generate_dataset(
            ds,
            params.model_copy(update={"stop_token_ids": self.chat.stop_token_ids}),
            actor=self.actor,
            batch_size=self.cfg.batch_size,
            concurrency=min(self.cfg.concurrency, blocks),  # more would wait on nothing (and Ray warns)
            tools=self.tool_names if tools else (),
        )
        samples: list[list[dict[str, Any]]] = [[] for _ in prompts]
        progress = Progress(f"generating ({Path(self.model_dir).name})", len(prompts) * params.n, "samples")
        for row in out.iter_rows():
            progress.update()
            samples[int(row["key"])].append(
                {
                    "sample_index": int(row["sample_index"]),
                    "token_ids": [int(t) for t in row["token_ids"]],
                    "finish_reason": row["finish_reason"],
                    "error": row["error"],
                }
            )
        for s in samples:
            s.sort(key=lambda r: r["sample_index"])
        return samples

    def reply(self, sample: dict[str, Any]) -> dict[str, Any]:
        """A sample's assistant message (search and calculator calls with their results)."""
        return self.chat.parse_assistant(sample["token_ids"]).message


def messages_for(name: str, row: dict[str, Any], data_cfg: SFTDataConfig) -> list[dict[str, Any]]:
    """How condition ``name`` asks ``row``: the training conventions, plus the identity system message."""
    c = CONDITIONS[name]
    messages = eval_messages(c.set_name, row, data_cfg, tools=c.tools, form=c.form)
    if c.identity_system:
        ident = data_cfg.identity
        text = data_cfg.system_prompt.format(
            name=ident.name, description=ident.description, creator=ident.creator
        )
        if messages[0]["role"] == "system":
            messages = [{"role": "system", "content": text + "\n" + messages[0]["content"]}, *messages[1:]]
        else:
            messages = [{"role": "system", "content": text}, *messages]
    return messages


def evaluate(
    session: ChatSession,
    names: list[str],
    data_dir: str | Path,
    data_cfg: SFTDataConfig,
    cfg: ChatEvalConfig,
    seed: int = 0,
    rows_by_set: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Score the session's model on each named condition: ``{name: {"scores", "primary", "n",
    "examples"}}``. Conditions with the same tools setting are generated together. ``rows_by_set``
    replaces a held-out set's rows (a validation set built like it, for tuning)."""
    from lm.chat_messages import text_of

    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; conditions: {', '.join(CONDITIONS)}")
    given = rows_by_set or {}
    rows = {
        s: given[s] if s in given else read_set(data_dir, s, cfg.max_per_set, seed)
        for s in {CONDITIONS[n].set_name for n in names}
    }
    results: dict[str, dict[str, Any]] = {}
    for tools in (False, True):
        batch = [n for n in names if CONDITIONS[n].tools == tools]
        if not batch:
            continue
        if tools and "search" not in session.tool_names:
            log.warning("eval: no search index; conditions with tools have the calculator only")
        jobs: list[tuple[str, int, list[dict[str, Any]]]] = []
        for name in batch:
            set_name = CONDITIONS[name].set_name
            for i, row in enumerate(rows[set_name]):
                jobs.append((name, i, messages_for(name, row, data_cfg)))
        longest = max(cfg.max_new_tokens.get(CONDITIONS[n].set_name, 64) for n in batch)
        prompts = [session.prompt_ids(m) for _, _, m in jobs]
        log.info(
            "eval: %d prompts (%s), %s tools", len(prompts), ", ".join(batch), "with" if tools else "without"
        )
        samples = session.generate(prompts, SamplingParams(temperature=0.0, max_tokens=longest), tools=tools)
        replies: dict[str, list[dict[str, Any]]] = {n: [] for n in batch}
        asked: dict[str, list[list[dict[str, Any]]]] = {n: [] for n in batch}
        for (name, _, messages), sample in zip(jobs, samples, strict=True):
            replies[name].append(session.reply(sample[0]))
            asked[name].append(messages)
        for name in batch:
            c = CONDITIONS[name]
            texts = [text_of(m) for m in replies[name]]
            scores = score_set(c.set_name, rows[c.set_name], texts, data_cfg)
            results[name] = {
                "scores": scores,
                "primary": scores.get(c.primary),
                "n": scores["n"],
                "examples": _examples(
                    c, rows[c.set_name], asked[name], replies[name], texts, data_cfg, cfg.examples
                ),
            }
    return {n: results[n] for n in names}


def _examples(
    c: Condition,
    rows: list[dict[str, Any]],
    asked: list[list[dict[str, Any]]],
    replies: list[dict[str, Any]],
    texts: list[str],
    data_cfg: SFTDataConfig,
    n: int,
) -> list[dict[str, Any]]:
    """Up to ``n`` transcripts: first replies that score on the headline and use a tool where the
    condition has tools, then others (so a report shows what works and what does not)."""
    scored = []
    for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
        good = bool(score_set(c.set_name, [row], [text], data_cfg).get(c.primary))
        used_tool = not isinstance(replies[i].get("content"), str)
        scored.append((not good, not (used_tool or not c.tools), i))
    picks = [i for *_, i in sorted(scored)[: max(0, n - 1)]]
    wrong = [i for bad, _, i in scored if bad and i not in picks]
    if n and wrong:
        picks.append(wrong[0])
    picks += [i for *_, i in sorted(scored) if i not in picks][: max(0, n - len(picks))]
    return [
        {
            "messages": asked[i],
            "reply": replies[i],
            "scores": score_set(c.set_name, [rows[i]], [texts[i]], data_cfg),
            "reference": rows[i].get("short_answer", rows[i].get("final", rows[i].get("answer"))),
        }
        for i in picks[:n]
    ]


def transcript(messages: list[dict[str, Any]], reply: dict[str, Any]) -> str:
    """A conversation as indented plain text for the report: tool calls and their results shown."""
    lines = []
    for m in [*messages, reply]:
        content = m.get("content")
        if isinstance(content, str):
            lines.append(f"{m['role']}: {content}")
            continue
        out = []
        for p in content or ():
            if p.get("type") == "text":
                out.append(p["text"])
            elif p.get("type") == "search":
                out.append(f"[search: {p['query']}] -> [{(p.get('result') or '')[:300]}]")
            elif p.get("type") == "calc":
                out.append(f"[calculator: {p['expression']}] -> [{p.get('result')}]")
        lines.append(f"{m['role']}: {''.join(out)}")
    return "\n".join("    " + line.replace("\n", "\n    ") for line in lines)
