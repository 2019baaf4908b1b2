"""SASRec++: SASRec over early-fused modality features, no item IDs."""

from __future__ import annotations

import torch
import torch.nn as nn

from recbole_mm.model.abstract_recommender import MMSequentialRecommender
from recbole_mm.model.layers import CausalTransformer, SinusoidalScalarEncoder, cosine_scores


class SASRecPP(MMSequentialRecommender):
    r"""SASRec++ (the ANT paper's feature-based baseline; run it as ``--model=SASRec++``).

    An item is ``Linear(concat(text, image, price))`` of its modality features, the price
    (normalised to [0, 100]) through ANT's sinusoidal encoding; a missing modality is a zero
    block; there is no ID embedding. The sequence encoder is SASRec's causal transformer;
    scores are ``cos / temperature`` as in the ANT authors' reference model; cross-entropy
    over all items.
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        features, masks = self.load_modalities(config, dataset)
        self.temperature = config["temperature"]
        self.modalities = list(features)
        blocks = []
        for m in self.modalities:
            block = features[m].float()
            if m == "price":
                encoder = SinusoidalScalarEncoder(config["price_embedding_size"], config["price_frequency"])
                with torch.no_grad():
                    block = encoder(block)
            blocks.append(block * masks[m].unsqueeze(-1).float())
        self.register_buffer("fused_features", torch.cat(blocks, dim=-1), persistent=False)
        self.item_projection = nn.Linear(self.fused_features.shape[1], config["hidden_size"])
        self.sequence_encoder = CausalTransformer(config, config["hidden_size"])
        self.apply(self.init_weights)

    def item_table(self) -> torch.Tensor:
        table = self.item_projection(self.fused_features)
        return torch.cat([torch.zeros_like(table[:1]), table[1:]], dim=0)  # padding row stays zero

    def encode_sequence(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.sequence_encoder(item_seq, table[item_seq])

    def score(self, seq_output: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return cosine_scores(seq_output, table, self.temperature)
