"""Text with digits that is not a phone number, for judging a phone-number masker: dates in many
formats, years and year ranges, times, prices, postcodes, street addresses, version numbers, ISBNs,
citations, order and account numbers, coordinates, percentages, counts, and digit strings shaped like
phone numbers that no numbering plan allows. Each comes in a sentence a person might write.
"""

from __future__ import annotations

import random


def _d(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def _isbn13(rng: random.Random) -> tuple[str, str]:
    body = rng.choice(("978", "979")) + _d(rng, 9)
    check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10
    full = body + str(check)
    return full, f"{full[:3]}-{full[3]}-{full[4:7]}-{full[7:12]}-{full[12]}"


def _isbn10(rng: random.Random) -> str:
    body = rng.choice(("0", "1", "3", "2")) + _d(rng, 8)
    check = (11 - sum(int(c) * (10 - i) for i, c in enumerate(body)) % 11) % 11
    full = body + ("X" if check == 10 else str(check))
    return f"{full[0]}-{full[1:4]}-{full[4:9]}-{full[9]}" if rng.random() < 0.7 else full


def lookalike(category: str, rng: random.Random) -> tuple[str, str]:
    """A sentence template with {x} and the text that fills it, for a category of non-phone digits."""
    y, m, d = rng.randint(1950, 2030), rng.randint(1, 12), rng.randint(1, 28)
    hh, mm = rng.randint(0, 23), rng.randint(0, 59)
    if category == "date":
        x = rng.choice(
            (
                f"{y}-{m:02d}-{d:02d}",
                f"{d:02d}/{m:02d}/{y}",
                f"{d:02d}.{m:02d}.{y}",
                f"{m}/{d}/{y}",
                f"{y}/{m:02d}/{d:02d}",
                f"{d}.{m}.{y}",
                f"{y}{m:02d}{d:02d}",
                f"{d:02d}-{m:02d}-{y}",
                f"{y}-{m:02d}-{d:02d} {hh:02d}:{mm:02d}",
                f"{d:02d}.{m:02d}.{y} {hh:02d}.{mm:02d}",
                f"{d:02d}/{m:02d}/{y} - {d + 1:02d}/{m:02d}/{y}",
                f"{y}.{m:02d}.{d:02d}",
                f"{d:02d} {m:02d} {y}",
                f"{y}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:00",
            )
        )
        t = rng.choice(
            (
                "The meeting was held on {x}.",
                "Posted {x} by admin",
                "Valid until {x}.",
                "The contract dated {x} was signed by both parties.",
                "Last updated: {x}",
                "She was born on {x} in a small village.",
                "Deadline {x}, no extensions.",
            )
        )
    elif category == "year":
        a = rng.randint(1800, 2020)
        x = rng.choice(
            (
                str(a),
                f"{a}-{a + rng.randint(1, 30)}",
                f"{a}–{a + rng.randint(1, 9)}",
                f"{a} - {a + rng.randint(1, 30)}",
                f"{a}/{(a + 1) % 100:02d}",
                f"{a}/{a + 1}",
                f"{a} {a + 4} {a + 8}",
                f"{a} {a + rng.randint(1, 30)}",
                f"{a}, {a + 1}, {a + 2}",
            )
        )
        t = rng.choice(
            (
                "The war lasted from {x}.",
                "Season {x} results",
                "He served as mayor {x}.",
                "Olympic years {x} are listed below.",
                "The building dates from {x}.",
                "Financial year {x} report",
            )
        )
    elif category == "time":
        x = rng.choice(
            (
                f"{hh:02d}:{mm:02d}:{rng.randint(0, 59):02d}",
                f"{hh:02d}:{mm:02d}-{(hh + 2) % 24:02d}:{mm:02d}",
                f"{hh}.{mm:02d} - {(hh + 3) % 24}.{mm:02d}",
                f"{hh:02d}h{mm:02d}",
                f"Mon-Fri {rng.randint(7, 10)}.{rng.choice(('00', '30'))}-{rng.randint(16, 19)}.{rng.choice(('00', '30'))}",
                f"{hh}:{mm:02d}–{(hh + 2) % 24}:{mm:02d}",
                f"{hh:02d}.{mm:02d}-{(hh + 1) % 24:02d}.{mm:02d} and {(hh + 2) % 24:02d}.{mm:02d}-{(hh + 4) % 24:02d}.00",
            )
        )
        t = rng.choice(
            (
                "Open {x} daily.",
                "The train leaves at {x}.",
                "Office hours: {x}",
                "Doors open {x} on weekdays.",
            )
        )
    elif category == "price":
        big, cents = rng.randint(1000, 9999999), rng.randint(0, 99)
        x = rng.choice(
            (
                f"${big:,}.{cents:02d}",
                f"€ {big:,}".replace(",", ".") + f",{cents:02d}",
                f"{big:,} EUR".replace(",", " "),
                f"£{big:,}",
                f"¥{big:,}",
                f"R$ {big:,}".replace(",", ".") + ",00",
                f"{big:,} €".replace(",", "."),
                f"USD {big:,}".replace(",", " "),
                f"Rs. {big:,}",
                f"{big:,} kr".replace(",", " "),
                f"${big}",
            )
        )
        t = rng.choice(
            (
                "The house sold for {x} last year.",
                "Price: {x}",
                "Total due {x} including tax.",
                "The budget rose to {x}.",
                "Offers above {x} will be considered.",
            )
        )
    elif category == "postcode":
        x = rng.choice(
            (
                f"{rng.randint(10000, 99999)}",
                f"{rng.randint(10000, 99999)}-{_d(rng, 4)}",
                f"{_d(rng, 5)}-{_d(rng, 3)}",
                f"〒{_d(rng, 3)}-{_d(rng, 4)}",
                f"{rng.randint(100, 999)} {_d(rng, 3)}",
                f"{rng.randint(1000, 9999)} AB",
                f"{rng.randint(10, 99)}-{_d(rng, 3)}",
                f"{rng.randint(100000, 999999)}",
                f"{rng.randint(1000, 9999)}",
            )
        )
        t = rng.choice(
            (
                "Send it to PO Box 12, {x} Springfield.",
                "Postcode {x}",
                "CEP {x}, São Paulo",
                "The depot is at Industrial Estate, {x}.",
                "ZIP code {x}",
                "PIN {x} (Delhi)",
                "Address: Main Road, {x} Lakeside",
            )
        )
    elif category == "street":
        x = rng.choice(
            (
                f"{rng.randint(1, 9999)} Oak Street",
                f"{rng.randint(1, 300)}B Baker Street",
                f"Hauptstraße {rng.randint(1, 200)}, {_d(rng, 5)} Berlin",
                f"{rng.randint(1, 99)} rue de la Paix, {rng.randint(75001, 75020)} Paris",
                f"Unit {rng.randint(1, 40)}/{rng.randint(1, 200)} George St, Sydney NSW {rng.randint(2000, 2999)}",
                f"Calle Mayor {rng.randint(1, 99)}, {rng.randint(28001, 28080)} Madrid",
                f"{rng.randint(100, 20000)} W {rng.randint(1, 200)}th Ave, Denver, CO {rng.randint(80001, 80299)}",
            )
        )
        t = rng.choice(
            ("Our shop: {x}.", "Deliveries go to {x}.", "She lived at {x} for years.", "Visit us at {x}")
        )
    elif category == "version":
        x = rng.choice(
            (
                f"v{rng.randint(0, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
                f"{rng.randint(1, 20)}.0.{rng.randint(10000, 22999)}.{rng.randint(1, 999)}",
                f"{rng.randint(90, 130)}.0.{rng.randint(1000, 6999)}.{rng.randint(10, 250)}",
                f"{rng.randint(2, 3)}.{rng.randint(6, 13)}.{rng.randint(0, 15)}",
                f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}-rc{rng.randint(1, 5)}",
                f"{rng.randint(2015, 2024)}.{rng.randint(1, 12)}.{rng.randint(1, 99)}",
                f"build {rng.randint(10000, 99999)}.{rng.randint(1000, 9999)}",
            )
        )
        t = rng.choice(
            (
                "Upgrade to version {x} now.",
                "Tested with {x}.",
                "Release {x} fixes the bug.",
                "Chrome {x} is required.",
                "The firmware {x} is available.",
            )
        )
    elif category == "isbn":
        plain, dashed = _isbn13(rng)
        x = rng.choice((dashed, plain, _isbn10(rng), f"ISBN {dashed}", f"ISBN-13: {plain}"))
        t = rng.choice(
            (
                "See the book ({x}) for details.",
                "Reference: {x}",
                "Catalogue {x}, paperback",
                "The second edition, {x}, appeared later.",
            )
        )
    elif category == "order":
        x = rng.choice(
            (
                f"#{_d(rng, 8)}",
                f"{rng.randint(2015, 2025)}-{_d(rng, 7)}",
                f"{_d(rng, 4)}-{_d(rng, 4)}-{_d(rng, 3)}",
                f"DE{_d(rng, 2)} {_d(rng, 4)} {_d(rng, 4)} {_d(rng, 4)} {_d(rng, 4)} {_d(rng, 2)}",
                f"{rng.randint(1500000000, 1750000000)}",
                f"INV-{_d(rng, 9)}",
                f"{_d(rng, 10)}",
                f"No. {_d(rng, 3)} {_d(rng, 3)} {_d(rng, 3)}",
            )
        )
        t = rng.choice(
            (
                "Your order {x} has shipped.",
                "Invoice number {x}",
                "Tracking: {x}",
                "Please quote reference {x} in all letters.",
                "Account {x} was credited.",
                "Case {x} is closed.",
            )
        )
    elif category == "coordinate":
        lat, lon = rng.uniform(-60, 60), rng.uniform(-170, 170)
        x = rng.choice(
            (
                f"{lat:.4f}, {lon:.4f}",
                f"{lat:.6f} {lon:.6f}",
                f"{abs(lat):.5f}° N {abs(lon):.5f}° E",
                f"({lat:.4f}, {lon:.4f})",
                f"{lat:.6f},{lon:.6f}",
            )
        )
        t = rng.choice(("The summit is at {x}.", "GPS: {x}", "Coordinates {x} mark the wreck."))
    elif category == "percent":
        x = rng.choice(
            (
                f"{rng.uniform(0, 100):.1f}%",
                f"{rng.uniform(0, 100):.2f} %",
                f"{rng.randint(1, 99)}%",
                f"{rng.uniform(0, 9):.3f}% to {rng.uniform(0, 9):.3f}%",
            )
        )
        t = rng.choice(
            ("Turnout was {x} this year.", "Inflation reached {x}.", "A rise of {x} was reported.")
        )
    elif category == "count":
        n = rng.randint(1_000_000, 99_999_999)
        x = rng.choice(
            (
                f"{n:,}",
                f"{n:,}".replace(",", " "),
                f"{n:,}".replace(",", "."),
                f"{n:,}".replace(",", "\u202f"),
            )
        )
        t = rng.choice(
            (
                "The city has {x} inhabitants.",
                "Population: {x} (census)",
                "{x} visitors came last year.",
                "Sales reached {x} units.",
            )
        )
    elif category == "citation":
        x = rng.choice(
            (
                f"vol. {rng.randint(1, 90)}, pp. {(a := rng.randint(100, 9000))}-{a + rng.randint(5, 40)}",
                f"ISSN {_d(rng, 4)}-{_d(rng, 3)}{rng.choice('0123456789X')}",
                f"doi:10.{_d(rng, 4)}/{_d(rng, 7)}",
                f"US Patent {rng.randint(3, 11)},{_d(rng, 3)},{_d(rng, 3)}",
                f"{rng.randint(1, 50)} U.S.C. § {rng.randint(100, 9999)}",
                f"arXiv:{rng.randint(1501, 2412)}.{_d(rng, 5)}",
                f"({rng.randint(1950, 2024)}) {rng.randint(1, 300)}, {(b := rng.randint(1000, 9000))}-{b + 12}",
            )
        )
        t = rng.choice(
            ("As shown in {x}, the effect is small.", "Source: {x}", "Cited as {x} in the review.")
        )
    elif category == "invalid_phone":
        x = rng.choice(
            (
                f"123-456-{_d(rng, 4)}",
                f"(000) 000-{_d(rng, 4)}",
                f"0000 {_d(rng, 3)} {_d(rng, 3)}",
                f"{_d(rng, 4)} {_d(rng, 4)} {_d(rng, 4)} {_d(rng, 4)}",
                f"1{_d(rng, 2)}-{_d(rng, 3)}-{_d(rng, 5)}",
                f"999-{_d(rng, 2)}-{_d(rng, 4)}",
                f"+0 {_d(rng, 3)} {_d(rng, 4)}",
            )
        )
        t = rng.choice(
            (
                "Serial {x} printed on the label.",
                "The code {x} was rejected.",
                "Card {x} expired.",
                "Item {x} is out of stock.",
                "Batch {x} passed inspection.",
            )
        )
    else:
        raise ValueError(f"unknown category {category!r}")
    return t, x


OTHER_CATEGORIES = (
    "citation",
    "date",
    "year",
    "time",
    "price",
    "postcode",
    "street",
    "version",
    "isbn",
    "order",
    "coordinate",
    "percent",
    "count",
    "invalid_phone",
)
