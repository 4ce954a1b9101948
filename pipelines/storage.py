"""Run-directory I/O that works for local paths and pyarrow filesystem URIs (s3://, gs://, ...).

Stages write through these helpers so the same job runs on a laptop and on a cluster whose run
directory lives in object storage. A URI may carry pyarrow's options as a query string
(``s3://bucket/run?endpoint_override=http://127.0.0.1:9000&scheme=http&region=us-east-1``): ``join``
and ``list_files`` keep it on every path they make, so workers open the same store.

What "atomic" means here:

* a file: on local disk it is written under a temporary name and renamed; on an object store
  (S3, GCS, Azure) one PUT is already all-or-nothing (a multipart upload appears only when it is
  completed), so it is written in place, which also saves a server-side copy;
* a folder (``replace_dir``): on local disk, a rename. Object stores have no folder rename, so the
  new folder's objects are moved in one by one (server-side copies) after the old ones are deleted.
  That swap is not atomic for a reader who looks in the middle of it; what makes it safe is that a
  stage's done marker is cleared before the stage starts and written only after its swap, so an
  output is complete whenever its marker exists, and a crash mid-swap leaves no marker and the
  stage runs again.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# filesystems where one write is all-or-nothing and a rename is a copy: write in place
OBJECT_STORES = {"s3", "gcs", "abfs"}


def is_uri(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def fs_and_path(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = str(path)
    if is_uri(text):
        return pafs.FileSystem.from_uri(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return pafs.LocalFileSystem(), os.path.abspath(text)


def is_object_store(fs: pafs.FileSystem) -> bool:
    return fs.type_name in OBJECT_STORES


def join(base: str, *parts: str) -> str:
    """``base/part/...``; on a URI the parts are percent-encoded and go before the query string."""
    base = str(base)
    if not is_uri(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    root, sep, query = base.partition("?")
    quoted = [urllib.parse.quote(p.strip("/"), safe="/=") for p in parts]
    return "/".join([root.rstrip("/"), *quoted]) + sep + query


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


def _atomic_target(fs: pafs.FileSystem, p: str) -> str:
    """Where to write ``p`` so that it appears whole: itself on an object store, a temp name elsewhere."""
    if not is_object_store(fs):
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        return f"{p}.{uuid.uuid4().hex[:8]}.tmp"
    return p


def _commit(fs: pafs.FileSystem, written: str, p: str) -> None:
    if written != p:
        fs.move(written, p)


def write_bytes_atomic(path: str, data: bytes) -> None:
    fs, p = fs_and_path(path)
    target = _atomic_target(fs, p)
    with fs.open_output_stream(target) as f:
        f.write(data)
    _commit(fs, target, p)


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
    """Write one parquet file atomically (see the module docstring)."""
    fs, p = fs_and_path(path)
    target = _atomic_target(fs, p)
    pq.write_table(table, target, filesystem=fs, compression="zstd")
    _commit(fs, target, p)


def list_files(path: str, suffix: str = "") -> list[str]:
    """All files under a directory (recursive), as paths/URIs of the same kind as ``path``."""
    fs, p = fs_and_path(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    root = p.rstrip("/")
    return sorted(
        join(path, i.path[len(root) :]) if is_uri(path) else i.path
        for i in infos
        if i.type == pafs.FileType.File and i.path.endswith(suffix) and not i.base_name.startswith(".")
    )


def replace_dir(src: str, dst: str) -> None:
    """Make ``src`` the new ``dst``: a rename on local disk, object by object on an object store.

    See the module docstring for what a reader can see while an object store's swap runs.
    """
    fs, s = fs_and_path(src)
    _, d = fs_and_path(dst)
    if fs.get_file_info(d).type != pafs.FileType.NotFound:
        fs.delete_dir(d)
    if not is_object_store(fs):
        fs.move(s, d)
        return
    s = s.rstrip("/")
    files = [i.path for i in fs.get_file_info(pafs.FileSelector(s, recursive=True)) if i.is_file]
    with ThreadPoolExecutor(max_workers=16) as pool:  # server-side copies: no data passes through here
        list(pool.map(lambda f: fs.move(f, d.rstrip("/") + f[len(s) :]), files))
    fs.delete_dir(s)
    fs.create_dir(d, recursive=True)  # an output with no files is still there, empty


def check_writable(path: str) -> None:
    """Create ``path`` (a folder) and write and delete a probe file in it, or raise ``OSError`` saying why.

    Why a real write: permissions, read-only mounts, quotas and an object store's credentials are
    only really known by trying, and a stage should learn it before starting Ray and reading input.
    """
    fs, p = fs_and_path(path)
    if not is_object_store(fs):
        ancestor = p
        while fs.get_file_info(ancestor).type == pafs.FileType.NotFound and ancestor != os.path.dirname(
            ancestor
        ):
            ancestor = os.path.dirname(ancestor)
        if fs.get_file_info(ancestor).type != pafs.FileType.Directory:
            raise NotADirectoryError(f"{ancestor} is a file, so the folder {p} cannot be made under it")
    fs.create_dir(p, recursive=True)
    probe = join(path, f".raychat-write-probe-{uuid.uuid4().hex[:8]}")
    write_bytes_atomic(probe, b"probe")
    remove(probe)
