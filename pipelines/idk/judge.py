"""Judge a model's answer against a reference: correct, wrong, or an honest refusal.

    from pipelines.idk.judge import judge, summarize
    judge("He was born in 1698.", "1698").label                        # "correct"
    judge("I don't know when Velimir Talwright was born.", "1698")    # Verdict("refusal", ...)
    judge("I'm not sure, but maybe 1700.", "1698")                     # Verdict("wrong", hedged=True)
    summarize([judge(a, ref) for a in samples])                        # ProbeSummary: consistent or not

The Llama 3 recipe judges with a model; a small world's short answers are judged by rules that a
reader can check, and that do not depend on the model being probed:

**Correct** means the answer states every key piece of a reference (any of several references):

- numbers are compared as numbers wherever they stand, so "12400 people", "12,400" and "about 12,400
  residents" all state 12,400; number words count ("two children" states 2, "no children" 0);
- names: when a reference holds capitalised words (a proper name, a title), those words are its key,
  so "The Iron Bridge" states "the painting The Iron Bridge", and "Talwright" alone does not state
  "Velimir Talwright" (a partial name is a different answer: another person may share the surname);
- otherwise every content word counts, compared after stemming, so "finding direction at sea" states
  "to find direction at sea" and "a clock" does not state "astronomical clock".

Casing, punctuation, articles and extra words never matter. Extra information is not penalised, so an
answer that lists several candidates including the reference counts as correct, and so does one whose
longer value contains the reference ("railway engineering" for "engineering"). When the question
itself holds the reference ("What kind of organisation is the Emkedos Observatory?"), the answer's
echo of the question does not count as stating it.

**Refusal** means the answer says it does not know ("I don't know", "I'm not sure", "I have no
information about", "I've never heard of", "the passage does not say", ...) and offers no answer.
A refusal that goes on to guess ("I'm not sure, but I think it was 1700") is judged by its guess,
with ``hedged`` set: counting it as a refusal would reward hallucinations wrapped in an apology.
A guess is a guessing phrase ("I think", "maybe", "probably", ...), the reference itself, or, when the
question is given, a number or a capitalised name that the question does not contain.

**Wrong** is everything else, an empty answer included. Without a reference (a fresh name nobody
knows), anything but a refusal is wrong.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

LABELS = ("correct", "wrong", "refusal")

# phrases that say "I do not know" (after apostrophes are made plain and the text is lower-cased)
_REFUSAL = re.compile(
    r"\b(?:"
    r"i (?:do not|don't|dont|really don't|honestly don't) know"
    r"|i(?: am|'m| m) (?:not|un)(?: entirely| really| quite)? ?(?:sure|certain|aware)"
    r"|i (?:cannot|can't|can not|could not|couldn't) "
    r"(?:say|tell|answer|find|recall|remember|help with that)"
    r"|i (?:do not|don't) (?:have|hold|possess) (?:any |enough |that |the )?"
    r"(?:reliable |verified |specific )?(?:information|data|knowledge|details?|record)"
    r"|i have (?:no|not got any) (?:reliable |verified |specific )?"
    r"(?:information|data|knowledge|details?|record|idea)"
    r"|i(?: have|'ve) never (?:heard|come across|seen)"
    r"|i (?:have not|haven't|havent) (?:heard|come across|seen)"
    r"|i(?: am|'m) not familiar with"
    r"|(?:i have|there is|there's) no (?:record|information|mention)"
    r"|no idea"
    r"|(?:is|are|remains) unknown"
    r"|nobody knows|no one knows"
    r"|(?:does|do|did) not (?:say|mention|state|tell)|(?:doesn't|don't|didn't) (?:say|mention|state|tell)"
    r"|(?:found|find) nothing"
    r"|not (?:able|in a position) to (?:answer|say|tell)"
    r"|unable to (?:answer|say|tell|find)"
    r")"
)
_GUESS = re.compile(
    r"\b(?:i think|i believe|i guess|my guess|maybe|perhaps|probably|possibly|likely|might be|"
    r"may be|could be|i suspect|if i had to guess|presumably|roughly|around|approximately)\b"
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_CLAUSES = re.compile(r"[.!?;:]+(?=\s|$)|\n+|,(?=\s)|\bbut\b|\bthough\b|\bhowever\b")
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d")
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z'\-]*")

STOPWORDS = frozenset(
    "a an the of to in on at for by with from and or its it his her their this that is was were be "
    "been as into about some".split()
)
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "once": 1, "twice": 2, "none": 0,
}  # fmt: skip
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_NUMBER_WORD = re.compile(
    r"\b(?:(" + "|".join(_TENS) + r")(?:[- ](" + "|".join(k for k in _UNITS if _UNITS[k] < 10) + r"))?"
    r"|(" + "|".join(_UNITS) + r"))\b"
)
_NO_THING = re.compile(r"\bno (?=[a-z])")  # "no children" is 0; "No, ..." is not
_NOT_A_COUNT = re.compile(r"\b(?:no one|one of|one another|any one|every one|some one)\b")


@dataclass(frozen=True)
class Verdict:
    label: str  # correct | wrong | refusal
    hedged: bool = False  # a refusal phrase came with an answer
    reason: str = ""


def judge(
    answer: str,
    reference: str | Sequence[str] | None,
    question: str | None = None,
) -> Verdict:
    """Classify ``answer``; ``reference`` is the right answer (or several accepted ones), None when
    there is none (then only a refusal is right); ``question`` helps tell a guess from an echo."""
    text = (answer or "").translate(_APOSTROPHES).strip()
    if not text:
        return Verdict("wrong", reason="empty answer")
    refs = [reference] if isinstance(reference, str) else list(reference or ())
    refusal = is_refusal(text)
    # after a refusal phrase only the rest can answer: "I have no information" states no 0
    body = " ".join(c for c in _CLAUSES.split(text) if c.strip() and not is_refusal(c)) if refusal else text
    matched = any(states(_without_echo(body, r, question), r) for r in refs if r and r.strip())
    if refusal:
        guess = matched or _guesses(text, question)
        if not guess:
            return Verdict("refusal", reason="says it does not know")
        if matched:
            return Verdict("correct", hedged=True, reason="a refusal phrase, then the reference")
        return Verdict("wrong", hedged=True, reason="a refusal phrase, then a guess")
    if matched:
        return Verdict("correct", reason="states the reference")
    if not refs:
        return Verdict("wrong", reason="answers a question nobody can answer")
    return Verdict("wrong", reason=_miss_reason(text, refs))


def is_refusal(text: str) -> bool:
    """True when the text says, in one of its usual phrasings, that it does not know."""
    return _REFUSAL.search(text.translate(_APOSTROPHES).lower()) is not None


def states(text: str, reference: str) -> bool:
    """True when ``text`` states every key piece of ``reference`` (module docstring)."""
    numbers, words, names = _key(reference)
    if not numbers and not words:
        return _normal(reference) in _normal(text)
    if numbers and not numbers <= _numbers(text):
        return False
    return words <= _words(text, names)


_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d[\d,.]*\d|\d")


def _without_echo(text: str, reference: str, question: str | None) -> str:
    """``text`` without the spans it repeats from the question, when the question itself states the
    reference ("What kind of organisation is the Emkedos Observatory?" with reference "observatory":
    "I don't know what kind of organisation the Emkedos Observatory is" does not state it). Only spans
    longer than the reference's key are removed, so "An observatory." still does."""
    if not question:
        return text
    q = question.translate(_APOSTROPHES)
    numbers, words, names = _key(reference)
    if not (numbers <= _numbers(q) and words <= _words(q, names)):
        return text
    q_tokens = [t.lower() for t in _TOKEN.findall(q)]
    spans = {tuple(q_tokens[i:j]) for i in range(len(q_tokens)) for j in range(i + 1, len(q_tokens) + 1)}
    shortest = max(2, len(numbers) + len(words) + 1)
    tokens = _TOKEN.findall(text)
    low = [t.lower() for t in tokens]
    kept, i = [], 0
    while i < len(tokens):
        j = i + shortest
        if j <= len(tokens) and tuple(low[i:j]) in spans:
            while j < len(tokens) and tuple(low[i : j + 1]) in spans:
                j += 1
            i = j
            continue
        kept.append(tokens[i])
        i += 1
    return " ".join(kept)


