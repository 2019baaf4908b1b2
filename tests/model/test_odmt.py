"""ODMT: distillation term, ramp and epoch counter, ID-key blocking, evaluation scores, training;
token-level item inputs (item_inputs: tokens | pooled | auto)."""

import math

import numpy as np

import pytest
import torch

from recbole_mm.config import MMConfig
from recbole_mm.data.synthetic import SyntheticSpec, write_dataset
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.model.losses import distillation_kl, ramp_weight
from recbole_mm.runner import run
from recbole_mm.utils import get_model
from recbole_mm.model.encoders import FeatureTokens, FileTokens
from helpers.model import (check_chunked_item_table, check_missing_token_files_error, losses_on_one_batch,
                           perturbed_tokens)

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


@pytest.fixture(scope="module")
def equal_size_data(tmp_path_factory):
    """A tiny data set whose text and image features have the same size, as the public code's (768, 768)."""
    root = tmp_path_factory.mktemp("equal_size")
    write_dataset(SyntheticSpec(name="tiny", n_users=300, n_items=80, n_categories=6, text_dim=24, image_dim=24,
                                seed=5), str(root))
    return str(root)


def test_id_embedding_starts_as_the_public_codes_mean_of_raw_features(tiny_config, equal_size_data):
    """Public code (model.py, ``init == 1``): ``id_encoder.weight = (v_feat[:, 0] + t_feat[:, 0]) / 2``,
    the ID token is ``id_proj(id_encoder(ids))``."""
    config, train, _, model = build(tiny_config(**SMALL, data_path=equal_size_data, id_init="raw_mean"))
    features, masks = model.load_modalities(config, train._dataset)  # the raw features, independent of the model
    text, image, has_image = features["text"], features["image"], masks["image"].bool()
    assert model.id_embedding.embedding_dim == text.size(1) == image.size(1) == 24
    assert 0 < int(has_image[1:].sum()) < model.n_items - 1  # both cases occur
    both = torch.nonzero(has_image[1:]).view(-1) + 1
    text_only = torch.nonzero(~has_image[1:]).view(-1) + 1
    weight = model.id_embedding.weight.detach()
    torch.testing.assert_close(weight[both], (text[both] + image[both]) / 2)
    torch.testing.assert_close(weight[text_only], text[text_only])  # no image: the text feature alone
    assert weight[0].abs().sum() == 0  # padding row (public: the padding item's features)
    with torch.no_grad():  # the ID token entering the IMT: the ID Linear layer over the mean
        torch.testing.assert_close(model.id_tokens(both), model.id_projection((text[both] + image[both]) / 2))


def test_raw_mean_pads_the_smaller_feature_and_projected_mean_is_kept(tiny_config):
    config, train, _, model = build(tiny_config(**SMALL))  # default raw_mean; tiny text 64, image 32
    assert config["id_init"] == "raw_mean" and model.id_projection is not None
    features, masks = model.load_modalities(config, train._dataset)
    k = int(torch.nonzero(masks["image"].bool()[1:])[0]) + 1
    padded = torch.cat([features["image"][k], torch.zeros(64 - 32)])
    torch.testing.assert_close(model.id_embedding.weight[k].detach(), (features["text"][k] + padded) / 2)

    _, _, _, model = build(tiny_config(**SMALL, id_init="projected_mean"))  # the plugin's earlier variant
    assert model.id_projection is None and model.id_embedding.embedding_dim == model.hidden_size
    with torch.no_grad():
        tokens = model.source(torch.tensor([5]))
        text = model.projections["text"](tokens["text"][0][:, 0])
        image = model.projections["image"](tokens["image"][0][:, 0])
        has_image = bool(tokens["image"][1][0, 0])
        expected = (text + image) / 2 if has_image else text
    torch.testing.assert_close(model.id_embedding.weight[5:6], expected)
    with pytest.raises(ValueError, match="id_init"):
        build(tiny_config(**SMALL, id_init="mean"))


def test_defaults_follow_the_public_code():
    """IMT heads = merged_att_layers = 2, ReLU FFNs, LayerNorm eps 1e-6, dropout 0.1, FFN 4 x size."""
    import os
    import yaml

    from recbole_mm.resources import properties_dir
    with open(os.path.join(properties_dir(), "model", "ODMT.yaml")) as f:
        defaults = yaml.safe_load(f)
    assert defaults["imt_n_heads"] == defaults["imt_layers"] == defaults["n_heads"] == defaults["n_layers"] == 2
    assert defaults["hidden_act"] == "relu" and defaults["layer_norm_eps"] == 1e-6
    assert defaults["hidden_dropout_prob"] == defaults["attn_dropout_prob"] == 0.1
    assert defaults["imt_inner_size"] == defaults["inner_size"] == 4 * defaults["hidden_size"]
    assert defaults["id_init"] == "raw_mean" and defaults["branch_metrics"] is False


