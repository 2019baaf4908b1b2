"""ANT_e: ANT plus a learnable item-ID embedding."""

from __future__ import annotations

from recbole_mm.model.sequential_recommender.ant import ANT
from recbole_mm.model.transfer import new_item_embedding


class ANT_e(ANT):
    r"""ANT_e (same paper as :class:`ANT`): the multi-modal item representation plus a learnable
    item-ID embedding, both in the sequence input and in the candidate representations.

    The ID embedding is tied to the target data set's item set, so it is never part of a
    transferable checkpoint (an ANT checkpoint loads into ANT_e and back).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.item_embedding = new_item_embedding(self)
