"""PLE: progressive layered extraction."""

from typing import Callable, List, Sequence

import torch
import torch.nn as nn

from recbole_mm.model.multitask_layers import ExpertGate
from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender


class CGCLayer(nn.Module):
    """One extraction level (customized gate control) in MTReclib's layout: ``n_specific``
    task-specific experts per task, run on that task's branch, and ``n_shared`` shared experts,
    run on the shared branch; task j's gate (``Linear(input -> n_specific + n_shared)``, on task
    j's branch) mixes its own and the shared experts; the shared gate (``Linear(input -> n_tasks
    * n_specific + n_shared)``, on the shared branch) mixes all of them."""

    def __init__(self, input_dim: int, expert: Callable[[int], nn.Module], n_tasks: int, n_specific: int,
                 n_shared: int, with_shared_gate: bool):
        super().__init__()
        self.specific = nn.ModuleList(nn.ModuleList(expert(input_dim) for _ in range(n_specific))
                                      for _ in range(n_tasks))
        self.shared = nn.ModuleList(expert(input_dim) for _ in range(n_shared))
        self.task_gates = nn.ModuleList(ExpertGate(input_dim, n_specific + n_shared) for _ in range(n_tasks))
        self.shared_gate = ExpertGate(input_dim, n_tasks * n_specific + n_shared) if with_shared_gate else None

    def forward(self, inputs: List[torch.Tensor], with_shared: bool) -> List[torch.Tensor]:
        """``inputs``: one branch per task, then the shared branch; returns the branches one level
        up (the shared branch only if ``with_shared``, else its input unchanged)."""
        shared_in = inputs[-1]
        shared_out = [expert(shared_in) for expert in self.shared]
        specific_out = [[expert(x) for expert in experts] for x, experts in zip(inputs, self.specific)]
        outputs = [gate(x, torch.stack(own + shared_out, dim=-2))
                   for x, own, gate in zip(inputs, specific_out, self.task_gates)]
        if not with_shared:
            return outputs + [shared_in]
        every = [out for own in specific_out for out in own] + shared_out
        return outputs + [self.shared_gate(shared_in, torch.stack(every, dim=-2))]


class PLE(MultiTaskRecommender):
    """PLE (Tang et al., RecSys 2020), as MTReclib's ``PLEModel``: one extraction level per entry
    of ``bottom_dims`` (``ple_levels: ~``), level i's experts one MLP block of width
    ``bottom_dims[i]``; ``n_specific_experts`` per task and ``n_shared_experts`` a level; the
    towers read the task branches of the last level.

    Differences, each a key: ``ple_levels: <n>`` builds n levels of experts that are whole
    ``bottom_dims`` MLPs instead; ``ple_last_shared_gate: False`` leaves out the last level's
    shared gate, whose output nothing reads (MTReclib builds it and, like this class, never
    computes it; the key changes the parameter count only).
    """

    def build_backbone(self, input_dim: int) -> int:
        expert_dims = self.expert_dims_per_level()
        last_gate = bool(self.config["ple_last_shared_gate"])
        self.levels = nn.ModuleList()
        for level, dims in enumerate(expert_dims):
            is_last = level == len(expert_dims) - 1
            self.levels.append(CGCLayer(input_dim, lambda d, dims=dims: self.mlp(d, dims), len(self.tasks),
                                        self.config["n_specific_experts"], self.config["n_shared_experts"],
                                        with_shared_gate=last_gate or not is_last))
            input_dim = dims[-1]
        return input_dim

    def expert_dims_per_level(self) -> List[Sequence[int]]:
        dims, levels = list(self.config["bottom_dims"]), self.config["ple_levels"]
        if levels is None:
            return [[d] for d in dims]
        if int(levels) < 1:
            raise ValueError(f"config key `ple_levels`: {levels!r} is not a positive number of levels (or ~)")
        return [dims for _ in range(int(levels))]

    def tower_inputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        branches = [x for _ in range(len(self.tasks) + 1)]
        for i, level in enumerate(self.levels):
            branches = level(branches, with_shared=i < len(self.levels) - 1)
        return branches[:-1]
