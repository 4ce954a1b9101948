"""Arithmetic word problems set in the tiny world, with checkable integer answers.

Answers follow GSM8K's format: one line per step with the calculation annotated as
``<<expression=result>>`` (the form a calculator tool can intercept) and the final answer on a last
line ``#### N``. Every number a problem needs is in the problem itself; the world's entities only
give it its characters and places, and the problems never state an entity's attributes, so they
cannot contradict or leak a fact.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

ITEMS = (
    "lanterns",
    "baskets",
    "candles",
    "maps",
    "chairs",
    "jars of honey",
    "wooden toys",
    "loaves of bread",
    "clay pots",
    "notebooks",
    "kites",
    "pairs of gloves",
)


@dataclass
class Cast:
    person: str
    pron: str  # he / she
    person2: str
    town: str
    town2: str
    org: str
    thing: str


Step = tuple[str, str, int, str]  # (lead text, expression, value, text after)


def _weekly(r: random.Random, c: Cast):
    a, w, items = r.randint(3, 25), r.randint(2, 12), r.choice(ITEMS)
    q = f"{c.person} makes {a} {items} every week. How many {items} does {c.pron} make in {w} weeks?"
    return q, [(f"In {w} weeks {c.pron} makes", f"{a}*{w}", a * w, f" {items}")]


def _tickets(r: random.Random, c: Cast):
    p, k, a, ch = r.randint(5, 30), r.randint(2, 15), r.randint(1, 4), r.randint(1, 5)
    k = min(k, p - 1)
    q = (
        f"A guided tour of {c.town} costs {p} coins for adults and {k} coins for children. A family of {a} adults "
        f"and {ch} children takes the tour. How many coins do they pay in total?"
    )
    return q, [
        ("The adults pay", f"{a}*{p}", a * p, " coins"),
        ("The children pay", f"{ch}*{k}", ch * k, " coins"),
        ("In total they pay", f"{a * p}+{ch * k}", a * p + ch * k, " coins"),
    ]


def _change(r: random.Random, c: Cast):
    n, p, items = r.randint(2, 9), r.randint(3, 40), r.choice(ITEMS)
    bill = next(b for b in (50, 100, 200, 500, 1000) if b > n * p)
    q = (
        f"{c.person} buys {n} {items} for {p} coins each and pays with a {bill}-coin note. "
        f"How much change does {c.pron} get?"
    )
    return q, [
        ("The " + items + " cost", f"{n}*{p}", n * p, " coins"),
        (f"{c.pron.capitalize()} gets", f"{bill}-{n * p}", bill - n * p, " coins in change"),
    ]


def _train(r: random.Random, c: Cast):
    s1, h1, s2, h2 = r.randint(40, 120), r.randint(1, 5), r.randint(30, 110), r.randint(1, 4)
    q = (
        f"A train leaves {c.town} for {c.town2}. It travels at {s1} kilometres per hour for {h1} hours and then at "
        f"{s2} kilometres per hour for {h2} hours. How many kilometres does it travel in total?"
    )
    return q, [
        ("First it travels", f"{s1}*{h1}", s1 * h1, " kilometres"),
        ("Then it travels", f"{s2}*{h2}", s2 * h2, " kilometres"),
        ("In total it travels", f"{s1 * h1}+{s2 * h2}", s1 * h1 + s2 * h2, " kilometres"),
    ]


def _reading(r: random.Random, c: Cast):
    p, d = r.randint(5, 40), r.randint(2, 12)
    n = p * d + r.randint(10, 300)
    q = (
        f"{c.person} is reading a book about {c.thing} that has {n} pages. {c.pron.capitalize()} reads {p} pages "
        f"every day for {d} days. How many pages are left?"
    )
    return q, [
        (f"{c.pron.capitalize()} reads", f"{p}*{d}", p * d, " pages"),
        ("The pages left are", f"{n}-{p * d}", n - p * d, ""),
    ]


def _months(r: random.Random, c: Cast):
    a, items = r.randint(10, 120), r.choice(ITEMS)
    b = r.randint(1, 2 * a - 1)
    q = (
        f"The workshop of {c.org} made {a} {items} in January. In February it made twice as many as in January, and "
        f"in March it made {b} fewer than in February. How many {items} did it make in the three months?"
    )
    feb, mar = 2 * a, 2 * a - b
    return q, [
        ("In February it made", f"2*{a}", feb, f" {items}"),
        ("In March it made", f"{feb}-{b}", mar, f" {items}"),
        ("In total it made", f"{a}+{feb}+{mar}", a + feb + mar, f" {items}"),
    ]


def _boxes(r: random.Random, c: Cast):
    boxes, per = r.randint(3, 30), r.randint(6, 48)
    used = r.randint(1, boxes * per - 1)
    q = (
        f"{c.org[:1].upper()}{c.org[1:]} ordered {boxes} boxes of candles with {per} candles in each box. During the winter, {used} candles "
        f"were used. How many candles are left?"
    )
    return q, [
        ("They ordered", f"{boxes}*{per}", boxes * per, " candles"),
        ("The candles left are", f"{boxes * per}-{used}", boxes * per - used, ""),
    ]


def _sharing(r: random.Random, c: Cast):
    k, each, items = r.randint(2, 9), r.randint(3, 20), r.choice(ITEMS)
    sold = r.randint(1, each - 1)
    total = k * each
    q = (
        f"{c.person} has {total} {items} and shares them equally among {k} friends. Each friend then gives {sold} of "
        f"them to {c.person2}. How many {items} does each friend have left?"
    )
    return q, [
        ("Each friend gets", f"{total}/{k}", each, f" {items}"),
        ("Each friend has", f"{each}-{sold}", each - sold, f" {items} left"),
    ]


def _discount(r: random.Random, c: Cast):
    pct = r.choice((10, 20, 25, 30, 40, 50))
    unit = 100 // _gcd(100, pct)
    price = unit * r.randint(1, 60)
    off = price * pct // 100
    q = (
        f"A model of {c.thing} costs {price} coins. During the spring fair in {c.town}, its price is reduced by "
        f"{pct}%. How much does the model cost during the fair?"
    )
    return q, [
        ("The discount is", f"{price}*{pct}/100", off, " coins"),
        ("During the fair it costs", f"{price}-{off}", price - off, " coins"),
    ]


def _wages(r: random.Random, c: Cast):
    h, d, rate, w = r.randint(3, 9), r.randint(3, 6), r.randint(4, 25), r.randint(2, 8)
    q = (
        f"{c.person} works {h} hours a day, {d} days a week, and earns {rate} coins an hour. "
        f"How many coins does {c.pron} earn in {w} weeks?"
    )
    return q, [
        (f"Each week {c.pron} works", f"{h}*{d}", h * d, " hours"),
        (f"Each week {c.pron} earns", f"{h * d}*{rate}", h * d * rate, " coins"),
        (f"In {w} weeks {c.pron} earns", f"{h * d * rate}*{w}", h * d * rate * w, " coins"),
    ]


def _growth(r: random.Random, c: Cast):
    y, g = r.randint(2, 12), r.randint(5, 300)
    a = r.randint(100, 5000)
    b = a + y * g
    q = (
        f"A village near {c.town} had {a} residents. Over the next {y} years it grew by the same number of residents "
        f"every year and reached {b}. By how many residents did it grow each year?"
    )
    return q, [
        ("In total it grew by", f"{b}-{a}", b - a, " residents"),
        ("Each year it grew by", f"{b - a}/{y}", g, " residents"),
    ]


def _saving(r: random.Random, c: Cast):
    s, weeks = r.randint(5, 60), r.randint(2, 20)
    have = r.randint(0, 300)
    cost = have + s * weeks
    q = (
        f"{c.person} wants to buy a telescope that costs {cost} coins. {c.pron.capitalize()} already has {have} coins "
        f"and saves {s} coins every week. How many weeks does {c.pron} need to save?"
    )
    return q, [
        (f"{c.pron.capitalize()} still needs", f"{cost}-{have}", cost - have, " coins"),
        (f"{c.pron.capitalize()} needs to save for", f"{cost - have}/{s}", weeks, " weeks"),
    ]


def _seats(r: random.Random, c: Cast):
    rows, per = r.randint(8, 40), r.randint(10, 30)
    sold = r.randint(1, rows * per - 1)
    q = (
        f"The concert hall of {c.org} has {rows} rows with {per} seats in each row. {sold} tickets were sold for "
        f"tonight's concert. How many seats are empty?"
    )
    return q, [
        ("The hall has", f"{rows}*{per}", rows * per, " seats"),
        ("The empty seats are", f"{rows * per}-{sold}", rows * per - sold, ""),
    ]


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


TEMPLATES: dict[str, Callable] = {
    "weekly": _weekly,
    "tickets": _tickets,
    "change": _change,
    "train": _train,
    "reading": _reading,
    "months": _months,
    "boxes": _boxes,
    "sharing": _sharing,
    "discount": _discount,
    "wages": _wages,
    "growth": _growth,
    "saving": _saving,
    "seats": _seats,
}


def solution(steps: list[Step]) -> tuple[str, int]:
    """GSM8K-style answer text and the final integer."""
    lines = [f"{lead} {expr} = <<{expr}={value}>>{value}{after}." for lead, expr, value, after in steps]
    final = steps[-1][2]
    return "\n".join(lines) + f"\n#### {final}", final


_PROBE_CAST = Cast("A", "she", "B", "C", "D", "E", "F")
# how many calculation steps each template's solution has (1-3); the number never depends on the draw
TEMPLATE_STEPS = {name: len(make(random.Random(0), _PROBE_CAST)[1]) for name, make in TEMPLATES.items()}


class _Scaled:
    """The draws a template makes, with every number's range shrunk toward its lower bound.

    ``randint(lo, hi)`` draws from ``[lo, lo + round((hi - lo) * scale)]``: always inside the template's
    own range, so every constraint a template relies on (change from a larger note, fewer sold than
    made, a whole-number share) still holds. Scale 1 makes exactly the draws of the plain generator.
    """

    def __init__(self, rng: random.Random, scale: float) -> None:
        self.rng, self.scale = rng, scale

    def randint(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, lo + round((hi - lo) * self.scale))

    def choice(self, seq):  # noqa: ANN001, ANN201 - random.Random.choice's own signature
        return self.rng.choice(seq)


def problems(
    rng: random.Random,
    casts: list[Cast],
    count: int,
    *,
    max_steps: int = 3,
    number_scale: float = 1.0,
) -> list[dict]:
    """``count`` distinct problems (no two with the same question text).

    ``max_steps`` keeps the templates whose solutions have at most that many steps and
    ``number_scale`` (0-1] shrinks their numbers: the two dials of the problems' difficulty, so a small
    model's cold start can begin where reinforcement learning gets a signal (some right answers in a
    group of samples, not none).
    """
    if not 0 < number_scale <= 1:
        raise ValueError(f"number_scale must be in (0, 1], not {number_scale}")
    names = [name for name, steps in TEMPLATE_STEPS.items() if steps <= max_steps]
    if not names:
        raise ValueError(f"no arithmetic template has at most {max_steps} steps (the fewest is 1)")
    draw = rng if number_scale == 1 else _Scaled(rng, number_scale)
    out: list[dict] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError(f"could not make {count} distinct arithmetic problems")
        name = rng.choice(names)
        question, steps = TEMPLATES[name](draw, rng.choice(casts))
        if question in seen:
            continue
        seen.add(question)
        answer, final = solution(steps)
        out.append({"question": question, "answer": answer, "final": final, "template": name})
    return out
