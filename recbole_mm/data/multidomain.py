"""Several domains at once, for multi-domain pre-training (docs/transfer.md).

Each domain is an ordinary :class:`~recbole_mm.data.dataset.MMSequentialDataset` with its own
item ids and feature files. For pre-training the domains' item ids are laid side by side in one
global id space (domain ``d``'s item ``i > 0`` becomes ``offsets[d] + i``; 0 stays padding),
so that one batch can hold sequences of every domain and the model can look up any batch
item's features in one concatenated table (:class:`MultiDomainDataset`).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

import numpy as np
import torch

from recbole_mm.data.batching import SequenceTrainDataLoader, build_user_sequences
from recbole_mm.data.features import ItemFeature, log_popularity


def domain_names(dataset: Union[str, Sequence[str]]) -> List[str]:
    """``"A,B,C"`` or ``["A", "B", "C"]`` -> ``["A", "B", "C"]`` (each name once)."""
    names = dataset.split(",") if isinstance(dataset, str) else list(dataset)
    names = [str(n).strip() for n in names if str(n).strip()]
    if not names:
        raise ValueError("config key `dataset`: no data set named")
    if len(set(names)) != len(names):
        raise ValueError(f"config key `dataset`: a data set is listed twice in {names}")
    return names


class MultiDomainDataset:
    """The item side of several domains in one global id space (see the module docstring).

    Offers what a plugin model's constructor reads from a data set: ``num(item field)``,
    ``item_features`` (one concatenated :class:`ItemFeature` per modality) and field names.
    """

    def __init__(self, datasets: Sequence, names: Sequence[str]):
        self.datasets, self.names = list(datasets), list(names)
        first = self.datasets[0]
        self.iid_field, self.uid_field = first.iid_field, first.uid_field
        self.item_id_list_field, self.item_list_length_field = first.item_id_list_field, first.item_list_length_field
        self.dataset_name = ",".join(self.names)
        sizes = [ds.item_num for ds in self.datasets]  # each counts its padding id 0
        self.offsets = np.concatenate([[0], np.cumsum([n - 1 for n in sizes])[:-1]]).astype(np.int64)
        self.n_items = 1 + sum(n - 1 for n in sizes)
        self.domain_items = {name: n - 1 for name, n in zip(self.names, sizes)}
        self.item_features = self._concatenate_features()
        self.train_splits = [ds.build()[0] for ds in self.datasets]  # RecBole's split: the train part

    def _concatenate_features(self) -> Dict[str, ItemFeature]:
        reference = self.datasets[0].item_features
        for name, ds in zip(self.names[1:], self.datasets[1:]):
            extra = sorted(set(ds.item_features) - set(reference))
            if extra:
                raise ValueError(f"domain {name!r} has {' and '.join(extra)} features but {self.names[0]!r} has none: "
                                 f"pre-training domains need the same modalities; set config key `modalities` to "
                                 f"those every domain has (e.g. --modalities=text)")
        features = {}
        for modality, first in reference.items():
            matrices, masks = [first.matrix[:1] * 0], [np.zeros(1, dtype=bool)]
            for name, ds in zip(self.names, self.datasets):
                feature = ds.item_features.get(modality)
                if feature is None:
                    raise ValueError(f"domain {name!r} has no {modality} features but {self.names[0]!r} has: "
                                     f"every pre-training domain needs the modalities in config key `modalities`")
                if feature.dim != first.dim:
                    raise ValueError(
                        f"{modality} features have dimension {feature.dim} in domain {name!r} ({feature.source}) "
                        f"but {first.dim} in {self.names[0]!r} ({first.source}): pre-training domains must share "
                        f"each modality's encoder"
                    )
                matrices.append(feature.matrix[1:])
                masks.append(feature.mask[1:])
            features[modality] = ItemFeature(modality, np.concatenate(matrices), np.concatenate(masks),
                                             source="+".join(f.source for f in
                                                             (d.item_features[modality] for d in self.datasets)))
        return features

    def item_log_popularity(self) -> np.ndarray:
        """log p(item) over every domain's training targets, global item ids (see
        :meth:`recbole_mm.data.dataset.BenchmarkSequentialDataset.item_log_popularity`)."""
        items = np.concatenate([self.global_ids(d, split.inter_feat[split.iid_field].numpy())
                                for d, split in enumerate(self.train_splits)])
        return log_popularity(items, self.n_items)

    def num(self, field: str) -> int:
        if field == self.iid_field:
            return self.n_items
        raise KeyError(f"MultiDomainDataset knows only the item field {self.iid_field!r}, not {field!r}")

    def global_ids(self, domain: int, ids: np.ndarray) -> np.ndarray:
        """Domain-local item ids -> global ids (padding 0 stays 0)."""
        return np.where(ids > 0, ids + self.offsets[domain], 0)

    def __str__(self) -> str:
        parts = [f"{name}: {n} items" for name, n in self.domain_items.items()]
        return f"MultiDomainDataset({', '.join(parts)}; {self.n_items - 1} items in all)"


class MultiDomainTrainLoader(SequenceTrainDataLoader):
    """Whole-sequence training rows of every domain, global item ids, shuffled together: each
    batch mixes domains (with length bucketing: domains of similar sequence lengths). The
    ``domain`` tensor gives each row's domain index."""

    def __init__(self, config, multi: MultiDomainDataset, shuffle: bool = True):
        super().__init__(config, multi.train_splits[0], shuffle=shuffle, whole_sequences=True)
        inputs, targets, lengths, users, domains = [], [], [], [], []
        user_offset = 0
        for d, ds in enumerate(multi.train_splits):
            if d == 0:
                parts = (self.inputs.numpy(), self.targets.numpy(), self.lengths.numpy(), self.users.numpy())
            else:
                parts = build_user_sequences(ds, self.max_len)
            inputs.append(multi.global_ids(d, parts[0]))
            targets.append(multi.global_ids(d, parts[1]))
            lengths.append(parts[2])
            users.append(parts[3].astype(np.int64) + user_offset)
            domains.append(np.full(len(parts[2]), d, dtype=np.int64))
            user_offset += ds.user_num
        self._dataset = multi
        self.inputs = torch.from_numpy(np.concatenate(inputs))
        self.targets = torch.from_numpy(np.concatenate(targets))
        self.lengths = torch.from_numpy(np.concatenate(lengths))
        self.users = torch.from_numpy(np.concatenate(users))
        self.domain = torch.from_numpy(np.concatenate(domains))
        self.targets_per_row = (self.targets.numpy() > 0).sum(axis=1)
        self.n_batches = len(self._make_batches(0))
