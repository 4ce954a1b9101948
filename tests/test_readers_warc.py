"""WARC input of the clean stage (pipelines/clean/formats/warc.py): responses, resources and WET
conversions, real crawl files, truncation, damaged records that must cost only themselves, and HTTP
bodies as crawlers store them (chunked, gzip-encoded)."""

from __future__ import annotations

import gzip
import io
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from test_readers import (
    ARTICLE,
    a_crawl,
    assert_one_outcome_each,
    http_response,
    read_all,
    response,
    split,
    warc_record,
    write_warc_gz,
)

from pipelines.clean.formats import gzip_members, warc_resync
from pipelines.clean.formats.gzip_members import MemberGzip
from pipelines.clean.formats.warc_resync import ResyncStream
from pipelines.clean.readers import read_file
from pipelines.inputs import InputFile, expand_inputs


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_warc_html_responses_and_binary_payloads(tmp_path, version):
    items = read_all(write_warc_gz(tmp_path / "crawl.warc.gz", a_crawl(3, version)))
    records, errors = split(items)
    assert_one_outcome_each(
        items, 5
    )  # 3 HTML + JPEG + PDF responses; warcinfo and requests are not documents
    assert [r["url"] for r in records] == [f"http://example.org/{i}" for i in range(3)]
    assert all(r["content_type"] == "html" and "Deep sea vents" in r["content"] for r in records)
    assert all(r["dump"] == "CC-MAIN-2099-01" and r["id"] == r["warc_record_id"].strip() for r in records)
    assert all(r["id"].startswith("<urn:uuid:") and r["source_format"] == "warc" for r in records)
    # binary payloads are counted as error rows, with the payload type, not silently dropped
    assert [(e["reason"], e["url"]) for e in errors] == [
        ("non_html_payload", "http://example.org/cat.jpg"),
        ("non_html_payload", "http://example.org/a.pdf"),
    ]
    assert "image/jpeg" in errors[0]["error"]


def test_warc_uncompressed_resource_and_wet_conversion(tmp_path):
    path = tmp_path / "mixed.warc"
    path.write_bytes(
        warc_record(
            "resource",
            ARTICLE.format("resources").encode(),
            uri="http://r.example/",
            content_type="text/html",
        )
        + warc_record("conversion", "Plain text from a WET file. Ünïcode.".encode(), uri="http://w.example/")
        + warc_record("metadata", b"fetchTimeMs: 1", uri="http://w.example/")
    )
    items = read_all(path)
    assert_one_outcome_each(items, 2)
    assert [(i["content_type"], i["url"]) for i in items] == [
        ("html", "http://r.example/"),
        ("text", "http://w.example/"),
    ]
    assert items[1]["content"] == "Plain text from a WET file. Ünïcode."


def test_warc_charset_from_http_header_meta_and_lf_only_headers(tmp_path):
    latin = "<html><body><p>Café crème brûlée</p></body></html>".encode("cp1252")
    cyrillic = '<html><head><meta charset="windows-1251"></head><body><p>Привет мир</p></body></html>'
    lf_only = warc_record(  # ClueWeb09 style: HTTP header lines end in a bare LF
        "response",
        http_response("<p>Schöne Grüße</p>".encode("iso-8859-1"), "text/html; charset=ISO-8859-1", eol=b"\n"),
        uri="http://lf.example/",
        content_type="application/http;msgtype=response",
        version="0.18",
    )
    path = write_warc_gz(
        tmp_path / "charsets.warc.gz",
        [
            response("http://latin.example/", latin, "text/html; charset=windows-1252"),
            response("http://ru.example/", cyrillic.encode("cp1251"), "text/html"),
            lf_only,
        ],
    )
    records, errors = split(read_all(path))
    assert not errors
    assert "Café crème brûlée" in records[0]["content"]
    assert "Привет мир" in records[1]["content"] and records[1]["encoding"] == "cp1251"
    assert "Schöne Grüße" in records[2]["content"]
    assert all(r["decode_errors"] == 0 for r in records)


