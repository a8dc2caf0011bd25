"""Tests for binclf.data: reading files, schema inference, target encoding, splitting."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from binclf.data import ColumnSpec, Schema, TargetInfo, encode_target, infer_schema, stratified_split
from binclf.io import iter_batches, read_columns, read_table
from binclf.errors import ConfigError, DataError

DATA = Path(__file__).parent / "data"
TABLES = {
    "oj": ("Purchase", "MM"),
    "smarket": ("Direction", "Down"),
    "participation": ("lfp", "yes"),
    "biopsy": ("class", "malignant"),
    "titanic": ("survived", "yes"),
    "bananas": ("label", 1),
}


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_dev_table_reads_and_infers_a_schema(name):
    """Each dev table reads, every non-target column gets a role, the target encodes."""
    target, positive = TABLES[name]
    df = read_table(DATA / f"{name}.csv")
    assert len(df) > 500 and target in df.columns
    schema, _ = infer_schema(df, target=target)
    assert set(schema.names) | {n for n, _ in schema.dropped} == set(df.columns) - {target}
    y, keep, info, _ = encode_target(df[target], column=target)
    assert info.positive == positive and type(info.positive) is type(positive)
    assert keep.all() and y.dtype == np.float32 and y.sum() == info.n_positive


def test_read_table_dtypes_numbers_float_or_int_text_str():
    """Numbers come back as int64/float64 (float when missing), text as pandas' str dtype."""
    df = read_table(DATA / "biopsy.csv")
    assert df["V1"].dtype == np.int64
    assert df["V6"].dtype == np.float64 and df["V6"].isna().sum() == 16
    assert df["class"].dtype == "str"


def test_yes_no_and_true_false_text_stays_text(tmp_path):
    """CSV cells are never turned into booleans or dates: text stays as written."""
    p = write(tmp_path, "t.csv", "a,b,c\nyes,true,2020-01-01\nno,False,2020-01-02\n")
    df = read_table(p)
    assert df["a"].tolist() == ["yes", "no"]
    assert df["b"].tolist() == ["true", "False"]
    assert df["c"].tolist() == ["2020-01-01", "2020-01-02"]


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path, sep):
    """The delimiter is found among , ; tab | from the start of the file."""
    p = write(tmp_path, "t.txt", f"x{sep}y{sep}z\n1.5{sep}a{sep}3\n2.5{sep}b{sep}4\n")
    df = read_table(p)
    assert df.columns.tolist() == ["x", "y", "z"] and df["x"].tolist() == [1.5, 2.5]


def test_sep_given_overrides_sniffing_and_single_column_files_read(tmp_path):
    """sep= wins over the sniffer; a file without any delimiter is one column."""
    p = write(tmp_path, "t.csv", "a;b\n1;2\n")
    assert read_table(p, sep=",").columns.tolist() == ["a;b"]
    q = write(tmp_path, "one.csv", "a\n1\n2\n")
    assert read_table(q)["a"].tolist() == [1, 2]


def test_gzip_csv_and_parquet_read_the_same_table(tmp_path):
    """.csv.gz and .parquet give the same frame as the plain CSV."""
    df = read_table(DATA / "participation.csv")
    gz = tmp_path / "p.csv.gz"
    gz.write_bytes(gzip.compress((DATA / "participation.csv").read_bytes()))
    pd.testing.assert_frame_equal(read_table(gz), df)
    pq_path = tmp_path / "p.parquet"
    df.to_parquet(pq_path)
    pd.testing.assert_frame_equal(read_table(pq_path), df)
    assert read_columns(pq_path) == read_columns(gz) == df.columns.tolist()


def test_columns_selects_and_orders(tmp_path):
    """columns= reads only those columns, in the order given."""
    df = read_table(DATA / "oj.csv", columns=["STORE", "Purchase"])
    assert df.columns.tolist() == ["STORE", "Purchase"]


def test_missing_file_names_it():
    """A missing file is named, with advice to check the path."""
    with pytest.raises(DataError, match=r"nope\.csv: no such file .*check the path"):
        read_table("nope.csv")


