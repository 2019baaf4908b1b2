"""Any tabular two-task data -> the multi-task layout (docs/multitask.md, "Your own tabular data").

A CSV (gzipped or plain, with or without a header) and a small spec (:class:`TabularSpec`, from
YAML) name the categorical and numerical columns, two label expressions, the domain column with
its source and target values, and the columns to drop. :func:`convert_tabular` writes one folder
per domain, ``<name>.train/valid/test.inter`` in the AliExpress layout of
:mod:`recbole_mm.data.aliexpress` (``search_id``, ``categorical_1..k``, ``numerical_1..n``,
``click`` = task 1, ``conversion`` = task 2) and ``<name>.tabular.json`` (:func:`read_layout`:
field counts, vocabularies, task and column names), which :class:`~recbole_mm.data.multitask.MultiTaskDataset`
reads.

The files are streamed in chunks with typed columns, in three passes over them:

1. domain and label columns only: which rows are source / target, their labels, the seeded
   stratified valid (and test) rows of each domain;
2. the source domain's training rows: categorical vocabularies (codes 0..V-1 in sorted order of
   the values, an unseen or rare value gets the unknown code V) and numerical means and standard
   deviations (sums in fixed blocks of rows, so the result does not depend on the chunk size);
3. every row of both domains: codes, standardised numbers, labels, written to the split files.
"""

from __future__ import annotations

import ast
import json
import operator
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Dict, IO, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import yaml

from recbole_mm.data.aliexpress import CATEGORICAL, LABELS, NUMERICAL, stratified_sample
from recbole_mm.data.atomic_files import DataFileError
from recbole_mm.fileio import atomic_folder

LAYOUT_SUFFIX = ".tabular.json"
LAYOUT_FORMAT = "recbole_mm tabular multi-task layout, version 1"
DOMAINS = ("source", "target")
PARTS = ("train", "valid", "test")
BLOCK_ROWS = 65536  # rows per block of the numerical sums (fixed: the sums do not depend on the chunk size)


class TabularSpecError(DataFileError):
    """A conversion spec that cannot be used; the message names the spec key."""


# ----- the layout the multi-task data set reads -------------------------------------------------


@dataclass
class MultiTaskLayout:
    """Fields of a multi-task data set: categorical and numerical field names, the vocabulary size
    of each categorical field (None: the largest code seen + 1), the names of the two tasks."""

    categorical: List[str]
    numerical: List[str]
    vocab_sizes: Optional[List[int]] = None
    task_names: Tuple[str, str] = ("click", "conversion")

    @property
    def columns(self) -> List[str]:
        """Every column an atomic file of this layout has, in order."""
        return ["search_id"] + self.categorical + self.numerical + LABELS


ALIEXPRESS_LAYOUT = MultiTaskLayout(list(CATEGORICAL), list(NUMERICAL))


def layout_path(folder: str, name: str) -> str:
    return os.path.join(folder, f"{name}{LAYOUT_SUFFIX}")


