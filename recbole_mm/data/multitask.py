"""Multi-task CTR/CVR data sets and loaders (AliExpress-format atomic files, docs/multitask.md).

:class:`MultiTaskDataset` is RecBole's ``Dataset`` over the files of :mod:`recbole_mm.data.aliexpress`
(or of :mod:`recbole_mm.data.tabular`, fields from ``<D>.tabular.json``);
:func:`multitask_dataloaders` builds the train / valid / test loaders for every model of type
``MMModelType.MULTITASK``; :class:`SourceTargetLoader` pairs a source data set's batches with the
target's for ``MMModelType.ADVERSARIAL`` models (TAA, DAA).
"""

from __future__ import annotations

import os
from typing import Iterator, List, Tuple

import numpy as np
import pandas as pd
import torch
from recbole.data.dataset import Dataset as RecBoleDataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource

from recbole_mm.config import check_choice
from recbole_mm.data.aliexpress import LABELS, check_codes, check_labels, stratified_sample
from recbole_mm.data.atomic_files import DataFileError, non_finite_as_missing
from recbole_mm.data.tabular import ALIEXPRESS_LAYOUT, MultiTaskLayout, read_layout

# the metric that each label's classes make defined, per task
LABEL_METRICS = {"click": "ctr_auc", "conversion": "ctcvr_auc"}


class MultiTaskDataset(RecBoleDataset):
    """RecBole ``Dataset`` over AliExpress-format atomic files (no user or item ids).

    Categorical codes are float fields holding raw integers (no per-data-set re-mapping), the
    numerical features float fields, ``click`` and ``conversion`` the two labels. As a file is
    read, a code or label that is not valid is an error naming its line and column; a numerical
    value that is empty, NaN or infinite is missing (counted in the log, filled with the column
    mean), so no NaN or infinite value reaches training.

    The fields: the AliExpress layout (16 categorical, 63 numerical), or those of
    ``<D>.tabular.json`` beside the atomic files (a data set of ``recbole_mm.data.tabular``,
    whose vocabulary sizes come from there too): :attr:`layout`.
    """

    def __init__(self, config):
        self.layout: MultiTaskLayout = read_layout(config["data_path"], config["dataset"])
        super().__init__(config)

    def _load_feat(self, filepath, source):
        frame = super()._load_feat(filepath, source)
        if frame is not None and source == FeatureSource.INTERACTION:
            check_multitask_frame(frame, filepath, self.layout)
        return frame

    @property
    def n_numerical(self) -> int:
        return len(self.layout.numerical)

    def tensors(self, inter=None):
        """(categorical int64 (N, k), numerical float32 (N, n), labels float32 (N, 2)); AliExpress: k 16, n 63."""
        inter = self.inter_feat if inter is None else inter
        categorical = torch.stack([inter[f] for f in self.layout.categorical], dim=1).long()
        numerical = torch.stack([inter[f] for f in self.layout.numerical], dim=1).float()
        labels = torch.stack([inter[f] for f in LABELS], dim=1).float()
        return categorical, numerical, labels

    def vocab_sizes(self) -> List[int]:
        """The layout's vocabulary size of every categorical field (a converted tabular data set:
        the source's; its unknown code is that size); else the largest raw code + 1 over the loaded rows."""
        if self.layout.vocab_sizes is not None:
            return list(self.layout.vocab_sizes)
        frame = self.inter_feat
        if isinstance(frame, pd.DataFrame):
            return [int(frame[f].max()) + 1 for f in self.layout.categorical]
        return [int(frame[f].max().item()) + 1 for f in self.layout.categorical]


def check_multitask_frame(frame: pd.DataFrame, path: str, layout: MultiTaskLayout = ALIEXPRESS_LAYOUT) -> None:
    """A loaded multi-task atomic file: codes and labels valid (else an error naming the cell),
    numerical values finite or missing (the count logged)."""
    present = [c for c in layout.categorical + LABELS if c in frame.columns]
    if len(present) == len(layout.categorical + LABELS):
        check_codes(frame, frame[layout.categorical].to_numpy(dtype=np.float64, na_value=np.nan), path,
                    layout.categorical)
        check_labels(frame, frame[LABELS].to_numpy(dtype=np.float64, na_value=np.nan), path)
    non_finite_as_missing(frame, layout.numerical, path)