def test_a_response_without_a_content_type_is_read_as_the_http_message_it_holds(tmp_path):
    """The WARC spec only recommends a record's Content-Type: without one, a response whose block is an
    HTTP message was a non-HTML payload (no payload type) or, when its body began with markup, a page
    whose status line and headers were text and whose gzip body was never inflated."""
    page = "<html><body><p>Grüße aus dem Netz, ohne Content-Type im WARC-Kopf.</p></body></html>"
    zipped = http_response(gzip.compress(page.encode("cp1252")), "text/html; charset=windows-1252")
    zipped = zipped.replace(b"Content-Type:", b"Content-Encoding: gzip\r\nContent-Type:", 1)
    path = write_warc_gz(
        tmp_path / "no-type.warc.gz",
        [
            warc_record("response", http_response(page.encode()), uri="http://plain.example/"),
            warc_record("response", zipped, uri="http://zipped.example/"),
            warc_record("resource", b"\xef\xbb\xbf" + page.encode(), uri="http://bom.example/"),  # a BOM
        ],
    )
    records, errors = split(read_all(path))
    assert not errors and len(records) == 3
    for r in records:
        assert "Grüße aus dem Netz" in r["content"] and "HTTP/1.1" not in r["content"], r["url"]
        assert r["decode_errors"] == 0


def test_real_warc_files(shared_data):
    warcio = pytest.importorskip("warcio.archiveiterator")
    crawl = shared_data / "crawl"
    expected = {  # documents per file, counted independently with warcio
        p.name: sum(
            1
            for rec in warcio.ArchiveIterator(p.open("rb"))
            if rec.rec_type in ("response", "resource", "conversion")
        )
        for p in crawl.rglob("*.gz")
    }
    files, errors = expand_inputs([str(crawl)])
    assert not errors and {Path(f.path).name for f in files} == set(expected)
    for f in files:
        items = list(read_file(f))
        if not expected[Path(f.path).name]:  # the WAT holds metadata records only: reported
            assert [(i["reason"], i["record_index"]) for i in items] == [("empty_file", None)]
            continue
        assert_one_outcome_each(items, expected[Path(f.path).name])
        assert not [i for i in items if i.get("_error")], f.path
    assert [name for name, n in expected.items() if not n] == ["whirlwind.warc.wat.gz"]
    quirk = list(read_file(InputFile(str(crawl / "clueweb09_resiliparse" / "clueweb-quirk.warc.gz"))))
    assert len(quirk) == 29
    # malformed WARC headers (WARC/0.18, day 294) and LF-only HTTP headers: read, and EUC-JP decoded
    assert all(r["content_type"] == "html" and r["encoding"] == "euc_jp" for r in quirk)
    assert "ヘッドポーター" in quirk[0]["content"]
    wet = list(read_file(InputFile(str(crawl / "commoncrawl_whirlwind" / "whirlwind.warc.wet.gz"))))
    assert wet[0]["content_type"] == "text" and "Escopete" in wet[0]["content"]
    cc = list(read_file(InputFile(str(crawl / "commoncrawl_resiliparse" / "warcfile.warc.gz"))))
    assert len(cc) == 16 and {r["dump"] for r in cc} == {"CC-MAIN-2020-34"}


def test_truncated_warc_gz(tmp_path):
    whole = b"".join(gzip.compress(r) for r in a_crawl(40))
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(whole[: int(len(whole) * 0.6)])
    records, errors = split(items := read_all(path))
    assert 10 < len(records) < 40
    assert [r["url"] for r in records] == [f"http://example.org/{i}" for i in range(len(records))]
    assert [e["reason"] for e in errors] == ["truncated_input"]
    assert_one_outcome_each(items, len(records) + 1)


# ---- damaged records ------------------------------------------------------------------------------


def pages(n: int) -> list[bytes]:
    return [response(f"http://d.example/{i}", ARTICLE.format(f"page {i}").encode()) for i in range(n)]


def urls(records: list[dict]) -> list[str]:
    return [r["url"] for r in records]


def content_length(r: bytes, change: Callable[[int], int]) -> bytes:
    return re.sub(rb"Content-Length: (\d+)", lambda m: b"Content-Length: %d" % change(int(m[1])), r, count=1)


