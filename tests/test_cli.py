"""End-to-end tests of the ``binclf`` command line, run as a real subprocess.

Each test runs ``python -m binclf ...`` (the installed package may point at
another checkout, so the module is run from the PYTHONPATH this test process
has). Training runs use ``--max-epochs 3`` and small tables to stay fast; the
bad-input tests assert the contract of every user error: exit code 2, exactly
one line ``error: ...`` on stderr naming what / where / the fix, no traceback
(unless ``--debug``), and nothing left behind: no output file, no bundle, no
temporary file or directory next to them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).parent / "data"
FAST = ("--max-epochs", "3")

# The development tables: target, the positive class binclf picks, the label type.
DEV_TABLES = {
    "bananas": ("label", 1),
    "biopsy": ("class", "malignant"),
    "participation": ("lfp", "yes"),
    "smarket": ("Direction", "Down"),
    "titanic": ("survived", "yes"),
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    # This checkout's sources first, whatever the installed binclf points at.
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")  # many short processes: no thread oversubscription
    env.pop("BINCLF_DEBUG", None)
    return env


ENV = _env()


def binclf(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``binclf ARGS`` in a subprocess; text stdout/stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "binclf", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300,
    )


def binclf_many(calls: Sequence[Sequence[object]], *, cwd: Path | None = None) -> list[subprocess.CompletedProcess]:
    """Run several independent commands at once (most of their time is start-up)."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda args: binclf(*args, cwd=cwd), calls))


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def cli(*args: object) -> Ran:
    """Run the same command in this process (click's CliRunner): for the checks that need no new process."""
    from click.testing import CliRunner

    from binclf.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    return Ran(r.exit_code, r.stdout, r.stderr)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def assert_user_error(result: subprocess.CompletedProcess, *facts: str) -> str:
    """Exit 2, exactly one stderr line ``error: ...`` holding every fact, no traceback; returns it."""
    assert result.returncode == 2, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for fact in facts:
        assert fact in line, f"{fact!r} not in {line!r}"
    return line


def assert_nothing_left(directory: Path, *names: str) -> None:
    """None of ``names`` and no temporary ``.name.*.tmp`` / ``.name.old`` exists in ``directory``."""
    present = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    for name in names:
        assert name not in present, present
    assert not [n for n in present if n.startswith(".") and (n.endswith(".tmp") or n.endswith(".old"))], present


# --------------------------------------------------------------------------- data