def read_layout(folder: str, name: str) -> MultiTaskLayout:
    """The layout of data set ``name`` in ``folder``: from ``<name>.tabular.json`` when present (a
    converted tabular data set), else the fixed AliExpress layout (16 categorical, 63 numerical)."""
    path = layout_path(folder, name)
    if not os.path.isfile(path):
        return ALIEXPRESS_LAYOUT
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
        categorical = [entry["field"] for entry in payload["categorical"]]
        vocab = [int(entry["vocab_size"]) for entry in payload["categorical"]]
        numerical = [entry["field"] for entry in payload["numerical"]]
        tasks = (payload["tasks"]["click"]["name"], payload["tasks"]["conversion"]["name"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataFileError(f"{path}: not a layout written by recbole_mm.data.tabular ({type(err).__name__}: {err})")
    return MultiTaskLayout(categorical, numerical, vocab, tasks)


# ----- the spec ---------------------------------------------------------------------------------

COMPARISONS: Dict[str, Callable] = {
    "==": operator.eq, "!=": operator.ne, ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}
EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|>|<|not in|in)\s*(.+?)\s*$")


@dataclass
class LabelExpression:
    """``<column> <op> <literal>``: op one of ``== != > >= < <= in``, ``not in``; literal a
    Python literal (``"50000+."``, ``5``, ``["a", "b"]``). A numeric literal compares the column
    as numbers, a string literal as text (cells stripped of spaces)."""

    text: str
    column: str
    op: str
    value: object

    @classmethod
    def parse(cls, text: str, where: str) -> "LabelExpression":
        match = EXPRESSION.match(str(text))
        if not match:
            raise TabularSpecError(f"{where}: {text!r} is no label expression; expected `<column> <op> <value>` with "
                                   f"op one of ==, !=, >, >=, <, <=, in, not in (e.g. income == \"50000+.\")")
        column, op, literal = match.groups()
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            raise TabularSpecError(f"{where}: the value {literal!r} of {text!r} is no literal; quote text "
                                   f"(\"...\") and write lists as [\"a\", \"b\"]") from None
        if op in ("in", "not in") and not isinstance(value, (list, tuple, set)):
            raise TabularSpecError(f"{where}: {text!r}: `{op}` needs a list, e.g. [\"a\", \"b\"]")
        return cls(str(text), column, op, value)

    @property
    def numeric(self) -> bool:
        values = self.value if isinstance(self.value, (list, tuple, set)) else [self.value]
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)

    def evaluate(self, values: pd.Series) -> np.ndarray:
        """0/1 of every cell (a missing number is 0, except for ``!=`` / ``not in``)."""
        if self.op in ("in", "not in"):
            hit = values.isin(list(self.value)).to_numpy()
            return (~hit if self.op == "not in" else hit).astype(np.int8)
        return COMPARISONS[self.op](values, self.value).to_numpy().astype(np.int8)


