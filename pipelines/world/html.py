"""HTML of the crawl's sites: the article in <article>/<main>, boilerplate around it.

Real pages bury their text in navigation, sidebars, cookie banners, ads and footers; a text
extractor has to find the article and leave the rest. Each site has its own layout (a wiki, a
blog, a news site, a magazine), so the extractor is not tested on one shape only, but every layout
keeps the article in semantic tags (<main>, <article>, <p>) and the boilerplate in <nav>, <aside>,
<footer> and elements whose class names say what they are, as well-made real sites do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from html import escape

from pipelines.world.languages import UI

STYLES = ("wiki", "blog", "news", "magazine")
SERVERS = ("nginx", "Apache/2.4.57 (Debian)", "cloudflare", "LiteSpeed", "nginx/1.24.0", "Microsoft-IIS/10.0")
ADS_EN = (
    "Sponsored: Save 20% on hiking boots this week only. Shop now!",
    "Sponsored: Compare energy prices and switch your supplier in minutes.",
    "Sponsored: Learn a new language in just ten minutes a day.",
    "Sponsored: Holiday cottages by the sea from 49 euros a night.",
)


@dataclass(frozen=True)
class Site:
    domain: str
    name: str
    style: str
    lang: str = "en"
    tagline: str = ""


def _links(items: list[tuple[str, str]], cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f'<li><a href="{h}">{escape(t)}</a></li>' for t, h in items) + "</ul>"


def _head(title: str, site: Site, charset: str, canonical: str | None) -> str:
    link = f'<link rel="canonical" href="{escape(canonical)}">' if canonical else ""
    return (
        f'<!DOCTYPE html>\n<html lang="{site.lang}">\n<head>\n<meta charset="{charset}">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} - {escape(site.name)}</title>\n{link}\n"
        f'<link rel="stylesheet" href="/static/{site.style}.css">\n'
        f'<script async src="/static/analytics.js"></script>\n</head>\n'
    )


def nav_items(site: Site) -> list[tuple[str, str]]:
    ui = UI[site.lang]
    return [
        (ui["home"], "/"),
        (ui["people"], "/people/"),
        (ui["places"], "/places/"),
        (ui["orgs"], "/organisations/"),
        (ui["things"], "/inventions/"),
        (ui["random"], "/random"),
        (ui["about"], "/about"),
        (ui["contact"], "/contact"),
    ]


@lru_cache(maxsize=256)
def _nav(site: Site) -> str:
    return f'<nav class="main-nav" id="site-nav" aria-label="Main">{_links(nav_items(site))}</nav>\n'


@lru_cache(maxsize=4096)
def _footer(site: Site, year: int, edited: str | None) -> str:
    ui = UI[site.lang]
    links = [
        (ui["about"], "/about"),
        (ui["contact"], "/contact"),
        (ui["privacy"], "/privacy"),
        (ui["terms"], "/terms"),
        (ui["cookie_settings"], "/cookies"),
    ]
    edited_p = f'<p class="last-edited">{escape(ui["edited"].format(date=edited))}</p>' if edited else ""
    return (
        f'<footer class="site-footer" id="footer">{edited_p}'
        f"<p>&copy; {year} {escape(site.name)}. {escape(ui['rights'])}</p>{_links(links, 'footer-links')}</footer>\n"
    )


@lru_cache(maxsize=256)
def _cookie(site: Site) -> str:
    ui = UI[site.lang]
    return (
        f'<div id="cookie-consent" class="cookie-banner" role="dialog"><p>{escape(ui["cookie"])}</p>'
        f'<button class="accept">{escape(ui["accept"])}</button> <button>{escape(ui["manage"])}</button></div>\n'
    )


def _ad(rng: random.Random, site: Site) -> str:
    ui = UI[site.lang]
    text = rng.choice(ADS_EN) if site.lang == "en" else ui["ad"]
    return f'<div class="ad-banner advertisement"><span class="ad-label">{escape(ui["ad"])}</span> {escape(text)}</div>\n'


@lru_cache(maxsize=256)
def _newsletter(site: Site) -> str:
    ui = UI[site.lang]
    return (
        f'<div class="newsletter-signup"><p>{escape(ui["newsletter"])}</p><form action="/subscribe">'
        f'<input type="email" name="email"><button>{escape(ui["signup"])}</button></form></div>\n'
    )


def _blocks_html(title: str, blocks: list[tuple[str, str]]) -> str:
    parts = [f"<h1>{escape(title)}</h1>"]
    for tag, text in blocks:
        parts.append(f"<{tag}>{escape(text)}</{tag}>")
    return "\n".join(parts)


def render_article(
    rng: random.Random,
    site: Site,
    title: str,
    blocks: list[tuple[str, str]],
    related: list[tuple[str, str]],
    date_text: str,
    year: int,
    charset: str = "utf-8",
    canonical: str | None = None,
) -> str:
    """A full HTML page around one article; ``blocks`` are (tag, text) pairs such as ("p", "...")."""
    ui = UI[site.lang]
    body = _blocks_html(title, blocks)
    cookie = _cookie(site) if rng.random() < 0.7 else ""
    ad_top = _ad(rng, site) if rng.random() < 0.5 else ""
    ad_side = _ad(rng, site) if rng.random() < 0.5 else ""
    newsletter = _newsletter(site) if rng.random() < 0.4 else ""
    nav = _nav(site)
    search = (
        f'<form class="search-form" action="/search" role="search"><input type="search" name="q" '
        f'placeholder="{escape(ui["search"])}"><button>{escape(ui["search"])}</button></form>'
    )
    rel = (
        f'<section class="related-links"><h3>{escape(ui["related"])}</h3>{_links(related)}</section>'
        if related
        else ""
    )
    popular = related[::-1][:3]
    pop = (
        f'<section class="popular"><h3>{escape(ui["popular"])}</h3>{_links(popular)}</section>'
        if popular
        else ""
    )
    head = _head(title, site, charset, canonical)
    if site.style == "wiki":
        return (
            f'{head}<body>\n{cookie}<a class="skip-link" href="#content">{escape(ui["skip"])}</a>\n'
            f'<header id="site-header"><a class="logo" href="/">{escape(site.name)}</a>{search}</header>\n{nav}'
            f'<div class="page">\n<main id="content">\n<article class="wiki-article">\n{body}\n</article>\n</main>\n'
            f'<aside class="sidebar" id="sidebar">{rel}{ad_side}</aside>\n</div>\n'
            f"{_footer(site, year, date_text)}</body>\n</html>\n"
        )
    if site.style == "blog":
        return (
            f'{head}<body class="blog">\n{cookie}<div class="wrapper">\n'
            f'<header class="site-header"><p class="site-title"><a href="/">{escape(site.name)}</a></p>'
            f'<p class="site-description">{escape(site.tagline)}</p></header>\n{nav}{ad_top}'
            f'<div class="content-area">\n<main class="site-main">\n<article class="post">\n'
            f'<div class="entry-meta">{escape(ui["posted"].format(date=date_text))}</div>\n'
            f'<div class="entry-content">\n{body}\n</div>\n</article>\n</main>\n'
            f'<aside class="widget-area sidebar">{pop}{rel}{newsletter}</aside>\n</div>\n'
            f"{_footer(site, year, None)}</div>\n</body>\n</html>\n"
        )
    if site.style == "news":
        share = (
            f'<div class="share-bar"><span>{escape(ui["share"])}</span>'
            f"{_links([('Facebook', '/share/fb'), ('Email', '/share/email')], 'share-links')}</div>"
        )
        return (
            f'{head}<body class="news">\n{cookie}<header class="masthead"><a class="logo" href="/">{escape(site.name)}</a>'
            f'{search}</header>\n{nav}{ad_top}<main>\n<article class="story">\n'
            f'<p class="byline">{escape(ui["by"])} | {escape(date_text)}</p>\n<div class="story-body">\n{body}\n</div>\n'
            f"</article>\n{share}\n</main>\n"
            f'<aside class="most-read sidebar">{pop}{ad_side}</aside>\n{newsletter}{_footer(site, year, None)}</body>\n</html>\n'
        )
    # magazine
    return (
        f'{head}<body class="magazine">\n{cookie}<div id="top-bar">{_links(nav_items(site)[-2:], "top-links")}</div>\n'
        f'<header class="header"><a class="logo" href="/">{escape(site.name)}</a></header>\n{nav}'
        f'<div id="main">\n<main role="main">\n<article class="feature">\n{body}\n'
        f'<p class="tags">{escape(ui["tags"])}: <a href="/tag/history">history</a></p>\n</article>\n'
        f'<div class="comments-closed">{escape(ui["comments"])}</div>\n</main>\n'
        f'<aside class="sidebar">{rel}{ad_side}{newsletter}</aside>\n</div>\n{_footer(site, year, None)}</body>\n</html>\n'
    )


def render_listing(
    site: Site, title: str, links: list[tuple[str, str]], page: int, pages: int, year: int
) -> str:
    """A category/index page: navigation and link lists only, no running text."""
    nav = f'<nav class="main-nav">{_links(nav_items(site))}</nav>\n'
    pager = f'<div class="pager">Page {page} of {pages} <a href="?page={page + 1}">Next</a></div>'
    return (
        f'{_head(title, site, "utf-8", None)}<body>\n<header><a class="logo" href="/">{escape(site.name)}</a></header>\n'
        f"{nav}<main><h1>{escape(title)}</h1>\n{_links(links, 'index-list')}\n{pager}</main>\n"
        f"{_footer(site, year, None)}</body>\n</html>\n"
    )


def simple_page(title: str, body_html: str, lang: str = "en", charset: str = "utf-8") -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="{charset}">\n<title>{escape(title)}</title>\n'
        f"</head>\n<body>\n{body_html}\n</body>\n</html>\n"
    )
