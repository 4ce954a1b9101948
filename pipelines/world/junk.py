"""The pages a crawl is full of and a corpus should not keep: spam, adult and phishing sites,
very short pages, garbage and binary payloads.

Adult pages are only *labelled* as such (age warnings, link lists, suggestive domain names): no
explicit text is needed for a URL blocklist to be tested. Phishing pages imitate the login page of
fictional banks.
"""

from __future__ import annotations

import random
import struct
import zlib
from html import escape

from pipelines.world.html import simple_page
from pipelines.world.names import NameMaker

SPAM_PRODUCTS = (
    "cheap watches",
    "replica bags",
    "payday loans",
    "diet pills",
    "casino bonus",
    "cheap flights",
    "car insurance",
    "crypto signals",
    "weight loss tea",
    "free ringtones",
    "discount sneakers",
)
SPAM_WORDS = (
    "best",
    "cheap",
    "buy",
    "online",
    "discount",
    "free",
    "top",
    "deal",
    "sale",
    "offer",
    "now",
    "price",
    "order",
    "shipping",
    "guaranteed",
    "official",
    "store",
    "lowest",
    "click",
    "here",
)
SPAM_TLDS = ("biz", "top", "xyz", "info", "click", "shop", "online")


def spam_domain(rng: random.Random) -> str:
    words = rng.choice(SPAM_PRODUCTS).split() + rng.sample(
        ("best", "cheap", "top", "deals", "shop", "4u", "online"), 2
    )
    rng.shuffle(words)
    return "-".join(words) + f"-{rng.randint(1, 999)}.{rng.choice(SPAM_TLDS)}"


def spam_page(rng: random.Random) -> tuple[str, str]:
    """(variant, html) of a keyword-stuffed, link-farm or repetitive SEO page."""
    product = rng.choice(SPAM_PRODUCTS)
    variant = rng.choice(("keyword_stuffing", "link_farm", "seo_repeat"))
    title = " ".join(w.capitalize() for w in (product + " " + product + " best price").split())
    if variant == "keyword_stuffing":
        words = []
        for _ in range(rng.randint(150, 400)):
            words.append(product if rng.random() < 0.35 else rng.choice(SPAM_WORDS))
        body = f"<h1>{escape(title)}</h1>\n<p>{escape(' '.join(words))}</p>\n<p>{escape(product)} {escape(product)} {escape(product)}</p>"
    elif variant == "link_farm":
        items = []
        for _ in range(rng.randint(40, 120)):
            p = rng.choice(SPAM_PRODUCTS)
            w = rng.choice(SPAM_WORDS)
            items.append(f'<li><a href="/{p.replace(" ", "-")}-{w}">{escape(w)} {escape(p)}</a></li>')
        body = f"<h1>{escape(title)}</h1>\n<ul>{''.join(items)}</ul>"
    else:
        lines = [
            f"Are you looking for the best {product}? Our {product} are the best {product} online.",
            f"Buy {product} now and get the lowest price on {product}. Best {product} guaranteed!",
            f"Click here for {product}. {product.capitalize()} {product} {product} free shipping.",
            f"We have the best {product} deals. Cheap {product}, top {product}, {product} sale.",
        ]
        paras = [rng.choice(lines) for _ in range(rng.randint(15, 40))]
        body = f"<h1>{escape(title)}</h1>\n" + "\n".join(f"<p>{escape(p)}</p>" for p in paras)
    return variant, simple_page(title, body)


ADULT_WORDS_HARD = ("xxx", "sexcams", "porn")  # URL words that banned-word URL filters catch
ADULT_WORDS_SOFT = ("adult", "cams", "babes", "nightlife", "dating", "models")
ADULT_TLDS = ("com", "net", "xxx", "club", "live")


def adult_domain(rng: random.Random, names: NameMaker) -> str:
    """Domain names: some with words a URL filter knows, some innocuous (only a blocklist catches them)."""
    coined = names.coined((2, 2)).lower()
    style = rng.random()
    if style < 0.33:
        return f"{coined}-{rng.choice(ADULT_WORDS_HARD)}.{rng.choice(ADULT_TLDS)}"
    if style < 0.66:
        return f"{coined}{rng.choice(ADULT_WORDS_SOFT)}.{rng.choice(ADULT_TLDS[:4])}"
    return f"{coined}-{names.coined((1, 2)).lower()}.com"


