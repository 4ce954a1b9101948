"""Labelled sentences for judging a phone-number masker: phone numbers from many countries' public
numbering plans, and text with digits that is not a phone number and must stay verbatim.

Why generated: real crawl text has too few labelled phone numbers in too few formats. Each country
below is written from its public numbering plan (area codes, mobile prefixes, number lengths, the
trunk prefix dialled at home, the international prefix dialled abroad), including the fictional
ranges regulators reserve for drama (Ofcom's 020 7946 0xxx and 07700 900xxx, ACMA's 02 5550 xxxx,
the North-American 555-01xx), and every number is written the ways people write it: national,
international (``+CC``, with or without the ``(0)`` trunk marker) and with an international dialling
prefix (00, 011, 001, 0011), with spaces, dashes, dots, slashes, brackets or no separator at all.

Two splits keep tuning honest: ``tune`` and ``heldout`` use different seeds, different halves of the
sentence templates and separator styles, and ``heldout`` adds countries that ``tune`` never shows.
Some sentences carry two numbers, or a number beside other digits; some give no hint at all. The
negatives (``phone_lookalikes.py``) are dates, years, times, prices, postcodes, street numbers,
versions, ISBNs, citations, order numbers, coordinates, percentages, counts, and phone-like digit
strings that no numbering plan allows.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from pipelines.world.phone_lookalikes import OTHER_CATEGORIES, lookalike

SPLITS = ("tune", "heldout")


@dataclass(frozen=True)
class Item:
    """One labelled stretch of a sentence: ``kind`` is "phone" or "other" (text that must stay)."""

    start: int
    end: int
    kind: str
    category: str  # phone: national / international / idd; other: date, year, price, ...
    country: str  # ISO region of a phone number; "" for other text


@dataclass(frozen=True)
class Case:
    text: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Plan:
    """A country's numbering plan: country code, trunk prefix ("" where none) and number shapes.

    A shape is the national significant number as groups; ``#`` is any digit, ``N`` is 2-9.
    ``home_only`` shapes (toll-free numbers) are only written nationally, as they stand; a shape starting with
    ``~`` is written at home without the trunk prefix (Indian and Chinese mobiles).
    """

    region: str
    cc: str
    trunk: str
    shapes: tuple[str, ...]
    separators: str = " -"
    home_only: tuple[str, ...] = ()
    area_brackets: bool = True  # "(020) 7946 0958" is a customary way of writing it


# region, country code, trunk prefix ("-" for none), the separators the country writes, whether
# "(area) rest" is customary, then the shapes; "!" marks a toll-free shape only written nationally.
_PLAN_TABLE = """
GB 44 0 " " y | 20 7946 0### ; 20 7### #### ; 161 496 0### ; 113 496 0### ; 1632 960### ; 7700 900### ;
  7700 900 ### ; 7N## ###### ; 121 N## #### ; 131 N## #### ; !0800 ### ####
FR 33 0 " .-" n | 1 ## ## ## ## ; 6 ## ## ## ## ; 7 ## ## ## ## ; 4 ## ## ## ## ; 5 ## ## ## ## ; 9 ## ## ## ##
DE 49 0 " /-" y | 30 ######## ; 30 ####### ; 89 ####### ; 40 ######## ; 69 ######## ; 221 ####### ;
  151 ######## ; 160 ####### ; 176 ######## ; 711 ######
AU 61 0 " " y | 2 N### #### ; 3 9### #### ; 7 3### #### ; 8 8### #### ; 4## ### ### ; 2 5550 #### ;
  3 7010 #### ; !1300 ### ### ; !1800 ### ###
US 1 1 " -." y | 212 N## #### ; 415 N## #### ; 312 N## #### ; 617 N## #### ; 202 N## #### ; 305 N## #### ;
  512 N## #### ; 718 555 01## ; 646 555 01## ; 213 555 01## ; !800 555 01## ; !888 N## ####
CA 1 1 " -." y | 416 N## #### ; 604 N## #### ; 514 N## #### ; 613 555 01## ; 403 N## ####
BR 55 - " -" y | 11 9####-#### ; 21 9####-#### ; 11 3###-#### ; 21 2###-#### ; 31 3###-#### ; 61 3###-#### ;
  51 9####-####
IN 91 0 " -" y | 9#### ##### ; ~9#### ##### ; ~8#### ##### ; ~7#### ##### ; ~6#### ##### ; 11 2### #### ; 22 2### #### ; 80 2### #### ;
  44 2### ####
