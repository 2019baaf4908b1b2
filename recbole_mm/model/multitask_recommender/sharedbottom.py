"""Shared-Bottom multi-task model."""

from recbole_mm.model.multitask_layers import mlp
from recbole_mm.model.multitask_recommender.abstract import MultiTaskRecommender


class SharedBottom(MultiTaskRecommender):
    """Shared-Bottom (Caruana, 1997): one bottom MLP (``bottom_dims``) shared by both task towers."""

    def build_backbone(self, input_dim: int) -> int:
        self.bottom = mlp(input_dim, self.config["bottom_dims"], self.dropout_prob)
        return self.config["bottom_dims"][-1]

    def tower_inputs(self, x):
        shared = self.bottom(x)
        return [shared for _ in self.tasks]
