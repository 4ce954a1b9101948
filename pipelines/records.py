"""Records of JSON-lines, JSON-array, parquet and plain text files, each with its place; problems with theirs.

Used by the chat-data loaders (pipelines/sft) and the search corpus (actors/search.py). A file is
JSON lines, a JSON array (pretty-printed or not) or parquet, optionally compressed (gzip, bz2, xz,
zstd), local or behind a filesystem URI; the bytes decide, not the name (pipelines/decode.py, which
the clean stage's readers use too). Files, globs and folders are expanded by
pipelines/inputs.py's ``expand_inputs``.

Every record comes out as ``Record(where, value)`` and every problem as ``Problem(where, reason,
detail)``; nothing raises for bad data. ``where`` is what a person needs to find the record:
``data.jsonl:12`` (line 12), ``data.json:57 (record 12)`` (the line a JSON array's element starts on),
``data.parquet: row 7``. A JSON array with a syntax error in one element keeps the elements before
it and, when the array is pretty-printed (each element starting on its own line at the same indent),
picks up again at the next element.

A record whose text is not valid Unicode is skipped and counted, never kept with its bytes replaced
by U+FFFD: bytes that are not UTF-8 (``invalid_utf8``) or a ``\\ud800``-style escape of half a
surrogate pair (``lone_surrogate``, which the tokenizer would silently turn into U+FFFD). Why skip
rather than keep and count (as the clean stage does for web pages): every token of a chat example's
reply is a training target, so a kept record teaches the model to write U+FFFD where the bytes were;
a preference pair would be judged on mangled text; and a file saved in another encoding (cp1252)
then shows up as mostly bad records, which stops its source ("is the format right?"), instead of
training on garbled text under a count nobody reads. The other records of the file are kept, and
the problem says where the first bad byte is, so the file can be fixed. A plain text file (a search
corpus's document) is skipped the same way when its bytes cannot all be decoded (``_text_file`` says
why that fits a search corpus); one in another encoding is read in its detected charset.
"""

from __future__ import annotations

import json
import lzma
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipelines import storage
from pipelines.decode import BreakGuard, binary_kind, decode_text, open_decompressed, sniff
from pipelines.errors import ConfigError
from pipelines.inputs import COMPRESSION_EXT, expand_inputs, format_from_name, told_format


@dataclass(frozen=True)
class Record:
    where: str
    value: Any


@dataclass(frozen=True)
class Problem:
    where: str
    reason: str  # a short key to count by
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail}"


_WS = re.compile(r"\s*")
# what decoding with "surrogateescape" makes of each byte that is not UTF-8 (it keeps them apart
# from valid text: no character read from valid UTF-8 falls in this range)
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # may be half of a valid pair