def test_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="is a directory, expected a CSV or Parquet file"):
        read_table(tmp_path)


def test_empty_file(tmp_path):
    """A 0-byte file says it is empty."""
    with pytest.raises(DataError, match=r"the file is empty \(0 bytes\)"):
        read_table(write(tmp_path, "e.csv", ""))


@pytest.mark.parametrize("reader", [read_table, lambda p: list(iter_batches(p))])
def test_header_only(tmp_path, reader):
    """A header without rows is refused by both readers."""
    with pytest.raises(DataError, match="has a header but no data rows"):
        reader(write(tmp_path, "h.csv", "a,b,c\n"))


def test_non_utf8_says_where_and_how_to_fix(tmp_path):
    """Latin-1 bytes: the message gives the byte offset, the row and the fix; encoding= reads it."""
    p = write(tmp_path, "l.csv", "name,n\nabc,1\ncaf\xe9,2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid UTF-8 \(first bad byte at offset 16, row 3\); re-save the file as UTF-8"):
        read_table(p)
    assert read_table(p, encoding="latin-1")["name"].tolist() == ["abc", "café"]


def test_duplicate_column_names_are_listed(tmp_path):
    with pytest.raises(DataError, match=r"duplicate column names 'a', 'b'"):
        read_table(write(tmp_path, "d.csv", "a,b,a,b,c\n1,2,3,4,5\n"))


def test_unknown_extension(tmp_path):
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'.*convert it to CSV or Parquet"):
        read_table(write(tmp_path, "t.xlsx", "a\n1\n"))


def test_missing_requested_columns_are_all_listed_with_hints():
    with pytest.raises(DataError, match=r"missing column\(s\) 'Purchse' \(did you mean 'Purchase'\?\), 'zzz'"):
        read_table(DATA / "oj.csv", columns=["Purchse", "zzz"])


