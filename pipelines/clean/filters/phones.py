"""Phone numbers in free text: Google's libphonenumber finds them, context rules decide.

Why not one regex: a phone number's shape depends on the country (``07700 900 123``,
``01.23.45.67.89``, ``(02) 9876 5432``, ``9123 4567``), and the same digits are a date, a price or an
order number elsewhere. libphonenumber (the ``phonenumbers`` package) knows every country's
numbering plan; its ``PhoneNumberMatcher`` is run in each configured region, and a match is judged:

- written internationally (``+44 ...`` or with a dialling prefix such as ``0044``/``011``/``001``):
  a phone number whenever the plan of that country code allows its length;
- written nationally, *valid* in a region and grouped the way that region writes it
  (libphonenumber's STRICT_GROUPING; ``123-456-7890`` is a valid Brazilian number that no Brazilian
  writes so), with the trunk ``0`` where the region dials one unless the grouping speaks for it
  (Germany's variable-length plan accepts nearly any bare digits without it): a phone number unless
  something vetoes it; bare digits (``2125550147``) also need a phone word or a leading trunk ``0``,
  as they are as often an ID or a timestamp;
- only of a *possible* length: a phone number when its shape says so (an area code in brackets, a
  trunk ``0`` and grouped digits) or a phone word such as "tel", "call", "fax", "☎" stands next to it
  (before it, or a noun just after it: "... is my number").

Vetoes: dates (with real days and months), year ranges, ISBNs (check digit), version numbers,
decimal numbers and coordinates, digits that are part of a longer number, amounts next to a
currency or a unit, and words such as "ISBN", "order", "invoice", "zip" or "version" right before.
A phone word right before overrides the weaker vetoes ("Tel. 912 345 678" is not a count).

Cost: only stretches with at least seven digits (allowing separators) reach the matcher, so text
without such runs costs one regular-expression scan.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import phonenumbers
from phonenumbers import Leniency, PhoneNumberFormat, PhoneNumberMatcher

from pipelines.clean.filters.config import check_phone_regions

# a stretch of >= 7 digits with up to 3 separators between digits: "+44 (0)20 7946 0958", "2125550147"
_RUN = re.compile(r"(?:\+\s?|\()?\d(?:[ \t\u00a0().\-/]{0,3}\d){6,}\)?")

# a phone word anywhere shortly before the number, or an abbreviation right before it ("T: ", "Ph. ")
_CUE_WORDS = re.compile(
    r"\b(?:tel|tél|phone|telephone|téléphone|telefon|telefono|teléfono|telefone|call|calling|ring|dial|fax|"
    r"mobile|mob|cell|handy|whatsapp|sms|text|hotline|helpline|landline|contact|reach|reached|enquiries|inquiries|"
    r"reservations?|bookings?|number|line)\b|[☎✆📞📱]",
    re.IGNORECASE,
)
# "number" and "line" speak for a phone unless another noun owns them: "order number", "bus line"
_WEAK_CUES = {"number", "line"}
# after a number only nouns count ("2125550147 is my number", "... (mobile)"); "Book before 2019 by
# calling ..." is about the number that follows
_CUES_AFTER = {
    "number",
    "line",
    "phone",
    "telephone",
    "mobile",
    "cell",
    "fax",
    "landline",
    "hotline",
    "helpline",
}
_OWNERS = re.compile(
    r"\b(?:order|invoice|account|tracking|serial|reference|case|ticket|item|part|model|batch|lot|customer|"
    r"member(?:ship)?|registration|policy|claim|vat|tax|id|product|article|catalog(?:ue)?|page|house|room|"
    r"flight|bus|route|issue|volume|record|version|build)\W*$",
    re.IGNORECASE,
)
_CUE_ABBREVIATION = re.compile(r"\b(?:t|m|f|ph|tlf|fon)\b\.?\s*:?\s*$", re.IGNORECASE)
_VETO_BEFORE = re.compile(
    r"(?:\b(?:isbn(?:-1[03])?|issn|doi|version|ver|v|build|release|rev|order|invoice|inv|ref|reference|"
    r"account|acct|tracking|serial|sku|item|batch|case|ticket|patent|iban|zip|postcode|postal|cep|pin|plz|"
    r"id|code|card|pp?|pages?|isin|ean|upc|lot|model|part|a/c|arxiv)\b[\s.:#-]*(?:no\.?|nr\.?|number|#)?[\s.:#-]*"
    r"|[#№〒$€£¥₹₩]\s*|\b(?:usd|eur|gbp|jpy|inr|rs|r\$|chf|aud|cad|sek|nok|dkk|kr|zar|mxn|brl)\.?\s*)$",
    re.IGNORECASE,
)
_VETO_AFTER = re.compile(
    r"^\s*(?:%|‰|[$€£¥₹]|(?:usd|eur|gbp|jpy|inr|chf|aud|cad|sek|nok|dkk|kr|zar|mxn|brl|euros?|dollars?|"
    r"pounds?|yen|rupees?|km|m|cm|mm|kg|g|t|mi|ft|tonnes?|tons?|people|persons|inhabitants|residents|"
    r"visitors|users|units|copies|votes|hectares?|ha|acres?|sq|bytes?|[kmgt]b|years?|views)\b)",
    re.IGNORECASE,
)
_DATE = re.compile(
    r"^(?:(?P<d1>\d{1,2})[./\- ](?P<m1>\d{1,2})[./\- ](?P<y1>\d{2}|\d{4})"
    r"|(?P<y2>\d{4})[./\- ](?P<m2>\d{1,2})[./\- ](?P<d2>\d{1,2})"
    r"|(?P<y3>(?:19|20)\d\d)(?P<m3>\d\d)(?P<d3>\d\d))$"
)
_YEAR_RANGE = re.compile(
    r"^(?:1[5-9]|20)\d\d(?:\s*[-/–]\s*(?:1[5-9]|20)\d\d)+$|^(?:(?:1[5-9]|20)\d\d\s+){2,}"
)
_THOUSANDS = re.compile(r"^\d{1,3}(?:([ .,\u00a0\u202f])\d{3})(?:\1\d{3})*$")
_DOTTED = re.compile(r"^\d+(?:\.\d+){2,}$")
# two decimal numbers in a row (coordinates, measurements): 40.712776 -74.005974, 51.5074, -0.1278
_DECIMAL = r"(?<![\d.])[-+]?\d{1,3}\.\d{3,}(?![\d.])"
_DECIMALS = re.compile(rf"{_DECIMAL}\s*°?\s*[NSEW]?(?:\s*[,;/]\s*|\s+){_DECIMAL}")
_ONE_DECIMAL = re.compile(
    r"^[-+]?(?:0|[1-9]\d{0,2})\.\d{3,}$"
)  # 163.856167 is a coordinate, 9123.4567 may be a phone
_BRACKETED_YEAR = re.compile(r"^\((?:1[5-9]|20)\d\d\)")  # a citation: (1984) 139, 6145
_RANGE = re.compile(r"^(\d{3,5})\s*[-–]\s*(\d{3,5})$")  # pages 6145-6157
_NUMBER_SIGN = re.compile(r"(?:\b(?:no|nr|num|nº|n°)\.?|#)\s*:?\s*$", re.IGNORECASE)
_TIME_RANGE = re.compile(r"^([01]?\d|2[0-4])[.:h]([0-5]\d)\s*[-–]\s*([01]?\d|2[0-4])[.:h]([0-5]\d)$")
_POSTCODE = re.compile(r"^\d{5}-\d{3,4}$")  # Brazilian CEP 01310-100, US ZIP+4 90210-1234
_DATE_INSIDE = re.compile(
    r"(?<!\d)(?:(?:0?[1-9]|[12]\d|3[01])[./-](?:0?[1-9]|1[0-2])[./-](?:1[89]|20)\d\d"
    r"|(?:1[89]|20)\d\d[./-](?:0?[1-9]|1[0-2])[./-](?:0?[1-9]|[12]\d|3[01]))(?!\d)"
)
_ISBN_SHAPE = re.compile(r"^(?:97[89][- ]?)?\d{1,5}[- ]\d{1,7}[- ]\d{1,7}[- ][\dX]$|^97[89]\d{10}$")

_MIN_DIGITS = 7
_CACHE_SIZE = 4096
_CUE_WINDOW = 30  # characters before a number searched for a phone word
_VETO_WINDOW = 24


class PhoneFinder:
    """Finds phone numbers in text; ``spans(text)`` gives their (start, end) offsets, in order."""

    def __init__(self, regions: Sequence[str]) -> None:
        self.regions = check_phone_regions(regions)
        # libphonenumber compiles its metadata patterns on use; with 30 regions they outgrow the re
        # module's 512-entry cache and are compiled again and again (5x slower) unless it keeps them
        phonenumbers.enable_pattern_cache()
        self._cache: dict[str, dict[tuple[int, int], int]] = {}

    def spans(self, text: str) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        for run in _RUN.finditer(text):
            segment = run.group()
            if sum(c.isdigit() for c in segment) < _MIN_DIGITS or _plainly_not_a_phone(segment):
                continue
            found += self._judge_run(text, run.start(), self._readings(segment))
        return found

    def _judge_run(
        self, text: str, start: int, readings: dict[tuple[int, int], int]
    ) -> list[tuple[int, int]]:
        accepted = [
            (s + start, e + start, rank)
            for (s, e), rank in readings.items()
            if rank and not _vetoed(text, s + start, e + start, rank)
        ]
        # overlapping readings of one stretch: the strongest, then the longest, wins
        accepted.sort(key=lambda c: (-c[2], -(c[1] - c[0]), c[0]))
        chosen: list[tuple[int, int]] = []
        for s, e, _ in accepted:
            if all(e <= cs or s >= ce for cs, ce in chosen):
                chosen.append((s, e))
        return sorted(_balanced(text, s, e) for s, e in chosen)

    def _readings(self, segment: str) -> dict[tuple[int, int], int]:
        """Every (start, end) libphonenumber reads in ``segment`` in any region, with its best rank.

        rank 3: written internationally; 2: valid and written as its region writes it;
        1: only a possible length, or valid but written unlike its region; 0: nothing.
        Cached: boilerplate repeats the same numbers on page after page.
        """
        cached = self._cache.get(segment)
        if cached is not None:
            return cached
        regions = self.regions[:1] if segment.lstrip("(").startswith("+") else self.regions
        readings: dict[tuple[int, int], int] = {}
        for region in regions:
            for match in PhoneNumberMatcher(segment, region, leniency=Leniency.POSSIBLE):
                rank = _rank(match.raw_string, match.number, region)
                key = (match.start, match.end)
                readings[key] = max(rank, readings.get(key, 0))
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[segment] = readings
        return readings


def _balanced(text: str, start: int, end: int) -> tuple[int, int]:
    """Brackets stay paired: "(+44) 20 ..." is masked whole, "desk (6836 6781)" keeps its "("."""
    span = text[start:end]
    if span.startswith("(") and ")" not in span:
        return start + 1, end
    if start > 0 and text[start - 1] == "(" and ")" in span and "(" not in span[: span.index(")")]:
        return start - 1, end
    return start, end


def _plainly_not_a_phone(segment: str) -> bool:
    """A whole stretch that is a date, a year or page range, a time range or a decimal number: the
    matcher would find nothing the vetoes let through, so it is not asked (most stretches of real text)."""
    bare = segment.strip("()")
    return bool(
        _is_date(bare)
        or _YEAR_RANGE.match(bare)
        or _TIME_RANGE.match(bare)
        or _ONE_DECIMAL.match(bare)
        or (_DOTTED.match(bare) and any(len(g) == 1 or len(g) > 4 for g in bare.split(".")[1:]))
    )


def _rank(raw: str, number: phonenumbers.PhoneNumber, region: str) -> int:
    if raw.lstrip("(").startswith("+"):
        return 3
    if number.country_code != phonenumbers.country_code_for_region(region):
        # an international dialling prefix (011 44 ...) chose another country
        return 3 if any(not c.isdigit() for c in raw) else 1  # 00632000001783 is an account number
    if _dialled_abroad(raw, region):
        return 3 if any(not c.isdigit() for c in raw) else 1  # 00632000001783 is an account number
    if not phonenumbers.is_valid_number(number):
        return 1
    written = "".join(c for c in raw if c.isdigit())
    national = "".join(
        c for c in phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL) if c.isdigit()
    )
    nsn = phonenumbers.national_significant_number(number)
    if not _grouped_as_in(raw, region):
        return 1  # 123-456-7890 is a valid Brazilian number, but no Brazilian writes it so
    trunk_missing = national != nsn and not written.startswith(national[: len(national) - len(nsn)])
    if trunk_missing and written == raw:
        # the region dials a trunk prefix (030 ...) and this has none, nor the region's grouping
        # (98765 43210 has it); bare digits such as 1606964534 read as a German mobile otherwise
        return 1
    return 2


@lru_cache(maxsize=4096)
def _grouped_as_in(raw: str, region: str) -> bool:
    """libphonenumber's STRICT_GROUPING: the digit groups are those the region's own format makes."""
    return any(
        m.start == 0 and m.end == len(raw)
        for m in PhoneNumberMatcher(raw, region, leniency=Leniency.STRICT_GROUPING)
    )


@lru_cache(maxsize=4096)
def _dialled_abroad(raw: str, region: str) -> bool:
    number = phonenumbers.parse(raw, region, keep_raw_input=True)
    return number.country_code_source == phonenumbers.CountryCodeSource.FROM_NUMBER_WITH_IDD


def _is_date(span: str) -> bool:
    m = _DATE.match(span)
    if not m:
        return False
    g = m.groupdict()
    day, month = (
        (int(g["d1"]), int(g["m1"])) if g["d1"] else (int(g["d2"] or g["d3"]), int(g["m2"] or g["m3"]))
    )
    year = g["y1"] or g["y2"] or g["y3"]
    if g["d1"] and 1 <= day <= 12 and 12 < month <= 31:  # US order: month/day/year
        day, month = month, day
    plausible_year = len(year) == 2 or 1000 <= int(year) <= 2199
    return 1 <= day <= 31 and 1 <= month <= 12 and plausible_year


def _is_isbn(digits: str) -> bool:
    if len(digits) == 13 and digits[:3] in ("978", "979"):
        return sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(digits)) % 10 == 0
    if len(digits) == 10:
        values = [10 if c in "Xx" else int(c) for c in digits]
        return sum(v * (10 - i) for i, v in enumerate(values)) % 11 == 0
    return False


def _fragment(text: str, start: int, end: int) -> bool:
    """True when the match is a piece of a longer number: 3.14159, 1.2.3.4, 12/03/2019-2025."""
    before = text[max(0, start - 2) : start]
    after = text[end : end + 2]
    glued_before = len(before) == 2 and before[1] in ".,/:-" and before[0].isdigit()
    glued_after = len(after) == 2 and after[0] in ".,/:-" and after[1].isdigit()
    touching = (start > 0 and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum())
    return glued_before or glued_after or touching


def _vetoed(text: str, start: int, end: int, rank: int) -> bool:
    span = text[start:end].strip()
    bare = span.strip("()")
    digits = "".join(c for c in span if c.isdigit() or c in "Xx")
    if _fragment(text, start, end):
        return True
    if _is_date(span) or _DATE_INSIDE.search(span) or _YEAR_RANGE.match(span) or _TIME_RANGE.match(span):
        return True
    if _is_isbn(digits) and _ISBN_SHAPE.match(bare):
        return True
    offset = max(0, start - 24)
    if any(
        m.start() + offset < end and m.end() + offset > start
        for m in _DECIMALS.finditer(text[offset : end + 24])
    ):
        return True  # part of a pair of decimals: coordinates 40.712776 -74.005974
    if _VETO_BEFORE.search(text[max(0, start - _VETO_WINDOW) : start]) or _VETO_AFTER.match(
        text[end : end + 16]
    ):
        return True
    if rank == 3:
        return False
    # one piece of a longer run of numbers: a card number 4111 1111 1111 1111, "Batch 7649 0362 8980"
    if re.search(r"\d[ \u00a0]$", text[max(0, start - 2) : start]) or re.match(
        r"^[ \u00a0]\d", text[end : end + 2]
    ):
        return True
    if _POSTCODE.match(span) or _ONE_DECIMAL.match(span) or _BRACKETED_YEAR.match(span):
        return True
    # a phone word speaks for the nearest number, not for every number further on
    window = re.split(r"\d", text[max(0, start - _CUE_WINDOW) : start])[-1]
    cue = _has_cue(window, text[end : end + _CUE_WINDOW])
    sign = _NUMBER_SIGN.search(window)
    if sign and not _has_cue(window[: sign.start()], ""):
        return True  # "No. 628 165 840", but not "Phone No. 628 165 840"
    ends = _RANGE.match(span)
    if ends and not cue and 0 < int(ends[2]) - int(ends[1]) < 100:
        return True  # pages 6145-6157
    if _DOTTED.match(span) and any(len(g) == 1 or len(g) > 4 for g in span.split(".")[1:]):
        return True  # a version number: 10.0.19041.1, 120.0.6099.109
    thousands = _THOUSANDS.match(span)
    if thousands and not cue and (rank < 2 or len(span) - len(span.lstrip("0123456789")) < 3):
        return True  # a count: 2 148 271, 12.345.678 (but 912 345 678 is a valid Spanish number)
    if rank == 2:
        # bare digits (2125550147) are as often an ID, a timestamp or a code: a phone word or the
        # trunk prefix of a national number (0370108587) must say so
        return digits == span and not cue and not span.startswith("0")
    return not (cue or _looks_like_phone(span))


def _has_cue(before: str, after: str) -> bool:
    """A phone word before the number (or just after it: "2125550147 is my number")."""
    if _CUE_ABBREVIATION.search(before):
        return True
    for word in _CUE_WORDS.finditer(before):
        if word.group().lower() not in _WEAK_CUES or not _OWNERS.search(before[: word.start()]):
            return True
    after = re.split(r"\d", after)[0]
    return any(w.group().lower() in _CUES_AFTER for w in _CUE_WORDS.finditer(after))


def _looks_like_phone(span: str) -> bool:
    """A national number written as people write phone numbers: (02) 9876 5432, 07700 900 123."""
    if re.match(r"^\(0?[1-9]\d{0,4}\)\s?\d", span):
        return True
    groups = re.split(r"[\s().\-/]+", span.strip("()"))
    return span[:1] == "0" and span[1:2] != "0" and len(groups) >= 2 and all(len(g) >= 2 for g in groups)
