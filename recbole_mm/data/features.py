"""Item feature files: one documented format, memory-mapped reading, alignment to RecBole ids.

Format (see docs/data.md)::

    <stem>.npy   float32 matrix, one row per item: shape (N, d); a scalar feature such as
                 price may be stored as shape (N,) or (N, 1)
    <stem>.keys  UTF-8 text, N lines: the item token of each row (the token used in the
                 data set's .inter files), in the same order as the rows

Rows may come in any order and items may be absent (an absent item has that modality
missing). Features are aligned to RecBole's internal item ids through
``dataset.field2id_token[item_field]``, never by row order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from recbole_mm.data.atomic_files import DataFileError
from recbole_mm.fileio import atomic_output

KNOWN_MODALITIES = ("text", "image", "price")

# where the preprocessing commands write a data set <D> by default: <PREPROCESS_OUTPUT_DIR>/<D>/
PREPROCESS_OUTPUT_DIR = "dataset"


class FeatureFileError(DataFileError):
    """A feature file is missing, malformed, or does not fit the data set."""


@dataclass
class ItemFeature:
    """One modality's features aligned to internal item ids.

    ``matrix[i]`` is the feature of internal item id ``i`` (row 0 is the padding item and
    is zero); ``mask[i]`` is True when item ``i`` has this modality.
    """

    modality: str
    matrix: np.ndarray
    mask: np.ndarray
    source: str

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def coverage(self) -> float:
        """Share of real items (padding excluded) that have this modality."""
        return float(self.mask[1:].mean()) if len(self.mask) > 1 else 0.0


def feature_stem(feature_dir: str, dataset_name: str, modality: str, file_name: Optional[str] = None) -> str:
    """Path without suffix of a modality's feature file: ``<feature_dir>/<dataset>.<modality>``."""
    return os.path.join(feature_dir, file_name or f"{dataset_name}.{modality}")


def feature_folders(feature_dir: Optional[str], dataset_path: str, dataset_name: str) -> List[str]:
    """Where a data set's feature files (and a missing ``<D>.item``) are looked for, in order:
    ``feature_dir`` when set, the data set folder, then ``dataset/<D>`` (where the preprocessing
    commands write by default), each folder once."""
    folders, seen = [], set()
    for folder in ([feature_dir] if feature_dir else []) + [dataset_path,
                                                             os.path.join(PREPROCESS_OUTPUT_DIR, dataset_name)]:
        key = os.path.abspath(folder)
        if key not in seen:
            seen.add(key)
            folders.append(folder)
    return folders


def locate_feature_stem(folders: Sequence[str], dataset_name: str, modality: str,
                        file_name: Optional[str] = None) -> Optional[str]:
    """The stem of the first folder that holds the modality's ``.npy`` and ``.keys``, or None."""
    for folder in folders:
        stem = feature_stem(folder, dataset_name, modality, file_name)
        if os.path.isfile(stem + ".npy") and os.path.isfile(stem + ".keys"):
            return stem
    return None