def adult_page(rng: random.Random, domain: str) -> str:
    items = "".join(
        f'<li><a href="/{w}">{escape(w.capitalize())}</a></li>'
        for w in rng.sample(
            ("live", "models", "galleries", "videos", "dating", "premium", "chat", "members"), 6
        )
    )
    return simple_page(
        f"{domain} - adults only",
        f'<div class="age-gate"><h1>Adults only</h1><p>This website contains adult material. You must be at least '
        f'18 years old to enter.</p><p><a href="/enter">I am over 18 - enter</a> | <a href="/leave">Leave</a></p></div>\n'
        f'<ul class="menu">{items}</ul>\n<p>New models online every day. Free registration. Hot singles near you.</p>',
    )


BANK_WORDS = ("Bank", "Savings", "Credit Union", "Trust", "Pay")


def bank_name(rng: random.Random, names: NameMaker) -> str:
    return f"{names.coined((2, 2))} {rng.choice(BANK_WORDS)}"


def phishing_domain(rng: random.Random, bank: str) -> str:
    token = bank.split()[0].lower()
    return rng.choice(
        (
            f"{token}-secure-login.com",
            f"verify-{token}-account.net",
            f"{token}-online-banking.support",
            f"secure-{token}.account-update.info",
            f"{token}-customer-service.help",
        )
    )


def phishing_page(rng: random.Random, bank: str) -> str:
    msg = rng.choice(
        (
            "Your account has been temporarily suspended because of unusual activity.",
            "We were unable to verify your recent payment.",
            "Your online banking access will expire in 24 hours.",
        )
    )
    return simple_page(
        f"{bank} - Secure Login",
        f'<div class="login-box"><h1>{escape(bank)} Online Banking</h1><p class="alert">{escape(msg)} '
        "Please confirm your identity to restore full access.</p>"
        '<form method="post" action="/verify.php"><label>Customer number</label><input name="user">'
        '<label>Password</label><input type="password" name="pass"><label>Card number</label><input name="card">'
        "<button>Log in</button></form>"
        '<p class="small">For your security, do not share this page.</p></div>',
    )


SHORT_PAGES = (
    ("Coming soon", "<h1>Coming soon</h1><p>Our new website is under construction.</p>", 200),
    ("Page not found", "<h1>404 Not Found</h1><p>The page you requested could not be found.</p>", 404),
    ("Welcome", "<h1>Welcome!</h1>", 200),
    ("Login", '<form><input name="user"><input type="password" name="pw"><button>Login</button></form>', 200),
    ("This domain is for sale", "<p>This domain is for sale. Make an offer today.</p>", 200),
    ("Redirecting", '<p>Redirecting... <a href="/">click here</a> if nothing happens.</p>', 200),
    ("Untitled", "<p>Test page, please ignore.</p>", 200),
    ("Maintenance", "<h1>Down for maintenance</h1><p>Back soon.</p>", 503),
)


def short_page(rng: random.Random) -> tuple[str, str, int]:
    """(variant, html, HTTP status)."""
    title, body, status = rng.choice(SHORT_PAGES)
    return title.lower().replace(" ", "_"), simple_page(title, body), status


def garbage_page(rng: random.Random) -> tuple[str, str]:
    """(variant, html) with text that is not language: random characters, symbols, encodings."""
    variant = rng.choice(("random_chars", "symbols", "base64", "numbers", "repeated"))
    n = rng.randint(300, 2500)
    if variant == "random_chars":
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
        text = "".join(rng.choices(alphabet, k=n))
    elif variant == "symbols":
        text = "".join(rng.choices("!@#$%^&*()_+-=[]|;:,.<>?/~`§±", k=n))
    elif variant == "base64":
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        text = "".join(rng.choices(alphabet, k=n))
    elif variant == "numbers":
        text = " ".join(str(rng.randint(0, 99999)) for _ in range(n // 5))
    else:
        text = (rng.choice("xyzq") * rng.randint(5, 30) + " ") * (n // 20)
    return variant, simple_page("data", f"<p>{escape(text)}</p>")


def _png(rng: random.Random, width: int = 24, height: int = 24) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


def _pdf(rng: random.Random) -> bytes:
    text = f"Annual report {rng.randint(1990, 2023)}"
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def binary_payload(rng: random.Random) -> tuple[str, bytes, str, str]:
    """(variant, payload, Content-Type, URL suffix): an image, a PDF, or bytes that claim to be HTML."""
    variant = rng.choice(("png", "pdf", "mislabeled"))
    if variant == "png":
        return variant, _png(rng), "image/png", ".png"
    if variant == "pdf":
        return variant, _pdf(rng), "application/pdf", ".pdf"
    return variant, rng.randbytes(rng.randint(500, 3000)), "text/html; charset=utf-8", ".html"
