"""Final answers: found in a model's text, normalised, and compared (rule rewards and evaluation share these).

    from lm.answers import extract_answer, reference_answer, answers_match
    extract_answer("... so she has 1,000 coins.")            # "1,000"
    extract_answer("<think>..</think><answer>$5</answer>")   # "$5"
    reference_answer("Natalia sold ... #### 72")             # "72"
    answers_match("$1,000.00", "1000")                       # True
    answers_match("\\frac{1}{2}", "0.5")                     # True (math-verify)

Plain numbers (``1,000``, ``$5``, ``5.0``, ``-3``, ``50%``, ``3/4``) are compared here, exactly, as
fractions: that is all GSM8K needs and costs microseconds. Anything else (LaTeX, ``\\boxed{}``,
radicals, expressions, sets) goes to Hugging Face's ``math-verify``, which parses LaTeX and plain
expressions into sympy and tries several equivalences. math-verify bounds its time with
``signal.alarm``, which fails off the main thread (Ray actors, thread pools); we switch that off
(``parsing_timeout=None``, ``timeout_seconds=None``) and bound each comparison with
``lm.timelimit.call_with_time_limit`` instead, after refusing expressions that could start one
unbounded C-level computation (huge powers, factorials or literals, see ``_too_big``).
``answers_match`` never raises: a failure, a refusal or a timeout is "no match" and is counted in
``VERIFY_STATS``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from lm.timelimit import TimeLimitExceeded, call_with_time_limit

# A number as people and models write it: optional sign and currency, thousands separated by commas
# (only in groups of three, so "1,2,3" is three numbers), decimals, a fraction a/b, a percent sign.
_NUMBER = re.compile(
    r"(?<![\w.)])[-−+]?(?:[$€£]\s?)?(?:\d{1,3}(?:,\d{3})+(?!\d|,\d)|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?%?"
    r"|(?<![\w.)])[-−+]?[$€£]?\.\d+%?"
)
_PLAIN_NUMBER = re.compile(
    r"(?P<sign>[-+]?)(?P<int>\d{1,3}(?:,\d{3})+|\d*)(?P<frac>\.\d*)?(?:/(?P<den>\d+))?(?P<pct>%)?"
)
_LATEX_HINT = re.compile(r"\\[a-zA-Z]+|[\^{}_=]|[a-zA-Z]\s*[-+*/]|sqrt|pi")
# What may surround a number and not change it: LaTeX math delimiters and spacing, currency, units.
_STRIP = re.compile(r"\\[,!;: ]|\\(?:text|mathrm|textbf|mathbf)\{[^{}]*\}|\\?\$|\\\(|\\\)|\\\[|\\\]|[€£]")
_INNER_SPACE = re.compile(r"(?<=[-+/])\s+|\s+(?=[/%])")
# a number, then one word of two letters or more that is a unit, not mathematics or a scale
_NUMBER_AND_UNIT = re.compile(
    r"(\S+)\s+\(?(?!(?:pi|e|i|hundred|thousand|million|billion|trillion|percent)\b)[^\W\d_]{2}[^\s()]*\)?",
    re.IGNORECASE,
)
_MATH_SEGMENT = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)

MAX_SYMBOLIC_CHARS = 300  # longer answers are not given to sympy (no real final answer is longer)
_MAX_DIGITS = 500  # refuse literals, powers and factorials that would produce numbers beyond this

VERIFY_STATS: Counter[str] = Counter()  # "symbolic", "timeout", "error", "refused" (per process)

log = logging.getLogger("raychat")


def find_numbers(text: str) -> list[str]:
    """Every number in ``text``, in order, as written."""
    return [m.group(0) for m in _NUMBER.finditer(text)]


# How much of a text the answer readers look at. Final answers are short and at the end; the number
# pattern backtracks quadratically on a long run of thousands groups ("1" + ",000" x 25,000: 35 s),
# which a completion of any length could hold.
_LAST_CHARS = 1000


def last_number(text: str) -> str | None:
    """The last number in ``text``, looked for window by window from the end (each window starting
    after a white space, so no number is cut in two), which keeps the search linear in the text."""
    end = len(text)
    while end > 0:
        start = max(0, end - _LAST_CHARS)
        if start > 0:
            space = next((i for i in range(start, end) if text[i].isspace()), None)
            if space is not None and space + 1 < end:  # else no white space to start at: cut anyway
                start = space + 1
        numbers = find_numbers(text[start:end])
        if numbers:
            return numbers[-1]
        end = start
    return None


def boxed_contents(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    open_at = text.find("{", start)
    if open_at < 0:
        rest = text[start:].split(None, 1)  # "\boxed 5"
        return rest[1].split()[0] if len(rest) > 1 and rest[0] == "\\boxed" else None
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None  # unbalanced: the text was cut off


def answer_tag(text: str) -> str | None:
    """The contents of the last complete ``<answer>...</answer>`` (from the last ``<answer>`` before the
    last ``</answer>``); None if there is none. Found from the end, not by a regular expression,
    which took quadratic time on many opening tags."""
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    return text[start + len("<answer>") : end].strip() if start >= 0 else None


def gsm8k_final(text: str) -> str | None:
    """The number after the last ``####`` (GSM8K's final-answer line); None if absent."""
    at = text.rfind("####")
    if at < 0:
        return None
    line = text[at + 4 :].lstrip()[:_LAST_CHARS].split("\n", 1)[0]
    numbers = find_numbers(line)
    return numbers[0] if numbers else None


