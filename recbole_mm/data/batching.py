"""Training batches with less repeated work than RecBole's prefix samples.

RecBole turns a user sequence of n items into n - 1 prefix samples, each padded to
``MAX_ITEM_LIST_LENGTH``. With a causal encoder the output at position t of the whole
sequence equals the output at the end of the prefix of length t, so one forward pass over
the whole sequence with a loss at every position does the same work once.
:class:`SequenceTrainDataLoader` yields such batches: ``item_id_list`` holds the inputs,
the field named by config key ``TARGET_ITEM_LIST_FIELD`` (``target_item_list``) the next item at every position (0 = no target), and each batch is
trimmed to its longest row. The same loader also serves RecBole's prefix samples (one target
at the last position) with length-bucketed batches.

A batch holds about ``train_batch_size`` *target positions* (the number of prefix samples
it replaces), so an epoch makes as many optimiser steps as RecBole's loader would.
"""

from __future__ import annotations

from typing import Iterator, List

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.data.transform import construct_transform

from recbole_mm.config import global_rank



def _chain_user_rows(histories, targets, max_len):
    """Rebuild one user's sequence from its prefix rows.

    Starts from the shortest history and repeatedly appends the target of the row whose history
    is the sequence's last ``max_len`` items (histories longer than ``max_len`` were cut to their
    most recent items). Returns (sequence, index of the first target, rows not on the chain).
    """
    by_history = {}
    leftovers = []
    for hist, target in zip(histories, targets):
        key = tuple(hist)
        if key in by_history:  # two rows with one history: keep the second as a plain prefix row
            leftovers.append((hist, target))
        else:
            by_history[key] = target
    start = min(by_history, key=len)
    sequence = list(start) + [by_history.pop(start)]
    while True:
        key = tuple(sequence[-max_len:])
        if key not in by_history:
            break
        sequence.append(by_history.pop(key))
    leftovers += [(list(k), t) for k, t in by_history.items()]
    return sequence, len(start), leftovers


def build_user_sequences(dataset, max_len: int):
    """Whole training rows from a prefix-sample data set, exactly equivalent to the prefix samples.

    Each user's prefix rows are chained into one sequence (see :func:`_chain_user_rows`). Its first
    ``max_len`` inputs form one row with a target at every position; every later target (whose
    prefix sample has a history cut to ``max_len`` items) gets a row of its own, holding that
    history and a target at the last position only. Rows off the chain stay prefix rows.

    Returns:
        (inputs, targets, lengths, users): inputs/targets are (R, max_len) int64 arrays; a
        target of 0 means "no loss at this position".
    """
    inter = dataset.inter_feat
    item_seq = inter[dataset.item_id_list_field].numpy()
    lengths = inter[dataset.item_list_length_field].numpy()
    items = inter[dataset.iid_field].numpy()
    users = inter[dataset.uid_field].numpy()
    order = np.argsort(users, kind="stable")
    boundaries = np.flatnonzero(np.diff(users[order])) + 1

    rows = []  # (user, inputs, targets)
    for group in np.split(order, boundaries):
        user = users[group[0]]
        histories = [item_seq[r, : lengths[r]].tolist() for r in group]
        sequence, first_target, leftovers = _chain_user_rows(histories, items[group].tolist(), max_len)
        inputs, targets = sequence[:-1], list(sequence[1:])
        for position in range(first_target - 1):
            targets[position] = 0
        head = min(len(inputs), max_len)
        rows.append((user, inputs[:head], targets[:head]))
        for t in range(head, len(inputs)):
            window = inputs[t - max_len + 1 : t + 1]
            rows.append((user, window, [0] * (len(window) - 1) + [targets[t]]))
        for hist, target in leftovers:
            rows.append((user, hist, [0] * (len(hist) - 1) + [target]))

    padded_inputs = np.zeros((len(rows), max_len), dtype=np.int64)
    padded_targets = np.zeros((len(rows), max_len), dtype=np.int64)
    row_lengths = np.zeros(len(rows), dtype=np.int64)
    row_users = np.zeros(len(rows), dtype=users.dtype)
    for i, (user, inp, tgt) in enumerate(rows):
        padded_inputs[i, : len(inp)] = inp
        padded_targets[i, : len(tgt)] = tgt
        row_lengths[i] = len(inp)
        row_users[i] = user
    n_targets = int((padded_targets > 0).sum())
    if n_targets != len(users):
        raise AssertionError(f"whole-sequence rows hold {n_targets} targets for {len(users)} prefix rows")
    return padded_inputs, padded_targets, row_lengths, row_users


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
        self.target_field = config["TARGET_ITEM_LIST_FIELD"]
        if whole_sequences:
            inputs, targets, lengths, users = build_user_sequences(dataset, self.max_len)
        else:
            inputs, targets, lengths, users = build_prefix_rows(dataset)
        self.inputs = torch.from_numpy(inputs)
        self.targets = torch.from_numpy(targets)
        self.lengths = torch.from_numpy(lengths)
        self.users = torch.from_numpy(users.astype(np.int64))
        self.targets_per_row = (targets > 0).sum(axis=1)
        self.item_seq_field = dataset.item_id_list_field
        self.item_len_field = dataset.item_list_length_field
        self.uid_field = dataset.uid_field
        self.rank = global_rank(config)  # this process's share among all nodes' processes
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

    def begin_epoch(self, epoch: int) -> None:
        """The next pass yields epoch ``epoch``'s batches: their order depends only on (``seed``,
        ``epoch``), so a resumed run (or a continued adaptation probe) sees the batches of an
        uninterrupted one."""
        self.sampler.set_epoch(epoch)
        self._iterations = epoch

    def order_state(self) -> dict:
        """What fixes the next passes' batch order (plain numbers), for a training resume state."""
        return {"iterations": int(self._iterations), "epoch": int(self.sampler.epoch)}

    def load_order_state(self, state: dict) -> None:
        """Continue the batch orders of :meth:`order_state`'s loader."""
        self._iterations = int(state["iterations"])
        self.sampler.set_epoch(int(state["epoch"]))

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
            count += self.targets_per_row[idx]
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
                    self.target_field: self.targets[idx, :width],
                }
            )

    def _next_epoch(self) -> int:
        # RecBole calls sampler.set_epoch only when distributed; count iterations otherwise
        epoch = self.sampler.epoch if self.world_size > 1 else self._iterations
        self._iterations += 1
        return epoch