def messy_frame(n: int = 240, *, seed: int = 0) -> pd.DataFrame:
    """Mixed types, missing values, an identifier, a constant, awkward text; target 'yes'/'no'."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.uniform(0, 10, n)
    color = rng.choice(["red", "green", "blue"], n)
    grade = rng.integers(1, 4, n)  # a low-cardinality integer: a category
    city = rng.choice(["Paris, FR", 'O"Hare', "Zürich", "  spaced  "], n)
    logit = 1.5 * x1 - 0.4 * (x2 - 5) + (color == "red") * 1.5 - 0.5 * (grade == 3)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame(
        {
            "row_id": np.arange(1000, 1000 + n),  # unique per row: dropped as an identifier
            "x1": x1,
            "x2": x2.round(3).astype(object),
            "color": color.astype(object),
            "grade": grade,
            "city": city,
            "flag": rng.random(n) < 0.3,
            "source": "web",  # constant: dropped
            "target": np.where(y, "yes", "no"),
        }
    )
    df.loc[rng.random(n) < 0.1, "x1"] = np.nan
    df.loc[rng.random(n) < 0.1, "color"] = None
    df.loc[rng.random(n) < 0.05, "x2"] = "?"  # a text spelling of "missing" in a numeric column
    return df


def new_rows(n: int = 40, *, seed: int = 1) -> pd.DataFrame:
    """Rows to predict: unseen categories, missing values everywhere, an extra column, no target."""
    df = messy_frame(n, seed=seed).drop(columns=["target"])
    df = df.astype({"grade": object, "flag": object})
    df.loc[0, "color"] = "purple"  # never seen in training
    df.loc[1, "city"] = "Atlantis"
    df.loc[2, ["x1", "color", "grade", "city", "flag"]] = [np.nan, None, np.nan, None, None]
    df["comment"] = "extra"
    return df


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="session")
def messy(work) -> dict[str, Path]:
    """The messy tables on disk: train.csv / train.parquet (bool target), new.csv / new.parquet."""
    train, new = messy_frame(), new_rows()
    paths = {
        "train_csv": work / "train.csv",
        "train_parquet": work / "train.parquet",
        "new_csv": work / "new.csv",
        "new_parquet": work / "new.parquet",
    }
    train.to_csv(paths["train_csv"], index=False)
    pq_train = train.assign(target=train["target"] == "yes", x2=pd.to_numeric(train["x2"], errors="coerce"))
    pq_train.to_parquet(paths["train_parquet"], index=False)
    new.to_csv(paths["new_csv"], index=False)
    new.assign(x2=pd.to_numeric(new["x2"], errors="coerce")).to_parquet(paths["new_parquet"], index=False)
    return paths


@pytest.fixture(scope="session")
def bundles(work, messy) -> dict[str, Path]:
    """Bundles trained by the command line: on messy CSV (text labels) and Parquet (bool labels)."""
    out = {"csv": work / "messy-model", "parquet": work / "messy-pq-model"}
    runs = binclf_many(
        [
            ["train", messy["train_csv"], "--target", "target", "--out", out["csv"], "--numeric", "x2",
             "--no-report", *FAST],
            ["train", messy["train_parquet"], "-t", "target", "-o", out["parquet"], "--model", "logistic",
             "--no-report", *FAST],
        ]
    )
    for r in runs:
        ok(r)
    out["stderr"] = runs[0].stderr  # type: ignore[assignment]
    out["stdout"] = runs[0].stdout  # type: ignore[assignment]
    return out


def read_out(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False)


# --------------------------------------------------------------------------- train


def test_train_messy_csv_prints_roles_positive_class_metrics_and_bundle(bundles):
    """train infers roles (identifier and constant dropped with a notice), names the positive class,
    prints the test-metric table and where the bundle went; the bundle holds exactly the two files."""
    err, out = bundles["stderr"], bundles["stdout"]
    assert "'row_id' dropped" in err and "identifier" in err
    assert "'source' dropped" in err
    assert "positive class of 'target': 'yes' (the usual positive label" in err
    assert "'grade'" in err  # low-cardinality integer -> categorical, with a notice
    for label in ("ROC-AUC", "PR-AUC", "log-loss", "Brier", "accuracy", "precision", "recall", "F1"):
        assert label in out
    assert "at threshold" in out
    assert f"bundle written to {bundles['csv']}" in out
    assert sorted(p.name for p in bundles["csv"].iterdir()) == ["bundle.json", "model.safetensors"]
    meta = json.loads((bundles["csv"] / "bundle.json").read_text())
    roles = {c["name"]: c["role"] for c in meta["schema"]["columns"]}
    assert roles == {"x1": "numeric", "x2": "numeric", "color": "categorical", "grade": "categorical",
                     "city": "categorical", "flag": "categorical"}
    assert meta["target"]["positive"] == "yes" and meta["format_version"] == 1
    assert "?" in next(s for s in meta["preprocessing"]["numeric_"] if s["name"] == "x2")["na_tokens"]
    from binclf.io.atomic import _umask

    assert bundles["csv"].stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700


@pytest.fixture(scope="session")
def dev_bundles(work) -> dict[str, subprocess.CompletedProcess]:
    """Every development table trained from the command line (logistic model, 3 epochs)."""
    names = sorted(DEV_TABLES)
    runs = binclf_many(
        [["train", DATA / f"{n}.csv", "-t", DEV_TABLES[n][0], "-o", work / f"dev-{n}", "--no-report",
          "--model", "logistic", *FAST] for n in names]
    )
    return dict(zip(names, runs))


def test_dev_tables_train_and_evaluate(work, dev_bundles):
    """Every development table trains from the command line and evaluates on itself."""
    for name, r in dev_bundles.items():
        ok(r)
        meta = json.loads((work / f"dev-{name}" / "bundle.json").read_text())
        assert meta["target"]["positive"] == DEV_TABLES[name][1]
        assert type(meta["target"]["positive"]) is type(DEV_TABLES[name][1])
        assert "ROC-AUC" in r.stdout
    names = sorted(dev_bundles)
    evals = [cli("evaluate", work / f"dev-{n}", DATA / f"{n}.csv", "--json") for n in names]
    for name, r in zip(names, evals):
        metrics = json.loads(ok(r).stdout)
        assert metrics["n"] == len(pd.read_csv(DATA / f"{name}.csv"))
        assert 0.5 < metrics["roc_auc"] <= 1.0, (name, metrics)
        assert "ignoring" not in r.stderr  # the target column is expected, not "extra"


def test_train_positive_override_sep_drop_categorical_and_valid_test_files(tmp_path):
    """--positive, --sep, --drop, --categorical, --valid and --test are honoured."""
    df = messy_frame(300, seed=3)
    parts = {"train": df.iloc[:180], "valid": df.iloc[180:240], "test": df.iloc[240:]}
    for name, part in parts.items():
        part.to_csv(tmp_path / f"{name}.txt", sep=";", index=False)
    r = ok(cli("train", tmp_path / "train.txt", "-t", "target", "--positive", "NO", "--sep", ";",
                  "--drop", "city", "--categorical", "x2", "--valid", tmp_path / "valid.txt",
                  "--test", tmp_path / "test.txt", "-o", tmp_path / "m", "--no-report", *FAST))
    assert "'no' (as requested" in r.stderr
    assert "(60 rows, never seen in training)" in r.stdout
    meta = json.loads((tmp_path / "m" / "bundle.json").read_text())
    roles = {c["name"]: c["role"] for c in meta["schema"]["columns"]}
    assert "city" not in roles and roles["x2"] == "categorical"
    assert ["city", "dropped on request"] in meta["schema"]["dropped"]
    assert meta["info"]["summary"]["split_rows"] == {"train": 180, "valid": 60, "test": 60}


def test_train_missing_target_rows_dropped_with_notice(tmp_path):
    """--drop-missing-target drops rows with an empty target, saying how many and which."""
    df = messy_frame(120, seed=4)
    df.loc[[3, 7], "target"] = None
    df.to_csv(tmp_path / "t.csv", index=False)
    r = ok(cli("train", tmp_path / "t.csv", "-t", "target", "--drop-missing-target", "-o", tmp_path / "m",
                  "--no-report", *FAST))
    assert "2 row(s) with a missing 'target' dropped (row(s) 5, 9)" in r.stderr


def test_existing_bundle_needs_force_and_force_replaces_only_a_bundle(tmp_path, messy):
    """An existing --out is an error (nothing touched); --force refuses a directory that is not a bundle or holds
    other files (nothing deleted), and replaces a bundle, leaving no temporaries."""
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = assert_user_error(binclf("train", messy["train_csv"], "-t", "target", "-o", out, *FAST),
                             str(out), "already exists", "--force")
    assert line and (out / "keep.txt").read_text() == "mine"
    assert_user_error(cli("train", messy["train_csv"], "-t", "target", "-o", out, "--force", *FAST),
                      str(out), "is not a binclf bundle", "--force replaces only a binclf bundle", "nothing was deleted")
    (out / "bundle.json").write_text("{}")  # an old bundle's files, plus the user's
    (out / "model.safetensors").write_bytes(b"")
    assert_user_error(cli("train", messy["train_csv"], "-t", "target", "-o", out, "--force", *FAST),
                      "holds files a binclf bundle does not (keep.txt)", "nothing was deleted")
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    ok(cli("train", messy["train_csv"], "-t", "target", "-o", out, "--force", "--no-report", *FAST))
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "model.safetensors"]
    assert_nothing_left(tmp_path)


# --------------------------------------------------------------------------- predict


def test_predict_csv_equals_python_api_and_notes_extra_columns(bundles, messy, tmp_path):
    """predict writes probability + prediction for every row (unseen categories and missing values
    included), equal to Predictor.predict_proba to 1e-6; the extra column gets a notice."""
    from binclf.predictor import Predictor

    out = tmp_path / "p.csv"
    r = ok(binclf("predict", bundles["csv"], messy["new_csv"], "-o", out))
    assert "ignoring 3 column(s) the model does not use: row_id, source, comment" in r.stderr
    assert f"wrote 40 predictions to {out}" in r.stderr
    got = pd.read_csv(out)
    assert list(got.columns) == ["probability", "prediction"]
    predictor = Predictor.load(bundles["csv"])
    from binclf.io.tables import read_table

    expected = predictor.predict_proba(read_table(messy["new_csv"]))
    np.testing.assert_allclose(got["probability"], expected, rtol=0, atol=1e-6)
    assert set(got["prediction"]) <= {"yes", "no"}
    t = predictor.threshold.threshold
    assert ((got["probability"] >= t) == (got["prediction"] == "yes")).all()
    assert_nothing_left(tmp_path)


def test_predict_chunks_formats_stdout_keep_threshold(bundles, messy, tmp_path):
    """Chunked prediction equals one batch; Parquet output equals CSV output; stdout is CSV when no -o;
    --keep copies columns (a feature too, and text with commas and quotes intact); --threshold overrides."""
    src = messy["new_csv"]
    runs = binclf_many(
        [
            ["predict", bundles["csv"], src, "-o", tmp_path / "chunked.csv", "--batch-rows", "13"],
            ["predict", bundles["csv"], messy["new_parquet"], "-o", tmp_path / "out.parquet", "--batch-rows", "13"],
            ["predict", bundles["csv"], src],
        ]
    )
    runs.insert(0, cli("predict", bundles["csv"], src, "-o", tmp_path / "one.csv"))
    runs += [
        cli("predict", bundles["csv"], src, "-o", tmp_path / "keep.csv", "--keep", "row_id,city", "--keep", "x1",
            "--threshold", "0"),
        cli("predict", bundles["csv"], src, "-o", tmp_path / "new" / "dir" / "t1.csv", "--threshold", "1"),
    ]
    for r in runs:
        ok(r)
    one = read_out(tmp_path / "one.csv")
    pd.testing.assert_frame_equal(one, read_out(tmp_path / "chunked.csv"))
    parquet = read_out(tmp_path / "out.parquet")
    assert list(parquet.columns) == ["probability", "prediction"]
    np.testing.assert_allclose(parquet["probability"], one["probability"], atol=1e-12)
    assert (parquet["prediction"] == one["prediction"]).all()
    stdout = pd.read_csv(io.StringIO(runs[3].stdout), keep_default_na=False)
    pd.testing.assert_frame_equal(stdout, one)
    assert "wrote" not in runs[3].stderr and "comment" in runs[3].stderr and runs[3].stdout.count("\n") == 41
    kept = read_out(tmp_path / "keep.csv")
    new = pd.read_csv(src, keep_default_na=False)
    assert list(kept.columns) == ["row_id", "city", "x1", "probability", "prediction"]
    assert (kept["city"] == new["city"]).all() and (kept["row_id"] == new["row_id"]).all()
    assert 'O"Hare' in set(kept["city"]) and "Paris, FR" in set(kept["city"])
    assert (kept["prediction"] == "yes").all()  # threshold 0: everything positive
    assert (read_out(tmp_path / "new" / "dir" / "t1.csv")["prediction"] == "no").all()


def test_predict_label_types_round_trip(bundles, messy, tmp_path):
    """Labels come back in their own type: bool as true/false, ints as ints, text as text."""
    runs = [
        binclf("predict", bundles["parquet"], messy["new_parquet"], "-o", tmp_path / "b.csv"),
        cli("predict", bundles["parquet"], messy["new_parquet"], "-o", tmp_path / "b.parquet"),
    ]
    for r in runs:
        ok(r)
    text = (tmp_path / "b.csv").read_text().splitlines()
    assert {line.rsplit(",", 1)[1] for line in text[1:]} <= {"true", "false"}
    assert read_out(tmp_path / "b.parquet")["prediction"].dtype == bool


def test_predict_int_labels_come_back_as_ints(work, dev_bundles, tmp_path):
    """A 0/1 target (bananas) predicts 0/1 (not 0.0/1.0, not quoted), in CSV and Parquet."""
    ok(dev_bundles["bananas"])
    pd.read_csv(DATA / "bananas.csv").head(50).to_csv(tmp_path / "b.csv", index=False)
    runs = [binclf("predict", work / "dev-bananas", tmp_path / "b.csv", "-o", tmp_path / "p.csv"),
            cli("predict", work / "dev-bananas", tmp_path / "b.csv", "-o", tmp_path / "p.parquet")]
    for r in runs:
        ok(r)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert {line.rsplit(",", 1)[1] for line in lines[1:]} <= {"0", "1"}
    assert read_out(tmp_path / "p.parquet")["prediction"].dtype == np.int64


# --------------------------------------------------------------------------- evaluate / info


def test_evaluate_and_info(bundles, messy, tmp_path):
    """evaluate prints the metric table on labelled data; info shows schema, model, metrics, versions."""
    labelled = messy_frame(60, seed=9)
    # x2 mixes numbers and "?": text in Parquet, parsed as at training ("?" = missing).
    labelled.assign(x2=labelled["x2"].astype(str)).to_parquet(tmp_path / "l.parquet")
    ev, info = binclf_many([["evaluate", bundles["csv"], tmp_path / "l.parquet"], ["info", bundles["csv"]]])
    assert cli("info", bundles["csv"]).stdout == info.stdout
    ok(ev)
    assert "metrics on" in ev.stdout and "(60 rows)" in ev.stdout and "ROC-AUC" in ev.stdout
    assert "ignoring" in ev.stderr and "row_id" in ev.stderr and "'target'" not in ev.stderr
    out = ok(info).stdout
    assert "'target': positive 'yes', negative 'no'" in out
    assert "mlp(" in out and "x2" in out and "numeric" in out and "row_id" in out and "identifier" in out
    assert "threshold" in out and "test metrics at training time" in out and "ROC-AUC" in out
    assert "torch" in out and "binclf" in out


# --------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo_and_train_demo(tmp_path):
    """`binclf demo` (all defaults, in an empty directory) and `binclf train --demo` run the whole flow."""
    demo, train_demo = binclf_many(
        [["demo"], ["train", "--demo", "-o", "d2", "--max-epochs", "2", "--no-report"]], cwd=tmp_path
    )
    ok(demo)
    assert (tmp_path / "binclf-demo-model" / "bundle.json").is_file()
    assert "reloaded" in demo.stdout and "Purchase" in demo.stdout and "ROC-AUC" in demo.stdout
    ok(train_demo)
    assert (tmp_path / "d2" / "model.safetensors").is_file()


# --------------------------------------------------------------------------- bad input


def _csv(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


TRAIN_CASES = {
    # name: (file name, content, extra args, facts in the error line)
    "missing file": ("nope.csv", None, [], ["nope.csv", "no such file"]),
    "empty file": ("empty.csv", "", [], ["empty.csv", "empty"]),
    "header only": ("header.csv", "a,b,y\n", [], ["header.csv", "no data rows"]),
    "non-utf8": ("latin.csv", b"a,b,y\n1,caf\xe9,0\n2,x,1\n", [], ["latin.csv", "UTF-8", "row 2", "--encoding"]),
    "duplicate columns": ("dup.csv", "a,a,y\n1,2,0\n3,4,1\n", [], ["dup.csv", "duplicate column names 'a'"]),
    "target missing": ("t.csv", "amount,label_x,b\n1,0,2\n2,1,3\n", ["-t", "label"],
                       ["'label'", "did you mean 'label_x'?", "--target"]),
    "one class": ("one.csv", "a,y\n1,x\n2,x\n3,x\n", [], ["'y'", "exactly two classes", "found 1", "'x': 3"]),
    "three classes": ("three.csv", "a,y\n1,p\n2,q\n3,r\n4,p\n", [],
                      ["found 3", "'p': 2", "'q': 1", "'r': 1"]),
    "missing target": ("mt.csv", "a,y\n1,0\n2,\n3,1\n4,0\n", [],
                       ["'y'", "1 missing value", "row(s) 3", "--drop-missing-target"]),
    "inf": ("inf.csv", "a,b,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(30)).replace("\n5,5,", "\n5,inf,"),
            [], ["inf.csv", "column 'b'", "infinite", "row 7"]),
    "all-NaN column": ("nan.csv", "a,b,y\n1,,0\n2,,1\n3,,0\n4,,1\n", [], ["'b'", "no values", "--drop b"]),
    "unknown option column": ("d.csv", "a,b,y\n1,2,0\n2,3,1\n", ["-t", "y", "--drop", "bb"],
                              ["--drop", "'bb'", "did you mean 'b'?"]),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_bad_input_one_line_exit_2_nothing_written(case, tmp_path):
    """Each bad training input: exit 2, one error line with the facts, no bundle, no temporaries."""
    name, content, args, facts = TRAIN_CASES[case]
    path = tmp_path / name if content is None else _csv(tmp_path, name, content)
    args = args or ["-t", "y"]
    r = binclf("train", path, *args, "-o", tmp_path / "bundle", *FAST)
    assert_user_error(r, *facts)
    assert_nothing_left(tmp_path, "bundle")


def test_debug_shows_the_traceback(tmp_path):
    """--debug (or BINCLF_DEBUG) shows the full traceback instead of one line."""
    r = binclf("train", tmp_path / "nope.csv", "-t", "y", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "DataError" in r.stderr


@pytest.fixture(scope="session")
def bad_predict_inputs(work, messy) -> dict[str, tuple[Path, list[str]]]:
    """Bad prediction files: (path, facts in the error line)."""
    d = work / "bad"
    d.mkdir()
    new = pd.read_csv(messy["new_csv"], keep_default_na=False, dtype=str)
    new["target"] = messy_frame(len(new), seed=1)["target"]  # labelled, so evaluate gets as far as predict
    text = new.copy()
    text.loc[5, "x1"] = "abc"
    text.to_csv(d / "text_in_numeric.csv", index=False)
    inf = new.copy()
    inf.loc[4, "x1"] = "inf"
    inf.to_csv(d / "inf.csv", index=False)
    new.drop(columns=["x1", "color", "flag"]).to_csv(d / "missing_cols.csv", index=False)
    (d / "dup.csv").write_text("x1,x1,x2\n1,2,3\n")
    (d / "header.csv").write_text(",".join(new.columns) + "\n")
    (d / "empty.csv").write_text("")
    (d / "latin.csv").write_bytes(b"x1,x2,color,grade,city,flag\n1,2,caf\xe9,1,a,True\n")
    return {
        "text in numeric column": (d / "text_in_numeric.csv", ["text_in_numeric.csv", "column 'x1'", "'abc'", "row 7"]),
        "inf": (d / "inf.csv", ["inf.csv", "column 'x1'", "infinite", "row 6"]),
        "missing feature columns": (d / "missing_cols.csv", ["missing_cols.csv", "3 feature column(s)", "'x1'",
                                                            "'color'", "'flag'"]),
        "duplicate columns": (d / "dup.csv", ["dup.csv", "duplicate column names 'x1'"]),
        "header only": (d / "header.csv", ["header.csv", "no data rows"]),
        "empty file": (d / "empty.csv", ["empty.csv", "empty"]),
        "non-utf8": (d / "latin.csv", ["latin.csv", "UTF-8"]),
        "missing file": (d / "nope.csv", ["nope.csv", "no such file"]),
    }


def test_predict_and_evaluate_bad_input(bundles, bad_predict_inputs, tmp_path):
    """Each bad prediction file fails predict (-o given: no output, no temporaries) and evaluate alike."""
    cases = sorted(bad_predict_inputs)
    # Every case through a real process for predict; evaluate reads files another way (whole, with
    # read_table), so the cases whose message it builds itself also run as a process, the rest in this one.
    as_process = {"inf", "text in numeric column", "missing feature columns"}
    calls = [["predict", bundles["csv"], bad_predict_inputs[c][0], "-o", tmp_path / f"new-dir-{i}" / "p.csv"]
             for i, c in enumerate(cases)]
    calls += [["evaluate", bundles["csv"], bad_predict_inputs[c][0]] for c in sorted(as_process)]
    runs = binclf_many(calls)
    evaluate_runs = dict(zip(sorted(as_process), runs[len(cases):]))
    for i, case in enumerate(cases):
        _, facts = bad_predict_inputs[case]
        assert_user_error(runs[i], *facts)
        evaluate_run = evaluate_runs.get(case) or cli("evaluate", bundles["csv"], bad_predict_inputs[case][0])
        assert_user_error(evaluate_run, *facts)
    assert list(tmp_path.iterdir()) == []  # not even the output's directory, made for it


def test_bad_bundles(bundles, messy, tmp_path):
    """A directory that is not a bundle, a bundle with edited weights, an unknown format version, a missing
    bundle: one line each, for predict, evaluate and info."""
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(bundles["csv"], edited)
    raw = bytearray((edited / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (edited / "model.safetensors").write_bytes(bytes(raw))
    future = tmp_path / "future"
    shutil.copytree(bundles["csv"], future)
    meta = json.loads((future / "bundle.json").read_text())
    meta["format_version"] = 99
    (future / "bundle.json").write_text(json.dumps(meta))
    not_bundle = tmp_path / "plain"
    not_bundle.mkdir()
    runs = binclf_many(
        [
            ["predict", not_bundle, messy["new_csv"], "-o", tmp_path / "p.csv"],
            ["predict", edited, messy["new_csv"], "-o", tmp_path / "p.csv"],
            ["info", future],
        ]
    )
    runs[1:1] = [cli("info", not_bundle)]
    runs[3:3] = [cli("evaluate", edited, messy["train_csv"])]
    runs.append(cli("info", tmp_path / "absent"))
    assert_user_error(runs[0], str(not_bundle), "not a binclf bundle", "bundle.json")
    assert_user_error(runs[1], "not a binclf bundle")
    assert_user_error(runs[2], "sha256", "modified")
    assert_user_error(runs[3], "sha256", "modified")
    assert_user_error(runs[4], "format version 99", "reads version 1")
    assert_user_error(runs[5], "does not exist")
    assert_nothing_left(tmp_path, "p.csv")


def test_evaluate_bad_labels(bundles, tmp_path):
    """evaluate: missing labels and labels the model does not know are one-line errors with rows and counts;
    no target column at all is one too."""
    df = messy_frame(30, seed=5)
    df.loc[[2, 4], "target"] = None
    df.to_csv(tmp_path / "missing.csv", index=False)
    df = messy_frame(30, seed=5)
    df.loc[[3, 6, 8], "target"] = "maybe"
    df.to_csv(tmp_path / "unknown.csv", index=False)
    messy_frame(30, seed=5).drop(columns="target").to_csv(tmp_path / "unlabelled.csv", index=False)
    runs = binclf_many([["evaluate", bundles["csv"], tmp_path / "missing.csv"]])
    runs += [cli("evaluate", bundles["csv"], tmp_path / n) for n in ("unknown.csv", "unlabelled.csv")]
    assert_user_error(runs[0], "missing.csv", "'target'", "2 missing label(s)", "row(s) 4, 6")
    assert_user_error(runs[1], "unknown.csv", "'maybe': 3", "row 5", "'no'/'yes'")
    assert_user_error(runs[2], "unlabelled.csv", "'target'", "binclf predict")


def test_predict_output_is_a_directory_or_bad_keep(bundles, messy, tmp_path):
    """-o naming a directory and --keep naming an absent column are one-line errors."""
    runs = [
        cli("predict", bundles["csv"], messy["new_csv"], "-o", tmp_path),
        cli("predict", bundles["csv"], messy["new_csv"], "-o", tmp_path / "p.csv", "--keep", "nope"),
    ]
    assert_user_error(runs[0], "is a directory")
    assert_user_error(runs[1], "--keep", "'nope'")
    assert_nothing_left(tmp_path, "p.csv")


@pytest.mark.parametrize("where", ["training", "saving"])
def test_interrupted_train_leaves_no_bundle(where, messy, tmp_path, monkeypatch):
    """Ctrl-C during training or while the bundle is written: exit 130, one line, no bundle, no temporaries."""
    import binclf.bundle
    import binclf.train.pipeline

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "training":
        monkeypatch.setattr(binclf.train.pipeline, "train_table", interrupt)
    else:
        monkeypatch.setattr(binclf.bundle.os, "fsync", interrupt)
    r = cli("train", messy["train_csv"], "-t", "target", "-o", tmp_path / "m", "--no-report", *FAST)
    assert r.returncode == 130, r
    assert r.stderr.splitlines()[-1] == "error: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_debug_names_the_fast_path_and_plain_runs_do_not():
    """--debug ends with one 'fast path:' note (threads, kernels) on stderr; without it nothing of the kind."""
    fixture = Path(__file__).parent / "fixtures" / "bundle-v1-titanic-mlp"
    plain = cli("predict", fixture, DATA / "titanic.csv", "--threshold", "0.5")
    debug = cli("predict", fixture, DATA / "titanic.csv", "--threshold", "0.5", "--debug")
    assert plain.returncode == 0 and debug.returncode == 0
    assert "fast path" not in plain.stderr
    note = [line for line in debug.stderr.splitlines() if "fast path:" in line]
    assert len(note) == 1 and "torch thread" in note[0] and "BLAS" in note[0], debug.stderr
    assert debug.stdout == plain.stdout  # the same predictions
