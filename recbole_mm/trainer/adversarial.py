"""Training loop of TAA / DAA: critic steps (WGAN-GP) alternating with feature-network steps.

The runner hands the trainer a :class:`recbole_mm.data.multitask.SourceTargetLoader` (pairs of
source and target batches); the trainer builds no data."""

from __future__ import annotations

import torch

from recbole_mm.trainer.multitask import MultiTaskEvaluation
from recbole_mm.trainer.trainer import CPUDistributedMixin, EpochTimerMixin, RunRecordMixin, SafeCheckpointMixin


class AdversarialEpochs(MultiTaskEvaluation):
    """Per step: ``n_critic`` critic updates on (source batch, target batch), then one update of
    the target model on task loss + ``adv_weight`` x the critics' Wasserstein estimates.

    The training loader yields (source batch, target batch) pairs: source rows from
    ``source_dataset`` (its training split), target rows from a stratified ``train_sample_ratio``
    sample of the target. ``adapt_task_loss`` says
    on which labelled rows the task loss is taken: ``[source, target]`` by default.
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        totals = [0.0, 0.0, 0.0]
        for source_batch, target_batch in train_data:
            source_batch, target_batch = source_batch.to(self.device), target_batch.to(self.device)
            for _ in range(self.n_critic):
                self.critic_optimizer.zero_grad()
                critic_loss = self.model.critic_loss(source_batch, target_batch, self.gp_weight)
                critic_loss.backward()
                self.critic_optimizer.step()
            self.optimizer.zero_grad()
            task_loss = 0.0
            if "target" in self.task_loss_on:
                task_loss = task_loss + self.model.calculate_loss(target_batch)
            if "source" in self.task_loss_on:
                task_loss = task_loss + self.model.calculate_loss(source_batch)
            adversarial = self.model.adversarial_loss(source_batch, target_batch)
            loss = task_loss + self.adv_weight * adversarial
            self._check_nan(loss)
            loss.backward()
            self.optimizer.step()
            totals[0] += float(torch.as_tensor(task_loss).detach())
            totals[1] += float(adversarial.detach())
            totals[2] += float(critic_loss.detach())
        return tuple(totals)


class AdversarialTrainer(CPUDistributedMixin, RunRecordMixin, EpochTimerMixin, SafeCheckpointMixin, AdversarialEpochs):
    """TAA / DAA trainer: the adversarial epochs of :class:`AdversarialEpochs` with the plugin's
    timing, checkpointing and CPU-distributed mixins."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.optimizer = self._build_optimizer(params=[p for p in model.feature_parameters() if p.requires_grad])
        self.critic_optimizer = torch.optim.Adam(model.critics.parameters(), lr=config["critic_learning_rate"],
                                                 betas=(0.5, 0.9))
        self.n_critic = int(config["n_critic"])
        self.gp_weight = float(config["gp_weight"])
        self.adv_weight = float(config["adv_weight"])
        self.task_loss_on = set(config["adapt_task_loss"] or [])
