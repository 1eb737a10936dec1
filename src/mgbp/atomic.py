"""Atomic output files: everything mgbp writes (images, weights, checkpoints, tables, figures) appears whole
or not at all.

A file is written under a temporary name in the destination folder, given the permissions a plain `open()`
would have given it (the temporary file is private), and renamed over the destination with `os.replace`, which
is atomic on POSIX and Windows. A failure or an interruption removes the temporary file and leaves any
previous file untouched.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mgbp.errors import ConfigError


@functools.cache
def default_file_mode() -> int:
    """0o666 less the umask. Read once: reading the umask means setting it for a moment."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, for writers that pick a format from it); when the
    block succeeds, rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, default_file_mode())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def check_writable(path: str | os.PathLike, what: str = "") -> None:
    """ConfigError unless a file can be written at `path`: its folder exists or can be made and takes a file
    (probed with a hidden temporary one, removed at once). For outputs written at the end of long work, so that
    an unwritable one fails before the work, not after."""
    path = Path(path)
    label = what or str(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {label}: {path} is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".mgbp-write-check-", dir=path.parent)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise ConfigError(f"cannot write {label}: {exc.strerror or exc} ({exc.filename or path.parent})") from None


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)
