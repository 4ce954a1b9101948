"""Run-directory I/O that works for local paths and pyarrow filesystem URIs (s3://, gs://, ...).

Stages write through these helpers so the same job runs on a laptop and on a cluster whose run
directory lives in object storage. A URI may carry pyarrow's options as a query string
(``s3://bucket/run?endpoint_override=http://127.0.0.1:9000&scheme=http&region=us-east-1``): ``join``
and ``list_files`` keep it on every path they make, so workers open the same store.

What "atomic" means here:

* a file: on local disk it is written under a temporary name and renamed (``lm/atomic.py``, the one
  local helper, which ``lm/`` uses itself since it cannot import ``pipelines/``); on an object store
  (S3, GCS, Azure) one PUT is already all-or-nothing (a multipart upload appears only when it is
  completed), so it is written in place, which also saves a server-side copy; any other pyarrow
  filesystem gets a temporary name and a move;
* a folder (``replace_dir``): on local disk, ``lm.atomic.replace_dir`` (renames, with recovery of a
  swap cut short). Object stores have no folder rename, so the
  new folder's objects are moved in one by one (server-side copies) after the old ones are deleted.
  That swap is not atomic for a reader who looks in the middle of it; what makes it safe is that a
  stage's done marker is cleared before the stage starts and written only after its swap, so an
  output is complete whenever its marker exists, and a crash mid-swap leaves no marker and the
  stage runs again.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lm import atomic

# filesystems where one write is all-or-nothing and a rename is a copy: write in place
OBJECT_STORES = {"s3", "gcs", "abfs"}


def is_uri(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def local_path(path: str | os.PathLike[str]) -> str:
    """An absolute local path (``~`` expanded; a ``file://`` URI decoded)."""
    text = str(path)
    if text.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(text).path)
    return os.path.abspath(os.path.expanduser(text))


def fs_and_path(path: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it. URIs go to pyarrow's own filesystems (local, S3,
    GCS, HDFS, Azure), or to fsspec's (wrapped for pyarrow) for the schemes pyarrow does not know."""
    text = str(path)
    if not is_uri(text):
        return pafs.LocalFileSystem(), local_path(text)
    try:
        return pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        import fsspec

        fs, inner = fsspec.core.url_to_fs(text)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), inner


def open_input(path: str) -> BinaryIO:
    """A file to read as a stream (local: Python's own file; a URI: its filesystem's stream)."""
    if not is_uri(path):
        return open(local_path(path), "rb")  # noqa: SIM115 - the caller closes it
    fs, inner = fs_and_path(path)
    return fs.open_input_stream(inner)


def open_input_file(path: str) -> Any:
    """A file to read with seeks (parquet footers)."""
    if not is_uri(path):
        return open(local_path(path), "rb")  # noqa: SIM115 - the caller closes it
    fs, inner = fs_and_path(path)
    return fs.open_input_file(inner)


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


class PendingOutput:
    """Where to write ``path`` so that it appears whole: ``fs`` and ``target`` to write to, then
    ``commit()`` (or ``discard()`` on an error). For writers that stream, e.g. a ``pq.ParquetWriter``
    fed chunk by chunk (``atomic_output`` is the same as a ``with`` block).

    On local disk, ``lm.atomic``'s temporary name and rename. On an object store a one-shot write goes
    to ``path`` itself (an upload appears only when it is complete); a streamed one (``stream=True``)
    goes to a temporary key and is copied to ``path`` on commit, since closing a stream after an error
    would complete its upload with half the data under the real name. Other filesystems: a
    temporary name and a move.
    """

    def __init__(self, path: str, stream: bool = False) -> None:
        self.fs, self.path = fs_and_path(path)
        self._local = atomic.PendingFile(self.path) if isinstance(self.fs, pafs.LocalFileSystem) else None
        if self._local is not None:
            self.target = str(self._local.tmp)
        elif is_object_store(self.fs) and not stream:
            self.target = self.path
        else:
            if not is_object_store(self.fs):
                self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
            self.target = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"

    def commit(self) -> None:
        if self._local is not None:
            self._local.commit()
        elif self.target != self.path:
            self.fs.move(self.target, self.path)

    def discard(self) -> None:
        if self._local is not None:
            self._local.discard()
        elif self.target != self.path:
            with contextlib.suppress(OSError):
                self.fs.delete_file(self.target)


@contextlib.contextmanager
def atomic_output(path: str, stream: bool = False) -> Iterator[tuple[pafs.FileSystem, str]]:
    """``(filesystem, path to write)``; what was written appears at ``path`` whole when the block ends
    without an error, and is dropped on one (see ``PendingOutput``)."""
    pending = PendingOutput(path, stream)
    try:
        yield pending.fs, pending.target
        pending.commit()
    except BaseException:
        pending.discard()
        raise


def write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_output(path) as (fs, target), fs.open_output_stream(target) as f:
        f.write(data)


def write_json(path: str, data: Any) -> None:
    """The run directory's JSON (stats, markers, summaries): sorted keys, so diffs between runs read well."""
    write_bytes_atomic(path, atomic.json_bytes(data, sort_keys=True))


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """The JSON value in ``path`` (local or URI), or ``default`` when there is no such file."""
    fs, p = fs_and_path(path)
    try:
        with fs.open_input_stream(p) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default


def write_parquet(table: pa.Table, path: str) -> None:
    """Write one parquet file atomically (see the module docstring)."""
    with atomic_output(path) as (fs, target):
        pq.write_table(table, target, filesystem=fs, compression="zstd")


def list_files(path: str, suffix: str = "", hidden: bool = False) -> list[str]:
    """All files under a directory (recursive), as paths/URIs of the same kind as ``path``; names
    starting with "." (temporary files being written) only with ``hidden``."""
    fs, p = fs_and_path(path)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    root = p.rstrip("/")
    return sorted(
        join(path, i.path[len(root) :]) if is_uri(path) else i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(suffix)
        and (hidden or not i.base_name.startswith("."))
    )


def replace_dir(src: str, dst: str) -> None:
    """Make ``src`` the new ``dst``: a rename on local disk, object by object on an object store.

    See the module docstring for what a reader can see while an object store's swap runs.
    """
    fs, s = fs_and_path(src)
    _, d = fs_and_path(dst)
    if isinstance(fs, pafs.LocalFileSystem):
        atomic.replace_dir(s, d)
        return
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


def nearest_existing(fs: pafs.FileSystem, path: str) -> str:
    """``path`` if it exists, else its nearest ancestor that does (a local filesystem's path)."""
    while fs.get_file_info(path).type == pafs.FileType.NotFound and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def check_writable(path: str) -> None:
    """Create ``path`` (a folder) and write and delete a probe file in it, or raise ``OSError`` saying why.

    Why a real write: permissions, read-only mounts, quotas and an object store's credentials are
    only really known by trying, and a stage should learn it before starting Ray and reading input.
    """
    fs, p = fs_and_path(path)
    if not is_object_store(fs):
        ancestor = nearest_existing(fs, p)
        if fs.get_file_info(ancestor).type != pafs.FileType.Directory:
            raise NotADirectoryError(f"{ancestor} is a file, so the folder {p} cannot be made under it")
    fs.create_dir(p, recursive=True)
    probe = join(path, f".raychat-write-probe-{uuid.uuid4().hex[:8]}")
    write_bytes_atomic(probe, b"probe")
    remove(probe)
