"""FineWeb's own quality filter (Penedo et al. 2024, "The FineWeb Datasets", section 3.5): three rules
found by comparing what C4's filters removed and what they missed, plus a list-page rule; the defaults
are the published thresholds (datatrove's ``FineWebQualityFilter``).
"""

from __future__ import annotations

from pipelines.clean.filters.base import Doc, Filter
from pipelines.clean.filters.config import FineWebQualityConfig
from pipelines.clean.filters.text_stats import find_duplicates, terminal_punctuation, tokenize


class FineWebQualityFilter(Filter):
    """Drops documents made of unpunctuated, short or repeated lines, or lists."""

    name = "fineweb"

    def __init__(self, config: FineWebQualityConfig | None = None) -> None:
        super().__init__()
        self.config = config or FineWebQualityConfig()
        self._stop_chars = terminal_punctuation()

    def decide(self, doc: Doc) -> str | None:
        cfg = self.config
        text = doc["text"]
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "empty"
        n_lines = len(lines)
        stop = self._stop_chars
        ratio = sum(1 for line in lines if line.endswith(stop)) / n_lines
        if ratio < cfg.line_punct_thr and not (ratio == 0 and cfg.line_punct_exclude_zero):
            return "line_punct_ratio"
        short = cfg.short_line_length
        if sum(1 for line in lines if len(line) <= short) / n_lines > cfg.short_line_thr:
            return "short_line_ratio"
        n_newlines = text.count("\n")
        if find_duplicates(lines)[1] / (len(text) - n_newlines) > cfg.char_duplicates_ratio:
            return "char_dup_ratio"
        if n_newlines / len(tokenize(text)) > cfg.new_line_ratio:
            return "newline_ratio"
        return None
