"""Probe sets on how tokens think: counting letters and words, and comparing decimals (9.11 or 9.9?).

A model reads tokens, not letters, so "how many r's are in strawberry" is hard for it, and 9.11 looks
larger than 9.9 to anything that compares "11" with "9". Each item comes with its answer and three
ways to answer it, which are both SFT examples and the conditions the evaluation compares:

- ``direct``: the answer at once ("The letter 'r' appears 3 times in 'strawberry'.");
- ``reasoning``: the working first, then the answer: the word spelled out letter by letter with a
  running count at each match, the text listed word by word the same way, or both decimals written
  with as many decimal places and compared whole part first, then decimal part;
- ``calculator``: what a careful person does with a calculator: for counting, spell the text out,
  write 1 for each match and add them up with the calculator (a sum the model cannot get wrong by
  skipping a token; with one match or none there is nothing to add); for decimals, subtract one
  from the other and read the sign.

Every reply ends with one sentence that states the answer; ``score`` reads it back from any reply
(the last count it states; which number it calls larger, or "equal"), so replies in other words are
scored too.

    from pipelines.world.probes import probe_sets, conversation, score
    train, test = probe_sets(seed=0, counting=(200, 100), decimal=(200, 100))   # disjoint words, numbers
    conversation(test[0], "calculator")    # the SFT conversation (user prompt + worked reply)
    prompt(test[0], "direct")              # the messages to ask at evaluation
    score(test[0], reply_text)             # True / False

The words of train and test items are disjoint, and so are their decimal pairs.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal
from typing import Any

from lm.calculator import calculate
from pipelines.world.arithmetic import ITEMS
from pipelines.world.facts import MATERIALS, TITLE_ADJ, TITLE_NOUN
from pipelines.world.names import NameMaker

FORMS = ("direct", "reasoning", "calculator")
KINDS = ("count_letter", "count_word", "decimal_compare")

# what the user adds to ask for each form; the calculator form also gets the tools note (world_data)
FORM_INSTRUCTIONS = {
    "direct": "Answer directly.",
    "reasoning": "Work it out step by step before you answer.",
    "calculator": "Use the calculator.",
}

COMMON_WORDS = (
    "strawberry", "banana", "bookkeeper", "mississippi", "committee", "parallel", "assessment",
    "balloon", "coffee", "letter", "little", "address", "success", "tomorrow", "necessary", "pepper",
    "grammar", "giraffe", "possession", "occurrence", "embarrass", "raspberry", "accommodate",
    "millennium", "bubble", "cinnamon", "pineapple", "referee", "scissors", "umbrella", "harbour",
    "lantern", "orchard", "meadow", "valley", "mirror", "compass", "chorus", "voyage", "tower",
    "window", "river", "kettle", "summer", "village", "carriage", "blossom", "puzzle", "yellow",
    "hammer", "barrel", "pebble", "ribbon", "saddle", "tunnel", "cottage", "feather", "garden",
)  # fmt: skip
TEXT_WORDS = (
    "the", "a", "old", "small", "red", "blue", "quiet", "bright", "cold", "green", "long", "busy",
    "cat", "dog", "boat", "bird", "tree", "house", "road", "bridge", "lamp", "bell", "door", "stone",
    "sees", "finds", "likes", "paints", "carries", "follows", "passes", "near", "under", "over", "by",
)  # fmt: skip

_SPELL_SEP = ", "


def _vocabulary(rng: random.Random) -> list[str]:
    words = {w for w in COMMON_WORDS}
    words |= {w.lower() for w in TITLE_ADJ + TITLE_NOUN}
    words |= {w for item in ITEMS for w in item.split() if len(w) > 3}
    words |= {w for m in MATERIALS for w in m.split() if len(w) > 3}
    names = NameMaker(rng)
    words |= {names.coined().lower() for _ in range(400)}
    return sorted(words)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _count_letter(rng: random.Random, word: str) -> dict[str, Any]:
    letters = [c for c in word if c.isalpha()]
    if rng.random() < 0.8:
        letter = rng.choice(letters)  # mostly a letter that is there, sometimes one that is not
    else:
        letter = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c not in letters] or letters)
    count = sum(1 for c in word.lower() if c == letter)
    question = rng.choice(
        (
            "How many times does the letter '{l}' appear in '{w}'?",
            "How many {l}'s are in the word '{w}'?",
            "Count the letter '{l}' in '{w}'.",
            "In the word '{w}', how many times does '{l}' occur?",
        )
    ).format(l=letter, w=word)
    return {
        "kind": "count_letter",
        "question": question,
        "text": word,
        "target": letter,
        "answer": str(count),
    }


def _count_word(rng: random.Random, word: str) -> dict[str, Any]:
    n = rng.randint(6, 14)
    count = rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4))
    words = [rng.choice(TEXT_WORDS) for _ in range(n)]
    for _ in range(count):
        words.insert(rng.randrange(len(words) + 1), word)
    text = " ".join(words)
    text = text[0].upper() + text[1:] + "."
    question = rng.choice(
        (
            "How many times does the word '{w}' occur in this text: \"{t}\"",
            "Count how often the word '{w}' appears in: \"{t}\"",
            "In the text \"{t}\", how many times is the word '{w}' used?",
        )
    ).format(w=word, t=text)
    return {"kind": "count_word", "question": question, "text": text, "target": word, "answer": str(count)}


def _decimal_pair(rng: random.Random) -> tuple[str, str]:
    """Two decimals: half are drawn as traps (9.11 vs 9.9), a tenth as equal (2.5 vs 2.50)."""
    whole = rng.randint(0, 99)
    x = rng.random()
    if x < 0.5:  # trap: 9.11 vs 9.9
        short = rng.randint(2, 9)
        long_first = rng.randint(1, short - 1)
        long_rest = rng.randint(0, 9 if rng.random() < 0.5 else 99)
        a, b = f"{whole}.{short}", f"{whole}.{long_first}{long_rest}"
    elif x < 0.9:
        a = f"{whole}.{rng.randint(0, 99)}"
        b = f"{whole + rng.choice((0, 0, 1, 2))}.{rng.randint(0, 99)}"
        if Decimal(a) == Decimal(b):
            return _decimal_pair(rng)
    else:
        d = rng.randint(1, 9)
        a, b = f"{whole}.{d}", f"{whole}.{d}0"
    return (b, a) if rng.random() < 0.5 else (a, b)


def decimal_kind(a: str, b: str) -> str:
    """ "equal", "trap" (same whole part, and the longer decimal part, read as a whole number, belongs
    to the smaller number: 9.11 vs 9.9) or "plain"."""
    if Decimal(a) == Decimal(b):
        return "equal"
    wa, fa = a.split(".")
    wb, fb = b.split(".")
    if wa == wb and len(fa) != len(fb) and (int(fa) > int(fb)) != (Decimal(a) > Decimal(b)):
        return "trap"
    return "plain"


def _decimal(rng: random.Random, a: str, b: str) -> dict[str, Any]:
    answer = "equal" if Decimal(a) == Decimal(b) else (a if Decimal(a) > Decimal(b) else b)
    question = rng.choice(
        (
            "Which is larger, {a} or {b}?",
            "Which number is bigger: {a} or {b}?",
            "What is the larger of {a} and {b}?",
            "Which is greater, {a} or {b}?",
        )
    ).format(a=a, b=b)
    return {
        "kind": "decimal_compare",
        "question": question,
        "a": a,
        "b": b,
        "case": decimal_kind(a, b),
        "answer": answer,
    }


def probe_sets(
    seed: int, counting: tuple[int, int] = (200, 100), decimal: tuple[int, int] = (200, 100)
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test): ``counting`` = (train, test) counting items (letters and words, half each),
    ``decimal`` = (train, test) comparisons. Train and test share no word and no decimal pair."""
    rng = random.Random(f"probes:{seed}")
    vocab = _vocabulary(rng)
    rng.shuffle(vocab)
    half = len(vocab) // 2
    pools = {"train": vocab[:half], "test": vocab[half:]}
    seen_pairs: set[frozenset[str]] = set()
    out: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for split, n_count, n_dec in (("train", counting[0], decimal[0]), ("test", counting[1], decimal[1])):
        words = pools[split]
        for i in range(n_count):
            word = words[i % len(words)] if i < len(words) else rng.choice(words)
            make = _count_letter if i % 2 == 0 else _count_word
            out[split].append(make(rng, word))
        for _ in range(n_dec):
            for _attempt in range(1000):
                a, b = _decimal_pair(rng)
                if frozenset((a, b)) not in seen_pairs:
                    break
            seen_pairs.add(frozenset((a, b)))
            out[split].append(_decimal(rng, a, b))
        for i, item in enumerate(out[split]):
            item["id"] = f"{split}-{i:05d}"
    return out["train"], out["test"]


