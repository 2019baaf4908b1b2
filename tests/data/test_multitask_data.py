"""AliExpress-format reading, validation errors, conversion, stratified sampling, synthetic countries."""

import os

import numpy as np
import pandas as pd
import pytest

from helpers import SHARED_DATASETS
from recbole_mm.data.aliexpress import (
    ATOMIC_HEADER,
    AliExpressFormatError,
    _read_text,
    _read_typed,
    convert_csv,
    read_aliexpress_csv,
    stratified_sample,
)
from recbole_mm.data.synthetic_countries import CountrySpec, generate_country, write_country_csvs

SAMPLE = os.path.join(SHARED_DATASETS, "AliExpress_sample")
needs_sample = pytest.mark.skipif(not os.path.isdir(SAMPLE), reason=f"real sample absent: {SAMPLE}")


@pytest.fixture
def small_csv(tmp_path):
    spec = CountrySpec("XX", seed=1, n_train=60, n_test=20)
    return write_country_csvs(spec, str(tmp_path))


@needs_sample
def test_reads_the_real_sample_as_is(tmp_path):
    table = read_aliexpress_csv(os.path.join(SAMPLE, "aliexpress_train_sample.csv"))
    assert len(table) == 100
    assert table.categorical.shape == (100, 16) and table.numerical.shape == (100, 63)
    assert set(np.unique(table.labels)) <= {0.0, 1.0}
    assert table.labels[:, 0].mean() == pytest.approx(0.60)
    paths = convert_csv(os.path.join(SAMPLE, "aliexpress_train_sample.csv"),
                        os.path.join(SAMPLE, "aliexpress_test_sample.csv"), str(tmp_path), "sample")
    header = open(paths["train"]).readline().rstrip("\n").split("\t")
    assert header == ATOMIC_HEADER
    rows = sum(len(open(paths[p]).readlines()) - 1 for p in ("train", "valid"))
    assert rows == 100 and len(open(paths["test"]).readlines()) - 1 == 20


def test_round_trip_keeps_raw_codes(small_csv, tmp_path):
    original = read_aliexpress_csv(small_csv["train"])
    paths = convert_csv(small_csv["train"], small_csv["test"], str(tmp_path / "atomic"), "XX", valid_ratio=0.2)
    frames = [pd.read_csv(paths[p], sep="\t") for p in ("train", "valid")]
    merged = pd.concat(frames).set_index("search_id:token").loc[original.search_id]
    np.testing.assert_array_equal(merged[[f"categorical_{i}:float" for i in range(1, 17)]].to_numpy(),
                                  original.categorical)
    np.testing.assert_allclose(merged[[f"numerical_{i}:float" for i in range(1, 64)]].to_numpy(),
                               original.numerical, rtol=1e-5, atol=1e-5)


def _corrupt(path, column, row, value, tmp_path):
    frame = pd.read_csv(path, dtype=str)
    frame.loc[row, column] = value
    out = tmp_path / "bad.csv"
    frame.to_csv(out, index=False)
    return str(out)


def test_non_numeric_value_names_row_and_column(small_csv, tmp_path):
    bad = _corrupt(small_csv["train"], "numerical_7", 4, "abc", tmp_path)
    with pytest.raises(AliExpressFormatError, match=r"data row 5 \(line 6\), column 'numerical_7'.*'abc'"):
        read_aliexpress_csv(bad)


def test_label_outside_0_1(small_csv, tmp_path):
    bad = _corrupt(small_csv["train"], "conversion", 2, "2", tmp_path)
    with pytest.raises(AliExpressFormatError, match=r"data row 3 .*'conversion': label must be 0 or 1"):
        read_aliexpress_csv(bad)


def test_missing_column(small_csv, tmp_path):
    frame = pd.read_csv(small_csv["train"]).drop(columns=["categorical_3"])
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(AliExpressFormatError, match=r"missing column\(s\) \['categorical_3'\]"):
        read_aliexpress_csv(str(tmp_path / "bad.csv"))


def test_stratified_sample_keeps_label_rates():
    table = generate_country(CountrySpec("S", seed=5), 20000, seed=5)
    rows = stratified_sample(table.labels, 0.05, seed=0)
    assert abs(len(rows) - 1000) <= 4
    for j in range(2):
        assert table.labels[rows, j].mean() == pytest.approx(table.labels[:, j].mean(), abs=0.002)


def test_countries_differ():
    a = generate_country(CountrySpec("A", seed=1, shift=0.0, ctr_bias=-0.4), 5000, seed=1)
    b = generate_country(CountrySpec("B", seed=2, shift=1.2, ctr_bias=-1.2), 5000, seed=2)
    assert abs(a.labels[:, 0].mean() - b.labels[:, 0].mean()) > 0.05
    assert np.abs(a.numerical.mean(0) - b.numerical.mean(0)).mean() > 0.5  # per-feature shift
    assert 0 < b.labels[:, 1].mean() < b.labels[:, 0].mean()  # conversions only after clicks


def test_typed_chunked_reading_equals_the_text_reading(small_csv, tmp_path):
    frame = pd.read_csv(small_csv["train"], dtype=str)
    frame.loc[3, "numerical_2"], frame.loc[5, "numerical_9"], frame.loc[8, "numerical_1"] = "", "nan", "-inf"
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    typed, text = read_aliexpress_csv(str(tmp_path / "gaps.csv"), chunksize=7), _read_text(str(tmp_path / "gaps.csv"))
    assert len(typed) == len(text) == 60
    np.testing.assert_array_equal(typed.search_id, text.search_id)
    np.testing.assert_array_equal(typed.categorical, text.categorical)
    np.testing.assert_array_equal(typed.numerical, text.numerical)  # NaN where missing, in both
    np.testing.assert_array_equal(typed.labels, text.labels)
    assert np.isnan(typed.numerical[[3, 5, 8], [1, 8, 0]]).all()
    assert _read_typed(str(tmp_path / "gaps.csv"), 7) is not None  # the typed reading took it
