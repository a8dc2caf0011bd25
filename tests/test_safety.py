"""Adversarial tests of the command line's promises (issue #14): nothing the user did not name as the output is
ever replaced, outputs are checked before any work, every option is validated before any data is read, and each
refusal is one line ``error: ...`` with exit code 2.

Most commands run in this process (click's CliRunner) to stay fast; one trained bundle serves every
prediction case. "Before any work" is shown by ordering: the data file named does not exist, so an error about
the option (or output) proves the option was checked before the data was read.

Tests run as root here, where a read-only directory is still writable; an unwritable output location is made
as root cannot write either: a path below a regular *file*, or below ``/proc``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

FAST = ("--model", "logistic", "--max-epochs", "2", "--no-report")


def cli(*args: object):
    """Run ``binclf ARGS`` in this process; returns click's Result (exit_code, stdout, stderr)."""
    from binclf.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result, *facts: str) -> str:
    """Exit 2, exactly one stderr line ``error: ...`` holding every fact, no traceback; returns it."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fact in facts:
        assert fact in lines[0], f"{fact!r} not in {lines[0]!r}"
    return lines[0]


def digest(directory: Path) -> dict[str, str]:
    """Name -> sha256 of every file under ``directory``: to show nothing was touched."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*")) if p.is_file()
    }


def frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    c = rng.choice(["u", "v", "w"], n)
    y = np.where(a + (c == "u") + rng.normal(scale=0.7, size=n) > 0.3, "yes", "no")
    return pd.DataFrame({"a": a.round(4), "b": rng.uniform(0, 5, n).round(3), "c": c, "y": y})


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("safety")


@pytest.fixture(scope="module")
def data(space) -> Path:
    path = space / "train.csv"
    frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def bundle(space, data) -> Path:
    out = space / "model"
    r = cli("train", data, "-t", "y", "-o", out, *FAST)
    assert r.exit_code == 0, (r.stderr, r.exception)
    return out


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """A scratch working directory holding the training table."""
    monkeypatch.chdir(tmp_path)
    frame().to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


# --------------------------------------------------------------------------- 1. never destroy a user's file


def test_force_refuses_a_directory_that_is_not_a_bundle(in_tmp):
    """--force on a directory of the user's files (no bundle.json) is refused; every file survives."""
    mine = in_tmp / "results"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    (mine / "sub").mkdir()
    (mine / "sub" / "x.csv").write_text("1,2\n")
    before = digest(mine)
    one_error(cli("train", "train.csv", "-t", "y", "-o", mine, "--force", *FAST),
              "is not a binclf bundle", "--force replaces only a binclf bundle", "nothing was deleted")
    assert digest(mine) == before


def test_force_refuses_a_bundle_holding_other_files(in_tmp, bundle):
    """A bundle directory in which the user put their own file is not replaced by --force."""
    import shutil

    target = in_tmp / "m"
    shutil.copytree(bundle, target)
    (target / "my-notes.md").write_text("keep me")
    before = digest(target)
    one_error(cli("train", "train.csv", "-t", "y", "-o", target, "--force", *FAST),
              "holds files a binclf bundle does not (my-notes.md)", "nothing was deleted")
    assert digest(target) == before


@pytest.mark.parametrize("spelling", ["cwd", ".", "./", "sub/..", "parent"])
def test_out_the_current_directory_or_above_is_refused(in_tmp, spelling, monkeypatch):
    """--out "$PWD", --out ., ./, sub/.. and a parent of the current directory are refused, with or without
    --force, before reading data: nothing is deleted."""
    (in_tmp / "sub").mkdir()
    if spelling == "parent":
        monkeypatch.chdir(in_tmp / "sub")
    out = {"cwd": str(Path.cwd()), "parent": ".."}.get(spelling, spelling)
    before = digest(in_tmp)
    for force in ((), ("--force",)):
        one_error(cli("train", in_tmp / "train.csv", "-t", "y", "-o", out, *force, *FAST), "cannot be replaced")
    assert digest(in_tmp) == before


