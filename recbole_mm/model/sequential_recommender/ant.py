"""ANT: multi-modal item representations through mixture-of-experts adaptors."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_mm.model.abstract_recommender import MMSequentialRecommender
from recbole_mm.model.layers import CausalTransformer, MultiModalItemEncoder


class ANT(MMSequentialRecommender):
    r"""ANT (Peng, Parthasarathy, Ning: "Multi-modality Meets Re-learning: Mitigating Negative
    Transfer in Sequential Recommendation").

    Items are represented only through their modality features: per modality a mixture of
    ``n_experts`` adaptors (whitening experts for text and image, linear experts over a
    sinusoidal price embedding) with a noisy Gaussian gate, fused as
    ``image + text + price + beta * (image * text)``. A causal transformer encodes the
    sequence; scores are cosine similarities divided by ``temperature``, trained with
    cross-entropy against all items.

    Differences from the paper: a modality an item lacks contributes a zero vector (the
    paper's data has every modality); whole-sequence training and batch trimming are
    optional speed-ups that leave the objective unchanged.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.hidden_size = config["hidden_size"]
        self.temperature = config["temperature"]
        features, masks = self.load_modalities(config, dataset)
        self.item_encoder = MultiModalItemEncoder(
            features,
            masks,
            hidden_size=self.hidden_size,
            n_experts=config["n_experts"],
            dropout=config["adaptor_dropout_prob"],
            fusion_beta=config["fusion_beta"],
            price_embedding_size=config["price_embedding_size"],
            price_frequency=config["price_frequency"],
        )
        self.sequence_encoder = CausalTransformer(config, self.hidden_size)
        self.sequence_encoder.apply(self.init_weights)

    def item_table(self) -> torch.Tensor:
        return self.item_encoder()

    def encode_sequence(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.sequence_encoder(item_seq, table[item_seq])

    def score(self, seq_output: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        seq_output = F.normalize(seq_output, dim=-1)
        table = F.normalize(table, dim=-1)
        return seq_output @ table.transpose(-1, -2) / self.temperature
