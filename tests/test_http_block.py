"""HTTP responses inside WARC records (pipelines/clean/formats/http_block.py): bodies in every
Content-Encoding a crawler may have kept, decoded within the document bound, and bodies already
decoded under a header that still names the coding."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import brotli
import pyarrow as pa
import pytest
from test_readers import ARTICLE, read_all, split, warc_record, write_warc_gz

from pipelines.clean.bounded import TooLarge, inflate_body
from pipelines.clean.formats.http_block import split_http

HTML = ARTICLE.format("encoded bodies").encode()


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,  # the zlib format, as the HTTP standard says
    "br": brotli.compress,
    "zstd": zstd,
}


def response(coding: str, body: bytes) -> bytes:
    headers = b"Content-Type: text/html; charset=utf-8\r\nContent-Encoding: " + coding.encode()
    return b"HTTP/1.1 200 OK\r\n" + headers + b"\r\n\r\n" + body


@pytest.mark.parametrize("coding", list(ENCODERS))
def test_every_content_encoding_is_decoded_within_the_bound(coding: str) -> None:
    mime, charset, body = split_http(response(coding, ENCODERS[coding](HTML)), 10**6)
    assert (mime, charset, body) == ("text/html", "utf-8", HTML)
    # already decoded under a header that still names the coding: kept as it is
    assert split_http(response(coding, HTML), 10**6)[2] == HTML
    bomb = ENCODERS[coding](b"\0" * 50_000_000)  # a few KB that inflate to 50 MB
    with pytest.raises(TooLarge, match=f"{coding}-encoded body of {len(bomb)} bytes"):
        split_http(response(coding, bomb), 10**6)
    # cut short (a crawler's size cap): what inflated is kept; cut before any of it, an error
    if coding != "zstd":
        page = b"".join(b"<p>row %d: %x</p>" % (i, i * 7919 % 65521) for i in range(4000))
        encoded = ENCODERS[coding](page)
        kept = inflate_body(encoded[: len(encoded) // 2], coding, 10**6)
        assert kept and page.startswith(kept) and len(kept) < len(page)
        with pytest.raises(ValueError, match="does not decompress"):
            inflate_body(encoded[:4], coding, 10**6)
    with pytest.raises(ValueError, match="does not decompress"):
        inflate_body(ENCODERS[coding](HTML)[:2] + b"\xff" * 200, coding, 10**6)  # corrupt


def test_raw_deflate_stacked_codings_and_unknown_ones() -> None:
    assert split_http(response("deflate", raw_deflate(HTML)), 10**6)[2] == HTML  # what some servers send
    stacked = brotli.compress(gzip.compress(HTML))  # gzip first, then br: undone last first
    assert split_http(response("gzip, br", stacked), 10**6)[2] == HTML
    assert split_http(response("identity", HTML), 10**6)[2] == HTML
    with pytest.raises(ValueError, match="unknown Content-Encoding 'compress'"):
        split_http(response("compress", b"\x1f\x9d\x90binary"), 10**6)
    # each gzip member made zlib copy the rest of the body: 200,000 empty ones took 9 s
    many = b"".join(gzip.compress(b"") for _ in range(200_000))
    with pytest.raises(ValueError, match="more than 64 gzip members"):
        split_http(response("gzip", many), 10**7)


def test_encoded_pages_in_a_warc_are_documents(tmp_path: Path) -> None:
    records = [
        warc_record(
            "response",
            response(coding, encode(HTML)),
            uri=f"http://e.example/{coding}",
            content_type="application/http; msgtype=response",
        )
        for coding, encode in ENCODERS.items()
    ]
    good, errors = split(read_all(write_warc_gz(tmp_path / "e.warc.gz", records)))
    assert not errors and [r["url"] for r in good] == [f"http://e.example/{c}" for c in ENCODERS]
    assert all("Deep sea vents host encoded bodies." in r["content"] for r in good)


def test_bodies_crawlers_mislabel_in_small_ways_are_still_pages() -> None:
    """Each was lost: a decoded body that opens with a UTF-8 BOM under a coding that has no magic bytes
    (taken as still encoded, then "does not decompress"); ``Transfer-Encoding: gzip, chunked``
    (de-chunked, the gzip left on); ``Content-Type: text/html, text/html`` ("not HTML")."""
    bom = b"\xef\xbb\xbf" + HTML
    for coding in ("deflate", "br"):
        assert split_http(response(coding, bom), 10**6)[2] == bom
    zipped = gzip.compress(HTML)
    chunked = b"%x\r\n" % len(zipped) + zipped + b"\r\n0\r\n\r\n"
    block = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked
    )
    assert split_http(block, 10**6) == ("text/html", None, HTML)
    assert inflate_body(gzip.compress(b""), "gzip", 10**6) == b""  # an empty page gzipped: complete
    twice = b"HTTP/1.1 200 OK\r\nContent-Type: text/html, text/html; charset=utf-8\r\n\r\n" + HTML
    assert split_http(twice, 10**6) == ("text/html", "utf-8", HTML)
