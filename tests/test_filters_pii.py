"""PII masking: what must be replaced, and look-alikes that must stay."""

from __future__ import annotations

import pytest

from pipelines.clean.filters.pii import PIIConfig, PIIMasker


def mask(text: str, config: PIIConfig | None = None) -> tuple[str, dict[str, int]]:
    masker = PIIMasker(config)
    doc = {"text": text}
    assert masker.decide(doc) is None  # a mapper never drops
    return doc["text"], dict(masker.counts)


@pytest.mark.parametrize(
    ("text", "masked", "kind"),
    [
        ("Write to jane.doe@example.co.uk today.", "Write to email@example.com today.", "email"),
        ("Contact: press+news@mail.acme-corp.org", "Contact: email@example.com", "email"),
        ("The server at 8.8.8.8 answered.", "The server at 192.0.2.1 answered.", "ip"),
        ("Resolver 2001:4860:4860::8888 is up.", "Resolver 2001:db8::1 is up.", "ip"),
        ("Resolver 2001:4860:4860::8888.", "Resolver 2001:db8::1.", "ip"),
        # an IPv4-mapped IPv6 address is one address (it became "2001:db8::1.0.2.1", counted twice)
        ("Mapped ::ffff:8.8.8.8 here.", "Mapped 2001:db8::1 here.", "ip"),
        ("Mapped ::FFFF:8.8.4.4.", "Mapped 2001:db8::1.", "ip"),
        ("Call +1 (212) 555-0199 now.", "Call 555-0100 now.", "phone"),
        ("Call 212-555-0199 or", "Call 555-0100 or", "phone"),
        ("Call (212) 555 0199.", "Call 555-0100.", "phone"),
        ("Ring 1-800-555-0100 free.", "Ring 555-0100 free.", "phone"),
        ("Office +44 (0)20 7946 0958.", "Office 555-0100.", "phone"),
        ("Tel. 020 7946 0958.", "Tel. 555-0100.", "phone"),
        ("Berlin +49 30 1234567 or 030/1234567.", "Berlin 555-0100 or 555-0100.", "phone"),
        ("Paris 06 12 34 56 78.", "Paris 555-0100.", "phone"),
    ],
)
def test_masks_pii(text: str, masked: str, kind: str) -> None:
    out, counts = mask(text)
    assert out == masked
    assert counts == {kind: 2 if "030/" in text else 1}


@pytest.mark.parametrize(
    "text",
    [
        "Local addresses 127.0.0.1, 10.0.0.5, 192.168.1.1, 172.16.0.1 and ::1 and fe80::1 stay.",
        "Mapped private addresses ::ffff:10.0.0.1 and ::ffff:192.168.0.7 stay.",
        "Founded in 1999; on 2019-03-12, 12/03/2019 and 12.03.2019 at 10:30:45.",
        "It costs $1,234.56 or 1.234,56 EUR; version 1.2.3 and build 10.0.19041.1.",
        "ISBN 978-0-306-40615-7, population 8,336,817, zip 90210, the years 1914-1918 and 1939-1945.",
        "Coordinates +40.7128 -74.0060, score 3-2-1, room 101, call me at 5.",
        "The MAC address 00:1A:2B:3C:4D:5E and the handle @jane_doe are not masked.",
    ],
)
def test_leaves_lookalikes_alone(text: str) -> None:
    out, counts = mask(text)
    assert out == text
    assert counts == {}


def test_counts_and_placeholders_are_configurable() -> None:
    text = "a@b.org, c@d.org, 8.8.4.4 and 212-555-0199"
    config = PIIConfig(email_placeholder="<EMAIL>", ipv4_placeholder="<IP>", phone_placeholder="<PHONE>")
    out, counts = mask(text, config)
    assert out == "<EMAIL>, <EMAIL>, <IP> and <PHONE>"
    assert counts == {"email": 2, "ip": 1, "phone": 1}
    out, counts = mask(text, PIIConfig(phones=False, ips=False))
    assert out == "email@example.com, email@example.com, 8.8.4.4 and 212-555-0199"
