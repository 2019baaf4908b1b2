"""AITM: adaptive information transfer between sequential tasks."""

from typing import List

import torch
import torch.nn as nn

from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender


class AITM(MultiTaskRecommender):
    """AITM (Xi et al., KDD 2021), as MTReclib's ``AITMModel``: each task has its own bottom MLP
    (``bottom_dims``); the conversion task attends (one head, scaled dot product over two
    candidates) over its own representation and the information transferred from the click
    task's (``Linear(d -> d)``). The tower inputs are these representations. Like MTReclib, no
    behavioural-expectation calibrator loss (the paper's second term)."""

    def build_backbone(self, input_dim: int) -> int:
        dims = self.config["bottom_dims"]
        d = dims[-1]
        self.bottoms = nn.ModuleList(self.mlp(input_dim, dims) for _ in self.tasks)
        self.transfer = nn.Linear(d, d)
        self.attn_q, self.attn_k, self.attn_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        return d

    def tower_inputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        click, conversion = (bottom(x) for bottom in self.bottoms)
        candidates = torch.stack([self.transfer(click), conversion], dim=1)  # (N, 2, d)
        q, k, v = self.attn_q(candidates), self.attn_k(candidates), self.attn_v(candidates)
        weights = torch.softmax((q * k).sum(-1) / k.size(-1) ** 0.5, dim=1).unsqueeze(-1)
        return [click, (weights * v).sum(1)]