def _narrow(span: str) -> str:
    """A final-answer span reduced to its answer: itself if it is a number or mathematics, otherwise
    its last boxed or ``$...$`` mathematics, or its last number ("The total is 18 coins." -> "18")."""
    span = span.strip()[-_LAST_CHARS:].rstrip(".").strip()  # a final answer is short (and math segments
    if parse_number(span) is not None:  # backtracked quadratically on a long span)
        return span
    unit = _NUMBER_AND_UNIT.fullmatch(span)  # "18 coins", "5 km/h", "1/2 cup", "18 (coins)"
    if unit and parse_number(unit.group(1)) is not None:
        return unit.group(1)
    inner = boxed_contents(span)
    if inner is not None:
        return inner.strip()
    prose = re.search(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}\s+[a-zA-Z]{2,}", _MATH_SEGMENT.sub(" ", span))
    if not prose:
        return span  # mathematics (or a single word) rather than a sentence
    segments = [next(g for g in m.groups() if g is not None) for m in _MATH_SEGMENT.finditer(span)]
    if segments:
        return segments[-1].strip()
    return last_number(span) or span


def extract_answer(completion: str) -> str | None:
    """A completion's final answer: the last ``<answer>...</answer>`` when present, else the number after
    ``####``, else the last ``\\boxed{}``, else the last number in the text. None when there is none."""
    tagged = answer_tag(completion)
    if tagged is not None:
        return _narrow(tagged) if tagged else None
    for found in (gsm8k_final(completion), boxed_contents(completion)):
        if found is not None and found.strip():
            return found.strip()
    return last_number(completion)


def reference_answer(reference: str) -> str:
    """A reference's answer: after ``####`` (GSM8K), else the last ``\\boxed{}``, else ``<answer>``'s
    contents, else the whole text."""
    if "####" in reference:
        tail = reference[reference.rfind("####") + 4 :].strip()
        return gsm8k_final(reference) or tail
    for found in (boxed_contents(reference), answer_tag(reference)):
        if found is not None and found.strip():
            return found.strip()
    return reference.strip()


def parse_number(text: str) -> Fraction | None:
    """A plain number as an exact fraction (``"1,000"``, ``"$5"``, ``"5.0"``, ``"-3"``, ``"50%"``,
    ``"3/4"``, ``"\\$1{,}000"``), or None when the text is anything else."""
    if len(text) > 100:
        return None
    s = text.strip().replace("−", "-").replace("{,}", ",").replace("\\%", "%")
    s = _INNER_SPACE.sub("", _STRIP.sub("", s)).strip().rstrip(".")
    m = _PLAIN_NUMBER.fullmatch(s)
    if not m or not (m.group("int") or (m.group("frac") or "")[1:]):
        return None
    digits = m.group("int").replace(",", "") or "0"
    frac = (m.group("frac") or ".")[1:]
    value = Fraction(int(digits + frac), 10 ** len(frac))
    if m.group("den") is not None:
        if int(m.group("den")) == 0 or frac:
            return None
        value /= int(m.group("den"))
    if m.group("pct"):
        value /= 100
    return -value if m.group("sign") == "-" else value


