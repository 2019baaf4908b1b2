"""Blocks of the multi-task CTR/CVR models: feature input, MLPs, experts, gates."""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn


def mlp(input_dim: int, dims: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for every size in ``dims``."""
    layers: List[nn.Module] = []
    for dim in dims:
        layers += [nn.Linear(input_dim, dim), nn.ReLU(), nn.Dropout(dropout)]
        input_dim = dim
    return nn.Sequential(*layers)


class CategoricalNumericalInput(nn.Module):
    """One embedding per categorical field (raw codes; codes beyond a field's vocabulary share one
    out-of-vocabulary row) and ``Linear(n_numerical -> embedding_size)`` for the numerical features,
    concatenated."""

    def __init__(self, vocab_sizes: Sequence[int], n_numerical: int, embedding_size: int):
        super().__init__()
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.embeddings = nn.ModuleList(nn.Embedding(v + 1, embedding_size) for v in self.vocab_sizes)
        self.register_buffer("oov", torch.tensor(self.vocab_sizes), persistent=False)
        self.numerical = nn.Linear(n_numerical, embedding_size)
        self.output_dim = embedding_size * (len(self.vocab_sizes) + 1)

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        codes = torch.where((categorical >= 0) & (categorical < self.oov), categorical, self.oov)
        parts = [emb(codes[:, j]) for j, emb in enumerate(self.embeddings)]
        parts.append(self.numerical(numerical))
        return torch.cat(parts, dim=-1)


class ExpertGate(nn.Module):
    """Softmax gate mixing a stack of expert outputs (..., n_experts, d) -> (..., d)."""

    def __init__(self, input_dim: int, n_experts: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, n_experts)

    def forward(self, gate_input: torch.Tensor, expert_outputs: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.linear(gate_input), dim=-1).unsqueeze(-1)
        return (weights * expert_outputs).sum(-2)
