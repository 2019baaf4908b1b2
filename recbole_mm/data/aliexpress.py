"""AliExpress-format multi-task CTR/CVR files: reading, validation, atomic files.

Layout (MTReclib / AliExpress_{NL,ES,FR,US,RU}; ../shared/datasets/AliExpress_sample): columns
``search_id``, ``categorical_1..16`` (integer codes), ``numerical_1..63`` (floats), ``click``,
``conversion`` (0/1). Categorical codes are kept as **raw integers shared across countries**
(declared ``:float`` in the atomic files so RecBole does not re-map them per data set): a
model trained on one country can then be applied to another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict

import numpy as np
import pandas as pd

from recbole_mm.fileio import atomic_output

N_CATEGORICAL, N_NUMERICAL = 16, 63
CATEGORICAL = [f"categorical_{i}" for i in range(1, N_CATEGORICAL + 1)]
NUMERICAL = [f"numerical_{i}" for i in range(1, N_NUMERICAL + 1)]
LABELS = ["click", "conversion"]
COLUMNS = ["search_id"] + CATEGORICAL + NUMERICAL + LABELS


class AliExpressFormatError(ValueError):
    """A file does not follow the AliExpress layout; the message names the row and column."""


@dataclass
class MultiTaskTable:
    """One split of AliExpress-format data in memory."""

    search_id: np.ndarray  # (N,) str
    categorical: np.ndarray  # (N, 16) int64, raw codes
    numerical: np.ndarray  # (N, 63) float32
    labels: np.ndarray  # (N, 2) float32: click, conversion

    def __len__(self) -> int:
        return len(self.search_id)

    def subset(self, index: np.ndarray) -> "MultiTaskTable":
        return MultiTaskTable(self.search_id[index], self.categorical[index], self.numerical[index],
                              self.labels[index])


def _numeric_column(frame: pd.DataFrame, column: str, path: str) -> np.ndarray:
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise AliExpressFormatError(
            f"{path}, data row {row + 1} (line {row + 2}), column {column!r}: "
            f"expected a number, got {raw.iloc[row]!r}"
        )
    return values.to_numpy()


def read_aliexpress_csv(path: str) -> MultiTaskTable:
    """Read and validate one AliExpress-format CSV."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"AliExpress-format file {path} not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise AliExpressFormatError(f"{path}: missing column(s) {missing}; expected the layout {COLUMNS[:3]}...")
    categorical = np.stack([_numeric_column(frame, c, path) for c in CATEGORICAL], axis=1)
    for j, column in enumerate(CATEGORICAL):
        bad = (categorical[:, j] < 0) | (categorical[:, j] != np.round(categorical[:, j]))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise AliExpressFormatError(
                f"{path}, data row {row + 1} (line {row + 2}), column {column!r}: "
                f"expected a non-negative integer code, got {frame[column].iloc[row]!r}"
            )
    numerical = np.stack([_numeric_column(frame, c, path) for c in NUMERICAL], axis=1)
    labels = np.stack([_numeric_column(frame, c, path) for c in LABELS], axis=1)
    for j, column in enumerate(LABELS):
        bad = ~np.isin(labels[:, j], (0, 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise AliExpressFormatError(
                f"{path}, data row {row + 1} (line {row + 2}), column {column!r}: "
                f"label must be 0 or 1, got {frame[column].iloc[row]!r}"
            )
    return MultiTaskTable(
        frame["search_id"].to_numpy(dtype=str),
        categorical.astype(np.int64),
        numerical.astype(np.float32),
        labels.astype(np.float32),
    )


ATOMIC_HEADER = (
    ["search_id:token"] + [f"{c}:float" for c in CATEGORICAL] + [f"{c}:float" for c in NUMERICAL]
    + [f"{c}:float" for c in LABELS]
)


def write_atomic(table: MultiTaskTable, path: str) -> None:
    """Write one split as a RecBole atomic ``.inter`` file (tab separated, typed header), atomically."""
    frame = pd.DataFrame(
        np.concatenate([table.categorical, table.numerical, table.labels], axis=1),
        columns=CATEGORICAL + NUMERICAL + LABELS,
    )
    for column in CATEGORICAL + LABELS:
        frame[column] = frame[column].astype(np.int64)
    frame.insert(0, "search_id", table.search_id)
    frame.columns = ATOMIC_HEADER
    with atomic_output(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def stratified_sample(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Row indices of a sample of ``ratio`` of the rows, drawn per (click, conversion) stratum
    so that label rates are kept; at least one row of every non-empty stratum."""
    rng = np.random.default_rng(seed)
    strata = labels[:, 0].astype(np.int64) * 2 + labels[:, 1].astype(np.int64)
    chosen = []
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        take = max(1, int(round(ratio * len(rows))))
        chosen.append(rng.choice(rows, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def convert_csv(train_csv: str, test_csv: str, out_dir: str, name: str, valid_ratio: float = 0.1,
                seed: int = 2024) -> Dict[str, str]:
    """CSV pair -> ``<out_dir>/<name>.train/valid/test.inter`` (valid: a stratified share of train)."""
    train = read_aliexpress_csv(train_csv)
    test = read_aliexpress_csv(test_csv)
    valid_rows = stratified_sample(train.labels, valid_ratio, seed)
    keep = np.setdiff1d(np.arange(len(train)), valid_rows)
    paths = {}
    for part, table in (("train", train.subset(keep)), ("valid", train.subset(valid_rows)), ("test", test)):
        paths[part] = os.path.join(out_dir, f"{name}.{part}.inter")
        write_atomic(table, paths[part])
    return paths
