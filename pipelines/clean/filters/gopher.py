"""The Gopher repetition and quality rules (Rae et al. 2021, "Scaling Language Models: Methods, Analysis
& Insights from Training Gopher", Appendix A and Table A1), with the thresholds FineWeb ran them with
(datatrove's ``GopherRepetitionFilter`` and ``GopherQualityFilter`` defaults).

Repetition catches boilerplate and spam that repeat lines, paragraphs or phrases; quality catches
pages that are too short or long, made of symbols or lists, or not written in sentences.
"""

from __future__ import annotations

import re

from pipelines.clean.filters.base import Doc, Filter
from pipelines.clean.filters.config import GopherQualityConfig, GopherRepetitionConfig
from pipelines.clean.filters.text_stats import NGramStats, find_duplicates, tokenize, word_counts

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


class GopherRepetitionFilter(Filter):
    """Drops documents that repeat lines, paragraphs or word n-grams too much."""

    name = "gopher_repetition"

    def __init__(self, config: GopherRepetitionConfig | None = None) -> None:
        super().__init__()
        self.config = config or GopherRepetitionConfig()
        self._top = sorted(self.config.top_ngram_char_frac.items())
        self._dup = sorted(self.config.dup_ngram_char_frac.items())

    def decide(self, doc: Doc) -> str | None:
        cfg = self.config
        text = doc["text"]
        if not text.strip():
            return "empty"
        n_chars = len(text)

        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        n_dup, dup_chars = find_duplicates(paragraphs)
        if cfg.dup_para_frac is not None and n_dup / len(paragraphs) > cfg.dup_para_frac:
            return "dup_para_frac"
        if cfg.dup_para_char_frac is not None and dup_chars / n_chars > cfg.dup_para_char_frac:
            return "dup_para_char_frac"

        lines = _LINE_BREAK.split(text)
        n_dup, dup_chars = find_duplicates(lines)
        if cfg.dup_line_frac is not None and n_dup / len(lines) > cfg.dup_line_frac:
            return "dup_line_frac"
        if cfg.dup_line_char_frac is not None and dup_chars / n_chars > cfg.dup_line_char_frac:
            return "dup_line_char_frac"

        stats = NGramStats(tokenize(text))
        for n, max_frac in self._top:
            if stats.top_ngram_exceeds(n, max_frac * n_chars):
                return f"top_{n}_gram"
        for n, max_frac in self._dup:
            if stats.duplicate_ngrams_exceed(n, max_frac * n_chars):
                return f"dup_{n}_gram"
        return None


_BULLETS = ("•", "-")
_ELLIPSES = ("...", "…")


class GopherQualityFilter(Filter):
    """Drops documents whose words, symbols and lines do not look like prose."""

    name = "gopher_quality"

    def __init__(self, config: GopherQualityConfig | None = None) -> None:
        super().__init__()
        self.config = config or GopherQualityConfig()
        self._stop_words = frozenset(self.config.stop_words)

    def decide(self, doc: Doc) -> str | None:
        cfg = self.config
        text = doc["text"]
        tokens = tokenize(text)
        n_tokens = len(tokens)
        # words are the tokens that are not only punctuation ("...", "$"); ratios divide by all tokens
        n_words, word_chars, n_alpha = word_counts(tokens)
        if n_tokens == 0 or (cfg.min_words is not None and n_words < cfg.min_words):
            return "too_few_words"
        if cfg.max_words is not None and n_words > cfg.max_words:
            return "too_many_words"

        if n_words:
            mean_length = word_chars / n_words
            if cfg.min_mean_word_length is not None and mean_length < cfg.min_mean_word_length:
                return "mean_word_length_low"
            if cfg.max_mean_word_length is not None and mean_length > cfg.max_mean_word_length:
                return "mean_word_length_high"

        if cfg.max_symbol_word_ratio is not None:
            if text.count("#") / n_tokens > cfg.max_symbol_word_ratio:
                return "too_many_hashes"
            if (text.count("...") + text.count("…")) / n_tokens > cfg.max_symbol_word_ratio:
                return "too_many_ellipses"

        lines = text.splitlines()
        if lines:
            if cfg.max_bullet_lines_ratio is not None:
                bullets = sum(1 for line in lines if line.lstrip().startswith(_BULLETS))
                if bullets / len(lines) > cfg.max_bullet_lines_ratio:
                    return "too_many_bullet_lines"
            if cfg.max_ellipsis_lines_ratio is not None:
                ellipses = sum(1 for line in lines if line.rstrip().endswith(_ELLIPSES))
                if ellipses / len(lines) > cfg.max_ellipsis_lines_ratio:
                    return "too_many_ellipsis_lines"

        if cfg.min_alpha_words_ratio is not None:
            if n_alpha / n_tokens < cfg.min_alpha_words_ratio:
                return "too_few_alpha_words"

        if cfg.min_stop_words is not None and len(self._stop_words.intersection(tokens)) < cfg.min_stop_words:
            return "too_few_stop_words"
        return None