def list_files(spec: str | list[str]) -> tuple[list[str], list[Problem]]:
    """The files a source's ``path`` names, and a problem for each part that names none."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    files, errors = expand_inputs(specs)
    problems = [Problem(str(e.get("file_path")), str(e.get("reason")), str(e.get("error"))) for e in errors]
    return [f.path for f in files], problems


def require_source_files(key: str, sources: list[Any]) -> None:
    """``ConfigError`` naming the first source (``key[i]``) whose ``path`` names no file: a mistyped
    path, said before Ray starts (the sft and rm stages' preflight)."""
    for i, source in enumerate(sources):
        files, missing = list_files(source.path)
        if not files:
            raise ConfigError(
                f"{key}[{i}] ({source.label}): no data files at {source.path} "
                f"({'; '.join(map(str, missing)) or 'no match'})"
            )


def read_records(
    path: str, text_fields: tuple[str, str, str] = ("id", "title", "text")
) -> Iterator[Record | Problem]:
    """Every record of one file, in order; problems in their place.

    A plain text file (``.txt``, ``.md``: a note, a book) is one record whose ``text_fields`` (id,
    title, text) are its path, its name without the extension, and its whole content.
    """
    try:
        compression, fmt = sniff(path)
    except OSError as e:
        yield Problem(path, "unreadable", f"cannot open: {e}")
        return
    if told_format(format_from_name(path.rsplit("/", 1)[-1]), fmt) == "text":
        yield from _text_file(path, compression, text_fields)
        return
    if fmt == "parquet":
        yield from _parquet(path)
        return
    try:
        data, broken = _read_bytes(path, compression)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
        yield Problem(path, "unreadable", f"cannot read the {compression or 'plain'} file: {e}")
        return
    text = data.decode("utf-8", "surrogateescape").lstrip("\ufeff")  # each record checked: _checked
    if not text.strip():
        yield Problem(path, "empty_file" if broken is None else "unreadable", _empty(compression, broken))
        return
    start = _WS.match(text).end()
    if text[start] == "[":
        yield from _json_array(path, text, start)
    else:
        yield from _json_lines(path, text)
    if broken is not None:  # the records before the break are kept (its cut-off line, if any, counted)
        yield Problem(
            path,
            "unreadable",
            f"the {compression or 'plain'} data breaks off after {len(data):,} bytes: {broken}",
        )


def _text_file(
    path: str, compression: str | None, fields: tuple[str, str, str]
) -> Iterator[Record | Problem]:
    """A plain text file as one record; skipped and counted (``invalid_utf8``, where its first bad
    byte is) when its bytes cannot all be decoded, as a JSON record is, not kept with U+FFFD.

    Why skip a search corpus's document: the model copies what a result says into its reply (the
    search traces teach exactly that), and the replies of distillation and GRPO are trained on, so a
    U+FFFD in a result becomes one in a trained reply; BM25 would index the broken words as other
    words. A file in another encoding is not hit, as its charset is detected (cp1252, latin-1):
    what is skipped is UTF-8 with corrupt bytes, which the problem places so the file can be fixed.
    A file is one document, so the whole file is skipped, as a JSON-lines document with a bad byte
    is: one rule for a document whichever way the corpus is stored.
    """
    try:
        data, broken = _read_bytes(path, compression)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as e:
        yield Problem(path, "unreadable", f"cannot read the {compression or 'plain'} file: {e}")
        return
    if broken is not None:  # a note or a book is one record: a cut-off one is not kept as if whole
        yield Problem(
            path,
            "unreadable",
            f"the {compression or 'plain'} data breaks off after {len(data):,} bytes: {broken}",
        )
        return
    if kind := binary_kind(data):
        yield Problem(path, "not_text", f"the file is {kind}, not text")
        return
    text, encoding, replaced = decode_text(data)
    if replaced:
        yield _undecodable(path, data, encoding, replaced)
        return
    text = text.lstrip("\ufeff")
    if not text.strip():
        yield Problem(path, "empty_file", "the file holds no text")
        return
    stem = text_title(path)
    id_field, title_field, text_field = fields
    yield Record(path, {id_field: path, title_field: stem, text_field: text})


def text_title(path: str) -> str:
    """A text file's name without its text and compression extensions: "v2.1 notes.md.gz" -> "v2.1 notes"."""
    name = path.rsplit("/", 1)[-1]
    for _ in range(2):
        stem, ext = os.path.splitext(name)
        if stem and (ext.lower() in COMPRESSION_EXT or format_from_name(name) == "text" and ext):
            name = stem
    return name


def _read_bytes(path: str, compression: str | None) -> tuple[bytes, BaseException | None]:
    """The file's bytes, and what broke the decompression if it broke (truncated, corrupt): the bytes
    before the break are kept, so the records in them are."""
    with storage.open_input(path) as raw, open_decompressed(raw, compression) as stream:
        guard = BreakGuard(stream)
        return guard.read(), guard.error


def _empty(compression: str | None, broken: BaseException | None) -> str:
    if broken is None:
        return "the file holds no records"
    return f"the {compression or 'plain'} data breaks off before any record: {broken}"


def _json_lines(path: str, text: str, first_line: int = 1) -> Iterator[Record | Problem]:
    """``first_line``: the file's line number of ``text``'s first line (JSON lines after an array)."""
    # lines end at "\n" only: str.splitlines() also splits at U+2028, U+2029 and U+0085, which JSON
    # strings hold unescaped (json.dumps(..., ensure_ascii=False) writes them so)
    for lineno, line in enumerate(text.split("\n"), first_line):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError, ValueError) as e:
            why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else _why(e)
            yield Problem(where, "invalid_json", f"invalid JSON ({why}): {line[:80]!r}")
            continue
        yield _checked(where, line, value, lineno, 1)


def _json_array(path: str, text: str, pos: int) -> Iterator[Record | Problem]:
    decoder = json.JSONDecoder()
    pos += 1  # past "["
    index, line, line_pos = 0, 1, 0

    def line_at(p: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, p)
        line_pos = p
        return line

    while True:
        pos = _WS.match(text, pos).end()
        if pos >= len(text):
            yield Problem(f"{path}:{line_at(pos)}", "invalid_json", "the JSON array is not closed with ']'")
            return
        if text[pos] == "]":
            yield from _after_array(path, text, pos + 1, line_at)
            return
        start_line = line_at(pos)
        where = f"{path}:{start_line} (record {index})"
        try:
            value, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError, ValueError) as e:
            resume = _next_element(text, pos)
            tail = (
                f"reading goes on at line {line_at(resume)}"
                if resume is not None
                else "the rest of the array cannot be read"
            )
            why = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else _why(e)
            yield Problem(where, "invalid_json", f"invalid JSON ({why}); {tail}")
            if resume is None:
                return
            pos, index = resume, index + 1
            continue
        yield _checked(where, text[pos:end], value, start_line, pos - text.rfind("\n", 0, pos))
        index += 1
        pos = _WS.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            yield from _after_array(path, text, pos + 1, line_at)
            return
        else:
            yield Problem(
                f"{path}:{line_at(pos)}", "invalid_json", "expected ',' or ']' after a record; reading stops"
            )
            return


