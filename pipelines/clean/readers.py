"""The clean stage's reader: one input file to a stream of documents, and every failure to an error row.

Pure Python on purpose: the clean job lists its inputs on the driver (pipelines/inputs.py, names only)
and reads each file with ``read_file`` in a pass-1 worker. Keeping the reading here makes every format
testable without a cluster. The pieces, each with one job:

- pipelines/inputs.py: files, globs, folders and URIs to the files to read (shared with the SFT data);
- pipelines/decode.py: compression and format from the first bytes, streams that survive a break,
  text from bytes in any charset, binary payloads told apart (shared too);
- pipelines/clean/formats/: one module per format (warc, jsonl: JSON lines and arrays, parquet, html,
  text);
- pipelines/clean/documents.py: the document and error rows they yield (the accounting rule).

Formats are told by the bytes, not the name: the name only chooses which files a folder contributes.
A ``.jsonl`` that is really gzip, or a ``.warc.gz`` that is not compressed, is read for what it is.
The exception is a text file (``.txt``, ``.md``): its first character says nothing about its format.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import error_row
from pipelines.clean.formats.html import read_html
from pipelines.clean.formats.jsonl import read_json
from pipelines.clean.formats.parquet import read_parquet
from pipelines.clean.formats.text import read_text
from pipelines.clean.formats.warc import read_warc
from pipelines.decode import sniff_file
from pipelines.inputs import InputFile, told_format

log = logging.getLogger(__name__)
READERS = {
    "warc": read_warc,
    "jsonl": read_json,
    "json": read_json,
    "parquet": read_parquet,
    "html": read_html,
    "text": read_text,
}


def read_file(f: InputFile, cfg: ReadConfig | None = None) -> Iterator[dict[str, Any]]:
    """Stream the documents of one file as dicts (``RECORD_FIELDS``) or error dicts (``_error``: True).

    Never raises for bad data: an unopenable file is one error row (record_index None), a file that
    breaks mid-way keeps the records before the break and adds one error row saying where it broke,
    and a file without a single record (0 bytes, or only blank lines) is one ``empty_file`` row.
    """
    cfg = cfg or ReadConfig()
    try:
        compression, sniffed, empty = sniff_file(f.path)
    except Exception as e:  # noqa: BLE001 - an unopenable file is this file's error, nothing more
        yield error_row(f.path, None, "unreadable", f"{type(e).__name__}: {e}")
        return
    if empty:  # reported, not skipped: an empty input is usually a failed download or export
        what = (
            "the file is empty (0 bytes)"
            if compression is None
            else f"the {compression} stream holds no data"
        )
        yield error_row(f.path, None, "empty_file", what)
        return
    fmt = told_format(f.format, sniffed)
    if fmt == sniffed and f.format and sniffed != f.format and {sniffed, f.format} != {"json", "jsonl"}:
        log.warning(
            "%s: the name says %s but the bytes say %s; reading it as %s", f.path, f.format, sniffed, sniffed
        )
    if fmt is None:
        yield error_row(
            f.path, None, "unknown_format", "neither the name nor the first bytes tell the format"
        )
        return
    if fmt == "warc" and compression is None and sniffed is None and f.path.lower().endswith(".gz"):
        compression = "gzip"  # damaged gzip magic: the member-by-member reader skips to the next member
    reader = READERS[fmt]
    if fmt == "parquet" and compression:
        yield error_row(
            f.path, None, "unknown_format", f"parquet inside {compression} is not readable; decompress it"
        )
        return
    count = 0
    try:
        for item in reader(f, compression, cfg):
            count += 1
            yield item
    except BaseException as e:  # noqa: BLE001 - a reader bug must not lose the other files
        if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        yield error_row(f.path, None, "read_failed", f"{type(e).__name__}: {e} (after {count} items)")
        return
    if count == 0:  # bytes, but not one record: blank lines, [], a parquet without rows, a bare warcinfo
        what = (
            "no response, resource or conversion records (a WAT, request-only or warcinfo-only file "
            "has nothing to clean)"
            if fmt == "warc"
            else "no records"
        )
        yield error_row(f.path, None, "empty_file", f"the {fmt} file holds {what}")
