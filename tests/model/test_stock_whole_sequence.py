"""stock_whole_sequence: stock causal RecBole models trained on one row per user sequence with the
loss at every position; the loss (and its gradient) is the mean of RecBole's prefix-sample losses."""

import pytest
import torch

from recbole_mm.config import ConfigError, MMConfig
from recbole_mm.data.batching import SequenceTrainDataLoader
from recbole_mm.data.utils import STOCK_WHOLE_SEQUENCE_MODELS, create_dataset, prepare_data
from recbole_mm.model.stock_whole_sequence import ADAPTERS, whole_sequence_loss
from recbole_mm.runner import run
from recbole_mm.utils import get_model

from test_runner import most_popular_recall_at_10

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "dropout_prob": 0.0}
FEATURES = {"load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id", "category"]},
            "selected_features": ["category"], "item_attribute": "category"}
# short histories so that RecBole's truncation to MAX_ITEM_LIST_LENGTH is exercised
SETTINGS = dict(NO_DROPOUT, MAX_ITEM_LIST_LENGTH=6, hidden_size=16, inner_size=16)


def _config(tiny_config, model, **overrides):
    settings = dict(SETTINGS, **(FEATURES if model in ("SASRecF", "FDSA", "GRU4RecF", "S3Rec") else {}))
    return MMConfig(model, "tiny", config_dict=tiny_config(**dict(settings, **overrides)))


def _s3rec_pretrained_file(tiny_config, tmp_path) -> str:
    """A freshly initialised S3Rec saved as RecBole's fine-tuning stage reads it."""
    config = _config(tiny_config, "S3Rec", train_stage="pretrain")
    model = get_model("S3Rec")(config, create_dataset(config))
    path = str(tmp_path / "s3rec.pth")
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def _model_and_loaders(tiny_config, tmp_path, model_name):
    stage = {}
    if model_name == "S3Rec":
        stage = {"train_stage": "finetune", "pre_model_path": _s3rec_pretrained_file(tiny_config, tmp_path)}
    prefix_config = _config(tiny_config, model_name, **stage)
    dataset = create_dataset(prefix_config)
    prefix_train, _, _ = prepare_data(prefix_config, dataset)
    whole_config = _config(tiny_config, model_name, stock_whole_sequence=True, **stage)
    whole_train, _, _ = prepare_data(whole_config, create_dataset(whole_config))
    model = get_model(model_name)(prefix_config, prefix_train.dataset).eval()
    return model, prefix_train, whole_train, whole_config["TARGET_ITEM_LIST_FIELD"]


def _summed_loss_and_grads(model, batches, loss_of, count_of):
    """Sum over batches of (batch mean loss x samples in the batch), its gradients, the sample count."""
    model.zero_grad()
    total, count = 0.0, 0
    for batch in batches:
        n = count_of(batch)
        loss = loss_of(batch) * n
        loss.backward()
        total, count = total + loss.item(), count + n
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return total, count, grads


@pytest.mark.parametrize("model_name", STOCK_WHOLE_SEQUENCE_MODELS)
def test_whole_sequence_loss_is_the_mean_of_recbole_prefix_losses(tiny_config, tmp_path, model_name):
    model, prefix_train, whole_train, target_field = _model_and_loaders(tiny_config, tmp_path, model_name)
    assert isinstance(whole_train, SequenceTrainDataLoader) and whole_train.whole_sequences
    prefix_sum, n_prefix, prefix_grads = _summed_loss_and_grads(
        model, prefix_train, model.calculate_loss, len)
    whole_sum, n_targets, whole_grads = _summed_loss_and_grads(
        model, whole_train, lambda b: whole_sequence_loss(model, b, target_field),
        lambda b: int((b[target_field] > 0).sum()))
    assert n_targets == n_prefix == len(prefix_train.dataset.inter_feat)
    assert whole_train.n_rows < n_prefix  # fewer rows than prefix samples (many truncation rows here)
    torch.testing.assert_close(whole_sum / n_targets, prefix_sum / n_prefix, rtol=1e-5, atol=1e-5)
    assert whole_grads.keys() == prefix_grads.keys()
    for name, grad in whole_grads.items():
        torch.testing.assert_close(grad / n_targets, prefix_grads[name] / n_prefix, rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{model_name} {name}: {m}")


def test_every_accepted_model_has_an_adapter():
    assert set(ADAPTERS) == set(STOCK_WHOLE_SEQUENCE_MODELS)


@pytest.mark.parametrize("model_name, overrides, reason", [
    ("BERT4Rec", {}, "bidirectional"),
    ("NARM", {}, "whole sequence"),
    ("Pop", {}, "not a sequential model"),
    ("NPE", {}, "not among the models checked to be causal"),
    ("SASRec", {"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
     "use loss_type CE"),
    ("S3Rec", dict(FEATURES, train_stage="pretrain"), "pre-training builds its own samples"),
])
def test_a_model_it_cannot_serve_is_refused_with_its_reason(tiny_config, model_name, overrides, reason):
    config = MMConfig(model_name, "tiny", config_dict=tiny_config(stock_whole_sequence=True, **overrides))
    dataset = create_dataset(config)
    with pytest.raises(ConfigError, match=rf"{model_name} cannot train on whole sequences: .*{reason}"):
        prepare_data(config, dataset)


def test_the_command_line_refuses_with_one_error_line(tiny_data_path, tmp_path, capsys):
    from recbole_mm import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["--model=BERT4Rec", "--dataset=tiny", f"--data_path={tiny_data_path}", "--state=WARNING",
                  f"--checkpoint_dir={tmp_path}", "--stock_whole_sequence=True"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exited.value.code == 2 and lines == [
        "error: stock_whole_sequence: BERT4Rec cannot train on whole sequences: its attention is bidirectional "
        "(position t sees later items)"]


def test_stock_sasrec_on_whole_sequences_beats_most_popular(tiny_config, tiny_data_path):
    # the batches hold no `item_id`: SASRec's own calculate_loss would fail, the trainer mixin's loss runs
    result = run("SASRec", "tiny", config_dict=tiny_config(epochs=12, stock_whole_sequence=True))
    assert result["test_result"]["recall@10"] > 1.2 * most_popular_recall_at_10(tiny_data_path)
