"""End to end through the runner: plugin models and a stock RecBole model on tiny data, results
above a most-popular ranking, JSON results, checkpoint round trip, and the runner's errors."""

import json
import os
from collections import Counter

import pytest
import torch

from recbole_mm.config import MMConfig
from recbole_mm.data.features import FeatureFileError
from recbole_mm.runner import run
from recbole_mm.checkpoint import load_checkpoint
from recbole_mm.utils import get_model


def most_popular_recall_at_10(data_path, name="tiny"):
    """Recall@10 of ranking by training popularity, history items removed (the same protocol)."""
    def rows(part):
        with open(os.path.join(data_path, name, f"{name}.{part}.inter")) as f:
            next(f)
            for line in f:
                user, hist, target = line.rstrip("\n").split("\t")
                yield hist.split(), target

    counts = Counter()
    for hist, target in rows("train"):
        counts[target] += 1
    ranking = [item for item, _ in counts.most_common()]
    hits = total = 0
    for hist, target in rows("test"):
        seen = set(hist)
        top = [i for i in ranking if i not in seen][:10]
        hits += target in top
        total += 1
    return hits / total


@pytest.mark.parametrize("model_name,epochs", [("ANT", 8), ("ANT_e", 8), ("SASRec", 12)])
def test_models_beat_most_popular(model_name, epochs, tiny_config, tiny_data_path):
    result = run(model_name, "tiny", config_dict=tiny_config(epochs=epochs))
    test = result["test_result"]
    for metric in ("recall@10", "recall@50", "ndcg@10", "ndcg@50"):
        assert 0.0 <= test[metric] <= 1.0
    assert test["recall@50"] >= test["recall@10"]
    baseline = most_popular_recall_at_10(tiny_data_path)
    assert test["recall@10"] > 1.2 * baseline, (test, baseline)
    with open(result["results_file"]) as f:
        written = json.load(f)
    assert written["test_result"] == test
    assert len(written["train_epoch_seconds"]) == written["epochs_trained"] > 0


def test_training_loss_falls(tiny_config):
    from recbole_mm.data.utils import create_dataset, prepare_data
    from recbole_mm.utils import get_trainer

    config = MMConfig("ANT", "tiny", config_dict=tiny_config())
    dataset = create_dataset(config)
    train, _, _ = prepare_data(config, dataset)
    model = get_model("ANT")(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "ANT")(config, model)
    losses = [trainer._train_epoch(train, epoch) for epoch in range(4)]
    assert losses[-1] < 0.9 * losses[0], losses


def test_checkpoint_round_trip(tiny_config):
    config_dict = tiny_config(epochs=1)
    result = run("ANT", "tiny", config_dict=config_dict)
    checkpoint = load_checkpoint(result["checkpoint"])
    from recbole_mm.data.utils import create_dataset, prepare_data

    config = MMConfig("ANT", "tiny", config_dict=config_dict)
    train, valid, _ = prepare_data(config, create_dataset(config))
    fresh = get_model("ANT")(config, train._dataset)
    batch = next(iter(valid))[0]
    fresh.eval()
    with torch.no_grad():
        before = fresh.full_sort_predict(batch)
    fresh.load_state_dict(checkpoint["state_dict"])
    fresh.eval()
    with torch.no_grad():
        after = fresh.full_sort_predict(batch)
    assert not torch.allclose(before, after)
    again = get_model("ANT")(config, train._dataset)
    again.load_state_dict(checkpoint["state_dict"])
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.full_sort_predict(batch), after)


def test_unknown_model(tiny_config):
    with pytest.raises(ValueError, match=r"unknown model 'SASrecc'.*Did you mean"):
        run("SASrecc", "tiny", config_dict=tiny_config())


def test_missing_dataset_folder_says_how_to_get_it(tiny_config):
    with pytest.raises(FileNotFoundError, match=r"nowhere not found.*--data_path=../shared/datasets"):
        run("ANT", "nowhere", config_dict=tiny_config())