DAMAGE = {  # what happens to record 1 of 4, and the records that must still be read
    "garbage between records": (lambda r: r + b"GARBAGE, NOT A HEADER\r\n\r\n", [0, 1, 2, 3]),
    # no newline before the next record: the search for a header line looked only at a line's start
    "zero padding before a record": (lambda r: r + b"\0" * 7, [0, 1, 2, 3]),
    "a torn write before a record": (lambda r: r + b"torn", [0, 1, 2, 3]),
    "a version line that is not WARC's": (lambda r: r.replace(b"WARC/1.1", b"WARX/1.1", 1), [0, 2, 3]),
    "a Content-Length that is not a number": (
        lambda r: r.replace(b"Content-Length: ", b"Content-Length: x", 1),
        [0, 2, 3],
    ),
    # the next header is glued to the cut one: found inside it
    "a record cut short by a partial write": (lambda r: r[:150], [0, 2, 3]),
    # too long: the next record starts inside the block fastwarc takes (it was lost with this one)
    "a Content-Length 5 bytes too long": (lambda r: content_length(r, lambda n: n + 5), [0, 1, 2, 3]),
    "a Content-Length 100 bytes too long": (lambda r: content_length(r, lambda n: n + 100), [0, 1, 2, 3]),
    # fastwarc skipped all the rest of the file as its block, without a row
    "a Content-Length past the end of the file": (lambda r: content_length(r, lambda n: 10**15), [0, 2, 3]),
}
# a record whose Content-Length runs into the next gzip member's record is dropped, as the length
# cannot be trusted (in one stream it is read with the bytes it took)
KEPT_WITH_MEMBERS = {
    "a Content-Length 5 bytes too long": [0, 2, 3],
    "a Content-Length 100 bytes too long": [0, 2, 3],
}


@pytest.mark.parametrize("pack", ["plain", "one gzip member", "a gzip member per record"])
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_record_costs_only_itself(tmp_path: Path, kind: str, pack: str) -> None:
    """fastwarc stops at the first header it cannot parse; the reader resumes at the next record."""
    damage, kept = DAMAGE[kind]
    records = pages(4)
    records[1] = damage(records[1])
    data = b"".join(records)
    path = tmp_path / ("d.warc" if pack == "plain" else "d.warc.gz")
    if pack == "plain":
        path.write_bytes(data)
    elif pack == "one gzip member":
        path.write_bytes(gzip.compress(data))
    else:
        write_warc_gz(path, records)
        kept = KEPT_WITH_MEMBERS.get(kind, kept)
    items = read_all(path)
    good, errors = split(items)
    assert urls(good) == [f"http://d.example/{i}" for i in kept]
    assert errors and {e["reason"] for e in errors} <= {
        "corrupt_record",
        "bad_http_response",
        "document_too_large",
    }
    assert "corrupt_record" in {e["reason"] for e in errors} or kind.startswith("a Content-Length that")
    assert_one_outcome_each(items, len(items))


def test_every_damaged_stretch_is_one_row_and_the_search_always_moves_on(tmp_path: Path) -> None:
    records = pages(6)
    stretches = [
        b"junk before the first record\r\n",
        b"WARC/1.1\r\nthis header line has no colon\r\n\r\n",  # read as a record without a type
        # a header that starts well and then fails: the first restart finds it again, the next moves on
        b"WARC/1.0\r\nWARC-Type: response\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n",
        b"garbage at the end\r\n",
    ]
    data = stretches[0] + records[0] + records[1] + stretches[1] + records[2] + records[3]
    data += stretches[2] + records[4] + records[5] + stretches[3]
    (tmp_path / "d.warc").write_bytes(data)
    items = read_all(tmp_path / "d.warc")
    good, errors = split(items)
    assert urls(good) == [f"http://d.example/{i}" for i in range(6)]
    assert [(e["record_index"], e["reason"]) for e in errors] == [
        (0, "corrupt_record"),
        (3, "bad_record"),
        (6, "corrupt_record"),
        (9, "corrupt_record"),
    ]
    assert "bytes 0-30 skipped" in errors[0]["error"] and "Maximum header length" in errors[2]["error"]
    assert "no record after it" in errors[-1]["error"]
    assert_one_outcome_each(items, 10)


