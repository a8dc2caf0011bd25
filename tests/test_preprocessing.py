"""Tests for binclf.data.preprocessing: fitted transforms of numbers and categories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from binclf.data.schema import Schema, ColumnSpec, infer_schema

from binclf.io.tables import iter_batches, read_table
from binclf.errors import BundleError, ConfigError, DataError, NotFittedError
from binclf.data.preprocessing import Preprocessor, canonical_labels

DATA = Path(__file__).parent / "data"


def fitted(name: str, target: str, **kw) -> tuple[Preprocessor, pd.DataFrame]:
    df = read_table(DATA / f"{name}.csv")
    schema, _ = infer_schema(df, target=target)
    return Preprocessor(schema=schema, **kw).fit(df), df


def small_schema() -> Schema:
    return Schema(columns=(ColumnSpec("x", "numeric", "float64"), ColumnSpec("c", "categorical", "str")))


def test_biopsy_v6_gets_a_missing_indicator_and_is_imputed():
    """The indicator exists iff training had missing values; missing cells get the median (0 after scaling)."""
    p, df = fitted("biopsy", "class")
    assert p.feature_names_[-1] == "V6__missing" and p.n_features_out_ == 10
    X = p.transform(df)
    missing = df["V6"].isna().to_numpy()
    assert X.dtype == np.float32 and X.shape == (699, 10) and X.flags["C_CONTIGUOUS"]
    assert (X[:, -1] == missing).all()
    assert np.all(X[missing, 5] == np.float32(p.numeric_[5]["fill"]))
    assert np.isfinite(X).all()


def test_missing_value_in_column_without_indicator_is_imputed_silently():
    p, df = fitted("biopsy", "class")
    new = df.head(3).copy()
    new["V1"] = np.nan
    X = p.transform(new)
    assert X.shape == (3, 10) and np.all(X[:, 0] == 0.0)  # robust: median -> 0


def test_robust_scaling_and_soft_clip():
    """(x - median) / (IQR/1.349), then 5*tanh(x/5): an outlier stays below 5."""
    df = pd.DataFrame({"x": np.r_[np.arange(100.0), 1e9], "c": "a"})
    p = Preprocessor(schema=small_schema()).fit(df)
    st = p.numeric_[0]
    assert st["center"] == 50.0 and st["scale"] == pytest.approx(50.0 / 1.349)
    X = p.transform(df)
    assert 4.99 < X[-1, 0] <= 5.0
    assert X[51, 0] == pytest.approx(5 * np.tanh(1.349 / 50 / 5), rel=1e-5)


@pytest.mark.parametrize("mode", ["standard", "quantile"])
def test_other_numeric_modes_are_finite_and_centred(mode):
    p, df = fitted("bananas", "label", numeric=mode)
    X = p.transform(df)
    assert np.isfinite(X).all() and abs(float(X.mean())) < 0.1
    if mode == "quantile":
        assert np.abs(X).max() < 2.5


def test_constant_numeric_column_scales_by_one():
    df = pd.DataFrame({"x": [3.0, 3.0, np.nan], "c": ["a", "b", "a"]})
    p = Preprocessor(schema=small_schema()).fit(df)
    assert p.numeric_[0]["scale"] == 1.0
    assert p.transform(df)[:, 0].tolist() == [0.0, 0.0, 0.0]


def test_titanic_one_hot_levels_by_frequency():
    p, df = fitted("titanic", "survived")
    assert p.feature_names_[:3] == ["class=3rd class", "class=1st class", "class=2nd class"]
    X = p.transform(df)
    assert np.all(X.sum(axis=1) == 3)  # one level per column, nothing missing
    codes = p.categorical_codes(df)
    assert codes.dtype == np.int64 and codes.shape == (1316, 3) and codes.min() >= 2
    assert p.cardinalities_ == [5, 4, 4]


def test_unseen_and_rare_categories_map_to_unknown_and_missing_to_missing():
    """Rare levels (< min_level_count) merge into <unknown>; unseen values land there too."""
    c = ["a"] * 10 + ["b"] * 6 + ["rare"] * 2 + [None] * 2
    df = pd.DataFrame({"x": np.arange(20.0), "c": c})
    p = Preprocessor(schema=small_schema()).fit(df)
    assert p.feature_names_ == ["x", "c=a", "c=b", "c=<missing>", "c=<unknown>"]
    new = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "never seen", None, "rare"]})
    X = p.transform(new)
    assert X[:, 1:].tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]]
    assert p.categorical_codes(new)[:, 0].tolist() == [2, 1, 0, 1]


def test_unknown_without_unknown_column_is_an_all_zero_block():
    """Training had no rare values: an unseen value sets none of the one-hot columns."""
    df = pd.DataFrame({"x": np.arange(20.0), "c": ["a", "b"] * 10})
    p = Preprocessor(schema=small_schema()).fit(df)
    assert p.feature_names_ == ["x", "c=a", "c=b"]
    X = p.transform(pd.DataFrame({"x": [0.0], "c": ["zzz"]}))
    assert X[0, 1:].tolist() == [0, 0]


def test_categories_compare_as_canonical_text():
    """1, 1.0 and "1" are one level; True and "true" are one level."""
    assert canonical_labels([1, 1.0, "1", " 1.0", np.int64(1)]) == ["1"] * 5
    assert canonical_labels([True, "true", "TRUE", 2.5, "x "]) == ["True", "True", "True", "2.5", "x"]
    schema = Schema(columns=(ColumnSpec("c", "categorical", "int64"),))
    p = Preprocessor(schema=schema, min_level_count=1).fit(pd.DataFrame({"c": [1, 2, 7]}))
    as_text = pd.DataFrame({"c": pd.Series(["7", "1", "2"], dtype="str")})
    as_float = pd.DataFrame({"c": [7.0, 1.0, 2.0]})
    assert np.array_equal(p.transform(as_text), p.transform(as_float))


def test_parquet_and_csv_give_the_same_transform(tmp_path):
    """Fitted on the CSV, a Parquet copy (and a chunked CSV read with read_types) transforms identically."""
    p, df = fitted("oj", "Purchase")
    X = p.transform(df)
    df.to_parquet(tmp_path / "oj.parquet")
    assert np.array_equal(p.transform(read_table(tmp_path / "oj.parquet")), X)
    chunks = [
        p.transform(b, row_offset=b.index[0])
        for b in iter_batches(DATA / "oj.csv", batch_rows=256, column_types=p.read_types())
    ]
    assert np.array_equal(np.concatenate(chunks), X)


def test_json_round_trip_is_exact_and_stable():
    """to_dict -> JSON -> from_dict transforms bit-identically; dumping twice gives the same text."""
    for mode in ["robust", "standard", "quantile"]:
        p, df = fitted("participation", "lfp", numeric=mode)
        text = json.dumps(p.to_dict(), sort_keys=True)
        q = Preprocessor.from_dict(json.loads(text))
        assert json.dumps(q.to_dict(), sort_keys=True) == text
        assert q.feature_names_ == p.feature_names_
        assert np.array_equal(q.transform(df), p.transform(df))


def test_from_dict_refuses_other_formats():
    with pytest.raises(BundleError, match=r"format 'x', expected 'binclf.preprocessor/1'"):
        Preprocessor.from_dict({"format": "x"})


def test_all_problems_reported_together():
    """Missing columns are all listed in one message."""
    p, df = fitted("oj", "Purchase")
    with pytest.raises(DataError, match=r"missing feature column\(s\) 'StoreID', 'PriceCH'"):
        p.transform(df.drop(columns=["StoreID", "PriceCH"]))


def test_text_in_numeric_column_and_infinite_values_name_column_and_row():
    """Row numbers are file lines (header = 1) and respect row_offset; every problem is listed."""
    df = pd.DataFrame({"x": np.arange(10.0), "c": "a"})
    p = Preprocessor(schema=small_schema()).fit(df)
    bad_text = pd.DataFrame({"x": pd.Series(["1", "2", "abc"], dtype="str"), "c": "a"})
    with pytest.raises(DataError, match=r"column 'x' should hold numbers but holds 'abc' at row 104; replace it"):
        p.transform(bad_text, row_offset=100)
    with pytest.raises(DataError, match=r"column 'x' holds an infinite value at row 3; replace it with a finite"):
        p.transform(pd.DataFrame({"x": [1.0, np.inf], "c": "a"}))


def test_missing_spellings_from_training_stay_missing():
    """A column forced numeric whose training data said '?' for missing accepts '?' later, nothing else."""
    df = pd.DataFrame({"x": pd.Series(["1", "?", "3", "4"], dtype="str"), "c": "a"})
    p = Preprocessor(schema=small_schema()).fit(df)
    assert p.numeric_[0]["na_tokens"] == ["?"] and p.feature_names_[1] == "x__missing"
    assert p.read_types() == {"x": "categorical", "c": "categorical"}
    X = p.transform(pd.DataFrame({"x": pd.Series(["?", "2"], dtype="str"), "c": "a"}))
    assert X[:, 1].tolist() == [1.0, 0.0]
    with pytest.raises(DataError, match="holds 'n/a' at row 2"):
        p.transform(pd.DataFrame({"x": pd.Series(["n/a"], dtype="str"), "c": "a"}))


def test_extra_columns_are_ignored_and_reported():
    p, df = fitted("titanic", "survived")
    assert p.extra_columns(df) == ["survived"]
    assert p.transform(df.assign(extra=1)).shape == (1316, p.n_features_out_)


def test_not_fitted_and_bad_options():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        Preprocessor(schema=small_schema()).transform(pd.DataFrame({"x": [1.0], "c": ["a"]}))
    with pytest.raises(ConfigError, match="numeric must be 'robust', 'standard' or 'quantile'"):
        Preprocessor(schema=small_schema(), numeric="minmax")


