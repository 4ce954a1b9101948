"""Inputs to files: paths, globs (``**`` crosses folders), folders and URIs, local or on any pyarrow or
fsspec filesystem, into the list of files to read, and every input that names none into an error row.

Shared by the clean stage and the chat-data / search-corpus reader (pipelines/records.py). Only names
are looked at (plus the first bytes of a file whose name has no known extension), so listing a crawl
on the driver reads no data. Filesystems are pipelines/storage.py's.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipelines import storage
from pipelines.decode import sniff

log = logging.getLogger(__name__)

FORMATS = ("warc", "jsonl", "json", "parquet", "html", "text")


# name suffix (after any compression suffix) -> format
_EXT_FORMAT = {
    ".warc": "warc",
    ".wet": "warc",
    ".wat": "warc",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jl": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".markdown": "text",
}


COMPRESSION_EXT = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".xz": "xz",
    ".zst": "zstd",
    ".zstd": "zstd",
}


_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    """One file to read. ``path`` is an absolute local path or a URI; ``format`` is the name's guess.

    ``size`` and ``mtime_ns`` come from the listing; together they tell a changed file (resume).
    """

    path: str
    format: str | None = None
    size: int | None = None
    mtime_ns: int | None = None


def format_from_name(name: str) -> str | None:
    lower = name.lower()
    stem, ext = os.path.splitext(lower)
    if ext in COMPRESSION_EXT:
        stem, ext = os.path.splitext(stem)
    return _EXT_FORMAT.get(ext)


def told_format(by_name: str | None, by_bytes: str | None) -> str | None:
    """A file's format: what its first bytes say, else its name's. Text is the exception: a ``.txt``
    or ``.md`` may start with "[", "{" or "<" (Markdown links, code, comments), which says nothing,
    so its name wins unless the bytes are a binary container (parquet, WARC)."""
    if by_name == "text" and by_bytes in ("json", "jsonl", "html"):
        return "text"
    return by_bytes or by_name


def input_error(file_path: str, reason: str, error: str) -> dict[str, Any]:
    return {"file_path": file_path, "step": "read", "reason": reason, "error": error}


def _wanted_in_folder(name: str) -> bool:
    """Files a folder contributes: known data extensions (text files too, less documentation: see
    ``_without_notes_beside_data``); hidden files and _SUCCESS/_metadata are not."""
    if name.startswith((".", "_")):
        return False
    return format_from_name(name) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex where ``*`` stays inside one folder and ``**`` crosses folders."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j]
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _expand_local(spec: str, skipped: list[str]) -> tuple[list[InputFile], list[dict[str, Any]]]:
    """``spec``'s files and error rows; files a folder or glob holds that are of no data format by
    their names (or, nameless, by their first bytes) are added to ``skipped``."""
    path = storage.local_path(spec)
    if _GLOB_CHARS.search(path):
        matches = sorted(globlib.glob(path, recursive=True))
        files, errors = [], []
        for m in matches:
            if os.path.isdir(m):
                sub_files, sub_errors = _expand_local(m, skipped)
                files += sub_files
                errors += sub_errors
            else:
                f, e = _local_file(m, False, skipped)
                files += f
                errors += e
        if not files and not errors:
            what = f"only non-data files ({len(matches)})" if matches else "no file"
            errors.append(input_error(spec, "no_match", f"{what} match the pattern {spec!r}"))
        return files, errors
    if os.path.isdir(path):
        files, errors = [], []
        seen: set[str] = set()  # real paths of the folders walked: a link back up is not a loop
        walk = os.walk(path, onerror=lambda e, errs=errors: errs.append(_unreadable(e)), followlinks=True)
        for root, dirs, names in walk:
            seen.add(os.path.realpath(root))
            # a linked folder is read as if it were there (was skipped without a word)
            dirs[:] = sorted(
                d
                for d in dirs
                if not d.startswith((".", "_")) and os.path.realpath(os.path.join(root, d)) not in seen
            )
            for name in sorted(names):
                real = os.path.realpath(os.path.join(root, name))
                if name.startswith((".", "_")) or real in seen:
                    continue  # hidden, or a file already read through another link
                seen.add(real)
                f, e = _local_file(os.path.join(root, name), False, skipped)
                files += f
                errors += e
        if not files and not errors:
            held = f" ({_left_out(skipped)})" if skipped else ""
            errors.append(input_error(spec, "no_match", f"folder {spec!r} holds no data files{held}"))
        return files, errors
    if os.path.lexists(path) or os.path.exists(path):
        return _local_file(path, True, skipped)
    return [], [input_error(spec, "no_match", f"no such file or folder: {spec!r}")]


def _unreadable(e: OSError) -> dict[str, Any]:
    return input_error(str(getattr(e, "filename", "") or ""), "unreadable", f"{type(e).__name__}: {e}")


def _local_file(
    path: str, explicit: bool, skipped: list[str]
) -> tuple[list[InputFile], list[dict[str, Any]]]:
    """One local file: readable and of a format we know (by name, or by its bytes when the name has none)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # opening a named pipe or a device waits for ever
            return [], [input_error(path, "unreadable", "not a regular file (a pipe, socket or device)")]
        with open(path, "rb"):
            pass
    except OSError as e:
        return [], [input_error(path, "unreadable", f"{type(e).__name__}: {e}")]
    fmt = format_from_name(os.path.basename(path))
    if fmt is None:
        name = os.path.basename(path)
        if not explicit and "." in name:
            skipped.append(path)  # not a data file by its name
            return [], []
        try:
            _, fmt = sniff(path)
        except OSError as e:
            return [], [input_error(path, "unreadable", f"{type(e).__name__}: {e}")]
        if fmt is None:
            if not explicit:
                skipped.append(path)  # neither its name nor its first bytes say a data format
                return [], []
            return [], [
                input_error(
                    path,
                    "unknown_format",
                    f"neither the name nor the first bytes of {path!r} match one of {', '.join(FORMATS)}",
                )
            ]
    return [InputFile(path=path, format=fmt, size=st.st_size, mtime_ns=st.st_mtime_ns)], []


