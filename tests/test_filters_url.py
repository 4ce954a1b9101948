"""URL filter: UT1 blocklists (own and real), user lists, banned words."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pipelines.clean.filters.url import UrlFilter, UrlFilterConfig


@pytest.fixture()
def blocklists(tmp_path: Path) -> Path:
    root = tmp_path / "ut1"
    (root / "adult").mkdir(parents=True)
    (root / "adult" / "domains").write_text("badsite.example\n# a comment\n\nnaughty.test\n")
    (root / "phishing").mkdir()
    (root / "phishing" / "urls").write_text("bank-login.example/secure/verify\nfree-prizes.example/claim/\n")
    (root / "gambling").mkdir()
    with gzip.open(root / "gambling" / "domains.gz", "wt") as f:
        f.write("casino-royal.example\n")
    (root / "notes.txt").write_text("not a category\n")
    return root


def decide(f: UrlFilter, url: str) -> str | None:
    return f.decide({"text": "x", "url": url})


def test_blocklisted_domains_and_their_subdomains(blocklists: Path) -> None:
    f = UrlFilter(UrlFilterConfig(blocklists=[str(blocklists)]))
    assert decide(f, "https://badsite.example/page.html") == "blocklisted_domain:adult"
    assert decide(f, "http://www.badsite.example/") == "blocklisted_domain:adult"
    assert decide(f, "https://videos.cdn.naughty.test/a?b=1") == "blocklisted_domain:adult"
    assert decide(f, "https://casino-royal.example/") == "blocklisted_domain:gambling"
    assert decide(f, "https://notbadsite.example/") is None
    assert decide(f, "https://en.wikipedia.org/wiki/River") is None


def test_blocklisted_urls_and_pages_below_them(blocklists: Path) -> None:
    f = UrlFilter(UrlFilterConfig(blocklists=[str(blocklists)]))
    assert decide(f, "https://bank-login.example/secure/verify") == "blocklisted_url:phishing"
    assert decide(f, "http://bank-login.example/secure/verify/step2?id=9") == "blocklisted_url:phishing"
    assert decide(f, "https://free-prizes.example/claim") == "blocklisted_url:phishing"
    assert decide(f, "https://bank-login.example/about") is None
    assert decide(f, "https://bank-login.example/secure/verifying") is None


def test_categories_user_lists_and_allow_list(blocklists: Path) -> None:
    config = UrlFilterConfig(
        blocklists=[str(blocklists)],
        categories=["phishing"],
        extra_domains=["spam.example"],
        extra_urls=["news.example/sponsored"],
        allow_domains=["naughty.test", "ok.spam.example"],
    )
    f = UrlFilter(config)
    assert decide(f, "https://badsite.example/") is None  # adult not selected
    assert decide(f, "https://bank-login.example/secure/verify") == "blocklisted_url:phishing"
    assert decide(f, "https://shop.spam.example/") == "blocklisted_domain:user"
    assert decide(f, "https://ok.spam.example/") is None  # allowed
    assert decide(f, "https://news.example/sponsored/post-1") == "blocklisted_url:user"
    assert decide(f, "https://naughty.test/porn-videos") is None  # the allow list wins over everything


def test_missing_or_malformed_blocklists_fail_at_construction(tmp_path: Path, blocklists: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        UrlFilter(UrlFilterConfig(blocklists=[str(tmp_path / "does-not-exist")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="UT1 layout"):
        UrlFilter(UrlFilterConfig(blocklists=[str(tmp_path / "empty")]))
    with pytest.raises(ValueError, match="weapons"):
        UrlFilter(UrlFilterConfig(blocklists=[str(blocklists)], categories=["weapons"]))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://free-porn-videos.example/", "banned_word"),
        ("https://example.com/XXX/gallery", "banned_word"),
        ("https://hot-naked-babes.example/", "soft_banned_words"),
        ("https://myxvideosmirror.example/", "banned_subword"),
        ("https://www.bbc.co.uk/news/science", None),
        ("https://example.org/adult-education/courses", None),  # one soft word is not enough
        ("https://example.org/essex-hot-weather", None),  # "sex" inside a word is not the word
    ],
)
def test_url_words(url: str, reason: str | None) -> None:
    assert decide(UrlFilter(), url) == reason


def test_documents_without_a_usable_url_are_kept_and_counted() -> None:
    f = UrlFilter(UrlFilterConfig(extra_domains=["spam.example"]))
    assert f.decide({"text": "x", "url": ""}) is None
    assert f.decide({"text": "x"}) is None
    assert f.decide({"text": "x", "url": "http://[::1"}) is None
    assert f.counts == {"no_url": 2, "unparsable_url": 1}
    assert decide(f, "spam.example/page") == "blocklisted_domain:user"  # no scheme


def test_real_ut1_lists(shared_data: Path) -> None:
    root = shared_data / "blocklists" / "ut1"
    f = UrlFilter(UrlFilterConfig(blocklists=[str(root)], categories=["gambling", "phishing", "mixed_adult"]))
    gambling = next(line.strip() for line in open(root / "gambling" / "domains") if line.strip())
    phishing = next(line.strip() for line in open(root / "phishing" / "urls") if "/" in line)
    adult = next(line.strip() for line in open(root / "mixed_adult" / "domains") if line.strip())
    assert decide(f, f"https://{gambling}/") == "blocklisted_domain:gambling"
    assert decide(f, f"http://www.{gambling}/poker") == "blocklisted_domain:gambling"
    assert decide(f, f"https://{phishing}") == "blocklisted_url:phishing"
    assert decide(f, f"https://{adult}/") == "blocklisted_domain:mixed_adult"
    assert decide(f, "https://en.wikipedia.org/wiki/Common_Crawl") is None