def test_optimiser_is_the_public_codes_adamw_with_decay_and_clipping(tiny_config):
    """AdamW, weight decay 0.1 on every parameter, gradient norm clipped at 5 (public main.py)."""
    from recbole_mm.utils import get_trainer

    config, train, _, model = build(tiny_config(**SMALL))
    trainer = get_trainer(config["MODEL_TYPE"], "ODMT")(config, model)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    (group,) = trainer.optimizer.param_groups
    assert group["weight_decay"] == 0.1 and len(group["params"]) == len(list(model.parameters()))
    assert trainer.clip_grad_norm == {"max_norm": 5}
    model.train()
    loss = model.calculate_loss(next(iter(train)))
    (loss * 1e6).backward()  # a huge gradient: the trainer's clipping brings it to norm 5
    torch.nn.utils.clip_grad_norm_(model.parameters(), **trainer.clip_grad_norm)
    total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    assert total == pytest.approx(5.0, rel=1e-3)


def test_branch_metrics_report_each_branch_and_keep_the_fused_result(tiny_config):
    from recbole_mm.trainer import MMTrainer

    config, train, valid, model = build(tiny_config(**SMALL, branch_metrics=True))
    trainer = MMTrainer(config, model)
    trainer.eval_collector.data_collect(train)
    trainer.fit(train, valid, verbose=False, saved=False)  # 2 epochs, branches differ
    with_branches = trainer.evaluate(valid, load_best_model=False)
    config["branch_metrics"] = False
    fused_only = trainer.evaluate(valid, load_best_model=False)

    metrics = [key for key in fused_only]
    assert metrics and all("[" not in key for key in metrics)
    assert {key: with_branches[key] for key in metrics} == dict(fused_only)  # the fused result is unchanged
    assert "recall@10" in metrics and "ndcg@10" in metrics
    for branch in ("id", "text", "image"):
        for metric in metrics:
            assert 0.0 <= with_branches[f"{metric}[{branch}]"] <= 1.0
    assert len(with_branches) == 4 * len(metrics)
    # a branch's result is what the trainer reports for a model scoring with that branch alone
    original = model.full_sort_predict
    for branch in ("id", "text", "image"):
        model.full_sort_predict = lambda interaction, b=branch: model.branch_full_sort_predict(interaction)[b]
        alone = trainer.evaluate(valid, load_best_model=False)
        assert {key: with_branches[f"{key}[{branch}]"] for key in metrics} == dict(alone)
    model.full_sort_predict = original
    assert len({with_branches[f"recall@50[{b}]"] for b in ("id", "text", "image")}) > 1  # not one score thrice


def test_branch_scores_average_to_the_fused_scores(tiny_config):
    _, _, valid, model = build(tiny_config(**SMALL))
    model.eval()
    batch = next(iter(valid))[0]
    with torch.no_grad():
        branches = model.branch_full_sort_predict(batch)
        fused = model.full_sort_predict(batch)
    assert set(branches) == {"id", "text", "image"}
    torch.testing.assert_close(sum(branches.values()) / 3, fused, rtol=1e-4, atol=1e-5)


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


# ----- token-level item inputs (docs/models/ODMT.md) ---------------------------------------------
def test_token_inputs_reach_every_text_token_and_ignore_padding(tiny_config, token_dir):
    folder, written = token_dir
    config, train, _, model = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="tokens"))
    assert model.item_inputs == "tokens" and isinstance(model.source, FileTokens)
    text = model.source.items["text"]
    id2token = list(train._dataset.field2id_token["item_id"])
    keys, counts = written["text"]
    row = next(i for i, c in enumerate(counts) if c >= 3 and c < text.max_tokens)
    item = id2token.index(keys[row])
    assert text.counts[item] == counts[row] and text.rows[item] == row
    model.eval()
    ids = torch.tensor([0, item, 1, 2])
    with torch.no_grad():
        before = model.encode_items(ids)
        original = text.tokens
        text.tokens = perturbed_tokens(text, row, 2)  # a valid, non-first text token
        moved = model.encode_items(ids)
        text.tokens = original
        text.tokens = perturbed_tokens(text, row, int(counts[row]), delta=1000.0)  # a padding position
        padded = model.encode_items(ids)
        text.tokens = original
    assert not torch.allclose(before[1, 1], moved[1, 1])  # the text branch sees the token
    torch.testing.assert_close(before, padded, rtol=0, atol=1e-6)  # padding is masked out
    torch.testing.assert_close(before[2:], moved[2:])  # other items untouched
    assert before[0].abs().sum() == 0


