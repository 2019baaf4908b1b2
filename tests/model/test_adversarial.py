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


def params_of(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


@pytest.mark.parametrize("name", ["TAA", "DAA"])
@pytest.mark.parametrize("kind", ["wgan_gp", "domain_classifier"])
def test_generator_loss_reaches_feature_network(name, kind, adaptation_setup):
    root, checkpoint = adaptation_setup
    _, model, _, train = build(name, root, checkpoint, adversarial_loss=kind)
    source_batch, target_batch = next(iter(train))  # the trainer's (source, target) pairs
    model.zero_grad()
    model.critic_loss(source_batch, target_batch).backward()
    # the critic loss reaches the critics only
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.target.parameters())
    # (the last bias cancels out of a Wasserstein estimate: weights only)
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for n, p in model.critics[0].named_parameters() if n.endswith("weight"))
    model.zero_grad()
    adversarial = model.generator_loss(target_batch)
    assert adversarial.abs().item() > 0
    adversarial.backward()
    bottom = model.target.experts[0][0].weight
    assert bottom.grad is not None and bottom.grad.abs().sum() > 0
    # a critic's score is a plain linear output: no LogSoftmax over one unit (identically zero)
    last = model.critics[0].net[-1]
    assert isinstance(last, torch.nn.Linear) and last.out_features == 1
    assert isinstance(model.critics[0].net[1], torch.nn.LeakyReLU)
    scores = model.critics[0](torch.randn(10, model.critics[0].net[0].in_features))
    assert scores.std() > 0


@pytest.mark.parametrize("name", ["TAA", "DAA"])
def test_no_source_row_gradient_reaches_the_target_model(name, adaptation_setup):
    """Default scheme: the target model's update reads target rows only: a generator step's
    gradients are the same whatever source rows it is paired with, and they are the gradients of
    target-row task loss + adv_weight x target-row generator loss."""
    root, checkpoint = adaptation_setup
    _, model, trainer, train = build(name, root, checkpoint, train_batch_size=32)
    pairs = iter(train)
    source_a, target_batch = next(pairs)
    source_b, _ = next(pairs)
    assert not torch.equal(source_a["labels"], source_b["labels"]) or not torch.equal(
        source_a["numerical"], source_b["numerical"])

    start = params_of(model)

    def grads(source_batch):
        model.load_state_dict(start)  # the same BatchNorm statistics
        torch.manual_seed(0)  # the same dropout masks
        trainer.optimizer.step = lambda: None  # read the gradients, change nothing
        trainer.generator_step(source_batch, target_batch)
        return {n: p.grad.clone() for n, p in model.target.named_parameters() if p.grad is not None}

    with_a, with_b = grads(source_a), grads(source_b)
    assert with_a.keys() == with_b.keys() and len(with_a) > 0
    assert all(torch.equal(with_a[n], with_b[n]) for n in with_a)
    model.zero_grad()
    model.load_state_dict(start)
    torch.manual_seed(0)
    (model.calculate_loss(target_batch) + trainer.adv_weight * model.generator_loss(target_batch)).backward()
    assert all(torch.allclose(p.grad, with_a[n]) for n, p in model.target.named_parameters() if n in with_a)


@pytest.mark.parametrize("name", ["TAA", "DAA"])
def test_critic_step_moves_critics_only_and_generator_step_the_target_only(name, adaptation_setup):
    root, checkpoint = adaptation_setup
    _, model, trainer, train = build(name, root, checkpoint)
    source_batch, target_batch = next(iter(train))
    target_before, critics_before = params_of(model.target), params_of(model.critics)
    trainer.critic_step(source_batch, target_batch)
    assert changed(critics_before, model.critics) and not changed(target_before, model.target)
    target_before, critics_before = params_of(model.target), params_of(model.critics)
    trainer.generator_step(source_batch, target_batch)
    assert changed(target_before, model.target) and not changed(critics_before, model.critics)


