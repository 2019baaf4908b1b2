"""ANT_e: ANT plus a learnable item-ID embedding."""

from __future__ import annotations

import torch
import torch.nn as nn

from recbole_mm.model.sequential_recommender.ant import ANT


class ANT_e(ANT):
    r"""ANT_e (same paper as :class:`ANT`): the multi-modal item representation plus a learnable
    item-ID embedding, both in the sequence input and in the candidate representations.

    The ID embedding is tied to the target data set's item set, so it is never part of a
    transferable checkpoint.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.init_weights(self.item_embedding)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def item_table(self) -> torch.Tensor:
        return self.item_encoder() + self.item_embedding.weight
