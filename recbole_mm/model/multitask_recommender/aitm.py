"""AITM: adaptive information transfer between sequential tasks."""

import torch
import torch.nn as nn

from recbole_mm.model.multitask_layers import mlp
from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender


class AITM(MultiTaskRecommender):
    """AITM (Xi et al., KDD 2021): each task has its own bottom MLP (``bottom_dims``); the
    conversion task attends over its own representation and the information transferred
    (a linear map) from the click task's. The tower inputs are these representations."""

    def build_backbone(self, input_dim: int) -> int:
        dims = self.config["bottom_dims"]
        d = dims[-1]
        self.bottoms = nn.ModuleList(mlp(input_dim, dims, self.dropout_prob) for _ in self.tasks)
        self.transfer = nn.Linear(d, d)
        self.attn_q, self.attn_k, self.attn_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        return d

    def tower_inputs(self, x):
        click, conversion = (bottom(x) for bottom in self.bottoms)
        candidates = torch.stack([self.transfer(click), conversion], dim=1)  # (N, 2, d)
        q, k, v = self.attn_q(candidates), self.attn_k(candidates), self.attn_v(candidates)
        weights = torch.softmax((q * k).sum(-1) / k.size(-1) ** 0.5, dim=1).unsqueeze(-1)
        return [click, (weights * v).sum(1)]