def test_an_epoch_is_one_pass_over_the_target_sample(adaptation_setup):
    root, checkpoint = adaptation_setup
    _, model, trainer, train = build("TAA", root, checkpoint, train_batch_size=32, n_critic=3)
    n_target = len(train.target.labels)
    pairs = list(train)
    assert len(pairs) == len(train) == -(-n_target // 32)
    assert sum(len(t["labels"]) for _, t in pairs) == n_target
    assert all(len(s["labels"]) == len(t["labels"]) for s, t in pairs)  # equal-size pairs, the last one too
    updates = []
    trainer.generator_step = lambda s, t: updates.append(1) or (0.0, 0.0)
    for epoch in range(2):
        trainer._train_epoch(train, epoch)
    assert trainer.critic_steps == 2 * len(pairs) and len(updates) == (2 * len(pairs)) // 3


def test_target_sample_is_the_stratified_share(adaptation_setup):
    root, checkpoint = adaptation_setup
    _, _, _, train = build("TAA", root, checkpoint)
    target = train.target  # the target half of the (source, target) pairs
    full = target._dataset.tensors()[2]
    assert abs(len(target.labels) - 0.05 * len(full)) <= 4
    assert target.labels[:, 0].mean().item() == pytest.approx(full[:, 0].mean().item(), abs=0.02)


def test_daa_keeps_source_frozen_and_moves_target(adaptation_setup):
    root, checkpoint = adaptation_setup
    _, model, trainer, train = build("DAA", root, checkpoint, train_batch_size=32)  # 5 critic steps, 1 update
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
    test = result["test_result"]
    assert 0.5 < test["ctr_auc"] <= 1.0
    assert test["mean_auc"] == pytest.approx((test["ctr_auc"] + test["ctcvr_auc"]) / 2, abs=1e-4)
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


def test_daa_critic_layouts(adaptation_setup, tmp_path):
    root, checkpoint = adaptation_setup
    _, model, _, _ = build("DAA", root, checkpoint)  # MMoE: one tower input per task, 16 wide
    assert [c.net[0].in_features for c in model.critics] == [32, 32]
    assert [c.net[2].out_features for c in model.critics] == [64, 64]
    _, model, _, _ = build("DAA", root, checkpoint, daa_critic_layout="per_task")
    assert [c.net[0].in_features for c in model.critics] == [16] * 4
    shared = run("SharedBottom", "SRC", config_dict={**SMALL, "data_path": root, "epochs": 1,
                                                      "checkpoint_dir": str(tmp_path)})
    _, model, _, train = build("DAA", root, shared["checkpoint"], backbone="SharedBottom")
    assert [c.net[0].in_features for c in model.critics] == [16, 16]  # the shared bottom's output, once
    source_batch, target_batch = next(iter(train))
    assert model.critic_loss(source_batch, target_batch).isfinite()


def test_selection_reads_a_validation_sample_as_large_as_the_training_sample(adaptation_setup):
    root, checkpoint = adaptation_setup
    config, _, _, train = build("TAA", root, checkpoint)
    pipe_valid = build_pipeline(config).valid_data
    n_train = len(train.target.labels)
    assert abs(len(pipe_valid.labels) - n_train) <= 4 < n_train
    assert config["valid_metric"] == "mean_auc"
    full = build_pipeline(build_config("TAA", "TGT", config_dict={
        **SMALL, "data_path": root, "source_dataset": "SRC", "source_checkpoint": checkpoint,
        "train_sample_ratio": 0.05, "valid_sample": "full"})).valid_data
    assert len(full.labels) == len(full._dataset.tensors()[2]) > len(pipe_valid.labels)


class Killed(Exception):
    """Stands in for the process being killed."""


@pytest.mark.parametrize("name", ["TAA", "DAA"])
def test_a_killed_and_resumed_adaptation_equals_an_uninterrupted_one(name, adaptation_setup, monkeypatch, tmp_path):
    """Killed during epoch 1 of 3, resumed from epoch 0's state: critics, their optimizer and the
    critic-step count (3 per update, 5 batches per epoch: updates straddle epochs) come back."""
    import glob
    import os

    from recbole_mm.trainer.adversarial import AdversarialEpochs

    root, checkpoint = adaptation_setup
    config = {**SMALL, "data_path": root, "source_dataset": "SRC", "source_checkpoint": checkpoint,
              "train_sample_ratio": 0.05, "train_batch_size": 32, "n_critic": 3, "epochs": 3,
              "checkpoint_dir": str(tmp_path)}
    original = AdversarialEpochs._train_epoch

    def killed_in_epoch_1(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if epoch_idx == 1:
            raise Killed("killed during epoch 1")
        return original(self, train_data, epoch_idx, loss_func, show_progress)

    with monkeypatch.context() as patch:
        patch.setattr(AdversarialEpochs, "_train_epoch", killed_in_epoch_1)
        with pytest.raises(Killed):
            run(name, "TGT", config_dict=config)
    (state,) = glob.glob(os.path.join(str(tmp_path), "*-last.pth"))
    resumed = run(name, "TGT", config_dict={**config, "resume_from": state})
    uninterrupted = run(name, "TGT", config_dict=config)
    assert resumed["resumed_at_epoch"] == 1
    assert resumed["train_loss_history"] == uninterrupted["train_loss_history"]
    assert resumed["test_result"] == uninterrupted["test_result"]
