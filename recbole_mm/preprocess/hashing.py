"""SHA-256 fingerprints of files, folders, lmdb stores and settings (for the manifest and for
deciding whether a step's outputs are up to date)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable

from recbole_mm.data.lmdb_store import lmdb_content_sha256

_BLOCK = 1 << 20


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(path: str, skip_hidden: bool = True) -> str:
    """Hash of every file's relative path and content, in sorted path order."""
    digest = hashlib.sha256()
    for rel in sorted(_walk(path, skip_hidden)):
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(file_sha256(os.path.join(path, rel)).encode("ascii"))
    return digest.hexdigest()


def _walk(root: str, skip_hidden: bool) -> Iterable[str]:
    for directory, dirs, files in os.walk(root):
        if skip_hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if skip_hidden and name.startswith("."):
                continue
            yield os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")


def path_sha256(path: str) -> str:
    """A file's hash, or a folder's (:func:`folder_sha256`); an lmdb folder by its content."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "data.mdb")):
            return lmdb_content_sha256(path)
        return folder_sha256(path)
    return file_sha256(path)


def settings_sha256(payload) -> str:
    """Hash of a JSON-able value with sorted keys."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
