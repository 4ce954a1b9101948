"""The C4 line filters (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", section 2.2; reference code: tensorflow_datasets ``c4_utils.py``), as
FineWeb ran them: datatrove's ``C4QualityFilter`` with ``filter_no_terminal_punct=False``.

Unlike the other quality filters this one edits the text: lines that are navigation, cookie banners
or too short are removed, and the document is dropped when too little prose is left.
"""

from __future__ import annotations

import re

from pipelines.clean.filters.base import Doc, Filter
from pipelines.clean.filters.config import C4Config

# A Wikipedia-style citation marker: [1], [edit], [citation needed]
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCTUATION = (".", "?", "!", '"', "'")

# One sentence break: terminal punctuation (not closing an initial or a title such as "J." or "Mr."),
# then any closing quotes or brackets, whitespace, and the start of the next sentence.
_SENTENCE_BREAK = re.compile(
    r"(?<!\b[A-Za-z])(?<!\b(?:Mr|Ms|Dr|St|Mt|Co|Jr|Sr|vs))(?<!\bMrs)"
    r"[.!?。！？]+[\"'”’)\]]*[^\S\n]+(?=[\"'“‘(\[]*[^\W_]|\$)"
)


def count_sentences(line: str) -> int:
    """Sentences in one non-empty line (how spaCy's rule-based sentencizer splits it, closely)."""
    return len(_SENTENCE_BREAK.findall(line)) + 1


class C4QualityFilter(Filter):
    """Removes boilerplate lines, rewrites ``doc["text"]`` with the rest, drops what is left too thin."""

    name = "c4"

    def __init__(self, config: C4Config | None = None) -> None:
        super().__init__()
        self.config = config or C4Config()
        self._policy = tuple(self.config.policy_substrings)

    def decide(self, doc: Doc) -> str | None:
        cfg = self.config
        text = doc["text"]
        # The phrase tests run per line, but only for phrases the document contains at all.
        lower = text.lower()
        check_lorem = cfg.filter_lorem_ipsum and "lorem ipsum" in lower
        check_javascript = cfg.filter_javascript and "javascript" in lower
        check_curly = cfg.filter_curly_bracket and "{" in text
        policy = tuple(p for p in self._policy if p in lower) if cfg.filter_policy else ()
        check_citations = cfg.remove_citations and "[" in text
        check_lower = check_lorem or check_javascript or bool(policy)
        min_words = cfg.min_words_per_line or 0
        max_word = cfg.max_word_length
        removed = self.counts

        kept: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            words = line.split()
            if max_word is not None and len(line) > max_word and any(len(w) > max_word for w in words):
                removed["line_removed:too_long_word"] += 1
                continue
            if check_citations:  # (datatrove leaves the space before a removed marker; we strip it)
                line = _CITATION.sub("", line).rstrip()
            if cfg.filter_no_terminal_punct and (not line.endswith(_END_PUNCTUATION) or line.endswith("...")):
                removed["line_removed:no_terminal_punct"] += 1
                continue
            if len(words) < min_words:
                removed["line_removed:too_few_words"] += 1
                continue
            if check_lower:
                line_lower = line.lower()
                if check_lorem and "lorem ipsum" in line_lower:
                    return "lorem_ipsum"
                if check_javascript and "javascript" in line_lower:
                    removed["line_removed:javascript"] += 1
                    continue
                if check_curly and "{" in line:
                    return "curly_bracket"
                if policy and any(p in line_lower for p in policy):
                    removed["line_removed:policy"] += 1
                    continue
            elif check_curly and "{" in line:
                return "curly_bracket"
            kept.append(line)
        if not kept:
            return "no_lines_left"
        new_text = "\n".join(kept)
        if cfg.min_num_sentences is not None:
            # sentence breaks never span lines, so one scan of the kept text counts them all
            if len(kept) + len(_SENTENCE_BREAK.findall(new_text)) < cfg.min_num_sentences:
                return "too_few_sentences"
        if new_text != text:  # keep the same string object when nothing changed (its tokens are cached)
            doc["text"] = new_text
        return None
