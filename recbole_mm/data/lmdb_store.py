"""Product images in one lmdb store.

Input: a folder of images named by ASIN: ``<ASIN>.<ext>``, ``<ASIN>_<n>.<ext>`` (several per
item) or ``<ASIN>/<any name>.<ext>``. Each file is decoded with Pillow first; an unreadable
or corrupt file is reported (log + the returned report) and skipped, never stored.

Store: key ``"<item token>_<k>"`` (``k`` = 0, 1, ... over an item's readable images, in
natural file-name order), value = the file's encoded bytes as they are. The store is built in a
temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from logging import getLogger
from typing import Dict, List, Tuple

import lmdb
from PIL import Image
from tqdm import tqdm

from recbole_mm.fileio import atomic_folder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
_NAME = re.compile(r"^(?P<asin>[^_./\\]+)(?:_(?P<n>\d+))?$")


def _natural(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def scan_image_folder(folder: str) -> Dict[str, List[str]]:
    """``asin -> [paths]`` (natural name order) for the image files of ``folder``."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"config key `images_dir`: image folder {folder} not found")
    found: Dict[str, List[Tuple[tuple, str]]] = {}
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if entry.startswith("."):
            continue
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                    found.setdefault(entry, []).append((tuple(_natural(name)), os.path.join(path, name)))
            continue
        stem, ext = os.path.splitext(entry)
        match = _NAME.match(stem)
        if ext.lower() in IMAGE_EXTENSIONS and match:
            order = (-1,) if match.group("n") is None else (int(match.group("n")),)
            found.setdefault(match.group("asin"), []).append((order + tuple(_natural(entry)), path))
    return {asin: [p for _, p in sorted(paths)] for asin, paths in found.items()}


def check_image_bytes(data: bytes) -> None:
    """Raise if Pillow cannot fully decode ``data``."""
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    with Image.open(io.BytesIO(data)) as img:
        img.load()


def build_image_lmdb(folder: str, item2index: Dict[str, str], lmdb_dir: str, show_progress: bool = True) -> dict:
    """Write the store for the items of ``item2index`` (ASIN -> item token); returns a report:
    counts, and the corrupt files with their error."""
    scanned = scan_image_folder(folder)
    jobs = [(item2index[asin], paths) for asin, paths in sorted(scanned.items()) if asin in item2index]
    total_bytes = sum(os.path.getsize(p) for _, paths in jobs for p in paths)
    corrupt: List[Dict[str, str]] = []
    stored = items = 0
    with atomic_folder(lmdb_dir) as tmp_dir:
        env = lmdb.open(tmp_dir, map_size=max(1 << 24, 2 * total_bytes + (1 << 20) * (1 + len(jobs) // 1000)),
                        subdir=True, lock=False)
        with env.begin(write=True) as txn:
            for token, paths in tqdm(jobs, desc="images -> lmdb", disable=not show_progress, ncols=100):
                k = 0
                for path in paths:
                    try:
                        with open(path, "rb") as f:
                            data = f.read()
                        check_image_bytes(data)
                    except Exception as err:  # noqa: BLE001 - any decoder failure means: skip the file
                        message = re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(err).__name__}: {err}")  # reproducible
                        corrupt.append({"file": os.path.relpath(path, folder), "error": message})
                        getLogger().warning(f"image {path} is unreadable or corrupt, skipped ({message})")
                        continue
                    txn.put(f"{token}_{k}".encode("utf-8"), data)
                    k += 1
                stored += k
                items += k > 0
        env.close()
    unmatched = sorted(asin for asin in scanned if asin not in item2index)
    return {
        "images_stored": stored,
        "items_with_images": int(items),
        "items_total": len(item2index),
        "corrupt_files": corrupt,
        "files_for_unknown_items": len(unmatched),
    }


REBUILD_HINT = ("rebuild it with --force (python -m recbole_mm.preprocess.pipeline --force, or "
                "python -m recbole_mm.preprocess.own_data --force)")


def _damaged(lmdb_dir: str, what: str) -> ValueError:
    return ValueError(f"image store {lmdb_dir} is {what}; {REBUILD_HINT}")


def open_store(lmdb_dir: str) -> lmdb.Environment:
    """Open a store read-only after checking it: ``data.mdb`` must be as long as its header says
    (reading a page past the end of a truncated copy kills the process with a bus error)."""
    data_file = os.path.join(lmdb_dir, "data.mdb")
    if not os.path.isfile(data_file):
        raise FileNotFoundError(f"image store {lmdb_dir} not found (expected an lmdb folder with data.mdb)")
    size = os.path.getsize(data_file)
    if size == 0:
        raise _damaged(lmdb_dir, "empty (data.mdb has 0 bytes)")
    try:  # lmdb reads the two header pages with read(), not through the memory map
        env = lmdb.open(lmdb_dir, readonly=True, lock=False, subdir=True)
    except lmdb.Error as err:
        raise _damaged(lmdb_dir, f"corrupt (data.mdb, {size} bytes: {err})") from None
    expected = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if size < expected:
        env.close()
        raise _damaged(lmdb_dir, f"truncated (data.mdb has {size} bytes, its header says {expected})")
    return env


class ImageStore:
    """Read access to a store built by :func:`build_image_lmdb` (use as a context manager); a
    truncated or corrupt store raises ``ValueError`` naming it (:func:`open_store`)."""

    def __init__(self, lmdb_dir: str):
        self.lmdb_dir = lmdb_dir
        self.env = open_store(lmdb_dir)

    def counts(self) -> List[Tuple[str, int]]:
        """``(item token, number of images)`` in token order (numeric tokens numerically)."""
        counts: Dict[str, int] = {}
        try:
            with self.env.begin() as txn:
                for key in txn.cursor().iternext(keys=True, values=False):
                    token = bytes(key).decode("utf-8").rpartition("_")[0]
                    counts[token] = counts.get(token, 0) + 1
        except lmdb.Error as err:
            raise _damaged(self.lmdb_dir, f"corrupt ({err})") from None
        return sorted(counts.items(), key=lambda kv: (0, int(kv[0]), "") if kv[0].isdigit() else (1, 0, kv[0]))

    def get(self, token: str, k: int) -> bytes:
        try:
            with self.env.begin() as txn:
                value = txn.get(f"{token}_{k}".encode("utf-8"))
                value = None if value is None else bytes(value)
        except lmdb.Error as err:
            raise _damaged(self.lmdb_dir, f"corrupt ({err})") from None
        if value is None:
            raise KeyError(f"image {token}_{k} is not in the store")
        return value

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> "ImageStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lmdb_content_sha256(lmdb_dir: str) -> str:
    """Hash of the store's (key, value) pairs in key order: equal stores hash equal even if the
    lmdb page layout differs."""
    digest = hashlib.sha256()
    env = open_store(lmdb_dir)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                digest.update(len(key).to_bytes(4, "big") + key)
                digest.update(hashlib.sha256(value).digest())
    except lmdb.Error as err:
        raise _damaged(lmdb_dir, f"corrupt ({err})") from None
    finally:
        env.close()
    return digest.hexdigest()
