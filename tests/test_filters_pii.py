"""PII masking: what must be replaced, and look-alikes that must stay."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from pipelines.clean.filters.phones import PhoneFinder
from pipelines.clean.filters.pii import PIIConfig, PIIMasker
from pipelines.world.phone_cases import SPLITS, build_cases, score


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


# the seven shapes the old regex missed (UK mobile, French dotted, Australian bracketed area code,
# international dialling prefix, bare North-American digits, short area code in brackets, Singapore)
SHAPES = ["07700 900 123", "01.23.45.67.89", "(02) 9876 5432", "001-212-555-0147", "2125550147",
          "(11) 234-567", "9123 4567"]  # fmt: skip


@pytest.mark.parametrize("number", SHAPES)
@pytest.mark.parametrize("sentence", ["Call {} now.", "Tel.: {}", "For bookings phone {} (9am-5pm)."])
def test_masks_national_and_international_shapes(number: str, sentence: str) -> None:
    out, counts = mask(sentence.format(number))
    assert out == sentence.format("555-0100")
    assert counts == {"phone": 1}


@pytest.mark.parametrize("number", [s for s in SHAPES if s != "2125550147"])
def test_grouped_shapes_need_no_phone_word(number: str) -> None:
    assert mask(f"The office, {number}, opens at nine.")[0] == "The office, 555-0100, opens at nine."


@pytest.mark.parametrize(
    "text",
    [
        # dates, years, times
        "Posted 2019-03-12, 12/03/2019, 03.12.2019, 20190312 and 12 03 2019 at 2019-03-12T10:30:00.",
        "The wars of 1914-1918 and 1939 - 1945, the seasons 2019/20 and 1998/1999, the years 1896 1900 1904.",
        "Open Mon-Fri 9.00-17.30, lunch 12.30 - 13.30, doors 18:00–23:00.",
        # prices, counts, percentages
        "It sold for € 1.711.916,70, then $4,793,161.00, R$ 5.373.621,00 and 4 793 161 EUR.",
        "The city has 2 148 271 inhabitants; 12.345.678 visitors; turnout 72.6% (0.432% to 6.341%).",
        # postcodes and street numbers
        "Send it to CEP 01310-100, ZIP 90210-1234, 〒100-0001, PIN 110001 or 1600 Amphitheatre Pkwy, CA 94043.",
        "Hauptstraße 12, 10115 Berlin; 221B Baker Street; Unit 4/120 George St, Sydney NSW 2000.",
        # versions, ISBNs, citations
        "Upgrade to 10.0.19041.1 or Chrome 120.0.6099.109; build 30698.5756; v2.3.1; release 2019.11.19.",
        "ISBN 978-0-306-40615-7, ISBN-10: 0-306-40615-2, 9780306406157, ISSN 1234-5679.",
        "As shown in (2012) 171, 1736-1748 and vol. 12, pp. 1234-1256 (arXiv:1706.03762).",
        # order numbers, accounts, coordinates, invalid digit strings
        "Order #60528403, invoice INV-456729741, invoice number No. 608 135 639, account 12345678901.",
        "The summit is at 40.712776 -74.005974, or 51.50735° N 0.12776° W, or (-33.4278, -70.6552).",
        "Serial 123-456-7890, card 4111 1111 1111 1111, code 0000 716 920 and (000) 000-2811.",
        "HDFC BANK A/C No. 00632000001783 and the timestamp 1617181920.",
    ],
)
def test_keeps_digits_that_are_not_phone_numbers(text: str) -> None:
    out, counts = mask(text)
    assert out == text
    assert counts == {}


def test_regions_decide_which_national_numbers_are_read() -> None:
    singapore_only_national = "Our office: 9123 4567 or +65 9123 4567."
    assert (
        mask(singapore_only_national, PIIConfig(phone_regions=["sg"]))[0]
        == "Our office: 555-0100 or 555-0100."
    )
    # without SG, only the international form is recognised
    assert (
        mask(singapore_only_national, PIIConfig(phone_regions=["GB"]))[0]
        == "Our office: 9123 4567 or 555-0100."
    )
    assert PIIConfig(phone_regions=["sg", "Gb"]).phone_regions == ["SG", "GB"]


@pytest.mark.parametrize("regions", [["XX"], ["GB", "England"], []])
def test_unknown_regions_are_a_clear_error(regions: list[str]) -> None:
    with pytest.raises(ValidationError, match="phone regions must be ISO 3166 codes"):
        PIIConfig(phone_regions=regions)


def test_unknown_regions_in_a_run_config_name_the_key() -> None:
    from pipelines.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"clean\.pii\.phone_regions.*ISO 3166.*'XX'"):
        load_config(None, ["clean.pii.phone_regions=[XX, GB]"])
    assert load_config(None, ["clean.pii.phone_regions=[gb, fr]"]).clean.pii.phone_regions == ["GB", "FR"]


def test_labelled_set_is_reproducible_and_labels_the_right_text() -> None:
    tune, heldout = (build_cases(split) for split in SPLITS)
    assert build_cases("tune") == tune and tune != heldout
    phones = [c.text[i.start : i.end] for c in heldout for i in c.items if i.kind == "phone"]
    assert len({i.country for c in heldout for i in c.items if i.kind == "phone"}) >= 25
    assert all(sum(ch.isdigit() for ch in p) >= 7 for p in phones)
    with pytest.raises(ValueError, match="split must be one of"):
        build_cases("test")


def test_recall_and_keep_rate_on_the_held_out_set() -> None:
    """The issue's bar, computed: phone recall >= 0.8, other digits kept verbatim >= 0.9, on the split
    the rules were not tuned on (other seeds, sentences and separators, 16 more countries)."""
    result = score(build_cases("heldout"), PhoneFinder(PIIConfig().phone_regions).spans)
    assert result["rates"]["phone"][1] > 800 and result["rates"]["other"][1] > 800
    assert result["recall"] >= 0.8, result["misses"][:10]
    assert result["keep"] >= 0.9, result["false_hits"][:10]


def test_the_score_can_fail() -> None:
    """Masking nothing finds no phone; masking every digit keeps nothing: the bar above is not vacuous."""
    cases = build_cases("tune", n_phones=30, n_others=30)
    nothing = score(cases, lambda text: [])
    assert (nothing["recall"], nothing["keep"]) == (0.0, 1.0)
    everything = score(cases, lambda text: [m.span() for m in re.finditer(r"[\d()+\-. /]+", text)])
    assert everything["recall"] == 1.0 and everything["keep"] < 0.1