def test_out_holding_the_input_is_refused(tmp_path):
    """--out a directory that holds the training table (a bundle-shaped one even) is refused."""
    folder = tmp_path / "work"
    folder.mkdir()
    frame().to_csv(folder / "train.csv", index=False)
    one_error(cli("train", folder / "train.csv", "-t", "y", "-o", folder, "--force", *FAST),
              "holds the input file", "train.csv")
    assert (folder / "train.csv").is_file()


def _predict_cases(space: Path, data: Path, bundle: Path) -> dict[str, Path]:
    (space / "link.csv").unlink(missing_ok=True)
    (space / "link.csv").symlink_to(data)
    (space / "hard.csv").unlink(missing_ok=True)
    os.link(data, space / "hard.csv")
    (space / "dotdot").mkdir(exist_ok=True)
    return {
        "the input": data,
        "a symlink to the input": space / "link.csv",
        "a hard link to the input": space / "hard.csv",
        "a .. path to the input": space / "dotdot" / ".." / data.name,
        "bundle.json": bundle / "bundle.json",
        "model.safetensors": bundle / "model.safetensors",
        "a new file in the bundle": bundle / "predictions.csv",
    }


def test_predict_output_may_not_be_an_input_or_in_a_bundle(space, data, bundle):
    """predict -o the input (itself, through a symlink, a hard link, a .. path) or a file inside a bundle is
    refused before any work; the input and the bundle are untouched."""
    cases = _predict_cases(space, data, bundle)
    before_data, before_bundle = data.read_bytes(), digest(bundle)
    for case, output in cases.items():
        r = cli("predict", bundle, data, "-o", output)
        facts = ["is the input file"] if "input" in case else ["inside", "bundle"]
        one_error(r, str(output), *facts)
    assert data.read_bytes() == before_data and digest(bundle) == before_bundle


def test_predict_into_another_bundle_is_refused(space, data, bundle, tmp_path):
    """A file inside any bundle (not only the one being used) is refused."""
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(bundle, other)
    before = digest(other)
    one_error(cli("predict", bundle, data, "-o", other / "model.safetensors"), "inside the binclf bundle")
    assert digest(other) == before


def test_report_output_may_not_be_an_input_or_a_bundle_file(space, data, bundle):
    """report -o the input table, the bundle's own report.html or bundle.json: refused, nothing replaced."""
    before_data, before_bundle = data.read_bytes(), digest(bundle)
    one_error(cli("report", bundle, data, "-o", data), "is the input file")
    one_error(cli("report", bundle, data, "-o", bundle / "report.html"), "inside", str(bundle))
    one_error(cli("report", bundle, data, "-o", bundle / "bundle.json"), "inside", str(bundle))
    assert data.read_bytes() == before_data and digest(bundle) == before_bundle


def test_unknown_output_extensions_are_refused(space, data, bundle):
    """-o x.json (or no extension) does not silently write CSV: refused, naming the supported types."""
    for name in ("x.json", "x", "x.csv.gz"):
        one_error(cli("predict", bundle, data, "-o", space / name),
                  "unsupported file type", ".csv, .tsv, .parquet, .pq")
        assert not (space / name).exists()
    one_error(cli("report", bundle, data, "-o", space / "r.pdf"), "unsupported file type '.pdf'", ".html")


def test_tsv_output_is_tab_separated(space, data, bundle):
    """-o x.tsv writes tab-separated values (the extension is honoured, not ignored)."""
    r = cli("predict", bundle, data, "-o", space / "p.tsv")
    assert r.exit_code == 0, r.stderr
    header = (space / "p.tsv").read_text().splitlines()[0]
    assert header == '"probability"\t"prediction"'