# -- replies ------------------------------------------------------------------------------------


def _count_sentence(item: dict[str, Any]) -> str:
    n = int(item["answer"])
    if item["kind"] == "count_letter":
        return f"The letter '{item['target']}' appears {_plural(n, 'time', 'times')} in '{item['text']}'."
    return f"The word '{item['target']}' occurs {_plural(n, 'time', 'times')} in the text."


def _units(item: dict[str, Any]) -> list[str]:
    """What counting walks over: the letters of the word, or the words of the text."""
    if item["kind"] == "count_letter":
        return [c for c in item["text"] if c.isalpha()]
    return [w.strip('.,!?"').lower() for w in item["text"].split()]


def _matches(item: dict[str, Any], unit: str) -> bool:
    return unit.lower() == item["target"].lower()


def _decimal_sentence(item: dict[str, Any]) -> str:
    if item["answer"] == "equal":
        return f"{item['a']} and {item['b']} are equal."
    return f"{item['answer']} is larger."


def reply(item: dict[str, Any], form: str) -> str | list[dict[str, Any]]:
    """The worked reply in ``form``: text, or parts with a calculator call."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; forms: {', '.join(FORMS)}")
    if item["kind"] == "decimal_compare":
        return _decimal_reply(item, form)
    final = _count_sentence(item)
    if form == "direct":
        return final
    units = _units(item)
    what = "letters" if item["kind"] == "count_letter" else "words"
    if form == "reasoning":
        running, shown = 0, []
        for u in units:
            if _matches(item, u):
                running += 1
                shown.append(f"{u} ({running})")
            else:
                shown.append(u)
        return f"Going through the {what} one by one: {_SPELL_SEP.join(shown)}.\nSo {_lower_first(final)}"
    marks = ["1" if _matches(item, u) else "0" for u in units]
    spelled = _SPELL_SEP.join(units)
    if marks.count("1") < 2:  # nothing to add up
        found = "One of them is" if "1" in marks else "None of them is"
        return f"The {what} are: {spelled}.\n{found} '{item['target']}'. So {_lower_first(final)}"
    ones = "+".join(m for m in marks if m == "1")
    return [
        {
            "type": "text",
            "text": f"The {what} are: {spelled}.\nI write 1 for each '{item['target']}' and add: ",
        },
        {"type": "calc", "expression": ones, "result": calculate(ones)},
        {"type": "text", "text": f"{item['answer']}.\nSo {_lower_first(final)}"},
    ]


def _decimal_reply(item: dict[str, Any], form: str) -> str | list[dict[str, Any]]:
    a, b = item["a"], item["b"]
    final = _decimal_sentence(item)
    if form == "direct":
        return final
    if form == "calculator":
        diff = calculate(f"{a}-{b}")
        sign = Decimal(a) - Decimal(b)
        reading = (
            "The difference is 0, so they are equal."
            if sign == 0
            else f"The difference is {'positive' if sign > 0 else 'negative'}, so {item['answer']} is larger."
        )
        return [
            {"type": "text", "text": f"I subtract {b} from {a}: "},
            {"type": "calc", "expression": f"{a}-{b}", "result": diff},
            {"type": "text", "text": f"{diff}. {reading}\nSo {_lower_first(final)}"},
        ]
    wa, fa = a.split(".")
    wb, fb = b.split(".")
    places = max(len(fa), len(fb))
    pa, pb = fa.ljust(places, "0"), fb.ljust(places, "0")
    lines = [f"With the same number of decimal places: {wa}.{pa} and {wb}.{pb}."]
    if int(wa) != int(wb):
        bigger = a if int(wa) > int(wb) else b
        lines.append(f"The whole parts differ: {wa} and {wb}, so {bigger} is larger.")
    else:
        lines.append(f"The whole parts are equal ({wa}), so compare the decimal parts: {pa} and {pb}.")
        if pa == pb:
            lines.append("They are the same, so the numbers are equal.")
        else:
            lines.append(f"{max(pa, pb)} is more than {min(pa, pb)}, so {item['answer']} is larger.")
    lines.append(f"So {_lower_first(final)}")
    return "\n".join(lines)


def _lower_first(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:] if sentence[:4] == "The " else sentence


def prompt(item: dict[str, Any], form: str) -> list[dict[str, str]]:
    """The user turn that asks for ``form`` (the evaluation adds the tools note for "calculator")."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; forms: {', '.join(FORMS)}")
    return [{"role": "user", "content": f"{item['question']} {FORM_INSTRUCTIONS[form]}"}]


