"""Bad values never poison an output (issue 15, part 4): a price that is NaN, infinite, negative or
no number, and a numerical multi-task value that is NaN or infinite, is treated as missing with a
count in the log, or refused with the file, line and column; it never reaches every row, training,
or a scaling bound."""

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest

from recbole_mm.config import MMConfig
from recbole_mm.data.aliexpress import convert_csv, read_aliexpress_csv
from recbole_mm.data.features import read_feature_file
from recbole_mm.data.synthetic import SyntheticSpec, write_dataset
from recbole_mm.data.synthetic_countries import CountrySpec, write_country_csvs
from recbole_mm.data.utils import create_dataset
from recbole_mm.preprocess.amazon import read_meta
from recbole_mm.preprocess.price import build_price_features, normalise_prices, parse_price
from recbole_mm.preprocess.tables import read_items


@pytest.mark.parametrize("raw", ["$-5.00", "$1.2.3", "-5", "$1,2,3", "$5.00 - $-1.00"])
def test_parse_price_refuses_signs_and_malformed_numbers(raw):
    assert parse_price(raw) is None  # NaN, inf, "nan", non-positive numbers: None already


@pytest.mark.parametrize("bad", ["$-5.00", "$1.2.3"])
def test_items_table_refuses_a_bad_price_by_line_and_column(bad, tmp_path):
    path = tmp_path / "shop.items.tsv"
    path.write_text(f"item\ttitle\tprice\na\tA thing\t$3.50\nb\tB thing\t{bad}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"shop.items.tsv, line 3, column 'price': {bad!r} is not a price")):
        read_items(str(path))


def test_metadata_prices_that_are_no_price_are_missing_and_counted(tmp_path, caplog):
    records = [{"asin": "A1", "title": "one", "price": "$12.99"}, {"asin": "A2", "title": "two", "price": "$-5.00"},
               {"asin": "A3", "title": "three", "price": "$1.2.3"}, {"asin": "A4", "title": "four", "price": ""}]
    path = tmp_path / "meta_Toy.json"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    caplog.set_level(logging.WARNING)
    meta = read_meta(str(path))
    assert [meta[a]["price"] for a in ("A1", "A2", "A3", "A4")] == [12.99, None, None, None]
    assert "meta_Toy.json: 2 price fields are not a price (e.g. '$-5.00'" in caplog.text


def _item_file(path, prices) -> str:
    rows = "".join(f"it{i}\t{price}\n" for i, price in enumerate(prices))
    path.write_text("item_id:token\tprice:float\n" + rows, encoding="utf-8")
    return str(path)


def test_item_file_bad_prices_are_missing_and_never_a_bound(tmp_path, caplog):
    item_file = _item_file(tmp_path / "D.item", ["10.0", "nan", "20.0", "inf", "-5", "-inf", "0", "", "15.0"])
    caplog.set_level(logging.WARNING)
    summary = build_price_features(item_file, str(tmp_path / "D.price"))
    keys, matrix = read_feature_file(str(tmp_path / "D.price"), mmap=False)
    assert keys == ["it0", "it2", "it8"]
    assert np.isfinite(matrix).all() and matrix[:, 0].tolist() == pytest.approx([0.0, 100.0, 50.0])
    assert (summary["raw_min"], summary["raw_max"], summary["with_price"]) == (10.0, 20.0, 3)
    assert "D.item: 5 prices are NaN, infinite, zero or negative (lines [3, 5, 6, 7, 8])" in caplog.text


def test_item_file_price_that_is_no_number_is_refused(tmp_path):
    item_file = _item_file(tmp_path / "D.item", ["10.0", "$1.2.3"])
    with pytest.raises(ValueError, match=r"D.item, line 3, column 'price': expected a number .* got '\$1.2.3'"):
        build_price_features(item_file, str(tmp_path / "D.price"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -5.0])
def test_normalise_prices_refuses_a_bad_bound(bad):
    with pytest.raises(ValueError, match="NaN, infinite or not positive"):
        normalise_prices([10.0, bad, 20.0])


@pytest.fixture(scope="module")
def country(tmp_path_factory):
    root = tmp_path_factory.mktemp("country")
    return write_country_csvs(CountrySpec("cc", seed=8, n_train=300, n_test=80), str(root))


def _corrupt_csv(path: str, cells, out: str) -> str:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for (row, column), value in cells.items():
        frame.loc[row, column] = value
    frame.to_csv(out, index=False)
    return out


def _finite(tensor) -> bool:
    return bool(np.isfinite(tensor.numpy()).all())


def _multitask_dataset(data_path: str, name: str):
    return create_dataset(MMConfig("MMoE", name, config_dict={"data_path": data_path, "state": "WARNING"}))


def test_csv_numerical_nan_inf_empty_are_missing_and_never_reach_training(country, tmp_path, caplog):
    bad = {(2, "numerical_3"): "inf", (4, "numerical_3"): "nan", (6, "numerical_3"): "", (8, "numerical_7"): "-inf"}
    train = _corrupt_csv(country["train"], bad, str(tmp_path / "train.csv"))
    caplog.set_level(logging.WARNING)
    table = read_aliexpress_csv(train)
    assert np.isnan(table.numerical[[2, 4, 6], 2]).all() and np.isnan(table.numerical[8, 6])
    assert "train.csv: 4 float values are empty, NaN or infinite (numerical_3 3, numerical_7 1)" in caplog.text
    convert_csv(train, country["test"], str(tmp_path / "cc2"), "cc2")
    _, numerical, _ = _multitask_dataset(str(tmp_path), "cc2").build()[0].tensors()
    assert _finite(numerical)


def test_csv_infinite_code_is_refused(country, tmp_path):
    train = _corrupt_csv(country["train"], {(3, "categorical_2"): "inf"}, str(tmp_path / "train.csv"))
    with pytest.raises(ValueError, match=r"data row 4 \(line 5\), column 'categorical_2': expected a non-negative"):
        read_aliexpress_csv(train)


def test_atomic_numerical_inf_is_missing_filled_with_the_finite_mean(country, tmp_path, caplog):
    convert_csv(country["train"], country["test"], str(tmp_path / "cc3"), "cc3")
    path = str(tmp_path / "cc3" / "cc3.train.inter")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.loc[1, "numerical_4:float"], frame.loc[5, "numerical_4:float"] = "inf", "nan"
    frame.to_csv(path, sep="\t", index=False)
    caplog.set_level(logging.WARNING)
    _, numerical, _ = _multitask_dataset(str(tmp_path), "cc3").build()[0].tensors()
    assert _finite(numerical)
    column = pd.concat([pd.read_csv(str(tmp_path / "cc3" / f"cc3.{p}.inter"), sep="\t")["numerical_4:float"]
                       for p in ("train", "valid", "test")]).replace([np.inf, -np.inf], np.nan)
    assert numerical[[1, 5], 3].tolist() == pytest.approx([column.mean()] * 2, rel=1e-5)  # the finite values' mean
    assert "cc3.train.inter: 2 float values are empty, NaN or infinite (numerical_4 2)" in caplog.text


def test_item_attribute_inf_is_missing_and_no_normalisation_bound(tmp_path, caplog):
    write_dataset(SyntheticSpec(name="att", n_users=60, n_items=25, n_categories=3, seed=4), str(tmp_path))
    item_file = tmp_path / "att" / "att.item"
    lines = item_file.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tinf"
    item_file.write_text("\n".join(lines) + "\n")
    caplog.set_level(logging.WARNING)
    config = MMConfig("SASRec", "att", config_dict={
        "data_path": str(tmp_path), "state": "WARNING", "normalize_field": ["popularity"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id", "popularity"]}})
    popularity = np.asarray(create_dataset(config).item_feat["popularity"], dtype=np.float64)
    assert np.isfinite(popularity).all() and popularity.max() == pytest.approx(1.0)
    assert "att.item: 1 float values are empty, NaN or infinite (popularity 1)" in caplog.text

