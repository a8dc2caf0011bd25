"""Tests for binclf.predictor: the one prediction path (tables, files in chunks, evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from binclf.io.tables import read_table
from binclf.errors import DataError
from binclf.train.pipeline import TrainOptions, train_table
from binclf.predictor import Predictor


def table(n: int, *, seed: int, label=("no", "yes")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": [f"{i:05d}" for i in range(n)], "a": rng.normal(size=n),
                       "c": rng.choice(["u", "v", "w"], n)})
    df["y"] = np.where(df["a"] + (df["c"] == "u") + rng.normal(size=n) > 0.5, label[1], label[0])
    return df


def fit(df: pd.DataFrame) -> Predictor:
    options = TrainOptions(target="y", model="logistic", max_epochs=2, n_boot=10)
    return train_table(df, options).predictor


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return fit(table(150, seed=0))


@pytest.fixture(scope="module")
def new_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("pred") / "new.csv"
    df = table(95, seed=1).drop(columns="y")
    df.loc[3, "c"] = "never seen"
    df.loc[4, "a"] = np.nan
    df.to_csv(path, index=False)
    return path


def test_predict_file_in_chunks_equals_one_batch_and_predict_proba(predictor, new_csv, tmp_path, monkeypatch):
    """Chunks of 10 rows give the same file as one batch, equal to predict_proba on the whole table to 1e-6;
    no batch is larger than batch_rows (the file is never read whole)."""
    sizes = []
    original = Predictor._predict_arrow

    def spy(self, df, **kw):
        sizes.append(len(df))
        return original(self, df, **kw)

    monkeypatch.setattr(Predictor, "_predict_arrow", spy)
    predictor.predict_file(new_csv, tmp_path / "chunked.csv", batch_rows=10)
    assert max(sizes) == 10 and sum(sizes) == 95
    predictor.predict_file(new_csv, tmp_path / "one.csv")
    chunked, one = pd.read_csv(tmp_path / "chunked.csv"), pd.read_csv(tmp_path / "one.csv")
    pd.testing.assert_frame_equal(chunked, one)
    expected = predictor.predict_proba(read_table(new_csv))
    np.testing.assert_allclose(one["probability"], expected, rtol=0, atol=1e-6)
    assert (one["prediction"] == predictor.predict(read_table(new_csv))).all()


def test_predict_file_parquet_keep_and_threshold(predictor, new_csv, tmp_path):
    """Parquet output equals CSV output; --keep copies ids verbatim (leading zeros); a threshold overrides."""
    predictor.predict_file(new_csv, tmp_path / "p.parquet", keep=["id", "a"], batch_rows=7)
    predictor.predict_file(new_csv, tmp_path / "p.csv", keep=["id", "a"])
    pq_out = pq.read_table(tmp_path / "p.parquet").to_pandas()
    csv_out = pd.read_csv(tmp_path / "p.csv", dtype={"id": str})
    assert list(pq_out.columns) == ["id", "a", "probability", "prediction"]
    assert pq_out["id"].iloc[0] == "00000" and (pq_out["id"] == csv_out["id"]).all()
    np.testing.assert_allclose(pq_out["probability"], csv_out["probability"], atol=1e-12)
    low = predictor.predict_frame(read_table(new_csv), threshold=0.0)
    assert (low["prediction"] == "yes").all()


@pytest.mark.parametrize(
    "labels, expected",
    [((0, 1), {0, 1}), ((False, True), {False, True}), (("neg", "pos"), {"neg", "pos"})],
)
def test_labels_keep_their_type(labels, expected, tmp_path):
    """Predictions are the original label values, in their own type, through predict and predict_file."""
    df = table(80, seed=2, label=labels)
    p = fit(df)
    got = p.predict(df)
    assert set(got) <= expected and all(type(v) is type(labels[0]) for v in got)
    df.drop(columns="y").to_parquet(tmp_path / "x.parquet")
    p.predict_file(tmp_path / "x.parquet", tmp_path / "out.parquet")
    out = pd.read_parquet(tmp_path / "out.parquet")["prediction"]
    assert set(out) <= expected


def test_evaluate_errors_name_rows_and_counts(predictor):
    """evaluate: missing labels, unknown labels, a missing target column, a missing feature: clear DataErrors."""
    df = table(30, seed=3)
    assert 0 <= predictor.evaluate(df)["roc_auc"] <= 1
    bad = df.copy()
    bad.loc[[1, 2], "y"] = None
    with pytest.raises(DataError, match="f.csv: column 'y' has 2 missing label\\(s\\) \\(row\\(s\\) 3, 4\\)"):
        predictor.evaluate(bad, source="f.csv")
    bad = df.copy()
    bad.loc[[5, 9], "y"] = "maybe"
    with pytest.raises(DataError, match="'maybe': 2; first at row 7"):
        predictor.evaluate(bad)
    with pytest.raises(DataError, match="target column 'y' is not in the data"):
        predictor.evaluate(df.drop(columns="y"))
    with pytest.raises(DataError, match="1 feature column\\(s\\) .* missing: 'c'"):
        predictor.evaluate(df.drop(columns="c"))


def test_predict_file_errors_leave_no_output(predictor, tmp_path):
    """A bad value found mid-file (after batches were written) leaves no output and no new directory."""
    df = table(40, seed=4).drop(columns="y").astype({"a": object})
    df.loc[33, "a"] = "oops"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="bad.csv: column 'a' should hold numbers but holds 'oops' at row 35"):
        predictor.predict_file(tmp_path / "bad.csv", tmp_path / "made" / "out.csv", batch_rows=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_predict_file_with_several_workers_equals_one_worker(predictor, new_csv, tmp_path, monkeypatch, fmt):
    """Batches predicted side by side (binclf.runtime.prediction_workers) give the file one worker gives, rows in
    file order."""
    from binclf import runtime

    outputs = {}
    for workers in (1, 3):
        monkeypatch.setattr(runtime, "prediction_workers", lambda batches=None, w=workers: w)
        out = tmp_path / f"w{workers}.{fmt}"
        predictor.predict_file(new_csv, out, keep=["id"], batch_rows=7)
        outputs[workers] = pd.read_csv(out, dtype={"id": str}) if fmt == "csv" else pq.read_table(out).to_pandas()
    pd.testing.assert_frame_equal(outputs[3], outputs[1])
    assert outputs[3]["id"].tolist() == [f"{i:05d}" for i in range(95)]


def test_predict_file_with_several_workers_raises_the_first_bad_batch(predictor, tmp_path, monkeypatch):
    """With workers, the error is the first bad batch's in file order, naming its row, and nothing is written."""
    from binclf import runtime

    monkeypatch.setattr(runtime, "prediction_workers", lambda batches=None: 3)
    df = table(60, seed=4).drop(columns="y").astype({"a": object})
    df.loc[20, "a"] = "first"
    df.loc[50, "a"] = "later"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="bad.csv: column 'a' should hold numbers but holds 'first' at row 22"):
        predictor.predict_file(tmp_path / "bad.csv", tmp_path / "out.parquet", batch_rows=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv"]


def test_prediction_workers_respect_the_thread_ceiling():
    """One worker per torch thread the caller may use, never more than the batches."""
    import torch

    from binclf import runtime

    with runtime.torch_threads(1):
        assert runtime.prediction_workers() == 1
    assert runtime.prediction_workers(batches=1) == 1
    assert 1 <= runtime.prediction_workers() <= torch.get_num_threads()


def test_predict_file_with_several_workers_warns_once_about_unseen_categories(predictor, tmp_path, monkeypatch):
    """The unseen-category counts of batches predicted side by side add up to one warning for the file."""
    import warnings

    from binclf import runtime
    from binclf.data.preprocessing import UnseenCategoryWarning

    monkeypatch.setattr(runtime, "prediction_workers", lambda batches=None: 3)
    df = table(40, seed=5).drop(columns="y")
    df["c"] = "zzz"
    df.to_csv(tmp_path / "new.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor.predict_file(tmp_path / "new.csv", tmp_path / "out.csv", batch_rows=6)
    unseen = [w for w in caught if issubclass(w.category, UnseenCategoryWarning)]
    assert len(unseen) == 1 and "(40 of 40)" in str(unseen[0].message) and "'zzz'" in str(unseen[0].message)