def _as_list(value, where: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise TabularSpecError(f"{where}: expected a name or a list, got {value!r}")


@dataclass
class TabularSpec:
    """What to convert and how. YAML keys (docs/multitask.md):

    - ``name``: output folders ``<name>_src`` / ``<name>_tgt`` (or ``names: {source:, target:}``);
    - ``files``: ``{train: path, test: path}`` (``test`` optional; relative to the spec's folder or ``--src``);
    - ``header`` (true): the first line names the columns; else ``columns`` lists them in order;
    - ``sep`` (","); ``missing`` (["", "?"]): cells of a numerical column that mean "no value";
    - ``categorical``, ``numerical``: feature columns; ``drop``: columns not used (e.g. a survey weight);
    - ``tasks``: two ``{name, label}`` (label a :class:`LabelExpression`): task 1 -> ``click``, task 2 -> ``conversion``;
    - ``domain``: ``{column, source, target}`` (a value or a list of values each);
    - ``valid_ratio`` (0.1, of each domain's training rows), ``test_ratio`` (0.2, of each domain's
      rows, only without a test file), ``seed`` (2024), ``min_count`` (1: a value seen fewer times
      in the source's training rows gets the unknown code), ``chunksize`` (200000 rows per read; null:
      whole files). The models predict the two tasks with independent towers (``ctcvr_mode: tower``,
      the default); ``ctcvr_mode: esmm`` chains them where task 2 implies task 1.
    """

    names: Dict[str, str]
    train: str
    test: Optional[str]
    categorical: List[str]
    numerical: List[str]
    tasks: List[Tuple[str, LabelExpression]]
    domain_column: str
    domain_values: Dict[str, List[str]]
    header: bool = True
    columns: Optional[List[str]] = None
    sep: str = ","
    missing: List[str] = field(default_factory=lambda: ["", "?"])
    drop: List[str] = field(default_factory=list)
    valid_ratio: float = 0.1
    test_ratio: float = 0.2
    seed: int = 2024
    min_count: int = 1
    chunksize: Optional[int] = 200000

    KEYS = ("name", "names", "files", "header", "columns", "sep", "missing", "categorical", "numerical", "drop",
            "tasks", "domain", "valid_ratio", "test_ratio", "seed", "min_count", "chunksize")

    @classmethod
    def from_dict(cls, raw: dict, base_dir: str = ".", where: str = "spec") -> "TabularSpec":
        """A spec from its YAML mapping; file paths relative to ``base_dir``."""
        if not isinstance(raw, dict):
            raise TabularSpecError(f"{where}: expected a mapping of the keys {', '.join(cls.KEYS)}")
        unknown = sorted(set(raw) - set(cls.KEYS))
        if unknown:
            raise TabularSpecError(f"{where}: unknown key(s) {unknown}; known: {', '.join(cls.KEYS)}")
        for key in ("files", "categorical", "numerical", "tasks", "domain"):
            if key not in raw:
                raise TabularSpecError(f"{where}: key `{key}` is required")
        files = raw["files"] if isinstance(raw["files"], dict) else {"train": raw["files"]}
        if "train" not in files:
            raise TabularSpecError(f"{where}: `files` needs `train` (and optionally `test`)")
        names = raw.get("names") or ({"source": f"{raw['name']}_src", "target": f"{raw['name']}_tgt"}
                                     if raw.get("name") else None)
        if not isinstance(names, dict) or set(names) != set(DOMAINS):
            raise TabularSpecError(f"{where}: give `name` (folders <name>_src, <name>_tgt) or "
                                   f"`names: {{source: ..., target: ...}}`")
        tasks = raw["tasks"]
        if not isinstance(tasks, list) or len(tasks) != 2 or not all(isinstance(t, dict) and "label" in t for t in tasks):
            raise TabularSpecError(f"{where}: `tasks` must list two tasks, each {{name: ..., label: <expression>}}")
        domain = raw["domain"]
        if not isinstance(domain, dict) or not {"column", "source", "target"} <= set(domain):
            raise TabularSpecError(f"{where}: `domain` must be {{column: ..., source: ..., target: ...}}")
        spec = cls(
            names={k: str(v) for k, v in names.items()},
            train=os.path.join(base_dir, str(files["train"])),
            test=os.path.join(base_dir, str(files["test"])) if files.get("test") else None,
            categorical=_as_list(raw["categorical"], f"{where}: categorical"),
            numerical=_as_list(raw["numerical"], f"{where}: numerical"),
            tasks=[(str(t.get("name", label)), LabelExpression.parse(t["label"], f"{where}: tasks[{i}]"))
                   for i, (t, label) in enumerate(zip(tasks, LABELS))],
            domain_column=str(domain["column"]),
            domain_values={d: _as_list(domain[d], f"{where}: domain.{d}") for d in DOMAINS},
        )
        for key in ("header", "sep", "valid_ratio", "test_ratio", "seed", "min_count", "chunksize"):
            if key in raw:
                setattr(spec, key, raw[key])
        spec.columns = _as_list(raw.get("columns"), f"{where}: columns") or None
        spec.missing = _as_list(raw.get("missing", spec.missing), f"{where}: missing")
        spec.drop = _as_list(raw.get("drop"), f"{where}: drop")
        spec.check(where)
        return spec

    @classmethod
    def from_yaml(cls, path: str, base_dir: Optional[str] = None) -> "TabularSpec":
        with open(path, encoding="utf-8") as f:
            try:
                raw = yaml.safe_load(f)
            except yaml.YAMLError as err:
                raise TabularSpecError(f"{path}: not YAML ({str(err).splitlines()[0]})") from None
        return cls.from_dict(raw, base_dir or os.path.dirname(os.path.abspath(path)), where=path)

    def check(self, where: str = "spec") -> None:
        """No column in two roles (a label's or the domain's column as a feature would leak it)."""
        if not self.header and not self.columns:
            raise TabularSpecError(f"{where}: `header: false` needs `columns` (every column's name, in order)")
        if not self.categorical and not self.numerical:
            raise TabularSpecError(f"{where}: no feature column: list some under `categorical` or `numerical`")
        roles = [("categorical", c) for c in self.categorical] + [("numerical", c) for c in self.numerical]
        roles += [("drop", c) for c in self.drop] + [("domain", self.domain_column)]
        roles += [(f"label of task {name!r}", e.column) for name, e in self.tasks]
        seen: Dict[str, str] = {}
        for role, column in roles:
            if column in seen and seen[column] != role and not (role.startswith("label") and seen[column].startswith("label")):
                raise TabularSpecError(f"{where}: column {column!r} is both {seen[column]} and {role}")
            seen.setdefault(column, role)
        if not 0 < float(self.valid_ratio) < 1 or not 0 < float(self.test_ratio) < 1:
            raise TabularSpecError(f"{where}: `valid_ratio` and `test_ratio` must lie between 0 and 1")
        if self.chunksize is not None and int(self.chunksize) < 1:
            raise TabularSpecError(f"{where}: `chunksize` must be a positive number of rows (or null: whole files)")

    @property
    def label_columns(self) -> List[str]:
        return list(dict.fromkeys(e.column for _, e in self.tasks))

    @property
    def float_columns(self) -> List[str]:
        """Columns read as float64: the numerical features and the columns of numeric labels."""
        return list(dict.fromkeys(self.numerical + [e.column for _, e in self.tasks if e.numeric]))

    def files(self) -> List[Tuple[str, str]]:
        """``(role, path)`` of the input files: ``train`` and, when given, ``test``."""
        return [("train", self.train)] + ([("test", self.test)] if self.test else [])


# ----- reading ----------------------------------------------------------------------------------


def _file_columns(path: str, spec: TabularSpec) -> List[str]:
    """The names of the file's columns (its header, or ``columns``); every one must have a role."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file {path} not found")
    if spec.header:
        try:
            names = list(pd.read_csv(path, sep=spec.sep, nrows=0, skipinitialspace=True).columns)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
            raise DataFileError(f"{path}: cannot read the header line ({err})") from None
        names = [str(n).strip() for n in names]
    else:
        names = list(spec.columns)
    used = set(spec.categorical + spec.numerical + spec.drop + spec.label_columns + [spec.domain_column])
    missing = [c for c in used if c not in names]
    if missing:
        raise DataFileError(f"{path}: no column {sorted(missing)} (columns: {names[:8]}{' ...' if len(names) > 8 else ''})")
    unused = [c for c in names if c not in used]
    if unused:
        raise DataFileError(f"{path}: column(s) {unused} have no role: list each under categorical, numerical or drop")
    return names


def _line(index: int, spec: TabularSpec) -> int:
    """The file line of a data row (line 1 is the header when there is one)."""
    return int(index) + 1 + (1 if spec.header else 0)


def _reader(path: str, spec: TabularSpec, names: List[str], usecols: Sequence[str], float_columns: Sequence[str],
            chunksize):
    dtype = {c: (np.float64 if c in float_columns else str) for c in usecols}
    na_values = {c: (spec.missing if c in float_columns else []) for c in usecols}
    return pd.read_csv(path, sep=spec.sep, header=0 if spec.header else None, names=names, usecols=list(usecols),
                       dtype=dtype, na_values=na_values, keep_default_na=False, skipinitialspace=True,
                       chunksize=chunksize, compression="infer", engine="c")


def _bad_cell(path: str, spec: TabularSpec, usecols: Sequence[str], float_columns: Sequence[str]) -> Optional[str]:
    """Where the first cell of a float column that is no number sits: ``path, line N, column 'c': ...``."""
    text_reader = _reader(path, spec, _file_columns(path, spec), usecols, [], spec.chunksize or 100000)
    for chunk in text_reader:
        for column in float_columns:
            if column not in chunk:
                continue
            cells = chunk[column].str.strip()
            bad = pd.to_numeric(cells, errors="coerce").isna() & ~cells.isin(spec.missing)
            if bad.any():
                row = bad.to_numpy().nonzero()[0][0]
                return (f"{path}, line {_line(chunk.index[row], spec)}, column {column!r}: expected a number "
                        f"(or a missing value {spec.missing}), got {chunk[column].iloc[row]!r}")
    return None


def read_chunks(path: str, spec: TabularSpec, usecols: Sequence[str], chunksize=None) -> Iterator[pd.DataFrame]:
    """The ``usecols`` of a file in chunks of ``chunksize`` rows (None: one chunk): float columns
    (:attr:`TabularSpec.float_columns`) as float64 (missing cells NaN), the rest as stripped text.
    A cell that is no number, a row of another length: ``DataFileError`` naming file, line, column."""
    float_columns = [c for c in spec.float_columns if c in usecols]
    names = _file_columns(path, spec)
    try:
        reader = _reader(path, spec, names, usecols, float_columns, chunksize)
        for chunk in (reader if chunksize else [reader]):
            for column in usecols:
                if column not in float_columns:
                    chunk[column] = chunk[column].str.strip()
            yield chunk
    except pd.errors.ParserError as err:
        raise DataFileError(f"{path}: {str(err).strip().splitlines()[-1]}") from None
    except (ValueError, TypeError) as err:
        where = _bad_cell(path, spec, usecols, float_columns)
        raise DataFileError(where or f"{path}: {err}") from None


# ----- pass 1: domains, labels, splits ----------------------------------------------------------


@dataclass
class FileRows:
    """Per row of one input file: its domain (0 source, 1 target, -1 neither), labels (N, 2),
    file line, and part (0 train, 1 valid, 2 test, -1 not written)."""

    domain: np.ndarray
    labels: np.ndarray
    lines: np.ndarray
    part: np.ndarray = None


def scan_rows(path: str, spec: TabularSpec) -> FileRows:
    """Pass 1: the domain and the two labels of every row (only those columns are read)."""
    usecols = list(dict.fromkeys([spec.domain_column] + spec.label_columns))
    domains, labels, lines = [], [], []
    for chunk in read_chunks(path, spec, usecols, spec.chunksize):
        domain = np.full(len(chunk), -1, dtype=np.int8)
        values = chunk[spec.domain_column]
        for d, name in enumerate(DOMAINS):
            domain[values.isin(spec.domain_values[name]).to_numpy()] = d
        domains.append(domain)
        labels.append(np.stack([e.evaluate(chunk[e.column]) for _, e in spec.tasks], axis=1))
        lines.append(np.asarray(chunk.index, dtype=np.int64) + 1 + (1 if spec.header else 0))
    if not domains:
        raise DataFileError(f"{path}: no data rows")
    return FileRows(np.concatenate(domains), np.concatenate(labels), np.concatenate(lines))


def assign_parts(files: Dict[str, FileRows], spec: TabularSpec) -> None:
    """Each domain's rows to train / valid / test: valid a seeded stratified ``valid_ratio`` of its
    training rows; test the test file's rows, or without one a stratified ``test_ratio`` of its rows."""
    for role, rows in files.items():
        rows.part = np.where(rows.domain >= 0, 2 if role == "test" else 0, -1).astype(np.int8)
    train = files["train"]
    for d in range(len(DOMAINS)):
        members = np.flatnonzero(train.domain == d)
        if len(members) == 0:
            raise DataFileError(f"{spec.train}: no row has {spec.domain_column} in {spec.domain_values[DOMAINS[d]]} "
                                f"(the {DOMAINS[d]} domain)")
        if "test" not in files:
            test = members[stratified_sample(train.labels[members], spec.test_ratio, spec.seed + 1000 * d + 1)]
            train.part[test] = 2
            members = np.setdiff1d(members, test)
        valid = members[stratified_sample(train.labels[members], spec.valid_ratio, spec.seed + 1000 * d)]
        train.part[valid] = 1


# ----- pass 2: vocabularies and scaling from the source -----------------------------------------


class BlockMoments:
    """Count, sum and sum of squares of the finite values of every column, added in fixed blocks of
    rows: the same rows give the same float results however they arrive in chunks. Values are
    taken relative to each column's first finite value (``shift``), so a large offset costs no
    precision in the variance."""

    def __init__(self, n_columns: int, block: int = BLOCK_ROWS):
        self.block = block
        self.pending = np.empty((0, n_columns))
        self.shift = np.full(n_columns, np.nan)
        self.count = np.zeros(n_columns, dtype=np.int64)
        self.total = np.zeros(n_columns)
        self.squares = np.zeros(n_columns)

    def _add_block(self, values: np.ndarray) -> None:
        finite = np.isfinite(values)
        unset = np.isnan(self.shift) & finite.any(axis=0)
        if unset.any():  # the column's first finite value, in row order
            first = finite[:, unset].argmax(axis=0)
            self.shift[unset] = values[first, np.flatnonzero(unset)]
        clean = np.where(finite, values - np.nan_to_num(self.shift), 0.0)
        self.count += finite.sum(axis=0)
        self.total += clean.sum(axis=0)
        self.squares += (clean * clean).sum(axis=0)

    def add(self, values: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, values]) if len(self.pending) else np.asarray(values, float)
        n_full = len(self.pending) // self.block * self.block
        for start in range(0, n_full, self.block):
            self._add_block(np.ascontiguousarray(self.pending[start:start + self.block]))
        self.pending = self.pending[n_full:]

    def mean_std(self) -> Tuple[np.ndarray, np.ndarray]:
        """Mean and (population) standard deviation per column; std 1 where it is 0 or undefined."""
        if len(self.pending):
            self._add_block(np.ascontiguousarray(self.pending))
            self.pending = self.pending[:0]
        n = np.maximum(self.count, 1)
        relative = self.total / n
        std = np.sqrt(np.maximum(self.squares / n - relative * relative, 0.0))
        return np.nan_to_num(self.shift) + relative, np.where(std > 0, std, 1.0)


