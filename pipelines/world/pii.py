"""Personal data planted in good pages: emails, phone numbers, public IPv4 and IPv6 addresses.

The clean stage must replace them (FineWeb's PII formatter replaces emails and *public* IP
addresses; we add phone numbers), so every address made here is one a real formatter would act on:
IP addresses are checked with ``ipaddress`` to be globally routable, not private or documentation
ranges. The exact strings are kept in pages.jsonl, so a test can check that each one is gone.
"""

from __future__ import annotations

import ipaddress
import random

from pipelines.world.names import NameMaker

EMAIL_DOMAINS = ("mail", "post", "inbox", "letters", "archive", "office")
TLDS = ("com", "net", "org", "info")


def email(rng: random.Random, names: NameMaker, person: str | None = None) -> str:
    if person and rng.random() < 0.7:
        first, last = person.lower().split()[0], person.lower().split()[-1]
        local = rng.choice((f"{first}.{last}", f"{first[0]}.{last}", f"{first}{rng.randint(1, 99)}"))
    else:
        local = rng.choice(("info", "contact", "editor", "archive", "office", "press"))
    return f"{local}@{names.coined((2, 2)).lower()}-{rng.choice(EMAIL_DOMAINS)}.{rng.choice(TLDS)}"


def phone(rng: random.Random) -> str:
    d = lambda n: "".join(str(rng.randint(0, 9)) for _ in range(n))  # noqa: E731
    area = str(rng.randint(201, 989))
    return rng.choice(
        (
            f"({area}) 555-{d(4)}",
            f"+1 {area}-555-{d(4)}",
            f"{area}-555-{d(4)}",
            f"+44 20 7946 {d(4)}",
            f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+49 30 {d(4)} {d(4)}",
        )
    )


def ipv4(rng: random.Random) -> str:
    while True:
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        if addr.is_global and not addr.is_multicast and 1 <= int(str(addr).split(".")[0]) <= 223:
            return str(addr)


def ipv6(rng: random.Random) -> str:
    while True:
        # global unicast space 2000::/3, with some zero groups so that the compressed form appears
        groups = [rng.randint(0x2001, 0x2FFF)] + [
            0 if rng.random() < 0.15 else rng.getrandbits(16) for _ in range(7)
        ]
        addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
        if addr.is_global:
            return addr.compressed


def pii_sentences(
    rng: random.Random, names: NameMaker, person: str | None
) -> tuple[list[str], dict[str, list[str]]]:
    """Sentences with contact details for the end of an article, and the exact strings planted."""
    found: dict[str, list[str]] = {"emails": [], "phones": [], "ipv4": [], "ipv6": []}
    sents = []
    kinds = rng.sample(("email", "phone", "ipv4", "ipv6"), rng.randint(1, 4))
    if "email" in kinds or "phone" in kinds:
        e = email(rng, names, person) if "email" in kinds else None
        p = phone(rng) if "phone" in kinds else None
        if e and p:
            sents.append(
                rng.choice(
                    (
                        f"For corrections or old photographs, write to {e} or call {p}.",
                        f"Readers who want to help can contact the author at {e} or by phone on {p}.",
                    )
                )
            )
        elif e:
            sents.append(
                rng.choice(
                    (
                        f"Questions about this page can be sent to {e}.",
                        f"If you have more information, please email {e}.",
                    )
                )
            )
        else:
            sents.append(
                rng.choice(
                    (
                        f"To arrange a visit, call {p} on weekdays.",
                        f"The local history office can be reached by phone on {p}.",
                    )
                )
            )
        if e:
            found["emails"].append(e)
        if p:
            found["phones"].append(p)
    if "ipv4" in kinds:
        a = ipv4(rng)
        sents.append(
            rng.choice(
                (
                    f"A digital copy of the archive is hosted on the server at {a}.",
                    f"The scanned letters can be downloaded from the machine at {a}.",
                )
            )
        )
        found["ipv4"].append(a)
    if "ipv6" in kinds:
        a = ipv6(rng)
        sents.append(
            rng.choice(
                (
                    f"The mirror of the catalogue is reachable at {a}.",
                    f"An older copy of the catalogue lives at the address {a}.",
                )
            )
        )
        found["ipv6"].append(a)
    return sents, found
