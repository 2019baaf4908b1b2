"""stock_length_bucketing: stock RecBole models on the same prefix samples in trimmed,
length-bucketed batches."""

from collections import Counter

import torch

from recbole_mm.config import MMConfig
from recbole_mm.data.batching import PrefixTrainDataLoader
from recbole_mm.data.utils import create_dataset, prepare_data
from recbole_mm.runner import run
from recbole_mm.utils import get_model

from test_runner import most_popular_recall_at_10


def _loaders(tiny_config, model="SASRec", **overrides):
    config = MMConfig(model, "tiny", config_dict=tiny_config(stock_length_bucketing=True, **overrides))
    dataset = create_dataset(config)
    return config, dataset, prepare_data(config, dataset)


def test_prefix_loader_yields_every_recbole_sample_once_with_less_padding(tiny_config):
    config, dataset, (train, _, _) = _loaders(tiny_config)
    assert isinstance(train, PrefixTrainDataLoader)
    inter = train.dataset.inter_feat
    expected = Counter(
        (int(u), tuple(h[:n].tolist()), int(t))
        for u, h, n, t in zip(inter["user_id"], inter["item_id_list"], inter["item_length"], inter["item_id"])
    )
    seen, padded = Counter(), 0
    for batch in train:
        seqs, lengths = batch["item_id_list"], batch["item_length"]
        assert seqs.size(1) == int(lengths.max())  # trimmed to the longest row
        padded += seqs.numel()
        for u, h, n, t in zip(batch["user_id"], seqs, lengths, batch["item_id"]):
            seen[(int(u), tuple(h[:n].tolist()), int(t))] += 1
    assert seen == expected
    assert padded < 0.7 * len(inter) * config["MAX_ITEM_LIST_LENGTH"]


def test_trimmed_batch_gives_stock_sasrec_the_same_loss(tiny_config):
    config, dataset, (train, _, _) = _loaders(tiny_config, hidden_dropout_prob=0.0, attn_dropout_prob=0.0)
    model = get_model("SASRec")(config, train.dataset).eval()
    batch = next(iter(train))
    width = config["MAX_ITEM_LIST_LENGTH"]
    full = torch.zeros(len(batch), width, dtype=torch.long)
    full[:, : batch["item_id_list"].size(1)] = batch["item_id_list"]
    with torch.no_grad():
        trimmed_loss = model.calculate_loss(batch)
        batch.interaction["item_id_list"] = full
        full_loss = model.calculate_loss(batch)
    assert torch.allclose(trimmed_loss, full_loss, atol=1e-5)


def test_models_without_exact_trimming_keep_recbole_loader(tiny_config):
    _, _, (train, _, _) = _loaders(tiny_config, model="NPE")
    assert not isinstance(train, PrefixTrainDataLoader)


def test_stock_sasrec_with_bucketing_beats_most_popular(tiny_config, tiny_data_path):
    result = run("SASRec", "tiny", config_dict=tiny_config(epochs=12, stock_length_bucketing=True))
    assert result["test_result"]["recall@10"] > 1.2 * most_popular_recall_at_10(tiny_data_path)


def test_item_attributes_from_benchmark_text(tmp_path):
    from recbole_mm.preprocess.attributes import write_item_file

    src = tmp_path / "src"
    src.mkdir()
    (src / "D.item2index").write_text("A1\t0\nB2\t1\nC3\t2\n")
    (src / "D.text").write_text(
        "item_id:token\ttext:token_seq\n"
        "A1\tSaw blade 5. in. Tools & Home Power Tools Saws. ACME. \n"
        "B2\tGlue. Tools & Home Adhesives. Gorilla. \n"
        "C3\tOnly a title\n"
    )
    path = write_item_file(str(src), str(tmp_path / "out"), "D")
    lines = open(path).read().splitlines()
    assert lines[0] == "item_id:token\tbrand:token\tcategories:token_seq"
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in lines[1:]}
    # keyed by the .inter tokens; title periods kept in the title; words of > half the items dropped
    assert rows["0"] == ["ACME", "power saws"]
    assert rows["1"] == ["Gorilla", "adhesives"]
    assert rows["2"] == ["[unknown]", ""]


