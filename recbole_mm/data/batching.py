"""Training batches with less repeated work than RecBole's prefix samples.

RecBole turns a user sequence of n items into n - 1 prefix samples, each padded to
``MAX_ITEM_LIST_LENGTH``. With a causal encoder the output at position t of the whole
sequence equals the output at the end of the prefix of length t, so one forward pass over
the whole sequence with a loss at every position does the same work once.
:class:`SequenceTrainDataLoader` yields such batches: ``item_id_list`` holds the inputs,
``target_item_list`` the next item at every position (0 = no target), and each batch is
trimmed to its longest row. The same loader also serves RecBole's prefix samples (one target
at the last position) with length-bucketed batches.

A batch holds about ``train_batch_size`` *target positions* (the number of prefix samples
it replaces), so an epoch makes as many optimiser steps as RecBole's loader would.
"""

from __future__ import annotations

from logging import getLogger
from typing import Iterator, List

import numpy as np
import torch
from recbole.data.interaction import Interaction

TARGET_SEQ_FIELD = "target_item_list"


def build_user_sequences(dataset, max_len: int):
    """Whole training sequences from a prefix-sample data set.

    For each user, the longest prefix row plus its target is the user's training sequence.
    Sequences longer than ``max_len + 1`` are cut into consecutive windows so that every
    target is predicted exactly once.

    Returns:
        (inputs, targets, lengths, users): inputs/targets are (S, max_len) int64 arrays.
    """
    inter = dataset.inter_feat
    item_seq = inter[dataset.item_id_list_field].numpy()
    lengths = inter[dataset.item_list_length_field].numpy()
    items = inter[dataset.iid_field].numpy()
    users = inter[dataset.uid_field].numpy()
    order = np.lexsort((lengths, users))
    last_of_user = np.ones(len(order), dtype=bool)
    last_of_user[:-1] = users[order[1:]] != users[order[:-1]]
    rows = order[last_of_user]

    n_prefix_rows = len(users)
    inputs, targets, seq_lengths, seq_users = [], [], [], []
    for row in rows:
        full = np.concatenate([item_seq[row, : lengths[row]], items[row : row + 1]])
        n_targets = len(full) - 1
        for start in range(0, n_targets, max_len):
            window = full[start : start + max_len + 1]
            inputs.append(window[:-1])
            targets.append(window[1:])
            seq_lengths.append(len(window) - 1)
            seq_users.append(users[row])
    n_targets_total = int(np.sum(seq_lengths))
    if n_targets_total != n_prefix_rows:
        getLogger().warning(
            f"whole-sequence training: {n_targets_total} target positions from {len(rows)} users, "
            f"but the training file has {n_prefix_rows} prefix rows; the prefix rows are not all "
            f"prefixes of one sequence per user, so whole-sequence training is not equivalent here"
        )
    padded_inputs = np.zeros((len(inputs), max_len), dtype=np.int64)
    padded_targets = np.zeros((len(inputs), max_len), dtype=np.int64)
    for i, (inp, tgt) in enumerate(zip(inputs, targets)):
        padded_inputs[i, : len(inp)] = inp
        padded_targets[i, : len(tgt)] = tgt
    return padded_inputs, padded_targets, np.asarray(seq_lengths, dtype=np.int64), np.asarray(seq_users)


def build_prefix_rows(dataset):
    """RecBole's prefix samples in the same layout: the target sits at the last position only."""
    inter = dataset.inter_feat
    inputs = inter[dataset.item_id_list_field].numpy().astype(np.int64)
    lengths = inter[dataset.item_list_length_field].numpy().astype(np.int64)
    targets = np.zeros_like(inputs)
    targets[np.arange(len(lengths)), np.maximum(lengths - 1, 0)] = inter[dataset.iid_field].numpy()
    return inputs, targets, lengths, inter[dataset.uid_field].numpy()


