"""NOVA: side information in the queries and keys of self-attention only."""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn as nn
from recbole.model.layers import FeedForward

from recbole_mm.model.abstract_recommender import MMSequentialRecommender
from recbole_mm.model.layers import CausalTransformer, FeatureFusion, ModalityProjector, cosine_scores


class NoninvasiveAttentionLayer(nn.Module):
    """One NOVA block: queries and keys from the fused representation, values from the
    item-ID stream alone; then residual + LayerNorm and RecBole's FeedForward."""

    def __init__(self, hidden_size, n_heads, inner_size, hidden_dropout, attn_dropout, hidden_act, eps):
        super().__init__()
        if hidden_size % n_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.head_size = n_heads, hidden_size // n_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.out_dropout = nn.Dropout(hidden_dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, hidden_dropout, hidden_act, eps)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), self.n_heads, self.head_size).transpose(1, 2)

    def attend(self, hidden: torch.Tensor, fused: torch.Tensor, mask: torch.Tensor):
        """(attention output before the residual, attention weights, values)."""
        values = self._heads(self.value(hidden))
        scores = self._heads(self.query(fused)) @ self._heads(self.key(fused)).transpose(-1, -2)
        probs = torch.softmax(scores / math.sqrt(self.head_size) + mask, dim=-1)
        context = (self.attn_dropout(probs) @ values).transpose(1, 2).reshape(hidden.shape)
        return self.out_dropout(self.dense(context)), probs, values

    def forward(self, hidden: torch.Tensor, fused: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended, _, _ = self.attend(hidden, fused, mask)
        return self.feed_forward(self.layer_norm(attended + hidden))


class NOVA(MMSequentialRecommender):
    r"""NOVA (Liu et al., AAAI 2021: "Noninvasive Self-attention for Side Information Fusion in
    Sequential Recommendation"), on a causal SASRec-style encoder.

    Every modality (text, image, price) is projected by its own layer; as in the paper's
    NOVA-BERT the position is side information too. At every block the side vectors are fused
    (``fusion_type``: sum, concat, gating) with the current item-ID stream into the queries and
    keys, while the values carry the pure item-ID stream alone. Candidates are the ID
    embeddings, scored by ``cos / temperature`` as in the ANT authors' NOVA, cross-entropy over
    all items. The attention mask is the ordinary causal + padding mask (a public
    re-implementation builds it wrongly; this one follows the paper).
    """

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        hidden = config["hidden_size"]
        features, masks = self.load_modalities(config, dataset)
        self.temperature = config["temperature"]
        self.item_embedding = nn.Embedding(self.n_items, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, hidden)
        self.side_info = ModalityProjector(features, masks, hidden, config["price_embedding_size"],
                                           config["price_frequency"])
        n_inputs = 1 + len(features) + 1  # the ID stream, each modality, the position
        self.fusions = nn.ModuleList(
            FeatureFusion(config["fusion_type"], n_inputs, hidden) for _ in range(config["n_layers"])
        )
        self.layers = nn.ModuleList(
            NoninvasiveAttentionLayer(hidden, config["n_heads"], config["inner_size"], config["hidden_dropout_prob"],
                                      config["attn_dropout_prob"], config["hidden_act"], config["layer_norm_eps"])
            for _ in range(config["n_layers"])
        )
        self.layer_norm = nn.LayerNorm(hidden, eps=config["layer_norm_eps"])
        self.dropout = nn.Dropout(config["hidden_dropout_prob"])
        self.apply(self.init_weights)

    def item_table(self) -> torch.Tensor:
        return self.item_embedding.weight

    def score(self, seq_output: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return cosine_scores(seq_output, table, self.temperature)

    def side_vectors(self, item_seq: torch.Tensor) -> List[torch.Tensor]:
        """The side information of the queries and keys: each modality's projection and the
        position embedding."""
        positions = self.position_embedding(torch.arange(item_seq.size(1), device=item_seq.device))
        return list(self.side_info(item_seq).values()) + [positions.unsqueeze(0).expand(item_seq.size(0), -1, -1)]

    def id_stream(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """The input of the value stream: the item-ID embeddings alone, LayerNorm, dropout."""
        return self.dropout(self.layer_norm(table[item_seq]))

    def encode_with_attention(self, item_seq: torch.Tensor, table: torch.Tensor) -> Tuple[torch.Tensor, list, list]:
        """(outputs, attention weights of every block, values of every block)."""
        hidden = self.id_stream(item_seq, table)
        mask = CausalTransformer.attention_mask(item_seq, hidden.dtype)
        side = self.side_vectors(item_seq)
        weights, values = [], []
        for fusion, layer in zip(self.fusions, self.layers):
            fused = fusion([hidden] + side)
            attended, probs, layer_values = layer.attend(hidden, fused, mask)
            weights.append(probs)
            values.append(layer_values)
            hidden = layer.feed_forward(layer.layer_norm(attended + hidden))
        return hidden, weights, values

    def encode_sequence(self, item_seq: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.encode_with_attention(item_seq, table)[0]
