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
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd

from recbole_mm.data.atomic_files import DataFileError, non_finite_as_missing
from recbole_mm.fileio import atomic_output

N_CATEGORICAL, N_NUMERICAL = 16, 63
CATEGORICAL = [f"categorical_{i}" for i in range(1, N_CATEGORICAL + 1)]
NUMERICAL = [f"numerical_{i}" for i in range(1, N_NUMERICAL + 1)]
LABELS = ["click", "conversion"]
COLUMNS = ["search_id"] + CATEGORICAL + NUMERICAL + LABELS


class AliExpressFormatError(DataFileError):
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


# cells of a numerical column that mean "no value" (missing, with a count in the log)
MISSING_TEXT = ("", "nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity")


def _where(path: str, row: int, column: str) -> str:
    return f"{path}, data row {row + 1} (line {row + 2}), column {column!r}"


def _numeric_column(frame: pd.DataFrame, column: str, path: str, missing_ok: bool = False) -> np.ndarray:
    """A column of strings as float64; a cell that is no number is an error naming it (with
    ``missing_ok`` the cells of :data:`MISSING_TEXT` pass, as NaN or inf)."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna()
    if missing_ok:
        bad &= ~raw.str.strip().str.lower().isin(MISSING_TEXT)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise AliExpressFormatError(f"{_where(path, row, column)}: expected a number, got {raw.iloc[row]!r}")
    return values.to_numpy(dtype=np.float64)


def check_codes(frame: pd.DataFrame, codes: np.ndarray, path: str, columns: Sequence[str] = CATEGORICAL) -> None:
    """Every categorical code (N, len(columns)) a finite non-negative integer; else an error naming the cell."""
    for j, column in enumerate(columns):
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(codes[:, j]) | (codes[:, j] < 0) | (codes[:, j] != np.round(codes[:, j]))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise AliExpressFormatError(f"{_where(path, row, column)}: expected a non-negative integer code, "
                                        f"got {frame[column].iloc[row]!r}")


def check_labels(frame: pd.DataFrame, labels: np.ndarray, path: str) -> None:
    """Every label (N, 2) 0 or 1; else an error naming the cell."""
    for j, column in enumerate(LABELS):
        bad = ~np.isin(labels[:, j], (0, 1))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise AliExpressFormatError(f"{_where(path, row, column)}: label must be 0 or 1, "
                                        f"got {frame[column].iloc[row]!r}")


# the spellings of MISSING_TEXT that the typed reading takes as missing (others fall back to the text reading)
MISSING_SPELLINGS = sorted({form for text in MISSING_TEXT for form in (text, text.upper(), text.title())}
                           | {"NaN", "-NaN", "+NaN", "Inf", "+Inf", "-Inf"})


def _check_header(path: str) -> None:
    columns = list(pd.read_csv(path, nrows=0).columns)
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise AliExpressFormatError(f"{path}: missing column(s) {missing}; expected the layout {COLUMNS[:3]}...")


def _read_typed(path: str, chunksize: int) -> Optional[MultiTaskTable]:
    """The file in chunks of typed columns (codes and labels float64, numbers float32): the
    table, or None when some cell is not valid (the text reading then names it)."""
    dtype = {"search_id": str, **{c: np.float64 for c in CATEGORICAL + LABELS}, **{c: np.float32 for c in NUMERICAL}}
    parts = []
    try:
        for chunk in pd.read_csv(path, usecols=COLUMNS, dtype=dtype, keep_default_na=False,
                                 na_values={c: MISSING_SPELLINGS for c in NUMERICAL}, chunksize=chunksize):
            codes, labels = chunk[CATEGORICAL].to_numpy(np.float64), chunk[LABELS].to_numpy(np.float64)
            with np.errstate(invalid="ignore"):
                bad_codes = ~np.isfinite(codes) | (codes < 0) | (codes != np.round(codes))
            if bad_codes.any() or not np.isin(labels, (0, 1)).all():
                return None
            parts.append(MultiTaskTable(chunk["search_id"].to_numpy(dtype=str), codes.astype(np.int64),
                                        chunk[NUMERICAL].to_numpy(np.float32), labels.astype(np.float32)))
    except ValueError:  # a cell that is no number
        return None
    if not parts:
        return None
    table = MultiTaskTable(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("search_id", "categorical", "numerical", "labels")))
    numerical = pd.DataFrame(table.numerical, columns=NUMERICAL)
    non_finite_as_missing(numerical, NUMERICAL, path)  # counts the missing values in the log
    table.numerical = numerical.to_numpy(dtype=np.float32)
    return table


def read_aliexpress_csv(path: str, chunksize: int = 500000) -> MultiTaskTable:
    """Read and validate one AliExpress-format CSV. A numerical cell that is empty, NaN or
    infinite is missing (NaN, counted in the log); codes and labels must be valid.

    Read in chunks of ``chunksize`` rows with typed columns (a 12 M-row country fits in memory);
    a file with a bad cell is read again as text, to name the cell's row and column."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"AliExpress-format file {path} not found")
    _check_header(path)
    table = _read_typed(path, chunksize)
    return table if table is not None else _read_text(path)


def _read_text(path: str) -> MultiTaskTable:
    """The whole file as text, every cell checked: the first bad one raises an error naming it."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    categorical = np.stack([_numeric_column(frame, c, path) for c in CATEGORICAL], axis=1)
    check_codes(frame, categorical, path)
    numerical = pd.DataFrame({c: _numeric_column(frame, c, path, missing_ok=True) for c in NUMERICAL})
    non_finite_as_missing(numerical, NUMERICAL, path)
    labels = np.stack([_numeric_column(frame, c, path) for c in LABELS], axis=1)
    check_labels(frame, labels, path)
    return MultiTaskTable(
        frame["search_id"].to_numpy(dtype=str),
        categorical.astype(np.int64),
        numerical.to_numpy(dtype=np.float32),
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
