"""DAA: dual adversarial adaptation."""

import torch

from recbole_mm.checkpoint import load_model_checkpoint
from recbole_mm.model.multitask_recommender.adversarial import (
    AdversarialAdapter,
    Critic,
    gradient_penalty,
    wasserstein_estimate,
)
from recbole_mm.utils import get_model


class DAA(AdversarialAdapter):
    r"""DAA (Su et al., "Cross-domain Recommendation via Dual Adversarial Adaptation"): two critics
    per task — one between the frozen source model's features on source rows and the target
    model's on target rows, one between the target model's features on source rows and on target
    rows. The pre-trained source model never changes."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.source = get_model(self.backbone_name)(config, dataset)
        source = load_model_checkpoint(config["source_checkpoint"], "source_checkpoint")
        self.source.load_state_dict(source["state_dict"])
        for param in self.source.parameters():
            param.requires_grad_(False)
        self.source.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.source.eval()  # frozen: no dropout either
        return self

    def build_critics(self, dim, dims):
        return [Critic(dim, dims) for _ in range(2 * len(self.tasks))]

    def _quads(self, source_batch, target_batch, grad: bool):
        with torch.no_grad():
            frozen = self.source.features(source_batch)
        with torch.set_grad_enabled(grad):
            on_source = self.target.features(source_batch)
            on_target = self.target.features(target_batch)
        return frozen, on_source, on_target

    def _terms(self, source_batch, target_batch, grad: bool):
        frozen, on_source, on_target = self._quads(source_batch, target_batch, grad)
        n = len(self.tasks)
        cross = [(self.critics[j], frozen[j], on_target[j]) for j in range(n)]
        inner = [(self.critics[n + j], on_source[j], on_target[j]) for j in range(n)]
        return cross + inner

    def adversarial_loss(self, source_batch, target_batch):
        return sum(wasserstein_estimate(c, s, t) for c, s, t in self._terms(source_batch, target_batch, True))

    def critic_loss(self, source_batch, target_batch, gp_weight: float):
        return sum(-wasserstein_estimate(c, s, t) + gp_weight * gradient_penalty(c, s, t)
                   for c, s, t in self._terms(source_batch, target_batch, False))
