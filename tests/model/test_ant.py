"""ANT / ANT_e on a tiny data set: whole-sequence loss equals prefix loss, history masking,
cached evaluation table, trimming."""

import pytest
import torch

from recbole_mm.config import MMConfig
from recbole_mm.data.batching import SequenceTrainDataLoader

TARGET_SEQ_FIELD = "target_item_list"  # overall.yaml's TARGET_ITEM_LIST_FIELD
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.utils import get_model, get_trainer


def build(model_name, config_dict):
    config = MMConfig(model_name, "tiny", config_dict=config_dict)
    dataset = create_dataset(config)
    train, valid, test = prepare_data(config, dataset)
    model = get_model(model_name)(config, train._dataset)
    return config, dataset, train, valid, test, model


@pytest.mark.parametrize("model_name,max_len", [("ANT", 20), ("ANT_e", 20), ("ANT", 4)])
def test_whole_sequence_loss_equals_mean_prefix_loss(model_name, max_len, tiny_config):
    """Exact, also when histories are cut to MAX_ITEM_LIST_LENGTH (max_len 4: sliding windows)."""
    config, dataset, train, _, _, model = build(
        model_name, tiny_config(train_whole_sequence=False, MAX_ITEM_LIST_LENGTH=max_len)
    )
    model.eval()  # no dropout, gate at its mean: the two losses must agree exactly
    prefix_data = train._dataset.inter_feat
    users = prefix_data["user_id"]
    whole = SequenceTrainDataLoader(config, train._dataset, shuffle=False)
    first_users = whole.users[:20]
    keep = torch.isin(users, first_users)
    prefix_batch = prefix_data[keep.nonzero().squeeze(1).tolist()]
    with torch.no_grad():
        prefix_loss = model.calculate_loss(prefix_batch)
        loader = SequenceTrainDataLoader(config, train._dataset, shuffle=False)
        loader.set_batch_size(10 ** 6)  # one batch holding every row
        batch = next(iter(loader))
        selected = torch.isin(batch["user_id"], first_users)
        sub = batch[selected.nonzero().squeeze(1).tolist()]
        whole_loss = model.calculate_loss(sub)
    assert int((sub[TARGET_SEQ_FIELD] > 0).sum()) == int(keep.sum())
    torch.testing.assert_close(whole_loss, prefix_loss, rtol=1e-4, atol=1e-5)


def test_whole_sequence_loader_covers_every_prefix_once(tiny_config):
    config, dataset, train, _, _, _ = build("ANT", tiny_config(train_whole_sequence=True))
    assert isinstance(train, SequenceTrainDataLoader) and train.whole_sequences
    n_targets = sum(int((b[TARGET_SEQ_FIELD] > 0).sum()) for b in train)
    assert n_targets == len(train._dataset.inter_feat)
    widths = [b["item_id_list"].shape[1] for b in train]
    assert max(widths) <= config["MAX_ITEM_LIST_LENGTH"]


def test_bucketed_prefix_batches_hold_every_prefix_once_with_less_padding(tiny_config):
    config, dataset, train, _, _, _ = build("ANT", tiny_config(train_whole_sequence=False, length_bucketing=True))
    assert isinstance(train, SequenceTrainDataLoader) and not train.whole_sequences
    inter = train._dataset.inter_feat
    expected = sorted(zip(inter["user_id"].tolist(), inter["item_length"].tolist(), inter["item_id"].tolist()))
    seen, padded = [], 0
    for batch in train:
        targets = batch[TARGET_SEQ_FIELD]
        lengths = batch["item_length"]
        assert torch.equal((targets > 0).sum(1), torch.ones_like(lengths))  # one target, at the end
        last = targets[torch.arange(len(lengths)), lengths - 1]
        seen += zip(batch["user_id"].tolist(), lengths.tolist(), last.tolist())
        padded += batch["item_id_list"].numel()
    assert sorted(seen) == expected
    assert padded < 0.6 * len(inter) * config["MAX_ITEM_LIST_LENGTH"]


def test_trimming_does_not_change_scores(tiny_config):
    config, dataset, train, valid, _, model = build("ANT", tiny_config())
    model.eval()
    batch = next(iter(valid))[0]
    with torch.no_grad():
        trimmed = model.full_sort_predict(batch)
        seq, lens = batch["item_id_list"], batch["item_length"]
        table = model.item_table()
        full_out = model.sequence_encoder(seq, table[seq])  # untrimmed: padded to max length
        last = full_out[torch.arange(len(lens)), lens - 1]
        untrimmed = model.score(last, table)
    torch.testing.assert_close(trimmed, untrimmed, rtol=1e-4, atol=1e-4)


def test_item_table_cached_during_evaluation_only(tiny_config):
    config, dataset, train, valid, _, model = build("ANT", tiny_config())
    calls = []
    original = model.item_table
    model.item_table = lambda: calls.append(1) or original()
    model.eval()
    with torch.no_grad():
        for batch in valid:
            model.full_sort_predict(batch[0])
    assert len(calls) == 1
    model.train()
    model.eval()
    with torch.no_grad():
        model.full_sort_predict(next(iter(valid))[0])
    assert len(calls) == 2


def test_history_items_are_masked_in_ranking(tiny_config):
    config, dataset, train, valid, _, model = build("ANT", tiny_config(mask_history_items=True))
    trainer = get_trainer(config["MODEL_TYPE"], "ANT")(config, model)
    model.eval()
    trainer.tot_item_num = dataset.item_num
    batched = next(iter(valid))
    with torch.no_grad():
        interaction, scores, _, _ = trainer._full_sort_batch_eval(batched)
    history = interaction["item_id_list"]
    rows = torch.arange(len(history)).unsqueeze(1).expand_as(history)
    assert torch.isinf(scores[rows, history]).all()
    visible = torch.isfinite(scores).sum(1)
    distinct = torch.tensor([len(set(h[h > 0].tolist())) for h in history])
    assert torch.equal(visible, torch.full_like(visible, dataset.item_num - 1) - distinct)


def test_ant_e_adds_id_embedding(tiny_config):
    _, _, _, _, _, ant_e = build("ANT_e", tiny_config())
    ant_e.eval()
    with torch.no_grad():
        diff = ant_e.item_table() - ant_e.item_encoder()
    torch.testing.assert_close(diff, ant_e.item_embedding.weight)
    assert torch.all(ant_e.item_embedding.weight[0] == 0)


def test_sorting_evaluation_rows_keeps_metrics(tiny_config):
    from recbole_mm.utils import get_trainer

    results = []
    for sort in (False, True):
        config, dataset, train, valid, _, model = build("ANT", tiny_config(sort_eval_by_length=sort, seed=3))
        trainer = get_trainer(config["MODEL_TYPE"], "ANT")(config, model)
        torch.manual_seed(0)
        model.load_state_dict(build("ANT", tiny_config(seed=3))[-1].state_dict())
        lengths = valid._dataset.inter_feat["item_length"]
        assert bool((lengths[1:] >= lengths[:-1]).all()) == sort
        results.append(trainer.evaluate(valid, load_best_model=False))
    for metric, value in results[0].items():
        assert abs(value - results[1][metric]) < 1e-3, (results[0], results[1])
