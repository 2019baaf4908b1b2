"""Trainers of the plugin. :func:`recbole_mm.utils.get_trainer` chooses among them by name and
by the model's declared type."""

from recbole_mm.trainer.adversarial import AdversarialTrainer
from recbole_mm.trainer.multitask import MultiTaskTrainer
from recbole_mm.trainer.pretrain import PretrainTrainer
from recbole_mm.trainer.trainer import MMTrainer, with_plugin_mixins

__all__ = ["MMTrainer", "MultiTaskTrainer", "AdversarialTrainer", "PretrainTrainer", "with_plugin_mixins"]
