"""DAA: dual adversarial adaptation."""

from typing import List

import torch

from recbole_mm.config import check_choice
from recbole_mm.model.multitask_recommender.adversarial import AdversarialAdapter, Critic
from recbole_mm.utils import get_model

CRITIC_LAYOUTS = ("concatenated", "per_task")


class DAA(AdversarialAdapter):
    r"""DAA (Su et al., "Cross-domain Recommendation via Dual Adversarial Adaptation", TOIS 2024):
    two critics, each between source-side features and the target model's features on target
    rows — the *cross* critic's source side is the frozen source model on source rows, the
    *inner* critic's the target model itself on source rows. The pre-trained source model never
    changes.

    ``daa_critic_layout: concatenated`` (default, the public code's layout, TL-UESTC/DAA): each
    critic reads the tasks' tower inputs concatenated (one copy when the towers share their input:
    SharedBottom, OMoE); ``per_task``: a cross and an inner critic per task. Critics
    ``-> 64 -> 64 -> 1``. Differs from the public code: each critic is trained on its own source
    side (the public code shows both source sides to both critics as "real"), the score is not
    passed through LogSoftmax, and features are taken in eval mode."""

    def __init__(self, config, dataset):
        check_choice("daa_critic_layout", config["daa_critic_layout"], CRITIC_LAYOUTS)
        self.layout = config["daa_critic_layout"]
        super().__init__(config, dataset)
        self.source = get_model(self.backbone_name)(config, dataset)
        self.source.load_state_dict(self.source_state)
        for param in self.source.parameters():
            param.requires_grad_(False)
        self.source.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "source"):
            self.source.eval()  # frozen: no dropout, BatchNorm statistics kept
        return self

    def critic_view(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        if self.layout == "per_task":
            return features
        return [torch.cat(self.distinct_features(features), dim=1)]

    def build_critics(self, feature_dim, dims):
        if self.layout == "per_task":
            return [Critic(feature_dim, dims) for _ in range(2 * len(self.tasks))]
        width = feature_dim * (1 if self.target.shared_tower_input else len(self.tasks))
        return [Critic(width, dims) for _ in range(2)]

    def fakes_per_critic(self, fakes):
        return fakes + fakes  # cross critics, then inner critics

    def critic_terms(self, source_batch, target_batch):
        frozen = self.serving_features(self.source, source_batch, grad=False)
        on_source = self.serving_features(self.target, source_batch, grad=False)
        fakes = self.serving_features(self.target, target_batch, grad=False)
        reals = frozen + on_source
        return list(zip(self.critics, reals, self.fakes_per_critic(fakes)))
