"""A benchmark input of real crawl pages: the WARC records of shared/data/crawl, copied to any size.

    .venv/bin/python benchmarks/_crawl_copies.py --pages 3000 --out /tmp/crawl3k

Only 46 real HTML pages are stored (a Common Crawl excerpt, a ClueWeb09 excerpt with non-conformant
headers, Common Crawl's one-page tutorial file; see shared/data/PROVENANCE.md), so a few thousand
pages means each one many times over. Every record of the source files is copied as it is (request,
metadata and response records, gzip member per record, the files' own WARC versions), with only
``WARC-Record-ID`` (and the ids that point at it) and ``WARC-Target-URI`` (a ``raychat_copy=N`` query
parameter) rewritten, so every copy is a distinct record with a distinct URL, and nothing keyed on
ids or URLs drops the copies. Pages are dealt round-robin over files of ``pages_per_file`` HTML pages,
so each file has the whole mix and the files are of similar size (a few MB each by default).
One header is dropped: ClueWeb09's records carry an empty ``WARC-Identified-Payload-Type``, which
datatrove's WarcReader takes for a non-HTML type, skipping all 29 pages unread; without it, it sniffs
the type as it does for other old crawls, so both sides read the same pages.
What copying cannot give is variety: 46 distinct pages stand for thousands, and their mix (about
two thirds Japanese and Chinese shop and spam pages) decides how many survive the quality filters:
none does, so on its own this input never exercises what happens to kept documents.

``--articles`` (the default of clean_throughput.py) adds the 30 real pages of newspaper4k's test data
(news and article pages as a wget crawl of news sites would hold them: CNN, Time, Wired, Fox 13,
Yonhap and pages in ten languages, 14 KB to 2.9 MB; fetched once with pip as
benchmarks/extract_quality.py does) as WARC response records with a plain ``HTTP/1.1 200`` header
and ``text/html`` without a charset, so both readers find the encoding themselves, and
``WARC-Identified-Payload-Type: text/html`` as Common Crawl writes it (without it datatrove sniffs
the type with libmagic, which calls 7 of these pages JavaScript and skips them). Every one of
the 76 distinct pages is then copied equally often.
"""

from __future__ import annotations

import argparse
import gzip
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(os.environ.get("RAYCHAT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ID_HEADERS = ("WARC-Record-ID", "WARC-Concurrent-To", "WARC-Refers-To", "WARC-Warcinfo-ID")


@dataclass
class Record:
    version: str
    headers: list[tuple[str, str]]
    block: bytes

    @property
    def type(self) -> str:
        return next((v for k, v in self.headers if k.lower() == "warc-type"), "")

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def read_records(path: Path) -> list[Record]:
    """Every record of a WARC file with its block as raw bytes (HTTP headers included)."""
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(path, "rb") as f:
        for r in ArchiveIterator(f, no_record_parse=True):
            out.append(Record(r.rec_headers.protocol, list(r.rec_headers.headers), r.raw_stream.read()))
    return out


def source_pages(crawl: Path) -> tuple[list[list[Record]], Record]:
    """The source files' records grouped per page (a response with the request/metadata records
    around it), and one warcinfo record to head each output file."""
    groups: list[list[Record]] = []
    warcinfo = None
    for path in sorted(crawl.glob("*/*.warc.gz")):
        pending: list[Record] = []
        for rec in read_records(path):
            if rec.type == "warcinfo":
                warcinfo = warcinfo or rec
                continue
            pending.append(rec)
            if rec.type == "response":
                groups.append(pending)
                pending = []
        if pending and groups:
            groups[-1].extend(pending)  # a trailing metadata record belongs to the last page
    if not groups or warcinfo is None:
        raise SystemExit(f"no WARC response records under {crawl} (set RAYCHAT_SHARED_DATA)")
    return groups, warcinfo


def article_pages(cache: Path | None = None) -> list[list[Record]]:
    """newspaper4k's test pages as one WARC response record each (see the module docstring)."""
    import re
    import tarfile

    from extract_quality import default_cache_dir, newspaper4k_sdist

    groups = []
    with tarfile.open(newspaper4k_sdist(cache or default_cache_dir())) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            m = re.search(r"/tests/data/html/([^/]+)\.html$", member.name)
            if not m or not member.isfile():
                continue
            html = tar.extractfile(member).read()  # type: ignore[union-attr]
            http = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {len(html)}\r\n\r\n"
            headers = [
                ("WARC-Type", "response"),
                ("WARC-Target-URI", f"https://newspaper4k-test-data.example/{m.group(1)}.html"),
                ("WARC-Date", "2024-01-01T00:00:00Z"),
                ("WARC-Record-ID", f"<urn:uuid:{uuid.uuid4()}>"),
                ("Content-Type", "application/http; msgtype=response"),
                ("WARC-Identified-Payload-Type", "text/html"),
                ("Content-Length", "0"),  # set by encode
            ]
            groups.append([Record("WARC/1.0", headers, http.encode() + html)])
    return groups


def _with_copy(url: str, copy: int) -> str:
    base, _, fragment = url.partition("#")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}raychat_copy={copy}" + (f"#{fragment}" if fragment else "")


def copied(group: list[Record], copy: int) -> list[Record]:
    """The records of one page with fresh ids (consistent within the group) and a distinct URL."""
    new_ids: dict[str, str] = {}
    out = []
    for rec in group:
        headers = []
        for k, v in rec.headers:
            if k == "WARC-Identified-Payload-Type" and not v.strip():
                continue  # ClueWeb09's empty header: datatrove would skip the page unread (see above)
            if k in ID_HEADERS and k != "WARC-Warcinfo-ID":
                v = new_ids.setdefault(v, f"<urn:uuid:{uuid.uuid4()}>")
            elif k == "WARC-Target-URI":
                v = _with_copy(v, copy)
            headers.append((k, v))
        out.append(Record(rec.version, headers, rec.block))
    return out


def encode(rec: Record) -> bytes:
    """One record as its own gzip member (as Common Crawl writes them)."""
    head = "".join(
        f"{k}: {len(rec.block) if k.lower() == 'content-length' else v}\r\n" for k, v in rec.headers
    )
    raw = f"{rec.version}\r\n{head}\r\n".encode() + rec.block + b"\r\n\r\n"
    return gzip.compress(raw, compresslevel=6, mtime=0)


def write_copies(
    pages: int, out: Path, pages_per_file: int = 600, articles: bool = False, crawl: Path | None = None
) -> list[Path]:
    """``pages`` HTML pages in ``ceil(pages / pages_per_file)`` gzipped WARC files under ``out``."""
    groups, warcinfo = source_pages(crawl or SHARED / "crawl")
    if articles:
        groups += article_pages()
    out.mkdir(parents=True, exist_ok=True)
    n_files = max(1, -(-pages // pages_per_file))
    files = [out / f"crawl-copies-{i:04d}.warc.gz" for i in range(n_files)]
    handles = [path.open("wb") for path in files]
    try:
        for f in handles:
            f.write(encode(warcinfo))
        for i in range(pages):
            for rec in copied(groups[i % len(groups)], i // len(groups)):
                handles[i % n_files].write(encode(rec))
    finally:
        for f in handles:
            f.close()
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pages", type=int, default=3000)
    p.add_argument("--pages-per-file", type=int, default=600)
    p.add_argument("--articles", action="store_true", help="add newspaper4k's 30 article pages")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    files = write_copies(args.pages, args.out, args.pages_per_file, args.articles)
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"{args.pages} pages in {len(files)} files, {mb:.1f} MB, under {args.out}")


if __name__ == "__main__":
    main()