def test_unknown_config_key(tiny_config):
    with pytest.raises(KeyError, match=r"unknown config key\(s\): 'learning_rat' \(did you mean 'learning_rate'\?\)"):
        MMConfig("ANT", "tiny", config_dict=tiny_config(learning_rat=0.1))


def test_unknown_modality_in_config(tiny_config):
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        run("ANT", "tiny", config_dict=tiny_config(modalities=["text", "audio"]))


def test_missing_feature_file_names_modality(tiny_config):
    with pytest.raises(FeatureFileError, match=r"tiny.photos.npy not found.*Modality 'image'"):
        run("ANT", "tiny", config_dict=tiny_config(feature_files={"image": "tiny.photos"}))


def test_config_layers(tiny_config, tmp_path):
    user_file = tmp_path / "user.yaml"
    user_file.write_text("learning_rate: 0.005\nfusion_beta: 0.3\n")
    config = MMConfig("ANT_e", "Scientific", config_file_list=[str(user_file)], config_dict={"fusion_beta": 0.2})
    assert config["temperature"] == 0.07  # ANT.yaml, inherited by ANT_e
    assert config["modalities"] == ["text", "image"]  # dataset YAML beats model YAML
    assert config["learning_rate"] == 0.005  # user file beats model YAML
    assert config["fusion_beta"] == 0.2  # config dict beats user file
    assert config["n_layers"] == 2 and config["hidden_size"] == 256


def test_resume_continues_an_interrupted_run(tiny_config):
    first = run("ANT", "tiny", config_dict=tiny_config(epochs=2))
    last_state = first["checkpoint"].replace(".pth", "-last.pth")
    state = load_checkpoint(last_state)
    assert state["epoch"] == 1 and state["best_model_file"] == first["checkpoint"]
    resumed = run("ANT", "tiny", config_dict=tiny_config(epochs=4, resume_from=last_state))
    assert resumed["resumed_at_epoch"] == 2  # epochs 2 and 3 trained in the resumed run
    assert resumed["epochs_trained"] == 4  # the timings of all four epochs are reported
    assert resumed["train_epoch_seconds"][:2] == first["train_epoch_seconds"]
    assert resumed["train_loss_history"][:2] == first["train_loss_history"]  # the curve covers all four epochs
    assert [v["epoch"] for v in resumed["valid_history"]] == [0, 1, 2, 3]
    assert resumed["best_valid_score"] >= first["best_valid_score"]
    assert os.path.isfile(resumed["checkpoint"])


@pytest.mark.parametrize("model_name", ["GRU4Rec", "Pop"])
def test_other_stock_models_run_through_the_runner(model_name, tiny_config):
    result = run(model_name, "tiny", config_dict=tiny_config(epochs=2))
    test = result["test_result"]
    chance = 10 / 150  # Recall@10 of a random ranking over the tiny data set's 150 items
    assert chance * 1.5 < test["recall@10"] <= 1.0


def test_training_curve_history_and_tensorboard(tiny_config):
    result = run("ANT", "tiny", config_dict=tiny_config(epochs=3, eval_step=1, learning_rate=0.003))
    assert len(result["train_loss_history"]) == 3 and result["train_loss_history"][-1] < result["train_loss_history"][0]
    assert [v["epoch"] for v in result["valid_history"]] == [0, 1, 2]
    assert max(v["score"] for v in result["valid_history"]) == pytest.approx(result["best_valid_score"])
    assert result["settings"]["learning_rate"] == 0.003 and "checkpoint_dir" not in result["settings"]
    with open(result["curve_file"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result["curve_file"] == result["results_file"][:-5] + ".png"
    events = os.listdir(result["tensorboard_dir"])  # RecBole's TensorBoard events, as in RecBole
    assert any(name.startswith("events.out.tfevents") for name in events)
    assert os.path.basename(result["tensorboard_dir"]) == os.path.basename(result["log_file"])[:-4]
    quiet = run("ANT", "tiny", config_dict=tiny_config(epochs=1, log_tensorboard=False))
    assert quiet["tensorboard_dir"] is None and not os.path.exists(
        os.path.join("log_tensorboard", os.path.basename(quiet["log_file"])[:-4]))