def _guesses(text: str, question: str | None) -> bool:
    """Whether a reply with a refusal phrase also offers an answer (module docstring)."""
    low = text.lower()
    if _GUESS.search(low):
        return True
    if question is None:
        return False
    q = question.translate(_APOSTROPHES)
    q_words = {w.lower() for w in _WORD.findall(q)}
    for clause in _CLAUSES.split(text):
        clause = clause.strip()
        if not clause or is_refusal(clause):
            continue
        if _digits(clause) - _digits(q):  # digits only: "no one has written about it" is no guess
            return True
        names = [w for w in _CAPITALISED.findall(clause)[1:] if w.lower() not in q_words and w != "I"]
        first = _CAPITALISED.match(clause)
        if first and first.group(0).lower() not in q_words and first.group(0).lower() not in _OPENERS:
            names.append(first.group(0))
        if names:
            return True
    return False


_OPENERS = frozenset(
    "i im i'm sorry unfortunately no yes well it he she they this that there the a an my as so "
    "please you your let perhaps maybe".split()
)


def _miss_reason(text: str, refs: list[str]) -> str:
    for r in refs:
        numbers, words, names = _key(r)
        if words and _words(text, names) & words and not words <= _words(text, names):
            return "states part of the reference"
        if numbers and _numbers(text) and not numbers <= _numbers(text):
            return "states another number"
    return "does not state the reference"


