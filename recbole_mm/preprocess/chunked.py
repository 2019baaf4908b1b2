"""Resumable feature extraction: items are encoded in chunks, each chunk saved (atomically)
to a work folder as soon as it is done; a rerun with the same fingerprint reuses the saved
chunks and encodes only the rest. A different fingerprint (other inputs or settings) clears
the folder first."""

from __future__ import annotations

import json
import os
import shutil
from logging import getLogger
from typing import Callable, List, Optional

import numpy as np
from tqdm import tqdm

from recbole_mm.fileio import atomic_output, write_json_atomic

EncodeFn = Callable[[int, int], np.ndarray]


def open_work_dir(work_dir: str, n_items: int, chunk_size: int, fingerprint: str, desc: str) -> int:
    """Make ``work_dir`` ready for chunks of ``chunk_size`` of ``n_items`` rows: kept when it holds
    the chunks of the same fingerprint and layout, emptied otherwise; returns the chunk count."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    state_path = os.path.join(work_dir, "state.json")
    state = {"fingerprint": fingerprint, "n_items": n_items, "chunk_size": chunk_size}
    if os.path.isdir(work_dir):
        try:
            with open(state_path, "r", encoding="utf-8") as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = None
        if previous != state:
            getLogger().info(f"{desc}: settings or inputs changed, discarding partial results in {work_dir}")
            shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    write_json_atomic(state_path, state)
    return (n_items + chunk_size - 1) // chunk_size


def extract_in_chunks(
    n_items: int,
    encode: EncodeFn,
    work_dir: str,
    chunk_size: int,
    fingerprint: str,
    desc: str = "features",
    after_chunk: Optional[Callable[[int], None]] = None,
    show_progress: bool = True,
) -> np.ndarray:
    """``encode(start, end)`` -> rows ``start:end`` for every chunk; returns all rows, in order.

    ``after_chunk(index)`` is called after each newly encoded chunk is saved (a hook: tests
    interrupt the extraction by raising from it). The work folder is left in place; the caller
    removes it (:func:`clear_work_dir`) once the final file is written.
    """
    n_chunks = open_work_dir(work_dir, n_items, chunk_size, fingerprint, desc)
    done = [i for i in range(n_chunks) if os.path.isfile(_chunk_path(work_dir, i))]
    if done:
        getLogger().info(f"{desc}: resuming, {len(done)} of {n_chunks} chunks already in {work_dir}")
    parts: List[np.ndarray] = []
    with tqdm(total=n_items, desc=desc, disable=not show_progress, ncols=100) as bar:
        for i in range(n_chunks):
            start, end = i * chunk_size, min(n_items, (i + 1) * chunk_size)
            path = _chunk_path(work_dir, i)
            if os.path.isfile(path):
                rows = np.load(path, allow_pickle=False)
            else:
                rows = np.asarray(encode(start, end), dtype=np.float32)
                if rows.ndim != 2 or rows.shape[0] != end - start:
                    raise ValueError(f"{desc}: chunk {i} has shape {rows.shape}, expected ({end - start}, d)")
                with atomic_output(path) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, rows)
                if after_chunk is not None:
                    after_chunk(i)
            parts.append(rows)
            bar.update(end - start)
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def clear_work_dir(work_dir: str) -> None:
    """Remove the work folder, and its ``work`` / ``.preprocess`` parents when they are left empty."""
    if os.path.isdir(work_dir):
        shutil.rmtree(work_dir)
    parent = os.path.dirname(os.path.abspath(work_dir))
    while os.path.basename(parent) in ("work", ".preprocess") and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)
        parent = os.path.dirname(parent)


def _chunk_path(work_dir: str, index: int) -> str:
    return os.path.join(work_dir, f"chunk_{index:06d}.npy")