def test_a_header_line_inside_a_page_is_not_taken_for_a_record(tmp_path: Path) -> None:
    """The search for the next record starts where the last good one ends, not inside its payload."""
    inner = b"<html><body><p>A WARC file starts like this:</p><pre>\nWARC/1.0\r\nWARC-Type: response\r\n"
    inner += b"WARC-Target-URI: http://fake.example/\r\nContent-Length: 5\r\n\r\nfake!</pre></body></html>"
    records = [response("http://d.example/doc", inner), *pages(1)]
    (tmp_path / "d.warc").write_bytes(records[0] + b"GARBAGE\r\n" + records[1])
    good, errors = split(read_all(tmp_path / "d.warc"))
    assert urls(good) == ["http://d.example/doc", "http://d.example/0"]
    assert [e["reason"] for e in errors] == ["corrupt_record"]


def test_a_record_that_lost_its_type_line_is_counted_not_dropped(tmp_path: Path) -> None:
    records = pages(3)
    records[1] = records[1].replace(b"WARC-Type: response", b"WARC-Type response", 1)
    (tmp_path / "d.warc").write_bytes(b"".join(records))
    items = read_all(tmp_path / "d.warc")
    good, errors = split(items)
    assert urls(good) == ["http://d.example/0", "http://d.example/2"]
    assert [(e["reason"], e["url"]) for e in errors] == [("bad_record", "http://d.example/1")]
    assert "WARC-Type" in errors[0]["error"]


@pytest.mark.parametrize("cut", [30, 60, 100])  # inside the header, before its Content-Length
def test_a_file_cut_inside_a_record_header_is_a_truncated_file(tmp_path: Path, cut: int) -> None:
    """It was reported as the record's "non_html_payload" (the header read so far has no type), which
    says nothing of a file to download again; the same header damaged mid-file is that record's row."""
    records = pages(3)
    records[2] = records[2].replace(
        b"Content-Length", b"WARC-Target-URI: http://d.example/2\r\nContent-Length"
    )
    assert records[2].index(b"Content-Length") > 100
    (tmp_path / "cut.warc").write_bytes(b"".join(records[:2]) + records[2][:cut])
    good, errors = split(items := read_all(tmp_path / "cut.warc"))
    assert urls(good) == ["http://d.example/0", "http://d.example/1"]
    assert [e["reason"] for e in errors] == ["truncated_input"]
    assert "ends inside the WARC header of record 2" in errors[0]["error"] and errors[0]["url"] is None
    assert_one_outcome_each(items, 3)
    records[1] = re.sub(rb"Content-Length: \d+\r\n", b"", records[1], count=1)
    (tmp_path / "damaged.warc").write_bytes(b"".join(records))
    good, errors = split(read_all(tmp_path / "damaged.warc"))
    assert urls(good) == ["http://d.example/0", "http://d.example/2"]
    assert errors[0]["reason"] == "corrupt_record" and "no Content-Length" in errors[0]["error"]
    assert errors[0]["record_index"] == 1 and errors[0]["url"] == "http://d.example/1"
    # the same damage to the last record of a whole file: not a file to download again
    (tmp_path / "last.warc").write_bytes(records[0] + records[2] + records[1])
    good, errors = split(read_all(tmp_path / "last.warc"))
    assert urls(good) == ["http://d.example/0", "http://d.example/2"]
    assert [e["reason"] for e in errors][:1] == ["corrupt_record"] and "truncated_input" not in str(errors)


def test_the_resync_stream_holds_little_and_finds_headers_across_reads(monkeypatch) -> None:
    data = b"".join(pages(50))
    stream = ResyncStream(io.BytesIO(data), keep=1000)
    while stream.read(700):
        assert stream._held_bytes < 1000 + 700
    assert stream.tell() == len(data)
    assert stream.restart(len(data)) is None  # nothing after the end
    # a restart that must read on past what is held, with a header line split between two reads
    monkeypatch.setattr(warc_resync, "SCAN_CHUNK", 1000)  # reads end at 1010, 2010, ..., 5010
    stream = ResyncStream(io.BytesIO(b"x" * 5004 + b"\n" + data), keep=100)
    stream.read(10)
    assert stream.restart(0) == 5005 and stream.read(8) == b"WARC/1.1"