@dataclass
class Fitted:
    """What the source's training rows fix: the known values of each categorical column (code =
    position; unknown code = the count) and each numerical column's mean and std."""

    vocab: Dict[str, List[str]]
    mean: np.ndarray
    std: np.ndarray


def fit_source(spec: TabularSpec, rows: FileRows) -> Fitted:
    """Pass 2 over the training file, on the source domain's training rows only."""
    counts = {c: pd.Series(dtype=np.int64) for c in spec.categorical}
    moments = BlockMoments(len(spec.numerical))
    keep_all = (rows.part == 0) & (rows.domain == 0)
    start = 0
    for chunk in read_chunks(spec.train, spec, spec.categorical + spec.numerical, spec.chunksize):
        keep = keep_all[start:start + len(chunk)]
        start += len(chunk)
        part = chunk[keep]
        for column in spec.categorical:
            counts[column] = counts[column].add(part[column].value_counts(), fill_value=0)
        if spec.numerical:
            values = part[spec.numerical].to_numpy(dtype=np.float64)
            moments.add(values)
    vocab = {c: sorted(str(v) for v, n in counts[c].items() if n >= int(spec.min_count)) for c in spec.categorical}
    mean, std = moments.mean_std()
    return Fitted(vocab, mean, std)


# ----- pass 3: writing --------------------------------------------------------------------------


