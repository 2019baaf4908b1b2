"""Trainer of the multi-task CTR/CVR models: per-task AUC and LogLoss with RecBole's metric code."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from recbole.evaluator.metrics import AUC, LogLoss
from recbole.trainer import Trainer

from recbole_mm.trainer.trainer import CPUDistributedMixin, EpochTimerMixin, RunRecordMixin, SafeCheckpointMixin


def task_metrics(config, predictions: np.ndarray, labels: np.ndarray, tasks) -> "OrderedDict[str, float]":
    """``<task>_auc`` and ``<task>_logloss`` of every task (columns of predictions / labels), and
    ``mean_auc``, the mean of the tasks' AUCs (the adaptation papers' model selection)."""
    auc, logloss = AUC(config), LogLoss(config)
    digits = config["metric_decimal_place"]
    result = OrderedDict()
    aucs = []
    for j, task in enumerate(tasks):
        aucs.append(float(auc.metric_info(predictions[:, j], labels[:, j])))
        result[f"{task}_auc"] = round(aucs[-1], digits)
        result[f"{task}_logloss"] = round(float(logloss.metric_info(predictions[:, j], labels[:, j])), digits)
    result["mean_auc"] = round(float(np.mean(aucs)), digits)
    return result


class MultiTaskEvaluation(Trainer):
    """``evaluate`` over all rows: model probabilities (N, tasks) against the label columns."""

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        self.model.eval()
        predictions, labels = [], []
        for batch in eval_data:
            batch = batch.to(self.device)
            predictions.append(self.model.predict(batch).float().cpu())
            labels.append(batch["labels"].cpu())
        return task_metrics(self.config, torch.cat(predictions).numpy(), torch.cat(labels).numpy(),
                            self.model.tasks)


class MultiTaskTrainer(CPUDistributedMixin, RunRecordMixin, EpochTimerMixin, SafeCheckpointMixin, MultiTaskEvaluation):
    """RecBole's training loop; model selection on ``valid_metric`` (default ``ctr_auc``)."""
