"""The input readers: every format, every kind of bad input, and one outcome per input record."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import ERROR_FIELDS, RECORD_FIELDS, ROW_FIELDS, as_row
from pipelines.clean.readers import read_file
from pipelines.decode import decode_text
from pipelines.inputs import InputFile, expand_inputs

ARTICLE = "<html><head><title>T</title></head><body><p>Deep sea vents host {}.</p></body></html>"


# ---- helpers -------------------------------------------------------------------------------------


def read_all(path: Path | str, cfg: ReadConfig | None = None) -> list[dict]:
    files, errors = expand_inputs([str(path)])
    assert not errors, errors
    assert len(files) == 1
    return list(read_file(files[0], cfg))


def split(items: list[dict]) -> tuple[list[dict], list[dict]]:
    return [i for i in items if not i.get("_error")], [i for i in items if i.get("_error")]


def assert_one_outcome_each(items: list[dict], n_records: int) -> None:
    """The accounting rule: input records 0..n-1 each appear exactly once, as a record or an error row."""
    assert [i["record_index"] for i in items] == list(range(n_records))
    for item in items:
        assert set(item) == (set(ERROR_FIELDS) if item.get("_error") else set(RECORD_FIELDS))


def warc_record(
    rtype: str, block: bytes, *, uri: str | None = None, content_type: str | None = None, version: str = "1.1"
) -> bytes:
    headers = [
        f"WARC/{version}",
        f"WARC-Type: {rtype}",
        "WARC-Date: 2024-05-18T01:58:10Z",
        f"WARC-Record-ID: <urn:uuid:{uuid.uuid4()}>",
    ]
    if uri:
        headers.append(f"WARC-Target-URI: {uri}")
    if content_type:
        headers.append(f"Content-Type: {content_type}")
    headers.append(f"Content-Length: {len(block)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + block + b"\r\n\r\n"


def http_response(body: bytes, content_type: str = "text/html; charset=utf-8", eol: bytes = b"\r\n") -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Content-Type: " + content_type.encode(), b"Content-Length: %d" % len(body)]
    return eol.join(lines) + eol + eol + body


def response(url: str, body: bytes, content_type: str = "text/html; charset=utf-8", **kw) -> bytes:
    return warc_record(
        "response",
        http_response(body, content_type),
        uri=url,
        content_type="application/http; msgtype=response",
        **kw,
    )


def write_warc_gz(path: Path, records: list[bytes]) -> Path:
    # one gzip member per record, as Common Crawl writes them
    path.write_bytes(b"".join(gzip.compress(r) for r in records))
    return path


def a_crawl(n_pages: int = 3, version: str = "1.1") -> list[bytes]:
    """warcinfo, then for each page a request + an HTML response; one JPEG and one PDF response."""
    out = [warc_record("warcinfo", b"isPartOf: CC-MAIN-2099-01\r\n", content_type="application/warc-fields")]
    for i in range(n_pages):
        url = f"http://example.org/{i}"
        out.append(warc_record("request", b"GET / HTTP/1.1\r\n\r\n", uri=url, version=version))
        out.append(response(url, ARTICLE.format(f"page {i}").encode(), version=version))
    out.append(response("http://example.org/cat.jpg", b"\xff\xd8\xff\xe0" + os.urandom(200), "image/jpeg"))
    out.append(response("http://example.org/a.pdf", b"%PDF-1.4 binary", "application/pdf"))
    return out


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


FINEWEB_ROW = {
    "text": "A FineWeb document.",
    "id": "<urn:uuid:fw-1>",
    "dump": "CC-MAIN-2013-20",
    "url": "http://fw.example/1",
    "date": "2013-05-18T05:48:54Z",
    "file_path": "s3://commoncrawl/crawl-data/CC-MAIN-2013-20/x.warc.gz",
    "language": "en",
    "language_score": 0.93,
    "token_count": 5,
}
C4_ROW = {"text": "A C4 document.", "url": "http://c4.example/1", "timestamp": "2019-04-25T12:57:54Z"}
DOLMA_ROW = {
    "id": "dolma-1",
    "text": "A Dolma document.",
    "source": "common-crawl",
    "created": "2020-03-29T09:04:10Z",
    "metadata": {
        "url": "http://dolma.example/1",
        "cc_segment": "crawl-data/CC-MAIN-2020-16/segments/1/wet/x.gz",
    },
}


# ---- JSON, JSONL, parquet -------------------------------------------------------------------------


def test_jsonl_shapes_fineweb_c4_dolma(tmp_path):
    items = read_all(write_jsonl(tmp_path / "docs.jsonl", [FINEWEB_ROW, C4_ROW, DOLMA_ROW]))
    assert_one_outcome_each(items, 3)
    fw, c4, dolma = items
    assert (fw["id"], fw["dump"], fw["url"], fw["date"], fw["language"], fw["language_score"]) == (
        "<urn:uuid:fw-1>",
        "CC-MAIN-2013-20",
        "http://fw.example/1",
        "2013-05-18T05:48:54Z",
        "en",
        0.93,
    )
    assert fw["file_path"] == FINEWEB_ROW["file_path"]  # a FineWeb record keeps its own source WARC
    assert (c4["url"], c4["date"], c4["content"]) == (
        "http://c4.example/1",
        "2019-04-25T12:57:54Z",
        "A C4 document.",
    )
    assert c4["id"] == f"{tmp_path / 'docs.jsonl'}#1"  # no id: a stable one from file path + index
    assert c4["file_path"] == str(tmp_path / "docs.jsonl")
    assert (dolma["id"], dolma["url"], dolma["date"], dolma["dump"]) == (
        "dolma-1",
        "http://dolma.example/1",
        "2020-03-29T09:04:10Z",
        "CC-MAIN-2020-16",
    )
    assert all(i["content_type"] == "text" for i in items)
    assert [i["id"] for i in read_all(tmp_path / "docs.jsonl")] == [i["id"] for i in items]  # stable


def test_jsonl_gz_and_json_array_and_html_field(tmp_path):
    gz = read_all(write_jsonl(tmp_path / "a.jsonl.gz", [C4_ROW] * 4, compress=True))
    assert_one_outcome_each(gz, 4)
    (tmp_path / "b.json").write_text(
        json.dumps([DOLMA_ROW, {"id": "h", "html": ARTICLE.format("json html")}])
    )
    arr = read_all(tmp_path / "b.json")
    assert_one_outcome_each(arr, 2)
    assert arr[0]["source_format"] == "json" and arr[1]["content_type"] == "html"


def test_numbers_past_what_the_fast_json_parser_holds(tmp_path):
    """yajl stops at an integer past 2^63 or a number past a double: the file is read on exactly."""
    rows = [dict(C4_ROW, text=f"doc {i}", n=i, language_score=0.5) for i in range(6)]
    rows[2]["n"], rows[4]["n"] = 10**30, -(10**20)
    text = json.dumps(rows).replace('"n": 5', '"n": 1e400')  # no double holds it
    (tmp_path / "big.json.gz").write_bytes(gzip.compress(text.encode()))
    items = read_all(tmp_path / "big.json.gz")
    assert_one_outcome_each(items, 6)
    assert [i["content"] for i in items] == [f"doc {i}" for i in range(6)]
    assert {i["language_score"] for i in items} == {0.5}


@pytest.mark.parametrize("codec", ["zstd", "bz2"])
def test_other_compressions(tmp_path, codec):
    data = "".join(json.dumps(r) + "\n" for r in [C4_ROW, DOLMA_ROW]).encode()
    path = tmp_path / f"docs.jsonl.{'zst' if codec == 'zstd' else codec}"
    with pa.CompressedOutputStream(str(path), codec) as out:
        out.write(data)
    items = read_all(path)
    assert_one_outcome_each(items, 2)
    assert [i["content"] for i in items] == ["A C4 document.", "A Dolma document."]


def test_parquet_fineweb_schema_in_batches(tmp_path):
    n = 2500
    table = pa.table({k: [v] * n for k, v in FINEWEB_ROW.items()} | {"id": [f"id-{i}" for i in range(n)]})
    path = tmp_path / "fw.parquet"
    pq.write_table(table, path, row_group_size=1000)
    items = read_all(path, ReadConfig(parquet_batch_rows=300))
    assert_one_outcome_each(items, n)
    assert [i["id"] for i in items[:3]] == ["id-0", "id-1", "id-2"]
    assert items[-1]["dump"] == "CC-MAIN-2013-20" and items[-1]["source_format"] == "parquet"


def test_a_binary_text_column_is_decoded(tmp_path):
    texts = ["Plain UTF-8 text, ünïcödé.".encode(), "Café crème, in Latin-1 bytes".encode("latin-1")]
    table = pa.table({"text": pa.array([*texts, b"\x89PNG\r\n\x1a\n" + bytes(300)], pa.binary())})
    pq.write_table(table, tmp_path / "bin.parquet")
    records, errors = split(items := read_all(tmp_path / "bin.parquet"))
    assert_one_outcome_each(items, 3)
    assert records[0]["content"] == "Plain UTF-8 text, ünïcödé." and "Café crème" in records[1]["content"]
    assert [e["reason"] for e in errors] == ["non_html_payload"]


def test_real_jsonl_files(shared_data):
    files, errors = expand_inputs([str(shared_data / "fineweb")])
    assert not errors
    counts = {Path(f.path).name: len(list(read_file(f))) for f in files}
    assert counts["c4_demo.jsonl"] == 300 and counts["c4-sample.01.json.gz"] == 10
    dolma = list(read_file(InputFile(str(shared_data / "fineweb" / "ccnet_dolma" / "cc_en_head-0091.jsonl"))))
    assert_one_outcome_each(dolma, 10)
    assert all(r["url"] == r["id"] and r["dump"].startswith("CC-MAIN-") for r in dolma)


# ---- HTML folders, globs, URIs ---------------------------------------------------------------------


def test_html_folder_skips_non_data_files(tmp_path):
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "a.html").write_text(ARTICLE.format("a"))
    (site / "sub" / "b.html.gz").write_bytes(gzip.compress(ARTICLE.format("b").encode()))
    (site / "PROVENANCE.md").write_text("# where this came from")
    (site / "LICENSE.txt").write_text("not data")
    (site / ".hidden.html").write_text(ARTICLE.format("hidden"))
    (site / "_SUCCESS").write_text("")
    files, errors = expand_inputs([str(site)])
    assert not errors
    assert [Path(f.path).relative_to(site).as_posix() for f in files] == ["a.html", "sub/b.html.gz"]
    records = [r for f in files for r in read_file(f)]
    assert [r["file_path"] for r in records] == [f.path for f in files]  # the source path is kept
    assert all(r["content_type"] == "html" and r["record_index"] == 0 for r in records)
    assert "page b" not in records[1]["content"] and "vents host b" in records[1]["content"]


def test_globs_folders_and_file_uri(tmp_path):
    for d in ("x", "x/y"):
        (tmp_path / d).mkdir(exist_ok=True)
        write_jsonl(tmp_path / d / "part.jsonl", [C4_ROW])
    write_jsonl(tmp_path / "x" / "other.json", [C4_ROW])
    one_level, _ = expand_inputs([str(tmp_path / "x" / "*.jsonl")])
    assert [Path(f.path).relative_to(tmp_path).as_posix() for f in one_level] == ["x/part.jsonl"]
    deep, _ = expand_inputs([str(tmp_path / "**" / "*.jsonl")])
    assert len(deep) == 2
    folder, _ = expand_inputs([str(tmp_path / "x")])
    assert len(folder) == 3
    both, _ = expand_inputs([str(tmp_path / "x"), str(tmp_path / "x" / "part.jsonl")])
    assert len(both) == 3  # a file named twice is read once
    uri, errors = expand_inputs([(tmp_path / "x").as_uri()])
    assert not errors and sorted(f.path for f in uri) == sorted(f.path for f in folder)
    uri_file, _ = expand_inputs([(tmp_path / "x" / "part.jsonl").as_uri()])
    assert list(read_file(uri_file[0]))[0]["content"] == "A C4 document."


def test_fsspec_uri_listing_glob_and_reading():
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    root = f"/raychat-test-{uuid.uuid4().hex}"
    fs.pipe(f"{root}/d/a.jsonl", (json.dumps(C4_ROW) + "\n").encode())
    fs.pipe(f"{root}/d/sub/b.jsonl.gz", gzip.compress((json.dumps(DOLMA_ROW) + "\n").encode()))
    fs.pipe(f"{root}/d/README.md", b"# docs")
    try:
        files, errors = expand_inputs([f"memory://{root}/d"])
        assert not errors
        assert [f.path for f in files] == [f"memory://{root}/d/a.jsonl", f"memory://{root}/d/sub/b.jsonl.gz"]
        texts = [r["content"] for f in files for r in read_file(f)]
        assert texts == ["A C4 document.", "A Dolma document."]
        globbed, _ = expand_inputs([f"memory://{root}/d/*.jsonl"])
        assert [f.path for f in globbed] == [f"memory://{root}/d/a.jsonl"]
        _, missing = expand_inputs([f"memory://{root}/nothing/*.jsonl", f"memory://{root}/nope.jsonl"])
        assert [e["reason"] for e in missing] == ["no_match", "no_match"]
    finally:
        fs.rm(root, recursive=True)


# ---- bad input -----------------------------------------------------------------------------------


def test_names_that_lie(tmp_path):
    (tmp_path / "gz.jsonl").write_bytes(gzip.compress((json.dumps(C4_ROW) + "\n").encode()))
    (tmp_path / "plain.warc.gz").write_bytes(b"".join(a_crawl(1)))
    write_jsonl(tmp_path / "jsonl.parquet", [C4_ROW, C4_ROW])
    write_warc_gz(tmp_path / "warc.jsonl", a_crawl(2))
    got = {
        name: split(read_all(tmp_path / name))
        for name in ("gz.jsonl", "plain.warc.gz", "jsonl.parquet", "warc.jsonl")
    }
    assert [r["content"] for r in got["gz.jsonl"][0]] == ["A C4 document."]
    assert len(got["plain.warc.gz"][0]) == 1 and got["plain.warc.gz"][0][0]["source_format"] == "warc"
    assert len(got["jsonl.parquet"][0]) == 2
    assert len(got["warc.jsonl"][0]) == 2 and got["warc.jsonl"][0][0]["content_type"] == "html"


def test_extensionless_file_is_sniffed(tmp_path):
    write_jsonl(tmp_path / "part-00000", [C4_ROW])
    (tmp_path / "blob").write_bytes(b"\x00\x01 not a format we know" * 3)  # random bytes may start with "{"
    files, _ = expand_inputs([str(tmp_path)])
    assert [Path(f.path).name for f in files] == ["part-00000"] and files[0].format == "jsonl"
    _, errors = expand_inputs([str(tmp_path / "blob")])  # named explicitly: reported, not skipped
    assert [e["reason"] for e in errors] == ["unknown_format"]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_truncated_gzip_keeps_what_came_before(tmp_path, codec):
    rows = [dict(C4_ROW, text=f"doc {i} " + os.urandom(400).hex()) for i in range(8000)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(data)
    whole = sink.getvalue().to_pybytes()
    path = tmp_path / f"cut.jsonl.{'gz' if codec == 'gzip' else 'zst'}"
    path.write_bytes(whole[: len(whole) // 2])
    records, errors = split(items := read_all(path))
    assert 0 < len(records) < 8000
    # random text compresses evenly: about half the lines came before the cut, and at most a
    # little of them is lost with the read that met the break (pyarrow's zstd lost 1 MiB)
    kept_bytes = sum(len(json.dumps(r)) + 1 for r in rows[: len(records)])
    assert len(data) // 2 - kept_bytes < 300_000
    assert [r["content"] for r in records] == [r["text"] for r in rows[: len(records)]]
    assert len(errors) == 1 and errors[0]["reason"] == "truncated_input"
    assert errors[0]["record_index"] == len(records) and f"record {len(records)}" in errors[0]["error"]
    assert_one_outcome_each(items, len(records) + 1)


def test_binary_garbage_lines_in_jsonl(tmp_path):
    good = [json.dumps(dict(C4_ROW, text=f"good {i}")).encode() for i in range(3)]
    lines = [
        good[0],
        b"\x00\xff\xfe garbage \x89PNG\r\x1a",
        good[1],
        os.urandom(300).replace(b"\n", b" "),
        good[2],
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = read_all(path)
    records, errors = split(items)
    assert [r["content"] for r in records] == ["good 0", "good 1", "good 2"]
    assert [(e["record_index"], e["reason"]) for e in errors] == [(1, "invalid_json"), (3, "invalid_json")]
    assert_one_outcome_each(items, 5)
    garbage = tmp_path / "all-garbage.jsonl"
    garbage.write_bytes(os.urandom(5000))
    assert all(i["_error"] for i in read_all(garbage))


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    path = tmp_path / "bad-utf8.jsonl"
    path.write_bytes(b'{"text": "caf\xc3\xa9 and a broken byte \xff here"}\n')
    (record,) = read_all(path)
    assert record["content"] == "café and a broken byte \ufffd here" and record["decode_errors"] == 1
    html = "<p>Ünïcödé text, mostly fine: " + "ä" * 50 + "</p>"
    body = html.encode() + b"\xff\xfe" + b"<p>end</p>"
    (page,) = read_all(
        write_warc_gz(tmp_path / "p.warc.gz", [response("http://u.example/", body, "text/html")])
    )
    assert page["encoding"] == "utf-8" and page["decode_errors"] == 2 and "Ünïcödé" in page["content"]


def test_lone_surrogate_escapes_become_replacement_characters(tmp_path):
    """JSON may spell a lone surrogate; it has no UTF-8 form, so it would fail every parquet write."""
    path = tmp_path / "surrogates.jsonl"
    path.write_bytes(
        b'{"text": "hi \\ud83d there", "url": "http://x/\\ud83d"}\n'
        b'{"text": "a pair \\ud83d\\ude00 is fine"}\n'
        b'{"id": "\\udfff", "no_text": 1}\n'
    )
    items = read_all(path)
    assert_one_outcome_each(items, 3)
    first, pair, error = items
    assert (first["content"], first["url"], first["decode_errors"]) == (
        "hi \ufffd there",
        "http://x/\ufffd",
        2,
    )
    assert (pair["content"], pair["decode_errors"]) == ("a pair \U0001f600 is fine", 0)
    assert error["reason"] == "no_text" and error["id"] == "\ufffd"
    for item in items:  # every string is writable as UTF-8 now
        pa.Table.from_pylist([{k: v for k, v in item.items() if isinstance(v, str)}])


def test_html_with_encoded_surrogates_is_writable(tmp_path):
    """HTML text from UTF-8 decoding skips the lone-surrogate check: surrogates encoded in the bytes
    (CESU-8, as some old software writes them) must come out replaced, never as lone surrogates."""
    text = "<html><body><p>" + "ä" * 50 + " before \ud83d after</p></body></html>"  # mostly UTF-8
    body = text.encode("utf-8", "surrogatepass")
    (tmp_path / "s.html").write_bytes(body)
    (page,) = read_all(tmp_path / "s.html")
    assert page["encoding"] == "utf-8" and page["decode_errors"] == 3
    assert "before \ufffd\ufffd\ufffd after" in page["content"]
    page["content"].encode("utf-8")  # no lone surrogate: a parquet write takes it


def test_decode_text_prefers_valid_utf8_over_a_wrong_declared_charset():
    text, enc, bad = decode_text("naïve café".encode(), ["iso-8859-1"])
    assert (text, enc, bad) == ("naïve café", "utf-8", 0)
    assert decode_text("naïve café".encode("cp1252"), ["iso-8859-1"])[0] == "naïve café"
    assert decode_text(b"\xef\xbb\xbfbom")[0] == "bom"


@pytest.mark.parametrize(
    "text, written_as, label",
    [
        ("①㈱№ⅰ髙﨑～ 日本語のページです", "cp932", "Shift_JIS"),  # NEC/IBM characters: cp932 to browsers
        ("똠 한국어 페이지", "cp949", "euc-kr"),
        ("€ 碁 中文網頁", "cp950", "big5"),
        ("€ 中文网页", "gb18030", "gb2312"),
        ("“Türkçe” sayfa", "cp1254", "iso-8859-9"),
        ("€ หน้าภาษาไทย", "cp874", "tis-620"),
        ("ﾊﾝｶｸ 半角", "cp932", "x-sjis"),  # a label Python does not know
    ],
)
def test_declared_legacy_charsets_are_read_as_browsers_read_them(text, written_as, label):
    """WHATWG Encoding's codecs, not Python's narrower ones of the same name: one common character
    outside strict Shift_JIS / EUC-KR / Big5 made the whole page fail its label and go to detection,
    which read it as another charset (garbage, nothing counted)."""
    assert decode_text(text.encode(written_as), [label]) == (text, written_as, 0)


def test_a_latin1_header_yields_to_another_declared_charset_and_few_bad_bytes_keep_the_label():
    page = "О компании: наши новости".encode("cp1251")
    # any bytes decode as windows-1252, so the server's default iso-8859-1 header came first and won
    assert decode_text(page, ["iso-8859-1", "windows-1251"])[:2] == ("О компании: наши новости", "cp1251")
    assert decode_text(b"caf\xe9 \x81", ["iso-8859-1"]) == ("café \x81", "cp1252", 0)  # WHATWG's C1 reading
    # a us-ascii label says nothing of the bytes above 127: the detector reads them, not windows-1252
    assert decode_text(page, ["us-ascii"])[1] != "cp1252"
    japanese = ("日本語のページです。" * 20).encode("cp932")
    text, codec, bad = decode_text(japanese[:40] + b"\x81\x7f" + japanese[40:], ["shift_jis"])
    assert (codec, bad) == ("cp932", 1) and text.count("日本語のページです。") == 20


def test_empty_files_are_reported(tmp_path):
    """An empty input is usually a failed download: one file-level error row, never silence."""

    def only_error(path: Path) -> dict:
        (item,) = read_all(path)
        assert item["_error"] and item["reason"] == "empty_file" and item["record_index"] is None
        assert item["file_path"] == str(path) and item["step"] == "read"
        return item

    for name in ("e.jsonl", "e.warc.gz", "e.parquet", "e.html", "e.json"):
        (tmp_path / name).write_bytes(b"")
        assert "0 bytes" in only_error(tmp_path / name)["error"]
    (tmp_path / "e2.jsonl.gz").write_bytes(gzip.compress(b""))
    assert "gzip" in only_error(tmp_path / "e2.jsonl.gz")["error"]
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n  \n")
    assert "no records" in only_error(tmp_path / "blank.jsonl")["error"]
    (tmp_path / "list.json").write_text("[]")
    only_error(tmp_path / "list.json")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "none.parquet")
    only_error(tmp_path / "none.parquet")
    only_error(write_warc_gz(tmp_path / "info.warc.gz", a_crawl(0)[:1]))  # a warcinfo record only


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)) * 4


def test_binary_payloads_are_non_html_for_every_html_source(tmp_path):
    """A PNG is a non_html_payload error whether a WARC, a .html file or a JSON/parquet field holds it."""
    (tmp_path / "logo.html").write_bytes(PNG)
    (page,) = read_all(tmp_path / "logo.html")
    assert (page["_error"], page["reason"], page["record_index"]) == (True, "non_html_payload", 0)
    assert "PNG image" in page["error"]
    noise = tmp_path / "noise.html"
    noise.write_bytes(b"<html>" + os.urandom(4000))  # no magic, but no text either
    assert read_all(noise)[0]["reason"] == "non_html_payload"
    # an HTML-labelled WARC response with an image body, as servers send them
    warc = write_warc_gz(
        tmp_path / "w.warc.gz",
        [response("http://x.example/a", PNG), response("http://x.example/b", b"<p>ok</p>")],
    )
    items = read_all(warc)
    assert_one_outcome_each(items, 2)
    assert [i.get("reason") for i in items] == ["non_html_payload", None]
    assert items[0]["url"] == "http://x.example/a"
    # a JSON html field holding the bytes as latin-1 code points, and a parquet binary column
    write_jsonl(tmp_path / "h.jsonl", [{"id": "png", "html": PNG.decode("latin-1")}, {"html": ARTICLE}])
    items = read_all(tmp_path / "h.jsonl")
    assert [(i.get("reason"), i["id"]) for i in items][0] == ("non_html_payload", "png")
    assert items[1]["content_type"] == "html"
    pq.write_table(pa.table({"html": [PNG, ARTICLE.format("bytes").encode()]}), tmp_path / "h.parquet")
    items = read_all(tmp_path / "h.parquet")
    assert items[0]["reason"] == "non_html_payload" and "Deep sea vents host bytes" in items[1]["content"]


def test_text_that_only_looks_odd_is_not_binary():
    from pipelines.decode import binary_kind

    page = ("<p>" + "Plenty of ordinary words in a paragraph. " * 50 + "</p>").encode()
    assert binary_kind(page) is None
    assert binary_kind(page[:1000] + b"\x00" + page[1000:]) is None  # a stray NUL in a real page
    assert binary_kind("<p>こんにちは</p>".encode("iso2022_jp")) is None  # ESC sequences are text
    assert binary_kind("<p>UTF-16 page</p>".encode("utf-16")) is None
    assert binary_kind("<p>" + "é" * 500) is None
    assert binary_kind(PNG) == "PNG image" and binary_kind(PNG.decode("latin-1")) == "PNG image"


def test_ten_megabyte_documents(tmp_path):
    big = "word " * (2 * 1024 * 1024)  # 10 MiB
    path = write_jsonl(tmp_path / "big.jsonl", [C4_ROW, dict(C4_ROW, text=big), C4_ROW])
    items = read_all(path)
    assert_one_outcome_each(items, 3)
    assert items[1]["_error"] and items[1]["reason"] == "document_too_large"
    assert [i["content"] for i in (items[0], items[2])] == ["A C4 document."] * 2
    kept = read_all(path, ReadConfig(max_document_bytes=16 * 1024 * 1024))  # the knob, for books
    assert len(kept[1]["content"]) == len(big)
    page = ("<html><body>" + "<p>" + "x" * 100 + "</p>" * 1) * 100_000 + "</body></html>"
    warc = write_warc_gz(
        tmp_path / "big.warc.gz", [response("http://big.example/", page.encode()), *a_crawl(1)[1:3]]
    )
    w_records, w_errors = split(read_all(warc))
    assert [e["reason"] for e in w_errors] == ["document_too_large"] and len(w_records) == 1
    (tmp_path / "big.html").write_text(page)
    assert read_all(tmp_path / "big.html")[0]["reason"] == "document_too_large"


def test_unreadable_and_missing_paths(tmp_path):
    write_jsonl(tmp_path / "ok.jsonl", [C4_ROW])
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    (tmp_path / "empty-dir").mkdir()
    files, errors = expand_inputs(
        [
            str(tmp_path),
            str(tmp_path / "missing.jsonl"),
            str(tmp_path / "*.nothing"),
            str(tmp_path / "empty-dir"),
        ]
    )
    assert [Path(f.path).name for f in files] == ["ok.jsonl"]
    reasons = {(Path(e["file_path"]).name, e["reason"]) for e in errors}
    (tmp_path / "report.rtf").write_text("{\\rtf1 not data}")
    _, only_docs = expand_inputs([str(tmp_path / "*.rtf")])
    assert [e["reason"] for e in only_docs] == ["no_match"] and "non-data" in only_docs[0]["error"]
    assert reasons == {
        ("dangling.jsonl", "unreadable"),
        ("missing.jsonl", "no_match"),
        ("*.nothing", "no_match"),
        ("empty-dir", "no_match"),
    }
    assert all(e["step"] == "read" and e["error"] for e in errors)
    gone = list(read_file(InputFile(str(tmp_path / "vanished.jsonl"), "jsonl")))
    assert [(e["reason"], e["record_index"]) for e in gone] == [("unreadable", None)]


def test_a_file_that_cannot_be_opened_is_an_error_row(tmp_path, monkeypatch):
    """Permission bits stop other users but not root, and CI runs as root: a unix socket is a
    directory entry that ``open`` refuses for every user (ENXIO), so it stands in for any file that
    is listed but cannot be opened."""
    import socket

    monkeypatch.chdir(tmp_path)  # bind a short relative name: socket paths have ~107 bytes at most
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("secret.jsonl")
        write_jsonl(tmp_path / "ok.jsonl", [C4_ROW])
        files, errors = expand_inputs([str(tmp_path / "secret.jsonl"), str(tmp_path / "ok.jsonl")])
    assert [Path(f.path).name for f in files] == ["ok.jsonl"]  # the readable file is still read
    assert [(e["file_path"], e["reason"]) for e in errors] == [(str(tmp_path / "secret.jsonl"), "unreadable")]
    assert "not a regular file" in errors[0]["error"]  # said before any open (a pipe would block it)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_a_file_whose_reading_fails_is_an_error_row(tmp_path):
    """A file that opens but fails when read (a disk error, a vanished network mount): reading
    /proc/self/mem at offset 0 fails with EIO for every user, root included."""
    (tmp_path / "broken.jsonl").symlink_to("/proc/self/mem")
    files, errors = expand_inputs([str(tmp_path / "broken.jsonl")])
    assert [Path(f.path).name for f in files] == ["broken.jsonl"] and not errors  # listing opens it
    items = list(read_file(files[0]))
    assert [(e["reason"], e["record_index"]) for e in items] == [("unreadable", None)]
    assert "Input/output error" in items[0]["error"]


def test_every_record_one_outcome_across_a_messy_mix(tmp_path):
    """Many files at once: the outcomes add up to the input records, file by file."""
    write_warc_gz(tmp_path / "a.warc.gz", a_crawl(5))  # 5 html + 2 binary
    write_jsonl(tmp_path / "b.jsonl", [C4_ROW, FINEWEB_ROW, {"no_text": 1}, [1, 2]])  # 2 ok + 2 errors
    (tmp_path / "c.json").write_text(json.dumps([DOLMA_ROW] * 3))
    pq.write_table(pa.table({"text": ["p"] * 7}), tmp_path / "d.parquet")
    (tmp_path / "e.html").write_text(ARTICLE.format("e"))
    expected = {"a.warc.gz": 7, "b.jsonl": 4, "c.json": 3, "d.parquet": 7, "e.html": 1}
    files, errors = expand_inputs([str(tmp_path)])
    assert not errors
    for f in files:
        assert_one_outcome_each(list(read_file(f)), expected[Path(f.path).name])
    b = list(read_file(InputFile(str(tmp_path / "b.jsonl"))))
    assert [i.get("reason") for i in b] == [None, None, "no_text", "not_a_record"]


def test_records_and_errors_share_one_arrow_schema_through_as_row(tmp_path):
    items = read_all(write_warc_gz(tmp_path / "a.warc.gz", a_crawl(2)))  # 2 records, then 2 error rows
    table = pa.Table.from_pylist([as_row(i) for i in items])
    assert table.column_names == list(ROW_FIELDS)
    assert table.column("_error").to_pylist() == [False, False, True, True]
    assert table.column("reason").to_pylist() == [None, None, "non_html_payload", "non_html_payload"]
