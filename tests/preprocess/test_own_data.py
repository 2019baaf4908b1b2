"""A user's own tables (recbole_mm/preprocess/tables.py, own_data.py): headers, errors that name the
file, line and column, the leave-one-out / ratio / time splits, and the settings a folder gives.
The whole path through the command lines is in tests/test_cli.py."""

import os

import pytest
from recbole.data.dataset import Dataset

from helpers.preprocess import make_own_dataset
from recbole_mm.preprocess.amazon import RawDataError
from recbole_mm.preprocess.atomic import EmptyDataError, ratio_counts, split_rows
from recbole_mm.preprocess.own_data import find_input, folder_settings, parse_key_values
from recbole_mm.preprocess.settings import load_settings
from recbole_mm.preprocess.tables import read_interactions, read_items


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_interactions_headers_times_and_order(tmp_path):
    path = write(tmp_path / "a.csv", "user_id:token,item_id:token,timestamp:float\nu1,i1,2024-01-02\n"
                                     "u1,i2,1704240000\n\nu2,i1,2024-01-01T12:00:00\n")
    frame = read_interactions(path)
    assert frame["user"].tolist() == ["u1", "u1", "u2"] and frame["item"].tolist() == ["i1", "i2", "i1"]
    assert frame["time"].tolist() == [1704153600.0, 1704240000.0, 1704110400.0]  # ISO dates read as UTC
    assert frame["line"].tolist() == [2, 3, 5]  # blank lines skipped, numbers kept
    no_time = read_interactions(write(tmp_path / "b.tsv", "user\titem\nu1\ti2\nu1\ti1\n"))
    assert no_time["time"].tolist() == [2.0, 3.0]  # the file order is the time order


@pytest.mark.parametrize("text,message", [
    ("customer,item\n", r"a.csv, line 1: no user column; the header must name one of \['user', 'user_id'"),
    ("user,item,timestamp\nu1,i1,2024-01-01\nu1,i2\n", r"a.csv, line 3: expected 3 comma-separated fields"),
    ("user,item,timestamp\nu1,i1,yesterday\n", r"a.csv, line 2, column 'timestamp': 'yesterday' is neither a number"),
    ("user,item\nu 1,i1\n", r"a.csv, line 2, column 'user': 'u 1' is empty or holds whitespace"),
    ("user,item\n", r"a.csv: no interaction rows"),
])
def test_interaction_errors_name_file_line_and_column(tmp_path, text, message):
    with pytest.raises(RawDataError, match=message):
        read_interactions(write(tmp_path / "a.csv", text))


def test_items_text_price_and_errors(tmp_path):
    path = write(tmp_path / "items.tsv", 'item\ttitle\tprice\tbrand\n'
                                         'i1\tRed &amp; blue tape\t$1,299.00\tAcme\ni2\t"Glass, 12 cm"\t\t\n'
                                         'i1\tlater duplicate\t3\t\ni3\tnot asked for\t2\t\n')
    meta = read_items(path, wanted={"i1", "i2"})
    assert set(meta) == {"i1", "i2"}
    assert meta["i1"]["text"] == "Red & blue tape" and meta["i1"]["price"] == 1299.0 and meta["i1"]["brand"] == "Acme"
    assert meta["i2"]["text"] == "Glass, 12 cm" and meta["i2"]["price"] is None  # quoted tab-free field
    bad = write(tmp_path / "bad.csv", "item,text,price\ni1,tape,cheap\n")
    with pytest.raises(RawDataError, match=r"bad.csv, line 2, column 'price': 'cheap' is not a price"):
        read_items(bad)
    with pytest.raises(RawDataError, match=r"nt.csv, line 1: no text column"):
        read_items(write(tmp_path / "nt.csv", "item,price\ni1,3\n"))


