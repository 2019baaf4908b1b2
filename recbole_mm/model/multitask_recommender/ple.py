"""PLE: progressive layered extraction."""

import torch
import torch.nn as nn

from recbole_mm.model.multitask_layers import ExpertGate, mlp
from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender


class CGCLayer(nn.Module):
    """Customized gate control: task-specific experts per task plus shared experts; each task's
    gate mixes its own and the shared experts; the shared gate (if kept) mixes all."""

    def __init__(self, input_dim, dims, dropout, n_tasks, n_specific, n_shared, with_shared_gate):
        super().__init__()
        self.specific = nn.ModuleList(
            nn.ModuleList(mlp(input_dim, dims, dropout) for _ in range(n_specific)) for _ in range(n_tasks)
        )
        self.shared = nn.ModuleList(mlp(input_dim, dims, dropout) for _ in range(n_shared))
        self.task_gates = nn.ModuleList(ExpertGate(input_dim, n_specific + n_shared) for _ in range(n_tasks))
        self.shared_gate = ExpertGate(input_dim, n_tasks * n_specific + n_shared) if with_shared_gate else None

    def forward(self, task_inputs, shared_input):
        shared_out = [expert(shared_input) for expert in self.shared]
        specific_out = [[expert(x) for expert in experts] for x, experts in zip(task_inputs, self.specific)]
        outputs = [gate(x, torch.stack(own + shared_out, dim=-2))
                   for x, own, gate in zip(task_inputs, specific_out, self.task_gates)]
        shared_next = None
        if self.shared_gate is not None:
            every = [e for own in specific_out for e in own] + shared_out
            shared_next = self.shared_gate(shared_input, torch.stack(every, dim=-2))
        return outputs, shared_next


class PLE(MultiTaskRecommender):
    """PLE (Tang et al., RecSys 2020): ``ple_levels`` CGC layers, each with ``n_specific_experts``
    per task and ``n_shared_experts`` (expert MLPs of ``bottom_dims``)."""

    def build_backbone(self, input_dim: int) -> int:
        levels = self.config["ple_levels"]
        dims = self.config["bottom_dims"]
        self.levels = nn.ModuleList()
        for level in range(levels):
            self.levels.append(CGCLayer(input_dim if level == 0 else dims[-1], dims, self.dropout_prob, len(self.tasks),
                                        self.config["n_specific_experts"], self.config["n_shared_experts"],
                                        with_shared_gate=level < levels - 1))
        return dims[-1]

    def tower_inputs(self, x):
        task_inputs, shared = [x for _ in self.tasks], x
        for level in self.levels:
            task_inputs, shared = level(task_inputs, shared)
        return task_inputs
