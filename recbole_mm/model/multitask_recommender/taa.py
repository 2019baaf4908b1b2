"""TAA: task-adversarial adaptation."""

import torch

from recbole_mm.model.multitask_recommender.adversarial import (
    AdversarialAdapter,
    Critic,
    gradient_penalty,
    wasserstein_estimate,
)


class TAA(AdversarialAdapter):
    r"""TAA (Su et al., "Task-Adversarial Adaptation for Multi-modal Recommendation"): one domain
    critic per task on that task tower's input features, between the target model's features on
    source rows and on target rows."""

    def build_critics(self, dim, dims):
        return [Critic(dim, dims) for _ in self.tasks]

    def _pairs(self, source_batch, target_batch, grad: bool):
        with torch.set_grad_enabled(grad):
            return list(zip(self.target.features(source_batch), self.target.features(target_batch)))

    def adversarial_loss(self, source_batch, target_batch):
        pairs = self._pairs(source_batch, target_batch, grad=True)
        return sum(wasserstein_estimate(c, s, t) for c, (s, t) in zip(self.critics, pairs))

    def critic_loss(self, source_batch, target_batch, gp_weight: float):
        pairs = self._pairs(source_batch, target_batch, grad=False)
        return sum(-wasserstein_estimate(c, s, t) + gp_weight * gradient_penalty(c, s, t)
                   for c, (s, t) in zip(self.critics, pairs))
