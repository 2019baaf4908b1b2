"""Raw Amazon 2018 reading, k-core, chronological split, item text and prices: unit checks and
the errors that name the file, line and field."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from recbole_mm.preprocess.amazon import RawDataError, item_text, read_meta, read_reviews
from recbole_mm.preprocess.atomic import EmptyDataError, filter_interactions, k_core, order_sequences, split_rows
from recbole_mm.preprocess.price import normalise_prices, parse_price
from recbole_mm.preprocess.settings import load_settings


def _gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


def review(user, item, t):
    return json.dumps({"reviewerID": user, "asin": item, "overall": 5.0, "unixReviewTime": t})


@pytest.mark.parametrize("raw,expected", [
    ("$12.99", 12.99), ("$1,299.00", 1299.0), ("$10.00 - $15.00", 12.5), (" $7.5 ", 7.5), (3, 3.0),
    ("", None), (None, None), (".a-box-inner{background-color:#fff}", None), ("$0.00", None),
    ("Currently unavailable.", None), ("$1 - $2 - $3", None),
])
def test_parse_price(raw, expected):
    assert parse_price(raw) == (pytest.approx(expected) if expected is not None else None)


def test_normalise_prices_to_0_100():
    out = normalise_prices([5.0, 10.0, 15.0])
    np.testing.assert_allclose(out, [0, 50, 100])
    assert normalise_prices([4.0, 4.0]).tolist() == [0.0, 0.0]
    assert normalise_prices([1.0, 9.0], log_scale=True).max() == pytest.approx(100.0)


def test_k_core_reaches_a_fixed_point():
    # item z has 2 users; dropping it leaves user u3 with 1 item, whose removal drops item y to 1 user ...
    rows = [("u1", "x"), ("u1", "y"), ("u2", "x"), ("u2", "y"), ("u3", "z"), ("u3", "y"), ("u4", "z"),
            ("u4", "x"), ("u4", "w"), ("u5", "x"), ("u5", "y")]
    frame = pd.DataFrame({"user": [u for u, _ in rows], "item": [i for _, i in rows]})
    out, rounds = k_core(frame, 2, 3)
    assert rounds > 2
    assert (out.groupby("user").size() >= 2).all() and (out.groupby("item").size() >= 3).all()
    one_round = frame[frame.groupby("item")["user"].transform("size") >= 3]
    assert len(out) < len(one_round)  # a single pass would not be enough


def test_no_items_left_after_k_core_is_an_error():
    frame = pd.DataFrame({"user": ["a", "b"], "item": ["x", "y"], "time": [1, 2], "line": [1, 2]})
    with pytest.raises(EmptyDataError, match="no interactions left after the 5/5-core filter"):
        filter_interactions(frame, {"x", "y"}, 5, 5)


def test_chronological_order_and_stable_ties():
    frame = pd.DataFrame({"user": ["b", "a", "a", "a", "b"], "item": ["p", "r", "q", "s", "q"],
                          "time": [5, 2, 2, 1, 1], "line": [1, 2, 3, 4, 5]})
    seqs = order_sequences(frame, "file_order")
    assert seqs.users == ["a", "b"]  # reviewerID order
    assert [[seqs.items[i] for i in s] for s in seqs.sequences] == [["s", "r", "q"], ["q", "p"]]
    assert seqs.items == ["s", "r", "q", "p"]  # first appearance over users in id order
    by_asin = order_sequences(frame, "asin")
    assert [by_asin.items[i] for i in by_asin.sequences[0]] == ["s", "q", "r"]


def test_split_every_prefix_and_history_cut():
    train, valid, test = split_rows([[0, 1, 2, 3, 4, 5]], max_history=3)
    assert [(h, t) for _, h, t in train] == [([0], 1), ([0, 1], 2), ([0, 1, 2], 3)]
    assert valid == [(0, [1, 2, 3], 4)] and test == [(0, [2, 3, 4], 5)]
    with pytest.raises(EmptyDataError, match="at least 3"):
        split_rows([[0, 1]], 50)


def test_item_text_fields_and_cleaning():
    meta = {"title": "Glass &amp; <b>Tube</b>", "category": ["Lab", "Lab", "Glass"], "brand": "Acme"}
    assert item_text(meta, ["title", "category", "brand"]) == "Glass & Tube. Lab Glass. Acme."
    assert item_text(meta, ["brand", "title"]) == "Acme. Glass & Tube."
    assert item_text({"title": "x"}, ["title", "brand"]) == "x."


def test_malformed_json_line_is_named(tmp_path):
    path = _gz(tmp_path / "r.json.gz", [review("a", "x", 1), "{not json", review("b", "x", 2)])
    with pytest.raises(RawDataError, match=r"r.json.gz, line 2: malformed JSON"):
        read_reviews(path)


def test_missing_field_is_named(tmp_path):
    path = _gz(tmp_path / "r.json.gz", [review("a", "x", 1), json.dumps({"reviewerID": "b", "asin": "y"})])
    with pytest.raises(RawDataError, match=r"line 2: missing field 'unixReviewTime'"):
        read_reviews(path)
    meta = _gz(tmp_path / "m.json.gz", [json.dumps({"title": "no asin"})])
    with pytest.raises(RawDataError, match=r"m.json.gz, line 1: missing field 'asin'"):
        read_meta(meta)


def test_missing_reviews_file_and_min_rating(tmp_path):
    with pytest.raises(RawDataError, match=r"nothere.json.gz not found"):
        read_reviews(str(tmp_path / "nothere.json.gz"))
    lines = [json.dumps({"reviewerID": "a", "asin": "x", "overall": r, "unixReviewTime": 1}) for r in (1.0, 4.0)]
    assert len(read_reviews(_gz(tmp_path / "r.json.gz", lines), min_rating=3)) == 1


def test_settings_refuse_unknown_and_bad_keys(tmp_path):
    base = {"dataset_name": "D", "reviews": "r", "meta": "m"}
    with pytest.raises(ValueError, match=r"unknown key `k_cor`.*did you mean `k_core`"):
        load_settings(overrides=dict(base, k_cor=5))
    with pytest.raises(ValueError, match=r"leave-one-out"):
        load_settings(overrides=dict(base, k_core=2))
    with pytest.raises(ValueError, match=r"config key `reviews` is required"):
        load_settings(overrides={"dataset_name": "D", "meta": "m"})
    with pytest.raises(ValueError, match=r"unknown step 'txt'"):
        load_settings(overrides=dict(base, steps=["atomic", "txt"]))
