"""AliExpress-format multi-task CTR/CVR data: reading, validation, atomic files, synthetic countries.

Layout (MTReclib / AliExpress_{NL,ES,FR,US,RU}; ../shared/datasets/AliExpress_sample): columns
``search_id``, ``categorical_1..16`` (integer codes), ``numerical_1..63`` (floats), ``click``,
``conversion`` (0/1). Categorical codes are kept as **raw integers shared across countries**
(declared ``:float`` in the atomic files so RecBole does not re-map them per data set): a
model trained on one country can then be applied to another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import Dataset as RecBoleDataset
from recbole.data.interaction import Interaction

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


@dataclass
class CountrySpec:
    """One synthetic "country": feature distributions and label rates differ between countries."""

    name: str
    seed: int
    n_train: int = 20000
    n_test: int = 5000
    shift: float = 0.0  # moves feature distributions and the label model
    ctr_bias: float = -0.6  # logit offset of the click rate
    cvr_bias: float = -2.5  # logit offset of the conversion rate given a click


CATEGORICAL_CARDINALITY = [10, 4, 6, 2, 21, 7, 50, 8, 7, 2, 2, 2, 2, 2, 2, 2]
WORLD_SEED = 99


def _world():
    """Parameters shared by every country: how features drive clicks and conversions."""
    rng = np.random.default_rng(WORLD_SEED)
    cat_effects = [rng.normal(0, 0.6, size=(c, 2)) for c in CATEGORICAL_CARDINALITY]
    num_effects = rng.normal(0, 0.25, size=(N_NUMERICAL, 2))
    num_shift_direction = rng.normal(size=N_NUMERICAL)
    return cat_effects, num_effects, num_shift_direction


def generate_country(spec: CountrySpec, n_rows: int, seed: int) -> MultiTaskTable:
    cat_effects, num_effects, shift_dir = _world()
    rng = np.random.default_rng(seed)
    categorical = np.zeros((n_rows, N_CATEGORICAL), dtype=np.int64)
    for j, card in enumerate(CATEGORICAL_CARDINALITY):
        logits = np.random.default_rng(WORLD_SEED + j).normal(size=card) + spec.shift * np.random.default_rng(
            spec.seed + j).normal(size=card)
        probs = np.exp(logits) / np.exp(logits).sum()
        categorical[:, j] = rng.choice(card, size=n_rows, p=probs)
    numerical = rng.normal(size=(n_rows, N_NUMERICAL)) + spec.shift * shift_dir
    logit = np.zeros((n_rows, 2))
    for j in range(N_CATEGORICAL):
        logit += cat_effects[j][categorical[:, j]]
    logit += numerical @ num_effects
    logit[:, 0] += spec.ctr_bias + spec.shift * 0.5 * np.tanh(numerical[:, 0])  # country-specific pattern
    logit[:, 1] += spec.cvr_bias
    click = rng.random(n_rows) < 1 / (1 + np.exp(-logit[:, 0]))
    conversion = click & (rng.random(n_rows) < 1 / (1 + np.exp(-logit[:, 1])))
    search_id = np.asarray([f"{spec.name}-{seed}-{i}" for i in range(n_rows)])
    return MultiTaskTable(search_id, categorical, numerical.astype(np.float32),
                          np.stack([click, conversion], axis=1).astype(np.float32))


def write_country_csvs(spec: CountrySpec, out_dir: str) -> Dict[str, str]:
    """The country's ``<name>_train.csv`` / ``<name>_test.csv`` in the AliExpress CSV layout."""
    paths = {}
    for part, n_rows, seed in (("train", spec.n_train, spec.seed), ("test", spec.n_test, spec.seed + 1)):
        table = generate_country(spec, n_rows, seed)
        frame = pd.DataFrame(np.concatenate([table.categorical, table.numerical, table.labels], axis=1),
                             columns=CATEGORICAL + NUMERICAL + LABELS)
        for column in CATEGORICAL + LABELS:
            frame[column] = frame[column].astype(np.int64)
        frame.insert(0, "search_id", table.search_id)
        paths[part] = os.path.join(out_dir, f"{spec.name}_{part}.csv")
        with atomic_output(paths[part]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    return paths


SYNTHETIC_COUNTRIES: List[CountrySpec] = [
    CountrySpec("AE_SRC", seed=11, shift=0.0, ctr_bias=-0.4),
    CountrySpec("AE_TGT", seed=23, shift=0.8, ctr_bias=-1.0, cvr_bias=-2.0),
    CountrySpec("AE_FAR", seed=37, shift=1.6, ctr_bias=-1.4, cvr_bias=-2.0),
]


def write_synthetic_countries(data_path: str, specs: Optional[Sequence[CountrySpec]] = None) -> List[str]:
    """CSV pair and atomic files for every synthetic country under ``<data_path>/<name>/``."""
    folders = []
    for spec in specs or SYNTHETIC_COUNTRIES:
        folder = os.path.join(data_path, spec.name)
        csvs = write_country_csvs(spec, folder)
        convert_csv(csvs["train"], csvs["test"], folder, spec.name, seed=spec.seed)
        folders.append(folder)
    return folders


# ----- RecBole data set and loader ---------------------------------------------------------------


class MultiTaskDataset(RecBoleDataset):
    """RecBole ``Dataset`` over AliExpress-format atomic files (no user or item ids).

    Categorical codes are float fields holding raw integers (no per-data-set re-mapping), the
    numerical features float fields, ``click`` and ``conversion`` the two labels.
    """

    def tensors(self, inter=None):
        """(categorical int64 (N, 16), numerical float32 (N, 63), labels float32 (N, 2))."""
        inter = self.inter_feat if inter is None else inter
        categorical = torch.stack([inter[f] for f in CATEGORICAL], dim=1).long()
        numerical = torch.stack([inter[f] for f in NUMERICAL], dim=1).float()
        labels = torch.stack([inter[f] for f in LABELS], dim=1).float()
        return categorical, numerical, labels

    def vocab_sizes(self) -> List[int]:
        """Largest raw code + 1 of every categorical field (over the loaded rows)."""
        frame = self.inter_feat
        if isinstance(frame, pd.DataFrame):
            return [int(frame[f].max()) + 1 for f in CATEGORICAL]
        return [int(frame[f].max().item()) + 1 for f in CATEGORICAL]


class MultiTaskDataLoader:
    """Shuffled (or ordered) batches of ``Interaction(categorical, numerical, labels)``."""

    def __init__(self, config, dataset: MultiTaskDataset, batch_size: int, shuffle: bool, rows=None):
        self.config, self._dataset, self.shuffle = config, dataset, shuffle
        categorical, numerical, labels = dataset.tensors()
        if rows is not None:
            index = torch.as_tensor(rows)
            categorical, numerical, labels = categorical[index], numerical[index], labels[index]
        self.categorical, self.numerical, self.labels = categorical, numerical, labels
        self.batch_size = int(batch_size)
        self.generator = torch.Generator().manual_seed(int(config["seed"]))

        class _Sampler:  # RecBole calls sampler.set_epoch when distributed
            def set_epoch(self, epoch):
                pass

        self.sampler = _Sampler()

    @property
    def dataset(self):
        return self._dataset

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield Interaction({"categorical": self.categorical[idx], "numerical": self.numerical[idx],
                               "labels": self.labels[idx]})