def check_label_classes(labels: np.ndarray, path: str) -> None:
    """``DataFileError`` when a label of a validation split holds one class only: its AUC, and
    model selection on it, would be undefined."""
    for j, label in enumerate(LABELS):
        classes = np.unique(labels[:, j])
        if len(classes) < 2:
            value = int(classes[0]) if len(classes) else "no row"
            raise DataFileError(f"{path}: every row has {label} = {value}; {LABEL_METRICS[label]} on the validation "
                                f"split is undefined. Expected rows with {label} 0 and 1 (a stratified split, as "
                                f"recbole_mm.data.aliexpress.convert_csv draws)")


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

    def order_state(self) -> dict:
        """What fixes the next passes' row order (the shuffling generator), for a training resume state."""
        return {"generator": self.generator.get_state()}

    def load_order_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def batch(self, idx: torch.Tensor) -> Interaction:
        """The rows ``idx`` of this loader as one batch."""
        return Interaction({"categorical": self.categorical[idx], "numerical": self.numerical[idx],
                            "labels": self.labels[idx]})

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            yield self.batch(order[start : start + self.batch_size])


def multitask_dataloaders(config, dataset: MultiTaskDataset):
    """Train / valid / test loaders over the data set's pre-split files. With
    ``train_sample_ratio`` < 1 training uses a stratified sample of the training rows (label
    rates kept): the "little target data" setting of the adaptation experiments."""
    train, valid, test = dataset.build()
    valid_labels = valid.tensors()[2].numpy()
    check_label_classes(valid_labels, _split_file(config, dataset, 1))
    rows = None
    ratio = config["train_sample_ratio"]
    train_labels = train.tensors()[2].numpy()
    n_train = len(train_labels)
    if ratio is not None and ratio < 1:
        rows = stratified_sample(train_labels, ratio, int(config["seed"]))
        n_train = len(rows)
    valid_rows = valid_sample_rows(config, valid_labels, n_train)
    if valid_rows is not None:
        check_label_classes(valid_labels[valid_rows],
                            f"{_split_file(config, dataset, 1)} (the {len(valid_rows)} rows of valid_sample)")
    return (
        MultiTaskDataLoader(config, train, config["train_batch_size"], shuffle=config["shuffle"], rows=rows),
        MultiTaskDataLoader(config, valid, config["eval_batch_size"], shuffle=False, rows=valid_rows),
        MultiTaskDataLoader(config, test, config["eval_batch_size"], shuffle=False),
    )


VALID_SAMPLES = ("same_as_train", "full")


def valid_sample_rows(config, labels: np.ndarray, n_train: int):
    """Rows of the validation split (its ``labels``) that model selection reads: ``valid_sample:
    full`` all of them; ``same_as_train`` (default) a stratified sample as large as the training
    rows when those are fewer (little target data means a little validation data too), else all
    (``None``)."""
    choice = config["valid_sample"] or "full"
    check_choice("valid_sample", choice, VALID_SAMPLES)
    if choice == "full" or n_train >= len(labels):
        return None
    # a different draw from the training sample's (seed + 1): the two splits are disjoint anyway
    return stratified_sample(labels, n_train / len(labels), int(config["seed"]) + 1)


def _split_file(config, dataset, part: int) -> str:
    """The atomic file of a split (0 train, 1 valid, 2 test) of a pre-split data set."""
    name = config["benchmark_filename"][part]
    return os.path.join(dataset.dataset_path, f"{dataset.dataset_name}.{name}.inter")


class SourceTargetLoader:
    """Training batches of an adversarial adaptation: each step a (source batch, target batch)
    pair of the same size. An epoch is one pass over ``target`` (the stratified target sample);
    each target batch is paired with the next rows of a random order of the source training rows,
    drawn afresh when it runs out, so every epoch sees a random share of the source (the public
    code reads a random half of the source file per epoch and stops with the target).
    ``dataset`` is the target's, as RecBole's trainer expects of a training loader."""

    def __init__(self, source: MultiTaskDataLoader, target: MultiTaskDataLoader):
        self.source, self.target = source, target
        self.sampler = target.sampler
        self._order = torch.empty(0, dtype=torch.long)  # source rows not yet paired, in order
        self._next = 0

    @property
    def dataset(self):
        return self.target.dataset

    @property
    def _dataset(self):
        return self.target._dataset

    def __len__(self) -> int:
        return len(self.target)

    def order_state(self) -> dict:
        return {"source": self.source.order_state(), "target": self.target.order_state(),
                "source_order": self._order.clone(), "source_next": int(self._next)}

    def load_order_state(self, state: dict) -> None:
        self.source.load_order_state(state["source"])
        self.target.load_order_state(state["target"])
        self._order, self._next = state["source_order"].clone(), int(state["source_next"])

    def _source_rows(self, n: int) -> torch.Tensor:
        taken = []
        while n > 0:
            if self._next >= len(self._order):
                self._order = torch.randperm(len(self.source.labels), generator=self.source.generator)
                self._next = 0
            part = self._order[self._next : self._next + n]
            self._next += len(part)
            n -= len(part)
            taken.append(part)
        return torch.cat(taken)

    def __iter__(self) -> Iterator[Tuple[Interaction, Interaction]]:
        for target_batch in self.target:
            yield self.source.batch(self._source_rows(len(target_batch["labels"]))), target_batch
