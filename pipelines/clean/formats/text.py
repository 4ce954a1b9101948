"""A plain text file (``.txt``, ``.text``, ``.md``, gzipped or not): documents kept as text.

Books, notes, Wikipedia dumps and story collections come as text files; their documents need no
extraction (like a JSONL record's ``text`` field). ``read.text_split`` says where one ends: the whole
file (the default), each line, each paragraph, or a separator such as TinyStories' ``<|endoftext|>``.
The charset is found as for an HTML page (UTF-8 and BOMs first, then detection) from the file's head,
so a Latin-1 file is read, not mangled; a file that is really binary (an image saved as ``.txt``) is
one error row, not documents of garbage. Split files are streamed: a multi-GB dump of one document a
line never sits in memory, and a piece longer than ``max_document_bytes`` is an error row, the
others kept.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Any

from pipelines import storage
from pipelines.clean.config import ReadConfig
from pipelines.clean.documents import broken, document, error_row, stable_id
from pipelines.decode import BreakGuard, binary_kind, decode_text, open_decompressed
from pipelines.inputs import InputFile

CHUNK = 1 << 20
_ENDS = {"line": r"\r?\n", "paragraph": r"\r?\n(?:[ \t]*\r?\n)+"}


def read_text(f: InputFile, compression: str | None, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    with storage.open_input(f.path) as raw, open_decompressed(raw, compression) as decompressed:
        stream = BreakGuard(decompressed)
        if cfg.text_split == "file":
            yield from _whole_file(f, stream, cfg)
        else:
            yield from _split_file(f, stream, cfg)


def _too_large(f: InputFile, index: int, cfg: ReadConfig) -> dict[str, Any]:
    return error_row(
        f.path,
        index,
        "document_too_large",
        f"more than max_document_bytes={cfg.max_document_bytes}",
        id=stable_id(f.path, index),
    )


def _not_text(f: InputFile, kind: str) -> dict[str, Any]:
    return error_row(f.path, 0, "non_text_payload", f"the file is {kind}, not text", id=stable_id(f.path, 0))


def _doc(f: InputFile, index: int, text: str, encoding: str, bad: int) -> dict[str, Any]:
    return document(
        id=stable_id(f.path, index),
        file_path=f.path,
        record_index=index,
        content=text,
        content_type="text",
        source_format="text",
        encoding=encoding,
        decode_errors=bad,
    )


def _whole_file(f: InputFile, stream: BreakGuard, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    data = stream.read(cfg.max_document_bytes + 1)
    if stream.error is not None:
        yield broken(f, 0, stream.error)
    elif len(data) > cfg.max_document_bytes:
        yield _too_large(f, 0, cfg)
    elif kind := binary_kind(data):
        yield _not_text(f, kind)
    else:
        text, encoding, bad = decode_text(data)
        yield _doc(f, 0, text, encoding, bad)


def _split_file(f: InputFile, stream: BreakGuard, cfg: ReadConfig) -> Iterator[dict[str, Any]]:
    """Documents between the ends ``text_split`` names, decoded chunk by chunk in the charset the
    head says; the piece after the last end is a document too."""
    head = stream.read(CHUNK)
    if kind := binary_kind(head):
        yield _not_text(f, kind)
        return
    cut = head.rfind(b"\n") + 1 or len(head)  # judge the charset on whole lines, not a split character
    encoding = decode_text(head[:cut])[1]
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    end = re.compile(_ENDS.get(cfg.text_split) or re.escape(cfg.text_separator))
    limit = cfg.max_document_bytes  # in characters here: at least as many bytes, so never too lenient
    index, buffer, skipping, chunk = 0, "", False, head
    while True:
        last = not chunk
        buffer += decoder.decode(chunk, final=last)
        start = 0
        for m in end.finditer(buffer):
            piece, start = buffer[start : m.start()], m.end()
            if skipping:  # the rest of a piece already reported as too large
                skipping = False
            elif piece.strip():
                yield _piece(f, index, piece, encoding, limit, cfg)
                index += 1
        buffer = buffer[start:]
        if len(buffer) > limit and not skipping:
            yield _too_large(f, index, cfg)
            index, skipping = index + 1, True
        if skipping:
            buffer = buffer[-len(cfg.text_separator) - 2 :]  # keep enough to see an end split by chunks
        if last:
            break
        chunk = stream.read(CHUNK)
    if stream.error is not None:
        yield broken(f, index, stream.error)  # the cut-off piece is not a document
    elif buffer.strip() and not skipping:
        yield _piece(f, index, buffer, encoding, limit, cfg)


def _piece(f: InputFile, index: int, text: str, encoding: str, limit: int, cfg: ReadConfig) -> dict[str, Any]:
    text = text.strip("\r\n")
    if len(text) > limit:
        return _too_large(f, index, cfg)
    return _doc(f, index, text, encoding, text.count("\ufffd"))