class PrefixTrainDataLoader(SequenceTrainDataLoader):
    """RecBole's prefix samples for *stock* sequential models, in length-bucketed batches trimmed
    to their longest row (``stock_length_bucketing``).

    Yields the fields a stock model's ``calculate_loss`` reads (user id, history, history
    length, next item), so the model code runs unchanged; each sample is the one RecBole's loader
    would give, only the batches group samples of similar length.
    """

    def __init__(self, config, dataset, shuffle: bool = True):
        super().__init__(config, dataset, shuffle=shuffle, whole_sequences=False)
        self.iid_field = dataset.iid_field

    def __iter__(self) -> Iterator[Interaction]:
        for batch in super().__iter__():
            targets = batch[self.target_field]
            lengths = batch[self.item_len_field]
            next_items = targets[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)]
            yield Interaction(
                {
                    self.uid_field: batch[self.uid_field],
                    self.item_seq_field: batch[self.item_seq_field],
                    self.item_len_field: lengths,
                    self.iid_field: next_items,
                }
            )


class WholeSequenceRowsLoader(SequenceTrainDataLoader):
    """One row per user training sequence (its inputs followed by its last target, the most recent
    ``MAX_ITEM_LIST_LENGTH`` items), for stock models that build their own samples from a
    sequence (``stock_whole_sequence_rows``): S3Rec's pre-training and cloze models such as
    BERT4Rec, whose RecBole transform (``mask_itemseq``) is applied to each batch as RecBole's
    loader would. A batch holds ``train_batch_size`` rows, trimmed to its longest row (exact for
    models whose attention masks padding)."""

    def __init__(self, config, dataset, shuffle: bool = True):
        super().__init__(config, dataset, shuffle=shuffle, whole_sequences=True)
        rows = torch.arange(len(self.lengths))
        last_target = self.targets[rows, (self.lengths - 1).clamp(min=0)]
        full = torch.cat([self.inputs, torch.zeros_like(self.inputs[:, :1])], dim=1)
        full[rows, self.lengths] = last_target
        full_lengths = self.lengths + 1
        overflow = (full_lengths - self.max_len).clamp(min=0)  # drop the oldest item of a full row
        keep = torch.arange(self.max_len).unsqueeze(0) + overflow.unsqueeze(1)
        self.inputs = torch.gather(full, 1, keep)
        self.lengths = full_lengths - overflow
        self.targets = torch.zeros_like(self.inputs)
        self.targets_per_row = np.ones(len(self.lengths), dtype=np.int64)  # batch size counts rows
        self.n_batches = len(self._make_batches(0))
        self.transform = construct_transform(config)

    def __iter__(self) -> Iterator[Interaction]:
        for batch in super().__iter__():
            rows = Interaction(
                {
                    self.uid_field: batch[self.uid_field],
                    self.item_seq_field: batch[self.item_seq_field],
                    self.item_len_field: batch[self.item_len_field],
                }
            )
            yield self.transform(self._dataset, rows)

