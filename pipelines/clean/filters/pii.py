"""PII masking: e-mail addresses, public IP addresses and phone numbers become placeholders.

FineWeb anonymised e-mails and public IPs (datatrove's ``PIIFormatter``); phone numbers are added
here, found by Google's libphonenumber in the configured regions and judged by context
(``phones.py``), so that years, dates, times, prices, versions and counts stay as they are. IP addresses
are checked with the standard ``ipaddress`` module and only public (``is_global``) ones are masked:
127.0.0.1, 10.x, 192.168.x, ::1 and the documentation ranges are not anybody's address.

The default placeholders are themselves reserved addresses (example.com, RFC 5737 / RFC 3849
documentation ranges, the 555-01xx fictional numbers), so the text still reads naturally.
"""

from __future__ import annotations

import ipaddress
import re

from pipelines.clean.filters.base import Doc, Mapper
from pipelines.clean.filters.config import PIIConfig
from pipelines.clean.filters.phones import PhoneFinder

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# not part of a longer dotted number (a version like 1.2.3.4.5 or an IP inside one)
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w]|\.\d)")
# candidates only; ipaddress decides what is an address ("10:30:00" is not). An embedded IPv4 tail
# (::ffff:8.8.8.8) is tried first, and a hex tail may not be followed by ".digit", so the address is
# matched whole instead of as "::ffff:8" plus a dotted rest.
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4}|:)(?![\w:]|\.\d)"
)


class PIIMasker(Mapper):
    """Replaces PII in ``doc["text"]``; counts replacements in ``self.counts`` ("email", "ip", "phone")."""

    name = "pii"

    def __init__(self, config: PIIConfig | None = None) -> None:
        super().__init__()
        self.config = config or PIIConfig()
        self._phones = PhoneFinder(self.config.phone_regions)

    def map(self, doc: Doc) -> None:
        text = doc["text"]
        cfg = self.config
        if cfg.emails and "@" in text:
            text, n = _EMAIL.subn(cfg.email_placeholder, text)
            if n:
                self.counts["email"] += n
        if cfg.ips:
            # IPv6 first: an IPv4-mapped address (::ffff:8.8.8.8) is one address, masked and
            # counted once, not an IPv6 prefix around an IPv4 address
            if ":" in text:
                text = _IPV6.sub(self._ipv6, text)
            if "." in text:
                text = _IPV4.sub(self._ipv4, text)
        if cfg.phones:
            for start, end in reversed(self._phones.spans(text)):
                text = text[:start] + cfg.phone_placeholder + text[end:]
                self.counts["phone"] += 1
        doc["text"] = text

    def _ipv4(self, match: re.Match[str]) -> str:
        if ipaddress.IPv4Address(match.group()).is_global:
            self.counts["ip"] += 1
            return self.config.ipv4_placeholder
        return match.group()

    def _ipv6(self, match: re.Match[str]) -> str:
        candidate = match.group()
        try:
            address = ipaddress.IPv6Address(candidate)
        except ValueError:
            return candidate
        mapped = address.ipv4_mapped
        judged = address if mapped is None else mapped  # a mapped address is its IPv4 address
        if judged.is_global:
            self.counts["ip"] += 1
            return self.config.ipv6_placeholder
        return candidate
