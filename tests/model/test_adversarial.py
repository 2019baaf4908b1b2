"""TAA / DAA: the adversarial loss is non-zero and reaches the feature network; DAA's source stays
frozen; the critic ends in a plain linear score."""

import pytest
import torch

from recbole_mm.data.aliexpress import convert_csv
from recbole_mm.data.synthetic_countries import CountrySpec, write_country_csvs
from recbole_mm.runner import build_config, build_pipeline, run

SMALL = {"embedding_size": 8, "bottom_dims": [32, 16], "tower_dims": [16, 8], "n_experts": 2,
         "train_batch_size": 256, "eval_batch_size": 4096, "show_progress": False, "state": "WARNING"}


@pytest.fixture(scope="module")
def adaptation_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    for spec in (CountrySpec("SRC", seed=5, n_train=2000, n_test=500),
                 CountrySpec("TGT", seed=6, n_train=3000, n_test=800, shift=1.0, ctr_bias=-1.0)):
        csvs = write_country_csvs(spec, str(root / spec.name))
        convert_csv(csvs["train"], csvs["test"], str(root / spec.name), spec.name)
    source = run("MMoE", "SRC", config_dict={**SMALL, "data_path": str(root), "epochs": 2,
                                              "checkpoint_dir": str(root / "saved")})
    return str(root), source["checkpoint"]


def build(name, root, checkpoint, **extra):
    config = build_config(name, "TGT", config_dict={**SMALL, "data_path": root, "source_dataset": "SRC",
                                                     "source_checkpoint": checkpoint, "train_sample_ratio": 0.05,
                                                     **extra})
    pipe = build_pipeline(config)
    return config, pipe.model, pipe.trainer, pipe.train_data


@pytest.mark.parametrize("name", ["TAA", "DAA"])
def test_adversarial_loss_reaches_feature_network(name, adaptation_setup):
    root, checkpoint = adaptation_setup
    _, model, trainer, train = build(name, root, checkpoint)
    source_batch, target_batch = next(iter(train))  # the trainer's (source, target) pairs
    model.zero_grad()
    adversarial = model.adversarial_loss(source_batch, target_batch)
    assert adversarial.abs().item() > 0
    adversarial.backward()
    bottom = model.target.experts[0][0].weight
    assert bottom.grad is not None and bottom.grad.abs().sum() > 0
    # a critic's score is a plain linear output: no LogSoftmax over one unit (identically zero)
    last = model.critics[0].net[-1]
    assert isinstance(last, torch.nn.Linear) and last.out_features == 1
    scores = model.critics[0](torch.randn(10, model.target.tower_input_dim))
    assert scores.std() > 0


def test_target_sample_is_the_stratified_share(adaptation_setup):
    root, checkpoint = adaptation_setup
    _, _, _, train = build("TAA", root, checkpoint)
    target = train.target  # the target half of the (source, target) pairs
    full = target._dataset.tensors()[2]
    assert abs(len(target.labels) - 0.05 * len(full)) <= 4
    assert target.labels[:, 0].mean().item() == pytest.approx(full[:, 0].mean().item(), abs=0.02)


def test_daa_keeps_source_frozen_and_moves_target(adaptation_setup):
    root, checkpoint = adaptation_setup
    _, model, trainer, train = build("DAA", root, checkpoint)
    source_before = {k: v.clone() for k, v in model.source.state_dict().items()}
    target_before = {k: v.clone() for k, v in model.target.state_dict().items()}
    trainer._train_epoch(train, 0)
    assert all(torch.equal(source_before[k], v) for k, v in model.source.state_dict().items())
    assert any(not torch.equal(target_before[k], v) for k, v in model.target.state_dict().items())


def test_taa_runs_through_runner(adaptation_setup):
    root, checkpoint = adaptation_setup
    result = run("TAA", "TGT", config_dict={**SMALL, "data_path": root, "source_dataset": "SRC",
                                             "source_checkpoint": checkpoint, "epochs": 1,
                                             "checkpoint_dir": str(root + "/saved_taa")})
    assert 0.5 < result["test_result"]["ctr_auc"] <= 1.0
    assert result["epochs_trained"] == 1 and result["train_epoch_seconds"][0] > 0


def test_adapter_rebuilds_the_source_architecture(adaptation_setup, tmp_path):
    root, _ = adaptation_setup
    source = run("PLE", "SRC", config_dict={**SMALL, "data_path": root, "epochs": 1, "ple_levels": 1,
                                             "n_specific_experts": 1, "n_shared_experts": 1,
                                             "checkpoint_dir": str(tmp_path)})
    # TAA's own config knows nothing of PLE's keys: they come from the source checkpoint
    _, model, _, _ = build("TAA", root, source["checkpoint"], backbone="PLE")
    assert len(model.target.levels) == 1
    assert model.target.config["n_shared_experts"] == 1
