"""UniSRec and UniSRec_e: text-only MoE adaptor, pre-training losses, both fine-tuning settings."""

import pytest
import torch
import torch.nn.functional as F

from recbole_mm.config import MMConfig
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.model.sequential_recommender.unisrec import drop_items
from recbole_mm.runner import run
from recbole_mm.checkpoint import load_pretrained
from recbole_mm.model.transferable import apply_adaptation
from recbole_mm.utils import get_model
from test_runner import most_popular_recall_at_10


def build(model_name, tiny_config, **overrides):
    config = MMConfig(model_name, "tiny", config_dict=tiny_config(**overrides))
    train, _, _ = prepare_data(config, create_dataset(config))
    return config, get_model(model_name)(config, train._dataset), train


def test_drop_items_keeps_order_and_never_empties():
    torch.manual_seed(0)
    seq = torch.tensor([[5, 6, 7, 8, 9, 0], [3, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    lengths = torch.tensor([5, 1, 6])
    dropped, new_lengths = drop_items(seq, lengths, 0.5)
    for row, original, n in zip(dropped.tolist(), seq.tolist(), new_lengths.tolist()):
        kept = row[:n]
        assert n >= 1 and all(v > 0 for v in kept) and all(v == 0 for v in row[n:])
        positions = [original.index(v) for v in kept]
        assert positions == sorted(positions)  # a subsequence, same order
    assert new_lengths[1] == 1 and dropped[1, 0] == 3
    all_dropped, lengths_all = drop_items(seq, lengths, 1.0)  # would empty every row: rows stay whole
    assert torch.equal(all_dropped, seq) and torch.equal(lengths_all, lengths)


def test_unisrec_is_text_only_and_ids_are_never_transferred(tiny_config):
    _, model, _ = build("UniSRec", tiny_config, modalities=["text", "image"])
    assert model.item_encoder.modalities == ["text"]
    assert all(".adaptors.text." in n for n, _ in model.named_parameters() if n.startswith("item_encoder."))
    assert model.item_encoder.adaptors["text"].expert_type == "whitening"
    _, model_e, _ = build("UniSRec_e", tiny_config, modalities=["text"])
    assert "item_embedding.weight" in dict(model_e.named_parameters())
    assert set(model_e.transferable_state_dict()) == set(model.transferable_state_dict())


def test_unisrec_pretrain_losses(tiny_config):
    torch.manual_seed(0)
    _, model, train = build("UniSRec", tiny_config, modalities=["text"])
    model.train()
    seq_item, seq_seq = model.pretrain_loss(next(iter(train)))
    assert seq_item > 0 and 0 < seq_seq < 0.01 * 10  # weighted by pretrain_seq_seq_weight = 1e-3
    seq_item.add(seq_seq).backward()
    assert model.item_encoder.adaptors["text"].expert_weight.grad.abs().sum() > 0


def test_full_softmax_pretraining_scores_every_item(tiny_config):
    """pretrain_negatives=all: the sequence-item loss is the cross-entropy over every item's score
    (padding excluded), not over the batch's targets; a bad value is refused by key."""
    _, model, train = build("UniSRec", tiny_config, modalities=["text"], pretrain_negatives="all")
    model.eval()  # no dropout / gate noise: the same representations in both computations
    batch = next(iter(train))
    with torch.no_grad():
        loss, _ = model.pretrain_loss(batch)
        item_seq, targets = model.training_targets(batch)
        output = model.sequence_encoder(item_seq, model.item_table()[item_seq])
        valid = targets > 0
        logits = model.score(output[valid], model.item_table())
        logits[:, 0] = float("-inf")
        expected = F.cross_entropy(logits, targets[valid])
        model.pretrain_negatives = "in_batch"
        in_batch, _ = model.pretrain_loss(batch)
    torch.testing.assert_close(loss, expected)
    assert abs(float(loss) - float(in_batch)) > 1e-3  # the negatives really differ
    with pytest.raises(ValueError, match="pretrain_negatives"):
        build("UniSRec", tiny_config, modalities=["text"], pretrain_negatives="some")


def test_unisrec_beats_most_popular(tiny_config, tiny_data_path):
    result = run("UniSRec", "tiny", config_dict=tiny_config(epochs=8, modalities=["text"]))
    assert result["test_result"]["recall@10"] > 1.2 * most_popular_recall_at_10(tiny_data_path)


def test_pretrained_unisrec_loads_into_unisrec_e_inductive_and_transductive(tiny_config, tmp_path):
    settings = dict(modalities=["text"], epochs=2, checkpoint_dir=str(tmp_path))
    # pre-train on the tiny set itself (another instance of the same item space is fine for the mechanics)
    pretrain = run("UniSRec", "tiny", config_dict=tiny_config(stage="pretrain", **settings))
    checkpoint = load_pretrained(pretrain["checkpoint"])
    assert checkpoint["metadata"]["family"] == "UniSRec" and checkpoint["metadata"]["modalities"] == ["text"]
    # UniSRec's own fine-tuning: encoder and position embedding fixed, adaptor trained
    config, model, _ = build("UniSRec", tiny_config, adaptation="fine_tune", fine_tune_freeze_encoder=True,
                             pretrained_checkpoint=pretrain["checkpoint"], **settings)
    summary = apply_adaptation(model, config)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert summary["frozen"] and all(n.startswith(("item_encoder.", "sequence_encoder.layer_norm")) for n in trainable)
    # transductive: UniSRec_e keeps its fresh ID embedding, loads everything else
    for mode in ("fine_tune", "re_learning"):
        result = run("UniSRec_e", "tiny", config_dict=tiny_config(adaptation=mode,
                                                                  pretrained_checkpoint=pretrain["checkpoint"],
                                                                  **settings))
        assert result["adaptation"]["loaded"] == len(checkpoint["state_dict"])
        assert 0 < result["test_result"]["recall@10"] <= 1
