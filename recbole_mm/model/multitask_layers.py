"""Blocks of the multi-task CTR/CVR models: feature input, MLPs, experts, gates.

Reference: MTReclib (Zhu et al., easezyc/Multitask-Recommendation-Library, ``models/layers.py``):
MLP blocks Linear -> BatchNorm1d -> ReLU -> Dropout, one Xavier-initialised embedding table over
all categorical fields (a row offset per field), the numerical features through one Linear.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class RowSafeBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` that normalises a one-row training batch with its running statistics
    (PyTorch's raises on it; MTReclib's loaders would too) instead of failing; otherwise
    ``BatchNorm1d`` exactly, with the same parameters and buffers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.size(0) == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


def mlp(input_dim: int, dims: Sequence[int], dropout: float, batch_norm: bool = True) -> nn.Sequential:
    """MTReclib's hidden blocks: Linear -> BatchNorm1d -> ReLU -> Dropout for every size in
    ``dims`` (no output layer: the towers add theirs). ``batch_norm=False`` drops the BatchNorm."""
    layers: List[nn.Module] = []
    for dim in dims:
        layers.append(nn.Linear(input_dim, dim))
        if batch_norm:
            layers.append(RowSafeBatchNorm1d(dim))
        layers += [nn.ReLU(), nn.Dropout(dropout)]
        input_dim = dim
    return nn.Sequential(*layers)


class CategoricalNumericalInput(nn.Module):
    """The input layer of every MTReclib model: one embedding table of ``sum(vocab_sizes)`` rows
    (field j's code c is row ``offset_j + c``), Xavier-uniform initialised, plus
    ``Linear(n_numerical -> embedding_size)``; output: the field embeddings then the numerical
    vector, concatenated (``(n_fields + 1) * embedding_size``).

    Differs from MTReclib on inputs it does not handle: a code outside ``[0, vocab_size)`` (a
    country's code the training data never showed) embeds as the zero vector, where MTReclib
    would read a row of the next field or fail. The vocabulary sizes are kept in the state dict
    (buffer ``vocab_sizes``) so a checkpoint rebuilds the same table.
    """

    def __init__(self, vocab_sizes: Sequence[int], n_numerical: int, embedding_size: int):
        super().__init__()
        sizes = torch.tensor([int(v) for v in vocab_sizes], dtype=torch.long)
        self.register_buffer("vocab_sizes", sizes)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.embedding = nn.Embedding(int(sizes.sum()), embedding_size)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.numerical = nn.Linear(n_numerical, embedding_size)
        self.output_dim = embedding_size * (len(sizes) + 1)

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        known = (categorical >= 0) & (categorical < self.vocab_sizes)
        rows = torch.where(known, categorical + self.offsets, torch.zeros_like(categorical))
        fields = self.embedding(rows) * known.unsqueeze(-1).to(self.embedding.weight.dtype)
        return torch.cat([fields.flatten(1), self.numerical(numerical)], dim=-1)


class ExpertGate(nn.Module):
    """Softmax gate (``Linear(input -> n_experts)``) mixing a stack of expert outputs
    (..., n_experts, d) -> (..., d)."""

    def __init__(self, input_dim: int, n_experts: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, n_experts)

    def forward(self, gate_input: torch.Tensor, expert_outputs: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.linear(gate_input), dim=-1).unsqueeze(-1)
        return (weights * expert_outputs).sum(-2)
