"""Reading the small files of tokenizer and model directories, with errors that name the file.

A model or tokenizer directory is copied between machines, synced to object storage and edited by
hand, so any of its files can arrive truncated, empty, in another encoding or replaced by something
else. Python's own errors for that (``UnicodeDecodeError``, ``JSONDecodeError``, ``AttributeError``
on a list where an object was meant) do not say which file was at fault; these helpers do, and raise
the caller's own error type, so ``except TokenizerError`` or ``except CheckpointError`` catches them.

A missing file is left to the caller (``FileNotFoundError`` passes through): what a missing file
means, and what to do about it, differs from file to file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_bytes(path: str | os.PathLike[str], error: type[Exception]) -> bytes:
    """The bytes of ``path``; a path that exists but cannot be read (a directory, no permission, an
    I/O error) raises ``error`` naming it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None


def read_text(path: str | os.PathLike[str], error: type[Exception]) -> str:
    """The UTF-8 text of ``path``; bytes that are not UTF-8 raise ``error`` naming the file and where."""
    data = read_bytes(path, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); the file is corrupt "
            "or in another encoding"
        ) from None


def read_json_object(path: str | os.PathLike[str], error: type[Exception]) -> dict[str, Any]:
    """The JSON object in ``path``. Not UTF-8, not JSON (empty or truncated included) or JSON that is
    not an object all raise ``error`` with a message naming the file."""
    text = read_text(path, error)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty" if not text.strip() else f"{e.msg} at line {e.lineno} column {e.colno}"
        raise error(f"{path}: not valid JSON ({what}); the file is corrupt or truncated") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def jsonl_lines(text: str) -> list[str]:
    """The non-blank lines of JSON-lines text. Split at "\n" only: ``str.splitlines()`` also splits at
    U+2028, U+2029 and U+0085, which JSON strings hold unescaped (``json.dumps(..., ensure_ascii=False)``
    writes them so), and a record would be cut in two."""
    return [line for line in text.split("\n") if line.strip()]


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Every value of a JSON-lines file this project wrote (metrics, samples, held-out sets), strictly:
    a bad line raises, as it means a bug, not a user's odd record."""
    return [json.loads(line) for line in jsonl_lines(Path(path).read_text(encoding="utf-8"))]


def read_jsonl_objects(
    path: str | os.PathLike[str], error: type[Exception]
) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a JSON-lines file, one per line, and how many lines were not one (bad JSON,
    or JSON that is not an object; blank lines are neither). A user's data file has the odd broken
    line: those are skipped and counted, never fatal; a file that is not UTF-8 raises ``error``."""
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in jsonl_lines(read_text(path, error)):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def model_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a model directory (missing, or without ``config.json``), or None: what every
    command taking ``--model`` checks before it loads anything, in the same words."""
    p = Path(path)
    if (p / "config.json").is_file():
        return None
    return f"model directory {p} {'does not exist' if not p.exists() else 'has no config.json'}"
