"""Plug-and-play adversarial adaptation of a multi-task backbone: the part TAA and DAA share.

Both wrap any backbone of this package (``backbone`` config key), start the target model from the
source model's checkpoint (``source_checkpoint``) and train it on a small stratified sample of the
target data while domain critics pull the target features towards the source ones. The training
scheme (which rows each loss reads, when the critics step) is the trainer's:
:class:`recbole_mm.trainer.adversarial.AdversarialEpochs`.

The critics are built as the public code builds them (TL-UESTC/TAA, TL-UESTC/DAA,
``models/discriminator.py``: Linear layers with LeakyReLU(0.2) between, weights drawn from
N(0, 0.02), biases 0), but end in a plain score: the public critics end in ``LogSoftmax`` over
one unit, which is identically 0, so their adversarial terms carry no gradient and the released
code trains the target model on its task loss alone.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import InputType

from recbole_mm.checkpoint import load_model_checkpoint
from recbole_mm.config import check_choice
from recbole_mm.enum_type import MMModelType
from recbole_mm.model.multitask_recommender.abstract import TASKS, MultiTaskRecommender, vocab_sizes_of
from recbole_mm.utils import get_model

ARCHITECTURE_KEYS = ("embedding_size", "bottom_dims", "tower_dims", "dropout_prob", "batch_norm", "n_experts",
                     "ctcvr_mode", "ple_levels", "n_specific_experts", "n_shared_experts", "ple_last_shared_gate")

ADVERSARIAL_LOSSES = ("wgan_gp", "domain_classifier")

# (critic, source-side features, target-side features): one term of the adversarial game
CriticTerm = Tuple[nn.Module, torch.Tensor, torch.Tensor]


class Critic(nn.Module):
    """A domain critic: ``input -> critic_dims... -> 1``, LeakyReLU(0.2) between the layers,
    weights from N(0, 0.02) and biases 0 (the public code's ``weights_init``), a plain score
    (no LogSoftmax). High scores mean "source"."""

    def __init__(self, input_dim: int, dims: Sequence[int] = (64, 16)):
        super().__init__()
        layers: List[nn.Module] = []
        for dim in dims:
            layers += [nn.Linear(input_dim, dim), nn.LeakyReLU(0.2)]
            input_dim = dim
        layers.append(nn.Linear(input_dim, 1))
        self.net = nn.Sequential(*layers)
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, 0.02)
                nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)


def wasserstein_estimate(critic: nn.Module, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E[critic(source)] - E[critic(target)]: the critic maximises it."""
    return critic(source).mean() - critic(target).mean()


def gradient_penalty(critic: nn.Module, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||grad critic(x_hat)|| - 1)^2 at random interpolates of source and target rows."""
    n = min(len(source), len(target))
    alpha = torch.rand(n, 1, device=source.device)
    mixed = (alpha * source[:n].detach() + (1 - alpha) * target[:n].detach()).requires_grad_(True)
    grad = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)[0]
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def critic_term_loss(kind: str, critic: nn.Module, source: torch.Tensor, target: torch.Tensor,
                     gp_weight: float) -> torch.Tensor:
    """What one critic minimises. ``wgan_gp``: -(E critic(source) - E critic(target)) + gp_weight *
    gradient penalty; ``domain_classifier``: the binary cross-entropy of telling source (1) from
    target (0)."""
    if kind == "wgan_gp":
        return -wasserstein_estimate(critic, source, target) + gp_weight * gradient_penalty(critic, source, target)
    source_logits, target_logits = critic(source), critic(target)
    return (F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits))
            + F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits)))


def generator_term_loss(kind: str, critic: nn.Module, target: torch.Tensor) -> torch.Tensor:
    """What the target model minimises against one critic, from its features on target rows only.
    ``wgan_gp``: -E critic(target); ``domain_classifier``: BCE of the critic calling target rows
    source (the flipped-label GAN loss)."""
    logits = critic(target)
    if kind == "wgan_gp":
        return -logits.mean()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


class serving_mode:
    """Context: a module in eval mode (BatchNorm running statistics, no dropout), its mode restored
    on exit. The critics read features as the model serves them, and a forward of source rows
    leaves the target model's BatchNorm statistics alone."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.was_training = self.module.training
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        self.module.train(self.was_training)
        return False


class AdversarialAdapter(AbstractRecommender):
    """Shared part of TAA and DAA: the target backbone, loaded from the source checkpoint, and its
    critics. A subclass says which feature pairs its critics compare (:meth:`critic_terms`).

    Every critic compares source-side features (``real``) with the target model's features on
    target rows (``fake``); the target model's gradient comes from its features on target rows
    only (:meth:`generator_loss`), and its task loss is the backbone's (:meth:`calculate_loss`).
    Features for the critics are taken in eval mode (:class:`serving_mode`); the public code takes
    the target rows' in training mode (dropout on, BatchNorm batch statistics).
    """

    type = MMModelType.ADVERSARIAL
    input_type = InputType.POINTWISE
    tasks = TASKS
    yaml_bases = ("MultiTaskRecommender",)  # the wrapped backbone's keys

    def __init__(self, config, dataset):
        super().__init__()
        source_file = config["source_checkpoint"]
        if not source_file:
            raise ValueError(f"{type(self).__name__} needs config key `source_checkpoint` (a trained backbone)")
        check_choice("adversarial_loss", config["adversarial_loss"], ADVERSARIAL_LOSSES)
        self.adversarial_kind = config["adversarial_loss"]
        self.gp_weight = float(config["gp_weight"])
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
            if key in saved_config:
                config[key] = saved_config[key]
        self.backbone_name = backbone_name
        self.source_state = source["state_dict"]
        self.target = backbone_class(config, dataset)
        self.target.load_state_dict(self.source_state)
        self.critics = nn.ModuleList(self.build_critics(self.target.tower_input_dim, config["critic_dims"]))

    # ----- subclasses --------------------------------------------------------------------------
    def build_critics(self, feature_dim: int, dims) -> List[Critic]:
        raise NotImplementedError

    def critic_terms(self, source_batch, target_batch) -> List[CriticTerm]:
        """(critic, source-side features, target model's features on target rows) per critic, no gradient."""
        raise NotImplementedError

    def critic_view(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """The tower inputs as the critics see them, one tensor per critic input (default: per task)."""
        return features

    # ----- features ------------------------------------------------------------------------------
    def distinct_features(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """The tower inputs without repeats: one tensor for a backbone whose towers share their
        input (SharedBottom, OMoE)."""
        return features[:1] if self.target.shared_tower_input else features

    def serving_features(self, model: nn.Module, batch, grad: bool) -> List[torch.Tensor]:
        """``model``'s critic view of ``batch`` in eval mode, with or without a gradient."""
        with serving_mode(model), torch.set_grad_enabled(grad):
            return self.critic_view(model.features(batch))

    # ----- losses ---------------------------------------------------------------------------------
    def critic_loss(self, source_batch, target_batch) -> torch.Tensor:
        """What the critics minimise (``adversarial_loss``: WGAN-GP or a domain classifier); no
        gradient reaches the target model."""
        return sum(critic_term_loss(self.adversarial_kind, critic, real, fake, self.gp_weight)
                   for critic, real, fake in self.critic_terms(source_batch, target_batch))

    def generator_loss(self, target_batch) -> torch.Tensor:
        """The target model's adversarial loss: every critic on its features of the target rows
        (the only path of the adversarial gradient into the target model)."""
        fakes = self.serving_features(self.target, target_batch, grad=True)
        return sum(generator_term_loss(self.adversarial_kind, critic, fake)
                   for critic, fake in zip(self.critics, self.fakes_per_critic(fakes)))

    def fakes_per_critic(self, fakes: List[torch.Tensor]) -> List[torch.Tensor]:
        """The target-row features each critic scores, in the order of ``self.critics``."""
        return fakes

    def optimizer_param_groups(self, config) -> List[dict]:
        """What the trainer's main optimiser updates: the target model's trainable parameters (the
        critics have their own optimiser; DAA's source model is frozen)."""
        return [{"params": [p for p in self.target.parameters() if p.requires_grad]}]

    def calculate_loss(self, interaction) -> torch.Tensor:
        return self.target.calculate_loss(interaction)

    def predict(self, interaction) -> torch.Tensor:
        return self.target.predict(interaction)