def _expand_uri(spec: str) -> tuple[list[InputFile], list[dict[str, Any]]]:
    base, sep, query = spec.partition("?")
    query = sep + query
    if _GLOB_CHARS.search(base):
        # pyarrow has no glob: list the part before the first wildcard and match the rest.
        cut = _GLOB_CHARS.search(base).start()  # type: ignore[union-attr]
        prefix = base[: base.rfind("/", 0, cut) + 1]
        try:
            fs, inner = storage.fs_and_path(prefix + query)
        except Exception as e:  # noqa: BLE001 - any failure to reach the store is this input's error
            return [], [input_error(spec, "unreadable", f"{type(e).__name__}: {e}")]
        regex = _glob_regex(inner.rstrip("/") + "/" + base[len(prefix) :])
        infos = _list_uri(fs, inner)
        if isinstance(infos, dict):
            return [], [infos | {"file_path": spec}]
        files = [
            InputFile(_join_uri(prefix, inner, i.path) + query, fmt, i.size, i.mtime_ns)
            for i in infos
            if regex.match(i.path) and (fmt := format_from_name(i.base_name))
        ]
        if not files:
            return [], [input_error(spec, "no_match", f"no file matches the pattern {spec!r}")]
        return files, []
    try:
        import pyarrow.fs as pafs

        fs, inner = storage.fs_and_path(spec)
        info = fs.get_file_info(inner)
    except Exception as e:  # noqa: BLE001
        return [], [input_error(spec, "unreadable", f"{type(e).__name__}: {e}")]
    if info.type == pafs.FileType.NotFound:
        return [], [input_error(spec, "no_match", f"no such file or folder: {spec!r}")]
    if info.type == pafs.FileType.File:
        fmt = format_from_name(info.base_name)
        if fmt is None:
            try:
                _, fmt = sniff(spec)
            except Exception as e:  # noqa: BLE001
                return [], [input_error(spec, "unreadable", f"{type(e).__name__}: {e}")]
        if fmt is None:
            return [], [input_error(spec, "unknown_format", f"cannot tell the format of {spec!r}")]
        return [InputFile(spec, fmt, info.size, info.mtime_ns)], []
    infos = _list_uri(fs, inner)
    if isinstance(infos, dict):
        return [], [infos | {"file_path": spec}]
    files = [
        InputFile(_join_uri(base, inner, i.path) + query, format_from_name(i.base_name), i.size, i.mtime_ns)
        for i in infos
        if _wanted_in_folder(i.base_name)
        and not any(part.startswith((".", "_")) for part in i.path[len(inner) :].split("/")[:-1])
    ]
    if not files:
        return [], [input_error(spec, "no_match", f"folder {spec!r} holds no data files")]
    return files, []