def _checked(where: str, raw: str, value: Any, line: int, column: int) -> Record | Problem:
    """The record parsed from ``raw`` (its JSON text, which starts in the file at ``line``,
    ``column``), or the problem that skips it when its text is not valid Unicode (the module docstring
    says why skipped rather than kept)."""
    if problem := _not_utf8(where, raw, line, column):
        return problem
    if _SURROGATE_ESCAPE.search(raw) and (half := _lone_surrogate(value)):  # only then is it walked
        return Problem(
            where,
            "lone_surrogate",
            f"holds the escape \\u{ord(half):04x}, half of a surrogate pair without its other half: not a "
            "character (UTF-8 cannot hold it; the tokenizer would write U+FFFD)",
        )
    return Record(where, value)


def _not_utf8(where: str, raw: str, line: int, column: int) -> Problem | None:
    """The ``invalid_utf8`` problem placing the first byte of ``raw`` (decoded with
    "surrogateescape"; it starts in the file at ``line``, ``column``) that is not UTF-8, if any."""
    if not (bad := _NOT_UTF8.search(raw)):
        return None
    before = raw.count("\n", 0, bad.start())
    line += before
    column = bad.start() - raw.rfind("\n", 0, bad.start()) + (column - 1 if not before else 0)
    byte = ord(bad.group()) - 0xDC00
    return Problem(
        where,
        "invalid_utf8",
        f"not UTF-8 text (byte 0x{byte:02x} at line {line}, column {column}); the file is corrupt or "
        "in another encoding",
    )


def _undecodable(path: str, data: bytes, encoding: str, replaced: int) -> Problem:
    """Why a text file whose decoding replaced ``replaced`` bytes is skipped: where its first byte
    that is not UTF-8 is, or (a file with a UTF-16 byte order mark) how many were not ``encoding``."""
    if encoding == "utf-8" and (
        problem := _not_utf8(path, data.decode("utf-8", "surrogateescape").lstrip("\ufeff"), 1, 1)
    ):
        return problem
    return Problem(path, "invalid_utf8", f"not {encoding} text (undecodable sequences: {replaced:,})")


def _lone_surrogate(value: Any) -> str | None:
    """The first string character of ``value`` that UTF-8 cannot encode, if any: a loop, not
    recursion, since a record may be nested as deep as json allows."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                return item[e.start]
        elif isinstance(item, dict):
            todo += [*item, *item.values()]
        elif isinstance(item, list):
            todo += item
    return None


def _why(e: BaseException) -> str:
    """What json refused other than its syntax: nesting past Python's recursion limit, or an integer
    of more than 4300 digits (a ValueError)."""
    return "nested too deeply" if isinstance(e, RecursionError) else str(e)


def _after_array(path: str, text: str, pos: int, line_at: Any) -> Iterator[Record | Problem]:
    """After the array's ']': nothing but white space, else the rest was silently lost. JSON lines
    after it (an array, then records appended line by line) are read as JSON lines."""
    pos = _WS.match(text, pos).end()
    if pos >= len(text):
        return
    first = line_at(pos)
    yield Problem(
        f"{path}:{first}", "trailing_data", "more data after the JSON array's ']': read as JSON lines"
    )
    yield from _json_lines(path, text[pos:], first)


def _next_element(text: str, pos: int) -> int | None:
    """Where the element after the broken one at ``pos`` starts, for a pretty-printed array: the next
    line that opens an element at the broken element's indent."""
    line_start = text.rfind("\n", 0, pos) + 1
    indent = text[line_start:pos]
    if indent.strip() or text[pos] not in "{[":
        return None  # the element does not start its own line: no safe place to resume
    match = re.compile(r"\n" + re.escape(indent) + re.escape(text[pos])).search(text, pos + 1)
    return match.start() + 1 + len(indent) if match else None


def _parquet(path: str) -> Iterator[Record | Problem]:
    import pyarrow.parquet as pq

    with storage.open_input_file(path) as handle:
        try:
            pf = pq.ParquetFile(handle)
        except Exception as e:  # noqa: BLE001 - a damaged footer is this file's problem only
            yield Problem(path, "unreadable", f"not a readable parquet file: {type(e).__name__}: {e}")
            return
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=4096):
                for value in batch.to_pylist():
                    yield Record(f"{path}: row {row}", _without_nulls(value))
                    row += 1
        except Exception as e:  # noqa: BLE001 - a damaged row group: keep the rows before it
            yield Problem(f"{path}: row {row}", "unreadable", f"the file cannot be read further: {e}")


def _without_nulls(value: Any) -> Any:
    """A parquet row with the null keys of its objects left out, at every depth. Parquet gives every
    row of a struct column the union of all rows' fields, so a key one record lacks comes back as
    null: a tool call's arguments ``{"a": 1}`` read as ``{"a": 1, "b": null}`` and trained as such,
    a tool's missing description as ``"description": null``."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
