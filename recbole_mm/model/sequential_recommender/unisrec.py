"""UniSRec: universal text-based sequence representations (the ANT paper's transfer baseline)."""

from __future__ import annotations

from logging import getLogger
from typing import Tuple

import torch

from recbole_mm.model.layers import masked_positions
from recbole_mm.model.transfer import TransferableRecommender, in_batch_contrastive


def drop_items(item_seq: torch.Tensor, lengths: torch.Tensor, ratio: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each real item is dropped with probability ``ratio``; the kept items move left in order.
    A row that would lose every item keeps them all. Returns (sequences, lengths)."""
    real = item_seq > 0
    keep = real & (torch.rand(item_seq.shape, device=item_seq.device) >= ratio)
    empty = keep.sum(1) == 0
    keep[empty] = real[empty]
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    dropped = item_seq.gather(1, order)
    new_lengths = keep.sum(1)
    positions = torch.arange(item_seq.size(1), device=item_seq.device).view(1, -1)
    return dropped.masked_fill(positions >= new_lengths.view(-1, 1), 0), new_lengths.clamp(min=1)


class UniSRec(TransferableRecommender):
    r"""UniSRec (Hou, Mu, Zhao, Li, Ding, Wen: "Towards Universal Sequence Representation
    Learning for Recommender Systems", KDD 2022), inductive setting: items only through text.

    An item is its (frozen) text feature through a mixture of parametric-whitening experts
    ``(x - b_k) W_k`` with a noisy gate (the same :class:`~recbole_mm.model.layers.MoEAdaptor`
    ANT uses for text); a SASRec-style causal transformer encodes the sequence; scores are
    cosine similarities over ``temperature``. Pre-training (``stage: pretrain``) minimises the
    in-batch sequence-item contrastive loss plus ``pretrain_seq_seq_weight`` x a
    sequence-sequence contrastive loss between a sequence and its item-dropped view.

    Differences from the original code: the text features are whatever the data set's text
    feature file holds (the original uses BERT CLS vectors of title+category+brand); the
    augmented view drops items only (no word-level dropout on the features beyond the
    adaptor's dropout); whole-sequence batches take the loss at every position.
    """

    transfer_family = "UniSRec"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.seq_seq_weight = config["pretrain_seq_seq_weight"]
        self.item_drop_ratio = config["item_drop_ratio"]
        features, masks = self.load_modalities(config, dataset)
        if "text" not in features:
            raise ValueError(f"{type(self).__name__} needs text features: put text in config key `modalities`")
        if len(features) > 1:
            getLogger().warning(f"{type(self).__name__} uses text only; ignoring {sorted(set(features) - {'text'})}")
        self.build_encoders(config, {"text": features["text"]}, {"text": masks["text"]})

    def auxiliary_pretrain_loss(self, interaction, item_seq, output, batch_items) -> torch.Tensor:
        """``pretrain_seq_seq_weight`` x InfoNCE between each sequence and its item-dropped view."""
        if not self.seq_seq_weight:
            return output.new_zeros(())
        lengths = interaction[self.ITEM_SEQ_LEN]
        augmented, aug_lengths = drop_items(item_seq, lengths, self.item_drop_ratio)
        aug_output = self.sequence_encoder(augmented, self.item_reps(augmented))
        return self.seq_seq_weight * in_batch_contrastive(
            masked_positions(output, lengths), masked_positions(aug_output, aug_lengths), self.temperature
        )
