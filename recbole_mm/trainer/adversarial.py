"""Training loop of TAA / DAA, as the papers and the public code (TL-UESTC/TAA, TL-UESTC/DAA) run it.

The runner hands the trainer a :class:`recbole_mm.data.multitask.SourceTargetLoader`: one epoch
is one pass over the target sample, each target batch paired with a fresh batch of random source
rows; the trainer builds no data."""

from __future__ import annotations

import torch

from recbole_mm.trainer.multitask import MultiTaskEvaluation
from recbole_mm.trainer.trainer import (CPUDistributedMixin, EpochTimerMixin, ModelParamGroupsMixin, RunRecordMixin,
                                        SafeCheckpointMixin)


class AdversarialEpochs(MultiTaskEvaluation):
    """Every (source batch, target batch) pair: one critic update on that pair. Every
    ``n_critic``-th critic update (counted across epochs, so a sample of fewer than ``n_critic``
    batches still trains): one update of the target model on the pair's target batch, minimising

        task loss on the ``adapt_task_loss`` rows (default: the target rows only)
        + ``adv_weight`` x the critics' generator loss on the target model's features of the target rows.

    Critic updates read fresh batches (a new pair each), as the public code's loop does. With
    ``adv_weight: 0`` this is what the public code effectively runs (its critics' LogSoftmax output
    is identically 0): fine-tuning on the target sample at every ``n_critic``-th batch.
    """

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self.model.train()
        totals = [0.0, 0.0, 0.0]
        for source_batch, target_batch in train_data:
            source_batch, target_batch = source_batch.to(self.device), target_batch.to(self.device)
            totals[2] += self.critic_step(source_batch, target_batch)
            self.critic_steps += 1
            if self.critic_steps % self.n_critic == 0:
                task, adversarial = self.generator_step(source_batch, target_batch)
                totals[0] += task
                totals[1] += adversarial
        return tuple(totals)

    def critic_step(self, source_batch, target_batch) -> float:
        """One update of the critics; the target model is not changed (its features are read
        without a gradient, in eval mode)."""
        self.critic_optimizer.zero_grad()
        loss = self.model.critic_loss(source_batch, target_batch)
        self._check_nan(loss)
        loss.backward()
        self.critic_optimizer.step()
        return float(loss.detach())

    def generator_step(self, source_batch, target_batch):
        """One update of the target model (the critics are not changed: their optimizer is not
        stepped and their gradients are cleared first next time)."""
        self.optimizer.zero_grad()
        task_loss = torch.zeros((), device=self.device)
        if "target" in self.task_loss_on:
            task_loss = task_loss + self.model.calculate_loss(target_batch)
        if "source" in self.task_loss_on:
            task_loss = task_loss + self.model.calculate_loss(source_batch)
        adversarial = self.model.generator_loss(target_batch) if self.adv_weight else torch.zeros((), device=self.device)
        loss = task_loss + self.adv_weight * adversarial
        self._check_nan(loss)
        loss.backward()
        self.optimizer.step()
        return float(task_loss.detach()), float(adversarial.detach())


class AdversarialTrainer(CPUDistributedMixin, RunRecordMixin, EpochTimerMixin, ModelParamGroupsMixin,
                         SafeCheckpointMixin, AdversarialEpochs):
    """TAA / DAA trainer: the adversarial epochs of :class:`AdversarialEpochs` with the plugin's
    timing, checkpointing and CPU-distributed mixins. Optimisers as the public code's: Adam for
    the target model (``learning_rate``, ``weight_decay``; its parameters from the model's
    ``optimizer_param_groups``) and for the critics (``critic_learning_rate``,
    ``critic_weight_decay``). The critics' optimizer state and the critic-step count travel in
    the resume state."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.critic_optimizer = torch.optim.Adam(model.critics.parameters(), lr=config["critic_learning_rate"],
                                                 weight_decay=config["critic_weight_decay"])
        self.n_critic = int(config["n_critic"])
        if self.n_critic < 1:
            raise ValueError(f"config key `n_critic`: expected an integer >= 1, got {config['n_critic']!r}")
        self.adv_weight = float(config["adv_weight"])
        self.task_loss_on = set(config["adapt_task_loss"] or [])
        unknown = self.task_loss_on - {"source", "target"}
        if unknown:
            raise ValueError(f"config key `adapt_task_loss`: expected a list of source / target, got "
                             f"{sorted(unknown)}")
        self.critic_steps = 0

    def _model_state(self, epoch: int) -> dict:
        return {**super()._model_state(epoch), "critic_optimizer": self.critic_optimizer.state_dict(),
                "critic_steps": int(self.critic_steps)}

    def _load_extra_state(self, checkpoint: dict) -> None:
        if "critic_optimizer" in checkpoint:
            self.critic_optimizer.load_state_dict(checkpoint["critic_optimizer"])
        self.critic_steps = int(checkpoint.get("critic_steps", 0))