def test_unwritable_output_is_found_before_any_work(tmp_path):
    """An output location that cannot be written (below a regular file; below /proc, which root cannot write
    either) is one line before the data is read: the data file named does not even exist."""
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    missing = tmp_path / "no-such-data.csv"
    one_error(cli("train", missing, "-t", "y", "-o", a_file / "model", *FAST), "is a file, not a directory")
    one_error(cli("predict", tmp_path / "no-bundle", missing, "-o", a_file / "p.csv"), "is a file, not a directory")
    one_error(cli("report", tmp_path / "no-bundle", missing, "-o", a_file / "r.html"), "is a file, not a directory")
    if Path("/proc").is_dir():
        one_error(cli("train", missing, "-t", "y", "-o", "/proc/binclf-test-model", *FAST), "cannot write in /proc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


def test_out_an_existing_file_is_refused(in_tmp):
    """--out naming a file (the input itself, or another file) never replaces it, even with --force."""
    (in_tmp / "notes.txt").write_text("mine")
    for out in ("notes.txt", "train.csv"):
        before = (in_tmp / out).read_bytes()
        one_error(cli("train", "train.csv", "-t", "y", "-o", out, "--force", *FAST), out)
        assert (in_tmp / out).read_bytes() == before


def test_interrupt_just_after_the_bundle_is_written_says_it_is_complete(in_tmp, monkeypatch):
    """Ctrl-C landing right after the bundle was renamed into place: exit 130 and a line saying the bundle is
    complete (not "nothing was written"), and the bundle loads."""
    import binclf.predictor
    from binclf.predictor import Predictor

    save = binclf.predictor.Predictor.save

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(binclf.predictor.Predictor, "save", save_then_interrupt)
    r = cli("train", "train.csv", "-t", "y", "-o", "m", *FAST)
    assert r.exit_code == 130, (r.stderr, r.exception)
    last = r.stderr.splitlines()[-1]
    assert last.startswith("error: interrupted after m was written") and "complete" in last, last
    assert Predictor.load(in_tmp / "m").members


# --------------------------------------------------------------------------- 3. options checked before any work

BAD_TRAIN_OPTIONS = {
    # option values -> facts of the one error line
    ("--lr", "-1"): ["--lr", "'-1'", "> 0", "--lr 0.001"],
    ("--lr", "0"): ["--lr", "'0'", "> 0"],
    ("--lr", "abc"): ["--lr", "'abc'"],
    ("--lr", "nan"): ["--lr", "not finite"],
    ("--batch-size", "0"): ["--batch-size", "'0'", "'auto'"],
    ("--batch-size", "abc"): ["--batch-size", "'abc'"],
    ("--batch-size", "2.5"): ["--batch-size", "'2.5'"],
    ("--abstain-precision", "2"): ["--abstain-precision", "'2'", "(0, 1]"],
    ("--abstain-precision", "0"): ["--abstain-precision", "'0'"],
    ("--max-epochs", "0"): ["--max-epochs", "'0'", ">= 1"],
    ("--max-epochs", "ten"): ["--max-epochs", "'ten'"],
    ("--seed", "-1"): ["--seed", "'-1'"],
    ("--seed", "x"): ["--seed", "'x'"],
    ("--pos-weight", "-2"): ["--pos-weight", "'-2'", "balanced"],
    ("--pos-weight", "heavy"): ["--pos-weight", "'heavy'"],
    ("--sep", ";;"): ["--sep", "one character", "';;'"],
    ("--sep", ""): ["--sep", "one character"],
    ("--encoding", "klingon"): ["--encoding", "'klingon'", "latin-1"],
    ("--objective", "f2"): ["--objective", "unknown objective 'f2'", "valid forms"],
    ("--objective", "cost:1"): ["--objective", "cost takes 2 number(s)"],
    ("--objective", "cost:-1,2"): ["--objective", "costs must be >= 0"],
    ("--objective", "precision:1.5"): ["--objective", "(0, 1]"],
    ("--objective", "recall:abc"): ["--objective", "not a number list"],
    ("--objective", "fbeta:0"): ["--objective", "beta must be > 0"],
    ("--objective", "fpr:1"): ["--objective", "[0, 1)"],
    ("--objective", "f1:2"): ["--objective", "f1 takes no ':' arguments"],
    ("--loss", "mse"): ["--loss", "'mse'", "bce", "focal", "hinge"],
    ("--calibration", "magic"): ["--calibration", "'magic'", "platt", "isotonic", "auto"],
    ("--model", "xgboost"): ["--model", "'xgboost'", "logistic"],
    ("--sampler", "smote"): ["--sampler", "'smote'", "balanced"],
}


@pytest.mark.parametrize("option", sorted(BAD_TRAIN_OPTIONS), ids=lambda o: f"{o[0]}={o[1]}")
def test_bad_train_option_is_one_line_before_reading_data(option, tmp_path):
    """Each bad option value: one line naming the option, the value and the fix, exit 2, before the data is read
    (the data file does not exist) and nothing written."""
    name, value = option
    r = cli("train", tmp_path / "no-such.csv", "-t", "y", "-o", tmp_path / "m", f"{name}={value}")
    line = one_error(r, *BAD_TRAIN_OPTIONS[option])
    assert "no-such.csv" not in line
    assert list(tmp_path.iterdir()) == []


def test_several_bad_options_are_reported_together(tmp_path):
    """Three bad options: one line naming all three, so one run shows everything to fix."""
    line = one_error(cli("train", tmp_path / "no-such.csv", "-t", "y", "--lr", "0", "--batch-size", "0",
                         "--objective", "f2"), "--lr", "--batch-size", "--objective")
    assert line.count("; also ") == 2


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "2", "-0.1", "abc"])
def test_bad_threshold_is_refused_for_predict_and_evaluate(value, tmp_path):
    """--threshold nan (which made every prediction negative with exit 0), inf, out of [0, 1] or text: one line,
    before the bundle or data are read."""
    for command in ("predict", "evaluate"):
        one_error(cli(command, tmp_path / "nb", tmp_path / "nd.csv", "--threshold", value), "--threshold", repr(value))