def test_ratio_counts_are_recboles():
    dataset = Dataset.__new__(Dataset)
    for total in range(1, 40):
        for ratios in ([0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.9, 0.05, 0.05]):
            ours = ratio_counts(total, ratios)
            assert sum(ours) == total
            assert list(map(int, dataset._calcu_split_ids(total, ratios))) == [ours[0], ours[0] + ours[1]]


def test_ratio_and_time_splits_keep_every_target_once_in_time_order():
    seqs = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 4, 5, 6]]
    times = [[float(t) for t in range(10)], [0.5, 8.5, 9.5, 9.6]]
    for split in ("ratio", "time"):
        train, valid, test = split_rows(seqs, 3, split, [0.6, 0.2, 0.2], times)
        rows = train + valid + test
        assert sorted((u, t) for u, _, t in rows) == sorted((u, s[t]) for u, s in enumerate(seqs) for t in range(1, len(s)))
        for u, hist, target in rows:
            position = seqs[u].index(target)
            assert hist == seqs[u][max(0, position - 3):position]  # the full (cut) history before the target
    train, valid, test = split_rows(seqs, 50, "ratio", [0.6, 0.2, 0.2], times)
    assert [t for u, _, t in valid if u == 0] == [6, 7] and [t for u, _, t in test if u == 0] == [8, 9]
    assert [t for u, _, t in valid if u == 1] == [5] and [t for u, _, t in test if u == 1] == [6]
    train, valid, test = split_rows(seqs, 50, "time", [0.6, 0.2, 0.2], times)
    # 14 interactions in time order: the cuts fall at the 9th (t = 7.0) and the 12th (t = 9.0)
    assert [(u, t) for u, _, t in valid] == [(0, 7), (0, 8), (1, 4)] and [(u, t) for u, _, t in test] == [(0, 9), (1, 5), (1, 6)]
    with pytest.raises(EmptyDataError, match="leaves the valid part empty"):
        split_rows([[0, 1, 2]], 50, "time", [0.6, 0.2, 0.2], [[1.0, 2.0, 2.0]])


def test_settings_refuse_two_inputs_and_bad_splits(tmp_path):
    with pytest.raises(ValueError, match="`reviews` \\+ `meta` .* or as `interactions` \\+ `items`"):
        load_settings(overrides={"dataset_name": "x", "reviews": "r", "interactions": "i", "items": "t"})
    with pytest.raises(ValueError, match="config key `split`: expected one of"):
        load_settings(overrides={"dataset_name": "x", "interactions": "i", "items": "t", "split": "random"})
    with pytest.raises(ValueError, match="config key `split_ratios`"):
        load_settings(overrides={"dataset_name": "x", "interactions": "i", "items": "t", "split_ratios": [1, 0, 0]})


def test_folder_settings_find_the_files_and_leave_out_steps_without_input(tmp_path):
    folder = make_own_dataset(str(tmp_path / "shop"), name="shop", images=False, prices=False)
    settings = folder_settings(folder)
    assert settings["dataset_name"] == "shop" and settings["steps"] == ["atomic", "text"]
    assert settings["interactions"].endswith("shop.interactions.csv") and settings["items"].endswith("shop.items.tsv")
    full = folder_settings(make_own_dataset(str(tmp_path / "full"), name="full"), overrides={"k_core": 3})
    assert full["steps"] == ["atomic", "text", "images", "image_features", "price"] and full["k_core"] == 3
    with pytest.raises(FileNotFoundError, match=r"no items file; expected one of \['x.items.csv'"):
        find_input(str(tmp_path), "x", "items")
    assert parse_key_values(["--k_core=3", "--split_ratios=[0.7, 0.2, 0.1]", "--text_encoder=~"]) == {
        "k_core": 3, "split_ratios": [0.7, 0.2, 0.1], "text_encoder": None}
    with pytest.raises(ValueError, match="settings are written --key=value"):
        parse_key_values(["k_core"])
    assert os.path.isdir(os.path.join(tmp_path, "full", "images"))