def categorical_field(j: int) -> str:
    """The atomic field of the ``j``-th categorical column (0-based): ``categorical_<j+1>``."""
    return f"categorical_{j + 1}"


def numerical_field(j: int) -> str:
    return f"numerical_{j + 1}"


def atomic_header(layout: MultiTaskLayout) -> List[str]:
    return (["search_id:token"] + [f"{c}:float" for c in layout.categorical] + [f"{c}:float" for c in layout.numerical]
            + [f"{c}:float" for c in LABELS])


@dataclass
class EncodedRows:
    """Rows in the atomic layout: search ids, codes (N, k), standardised numbers (N, n; NaN =
    missing), labels (N, 2)."""

    ids: List[str]
    codes: np.ndarray
    numbers: np.ndarray
    labels: np.ndarray

    def lines(self, selected: np.ndarray) -> str:
        """The selected rows as tab-separated lines: numbers as ``%.6g``, a missing one as an empty cell
        (formatted here, not by ``DataFrame.to_csv``, which is 3 times slower)."""
        number = "{:.6g}".format
        out = []
        for i, codes, numbers, labels in zip(np.flatnonzero(selected).tolist(), self.codes[selected].tolist(),
                                             self.numbers[selected].tolist(), self.labels[selected].tolist()):
            out.append("\t".join([self.ids[i], *map(str, codes), *map(number, numbers), *map(str, labels)]))
        return "\n".join(out).replace("nan", "") + "\n"  # "nan" only where a number is missing


