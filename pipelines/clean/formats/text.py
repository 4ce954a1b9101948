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
_BLANK_LINES_AT_START = re.compile(r"\A(?:[ \t]*\r?\n)+")


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
    """Documents between the ends ``text_split`` names; the piece after the last end is one too.

    The charset comes from the head. UTF-8 (the usual guess) is decoded with ``surrogateescape``, so a
    piece that turns out not to be UTF-8 after all (an ASCII head, Latin-1 further on) keeps its bytes
    and is decoded on its own as a whole file would be, not replaced by U+FFFD.
    """
    head = stream.read(CHUNK)
    if kind := binary_kind(head):
        yield _not_text(f, kind)
        return
    encoding = _head_encoding(head)
    errors = "surrogateescape" if encoding == "utf-8" else "replace"
    decoder = codecs.getincrementaldecoder(encoding)(errors=errors)
    is_regex = cfg.text_split in _ENDS
    end = re.compile(_ENDS[cfg.text_split] if is_regex else re.escape(cfg.text_separator))
    limit = cfg.max_document_bytes  # a piece of more characters than this has more bytes too
    index, buffer, skipping, chunk, first = 0, "", False, head, True
    while True:
        last = not chunk
        text = decoder.decode(chunk, final=last)
        if first and text:
            text, first = text.lstrip("\ufeff"), False
        buffer += text
        start = 0
        for m in end.finditer(buffer):
            piece, start = buffer[start : m.start()], m.end()
            if skipping:  # the rest of a piece already reported as too large
                skipping = False
            elif piece.strip():
                yield _piece(f, index, piece, encoding, cfg)
                index += 1
        buffer = buffer[start:]
        keep = _possible_end(buffer, is_regex, cfg.text_separator)  # an end the next read may complete
        if keep > limit and not skipping and len(buffer[:keep].strip()) > limit:
            yield _too_large(f, index, cfg)
            index, skipping = index + 1, True
        if skipping:
            buffer = buffer[keep:]
        if last:
            break
        chunk = stream.read(CHUNK)
    if stream.error is not None:
        yield broken(f, index, stream.error)  # the cut-off piece is not a document
    elif buffer.strip() and not skipping:
        yield _piece(f, index, buffer, encoding, cfg)


def _head_encoding(head: bytes) -> str:
    """The charset of a file from its first bytes: UTF-8 when they are (a character cut at the end
    of the read does not count against it), else what ``decode_text`` finds on whole lines."""
    if not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
            return "utf-8"
        except UnicodeDecodeError:
            pass
    cut = head.rfind(b"\n") + 1 or len(head)
    return decode_text(head[:cut])[1]


def _possible_end(buffer: str, is_regex: bool, separator: str) -> int:
    """Where an end that the next read may complete could start in ``buffer`` (its length if none):
    a run of line breaks and blanks at the tail for lines and paragraphs, a separator's prefix else."""
    if is_regex:  # the first line break of the blank tail (a regex search was quadratic in the tail)
        start = len(buffer.rstrip(" \t\r\n"))
        breaks = [i for i in (buffer.find("\r", start), buffer.find("\n", start)) if i >= 0]
        return min(breaks) if breaks else len(buffer)
    for n in range(min(len(separator) - 1, len(buffer)), 0, -1):
        if separator.startswith(buffer[-n:]):
            return len(buffer) - n
    return len(buffer)


def _piece(f: InputFile, index: int, text: str, encoding: str, cfg: ReadConfig) -> dict[str, Any]:
    text = _BLANK_LINES_AT_START.sub("", text).rstrip(" \t\r\n")
    if encoding == "utf-8":
        raw = text.encode("utf-8", "surrogateescape")
        if len(raw) > cfg.max_document_bytes:
            return _too_large(f, index, cfg)
        if raw != text.encode("utf-8", "replace"):  # escaped bytes: this piece is not UTF-8
            text, encoding, bad = decode_text(raw)
            return _doc(f, index, text, encoding, bad)
        return _doc(f, index, text, encoding, 0)
    if len(text.encode("utf-8")) > cfg.max_document_bytes:
        return _too_large(f, index, cfg)
    return _doc(f, index, text, encoding, text.count("\ufffd"))
