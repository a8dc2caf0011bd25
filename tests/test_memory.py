"""Memory of in-memory training: decoded-size estimates, float32 tables kept narrow, bootstrap in passes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from binclf.data.preprocessing import Preprocessor
from binclf.data.schema import infer_schema
from binclf.decide import metrics, thresholds
from binclf.errors import DataError
from binclf.io.tables import read_table
from binclf.train.memory import (
    IN_MEMORY_OVERHEAD_BYTES,
    IN_MEMORY_PEAK_FACTOR,
    MODEL_INPUT_COPIES,
    decoded_bytes,
    fits_in_memory,
    in_memory_peak_bytes,
)


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "a": rng.standard_normal(n).astype(np.float32),
        "b": rng.standard_normal(n),
        "k": rng.integers(0, 5, n),
        "c": pa.array(rng.choice(["red", "green", "blue"], n)).dictionary_encode(),
        "y": rng.integers(0, 2, n).astype(np.int8),
    })


def test_decoded_bytes_counts_numbers_at_read_width_and_text_as_strings(tmp_path):
    """float32 4 bytes, other numbers 8, text as Arrow strings: what read_table holds."""
    t = _table(5000)
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=1000)
    df = read_table(path)
    assert df["a"].dtype == np.float32 and df["b"].dtype == np.float64
    strings = t.column("c").cast(pa.string()).nbytes
    expected = 5000 * (4 + 8 + 8 + 8) + strings  # y (int8) is read as int64
    assert decoded_bytes(path) == pytest.approx(expected, rel=0.01)
    assert decoded_bytes(path, columns=["a"]) == 5000 * 4


def test_decoded_bytes_of_a_directory_is_the_sum_of_its_files(tmp_path):
    """A directory of Parquet files (hive partitions included) counts every file's rows."""
    (tmp_path / "p=1").mkdir()
    pq.write_table(_table(3000, 1), tmp_path / "p=1" / "a.parquet")
    pq.write_table(_table(2000, 2), tmp_path / "b.parquet")
    one = decoded_bytes(tmp_path / "b.parquet")
    assert decoded_bytes(tmp_path) == pytest.approx(one * 5000 / 2000, rel=0.02)


def test_decoded_bytes_of_a_csv_is_close_to_the_table_read(tmp_path):
    """A CSV's estimate (a sample, scaled by the file size) is within 20% of the table read."""
    path = tmp_path / "t.csv"
    _table(20_000).to_pandas().to_csv(path, index=False)
    table = pa.Table.from_pandas(read_table(path), preserve_index=False)
    assert decoded_bytes(path) == pytest.approx(table.nbytes, rel=0.2)


def test_peak_estimate_decides_what_fits():
    """A table fits when overhead + factor x decoded (+ wider inputs' copies) is within the memory given."""
    assert IN_MEMORY_PEAK_FACTOR >= 1.0
    need = in_memory_peak_bytes(10**8)
    assert need == IN_MEMORY_OVERHEAD_BYTES + int(IN_MEMORY_PEAK_FACTOR * 10**8)
    assert fits_in_memory(10**8, need) and not fits_in_memory(10**8, need - 1)
    # Numeric inputs no wider than the table add nothing; one-hot inputs 10x wider do.
    assert in_memory_peak_bytes(10**8, rows=10**6, features_out=20) == need
    assert in_memory_peak_bytes(10**8, rows=10**6, features_out=250) == need + int(MODEL_INPUT_COPIES * 9 * 10**8)