def test_item_attributes_keep_at_most_max_words_category_words():
    from recbole_mm.preprocess.attributes import build_item_attributes

    long_path = "Tools & Home " + " ".join(f"w{i}" for i in range(40))
    rows = [("A", f"Title. {long_path}. ACME. "), ("B", "Glue. Tools & Home Adhesives. Gorilla. ")]
    attributes = build_item_attributes(rows, max_share=0.9, max_words=5)
    # the shared words ("tools", "home") go first, then the first five of the rest are kept
    assert attributes["A"] == ("ACME", ["w0", "w1", "w2", "w3", "w4"])
    assert attributes["B"] == ("Gorilla", ["adhesives"])


def test_fdsa_without_item_file_names_the_command(tiny_config, tiny_data_path, tmp_path):
    import shutil

    import pytest

    folder = tmp_path / "data" / "tiny"
    folder.mkdir(parents=True)
    for part in ("train", "valid", "test"):  # the split files only: no tiny.item
        shutil.copy(f"{tiny_data_path}/tiny/tiny.{part}.inter", folder)
    config = MMConfig("FDSA", "tiny", config_dict=tiny_config(
        data_path=str(tmp_path / "data"), selected_features=["brand"], feature_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="recbole_mm.preprocess.attributes"):
        create_dataset(config)


def test_benchmark_text_step_is_the_pipelines(tmp_path):
    """preprocess.benchmark's text features come from the pipeline's resumable text step."""
    import numpy as np

    from helpers.preprocess import make_text_encoder
    from recbole_mm.data.features import read_feature_file
    from recbole_mm.preprocess.benchmark import build_text_features

    src = tmp_path / "D"
    src.mkdir()
    (src / "D.item2index").write_text("A1\t0\nB2\t1\n")
    (src / "D.text").write_text("item_id:token\ttext:token_seq\nA1\titem 1. brand.\nB2\t7 $ 3 & 5.\n")
    encoder = tmp_path / "enc"
    make_text_encoder(str(encoder))
    stem = build_text_features(str(src), str(tmp_path / "out"), "D", encoder_path=str(encoder), batch_size=1)
    keys, matrix = read_feature_file(stem)
    assert list(keys) == ["0", "1"] and matrix.shape[0] == 2
    assert np.isfinite(matrix).all() and not np.allclose(matrix[0], matrix[1])


def test_pretraining_rows_are_each_users_whole_training_sequence(tiny_config):
    """stock_whole_sequence_rows: one row per user = the history the validation row holds."""
    from recbole_mm.data.batching import WholeSequenceRowsLoader

    config = MMConfig("SASRec", "tiny", config_dict=tiny_config(stock_whole_sequence_rows=True,
                                                                 train_stage="pretrain"))
    dataset = create_dataset(config)
    train, valid, _ = prepare_data(config, dataset)
    assert isinstance(train, WholeSequenceRowsLoader)
    rows = {}
    for batch in train:
        assert set(batch.interaction) == {"user_id", "item_id_list", "item_length"}
        for u, seq, n in zip(batch["user_id"], batch["item_id_list"], batch["item_length"]):
            rows.setdefault(int(u), []).append(seq[:n].tolist())
    inter = valid.dataset.inter_feat
    expected = {int(u): h[:n].tolist() for u, h, n in zip(inter["user_id"], inter["item_id_list"], inter["item_length"])}
    assert rows.keys() == expected.keys()
    assert all(len(r) == 1 and r[0] == expected[u] for u, r in rows.items())


def test_bert4rec_whole_rows_are_masked_like_recbole_and_exact_under_trimming(tiny_config):
    """stock_whole_sequence_rows for a cloze model: one row per user, RecBole's mask_itemseq
    transform applied to each batch, and the trimmed batch gives the padded batch's loss."""
    import random

    from recbole_mm.data.batching import WholeSequenceRowsLoader

    config = MMConfig("BERT4Rec", "tiny", config_dict=tiny_config(
        stock_whole_sequence_rows=True, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, ft_ratio=0.0))
    dataset = create_dataset(config)
    train, valid, _ = prepare_data(config, dataset)
    assert isinstance(train, WholeSequenceRowsLoader)
    users = [int(u) for batch in train for u in batch["user_id"]]
    assert sorted(users) == sorted(set(users)) and len(users) == len(valid.dataset.inter_feat)

    model = get_model("BERT4Rec")(config, train.dataset).eval()
    random.seed(3)
    batch = next(iter(train))
    masked, seq = batch[model.MASK_ITEM_SEQ], batch["item_id_list"]
    assert masked.size(1) == int(batch["item_length"].max())  # trimmed to the longest row
    is_masked = masked == model.mask_token
    assert is_masked.any() and (seq[is_masked] > 0).all()  # only real items are masked
    assert (masked[~is_masked] == seq[~is_masked]).all()
    width = config["MAX_ITEM_LIST_LENGTH"]
    with torch.no_grad():
        trimmed_loss = model.calculate_loss(batch)
        padded = torch.zeros(len(batch), width, dtype=torch.long)
        padded[:, : masked.size(1)] = masked
        batch.interaction[model.MASK_ITEM_SEQ] = padded
        padded_loss = model.calculate_loss(batch)
    assert torch.isfinite(trimmed_loss) and torch.allclose(trimmed_loss, padded_loss, atol=1e-5)


def test_whole_sequence_rows_are_ignored_for_next_item_models(tiny_config):
    _, _, (train, _, _) = _loaders(tiny_config, model="SASRec", stock_whole_sequence_rows=True)
    assert isinstance(train, PrefixTrainDataLoader)  # SASRec needs (history, next item) rows


def test_s3rec_pretraining_stage_then_fine_tuning_through_the_cli(tiny_data_path, tmp_path, capsys):
    """Stock S3Rec's two runs through run_recbole_mm: the pre-training stage (one row per user
    sequence) ends with its file, and the fine-tuning model starts from those weights."""
    import yaml

    from recbole_mm import cli
    from recbole_mm.checkpoint import load_checkpoint

    settings = {"load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id", "category"]},
                "item_attribute": "category", "hidden_size": 16, "inner_size": 16,
                "data_path": tiny_data_path, "checkpoint_dir": str(tmp_path / "saved"), "show_progress": False}
    yaml_file = tmp_path / "s3rec.yaml"
    yaml_file.write_text(yaml.safe_dump(settings))
    common = ["--model=S3Rec", "--dataset=tiny", f"--config_files={yaml_file}"]
    pretrain = cli.main(common + ["--train_stage=pretrain", "--pretrain_epochs=2", "--save_step=2",
                                  "--stock_whole_sequence_rows=True", "--train_batch_size=128"])
    assert f"pre-trained model: {pretrain['pretrained_model']}" in capsys.readouterr().out

    def s3rec(**stage):
        config = MMConfig("S3Rec", "tiny", config_dict=dict(settings, **stage))
        return get_model("S3Rec")(config, create_dataset(config))  # its bare torch.load: weights_only

    loaded = s3rec(train_stage="finetune", pre_model_path=pretrain["pretrained_model"])
    fresh = s3rec(train_stage="pretrain")  # freshly initialised
    assert not torch.equal(loaded.item_embedding.weight, fresh.item_embedding.weight)
    saved = load_checkpoint(pretrain["pretrained_model"])["state_dict"]  # plain data: weights_only=True
    assert all(torch.equal(value, saved[name]) for name, value in loaded.state_dict().items())
    finetune = cli.main(common + ["--train_stage=finetune", f"--pre_model_path={pretrain['pretrained_model']}",
                                  "--epochs=1", "--stock_length_bucketing=True"])
    assert 0.0 <= finetune["test_result"]["recall@10"] <= 1.0
