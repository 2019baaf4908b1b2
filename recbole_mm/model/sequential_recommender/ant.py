"""ANT: multi-modal item representations through mixture-of-experts adaptors."""

from __future__ import annotations

import torch

from recbole_mm.model.transfer import TransferableRecommender, in_batch_contrastive


class ANT(TransferableRecommender):
    r"""ANT (Peng, Parthasarathy, Ning: "Multi-modality Meets Re-learning: Mitigating Negative
    Transfer in Sequential Recommendation").

    Items are represented only through their modality features: per modality a mixture of
    ``n_experts`` adaptors (whitening experts for text and image, linear experts over a
    sinusoidal price embedding) with a noisy Gaussian gate, fused as
    ``image + text + price + beta * (image * text)``. A causal transformer encodes the
    sequence; scores are cosine similarities divided by ``temperature``, trained with
    cross-entropy against all items.

    Pre-training (``stage: pretrain``, several domains) uses an in-batch sequence-item
    contrastive loss plus ``pretrain_image_text_weight`` x an image-text contrastive loss over
    the batch's items that have both modalities; adaptation modes as in the paper
    (docs/transfer.md).

    Differences from the paper: a modality an item lacks contributes a zero vector (the
    paper's data has every modality); whole-sequence training and batch trimming are
    optional speed-ups that leave the objective unchanged.
    """

    transfer_family = "ANT"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.image_text_weight = config["pretrain_image_text_weight"]
        features, masks = self.load_modalities(config, dataset)
        self.build_encoders(config, features, masks, fusion_beta=config["fusion_beta"])

    def auxiliary_pretrain_loss(self, interaction, item_seq, output, batch_items) -> torch.Tensor:
        """``pretrain_image_text_weight`` x image-text InfoNCE over batch items with both modalities."""
        encoder = self.item_encoder
        if not self.image_text_weight or not {"image", "text"} <= set(encoder.modalities):
            return output.new_zeros(())
        items = batch_items[encoder.mask("image")[batch_items] & encoder.mask("text")[batch_items]]
        if len(items) < 2:
            return output.new_zeros(())
        emb = encoder.modality_embeddings(items)
        return self.image_text_weight * in_batch_contrastive(emb["text"], emb["image"], self.temperature)