def test_items_without_any_token_stay_finite_and_id_starts_from_first_tokens(tiny_config, token_dir):
    folder, written = token_dir
    _, train, _, model = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="tokens", id_init="raw_mean",
                                           text_readout="first"))
    id2token = list(train._dataset.field2id_token["item_id"])
    lonely = id2token.index(written["none"][0])
    assert model.source.items["text"].counts[lonely] == 0 and model.source.items["image"].counts[lonely] == 0
    model.eval()
    with torch.no_grad():
        reps = model.encode_items(torch.tensor([lonely]))
    assert torch.isfinite(reps).all()
    # text_readout: first: raw_mean from the first (CLS) tokens, as the public code's (v_feat[:, 0] + t_feat[:, 0]) / 2
    item = next(i for i in range(1, model.n_items) if model.source.items["text"].counts[i] > 0
                and model.source.items["image"].counts[i] > 0)
    tokens = model.source(torch.tensor([item]))
    text, image = tokens["text"][0][0, 0], tokens["image"][0][0, 0]
    expected = text.clone()
    expected[: image.numel()] += image
    torch.testing.assert_close(model.id_embedding.weight[item], expected / 2)


@pytest.mark.parametrize("readout", ["first", "mean"])
def test_text_readout_first_reads_the_first_token_and_mean_all_of_them(readout, tiny_config, token_dir):
    folder, written = token_dir
    _, train, _, model = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="tokens", id_init="raw_mean",
                                           text_readout=readout))
    text = model.source.items["text"]
    item = next(i for i in range(1, model.n_items) if text.counts[i] >= 3 and model.source.items["image"].counts[i])
    row = int(text.rows[item])
    model.eval()
    ids = torch.tensor([item])
    with torch.no_grad():
        before = model.encode_items(ids)
        original = text.tokens
        swapped = np.array(original)
        swapped[row, [0, 1]] = swapped[row, [1, 0]]  # the IMT has no positions: only the readout can tell
        text.tokens = swapped
        after = model.encode_items(ids)
        text.tokens = original
    if readout == "mean":
        torch.testing.assert_close(before[0, 1], after[0, 1], rtol=1e-5, atol=1e-6)
    else:
        assert not torch.allclose(before[0, 1], after[0, 1], rtol=1e-3, atol=1e-4)
    # raw_mean's ID row starts from the same text summary
    tokens = model.source(ids)
    states, mask = tokens["text"]
    summary = states[0, 0] if readout == "first" else states[0, mask[0]].float().mean(0)
    expected = summary.float().clone()
    expected[: tokens["image"][0].size(-1)] += tokens["image"][0][0, 0].float()
    torch.testing.assert_close(model.id_embedding.weight[item], expected / 2)
    with pytest.raises(ValueError, match="text_readout"):
        build(tiny_config(**SMALL, text_readout="last"))


def test_item_inputs_pooled_and_auto(tiny_config, token_dir):
    folder, _ = token_dir
    _, _, _, pooled = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="pooled"))
    assert pooled.item_inputs == "pooled" and isinstance(pooled.source, FeatureTokens)
    _, _, _, auto = build(tiny_config(**SMALL, feature_dir=folder))
    assert auto.item_inputs == "tokens"  # the reference's inputs when the files are there
    _, _, _, fallback = build(tiny_config(**SMALL))
    assert fallback.item_inputs == "pooled"
    with pytest.raises(ValueError, match="item_inputs"):
        build(tiny_config(**SMALL, item_inputs="patches"))


def test_tokens_without_files_is_one_line_naming_the_file_and_command(tiny_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_missing_token_files_error(build, tiny_config(**SMALL, feature_dir=str(empty), item_inputs="tokens"))


def test_token_inputs_train_and_evaluate_in_chunks(tiny_config, token_dir):
    folder, _ = token_dir
    _, train, valid, model = build(tiny_config(**SMALL, feature_dir=folder, item_inputs="tokens", kd_alpha=0.5,
                                               item_chunk_size=16))
    losses = losses_on_one_batch(model, next(iter(train)), steps=15)
    assert all(np.isfinite(losses)) and losses[-1] < 0.95 * losses[0], losses
    check_chunked_item_table(model, valid)