def test_errors_are_one_line(tmp_path):
    """Every message fits on one line (the CLI prints it as is)."""
    p = write(tmp_path, "bad.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError) as exc:
        read_table(p)
    assert "\n" not in str(exc.value) and "check the delimiter" in str(exc.value)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("name", ["oj", "biopsy", "titanic"])
def test_iter_batches_concatenated_equals_read_table(name):
    """Streaming in small batches gives the whole table back (integers widened to float64)."""
    whole = read_table(DATA / f"{name}.csv")
    batches = list(iter_batches(DATA / f"{name}.csv", batch_rows=100))
    assert [len(b) for b in batches[:-1]] == [100] * (len(batches) - 1)
    assert batches[1].index[0] == 100
    pd.testing.assert_frame_equal(pd.concat(batches), whole, check_dtype=False)


def test_iter_batches_parquet(tmp_path):
    df = read_table(DATA / "smarket.csv")
    df.to_parquet(tmp_path / "s.pq")
    batches = list(iter_batches(tmp_path / "s.pq", batch_rows=300, columns=["Lag1", "Direction"]))
    assert len(batches) == 5
    pd.testing.assert_frame_equal(pd.concat(batches), df[["Lag1", "Direction"]])


def test_iter_batches_types_stay_consistent_across_blocks(tmp_path):
    """A column that starts with integers and later holds decimals or text does not break the stream."""
    rows = "".join(f"{i},{i}\n" for i in range(2000)) + "2.5,x\n"
    p = write(tmp_path, "t.csv", "a,b\n" + rows)
    batches = list(iter_batches(p, batch_rows=500, column_types={"b": "categorical"}))
    assert all(b["a"].dtype == np.float64 and b["b"].dtype == "str" for b in batches)
    assert batches[-1]["a"].iloc[-1] == 2.5 and batches[-1]["b"].iloc[-1] == "x"


def test_iter_batches_text_in_numeric_column_names_column_and_row(tmp_path):
    """A numeric column holding text: column, value and file row in the message."""
    rows = "".join(f"{i},a\n" for i in range(50)) + "oops,b\n"
    p = write(tmp_path, "t.csv", "num,cat\n" + rows)
    with pytest.raises(DataError, match=r"column 'num' should hold numbers but holds 'oops' at row 52"):
        list(iter_batches(p, batch_rows=10, column_types={"num": "numeric"}))


def _csv_batches(p, *, parallel, block_bytes=64, batch_rows=7, column_types=None, columns=None):
    """Batches of binclf.io.tables._iter_csv, block-parallel (tiny blocks) or pyarrow's streaming reader only."""
    from binclf.io import tables as data

    kw = dict(batch_rows=batch_rows, sep=None, columns=columns, column_types=column_types, encoding=None)
    if parallel:
        return list(data._iter_csv(p, block_bytes=block_bytes, **kw))
    original = data._block_parallel_ok
    data._block_parallel_ok = lambda *a: False
    try:
        return list(data._iter_csv(p, **kw))
    finally:
        data._block_parallel_ok = original


def _assert_same_batches(got, want):
    assert [len(b) for b in got] == [len(b) for b in want]
    assert [b.index[0] for b in got] == [b.index[0] for b in want]
    for g, w in zip(got, want):
        pd.testing.assert_frame_equal(g, w)


def _tricky_csv(n=60, eol="\n", trailing=True):
    rng = np.random.default_rng(0)
    texts = ['plain', '"a, b"', '"say ""hi"""', '"two\nlines"', '"crlf\r\ninside, too"', "", '""', '"x""\n""y"']
    lines = ["id,text,x,note"]
    for i in range(n):
        x = "" if i % 9 == 4 else ("NA" if i % 13 == 5 else f"{rng.normal():.6f}")
        lines.append(f"{i},{texts[i % len(texts)]},{x},{texts[(i * 3) % len(texts)]}")
    return eol.join(lines) + (eol if trailing else "")


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize("trailing", [True, False])
@pytest.mark.parametrize("block_bytes", [64, 97, 1000, 1 << 20])
def test_block_parallel_csv_reader_equals_streaming_reader(tmp_path, eol, trailing, block_bytes, monkeypatch):
    """Quoted commas, quotes and newlines, block ends inside quoted fields, CRLF, missing values."""
    from binclf.io import csv_blocks
    from binclf.io import tables as data

    p = tmp_path / "t.csv"
    p.write_bytes(_tricky_csv(eol=eol, trailing=trailing).encode())
    want = _csv_batches(p, parallel=False)
    assert sum(map(len, want)) == 60 and want[0]["text"].iloc[3] == "two\nlines"

    def no_fallback(*args, offset=0, **kw):
        raise AssertionError("the block-parallel reader fell back to the streaming reader")

    monkeypatch.setattr(data, "_csv_tables_streaming", no_fallback)
    monkeypatch.setattr(csv_blocks, "_csv_tables_streaming", no_fallback)
    _assert_same_batches(_csv_batches(p, parallel=True, block_bytes=block_bytes), want)


@pytest.mark.parametrize("block_bytes", [64, 97, 1000])
def test_block_parallel_csv_reader_columns_and_batch_sizes(tmp_path, block_bytes):
    p = tmp_path / "t.csv"
    p.write_bytes(_tricky_csv(n=200, eol="\r\n").encode())
    for batch_rows in (1, 25, 200, 1000):
        kw = dict(batch_rows=batch_rows, columns=["x", "text"], column_types={"x": "numeric"})
        _assert_same_batches(
            _csv_batches(p, parallel=True, block_bytes=block_bytes, **kw), _csv_batches(p, parallel=False, **kw)
        )


@pytest.mark.parametrize("body", [
    'a,b\n1,12" pipe\n2,x\n' * 20,  # a quote inside an unquoted field: the quote count cannot be trusted
    'a,b\n1,"' + "y" * 3000 + '"\n2,z\n',  # a row longer than every block may grow to
    'a,b\n1,"never closed\n2,z\n3,w\n',
])
def test_block_parallel_csv_reader_falls_back_where_quotes_are_unusual(tmp_path, body):
    p = tmp_path / "t.csv"
    p.write_text(body)
    try:
        want = _csv_batches(p, parallel=False)
    except DataError as exc:
        with pytest.raises(DataError) as got:
            _csv_batches(p, parallel=True, block_bytes=64)
        assert str(got.value) == str(exc)
    else:
        _assert_same_batches(_csv_batches(p, parallel=True, block_bytes=64), want)


def test_block_parallel_csv_reader_reports_bad_numbers_as_before(tmp_path):
    rows = "".join(f'{i},"q, {i}"\n' for i in range(50)) + 'oops,"b"\n' + "".join(f"{i},c\n" for i in range(30))
    p = write(tmp_path, "t.csv", "num,cat\n" + rows)
    for parallel in (False, True):
        with pytest.raises(DataError, match=r"column 'num' should hold numbers but holds 'oops' at row 52;"):
            _csv_batches(p, parallel=parallel, column_types={"num": "numeric"})


# --------------------------------------------------------------------------- schema


def test_schema_of_oj_store_codes_are_categorical():
    """Integers with <= 5 distinct values (StoreID 1,2,3,4,7; STORE 0..4; 0/1 flags) are categorical;
    WeekofPurchase (52 weeks) is numeric; the Yes/No Store7 is categorical."""
    schema, notices = infer_schema(read_table(DATA / "oj.csv"), target="Purchase")
    roles = {c.name: c.role for c in schema.columns}
    assert roles["Store7"] == roles["StoreID"] == roles["STORE"] == roles["SpecialCH"] == "categorical"
    assert roles["WeekofPurchase"] == roles["PriceCH"] == "numeric"
    assert any("'StoreID'" in n and "--numeric" in n for n in notices)


def test_schema_of_biopsy_scores_numeric_and_titanic_all_categorical():
    """Scores 1..10 (more than 5 values) stay numeric, V6 too despite its missing values."""
    biopsy, _ = infer_schema(read_table(DATA / "biopsy.csv"), target="class")
    assert biopsy.categorical == [] and "V6" in biopsy.numeric
    titanic, _ = infer_schema(read_table(DATA / "titanic.csv"), target="survived")
    assert titanic.numeric == [] and titanic.categorical == ["class", "age", "sex"]
    part, _ = infer_schema(read_table(DATA / "participation.csv"), target="lfp")
    assert part.numeric == ["lnnlinc", "age", "educ", "noc"] and part.categorical == ["nyc", "foreign"]


def test_overrides_and_drop():
    df = read_table(DATA / "oj.csv")
    schema, _ = infer_schema(df, target="Purchase", drop=["STORE"], numeric=["StoreID"], categorical=["WeekofPurchase"])
    roles = {c.name: c.role for c in schema.columns}
    assert roles["StoreID"] == "numeric" and roles["WeekofPurchase"] == "categorical" and "STORE" not in roles
    assert ("STORE", "dropped on request") in schema.dropped


def test_identifier_and_constant_columns_are_dropped_with_notices():
    n = 40
    df = pd.DataFrame(
        {
            "id": np.arange(1000, 1000 + n),
            "name": pd.Series([f"person {i}" for i in range(n)], dtype="str"),
            "same": 7,
            "x": np.linspace(0, 1, n),
            "y": [0, 1] * (n // 2),
        }
    )
    schema, notices = infer_schema(df, target="y")
    assert schema.names == ["x"]
    assert dict(schema.dropped) == {"id": "identifier", "name": "identifier", "same": "constant"}
    assert any("'same' dropped: it holds the single value 7" in m for m in notices)


def test_mostly_numeric_text_stays_categorical_with_a_notice():
    df = pd.DataFrame({"x": pd.Series(["1.5", "2", "?"] + ["3"] * 30, dtype="str"), "y": [0, 1] * 16 + [0]})
    schema, notices = infer_schema(df, target="y")
    assert schema.categorical == ["x"]
    assert any("'x' holds numbers except 1 value(s) such as '?'" in m for m in notices)
    # Rows are counted, not distinct texts; the examples come in the order met.
    df = pd.DataFrame({"x": pd.Series(["n/a", "1"] * 2 + ["?"] + [str(i) for i in range(40)]), "y": [0, 1] * 22 + [0]})
    schema, notices = infer_schema(df, target="y")
    assert schema.categorical == ["x"]
    assert any("'x' holds numbers except 3 value(s) such as 'n/a', '?'" in m for m in notices), notices


def test_all_missing_column_is_an_error_suggesting_drop():
    df = pd.DataFrame({"a": [np.nan] * 4, "b": [1.0, 2, 3, 4], "y": [0, 1, 0, 1]})
    with pytest.raises(DataError, match=r"column\(s\) 'a' have no values at all .*--drop a"):
        infer_schema(df, target="y")


def test_missing_target_suggests_close_names():
    df = read_table(DATA / "oj.csv")
    with pytest.raises(DataError, match=r"target column 'purchase' \(did you mean 'Purchase'\?\) is not in the table"):
        infer_schema(df, target="purchase")


def test_unknown_override_names_are_all_reported():
    df = read_table(DATA / "oj.csv")
    with pytest.raises(DataError, match=r"--drop names unknown column\(s\) 'nope'; --categorical names unknown column\(s\) 'Stor7'"):
        infer_schema(df, target="Purchase", drop=["nope"], categorical=["Stor7"])


def test_schema_json_round_trip():
    schema, _ = infer_schema(read_table(DATA / "oj.csv"), target="Purchase", drop=["STORE"])
    d = json.loads(json.dumps(schema.to_dict()))
    assert Schema.from_dict(d) == schema
    assert ColumnSpec.from_dict(schema.columns[0].to_dict()) == schema.columns[0]


# --------------------------------------------------------------------------- target


def test_target_positive_choices_and_notice():
    """Given positive wins (matched as text); 1/0 picks 1; otherwise the rarer class."""
    s = pd.Series(["a", "b", "b", "b"], dtype="str")
    y, _, info, notices = encode_target(s, column="t")
    assert info.positive == "a" and y.tolist() == [1, 0, 0, 0]
    assert "the rarer class" in notices[-1]
    _, _, info, _ = encode_target(s, column="t", positive="b")
    assert info.positive == "b" and info.negative == "a"
    floats = pd.Series([1.0, 0.0, 0.0])
    _, _, info, _ = encode_target(floats, column="t", positive="1")
    assert info.positive == 1.0 and isinstance(info.positive, float)
    _, _, info, _ = encode_target(pd.Series([True, False, False]), column="t")
    assert info.positive is True


def test_positive_not_a_label_lists_both():
    with pytest.raises(DataError, match=r"positive='maybe' is not one of the two values of target 't': 'b' or 'a'"):
        encode_target(pd.Series(["a", "b", "b"]), column="t", positive="maybe")


@pytest.mark.parametrize(
    ("values", "pattern"),
    [(["a", "a"], r"exactly two classes, found 1 \('a': 2\)"), (["a", "b", "c", "c"], r"found 3 \('c': 2, 'a': 1, 'b': 1\)")],
)
def test_target_needs_two_classes(values, pattern):
    with pytest.raises(DataError, match=pattern):
        encode_target(pd.Series(values), column="t")


def test_missing_target_values_error_or_dropped():
    """Missing labels: error with count, file rows and the option; or dropped with a notice."""
    s = pd.Series(["yes", None, "no", "yes", None])
    with pytest.raises(DataError, match=r"has 2 missing value\(s\) \(row\(s\) 3, 6\).*--drop-missing-target"):
        encode_target(s, column="t")
    y, keep, info, notices = encode_target(s, column="t", drop_missing=True)
    assert keep.tolist() == [True, False, True, True, False] and y.tolist() == [1, 0, 1]
    assert "2 row(s) with a missing 't' dropped" in notices[0]


def test_target_info_round_trip_keeps_label_types():
    for pos, neg in [("MM", "CH"), (1, 0), (1.0, 0.0), (True, False)]:
        info = TargetInfo(column="t", positive=pos, negative=neg, n_positive=3, n_negative=5)
        back = TargetInfo.from_dict(json.loads(json.dumps(info.to_dict())))
        assert back == info and type(back.positive) is type(pos)


# --------------------------------------------------------------------------- split


def test_stratified_split_sizes_balance_and_disjoint():
    y = np.array([1] * 100 + [0] * 900, dtype=np.float32)
    train, val, test = stratified_split(y, seed=1)
    assert (len(train), len(val), len(test)) == (600, 200, 200)
    assert y[train].sum() == 60 and y[val].sum() == 20 and y[test].sum() == 20
    assert len(np.unique(np.concatenate([train, val, test]))) == 1000


def test_stratified_split_survives_a_tiny_class():
    """A class with 1 row cannot be stratified: a plain random split, no crash."""
    y = np.array([1] + [0] * 29)
    parts = stratified_split(y)
    assert sum(len(p) for p in parts) == 30


@pytest.mark.parametrize("n, rate, n_second, seed", [(1000, 0.3, 200, 0), (777, 0.05, 350, 3), (60, 0.5, 59, 7), (10, 0.1, 3, 1)])
def test_stratified_shuffle_split_matches_scikit_learn(n, rate, n_second, seed):
    """The array-based stratified split draws the same parts, in the same order, as train_test_split."""
    from sklearn.model_selection import train_test_split

    from binclf.data.split import _stratified_shuffle_split

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < rate).astype(np.float32)
    y[:2] = 1  # at least two rows of each class
    y[2:4] = 0
    rows = rng.permutation(2 * n)[:n]
    try:
        want = train_test_split(rows, test_size=n_second, random_state=seed, stratify=y)
    except ValueError:
        with pytest.raises(ValueError, match="too few rows"):
            _stratified_shuffle_split(rows, y, n_second=n_second, seed=seed)
        return
    got = _stratified_shuffle_split(rows, y, n_second=n_second, seed=seed)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    # rows None: the positions 0..n-1 themselves, as int64
    want = train_test_split(np.arange(n), test_size=n_second, random_state=seed, stratify=y)
    for a, b in zip(want, _stratified_shuffle_split(None, y, n_second=n_second, seed=seed)):
        assert b.dtype == np.int64
        np.testing.assert_array_equal(a, b)


def test_stratified_split_bad_fractions():
    with pytest.raises(ConfigError, match="summing to 1"):
        stratified_split(np.zeros(10), fractions=(0.5, 0.2))


def test_infer_schema_numpy_numbers_get_the_roles_of_nullable_ones():
    """NumPy float/int columns (no hash table on floats) get the roles pandas' nullable columns get."""
    rng = np.random.default_rng(0)
    n = 200
    cols = {
        "measure": rng.normal(size=n),
        "with_nan": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        "code": rng.integers(0, 4, n).astype(float),
        "code_nan": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 3, n)),
        "score": rng.integers(0, 10, n).astype(float),
        "const": np.full(n, 2.5),
        "row_id": np.arange(n, dtype=float),
        "inf_col": np.where(rng.random(n) < 0.1, np.inf, 1.0),
    }
    plain = pd.DataFrame({**cols, "y": rng.integers(0, 2, n)})
    schemas = []
    for df in (plain, plain.astype({c: np.float32 for c in cols}), plain.astype({c: "Float64" for c in cols})):
        schema, notices = infer_schema(df, target="y")
        schemas.append(([(c.name, c.role) for c in schema.columns], schema.dropped, len(notices)))
    assert schemas[0] == schemas[1] == schemas[2]
    roles = dict(schemas[0][0])
    assert roles["measure"] == roles["with_nan"] == roles["score"] == "numeric"
    assert roles["code"] == roles["code_nan"] == "categorical"
    assert dict(schemas[0][1]) == {"const": "constant", "row_id": "identifier"}
