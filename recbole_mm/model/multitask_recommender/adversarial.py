"""Plug-and-play adversarial adaptation of a multi-task backbone: TAA and DAA.

Both wrap any backbone of this package (``backbone`` config key), start the target model from
the source model's checkpoint (``source_checkpoint``) and train it on a small stratified sample
of the target data while WGAN-GP critics pull the target features towards the source ones.

Known bug avoided: the official TAA/DAA code ends each discriminator in ``LogSoftmax`` over a
single unit, which is identically 0, so its adversarial terms carry no gradient. Here the critic
ends in a plain linear score (a test checks the adversarial loss is non-zero and reaches the
feature network).
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn as nn
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType

from recbole_mm.checkpoint import load_model_checkpoint
from recbole_mm.enum_type import MMModelType
from recbole_mm.model.multitask_recommender.abstract import TASKS, MultiTaskRecommender, vocab_sizes_of
from recbole_mm.utils import get_model


ARCHITECTURE_KEYS = ("embedding_size", "bottom_dims", "tower_dims", "dropout_prob", "n_experts", "ple_levels",
                     "n_specific_experts", "n_shared_experts", "chain_tasks")


class Critic(nn.Module):
    """WGAN critic: ``input -> 64 -> 16 -> 1`` (``critic_dims``), ReLU between, a plain linear score."""

    def __init__(self, input_dim: int, dims: Sequence[int] = (64, 16)):
        super().__init__()
        layers: List[nn.Module] = []
        for dim in dims:
            layers += [nn.Linear(input_dim, dim), nn.ReLU()]
            input_dim = dim
        layers.append(nn.Linear(input_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def wasserstein_estimate(critic: Critic, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[critic(source)] - E[critic(target)]: the critic maximises it, the features minimise it."""
    return critic(source).mean() - critic(target).mean()


def gradient_penalty(critic: Critic, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||grad critic(x_hat)|| - 1)^2 at random interpolates of source and target rows."""
    n = min(len(source), len(target))
    alpha = torch.rand(n, 1, device=source.device)
    mixed = (alpha * source[:n].detach() + (1 - alpha) * target[:n].detach()).requires_grad_(True)
    grad = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)[0]
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


class AdversarialAdapter(AbstractRecommender):
    """Shared part of TAA and DAA: the target backbone, loaded from the source checkpoint."""

    type = MMModelType.ADVERSARIAL
    input_type = InputType.POINTWISE
    tasks = TASKS
    yaml_bases = ("MultiTaskRecommender",)  # the wrapped backbone's keys

    def __init__(self, config, dataset):
        super().__init__()
        source_file = config["source_checkpoint"]
        if not source_file:
            raise ValueError(f"{type(self).__name__} needs config key `source_checkpoint` (a trained backbone)")
        source = load_model_checkpoint(source_file, "source_checkpoint")
        saved_config = source.get("config") if isinstance(source.get("config"), dict) else {}
        backbone_name = config["backbone"] or saved_config.get("model")
        if backbone_name != saved_config.get("model"):
            raise ValueError(
                f"backbone {backbone_name!r} does not match {source_file}, which holds a {saved_config.get('model')}"
            )
        backbone_class = get_model(backbone_name)
        if not issubclass(backbone_class, MultiTaskRecommender):
            raise ValueError(f"backbone {backbone_name!r} is not a multi-task model")
        config["categorical_vocab_sizes"] = vocab_sizes_of(source_file, "source_checkpoint")
        for key in ARCHITECTURE_KEYS:  # the target model is built exactly like the source model
            if saved_config.get(key) is not None:
                config[key] = saved_config[key]
        self.backbone_name = backbone_name
        self.target = backbone_class(config, dataset)
        self.target.load_state_dict(source["state_dict"])
        self.critics = nn.ModuleList(self.build_critics(self.target.tower_input_dim, config["critic_dims"]))

    def build_critics(self, dim: int, dims) -> List[Critic]:
        raise NotImplementedError

    def feature_parameters(self):
        return self.target.parameters()

    def adversarial_loss(self, source_batch, target_batch) -> torch.Tensor:
        """The sum of the critics' Wasserstein estimates, with gradients into the target model."""
        raise NotImplementedError

    def critic_loss(self, source_batch, target_batch, gp_weight: float) -> torch.Tensor:
        """What the critics minimise: -(Wasserstein estimates) + gp_weight * gradient penalties."""
        raise NotImplementedError

    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.target.calculate_loss(interaction)

    def predict(self, interaction) -> torch.Tensor:
        return self.target.predict(interaction)