class _EpochSampler:
    """Holds the epoch number so that shuffling differs per epoch (RecBole calls ``set_epoch``)."""

    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class SequenceTrainDataLoader:
    """Training batches of sequences with a target per position; see the module docstring.

    ``whole_sequences=True``: one row per user sequence, a target at every position.
    ``whole_sequences=False``: RecBole's prefix samples, a target at the last position only
    (used for length-bucketed prefix training).

    Config keys: ``train_batch_size`` (target positions per batch), ``length_bucketing``
    (group rows of similar length to cut padding), ``trim_batches``, ``seed``.
    """

    def __init__(self, config, dataset, shuffle: bool = True, whole_sequences: bool = True):
        self.config = config
        self._dataset = dataset
        self.shuffle = shuffle
        self.whole_sequences = whole_sequences
        self.sampler = _EpochSampler()
        self.max_len = config["MAX_ITEM_LIST_LENGTH"]
        if whole_sequences:
            inputs, targets, lengths, users = build_user_sequences(dataset, self.max_len)
        else:
            inputs, targets, lengths, users = build_prefix_rows(dataset)
        self.inputs = torch.from_numpy(inputs)
        self.targets = torch.from_numpy(targets)
        self.lengths = torch.from_numpy(lengths)
        self.users = torch.from_numpy(users.astype(np.int64))
        self.item_seq_field = dataset.item_id_list_field
        self.item_len_field = dataset.item_list_length_field
        self.uid_field = dataset.uid_field
        self.rank = 0 if config["single_spec"] else int(config["local_rank"])
        self.world_size = 1 if config["single_spec"] else int(config["world_size"])
        # like RecBole's loaders: each rank takes 1/world_size of the global batch
        self.batch_targets = max(1, int(config["train_batch_size"]) // self.world_size)
        self.length_bucketing = bool(config["length_bucketing"])
        self.trim_batches = config["trim_batches"] is not False
        self._iterations = 0
        self.n_batches = len(self._make_batches(0))

    @property
    def dataset(self):
        return self._dataset

    def update_config(self, config) -> None:
        self.config = config

    def set_batch_size(self, batch_size: int) -> None:
        self.batch_targets = max(1, int(batch_size) // self.world_size)
        self.n_batches = len(self._make_batches(0))

    @property
    def n_rows(self) -> int:
        return len(self.lengths)

    def _make_batches(self, epoch: int) -> List[np.ndarray]:
        n = len(self.lengths)
        lengths = self.lengths.numpy()
        if self.shuffle:
            rng = np.random.default_rng(int(self.config["seed"]) + epoch)
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        if self.length_bucketing:
            # sort within windows of ~50 batches: similar lengths share a batch, batches stay random
            window = max(1, 50 * max(1, self.batch_targets // max(1, int(lengths.mean()))))
            chunks = [order[i : i + window] for i in range(0, n, window)]
            order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
        batches, current, count = [], [], 0
        for idx in order:
            current.append(idx)
            count += lengths[idx]
            if count >= self.batch_targets:
                batches.append(np.asarray(current))
                current, count = [], 0
        if current:
            batches.append(np.asarray(current))
        if self.shuffle and self.length_bucketing:
            rng = np.random.default_rng(int(self.config["seed"]) + 7919 * (epoch + 1))
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size > 1:
            # every rank must make the same number of steps: repeat a few batches to even out
            short = (-len(batches)) % self.world_size
            batches = batches + batches[:short]
            batches = batches[self.rank :: self.world_size]
        return batches

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[Interaction]:
        batches = self._make_batches(self.sampler.epoch if not self.shuffle else self._next_epoch())
        self.n_batches = len(batches)
        for index in batches:
            idx = torch.from_numpy(index)
            lengths = self.lengths[idx]
            width = int(lengths.max()) if self.trim_batches else self.max_len
            yield Interaction(
                {
                    self.uid_field: self.users[idx],
                    self.item_seq_field: self.inputs[idx, :width],
                    self.item_len_field: lengths,
                    TARGET_SEQ_FIELD: self.targets[idx, :width],
                }
            )

    def _next_epoch(self) -> int:
        # RecBole calls sampler.set_epoch only when distributed; count iterations otherwise
        epoch = self.sampler.epoch if self.world_size > 1 else self._iterations
        self._iterations += 1
        return epoch