@lru_cache(maxsize=65536)
def _key(reference: str) -> tuple[frozenset[float], frozenset[str], bool]:
    """The numbers and the key words a correct answer must state, and whether the words are names
    (compared whole, so "Talwrighte" is not "Talwright") or content words (compared stemmed)."""
    ref = reference.translate(_APOSTROPHES)
    numbers = frozenset(_numbers(ref))
    bare = _NUMBER.sub(" ", ref)
    tokens = [t for t in _WORD.findall(bare) if not t.isdigit()]
    caps = [t for t in tokens if t[0].isupper() and t.lower() not in STOPWORDS]
    sentence_case = len(tokens) > 1 and caps == [tokens[0]]
    chosen = caps if caps and not sentence_case else [t for t in tokens if t.lower() not in STOPWORDS]
    if numbers and not caps:  # "450 kilograms": the number is the answer, the unit is not
        chosen = []
    names = bool(caps) and not sentence_case
    return numbers, frozenset(_word(t) if names else _stem(t.lower()) for t in chosen), names


def _numbers(text: str) -> set[float]:
    out = {float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text)}
    low = _NOT_A_COUNT.sub(" ", text.lower())
    for m in _NUMBER_WORD.finditer(low):
        if m.group(3):
            out.add(float(_UNITS[m.group(3)]))
        else:
            out.add(float(_TENS[m.group(1)] + (_UNITS[m.group(2)] if m.group(2) else 0)))
    if _NO_THING.search(low):
        out.add(0.0)
    return out


def _words(text: str, names: bool) -> set[str]:
    """The text's words as names (lower-cased, possessive dropped) or stems."""
    tokens = _WORD.findall(text.translate(_APOSTROPHES))
    return {_word(t) for t in tokens} if names else {_stem(t.lower()) for t in tokens}


def _word(token: str) -> str:
    word = token.lower().strip("'-")
    return word[:-2] if word.endswith("'s") else word


def _digits(text: str) -> set[float]:
    return {float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text)}


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _stemmer().stemWord(word.strip("'-"))


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


@dataclass
class ProbeSummary:
    """Verdicts on k samples of one question: counts, and whether the model knows the answer."""

    counts: Counter[str] = field(default_factory=Counter)
    hedged: int = 0
    samples: int = 0

    @property
    def correct_share(self) -> float:
        return self.counts["correct"] / self.samples if self.samples else 0.0

    def knows(self, min_correct_share: float = 1.0, allow_hedged: bool = False) -> bool:
        """Correct in at least ``min_correct_share`` of the samples (and never hedging, unless
        ``allow_hedged``): the Llama 3 recipe's "answers correctly and consistently"."""
        if not self.samples:
            return False
        return self.correct_share >= min_correct_share and (allow_hedged or not self.hedged)

    def as_dict(self) -> dict[str, object]:
        return {"samples": self.samples, "hedged": self.hedged, **{k: self.counts[k] for k in LABELS}}


def summarize(verdicts: Iterable[Verdict]) -> ProbeSummary:
    s = ProbeSummary()
    for v in verdicts:
        s.counts[v.label] += 1
        s.hedged += int(v.hedged)
        s.samples += 1
    return s