def encode_chunk(chunk: pd.DataFrame, spec: TabularSpec, fitted: Fitted, labels: np.ndarray,
                 search_ids: List[str]) -> EncodedRows:
    """One chunk in the atomic layout: codes (unknown value -> vocabulary size), standardised numbers
    (missing -> NaN, written as an empty cell), the labels."""
    codes = np.zeros((len(chunk), len(spec.categorical)), dtype=np.int64)
    for j, column in enumerate(spec.categorical):
        vocab = fitted.vocab[column]
        found = pd.Categorical(chunk[column], categories=vocab).codes.astype(np.int64)
        codes[:, j] = np.where(found < 0, len(vocab), found)
    numbers = (chunk[spec.numerical].to_numpy(dtype=np.float64) - fitted.mean) / fitted.std
    numbers[~np.isfinite(numbers)] = np.nan
    return EncodedRows(search_ids, codes, numbers, labels.astype(np.int64))


def write_parts(spec: TabularSpec, fitted: Fitted, files: Dict[str, FileRows], folders: Dict[str, str],
                layout: MultiTaskLayout) -> None:
    """Pass 3: every row of both domains, encoded, appended to ``<folder>/<name>.<part>.inter``."""
    header = "\t".join(atomic_header(layout)) + "\n"
    with ExitStack() as stack:
        handles: Dict[Tuple[int, int], IO] = {}
        for d, domain in enumerate(DOMAINS):
            for p, part in enumerate(PARTS):
                name = spec.names[domain]
                handle = stack.enter_context(open(os.path.join(folders[domain], f"{name}.{part}.inter"), "w",
                                                  encoding="utf-8", newline=""))
                handle.write(header)
                handles[d, p] = handle
        for role, path in spec.files():
            rows, start = files[role], 0
            for chunk in read_chunks(path, spec, spec.categorical + spec.numerical, spec.chunksize):
                stop = start + len(chunk)
                domain, part = rows.domain[start:stop], rows.part[start:stop]
                prefix = "" if role == "train" else "test-"
                ids = [f"{prefix}{line}" for line in rows.lines[start:stop].tolist()]
                encoded = encode_chunk(chunk, spec, fitted, rows.labels[start:stop], ids)
                for (d, p), handle in handles.items():
                    selected = (domain == d) & (part == p)
                    if selected.any():
                        handle.write(encoded.lines(selected))
                start = stop