def test_bad_predict_options_before_any_work(tmp_path):
    """--sep ';;' (a crash before), --batch-rows 0, --encoding nonsense: one line each, before reading."""
    args = ("predict", tmp_path / "nb", tmp_path / "nd.csv")
    one_error(cli(*args, "--sep", ";;"), "--sep", "one character")
    one_error(cli(*args, "--batch-rows", "0"), "--batch-rows", ">= 1")
    one_error(cli(*args, "--encoding", "nope"), "--encoding", "'nope'")
    one_error(cli("evaluate", tmp_path / "nb", tmp_path / "nd.csv", "--sep", "ab"), "--sep")
    one_error(cli("report", tmp_path / "nb", tmp_path / "nd.csv", "--seed", "-3"), "--seed")


def test_usage_errors_are_one_line(tmp_path):
    """Unknown options and missing arguments are one line too (with where to look), exit 2."""
    one_error(cli("train", tmp_path / "d.csv", "--bogus"), "No such option", "--bogus", "--help")
    one_error(cli("predict", tmp_path / "b"), "Missing argument", "DATA")


def test_wrong_sep_at_predict_hints_at_the_delimiter(space, data, bundle):
    """A wrong --sep makes the header one column: the "columns missing" error says the delimiter may be wrong."""
    one_error(cli("predict", bundle, data, "--sep", ";"), "missing", "delimiter is probably ','", "--sep ','")
    semi = space / "semi.csv"
    pd.read_csv(data).to_csv(semi, index=False, sep=";")
    one_error(cli("predict", bundle, semi, "--sep", ","), "delimiter is probably ';'", "--sep ';'")