SG 65 - " -" n | 6### #### ; 9### #### ; 8### #### ; !1800 ### ####
JP 81 0 "- " y | 3 ####-#### ; 6 ####-#### ; 90 ####-#### ; 80 ####-#### ; 45 ###-#### ; 52 ###-#### ;
  !0120 ###-###
ES 34 - " -." n | 91# ### ### ; 93# ### ### ; 6## ### ### ; 91 ### ## ## ; 6## ## ## ##
IT 39 - " -." n | 06 #### #### ; 02 #### #### ; 011 ####### ; 055 ###### ; 3## ### #### ; 3## #######
NL 31 0 " -" y | 20 ### #### ; 10 ### #### ; 70 ### #### ; 30 ### #### ; 6 ######## ; 6 #### ####
MX 52 - " -" y | 55 #### #### ; 33 #### #### ; 81 #### #### ; 222 ### #### ; 998 ### ####
ZA 27 0 " -" y | 11 ### #### ; 21 ### #### ; 31 ### #### ; 82 ### #### ; 83 ### #### ; 72 ### ####
IE 353 0 " -" y | 1 ### #### ; 8# ### #### ; 21 ### #### ; 91 ### ###
NZ 64 0 " -" y | 9 ### #### ; 4 ### #### ; 21 ### #### ; 27 ### ####
HK 852 - " -" n | 2### #### ; 9### #### ; 6### #### ; 3### ####
CN 86 0 " -" y | 10 #### #### ; 21 #### #### ; ~13# #### #### ; ~18# #### ####
AR 54 0 " -" y | 11 4###-#### ; 351 4##-#### ; 341 4##-####
SE 46 0 " -" y | 8 ### ### ## ; 70 ### ## ## ; 31 ### ## ##
CH 41 0 " -" y | 44 ### ## ## ; 79 ### ## ## ; 22 ### ## ##
BE 32 0 " -" y | 2 ### ## ## ; 47# ## ## ## ; 3 ### ## ##
PL 48 - " -" n | 12 ### ## ## ; 22 ### ## ## ; 6## ### ### ; 5## ### ###
KR 82 0 " -" y | 2 ####-#### ; 10 ####-#### ; 31 ###-####
AT 43 0 " -" y | 1 ####### ; 664 ####### ; 316 ######
TR 90 0 " -" y | 212 ### ## ## ; 5## ### ## ## ; 312 ### ## ##
NO 47 - " " n | 2# ## ## ## ; 4## ## ### ; 9## ## ###
CZ 420 - " " n | 2## ### ### ; 6## ### ### ; 7## ### ###
CL 56 - " -" y | 2 2### #### ; 9 #### #### ; 32 2## ####
GR 30 - " -" n | 210 ### #### ; 69# ### #### ; 2310 ### ###
"""


def _parse_plans(table: str) -> dict[str, Plan]:
    plans = {}
    for row in table.replace("\n  ", " ").strip().splitlines():
        head, shapes_text = row.split(" | ")
        region, cc, trunk, rest = head.split(" ", 3)
        separators, brackets = rest.rsplit(" ", 1)
        shapes = [s.strip() for s in shapes_text.split(";") if s.strip()]
        plans[region] = Plan(
            region,
            cc,
            "" if trunk == "-" else trunk,
            tuple(s for s in shapes if not s.startswith("!")),
            separators.strip('"'),
            tuple(s[1:] for s in shapes if s.startswith("!")),
            brackets == "y",
        )
    return plans


PLANS = _parse_plans(_PLAN_TABLE)

TUNE_REGIONS = ("GB", "FR", "DE", "AU", "US", "CA", "BR", "IN", "SG", "JP", "ES", "IT", "NL", "MX", "ZA")
HELDOUT_ONLY_REGIONS = (
    "IE",
    "NZ",
    "HK",
    "CN",
    "AR",
    "SE",
    "CH",
    "BE",
    "PL",
    "KR",
    "AT",
    "TR",
    "NO",
    "CZ",
    "CL",
    "GR",
)
# international dialling prefixes, with a region that dials them (its own ones are not used for it)
IDD = (("00", "GB"), ("00", "DE"), ("011", "US"), ("001", "SG"), ("0011", "AU"), ("010", "JP"))


def _digits(shape: str, rng: random.Random) -> list[str]:
    """Random digits for a shape; a subscriber number (the group after the area code) never starts
    with 0 or 1, which numbering plans keep for prefixes."""
    out = []
    for i, group in enumerate(shape.lstrip("~").replace("-", " ").split()):
        if i == 1 and group[0] == "#":
            group = "N" + group[1:]
        out.append(
            "".join(
                str(rng.randint(0, 9)) if c == "#" else str(rng.randint(2, 9)) if c == "N" else c
                for c in group
            )
        )
    return out


def phone_number(plan: Plan, form: str, rng: random.Random, style: int) -> str:
    """One number of ``plan`` written in ``form`` ("national", "international" or "idd")."""
    shape = rng.choice(plan.shapes + (plan.home_only if form == "national" else ()))
    groups = _digits(shape, rng)
    dashed = "-" in shape  # the country writes the last groups with a dash: 91234-5678, 03-1234-5678
    sep = plan.separators[style % len(plan.separators)]
    if rng.random() < 0.15:
        sep = rng.choice(" -.")
    if form == "national":
        if shape in plan.home_only:
            return sep.join(groups)
        trunk = "" if shape.startswith("~") or plan.region in ("US", "CA") else plan.trunk
        head = trunk + groups[0]
        rest = groups[1:]
        body = ("-" if dashed else sep).join(rest)
        if plan.region in ("US", "CA"):
            if rng.random() < 0.3:
                return rng.choice(("1-", "1 ", "")) + "-".join(groups) if sep != "." else ".".join(groups)
            if rng.random() < 0.35:
                return "".join(groups)  # 2125550147
            if rng.random() < 0.15:
                return rng.choice((f"({head}){body}", f"{head}/{body}", f"1 ({head}) {body}"))
            return f"({head}) {body}" if rng.random() < 0.4 else sep.join(groups)
        if plan.area_brackets and rng.random() < 0.35:
            return f"({head}) {body}"
        if plan.region == "DE" and sep == "/":
            return f"{head}/{''.join(rest)}"
        if rng.random() < 0.12 and len("".join(groups)) <= 11:
            return head + "".join(rest)  # no separator at all
        return f"{head}{' ' if sep == '/' else sep}{body}"
    nsn = " ".join(groups) if not dashed else groups[0] + " " + "-".join(groups[1:])
    if sep in ".-" and not dashed:
        nsn = sep.join(groups)
    if form == "international":
        pick = rng.random()
        if plan.trunk == "0" and pick < 0.15:
            return f"+{plan.cc} (0){nsn}"
        if pick < 0.25 and plan.area_brackets:
            return f"+{plan.cc} ({groups[0]}) {' '.join(groups[1:])}"
        if pick < 0.35:
            return f"+{plan.cc}{''.join(groups)}"
        if pick < 0.42:
            return f"(+{plan.cc}) {nsn}"
        if plan.trunk == "0" and pick < 0.5:
            return f"+{plan.cc}{rng.choice((' (0) ', '(0)'))}{nsn}"
        return f"+{plan.cc}{sep if sep in '.-' and not dashed else ' '}{nsn}"
    prefix, home = rng.choice(
        [p for p in IDD if p[1] != plan.region and not (plan.cc == "1" and p[1] == "US")]
    )
    return (
        f"{prefix}{rng.choice((' ', '-', ''))}{plan.cc} {nsn}"
        if plan.cc != "1"
        else f"{prefix}{rng.choice(('', ' '))}1-{'-'.join(groups)}"
    )


# Sentence templates; {p} is the phone number. Half carry a word such as "call" or "tel" before it.
PHONE_TEMPLATES = (
    "Call us on {p} for opening hours.",
    "Tel. {p}",
    "For bookings phone {p} between 9am and 5pm.",
    "You can reach Maria at {p} after six.",
    "Phone: {p} | Email: see the contact page",
    "The office number is {p}.",
    "Fax {p}",
    "Mobile: {p}",
    "Contact the front desk ({p}) for details.",
    "Questions? Ring {p} any weekday.",
    "WhatsApp {p} to order.",
    "Our Sydney office, {p}, is open Monday to Friday.",
    "Tél. : {p}",
    "Telefon: {p}",
    "Teléfono {p}",
    "Helpline {p} (free from landlines)",
    "Send a text to {p} with your name.",
    "Reservations: {p}",
    "For more information, dial {p}.",
    "{p} is the number of the school office.",
    "Tenants should report repairs on {p} or online.",
    "T: {p}",
    "Please call {p} to cancel.",
    "Her direct line is {p}.",
    "In an emergency contact the warden on {p}.",
    "Customer service {p} - we answer within minutes.",
    "Ph: {p}",
    "The clinic can be reached at {p}.",
    "Hotline: {p}",
    "Orders by telephone {p} are welcome.",
    "Call or text {p}",
    "Information line {p}, weekdays only.",
)


FORMS = ("national", "international", "idd")


# sentences with two labelled items: a second number, or digits that must stay next to a number
PAIR_TEMPLATES = (
    "Tel {p} / Fax {q}",
    "Call {p} or, after hours, {q}.",
    "On {x} the office moved; the new number is {p}.",
    "Phone {p} (since {x})",
    "Book before {x} by calling {p}.",
    "Mobile {p}, landline {q}",
)
# sentences that give no hint: the digits alone must tell
NEUTRAL_TEMPLATES = (
    "The value {x} appears on page two.",
    "We noted {x} in the margin.",
    "{x} was written on the back of the photo.",
    "Next to it someone had added {x}.",
    "The sign simply read {x}.",
    "See {x}.",
)


def _compose(template: str, values: dict[str, tuple[str, dict]]) -> Case:
    """Fills {p}/{q}/{x} in ``template`` and labels each filled value."""
    text, items = "", []
    for i, piece in enumerate(template.replace("}", "{").split("{")):
        if i % 2 == 0:
            text += piece
            continue
        value, item = values[piece]
        items.append(Item(len(text), len(text) + len(value), **item))
        text += value
    return Case(text, tuple(items))


def build_cases(split: str, n_phones: int = 900, n_others: int = 900) -> list[Case]:
    """The labelled set of one split, the same list for the same arguments on every machine."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    held = split == "heldout"
    rng = random.Random(f"phone-cases:{split}")
    regions = TUNE_REGIONS + (HELDOUT_ONLY_REGIONS if held else ())
    templates = PHONE_TEMPLATES[held::2]  # each split has its own half of the sentences
    neutral = NEUTRAL_TEMPLATES[held::2]
    cases = []

    def phone(i: int) -> tuple[str, dict]:
        plan = PLANS[regions[i % len(regions)]]
        form = FORMS[(i // len(regions)) % len(FORMS)]
        number = phone_number(plan, form, rng, style=2 * rng.randint(0, 3) + held)
        return number, {"kind": "phone", "category": form, "country": plan.region}

    def other(i: int, plain: bool) -> tuple[str, tuple[str, dict]]:
        category = OTHER_CATEGORIES[i % len(OTHER_CATEGORIES)]
        template, value = lookalike(category, rng)
        template = rng.choice(neutral) if plain else template
        return template, (value, {"kind": "other", "category": category, "country": ""})

    for i in range(n_phones):
        if rng.random() < 0.15:
            values = {
                "p": phone(i),
                "q": phone(rng.randrange(n_phones)),
                "x": other(rng.randrange(99), False)[1],
            }
            cases.append(_compose(rng.choice(PAIR_TEMPLATES), values))
        else:
            cases.append(_compose(rng.choice(templates), {"p": phone(i)}))
    for i in range(n_others):
        template, value = other(i, rng.random() < (0.4 if held else 0.2))
        cases.append(_compose(template, {"x": value}))
    rng.shuffle(cases)
    return cases


def score(cases: list[Case], spans_of: Callable[[str], list[tuple[int, int]]]) -> dict:
    """How well ``spans_of`` (text -> masked (start, end) stretches) does on ``cases``.

    recall: phone numbers whose every digit is masked; exact: ... masked as one stretch, no more;
    keep: other items that no masked stretch touches; precision: masked stretches touching a phone.
    ``rates`` has the same per category ("phone/idd", "other/date") and per country.
    """
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    masked = on_phone = exact = 0
    misses, false_hits = [], []
    for case in cases:
        spans = spans_of(case.text)
        masked += len(spans)
        phones = [it for it in case.items if it.kind == "phone"]
        on_phone += sum(any(s < it.end and e > it.start for it in phones) for s, e in spans)
        for it in case.items:
            touched = [(s, e) for s, e in spans if s < it.end and e > it.start]
            if it.kind == "phone":
                digits = [i for i in range(it.start, it.end) if case.text[i].isdigit()]
                found = all(any(s <= i < e for s, e in touched) for i in digits)
                exact += (it.start, it.end) in touched
                for key in ("phone", f"phone/{it.category}", f"country/{it.country}"):
                    groups[key]["hit"].append(found)
                if not found:
                    misses.append((case.text, case.text[it.start : it.end], it.country, touched))
            else:
                kept = not touched
                for key in ("other", f"other/{it.category}"):
                    groups[key]["hit"].append(kept)
                if not kept:
                    false_hits.append((case.text, [case.text[s:e] for s, e in touched], it.category))
    n_phones = len(groups["phone"]["hit"])
    rates = {k: (sum(v["hit"]) / len(v["hit"]), len(v["hit"])) for k, v in groups.items()}
    return {
        "recall": rates["phone"][0],
        "exact": exact / n_phones,
        "keep": rates["other"][0],
        "precision": on_phone / masked if masked else 1.0,
        "rates": rates,
        "misses": misses,
        "false_hits": false_hits,
    }
