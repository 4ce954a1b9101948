"""Run-directory I/O that works for local paths and pyarrow filesystem URIs (s3://, gs://, ...).

Stages write through these helpers so the same job runs on a laptop and on a cluster whose run
directory lives in object storage.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_uri(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def fs_and_path(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = str(path)
    if is_uri(text):
        return pafs.FileSystem.from_uri(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return pafs.LocalFileSystem(), os.path.abspath(text)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def exists(path: str) -> bool:
    fs, p = fs_and_path(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def makedirs(path: str) -> None:
    fs, p = fs_and_path(path)
    fs.create_dir(p, recursive=True)


def remove(path: str) -> None:
    fs, p = fs_and_path(path)
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif info.type == pafs.FileType.File:
        fs.delete_file(p)


def write_bytes_atomic(path: str, data: bytes) -> None:
    fs, p = fs_and_path(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    tmp = f"{p}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, p)


def write_json(path: str, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: str, default: Any = None) -> Any:
    fs, p = fs_and_path(path)
    try:
        with fs.open_input_stream(p) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default


def write_parquet(table: pa.Table, path: str) -> None:
    """Write one parquet file atomically (temp name, then rename)."""
    fs, p = fs_and_path(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    tmp = f"{p}.{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, tmp, filesystem=fs, compression="zstd")
    fs.move(tmp, p)


def list_files(path: str, suffix: str = "") -> list[str]:
    """All files under a directory (recursive), as paths/URIs of the same kind as ``path``."""
    fs, p = fs_and_path(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    prefix = path.split("://", 1)[0] + "://" if is_uri(path) else ""
    return sorted(
        prefix + i.path
        for i in infos
        if i.type == pafs.FileType.File and i.path.endswith(suffix) and not i.base_name.startswith(".")
    )


def replace_dir(src: str, dst: str) -> None:
    """Make ``src`` the new ``dst`` (the old one is removed first; a rename on local disk)."""
    fs, s = fs_and_path(src)
    _, d = fs_and_path(dst)
    if fs.get_file_info(d).type != pafs.FileType.NotFound:
        fs.delete_dir(d)
    fs.move(s, d)
