"""The tools of ``raychat chat``: the calculator and a search index, both answered in this process (the
index is the search actor's body, ``actors.search.SearchServer``, run without a Ray cluster).

The search index is the one the flags name (``--search-index DIR``: a saved index; ``--search-corpus
PATH``: documents indexed at start), else the run's, found beside the model: for
``<run>/models/<name>`` (or the run raychat.json names as ``source_run``), a saved index in
``<run>/search/``, else ``<run>/world/search_index.jsonl``. Search is off when none is there. A tool
that is off still answers its call (``error: ... is off``), so a model that calls it anyway is never
left waiting for a result, and the terminal shows the call.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pipelines.run_dir import RunDir


class ChatError(Exception):
    """A reason the chat cannot start, shown as one line (exit status 2)."""


@dataclass
class Tools:
    """The two tools of this chat and how each was set up (``search`` answers a query with text)."""

    calculator: bool
    search: Any | None  # an object with answer(query) -> str (actors.search.SearchServer)
    search_source: str  # where the index came from, or why search is off

    def note(self) -> str | None:
        """The system note that tells the model which tools it may call."""
        if self.calculator and self.search is not None:
            from pipelines.sft.world_config import SFTDataConfig

            return SFTDataConfig.model_fields["tools_note"].default  # the words SFT trained on
        if self.calculator:
            return "You can use the calculator."
        if self.search is not None:
            return "You can use the search tool."
        return None

    def describe(self) -> str:
        calc = "calculator on" if self.calculator else "calculator off (--no-calculator)"
        search = f"search {'on' if self.search is not None else 'off'} ({self.search_source})"
        return f"tools: {calc}; {search}"

    def hooks(self, tokenizer: Any) -> list[Any]:
        from lm.calculator import calculator_tool
        from lm.engine import text_tool

        calc = (
            calculator_tool(tokenizer)
            if self.calculator
            else text_tool(
                tokenizer, "<|calc_start|>", "<|calc_end|>", lambda _: "error: the calculator is off"
            )
        )
        return [calc, text_tool(tokenizer, "<|search_start|>", "<|search_end|>", self._search)]

    def _search(self, query: str) -> str:
        if self.search is None:
            return "error: the search tool is off"
        try:
            return self.search.answer(query)
        except Exception as e:  # noqa: BLE001 - a failed search is the model's result, not a crash
            return f"error: search failed ({type(e).__name__})"


def load_search(
    args: argparse.Namespace, model_dir: Path, meta: dict[str, Any], notes: TextIO
) -> tuple[Any, str]:
    """The search index the flags ask for (errors are ChatError), or the run's (best effort)."""
    if args.no_search:
        return None, "--no-search"
    from lm.search_index import META_FILE

    if args.search_index:
        if not (Path(args.search_index) / META_FILE).is_file():
            raise ChatError(
                f"--search-index {args.search_index} holds no saved search index ({META_FILE} missing); "
                "give documents with --search-corpus instead"
            )
        return _open_index(index_dir=args.search_index), f"index {args.search_index}"
    if args.search_corpus:
        print(f"search: indexing {args.search_corpus} ...", file=notes, flush=True)
        server = _open_index(corpus=args.search_corpus)
        return server, f"{args.search_corpus}: {len(server.index):,} passages"
    runs = [model_dir.parent.parent] if model_dir.parent.name == "models" else []
    if meta.get("source_run"):
        runs.append(Path(str(meta["source_run"])))
    for run in map(RunDir, runs):
        saved, corpus = run.search_index, run.world / "search_index.jsonl"
        has_saved = (saved / META_FILE).is_file()
        try:
            if corpus.is_file():  # with the saved index: reused unless the corpus changed since
                server = _open_index(corpus=str(corpus), **({"index_dir": str(saved)} if has_saved else {}))
                return server, f"{corpus}: {len(server.index):,} passages"
            if has_saved:
                return _open_index(index_dir=str(saved)), f"the run's index {saved}"
        except ChatError as e:
            print(f"warning: the run's search index is unusable, search is off: {e}", file=notes)
            return None, "the run's index is unusable"
    return None, "no index beside the model: give --search-index DIR or --search-corpus PATH"


def _open_index(**where: str) -> Any:
    import bm25s  # noqa: F401 - imported first: it sets its own logger to DEBUG on import

    from actors.search import SearchServer

    for name in ("raychat", "bm25s"):  # the index's progress lines are not the chat's business
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return SearchServer(**where)
    except Exception as e:  # noqa: BLE001 - a corrupt index or corpus, whatever the library raised
        text = str(e) or type(e).__name__
        raise ChatError(text if text.lower().startswith("search") else f"search: {text}") from None
