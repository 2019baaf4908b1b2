"""Feature files: round trip, alignment by item token, masks, and every bad-input error."""

import os

import numpy as np
import pytest

from recbole_mm.data.features import (
    FeatureFileError,
    align_features,
    check_modalities,
    read_feature_file,
    write_feature_file,
)

ID2TOKEN = ["[PAD]", "b", "a", "d", "c"]


def test_round_trip_and_memory_map(tmp_path):
    stem = str(tmp_path / "x.text")
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_feature_file(stem, ["a", "b", "c", "d"], matrix)
    keys, loaded = read_feature_file(stem)
    assert keys == ["a", "b", "c", "d"]
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, matrix)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_alignment_ignores_row_order(tmp_path):
    rng = np.random.default_rng(0)
    keys = ["a", "b", "c", "d"]
    matrix = rng.normal(size=(4, 5)).astype(np.float32)
    aligned = align_features("text", keys, matrix, ID2TOKEN, "x")
    perm = rng.permutation(4)
    shuffled = align_features("text", [keys[i] for i in perm], matrix[perm], ID2TOKEN, "x")
    np.testing.assert_array_equal(aligned.matrix, shuffled.matrix)
    for internal_id, token in enumerate(ID2TOKEN[1:], start=1):
        np.testing.assert_array_equal(aligned.matrix[internal_id], matrix[keys.index(token)])
    np.testing.assert_array_equal(aligned.matrix[0], 0)


def test_missing_items_get_mask():
    matrix = np.ones((2, 3), dtype=np.float32)
    feat = align_features("image", ["c", "a"], matrix, ID2TOKEN, "x")
    assert feat.mask.tolist() == [False, False, True, False, True]
    assert feat.coverage == 0.5
    np.testing.assert_array_equal(feat.matrix[~feat.mask], 0)


def test_rows_and_keys_must_match(tmp_path):
    stem = str(tmp_path / "bad")
    np.save(stem + ".npy", np.zeros((3, 2), dtype=np.float32))
    with open(stem + ".keys", "w") as f:
        f.write("a\nb\n")
    with pytest.raises(FeatureFileError, match=r"lists 2 item ids but .*bad.npy has 3 rows"):
        read_feature_file(stem)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FeatureFileError, match=r"nothere.npy not found"):
        read_feature_file(str(tmp_path / "nothere"))


def test_nan_is_refused_with_item_named():
    matrix = np.zeros((3, 2), dtype=np.float32)
    matrix[1, 0] = np.nan
    with pytest.raises(FeatureFileError, match=r"row 1 \(item 'b'\) holds NaN or inf"):
        align_features("text", ["a", "b", "c"], matrix, ID2TOKEN, "f.npy")


def test_inf_is_refused():
    matrix = np.zeros((1, 2), dtype=np.float32)
    matrix[0, 1] = np.inf
    with pytest.raises(FeatureFileError, match="NaN or inf"):
        align_features("text", ["a"], matrix, ID2TOKEN, "f.npy")


def test_unknown_item_is_refused_or_ignored():
    matrix = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(FeatureFileError, match=r"1 item id\(s\) are not in the data set \(e.g. 'zz'\)"):
        align_features("text", ["a", "zz"], matrix, ID2TOKEN, "f.npy")
    feat = align_features("text", ["a", "zz"], matrix, ID2TOKEN, "f.npy", unknown_items="ignore")
    assert feat.mask.sum() == 1


def test_dimension_mismatch():
    with pytest.raises(FeatureFileError, match="dimension 2, expected 384"):
        align_features("text", ["a"], np.ones((1, 2), np.float32), ID2TOKEN, "f.npy", expected_dim=384)


def test_duplicate_keys(tmp_path):
    stem = str(tmp_path / "dup")
    np.save(stem + ".npy", np.zeros((2, 2), dtype=np.float32))
    with open(stem + ".keys", "w") as f:
        f.write("a\na\n")
    with pytest.raises(FeatureFileError, match="line 2: item id 'a' appears twice"):
        read_feature_file(stem)


def test_unknown_modality():
    with pytest.raises(ValueError, match=r"unknown modality 'audio'"):
        check_modalities(["text", "audio"])


def _split_folders(tiny_data_path, root, feature_modalities):
    """The tiny data set's .inter files in <root>/data/tiny/, the given modalities' feature files
    in <root>/dataset/tiny/ (where the preprocessing writes)."""
    import shutil

    source = os.path.join(tiny_data_path, "tiny")
    for folder in ("data", "dataset"):
        os.makedirs(os.path.join(root, folder, "tiny"))
    for name in os.listdir(source):
        if name.endswith(".inter"):
            shutil.copy(os.path.join(source, name), os.path.join(root, "data", "tiny", name))
        elif name.split(".")[1] in feature_modalities:
            shutil.copy(os.path.join(source, name), os.path.join(root, "dataset", "tiny", name))
    return os.path.join(root, "data")


def test_features_found_in_dataset_folder_and_modalities_from_the_files(tiny_config, tiny_data_path, tmp_path,
                                                                        monkeypatch, caplog):
    from recbole_mm.config import MMConfig
    from recbole_mm.data.utils import create_dataset

    data_path = _split_folders(tiny_data_path, str(tmp_path), ("text", "image"))
    monkeypatch.chdir(tmp_path)
    settings = {k: v for k, v in tiny_config(data_path=data_path).items() if k != "modalities"}
    config = MMConfig("ANT", "tiny", config_dict=settings)
    assert config["modalities"] == ["text", "image", "price"] and not config.given("modalities")
    with caplog.at_level("INFO"):
        dataset = create_dataset(config)
    assert set(dataset.item_features) == {"text", "image"} and config["modalities"] == ["text", "image"]
    assert "modalities ['text', 'image']: the feature files present" in caplog.text
    assert dataset.item_features["text"].mask[1:].all()
    # a modality the user asks for is required: the error names every folder looked in
    explicit = MMConfig("ANT", "tiny", config_dict={**settings, "modalities": ["text", "price"]})
    assert explicit.given("modalities")
    with pytest.raises(FeatureFileError, match=r"tiny.price.npy not found .*\(looked in .*data/tiny, dataset/tiny\)"):
        create_dataset(explicit)
    # the model YAML's default (UniSRec: text) is kept as the upper bound
    assert MMConfig("UniSRec", "tiny", config_dict=settings)["modalities"] == ["text"]
