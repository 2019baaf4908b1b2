"""preprocess.subsample: a user sample of a benchmark folder keeps every row of the drawn users,
copies item-side and feature files under the new name, is reproducible, and trains."""

import os

import numpy as np
import pytest

from recbole_mm.data.features import write_feature_file
from recbole_mm.data.token_features import read_token_feature_file, write_token_feature_file
from recbole_mm.preprocess.subsample import SubsampleError, main, subsample

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


@pytest.fixture
def bench_folder(tmp_path):
    """A benchmark folder ``Toy`` of 30 users in the Games layout (prefix training rows, leave-one-out
    validation and test) with text features for its 60 items."""
    rng = np.random.default_rng(0)
    src = tmp_path / "Toy"
    src.mkdir()
    rows = {part: [] for part in ("train", "valid", "test")}
    for user in range(30):
        items = [int(i) for i in rng.choice(60, size=int(rng.integers(4, 8)), replace=False)]
        for t in range(1, len(items) - 2):
            rows["train"].append(f"{user}\t{' '.join(map(str, items[:t]))}\t{items[t]}\n")
        rows["valid"].append(f"{user}\t{' '.join(map(str, items[:-2]))}\t{items[-2]}\n")
        rows["test"].append(f"{user}\t{' '.join(map(str, items[:-1]))}\t{items[-1]}\n")
    for part, lines in rows.items():
        (src / f"Toy.{part}.inter").write_text(HEADER + "".join(lines))
    (src / "Toy.item2index").write_text("".join(f"K{i}\t{i}\n" for i in range(60)))
    features = tmp_path / "features"
    write_feature_file(str(features / "Toy.text"), [str(i) for i in range(60)],
                       rng.normal(size=(60, 8)).astype(np.float32))
    write_token_feature_file(str(features / "Toy.text_tokens"), [str(i) for i in range(60)],
                             rng.normal(size=(60, 5, 8)).astype(np.float32), counts=rng.integers(1, 6, size=60))
    return str(src), str(features), rows


def users_of(path):
    with open(path) as handle:
        handle.readline()
        return [line.split("\t", 1)[0] for line in handle]


def test_sample_keeps_every_row_of_the_drawn_users_and_copies_features(bench_folder, tmp_path):
    src, features, rows = bench_folder
    out = subsample(src, str(tmp_path / "out"), 12, features=features)
    assert os.path.basename(out) == "Toy_u12"
    test_users = users_of(os.path.join(out, "Toy_u12.test.inter"))
    assert len(test_users) == len(set(test_users)) == 12
    for part in ("train", "valid", "test"):
        kept = open(os.path.join(out, f"Toy_u12.{part}.inter")).readlines()
        assert kept[0] == HEADER
        expected = [line for line in rows[part] if line.split("\t", 1)[0] in set(test_users)]
        assert kept[1:] == expected  # every row of the drawn users, in file order, nothing else
    assert os.path.isfile(os.path.join(out, "Toy_u12.item2index"))
    # features: the rows of the items in the kept rows (a run rejects other keys), aligned with their keys
    items = {item for part in ("train", "valid", "test")
             for line in open(os.path.join(out, f"Toy_u12.{part}.inter")).readlines()[1:]
             for field in line.rstrip("\n").split("\t")[1:] for item in field.split()}
    keys = open(os.path.join(out, "Toy_u12.text.keys")).read().split()
    assert set(keys) == items and len(items) < 60
    original = np.load(os.path.join(features, "Toy.text.npy"))
    np.testing.assert_array_equal(np.load(os.path.join(out, "Toy_u12.text.npy")), original[[int(k) for k in keys]])
    token_keys, tokens, counts = read_token_feature_file(os.path.join(out, "Toy_u12.text_tokens"))
    all_keys, all_tokens, all_counts = read_token_feature_file(os.path.join(features, "Toy.text_tokens"))
    picked = [all_keys.index(k) for k in token_keys]
    assert token_keys == keys  # the token file keeps the same items, in its own order
    np.testing.assert_array_equal(tokens, all_tokens[picked])
    np.testing.assert_array_equal(counts, all_counts[picked])
    again = subsample(src, str(tmp_path / "again"), 12, features=features)
    assert users_of(os.path.join(again, "Toy_u12.train.inter")) == users_of(os.path.join(out, "Toy_u12.train.inter"))
    other = subsample(src, str(tmp_path / "other"), 12, seed=7)
    assert os.path.basename(other) == "Toy_u12_s7"
    assert set(users_of(os.path.join(other, "Toy_u12_s7.test.inter"))) != set(test_users)


def test_bad_input_is_one_line_and_leaves_nothing(bench_folder, tmp_path, capsys):
    src, _, _ = bench_folder
    with pytest.raises(SubsampleError, match="between 1 and the data set's 30 users"):
        subsample(src, str(tmp_path / "out"), 31)
    with pytest.raises(SystemExit):
        main(["--src", str(tmp_path), "--users", "3", "--out", str(tmp_path / "out")])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train.inter not found" in message and "Traceback" not in message
    with pytest.raises(SubsampleError, match="no feature files"):
        subsample(src, str(tmp_path / "out"), 3, features=str(tmp_path))
    assert not os.path.exists(tmp_path / "out")


def test_sample_trains_ant_on_its_features(bench_folder, tmp_path):
    from helpers import TINY_MODEL
    from recbole_mm.runner import run

    src, features, _ = bench_folder
    subsample(src, str(tmp_path / "data"), 20, features=features)
    result = run("ANT", "Toy_u20", config_dict={
        **TINY_MODEL, "data_path": str(tmp_path / "data"), "epochs": 1, "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"), "topk": [10], "valid_metric": "NDCG@10"})
    assert 0 <= result["test_result"]["recall@10"] <= 1  # the sample's text features load (no unknown keys)
