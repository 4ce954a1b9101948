"""The Gopher repetition and quality rules (Rae et al. 2021, "Scaling Language Models: Methods, Analysis
& Insights from Training Gopher", Appendix A and Table A1), with the thresholds FineWeb ran them with
(datatrove's ``GopherRepetitionFilter`` and ``GopherQualityFilter`` defaults).

Repetition catches boilerplate and spam that repeat lines, paragraphs or phrases; quality catches
pages that are too short or long, made of symbols or lists, or not written in sentences.

A rejection's reason names the rule (a counted, low-cardinality string); its ``detail`` is the
measured value against the threshold (``'#' per token 31/100 = 0.31 > 0.1``), so a rejected row says
how far it missed and a threshold can be judged from the rejected data alone. The detail is written
only once a rule has rejected the document: the comparisons alone decide, as fast as without it.
"""

from __future__ import annotations

import re

from pipelines.clean.filters.base import Doc, Filter
from pipelines.clean.filters.config import GopherQualityConfig, GopherRepetitionConfig
from pipelines.clean.filters.text_stats import NGramStats, find_duplicates, tokenize, word_counts

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


def _measured(what: str, value: float, sign: str, threshold: float) -> str:
    """``"<what> <value> <sign> <threshold>"``; a fraction has as many digits as it takes for the shown
    value to compare with the threshold as the sign says (0.1004 over 0.1 must not read "0.1 > 0.1",
    nor 0.12345 over 0.1234 "0.123 > 0.1234"). The threshold is shown in full (10, 0.1, 0.1234567)."""
    limit = f"{threshold:g}" if float(f"{threshold:g}") == threshold else repr(threshold)
    if isinstance(value, int):
        return f"{what} {value} {sign} {limit}"
    holds = (lambda x: x > threshold) if sign == ">" else (lambda x: x < threshold)
    digits = 3
    while not holds(float(shown := f"{value:.{digits}g}")) and digits < 17:
        digits += 1
    return f"{what} {shown} {sign} {limit}"


def _fraction(what: str, count: int, total: int, sign: str, threshold: float) -> str:
    """``"<what> <count>/<total> = <fraction> <sign> <threshold>"``: the counts behind a ratio rule."""
    return _measured(f"{what} {count}/{total} =", count / total, sign, threshold)


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
            detail = _fraction("duplicate paragraphs", n_dup, len(paragraphs), ">", cfg.dup_para_frac)
            return self.drop("dup_para_frac", detail)
        if cfg.dup_para_char_frac is not None and dup_chars / n_chars > cfg.dup_para_char_frac:
            detail = _fraction(
                "characters in duplicate paragraphs", dup_chars, n_chars, ">", cfg.dup_para_char_frac
            )
            return self.drop("dup_para_char_frac", detail)

        lines = _LINE_BREAK.split(text)
        n_dup, dup_chars = find_duplicates(lines)
        if cfg.dup_line_frac is not None and n_dup / len(lines) > cfg.dup_line_frac:
            return self.drop(
                "dup_line_frac", _fraction("duplicate lines", n_dup, len(lines), ">", cfg.dup_line_frac)
            )
        if cfg.dup_line_char_frac is not None and dup_chars / n_chars > cfg.dup_line_char_frac:
            detail = _fraction(
                "characters in duplicate lines", dup_chars, n_chars, ">", cfg.dup_line_char_frac
            )
            return self.drop("dup_line_char_frac", detail)

        stats = NGramStats(tokenize(text))
        for n, max_frac in self._top:
            if stats.top_ngram_exceeds(n, max_frac * n_chars):
                what = f"characters in the most frequent {n}-gram"
                return self.drop(
                    f"top_{n}_gram", _fraction(what, stats.top_ngram_chars(n), n_chars, ">", max_frac)
                )
        for n, max_frac in self._dup:
            if stats.duplicate_ngrams_exceed(n, max_frac * n_chars):
                what = f"characters in repeated {n}-grams"
                return self.drop(
                    f"dup_{n}_gram", _fraction(what, stats.duplicate_ngram_chars(n), n_chars, ">", max_frac)
                )
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
            detail = _measured("word count", n_words, "<", cfg.min_words) if cfg.min_words else "no words"
            return self.drop("too_few_words", detail)
        if cfg.max_words is not None and n_words > cfg.max_words:
            return self.drop("too_many_words", _measured("word count", n_words, ">", cfg.max_words))

        if n_words:
            mean_length = word_chars / n_words
            if cfg.min_mean_word_length is not None and mean_length < cfg.min_mean_word_length:
                detail = _measured("mean word length", mean_length, "<", cfg.min_mean_word_length)
                return self.drop("mean_word_length_low", detail)
            if cfg.max_mean_word_length is not None and mean_length > cfg.max_mean_word_length:
                detail = _measured("mean word length", mean_length, ">", cfg.max_mean_word_length)
                return self.drop("mean_word_length_high", detail)

        if cfg.max_symbol_word_ratio is not None:
            hashes = text.count("#")
            if hashes / n_tokens > cfg.max_symbol_word_ratio:
                detail = _fraction("'#' per token", hashes, n_tokens, ">", cfg.max_symbol_word_ratio)
                return self.drop("too_many_hashes", detail)
            ellipses = text.count("...") + text.count("…")
            if ellipses / n_tokens > cfg.max_symbol_word_ratio:
                detail = _fraction("ellipses per token", ellipses, n_tokens, ">", cfg.max_symbol_word_ratio)
                return self.drop("too_many_ellipses", detail)

        lines = text.splitlines()
        if lines:
            if cfg.max_bullet_lines_ratio is not None:
                bullets = sum(1 for line in lines if line.lstrip().startswith(_BULLETS))
                if bullets / len(lines) > cfg.max_bullet_lines_ratio:
                    what = "lines starting with a bullet"
                    detail = _fraction(what, bullets, len(lines), ">", cfg.max_bullet_lines_ratio)
                    return self.drop("too_many_bullet_lines", detail)
            if cfg.max_ellipsis_lines_ratio is not None:
                ellipses = sum(1 for line in lines if line.rstrip().endswith(_ELLIPSES))
                if ellipses / len(lines) > cfg.max_ellipsis_lines_ratio:
                    what = "lines ending with an ellipsis"
                    detail = _fraction(what, ellipses, len(lines), ">", cfg.max_ellipsis_lines_ratio)
                    return self.drop("too_many_ellipsis_lines", detail)

        if cfg.min_alpha_words_ratio is not None:
            if n_alpha / n_tokens < cfg.min_alpha_words_ratio:
                detail = _fraction("tokens with a letter", n_alpha, n_tokens, "<", cfg.min_alpha_words_ratio)
                return self.drop("too_few_alpha_words", detail)

        if cfg.min_stop_words is not None:
            stop_words = len(self._stop_words.intersection(tokens))
            if stop_words < cfg.min_stop_words:
                detail = _measured("distinct stop words", stop_words, "<", cfg.min_stop_words)
                return self.drop("too_few_stop_words", detail)
        return None
