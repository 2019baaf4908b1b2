"""Shared-Bottom multi-task model."""

from typing import List

import torch

from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender


class SharedBottom(MultiTaskRecommender):
    """Shared-Bottom (Caruana, 1997), as MTReclib's ``SharedBottomModel``: one bottom MLP
    (``bottom_dims``) shared by both task towers. No difference from MTReclib beyond those of
    :class:`MultiTaskRecommender`."""

    shared_tower_input = True

    def build_backbone(self, input_dim: int) -> int:
        self.bottom = self.mlp(input_dim, self.config["bottom_dims"])
        return self.config["bottom_dims"][-1]

    def tower_inputs(self, x: torch.Tensor) -> List[torch.Tensor]:
        shared = self.bottom(x)
        return [shared for _ in self.tasks]