def test_threshold_in_range_still_works(space, data, bundle):
    """A valid --threshold (0 and 1 included) is used: at 0 every row is positive."""
    r = cli("predict", bundle, data, "--threshold", "0")
    assert r.exit_code == 0, r.stderr
    out = pd.read_csv(__import__("io").StringIO(r.stdout))
    assert set(out["prediction"]) == {"yes"}


# --------------------------------------------------------------------------- training options through the CLI

RUNS = [
    # (options, what the bundle must record)
    (["--objective", "f1", "--calibration", "platt"], {"objective": "f1", "calibration": "platt"}),
    (["--objective", "fbeta:2", "--calibration", "temperature"], {"objective": "fbeta:2", "calibration": "temperature"}),
    (["--objective", "youden", "--calibration", "isotonic"], {"objective": "youden", "calibration": "isotonic"}),
    (["--objective", "balanced_accuracy", "--calibration", "beta"],
     {"objective": "balanced_accuracy", "calibration": "beta"}),
    (["--objective", "accuracy", "--calibration", "none"], {"objective": "accuracy", "calibration": "none"}),
    (["--objective", "mcc", "--loss", "focal", "--pos-weight", "balanced"],
     {"objective": "mcc", "loss": "focal", "pos_weight": "balanced"}),
    (["--objective", "cost:1,5", "--loss", "hinge", "--pos-weight", "2.5"],
     {"objective": "cost:1,5", "loss": "hinge", "pos_weight": 2.5}),
    (["--objective", "precision:0.6", "--sampler", "balanced", "--batch-size", "16"],
     {"objective": "precision:0.6", "sampler": "balanced", "batch_size": 16}),
    (["--objective", "recall:0.8", "--lr", "0.01", "--abstain-precision", "0.8"],
     {"objective": "recall:0.8", "lr": 0.01, "abstain_precision": 0.8}),
    (["--objective", "fpr:0.2", "--seed", "7"], {"objective": "fpr:0.2", "seed": 7}),
]


@pytest.mark.parametrize("run", range(len(RUNS)), ids=lambda i: " ".join(RUNS[i][0]))
def test_training_options_reach_the_bundle(run, space, data, tmp_path):
    """Every --objective kind, --calibration method, --loss, --pos-weight, --sampler, --batch-size, --lr,
    --abstain-precision and --seed, given on the command line, is what the bundle was trained with."""
    args, expect = RUNS[run]
    r = cli("train", data, "-t", "y", "-o", tmp_path / "m", *FAST, *args)
    assert r.exit_code == 0, (r.stderr, r.exception)
    meta = json.loads((tmp_path / "m" / "bundle.json").read_text())
    options = meta["info"]["options"]
    for key, value in expect.items():
        if key == "calibration":
            assert meta["calibration"]["method"] == value
        elif key == "objective":
            assert meta["threshold"]["objective"] == value  # the canonical text of the parsed objective
        else:
            assert options[key] == value, (key, options[key])
    if "abstain_precision" in expect:
        assert meta["threshold"]["abstain"] is not None


def test_encoding_option_reads_latin1(tmp_path):
    """--encoding latin-1 trains on a Latin-1 file whose categories have accents; without it, one line."""
    df = frame(80, seed=3)
    df["c"] = df["c"].map({"u": "café", "v": "crème", "w": "thé"})
    path = tmp_path / "latin.csv"
    path.write_bytes(df.to_csv(index=False).encode("latin-1"))
    one_error(cli("train", path, "-t", "y", "-o", tmp_path / "m", *FAST), "UTF-8", "--encoding")
    r = cli("train", path, "-t", "y", "-o", tmp_path / "m", "--encoding", "latin-1", *FAST)
    assert r.exit_code == 0, (r.stderr, r.exception)
    meta = json.loads((tmp_path / "m" / "bundle.json").read_text())
    assert "café" in json.dumps(meta["preprocessing"], ensure_ascii=False)
