"""Output: atomic files and folders (written beside the target, renamed when complete), locks
that one process holds at a time, and whether progress bars reach a person."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

try:
    import fcntl
except ImportError:  # not POSIX (Windows): locks are not taken
    fcntl = None


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _size_text(n_bytes: int) -> str:
    """``n_bytes`` for a person: bytes, KiB, MiB, GiB or TiB."""
    size = float(n_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{n_bytes} bytes" if n_bytes < 1024 else f"{size:.1f} {unit}"
    return f"{n_bytes} bytes"


class DiskFullError(OSError):
    """The disk filled while a file was written (the message names the file and the free space)."""


def disk_full_error(path: str, err: OSError) -> DiskFullError:
    """One line for a full disk while writing ``path``: the path and the space left there."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        free = _size_text(shutil.disk_usage(directory).free) + " free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(err.errno, f"disk full while writing {path} ({free} in {directory}): the partial file "
                                    f"was removed and {path} left as it was; free space or write elsewhere")


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


@contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    No half-written file is ever left at ``path``; a full disk raises :func:`disk_full_error`.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        if err.errno in DISK_FULL_ERRNOS and not isinstance(err, DiskFullError):
            raise disk_full_error(path, err) from err
        raise
    finally:
        _remove(tmp)


@contextmanager
def atomic_folder(path: str, replace: bool = True) -> Iterator[str]:
    """Yield a temporary folder beside ``path``; on success it replaces the folder ``path`` as a
    whole, on error it is removed. No half-written folder is ever left at ``path``.

    ``replace=False``: a folder another process published at ``path`` meanwhile is kept (and this
    one dropped), so a reader of that folder never sees it removed or replaced."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", suffix="-" + os.path.basename(os.path.normpath(path)), dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        if replace and os.path.isdir(path):
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)  # a folder over a non-empty folder fails: nothing is replaced
        except OSError:
            if replace or not os.path.isdir(path):
                raise
    except OSError as err:
        _remove(tmp)
        if err.errno in DISK_FULL_ERRNOS and not isinstance(err, DiskFullError):
            raise disk_full_error(path, err) from err
        raise
    finally:
        _remove(tmp)


def try_lock(path: str) -> Optional[int]:
    """Take the exclusive lock file ``path`` (created if missing): its descriptor, or None when another
    process holds it. The operating system drops the lock of a process that dies (a killed run)."""
    if fcntl is None:
        return -1
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:  # not removed by the last holder meanwhile
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def release_lock(path: str, fd: int) -> None:
    """Give back a lock of :func:`try_lock` (its file is removed)."""
    if fd < 0:
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    os.close(fd)


def write_json_atomic(path: str, payload: dict) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, default=str)


def write_text_atomic(path: str, text: str) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_csv_atomic(path: str, rows: List[Dict]) -> None:
    """Rows of equal keys as CSV (header from the first row)."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)


def progress_on_terminal() -> bool:
    """The default of every ``show_progress``: tqdm writes to stderr, so bars are on when stderr is
    a terminal and off in CI, tests and redirected logs."""
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def write_figure_atomic(fig, path: str, dpi: int = 120) -> str:
    """Save a matplotlib figure as PNG to ``path`` atomically (a reader never sees half a file)."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
