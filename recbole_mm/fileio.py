"""Output: atomic files (write to a temporary file beside the target, rename when complete), and
whether progress bars reach a person."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, List


@contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    No half-written file is ever left at ``path``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def atomic_folder(path: str) -> Iterator[str]:
    """Yield a temporary folder beside ``path``; on success it replaces the folder ``path`` as a
    whole, on error it is removed. No half-written folder is ever left at ``path``."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", suffix="-" + os.path.basename(os.path.normpath(path)), dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


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