def write_feature_file(stem: str, keys: Sequence[str], matrix: np.ndarray) -> None:
    """Write ``<stem>.npy`` and ``<stem>.keys`` atomically (temp file, then rename)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    keys = [str(k) for k in keys]
    if matrix.ndim != 2 or matrix.shape[0] != len(keys):
        raise FeatureFileError(
            f"{stem}: expected a (N, d) matrix with N = {len(keys)} keys, got shape {matrix.shape}"
        )
    for key in keys:
        if not key or "\n" in key or "\t" in key:
            raise FeatureFileError(f"{stem}: item key {key!r} is empty or holds a tab/newline")
    with atomic_output(stem + ".npy") as tmp_npy:  # nested: a full disk names the file being written
        with open(tmp_npy, "wb") as f:
            np.save(f, matrix)
        with atomic_output(stem + ".keys") as tmp_keys:
            with open(tmp_keys, "w", encoding="utf-8") as f:
                f.write("\n".join(keys) + ("\n" if keys else ""))


def read_feature_file(stem: str, mmap: bool = True) -> Tuple[List[str], np.ndarray]:
    """Read and validate one feature file pair; the matrix is memory-mapped when ``mmap``."""
    npy_path, keys_path = stem + ".npy", stem + ".keys"
    for path in (npy_path, keys_path):
        if not os.path.isfile(path):
            raise FeatureFileError(
                f"feature file {path} not found (a feature file is the pair <stem>.npy + <stem>.keys; "
                f"build it with `python -m recbole_mm.preprocess.benchmark` or see docs/data.md)"
            )
    try:
        matrix = np.load(npy_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise FeatureFileError(f"{npy_path}: not a readable .npy array ({err})") from err
    if matrix.ndim == 1:
        matrix = matrix.reshape(-1, 1)
    if matrix.ndim != 2:
        raise FeatureFileError(f"{npy_path}: expected a 2-d (items x dim) array, got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise FeatureFileError(f"{npy_path}: expected a float array, got dtype {matrix.dtype}")
    with open(keys_path, "r", encoding="utf-8") as f:
        keys = [line.rstrip("\n") for line in f]
    if keys and keys[-1] == "":
        keys.pop()
    if len(keys) != matrix.shape[0]:
        raise FeatureFileError(
            f"{stem}: {keys_path} lists {len(keys)} item ids but {npy_path} has {matrix.shape[0]} rows; "
            f"they must match one to one"
        )
    seen = set()
    for line_no, key in enumerate(keys, start=1):
        if key in seen:
            raise FeatureFileError(f"{keys_path}, line {line_no}: item id {key!r} appears twice")
        seen.add(key)
    return keys, matrix


def _check_finite(matrix: np.ndarray, keys: List[str], source: str, chunk: int = 65536) -> None:
    for start in range(0, matrix.shape[0], chunk):
        block = np.asarray(matrix[start : start + chunk])
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            row = start + int(np.flatnonzero(bad)[0])
            raise FeatureFileError(
                f"{source}: row {row} (item {keys[row]!r}) holds NaN or inf values; "
                f"{int(bad.sum())} bad rows in this block. Fix the features or drop those items "
                f"(a dropped item is treated as missing this modality)"
            )


def match_item_keys(keys: Sequence[str], id2token: Sequence[str], source: str,
                    unknown_items: str = "error") -> Tuple[List[int], List[int]]:
    """(file rows, internal item ids) of the keys of a feature file that are item tokens of the
    data set (``id2token``; entry 0 is padding). A key the data set lacks is an error naming the
    file, or skipped with ``unknown_items: ignore``."""
    token2id: Dict[str, int] = {str(tok): i for i, tok in enumerate(id2token) if i > 0}
    rows, ids, unknown = [], [], []
    for row, key in enumerate(keys):
        item_id = token2id.get(key)
        if item_id is None:
            unknown.append(key)
        else:
            rows.append(row)
            ids.append(item_id)
    if unknown and unknown_items == "error":
        shown = ", ".join(repr(k) for k in unknown[:5])
        raise FeatureFileError(
            f"{source}: {len(unknown)} item id(s) are not in the data set (e.g. {shown}); "
            f"feature keys must be the item tokens of the .inter files. "
            f"Set `feature_unknown_items: ignore` to skip them"
        )
    return rows, ids


def align_features(
    modality: str,
    keys: List[str],
    matrix: np.ndarray,
    id2token: Sequence[str],
    source: str,
    unknown_items: str = "error",
    expected_dim: Optional[int] = None,
) -> ItemFeature:
    """Place the rows of a feature file at the internal ids of their items.

    Args:
        id2token: ``dataset.field2id_token[item_field]``; entry 0 is the padding token.
        unknown_items: ``"error"`` (default) or ``"ignore"`` for keys the data set lacks.
        expected_dim: if given, the feature dimension the caller needs.
    """
    if expected_dim is not None and matrix.shape[1] != expected_dim:
        raise FeatureFileError(
            f"{source}: {modality} features have dimension {matrix.shape[1]}, expected {expected_dim}"
        )
    _check_finite(matrix, keys, source)
    rows, ids = match_item_keys(keys, id2token, source, unknown_items)
    aligned = np.zeros((len(id2token), matrix.shape[1]), dtype=np.float32)
    mask = np.zeros(len(id2token), dtype=bool)
    if rows:
        order = np.argsort(rows)  # read the memory map front to back
        rows_sorted = np.asarray(rows)[order]
        ids_sorted = np.asarray(ids)[order]
        aligned[ids_sorted] = np.asarray(matrix[rows_sorted], dtype=np.float32)
        mask[ids_sorted] = True
    return ItemFeature(modality=modality, matrix=aligned, mask=mask, source=source)


def check_modalities(modalities: Iterable[str], key: str = "modalities") -> List[str]:
    """Validate a list of modality names from config."""
    if isinstance(modalities, str):
        modalities = [modalities]
    modalities = list(modalities or [])
    for m in modalities:
        if m not in KNOWN_MODALITIES:
            raise ValueError(
                f"config key `{key}`: unknown modality {m!r}; expected some of {list(KNOWN_MODALITIES)}"
            )
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"config key `{key}`: modality listed twice in {modalities}")
    return modalities


def log_popularity(items: np.ndarray, n_items: int) -> np.ndarray:
    """log p(item) from the target items of training rows, add-one smoothed so that every item
    has a finite value; entry 0 (padding) is 0."""
    counts = np.bincount(items, minlength=n_items)[:n_items].astype(np.float64) + 1.0
    counts[0] = 0.0
    log_prob = np.zeros(n_items)
    log_prob[1:] = np.log(counts[1:] / counts[1:].sum())
    return log_prob
