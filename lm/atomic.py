"""Atomic writes on local disk: the one helper every file and folder swap in raychat goes through.

Why here, in ``lm/``: the model's own code (tokenizers, model exports, search indexes) writes files
too and must not depend on ``pipelines/``; ``pipelines/storage.py`` uses these functions for local
paths and adds object stores on top (a PUT, and an object-by-object folder move).

* ``atomic_path(path)`` yields a temporary name beside ``path`` and renames it to ``path`` when the
  block ends without an error (``os.replace``: a reader sees the old file or the new one, never half
  of one); on an error the temporary file is removed. For writers that stream (a WARC, a JSONL).
* ``write_bytes`` / ``write_text`` / ``write_json`` are that, for data in memory.
* ``staged_dir(target)`` yields a fresh folder beside ``target`` to build a new version in; when the
  block ends without an error it replaces ``target`` (``replace_dir``), on an error it is deleted.
  With ``keep_old`` (e.g. ``same_files``) a new version found identical leaves ``target`` untouched.
* ``replace_dir(new, target)`` puts a finished folder in place: the old one is renamed aside, the new
  one renamed in, the old one deleted. Between the two renames ``target`` is missing for an instant;
  a process killed right there leaves the old folder aside, and ``recover_dir(target)`` (which
  ``replace_dir`` itself calls first) renames it back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_ASIDE = ".old-"  # ".<name>.old-<unique>": a folder replace_dir moved out of the way


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


class PendingFile:
    """A temporary name (``tmp``) beside ``path`` for a writer that cannot use a ``with`` block:
    ``commit()`` renames it to ``path``, ``discard()`` deletes it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _tmp_name(self.path)

    def commit(self) -> Path:
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write; on a clean exit it becomes ``path`` in one rename (see the module)."""
    pending = PendingFile(path)
    try:
        yield pending.tmp
        pending.commit()
    except BaseException:
        pending.discard()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_bytes(data: Any, **dumps: Any) -> bytes:
    """How raychat writes JSON: indented, one trailing newline; ``dumps`` overrides ``json.dumps``'s
    arguments (``indent``, ``sort_keys``, ``ensure_ascii``...)."""
    options: dict[str, Any] = {"indent": 2, "default": str} | dumps
    return (json.dumps(data, **options) + "\n").encode("utf-8")


def write_json(path: str | os.PathLike[str], data: Any, **dumps: Any) -> Path:
    return write_bytes(path, json_bytes(data, **dumps))


def fresh_dir(path: str | os.PathLike[str]) -> Path:
    """An empty folder at ``path`` (whatever was there is deleted): where a new output is built."""
    p = Path(path)
    shutil.rmtree(p, ignore_errors=True)
    p.mkdir(parents=True)
    return p


def _asides(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}{_ASIDE}*"), key=lambda p: p.stat().st_mtime)


def recover_dir(target: str | os.PathLike[str]) -> bool:
    """Put back a folder that a killed ``replace_dir`` left aside (only when ``target`` is missing)."""
    t = Path(target)
    asides = _asides(t) if t.parent.is_dir() else []
    if not asides:
        return False
    if t.exists():
        for old in asides:  # the swap finished; only the deletion of the old folder was cut short
            shutil.rmtree(old, ignore_errors=True)
        return False
    os.replace(asides[-1], t)
    for old in asides[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    return True


def replace_dir(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Make the finished folder ``new`` the folder ``target`` (see the module docstring)."""
    new_path, t = Path(new), Path(target)
    recover_dir(t)
    t.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if t.exists():
        old = t.with_name(f".{t.name}{_ASIDE}{os.getpid()}-{time.monotonic_ns()}")
        os.replace(t, old)
    os.replace(new_path, t)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return t


@contextlib.contextmanager
def staged_dir(
    target: str | os.PathLike[str], keep_old: Callable[[Path, Path], bool] | None = None
) -> Iterator[Path]:
    """A fresh folder beside ``target``, put in its place when the block succeeds (see the module).

    ``keep_old(new, target)``, asked when the block succeeds: True leaves ``target`` as it is (its files
    keep their times) and deletes the new folder; ``same_files`` keeps it when nothing changed. What a
    killed swap left aside is put back first, so the block and ``keep_old`` see the real ``target``."""
    t = Path(target)
    t.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(t)
    new = fresh_dir(_tmp_name(t))
    try:
        yield new
        if keep_old is not None and keep_old(new, t):
            shutil.rmtree(new, ignore_errors=True)
        else:
            replace_dir(new, t)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def same_files(a: Path, b: Path, leaving_out: str | None = None) -> bool:
    """Whether folders ``a`` and ``b`` hold the same entries with the same bytes (nested too), apart
    from a top-level file named ``leaving_out``. A link or anything but a file or folder differs."""
    import filecmp

    def entries(root: Path) -> list[str]:
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if str(p.relative_to(root)) != leaving_out
        )

    if not (a.is_dir() and b.is_dir()) or (names := entries(a)) != entries(b):
        return False
    for name in names:
        x, y = a / name, b / name
        if x.is_symlink() or y.is_symlink():
            return False
        if x.is_dir() and y.is_dir():
            continue
        if not (x.is_file() and y.is_file() and filecmp.cmp(x, y, shallow=False)):
            return False
    return True
