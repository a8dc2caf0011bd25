"""Tests for binclf.io.tables on the inputs people really have: misnamed formats, pipes, broken quotes, binary junk, huge numbers.

Each case must give one DataError that says what the file is or where it
breaks, and never copy control characters from the data to the terminal.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from binclf.errors import DataError
from binclf.io.messages import escape_controls, safe_excerpt
from binclf.io.tables import iter_batches, read_columns, read_table

CSV = "a,b,y\n" + "".join(f"{i % 7},{'xyz'[i % 3]},{i % 2}\n" for i in range(40))


def run_cli(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "binclf", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# --------------------------------------------------------------------------- formats by content


def test_parquet_named_csv_says_it_is_parquet(tmp_path):
    """A Parquet file named .csv is refused with what it is and the rename, not delimiter advice."""
    path = tmp_path / "data.csv"
    pd.read_csv(__import__("io").StringIO(CSV)).to_parquet(path)
    with pytest.raises(DataError, match=r"data\.csv: the file is a Parquet file, not CSV text .*rename it to \.parquet"):
        read_table(path)
    line = one_error_line(run_cli("train", path, "--target", "y", "--out", tmp_path / "m"))
    assert "is a Parquet file" in line and "delimiter" not in line


def test_gzip_named_csv_says_it_is_compressed(tmp_path):
    """A gzip file named .csv: say it is gzip-compressed and that .csv.gz is read."""
    path = tmp_path / "data.csv"
    path.write_bytes(gzip.compress(CSV.encode()))
    with pytest.raises(DataError, match=r"the file is gzip-compressed, not CSV text.*\.csv\.gz"):
        read_columns(path)
    renamed = path.rename(tmp_path / "data.csv.gz")
    assert list(read_table(renamed).columns) == ["a", "b", "y"]


def test_xlsx_named_csv_says_it_is_excel(tmp_path):
    """A zip holding xl/ entries is an Excel workbook: say so and how to export CSV."""
    path = tmp_path / "sheet.csv"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(DataError, match=r"an Excel workbook \(\.xlsx\).*export the sheet as CSV"):
        read_table(path)


def test_csv_text_named_parquet_and_plain_text_named_gz(tmp_path):
    """The other direction: text named .parquet, and plain text named .csv.gz, say what they are."""
    pq_path = tmp_path / "data.parquet"
    pq_path.write_text(CSV)
    with pytest.raises(DataError, match=r"data\.parquet: the file is text, not Parquet .*rename it to \.csv"):
        read_table(pq_path)
    gz_path = tmp_path / "data.csv.gz"
    gz_path.write_text(CSV)
    with pytest.raises(DataError, match=r"ends in \.gz but the file is plain text, not gzip-compressed"):
        read_table(gz_path)


def test_binary_garbage_is_called_binary(tmp_path):
    """Random bytes named .csv: 'binary data', and not one control character in the message."""
    path = tmp_path / "junk.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="binary data") as info:
        read_table(path)
    assert escape_controls(str(info.value)) == str(info.value)


# --------------------------------------------------------------------------- not regular files


def _in_thread(fn, timeout: float = 20.0):
    """Run fn() in a daemon thread; the test fails (instead of hanging) if it blocks."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the reader blocked on the FIFO: it must be detected before opening"
    return box


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_reported_as_a_pipe_without_opening_it(tmp_path):
    """A named pipe is 'a named pipe (FIFO)', found by stat before any open (which would block)."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for fn in (lambda: read_table(fifo), lambda: read_columns(fifo), lambda: next(iter_batches(fifo))):
        box = _in_thread(fn)
        assert isinstance(box.get("error"), DataError), box
        assert "is a named pipe (FIFO), not a regular file" in str(box["error"])
        assert "empty" not in str(box["error"])
    line = one_error_line(run_cli("train", fifo, "--target", "y", timeout=60))
    assert "named pipe (FIFO)" in line


def test_character_device_is_reported_as_such():
    """/dev/null is a character device, not an empty file."""
    with pytest.raises(DataError, match=r"/dev/null: is a character device, not a regular file"):
        read_table("/dev/null")


# --------------------------------------------------------------------------- quotes


def test_unbalanced_quote_names_the_line_where_the_field_starts(tmp_path):
    """An unclosed quote on line 6 is reported at row 6 (header = row 1), whole-file and batched reads alike."""
    lines = CSV.splitlines()
    lines[5] = '4,"unclosed,1'
    path = tmp_path / "q.csv"
    path.write_text("\n".join(lines) + "\n")
    message = r"q\.csv: row 6: a quoted field starts here and its closing quote is missing or misplaced"
    with pytest.raises(DataError, match=message):
        read_table(path)
    with pytest.raises(DataError, match=message):
        list(iter_batches(path, batch_rows=8))


def test_good_quoting_is_not_flagged(tmp_path):
    """Doubled quotes and line breaks inside quoted fields are read, not reported."""
    path = tmp_path / "ok.csv"
    path.write_text('a,b,y\n1,"say ""hi""",1\n2,"two\nlines",0\n3,x,1\n')
    df = read_table(path)
    assert df["b"].tolist() == ['say "hi"', "two\nlines", "x"]


