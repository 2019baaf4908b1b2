"""Base class of the plugin's sequential models.

A subclass says how to build the table of all item representations (``item_table``) and
how to encode a sequence of them (``encode_sequence``); this class provides RecBole's
``calculate_loss`` / ``predict`` / ``full_sort_predict`` on top, with:

- batches trimmed to their longest real sequence (exact under causal + padding masks);
- whole-sequence training: when a batch carries the targets field (config key
  ``TARGET_ITEM_LIST_FIELD``, see :mod:`recbole_mm.data.batching`) the loss is taken at every
  position; :meth:`training_targets` is the one place that reads a batch's targets;
- the item table computed once per evaluation pass and reused for every batch (the cache is
  dropped whenever the model switches mode, i.e. before each evaluation and training epoch).
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender

from recbole_mm.data.dataset import MMSequentialDataset, feature_tensor
from recbole_mm.data.features import check_modalities
from recbole_mm.model.layers import masked_positions


class MMSequentialRecommender(SequentialRecommender):
    """Shared machinery of the plugin's next-item models (see module docstring)."""

    dataset_class = MMSequentialDataset
    supports_whole_sequence = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.TARGET_SEQ = config["TARGET_ITEM_LIST_FIELD"]
        self.initializer_range = config["initializer_range"]
        self.trim_batches = config["trim_batches"] is not False
        self.cache_item_table = config["cache_item_table"] is not False
        self._cached_item_table = None

    # ----- helpers for subclasses -------------------------------------------------------
    @staticmethod
    def load_modalities(config, dataset) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """The model's modalities (config ``modalities``) as aligned feature and mask tensors."""
        modalities = check_modalities(config["modalities"])
        available = getattr(dataset, "item_features", {})
        features, masks = {}, {}
        for m in modalities:
            if m not in available:
                raise ValueError(
                    f"modality {m!r} is in config key `modalities` but the data set "
                    f"{config['dataset']!r} did not load it (data set class {type(dataset).__name__})"
                )
            features[m], masks[m] = feature_tensor(available[m])
        return features, masks

    def init_weights(self, module: nn.Module) -> None:
        """RecBole's usual initialisation (normal for Linear/Embedding, unit LayerNorm)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # ----- to be provided by subclasses ---------------------------------------------------
    def item_table(self) -> torch.Tensor:
        """Representations of all items, (n_items, d); row 0 is the padding item."""
        raise NotImplementedError

    def encode_sequence(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(B, L) item ids -> (B, L, d) outputs at every position (causal)."""
        raise NotImplementedError

    def score(self, seq_output: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """(N, d) sequence outputs x (n_items, d) items -> (N, n_items) logits.

        Also works batched: (B, 1, d) x (B, 1, d) -> (B, 1, 1), as ``predict`` uses it.
        """
        return seq_output @ table.transpose(-1, -2)

    # ----- RecBole interface -------------------------------------------------------------
    def train(self, mode: bool = True):
        self._cached_item_table = None
        return super().train(mode)

    def trim(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
        """Drop padding columns beyond the batch's longest sequence (``trim_batches``)."""
        if not self.trim_batches:
            return item_seq
        return item_seq[:, : max(1, int(item_seq_len.max()))]

    def forward(self, item_seq: torch.Tensor, item_seq_len: torch.Tensor, table=None) -> torch.Tensor:
        """Sequence representation at the last real position, (B, d)."""
        table = self.item_table() if table is None else table
        output = self.encode_sequence(self.trim(item_seq, item_seq_len), table)
        return masked_positions(output, item_seq_len)

    def training_targets(self, interaction) -> Tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of a training batch, both (B, L) and trimmed: ``targets[b, t]`` is
        the next item after position ``t`` where a loss is taken, 0 elsewhere.

        Whole-sequence batches carry the targets field (``TARGET_ITEM_LIST_FIELD``); a RecBole
        prefix sample has one target, its positive item, at its last real position.
        """
        lengths = interaction[self.ITEM_SEQ_LEN]
        item_seq = self.trim(interaction[self.ITEM_SEQ], lengths)
        if self.TARGET_SEQ in interaction:
            return item_seq, interaction[self.TARGET_SEQ][:, : item_seq.size(1)]
        targets = torch.zeros_like(item_seq)
        targets.scatter_(1, (lengths - 1).clamp(min=0).view(-1, 1), interaction[self.POS_ITEM_ID].view(-1, 1))
        return item_seq, targets

    def calculate_loss(self, interaction):
        table = self.item_table()
        item_seq, targets = self.training_targets(interaction)
        output = self.encode_sequence(item_seq, table)
        valid = targets > 0
        logits = self.score(output[valid], table)
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, targets[valid])

    def _eval_table(self) -> torch.Tensor:
        if self.training or not self.cache_item_table:
            return self.item_table()
        if self._cached_item_table is None:
            self._cached_item_table = self.item_table()
        return self._cached_item_table

    def predict(self, interaction):
        table = self._eval_table()
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        test_items = table[interaction[self.ITEM_ID]]
        return self.score(seq_output.unsqueeze(1), test_items.unsqueeze(1)).view(-1)

    def full_sort_predict(self, interaction):
        table = self._eval_table()
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], table)
        return self.score(seq_output, table)
