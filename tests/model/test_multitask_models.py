"""Multi-task backbones train through the runner; per-task AUC equals scikit-learn's."""

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recbole_mm.config import MMConfig
from recbole_mm.data.aliexpress import convert_csv
from recbole_mm.data.synthetic_countries import CountrySpec, write_country_csvs
from recbole_mm.runner import run
from recbole_mm.trainer.multitask import task_metrics

SMALL = {"embedding_size": 16, "bottom_dims": [64, 32], "tower_dims": [32, 16], "n_experts": 4,
         "n_specific_experts": 1, "n_shared_experts": 2, "train_batch_size": 512, "epochs": 4,
         "show_progress": False, "state": "WARNING"}


@pytest.fixture(scope="module")
def country_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("countries")
    spec = CountrySpec("AE_TINY", seed=3, n_train=6000, n_test=2000)
    csvs = write_country_csvs(spec, str(root / spec.name))
    convert_csv(csvs["train"], csvs["test"], str(root / spec.name), spec.name)
    return str(root)


def test_task_auc_and_logloss_equal_sklearn():
    rng = np.random.default_rng(0)
    labels = (rng.random((500, 2)) < [0.3, 0.05]).astype(np.float32)
    preds = np.clip(labels * 0.3 + rng.random((500, 2)) * 0.7, 1e-4, 1 - 1e-4)
    config = MMConfig("MMoE", "AE_TINY", config_dict={"metric_decimal_place": 6})
    result = task_metrics(config, preds, labels, ("ctr", "ctcvr"))
    for j, task in enumerate(("ctr", "ctcvr")):
        assert result[f"{task}_auc"] == pytest.approx(roc_auc_score(labels[:, j], preds[:, j]), abs=1e-6)
        assert result[f"{task}_logloss"] == pytest.approx(log_loss(labels[:, j], preds[:, j]), abs=1e-6)


@pytest.mark.parametrize("backbone", ["SharedBottom", "OMoE", "MMoE", "PLE", "AITM"])
def test_backbone_learns_both_tasks(backbone, country_path, tmp_path):
    result = run(backbone, "AE_TINY", config_dict={**SMALL, "data_path": country_path,
                                                   "checkpoint_dir": str(tmp_path)})
    test = result["test_result"]
    assert test["ctr_auc"] > 0.6 and test["ctcvr_auc"] > 0.6, test
    assert 0 < test["ctr_logloss"] < 0.7
