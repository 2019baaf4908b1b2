"""Model and trainer lookup (recbole_mm.utils)."""

import pytest
import torch
from recbole.utils import ModelType

from recbole_mm.enum_type import MMModelType
from recbole_mm.trainer import AdversarialTrainer, MMTrainer, MultiTaskTrainer, PretrainTrainer
from recbole_mm.trainer.trainer import HistoryMaskMixin
from recbole_mm.utils import get_model, get_trainer


def test_a_stock_model_lookup_leaves_anomaly_detection_as_it_was():
    """RecBole's SINE module switches autograd anomaly detection on when its package is imported;
    the plugin's lookup restores the caller's setting (it slows every stock run otherwise)."""
    assert not torch.is_anomaly_enabled()
    get_model("SASRec")
    assert not torch.is_anomaly_enabled()
    with torch.autograd.set_detect_anomaly(True):
        get_model("GRU4Rec")
        assert torch.is_anomaly_enabled()


def test_trainers_follow_the_declared_type():
    assert get_model("MMoE").type == MMModelType.MULTITASK and get_model("TAA").type == MMModelType.ADVERSARIAL
    assert get_trainer(MMModelType.MULTITASK, "MMoE") is MultiTaskTrainer
    assert get_trainer(MMModelType.ADVERSARIAL, "DAA") is AdversarialTrainer
    assert get_trainer(ModelType.SEQUENTIAL, "ANT") is MMTrainer
    assert get_trainer(ModelType.SEQUENTIAL, "ANT", stage="pretrain") is PretrainTrainer
    stock = get_trainer(ModelType.SEQUENTIAL, "SASRec")
    assert issubclass(stock, HistoryMaskMixin) and stock is not MMTrainer
    with pytest.raises(ValueError, match="declares type"):
        get_trainer(ModelType.GENERAL, "ANT")
    with pytest.raises(ValueError, match="Did you mean SASRec"):
        get_model("SASRek")