def test_float32_columns_transform_as_if_widened(tmp_path):
    """A float32 column kept narrow gives the same fitted statistics and inputs as the float64 copy."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(3000) * 1e3 + 7).astype(np.float32)
    x[::17] = np.nan
    narrow = pd.DataFrame({"x": x, "y": rng.integers(0, 2, 3000)})
    wide = narrow.astype({"x": np.float64})
    out = []
    for df in (narrow, wide):
        schema, _ = infer_schema(df, target="y")
        prep = Preprocessor(schema=schema).fit(df)
        out.append((prep.numeric_, prep.transform(df)))
    assert out[0][0] == out[1][0]
    np.testing.assert_array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("pass_entries", [1, 700, 1 << 18])
def test_bootstrap_passes_do_not_change_the_intervals(monkeypatch, pass_entries):
    """Evaluating the resamples a few at a time gives the intervals of one pass (same draws per seed)."""
    rng = np.random.default_rng(0)
    y = (rng.random(900) < 0.2).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(900), 0, 1)
    ref_m = metrics.bootstrap_intervals(y, p, threshold=0.4, n_boot=50, seed=1)
    ref_t = thresholds.choose_threshold(y, p, "f1", n_boot=50, seed=1).to_dict()
    monkeypatch.setattr(metrics, "_PASS", pass_entries)
    monkeypatch.setattr(thresholds, "_PASS", pass_entries)
    got_m = metrics.bootstrap_intervals(y, p, threshold=0.4, n_boot=50, seed=1)
    got_t = thresholds.choose_threshold(y, p, "f1", n_boot=50, seed=1).to_dict()
    for k in ref_m:
        np.testing.assert_allclose(got_m[k], ref_m[k], rtol=1e-12)
    assert got_t == ref_t


def test_check_raises_what_transform_raises_without_making_inputs():
    """Rows checked early fail with transform's own message: text in a numeric column, a missing column."""
    train = pd.DataFrame({"x": ["1", "2", "?", "4"] * 5, "y": [0, 1] * 10})
    schema, _ = infer_schema(train, target="y", numeric=("x",))
    prep = Preprocessor(schema=schema).fit(train)
    prep.check(pd.DataFrame({"x": ["3", "?"]}))  # the training's spelling of missing is fine
    bad = pd.DataFrame({"x": ["3", "n/a!"]})
    with pytest.raises(DataError, match=r"column 'x' should hold numbers but holds 'n/a!' at row 3") as checked:
        prep.check(bad)
    with pytest.raises(DataError) as transformed:
        prep.transform(bad)
    assert str(checked.value) == str(transformed.value)
    with pytest.raises(DataError, match="missing feature column"):
        prep.check(pd.DataFrame({"z": [1.0]}))


def test_rows_read_in_place_equal_a_copied_frame():
    """fit / transform / check with rows= give what they give on df.iloc[rows], positions or a mask."""
    df = _table(3000, seed=4).to_pandas()
    df.loc[5, "a"] = np.nan
    df["t"] = np.where(np.arange(3000) % 7 == 0, "?", (np.arange(3000) % 11).astype(str))  # text with a missing token
    schema, _ = infer_schema(df, target="y", numeric=("t",))
    rows = np.random.default_rng(1).permutation(3000)[:1700]
    want = Preprocessor(schema=schema).fit(df.iloc[rows].reset_index(drop=True))
    got = Preprocessor(schema=schema).fit(df, rows=rows)
    assert got.numeric_ == want.numeric_ and got.categorical_ == want.categorical_
    np.testing.assert_array_equal(got.transform(df, rows=rows), want.transform(df.iloc[rows]))
    mask = np.zeros(3000, bool)
    mask[rows] = True
    np.testing.assert_array_equal(got.transform(df, rows=mask), want.transform(df[mask]))
    bad = df.copy()
    bad.loc[rows[3], "t"] = "n/a!"
    with pytest.raises(DataError, match=r"holds 'n/a!' at row 5\b"):  # numbered as in bad.iloc[rows]
        got.check(bad, rows=rows)
    got.check(bad, rows=rows[4:])


def test_training_lets_a_handed_over_table_go(tmp_path, monkeypatch):
    """Handed over as a function, the table read is freed before the networks train (its Arrow memory returned)."""
    from binclf.train import pipeline
    from binclf.train.pipeline import TrainOptions, train_table

    path = tmp_path / "t.parquet"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40_000, 6)).astype(np.float32)
    y = (x[:, 0] + rng.standard_normal(40_000) > 0).astype(np.int64)
    pq.write_table(pa.table({**{f"x{i}": x[:, i] for i in range(6)}, "y": y}), path)
    pool = pa.default_memory_pool()
    before = pool.bytes_allocated()
    df = read_table(path)
    table_bytes = pool.bytes_allocated() - before
    assert table_bytes >= x.nbytes  # the frame's columns are Arrow's buffers
    seen = []
    fit_members = pipeline._fit_members

    def spy(*args, **kwargs):
        seen.append(pool.bytes_allocated() - before)
        return fit_members(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_fit_members", spy)
    frames = [df]
    del df
    result = train_table(frames.pop, TrainOptions(target="y", model="mlp", max_epochs=1, hidden=(8,)))
    assert seen and seen[0] < table_bytes / 10, (seen, table_bytes)
    assert result.summary["rows"] == 40_000 and result.summary["columns"][0]["distinct"] == len(np.unique(x[:, 0]))