def layout_payload(spec: TabularSpec, fitted: Fitted, files: Dict[str, FileRows], domain: str) -> dict:
    """``<name>.tabular.json``: fields and where they come from, vocabularies, scaling, tasks, rows."""
    d = DOMAINS.index(domain)
    rows, rates = {}, {}
    for p, part in enumerate(PARTS):
        labels = np.concatenate([r.labels[(r.domain == d) & (r.part == p)] for r in files.values()])
        rows[part] = int(len(labels))
        rates[part] = {label: (float(labels[:, j].mean()) if len(labels) else None) for j, label in enumerate(LABELS)}
    return {
        "format": LAYOUT_FORMAT,
        "role": domain,
        "source_dataset": spec.names["source"],
        "target_dataset": spec.names["target"],
        "domain": {"column": spec.domain_column, "values": spec.domain_values[domain],
                   "source_values": spec.domain_values["source"]},
        "tasks": {label: {"name": name, "expression": expr.text} for label, (name, expr) in zip(LABELS, spec.tasks)},
        "categorical": [{"field": categorical_field(j), "column": c, "vocab_size": len(fitted.vocab[c]),
                         "unknown_code": len(fitted.vocab[c])} for j, c in enumerate(spec.categorical)],
        "numerical": [{"field": numerical_field(j), "column": c, "mean": float(fitted.mean[j]),
                       "std": float(fitted.std[j])} for j, c in enumerate(spec.numerical)],
        "dropped": spec.drop,
        "rows": rows,
        "positive_rate": rates,
        "split": {"valid_ratio": spec.valid_ratio, "test_ratio": None if spec.test else spec.test_ratio,
                  "seed": spec.seed, "test_file": bool(spec.test)},
    }


def convert_tabular(spec: TabularSpec, out_dir: str) -> Dict[str, dict]:
    """Convert: ``<out_dir>/<source name>/`` and ``<out_dir>/<target name>/``, each folder written
    whole or not at all. Returns each domain's layout payload (rows, positive rates, fields)."""
    files = {role: scan_rows(path, spec) for role, path in spec.files()}
    assign_parts(files, spec)
    fitted = fit_source(spec, files["train"])
    layout = MultiTaskLayout([categorical_field(j) for j in range(len(spec.categorical))],
                             [numerical_field(j) for j in range(len(spec.numerical))])
    payloads = {}
    with ExitStack() as stack:
        folders = {d: stack.enter_context(atomic_folder(os.path.join(out_dir, spec.names[d]))) for d in DOMAINS}
        write_parts(spec, fitted, files, folders, layout)
        for domain in DOMAINS:
            payloads[domain] = layout_payload(spec, fitted, files, domain)
            with open(layout_path(folders[domain], spec.names[domain]), "w", encoding="utf-8") as f:
                json.dump(payloads[domain], f, indent=1)
    return payloads
