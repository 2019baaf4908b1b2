"""ODMT: distillation term, ramp and epoch counter, ID-key blocking, evaluation scores, training."""

import math

import pytest
import torch

from recbole_mm.config import MMConfig
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.model.losses import distillation_kl, ramp_weight
from recbole_mm.runner import run
from recbole_mm.utils import get_model
from helpers.model import losses_on_one_batch

SMALL = {"imt_n_heads": 2, "imt_inner_size": 32, "learning_rate": 0.001}


def build(config_dict):
    config = MMConfig("ODMT", "tiny", config_dict=config_dict)
    train, valid, _ = prepare_data(config, create_dataset(config))
    return config, train, valid, get_model("ODMT")(config, train._dataset)


def test_kd_is_zero_when_branches_agree_and_positive_otherwise(tiny_config):
    torch.manual_seed(0)
    logits = torch.randn(6, 9)
    logits[0, 3] = float("-inf")  # a masked history item
    assert distillation_kl(logits, logits.clone(), 0.3).abs() < 1e-6
    other = logits + torch.randn(6, 9)
    assert distillation_kl(other, logits, 0.3) > 1e-3
    # tau^2 * KL: for one row, compare with the closed form
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    p = torch.softmax(t / 2.0, -1)
    expected = 4.0 * (p * (p.log() - torch.log_softmax(s / 2.0, -1))).sum()
    torch.testing.assert_close(distillation_kl(s, t, 2.0), expected)

    _, train, _, model = build(tiny_config(**SMALL))
    branch, layout = model.branch_logits(next(iter(train)))
    same = {b: branch["id"] for b in branch}
    assert model.distillation_loss(same).abs() < 1e-5
    assert model.distillation_loss(branch) > 1e-4


def test_kd_detach_teacher_stops_teacher_gradients():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    distillation_kl(student, teacher, 0.3, detach_teacher=True).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    distillation_kl(student, teacher, 0.3, detach_teacher=False).backward()
    assert teacher.grad is not None and teacher.grad.abs().sum() > 0


def test_ramp_and_epoch_counter(tiny_config):
    assert ramp_weight(0, 20) == pytest.approx(math.exp(-5))
    assert ramp_weight(10, 20) == pytest.approx(math.exp(-5 * 0.25))
    assert ramp_weight(20, 20) == ramp_weight(35, 20) == 1.0
    assert ramp_weight(3, 0.5) == 0.5
    _, _, _, model = build(tiny_config(**SMALL))
    assert model.epoch == 0
    for expected in (1, 2, 3):  # the trainer: model.train() at every epoch, model.eval() to evaluate
        model.train()
        assert model.epoch == expected  # counted from 1, as the public code: w = exp(-5 (1 - 1/alpha)^2) at first
        model.eval()
    state = model.state_dict()
    assert int(state["epochs_started"]) == 3
    _, _, _, resumed = build(tiny_config(**SMALL))
    resumed.load_state_dict(state)
    resumed.train()
    assert resumed.epoch == 4  # a resumed run continues the ramp


@pytest.mark.parametrize("block", [True, False])
def test_block_id_key_hides_the_id_token_from_text_and_image(block, tiny_config):
    _, _, _, model = build(tiny_config(**SMALL, block_id_key=block))
    model.eval()
    ids = torch.arange(1, 20)
    allowed = model.attention_allowed([torch.ones(19, 1, dtype=torch.bool), torch.ones(19, 1, dtype=torch.bool)])
    assert allowed[:, 1:, 0].any().item() is not block and allowed[:, 0, :].all()
    with torch.no_grad():
        before = model.encode_items(ids)
        model.id_embedding.weight[1:].add_(torch.randn_like(model.id_embedding.weight[1:]))
        after = model.encode_items(ids)
    assert not torch.allclose(before[:, 0], after[:, 0])  # the ID branch follows its ID
    for k in (1, 2):  # text and image branches: untouched by the ID exactly when blocked
        assert torch.allclose(before[:, k], after[:, k], atol=1e-6) is block


def test_eval_scores_are_the_mean_of_the_branches_and_padding_is_zero(tiny_config):
    _, _, valid, model = build(tiny_config(**SMALL, backbone="gru4rec"))
    model.eval()
    batch = next(iter(valid))[0]
    with torch.no_grad():
        table = model.item_table()
        scores = model.full_sort_predict(batch)
        seq = model.trim(batch["item_id_list"], batch["item_length"])
        d = model.hidden_size
        per_branch = table.view(-1, 3, d)
        manual = 0
        for k, name in enumerate(("id", "text", "image")):
            out = model.backbones[name](seq, per_branch[seq][..., k, :])
            user = out[torch.arange(len(seq)), batch["item_length"] - 1]
            manual = manual + user @ per_branch[:, k].t() / 3
    torch.testing.assert_close(scores, manual, rtol=1e-4, atol=1e-4)
    assert table[0].abs().sum() == 0 and model.id_embedding.weight[0].abs().sum() == 0


def test_id_embedding_starts_from_the_features(tiny_config):
    _, _, _, model = build(tiny_config(**SMALL, id_init="features"))
    with torch.no_grad():
        tokens = model.source(torch.tensor([5]))
        text = model.projections["text"](tokens["text"][0][:, 0])
        image = model.projections["image"](tokens["image"][0][:, 0])
        has_image = bool(tokens["image"][1][0, 0])
        expected = (text + image) / 2 if has_image else text
    torch.testing.assert_close(model.id_embedding.weight[5:6], expected)


@pytest.mark.parametrize("backbone", ["sasrec", "gru4rec"])
def test_odmt_trains_through_runner(backbone, tiny_config, tiny_data_path):
    from test_runner import most_popular_recall_at_10

    result = run("ODMT", "tiny", config_dict=tiny_config(**SMALL, backbone=backbone, kd_alpha=4, epochs=8))
    assert result["test_result"]["recall@10"] > 1.2 * most_popular_recall_at_10(tiny_data_path), result["test_result"]


def test_gru4rec_backbone_loss_falls(tiny_config):
    _, train, _, model = build(tiny_config(**SMALL, backbone="gru4rec", kd_alpha=0.5))
    assert isinstance(model.backbones["text"].gru, torch.nn.GRU)
    batch = next(iter(train))
    losses = losses_on_one_batch(model, batch)
    assert losses[-1] < 0.9 * losses[0], losses
    for name in ("id", "text", "image"):
        assert model.backbones[name].gru.weight_ih_l0.grad.abs().sum() > 0