@pytest.mark.parametrize("line", [b"WARC/1.0\r\n", b"WARC/1.0\r\nA: b\r\n"], ids=["bare", "with a field"])
def test_a_stretch_of_header_lines_is_skipped_in_a_few_restarts(tmp_path: Path, monkeypatch, line) -> None:
    """A restart per header line, each copying all that was held and fastwarc parsing up to 32 KiB
    of them as one header before it gave up: 0.5 s for 100 KB, 14 s for 1.6 MB."""
    restarts = []
    restart = ResyncStream.restart
    monkeypatch.setattr(ResyncStream, "restart", lambda self, at: restarts.append(at) or restart(self, at))
    records = pages(3)
    (tmp_path / "d.warc").write_bytes(records[0] + line * (200_000 // len(line)) + records[1] + records[2])
    good, errors = split(read_all(tmp_path / "d.warc"))
    assert urls(good) == [f"http://d.example/{i}" for i in range(3)]
    assert [e["reason"] for e in errors] == ["corrupt_record"] and len(restarts) < 5


# ---- HTTP bodies as crawlers store them -----------------------------------------------------------


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nX-Trailer: 1\r\n\r\n"


def raw_response(url: str, headers: list[bytes], body: bytes) -> bytes:
    block = b"\r\n".join([b"HTTP/1.1 200 OK", *headers]) + b"\r\n\r\n" + body
    return warc_record("response", block, uri=url, content_type="application/http; msgtype=response")


def test_chunked_bodies_are_dechunked_as_wget_stores_them(tmp_path: Path) -> None:
    html = ARTICLE.format("chunked pages").encode()
    te, ct = b"Transfer-Encoding: chunked", b"Content-Type: text/html; charset=utf-8"
    records = [
        raw_response("http://c.example/plain", [ct, te], chunked(html)),
        raw_response(
            "http://c.example/gzip", [ct, te, b"Content-Encoding: gzip"], chunked(gzip.compress(html))
        ),
        raw_response("http://c.example/cut", [ct, te], chunked(html)[:-40]),  # the crawler stopped reading
        raw_response("http://c.example/claims", [ct, te], html),  # de-chunked, header kept: as it is
        # a chunk-size line too long for the HTTP client
        raw_response("http://c.example/long", [ct, te], b"5;" + b"x" * 70_000 + b"\r\n"),
        # a chunk size past 2^63: an OverflowError out of the HTTP client (was a bad_record row)
        raw_response("http://c.example/huge", [ct, te], b"5\r\n<p>ab\r\n" + b"f" * 16 + b"\r\n<p>"),
    ]
    items = read_all(write_warc_gz(tmp_path / "c.warc.gz", records))
    good, errors = split(items)
    assert urls(good) == [
        "http://c.example/plain",
        "http://c.example/gzip",
        "http://c.example/cut",
        "http://c.example/claims",
    ]
    assert all("Deep sea vents host chunked pages." in r["content"] for r in (good[0], good[1], good[3]))
    cut = good[2]["content"]  # the chunks that arrived
    assert "Deep sea vents" in cut and html.decode().startswith(cut) and len(cut) < len(html)
    assert not any(ch in good[0]["content"] for ch in (";ext=1", "X-Trailer"))
    assert [(e["reason"], e["url"]) for e in errors] == [
        ("bad_http_response", "http://c.example/long"),
        ("bad_http_response", "http://c.example/huge"),
    ]
    assert all("chunk" in e["error"] for e in errors)


def test_a_page_with_more_headers_than_http_client_allows_is_read(tmp_path: Path) -> None:
    cookies = [b"Set-Cookie: c%d=v; Path=/" % i for i in range(150)]  # http.client stops at 100
    ct = b"Content-Type: text/html; charset=utf-8"
    records = [
        raw_response("http://h.example/many", [ct, *cookies], ARTICLE.format("headers").encode()),
        raw_response("http://h.example/huge", [ct, b"X-Big: " + b"a" * 70_000], b"<p>x</p>"),
    ]
    good, errors = split(read_all(write_warc_gz(tmp_path / "h.warc.gz", records)))
    assert urls(good) == ["http://h.example/many"] and "Deep sea vents host headers." in good[0]["content"]
    assert [(e["reason"], e["url"]) for e in errors] == [("bad_http_response", "http://h.example/huge")]


# ---- damaged gzip members -------------------------------------------------------------------------


def members(records: list[bytes]) -> list[bytes]:
    return [gzip.compress(r) for r in records]


def spoil(member: bytes) -> bytes:
    """Bytes in the middle of the deflate data overwritten, as a bad disk block would."""
    mid = len(member) // 2
    return member[:mid] + b"\xff" * 16 + member[mid + 16 :]


@pytest.mark.parametrize(
    "kind",
    ["spoiled deflate data", "a wrong checksum", "garbage between members", "a member cut short"],
)
def test_a_damaged_gzip_member_costs_only_its_record(tmp_path: Path, kind: str) -> None:
    gz = members(pages(5))
    lost = [2]
    if kind == "spoiled deflate data":
        gz[2] = spoil(gz[2])
    elif kind == "a wrong checksum":
        gz[2] = gz[2][:-8] + bytes([gz[2][-8] ^ 1]) + gz[2][-7:]
    elif kind == "garbage between members":
        gz[2] = b"NOT GZIP \x1f\x8b but no header" + gz[2]
        lost = []
    else:
        gz[2] = gz[2][: len(gz[2]) // 2]
    (tmp_path / "d.warc.gz").write_bytes(b"".join(gz))
    items = read_all(tmp_path / "d.warc.gz")
    good, errors = split(items)
    assert urls(good) == [f"http://d.example/{i}" for i in range(5) if i not in lost]
    assert errors and {e["reason"] for e in errors} == {"corrupt_record"}
    assert "gzip member" in errors[0]["error"]
    assert_one_outcome_each(items, len(items))


def big_pages(n: int) -> list[bytes]:
    """Pages of about 200 KB: a member's record is handed out in parts (64 KiB reads), not at once."""
    filler = "".join(f"<p>word {i}</p>" for i in range(12_000))
    return [
        response(f"http://d.example/{i}", ARTICLE.format(f"page {i} {filler}").encode()) for i in range(n)
    ]


@pytest.mark.parametrize("kind", ["a wrong checksum", "spoiled near its end"])
def test_a_damaged_member_of_a_large_record_costs_only_that_record(tmp_path: Path, kind: str) -> None:
    """Most of the record had been handed out when zlib noticed; fastwarc read its Content-Length on
    into the next members' records, and at the file's end reported it as truncated."""
    gz = members(big_pages(5))
    if kind == "a wrong checksum":
        gz[2] = gz[2][:-8] + bytes([gz[2][-8] ^ 1]) + gz[2][-7:]
    else:
        gz[2] = gz[2][:-200] + b"\xff" * 16 + gz[2][-184:]
    (tmp_path / "d.warc.gz").write_bytes(b"".join(gz))
    items = read_all(tmp_path / "d.warc.gz")
    good, errors = split(items)
    assert urls(good) == [f"http://d.example/{i}" for i in (0, 1, 3, 4)]
    assert [e["reason"] for e in errors] == ["corrupt_record"] and "gzip member" in errors[0]["error"]
    assert_one_outcome_each(items, 5)


@pytest.mark.parametrize("size", [200, 20_000], ids=["fails in the next member", "runs to the end"])
def test_a_member_cut_short_does_not_swallow_the_members_after_it(tmp_path: Path, size: int) -> None:
    """A crawler that crashed mid-record and wrote on: zlib takes the next members' bytes for the cut
    member's data (a stored block's length is taken on trust) until it fails, or to the end of the
    file, which read as truncated. The next member is looked for from the cut member's start."""
    records = pages(5)
    records[2] = response("http://d.example/2", ARTICLE.format("x" * size).encode())
    gz = members(records)
    gz[2] = gzip.compress(records[2], compresslevel=0)[:150]  # stored: its data is copied as it is
    (tmp_path / "d.warc.gz").write_bytes(b"".join(gz))
    items = read_all(tmp_path / "d.warc.gz")
    good, errors = split(items)
    assert urls(good) == [f"http://d.example/{i}" for i in (0, 1, 3, 4)]
    assert [e["reason"] for e in errors] == ["corrupt_record"]
    assert_one_outcome_each(items, 5)


def test_zero_padding_after_gzip_members_is_not_damage(tmp_path: Path) -> None:
    gz = members(pages(3))
    (tmp_path / "d.warc.gz").write_bytes(gz[0] + b"\0" * 512 + gz[1] + gz[2] + b"\0" * 4096)
    good, errors = split(read_all(tmp_path / "d.warc.gz"))
    assert urls(good) == [f"http://d.example/{i}" for i in range(3)] and not errors


def test_member_gzip_reads_what_gzip_reads_and_skips_only_damage(monkeypatch) -> None:
    monkeypatch.setattr(gzip_members, "RAW_CHUNK", 37)  # members and headers split across raw reads
    rng = random.Random(5)
    parts = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(12)]
    whole = b"".join(gzip.compress(p) for p in parts)
    for size in (1, 100, 4096, 1 << 20):
        stream = MemberGzip(io.BytesIO(whole))
        assert stream.read(size) + stream.read() == b"".join(parts) and not stream.skipped
    spoiled = [gzip.compress(p) for p in parts]
    spoiled[4] = spoil(spoiled[4])
    junk = b"junk \x1f\x8b\x08 a false header, \x1f\x8b\x08\x00 and another"  # one stretch, not three
    data = b"".join(spoiled[:8]) + junk + b"".join(spoiled[8:])
    stream = MemberGzip(io.BytesIO(data))
    out = stream.read()
    assert out.startswith(b"".join(parts[:4])) and out.endswith(b"".join(parts[5:]))
    bounds = [sum(map(len, spoiled[:k])) for k in (4, 5, 8)]
    (first, second) = stream.skipped
    assert (first.start, first.resumed) == (bounds[0], bounds[1])  # the whole member that failed
    assert (second.start, second.resumed) == (bounds[2], bounds[2] + len(junk))
    cut = MemberGzip(io.BytesIO(b"".join(spoiled[:2]) + spoiled[2][:30]))
    before = cut.read(10**6)  # every byte that could be inflated before the break first
    assert before.startswith(b"".join(parts[:2])) and len(before) > len(b"".join(parts[:2]))
    with pytest.raises(EOFError, match="ends inside a gzip member"):
        cut.read(10**6)


@pytest.mark.parametrize("where", ["its deflate data", "its magic bytes"])
def test_damage_in_the_first_gzip_member_costs_only_the_first_record(tmp_path: Path, where: str) -> None:
    """The format is sniffed from the first member: damage there made the whole file unreadable."""
    gz = members(pages(5))
    gz[0] = spoil(gz[0]) if where == "its deflate data" else b"\0\0" + gz[0][2:]
    (tmp_path / "d.warc.gz").write_bytes(b"".join(gz))
    items = read_all(tmp_path / "d.warc.gz")
    good, errors = split(items)
    assert urls(good) == [f"http://d.example/{i}" for i in range(1, 5)]
    assert [e["reason"] for e in errors] == ["corrupt_record"] and "gzip member" in errors[0]["error"]
    assert_one_outcome_each(items, 5)


def test_a_warc_with_bare_lf_header_lines_is_one_clear_row_not_records_lost_without_a_word(tmp_path):
    """fastwarc read a record's header on to the first CRLF CRLF (the HTTP headers of a later record),
    so records vanished inside a warcinfo header: 46 pages gave 29 error rows and 17 pages no row."""
    records = [response(f"http://lf{i}.example/", ARTICLE.format(i).encode()) for i in range(3)]
    lf = [r.replace(b"\r\n\r\nHTTP/", b"\n\nHTTP/", 1) for r in records]
    lf = [re.sub(rb"(WARC[^\r\n]*|Content-[^\r\n]*)\r\n", rb"\1\n", r) for r in lf]
    path = tmp_path / "lf.warc"
    path.write_bytes(b"".join(lf))
    (row,) = read_all(path)
    assert row["reason"] == "corrupt_input" and "bare LF" in row["error"]
    assert len(read_all(write_warc_gz(tmp_path / "crlf.warc.gz", records))) == 3  # CRLF framing: read