# --------------------------------------------------------------------------- control characters


def test_safe_excerpt_escapes_and_shortens():
    """safe_excerpt: repr-quoted, control characters escaped, long text cut with '...'."""
    assert safe_excerpt("\x1b[31mRED\x07") == "'\\x1b[31mRED\\x07'"
    assert safe_excerpt("a" * 100, limit=10) == "'aaaaaaaaaa'..."
    assert safe_excerpt(b"\xff\x1bok") == "'\\\\xff\\x1bok'"
    assert safe_excerpt(7) == "7"
    assert "\u202e" not in safe_excerpt("abc\u202edef")


def test_field_count_error_escapes_control_characters(tmp_path):
    """A bad line full of terminal escape sequences is quoted escaped and short, never raw."""
    path = tmp_path / "esc.csv"
    path.write_bytes(b"a,b,y\n1,x,1\n2,\x1b[2J\x1b]0;pwned\x07,0,9\n")
    with pytest.raises(DataError, match=r"a line has 4 fields where the header has 3") as info:
        read_table(path)
    text = str(info.value)
    assert "\x1b" not in text and "\x07" not in text and "\\x1b[2J" in text
    r = run_cli("train", path, "--target", "y")
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and r.returncode == 2


def test_bad_number_at_prediction_is_escaped(tmp_path):
    """A numeric column holding escape codes at prediction: the value is shown escaped, with its row."""
    from binclf.predictor import Predictor

    fixture = Path(__file__).parent / "fixtures" / "bundle-v1-participation-logistic"
    df = pd.read_csv(Path(__file__).parent / "data" / "participation.csv").head(20)
    df["age"] = df["age"].astype(object)
    df.loc[5, "age"] = "\x1b[31m4.2"
    path = tmp_path / "p.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'age' should hold numbers but holds '\\x1b\[31m4\.2' at row 7"):
        Predictor.load(fixture).predict_file(path, tmp_path / "out.csv")


# --------------------------------------------------------------------------- overflow


def test_values_near_float_max_train_and_predict_without_numpy_warnings(tmp_path):
    """1e308 and -1.7e308 in a numeric column: train and predict exit 0 with no RuntimeWarning or source path."""
    rng = np.random.default_rng(0)
    n = 200
    a = rng.normal(size=n)
    a[::25] = 1e308
    a[3::40] = -1.7e308
    b = rng.normal(size=n)
    y = (b + rng.normal(size=n) > 0).astype(int)
    path = tmp_path / "big.csv"
    pd.DataFrame({"a": a, "b": b, "y": y}).to_csv(path, index=False)
    bundle = tmp_path / "m"
    r = run_cli("train", path, "--target", "y", "--model", "logistic", "--out", bundle, "--no-report")
    assert r.returncode == 0, r.stderr
    assert "RuntimeWarning" not in r.stderr and "overflow" not in r.stderr and ".py:" not in r.stderr, r.stderr
    out = tmp_path / "p.csv"
    r = run_cli("predict", bundle, path, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "RuntimeWarning" not in r.stderr and "overflow" not in r.stderr and ".py:" not in r.stderr, r.stderr
    proba = pd.read_csv(out)["probability"].to_numpy()
    assert np.isfinite(proba).all() and len(proba) == n


def test_huge_scales_do_not_collapse_to_zero():
    """A column of values near 1e308 (scale beyond float32) still orders its rows, with no warning."""
    import warnings

    from binclf.data.preprocessing import Preprocessor
    from binclf.data.schema import ColumnSpec, Schema

    x = np.array([1e308, -1.7e308, 1.5e308, 3.0, -2.0, 1e307] * 10)
    df = pd.DataFrame({"a": x})
    schema = Schema(columns=(ColumnSpec("a", "numeric", "float64"),))
    for mode in ("robust", "standard", "quantile"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            X = Preprocessor(schema=schema, numeric=mode).fit(df).transform(df)[:, 0]
        assert np.isfinite(X).all(), mode
        assert X[0] > X[3] > X[1], (mode, X[:6])


def test_csv_headers_that_look_like_magic_bytes_are_csv(tmp_path):
    """A header starting PAR1 or ORCID is CSV text: short magics are confirmed by the format's structure."""
    for header in ("PAR1,b,y", "ORCID,b,y", "BZh9,b,y"):
        path = tmp_path / "h.csv"
        path.write_text(header + "\n1,2,0\n3,4,1\n")
        assert read_table(path).shape == (2, 3), header


def test_wrong_sep_at_prediction_hints_at_the_delimiter(tmp_path):
    """A ';' file read with --sep ',' lacks every column: the error says the delimiter is probably ';'."""
    from binclf.bundle import check_columns
    from binclf.data.schema import ColumnSpec, Schema

    schema = Schema(columns=(ColumnSpec("a", "numeric", "float64"), ColumnSpec("b", "categorical", "str")))
    with pytest.raises(DataError, match=r"missing: 'a', 'b'; the header was read as the column 'a;b;y'.*delimiter is probably ';'"):
        check_columns(schema, "semi.csv", ["a;b;y"])
    with pytest.raises(DataError, match="add them"):  # a name that merely contains letters of others: no hint
        check_columns(schema, "x.csv", ["ab"])
