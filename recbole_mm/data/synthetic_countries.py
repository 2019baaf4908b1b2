"""Synthetic "countries" in the AliExpress layout: the embedded default multi-task data.

Every country shares one "world" (how features drive clicks and conversions) and shifts the
feature distributions and label rates its own way (``CountrySpec.shift``), so a model trained
on one country meets a real domain shift on another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from recbole_mm.data.aliexpress import CATEGORICAL, LABELS, N_CATEGORICAL, N_NUMERICAL, NUMERICAL, MultiTaskTable, convert_csv
from recbole_mm.fileio import atomic_folder, atomic_output


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


def write_synthetic_countries(data_path: str, specs: Optional[Sequence[CountrySpec]] = None,
                              overwrite: bool = True) -> List[str]:
    """CSV pair and atomic files for every synthetic country under ``<data_path>/<name>/``, each
    folder written as a whole (a reader never sees half of one). Without ``overwrite`` a folder
    that is there (or that another process writes meanwhile) is kept."""
    folders = []
    for spec in specs or SYNTHETIC_COUNTRIES:
        folder = os.path.join(data_path, spec.name)
        if overwrite or not os.path.isdir(folder):
            with atomic_folder(folder, replace=overwrite) as tmp:
                csvs = write_country_csvs(spec, tmp)
                convert_csv(csvs["train"], csvs["test"], tmp, spec.name, seed=spec.seed)
        folders.append(folder)
    return folders