def _list_uri(fs: Any, inner: str) -> list[Any] | dict[str, Any]:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(inner.rstrip("/"), recursive=True, allow_not_found=True))
    except Exception as e:  # noqa: BLE001
        return input_error(inner, "unreadable", f"{type(e).__name__}: {e}")
    return sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)


def _join_uri(uri_base: str, inner_base: str, inner_path: str) -> str:
    """The URI of ``inner_path``, given that ``uri_base`` addresses ``inner_base`` on the same store."""
    uri_base, inner_base = uri_base.rstrip("/"), inner_base.rstrip("/")
    rel = inner_path[len(inner_base) :] if inner_path.startswith(inner_base) else "/" + inner_path
    if uri_base.endswith("://"):
        return uri_base + rel.lstrip("/")
    return uri_base + rel


# a project's documentation files, by their stem: README.md, LICENSE, PROVENANCE.md, CHANGELOG.txt, ...
_DOC_NAME = re.compile(
    r"(readme|licen[cs]e|copying|notice|changelog|changes|authors|contributors|contributing|citation|"
    r"provenance|code_of_conduct|security)([._-].*)?",
    re.IGNORECASE,
)


def _without_notes_beside_data(spec: str, files: list[InputFile]) -> list[InputFile]:
    """A folder or glob's files without the documentation beside its data.

    Why: a folder of ``.txt`` books or ``.md`` notes is text to clean, but a crawl's ``README.md`` or
    ``PROVENANCE.md`` beside its WARC files is about the data, not data. Only text files named like
    a project's documentation are left out, and only where the folder also holds files of a data
    format (WARC, JSON, parquet, HTML); a file named on its own is always read.
    """
    if not any(f.format != "text" for f in files):
        return files
    docs = [
        f for f in files if f.format == "text" and _DOC_NAME.fullmatch(os.path.basename(f.path).split("?")[0])
    ]
    if not docs:
        return files
    log.info(
        "%s: leaving out %d documentation file(s) beside the data (%s); name one on its own to read it",
        spec,
        len(docs),
        ", ".join(os.path.basename(f.path) for f in docs[:3]) + (", ..." if len(docs) > 3 else ""),
        extra={"console": True},
    )
    return [f for f in files if f not in docs]


def expand_inputs(inputs: Iterable[str]) -> tuple[list[InputFile], list[dict[str, Any]]]:
    """Files, globs (``**`` crosses folders) and folders (recursive), local or URIs, into files to read.

    Returns the files (each once, in input order then sorted within a folder) and one error row per
    input that matched nothing, could not be listed, or is a file of no format we know. Only names
    are looked at here (plus the first bytes of extension-less files), so the driver does no reading.
    """
    files: list[InputFile] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()  # local files by their real path: a file named twice, or by a link, is read once
    for spec in inputs:
        spec = str(spec)
        skipped: list[str] = []
        got, errs = _expand_uri(spec) if storage.is_uri(spec) else _expand_local(spec, skipped)
        got = _without_notes_beside_data(spec, got)
        errors += errs
        if skipped and got:  # with nothing read, the no_match row says it
            log.info("%s: %s; name one on its own to read it by its first bytes", spec, _left_out(skipped),
                     extra={"console": True})  # fmt: skip
        for f in got:
            key = f.path if storage.is_uri(f.path) else os.path.realpath(f.path)
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, errors


def _left_out(skipped: list[str]) -> str:
    """Says which files of a folder or glob were left out: an in-progress ``.warc.gz.open``, an ARC
    file or a dated name was skipped with a line in the log only, and a folder of them "held no files"."""
    names = ", ".join(os.path.basename(p) for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    return f"left out {len(skipped)} file(s) of no data format by name ({names})"