def _too_big(expr: Any) -> bool:
    """Whether comparing ``expr`` could start one unbounded C-level computation (which no Python-level
    time limit can stop): a literal, power or factorial beyond ``_MAX_DIGITS`` digits."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Integer) and abs(int(node)).bit_length() > 3.33 * _MAX_DIGITS:
            return True
        if isinstance(node, sympy.Pow):
            base, exp = node.args
            if exp.has(sympy.Pow) or exp.has(sympy.factorial):
                return True
            if exp.is_Number and abs(float(exp)) > _MAX_DIGITS:
                return True
        if isinstance(node, (sympy.factorial, sympy.factorial2, sympy.gamma, sympy.binomial)):
            if any(not a.is_Number or abs(float(a)) > _MAX_DIGITS for a in node.args):
                return True
    return False


def _quiet_math_verify() -> None:
    """math-verify warns once that its own timeout is off: we bound time ourselves, so drop that line."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith("Timeout is disabled")

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_Drop())


_quiet_math_verify()


def _unwrap_math(text: str) -> str:
    """``$x$``, ``$$x$$``, ``\\(x\\)``, ``\\[x\\]`` -> ``x`` (math-verify reads the answer from a \\boxed{})."""
    m = _MATH_SEGMENT.fullmatch(text.strip())
    return next(g for g in m.groups() if g is not None).strip() if m else text.strip()


def warm_up() -> None:
    """Imports math-verify and parses once (about 1.5 s, mostly sympy and the LaTeX grammar), so the
    first answer that needs it is not charged for that inside its time limit."""
    symbolic_equal("\\frac{1}{2}", "0.5", time_limit_s=0)


def symbolic_equal(pred: str, gold: str, time_limit_s: float = 2.0) -> bool:
    """math-verify's equivalence of two answers (LaTeX or plain), within ``time_limit_s``; never raises."""
    if len(pred) > MAX_SYMBOLIC_CHARS or len(gold) > MAX_SYMBOLIC_CHARS:
        VERIFY_STATS["refused"] += 1
        return False
    try:
        from math_verify import parse, verify

        def compare() -> bool:
            g = parse(f"\\boxed{{{_unwrap_math(gold)}}}", parsing_timeout=None)
            p = parse(f"\\boxed{{{_unwrap_math(pred)}}}", parsing_timeout=None)
            if not g or not p:
                return False
            if any(_too_big(x) for x in (*g, *p) if not isinstance(x, str)):
                VERIFY_STATS["refused"] += 1
                return False
            return bool(verify(g, p, timeout_seconds=None))

        result = call_with_time_limit(compare, time_limit_s)
        VERIFY_STATS["symbolic"] += 1
        return result
    except TimeLimitExceeded:
        VERIFY_STATS["timeout"] += 1
        log.warning(
            "answer comparison ran past %.1f s and counts as no match: %.60r vs %.60r",
            time_limit_s,
            pred,
            gold,
        )
        return False
    except Exception:  # noqa: BLE001 - a comparison that fails is "no match", never a crash
        VERIFY_STATS["error"] += 1
        return False


def _readings(text: str, value: Fraction) -> set[Fraction]:
    """A percentage is read both ways: "75%" matches 0.75 and also 75 (GSM8K's "what percent" answers
    are written without the sign)."""
    return {value, value * 100} if "%" in text else {value}


def answers_match(pred: str | None, gold: str | None, time_limit_s: float = 2.0) -> bool:
    """Whether two final answers agree: exactly as numbers when both are plain numbers (a percentage
    matches its fraction or its bare number), otherwise by
    math-verify (fractions, LaTeX, ``\\boxed{}``, expressions). Never raises."""
    if pred is None or gold is None or not pred.strip() or not gold.strip():
        return False
    a, b = parse_number(pred), parse_number(gold)
    if a is not None and b is not None:
        return bool(_readings(pred, a) & _readings(gold, b))
    for number, other in ((a, gold), (b, pred)):
        if number is not None and not _LATEX_HINT.search(other) and "/" not in other:
            return False  # a number against a word ("seven"): nothing symbolic to find
    return symbolic_equal(pred, gold, time_limit_s)
