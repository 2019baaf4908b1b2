"""RecBole atomic files (``<D>.inter``, ``<D>.train.inter``, ``<D>.item``, ...): the checks made
before a data set reads them, the search for the cell RecBole could not read, and the one rule
for bad float values. Every error names the file (and the line and column) and what was expected.

Header: one ``name:type`` cell per column, separated by ``field_separator`` (a tab), type one of
:data:`ATOMIC_TYPES`; then at least one row.
"""

from __future__ import annotations

from logging import getLogger
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


class DataFileError(ValueError):
    """A data file the run cannot use; the message names the file (line, column) and what was
    expected (the command line prints it as one ``error:`` line)."""


def _not_encoded(path: str, line_no: int, raw: bytes, err: UnicodeDecodeError, encoding: str) -> DataFileError:
    return DataFileError(f"{path}, line {line_no}: bytes that are not {encoding} ({raw[err.start:err.end]!r}); "
                         f"save the file as {encoding}")


def read_atomic_header(path: str, sep: str = "\t", encoding: str = "utf-8") -> List[Tuple[str, str]]:
    """``(name, type)`` of every column of an atomic file's header; ``DataFileError`` for an empty
    file, a header that is not ``encoding``, a column without ``:type`` or of an unknown type."""
    with open(path, "rb") as f:
        raw = f.readline()
    if not raw.strip():
        raise DataFileError(f"{path}: the file is empty; expected a header line of `name:type` columns "
                            f"(types {', '.join(ATOMIC_TYPES)}), then rows")
    try:
        header = raw.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise _not_encoded(path, 1, raw, err, encoding) from None
    if header.startswith("\ufeff"):
        raise DataFileError(f"{path}, line 1: the file starts with a byte-order mark; save it as {encoding} without one")
    columns = []
    for number, cell in enumerate(header.split(sep), start=1):
        name, colon, kind = cell.partition(":")
        if not colon or not name:
            raise DataFileError(f"{path}, line 1, column {number} {cell!r}: expected `name:type` (RecBole's atomic "
                                f"header, type one of {', '.join(ATOMIC_TYPES)}; separator {sep!r})")
        if kind not in ATOMIC_TYPES:
            raise DataFileError(f"{path}, line 1, column {number} {cell!r}: unknown type {kind!r}; expected one of "
                                f"{', '.join(ATOMIC_TYPES)}")
        columns.append((name, kind))
    return columns


def _has_rows(path: str) -> bool:
    with open(path, "rb") as f:
        f.readline()
        return any(line.strip() for line in f)


def _shown_names(names: Sequence[str], at_most: int = 8) -> str:
    return ", ".join(names[:at_most]) + (f", ... ({len(names)} columns)" if len(names) > at_most else "")


def _shown(columns: Sequence[Tuple[str, str]]) -> str:
    return _shown_names([f"{name}:{kind}" for name, kind in columns])


def check_atomic_file(path: str, required: Sequence[str] = (), why: str = "", sep: str = "\t",
                      encoding: str = "utf-8") -> List[Tuple[str, str]]:
    """The header of an atomic file (:func:`read_atomic_header`), checked to have rows after it and
    every column of ``required`` (``why`` says who needs them); reads the header and the first row only."""
    columns = read_atomic_header(path, sep, encoding)
    names = [name for name, _ in columns]
    missing = [name for name in required if name not in names]
    if missing:
        raise DataFileError(f"{path}: no column {', '.join(repr(m) for m in missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''} in the header ({_shown(columns)}); expected the "
                            f"columns {_shown_names(required)}" + (f" ({why})" if why else ""))
    if not _has_rows(path):
        raise DataFileError(f"{path}: no rows after the header line")
    return columns


def check_column_types(path: str, columns: Sequence[Tuple[str, str]], names: Iterable[str], kind: str) -> None:
    """``DataFileError`` unless every column of ``names`` is declared ``kind`` in the header."""
    declared = dict(columns)
    for name in names:
        if name in declared and declared[name] != kind:
            raise DataFileError(f"{path}, line 1: column {name!r} is declared {declared[name]!r}; expected {kind!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bad_cells(columns: Sequence[Tuple[str, str]], cells: Sequence[str], seq_sep: str) -> Optional[Tuple[str, str]]:
    for (name, kind), cell in zip(columns, cells):
        items = cell.split(seq_sep) if kind == "float_seq" else [cell]
        if kind.startswith("float") and any(item.strip() and not _is_number(item) for item in items):
            return name, cell
    return None


def find_unreadable_line(path: str, sep: str = "\t", encoding: str = "utf-8",
                         seq_sep: str = " ") -> Optional[DataFileError]:
    """The first line of an atomic file that RecBole cannot read, as a ``DataFileError`` naming it:
    bytes not in ``encoding``, another number of fields than the header, a float cell that is no
    number. None when every line reads. (Called only after loading failed: it reads the whole file.)"""
    columns = read_atomic_header(path, sep, encoding)
    with open(path, "rb") as f:
        f.readline()
        for line_no, raw in enumerate(f, start=2):
            try:
                line = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as err:
                return _not_encoded(path, line_no, raw, err, encoding)
            if not line.strip():
                continue
            cells = line.split(sep)
            if len(cells) != len(columns):
                return DataFileError(f"{path}, line {line_no}: expected {len(columns)} fields separated by {sep!r} "
                                     f"(as the header), got {len(cells)}")
            bad = _bad_cells(columns, cells, seq_sep)
            if bad:
                return DataFileError(f"{path}, line {line_no}, column {bad[0]!r}: expected a number (type float), "
                                     f"got {bad[1]!r}")
    return None


def file_line(frame: pd.DataFrame, row: int) -> int:
    """The file line of a loaded frame's row (header = line 1; blank lines are not counted)."""
    return int(frame.index[row]) + 2


def non_finite_as_missing(frame: pd.DataFrame, fields: Iterable[str], path: str) -> int:
    """Float columns of a loaded atomic file: infinite values become NaN, i.e. missing (RecBole
    fills a missing float with its column's mean, so no infinite value reaches a model or a
    normalisation bound). Logs how many values of each column are missing (empty, NaN or
    infinite); returns the total."""
    counts = {}
    for field in fields:
        if field not in frame.columns:
            continue
        values = frame[field].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            counts[field] = int(bad.sum())
            frame[field] = np.where(bad, np.nan, values)
    total = sum(counts.values())
    if total:
        shown = ", ".join(f"{field} {n}" for field, n in list(counts.items())[:5]) + (" ..." if len(counts) > 5 else "")
        getLogger().warning(f"{path}: {total} float values are empty, NaN or infinite ({shown}): treated as missing "
                            f"(filled with the column mean)")
    return total

