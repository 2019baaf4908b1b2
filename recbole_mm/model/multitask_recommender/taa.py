"""TAA: task-adversarial adaptation."""

from recbole_mm.model.multitask_recommender.adversarial import AdversarialAdapter, Critic


class TAA(AdversarialAdapter):
    r"""TAA (Su et al., "Task-Adversarial Adaptation for Multi-modal Recommendation", ACM MM 2023):
    one domain critic per task on that task tower's input, between the target model's features on
    source rows and on target rows.

    As the public code (TL-UESTC/TAA): critics ``tower input -> 64 -> 16 -> 1``; a backbone whose
    towers share their input (SharedBottom, OMoE) gives both critics the same features. Differs:
    the critics' score is not passed through LogSoftmax (see :mod:`..adversarial`), and their
    features are taken in eval mode."""

    def build_critics(self, feature_dim, dims):
        return [Critic(feature_dim, dims) for _ in self.tasks]

    def critic_terms(self, source_batch, target_batch):
        reals = self.serving_features(self.target, source_batch, grad=False)
        fakes = self.serving_features(self.target, target_batch, grad=False)
        return list(zip(self.critics, reals, fakes))
