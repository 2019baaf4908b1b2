"""UniSRec_e: UniSRec's transductive setting (text adaptor plus item-ID embedding)."""

from __future__ import annotations

from recbole_mm.model.sequential_recommender.unisrec import UniSRec
from recbole_mm.model.transfer import new_item_embedding


class UniSRec_e(UniSRec):
    r"""UniSRec, transductive fine-tuning (Hou et al., KDD 2022, Sec. 3.3): an item is the MoE
    adaptor's text representation plus a learnable ID embedding of the target's items.

    The ID embedding belongs to the target's item set and is never transferred; a UniSRec
    checkpoint loads into UniSRec_e (and back) for every adaptation mode.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.item_embedding = new_item_embedding(self)
