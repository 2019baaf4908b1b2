"""MMoE: multi-gate mixture of experts."""

from typing import List

import torch
import torch.nn as nn

from recbole_mm.model.multitask_layers import ExpertGate
from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender


class MMoE(MultiTaskRecommender):
    """MMoE (Ma et al., KDD 2018), as MTReclib's ``MMoEModel``: ``n_experts`` expert MLPs
    (``bottom_dims``) on the input, one softmax gate (``Linear(input -> n_experts)``) per task.
    No difference from MTReclib beyond those of :class:`MultiTaskRecommender`."""

    n_gates = None  # one per task

    def build_backbone(self, input_dim: int) -> int:
        n_experts = self.config["n_experts"]
        self.experts = nn.ModuleList(self.mlp(input_dim, self.config["bottom_dims"]) for _ in range(n_experts))
        self.gates = nn.ModuleList(ExpertGate(input_dim, n_experts) for _ in range(self.n_gates or len(self.tasks)))
        return self.config["bottom_dims"][-1]

    def tower_inputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=-2)
        mixed = [gate(x, expert_out) for gate in self.gates]
        return mixed if len(mixed) == len(self.tasks) else [mixed[0] for _ in self.tasks]