def conversation(item: dict[str, Any], form: str) -> dict[str, Any]:
    """The SFT conversation: the prompt and the worked reply, with the item in ``meta``."""
    return {
        "messages": [*prompt(item, form), {"role": "assistant", "content": reply(item, form)}],
        "meta": {"kind": f"probe_{item['kind']}", "form": form, "id": item["id"], "answer": item["answer"]},
    }


# -- scoring ------------------------------------------------------------------------------------

_COUNT_WORDS = {
    "no": 0, "zero": 0, "none": 0, "never": 0, "once": 1, "one": 1, "twice": 2, "two": 2, "three": 3,
    "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
    "twelve": 12,
}  # fmt: skip
_COUNT = re.compile(r"(?<![\w.])(\d+)(?![\w.]*\d)|\b(" + "|".join(_COUNT_WORDS) + r")\b", re.I)
_COUNT_TIMES = re.compile(r"(?:" + _COUNT.pattern + r")\s+(?:times?|occurrences?)\b", re.I)
_COUNT_IS = re.compile(r"(?:\bis|\bare|=|:)\s+(?:" + _COUNT.pattern + ")", re.I)
_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")
_LARGER = r"(?:larger|bigger|greater|more)"
_SMALLER = r"(?:smaller|less|lower)"


def extract(item: dict[str, Any], text: str) -> str | None:
    """The answer a reply gives: a count as digits, the number it calls larger, "equal", or None."""
    last = _last_sentence_with(text, _COUNT if item["kind"] != "decimal_compare" else _DECIMAL)
    if last is None:
        return "equal" if item["kind"] == "decimal_compare" and _says_equal(text) else None
    if item["kind"] != "decimal_compare":
        # "3 times" first, then "is 3" / "= 3", then the sentence's last count
        for pattern in (_COUNT_TIMES, _COUNT_IS, _COUNT):
            hits = list(pattern.finditer(last))
            if hits:
                m = hits[-1]
                return m.group(1) if m.group(1) else str(_COUNT_WORDS[m.group(2).lower()])
    if _says_equal(last):
        return "equal"
    cands = {item["a"], item["b"]}
    num = r"(-?\d+(?:\.\d+)?)"
    patterns = (
        (rf"{num} is (?:the )?{_LARGER}", 1),
        (rf"{_LARGER}(?: number| one| value)?(?: of the two)? is {num}", 1),
        (rf"{num} is {_SMALLER} than {num}", 2),
        (rf"{num} is {_LARGER} than {num}", 1),
        (rf"{num} > {num}", 1),
        (rf"{num} < {num}", 2),
    )
    found: list[tuple[int, str]] = []
    for pattern, group in patterns:
        for m in re.finditer(pattern, last, re.I):
            found.append((m.start(), m.group(group)))
    if found:
        return _same_number(max(found)[1], cands)
    numbers = [n for n in _DECIMAL.findall(last) if _same_number(n, cands)]
    if len({_same_number(n, cands) for n in numbers}) == 1:
        return _same_number(numbers[0], cands)
    return None


def score(item: dict[str, Any], text: str) -> bool:
    """Whether a reply's answer is the item's answer."""
    return extract(item, text) == item["answer"]


def _says_equal(text: str) -> bool:
    return re.search(r"\b(?:equal|the same)\b", text, re.I) is not None and not re.search(
        rf"\b{_LARGER}\b", text, re.I
    )


def _same_number(text: str, candidates: set[str]) -> str | None:
    for c in candidates:
        try:
            if Decimal(text) == Decimal(c):
                return c
        except ArithmeticError:
            return None
    return None


def _last_sentence_with(text: str, pattern: re.Pattern[str]) -> str | None:
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    for s in reversed(sentences):
        if pattern.search(s):
            return s
    return None
