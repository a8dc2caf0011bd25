"""Tests for binclf.bundle_schema: a damaged or edited bundle.json is one BundleError naming the field.

Each corrupt bundle is a copy of a real one with one field changed; it must be
refused by ``Predictor.load`` and, through ``python -m binclf predict`` and
``info``, with exit code 2 and a single line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from binclf.bundle import META_FILE, WEIGHTS_FILE, read_meta
from binclf.bundle_schema import META_HASH_KEY, meta_digest, validate_meta
from binclf.data.preprocessing import UnseenCategoryWarning
from binclf.errors import BundleError
from binclf.predictor import Predictor

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(__file__).parent / "data"
# Logistic + isotonic + abstain band; written before the JSON was hashed.
V1 = FIXTURES / "bundle-v1-participation-logistic"
V1_DATA = DATA / "participation.csv"


def copy_with(tmp_path: Path, edit, *, src: Path = V1, name: str = "b") -> Path:
    """A copy of bundle ``src`` whose bundle.json went through ``edit(meta)``."""
    out = tmp_path / name
    shutil.copytree(src, out)
    meta = json.loads((out / META_FILE).read_text())
    edit(meta)
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out


def _set(path: str, value):
    """An edit that sets the field at dotted ``path`` (list indices as numbers)."""

    def edit(meta):
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = meta
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value

    return edit


def _same_labels(meta):
    meta["target"]["negative"] = meta["target"]["positive"]


def _drop(key):
    return lambda meta: meta.pop(key)


def _weights_off_simplex(meta):
    meta["members"][0]["weight"] = 0.5


def _band_reversed(meta):
    band = meta["threshold"]["abstain"]
    band["low"], band["high"] = band["high"], band["low"]


CORRUPT = {
    "threshold 5": (_set("threshold.threshold", 5), r"threshold\.threshold must be a finite number in \[0, 1\], found 5"),
    "threshold NaN": (_set("threshold.threshold", float("nan")), r"threshold\.threshold .*found nan"),
    "threshold text": (_set("threshold.threshold", "abc"), r"threshold\.threshold .*found 'abc'"),
    "labels equal": (_same_labels, r"target\.positive and target\.negative must be two different labels"),
    "label not a scalar": (_set("target.positive", ["yes"]), r"target\.positive must be a label"),
    "scale 0": (_set("preprocessing.numeric_.0.scale", 0), r"numeric_\[0\]\.scale \(column 'lnnlinc'\) must be a finite number > 0, found 0"),
    "scale text": (_set("preprocessing.numeric_.0.scale", "x"), r"numeric_\[0\]\.scale .*found 'x'"),
    "median infinite": (_set("preprocessing.numeric_.1.median", float("inf")), r"numeric_\[1\]\.median \(column 'age'\)"),
    "levels not text": (_set("preprocessing.categorical_.1.levels", ["no", 3]), r"categorical_\[1\]\.levels \(column 'foreign'\) must be a list of texts"),
    "missing calibration": (_drop("calibration"), r"missing the field\(s\) 'calibration'"),
    "missing target": (_drop("target"), r"missing the field\(s\) 'target'"),
    "calibration knots": (_set("calibration.params.y_thresholds_", [0.1, "x"]), r"calibration\.params\.y_thresholds_"),
    "unknown calibrator": (_set("calibration.method", "magic"), r"calibration\.method must be one of"),
    "abstain band reversed": (_band_reversed, r"threshold\.abstain\.low .* must not be above threshold\.abstain\.high"),
    "member weights": (_weights_off_simplex, r"members\[\*\]\.weight must sum to 1"),
    "n_features": (_set("members.0.config.n_features", 7), r"members\[0\]\.config\.n_features is 7 but the preprocessor produces 10"),
    "weights file ..": (_set("weights.file", "../participation.csv"), r"weights\.file '\.\./participation\.csv' points outside the bundle"),
    "weights file absolute": (_set("weights.file", "/etc/passwd"), r"weights\.file '/etc/passwd' points outside the bundle"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_field_is_one_bundle_error_naming_it(case, tmp_path):
    """Predictor.load and read_meta refuse the edited field with a BundleError that names it."""
    edit, match = CORRUPT[case]
    bundle = copy_with(tmp_path, edit)
    with pytest.raises(BundleError, match=match) as info:
        Predictor.load(bundle)
    assert "\n" not in str(info.value)
    with pytest.raises(BundleError, match=match):
        read_meta(bundle)


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "binclf", *map(str, args)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "case", ["threshold 5", "threshold NaN", "threshold text", "labels equal", "scale 0", "scale text",
             "missing calibration", "weights file ..", "weights file absolute", "n_features"]
)
def test_corrupt_bundle_exits_2_with_one_line(case, tmp_path):
    """`binclf predict` and `binclf info` on a corrupt bundle: exit 2, one `error:` line naming the field."""
    edit, match = CORRUPT[case]
    bundle = copy_with(tmp_path, edit)
    for args in (("predict", bundle, V1_DATA), ("info", bundle)):
        r = run_cli(*args)
        assert r.returncode == 2, (args[0], r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert re.search(match, lines[0]), lines[0]
        assert r.stdout == ""


def _retensor(bundle: Path, name: str, tensor) -> None:
    """Replace one tensor of the bundle's weights and record the new file's hash (as if written so)."""
    from safetensors.torch import load, save

    tensors = load((bundle / WEIGHTS_FILE).read_bytes())
    tensors[name] = tensor
    data = save(tensors)
    (bundle / WEIGHTS_FILE).write_bytes(data)
    meta = json.loads((bundle / META_FILE).read_text())
    meta["weights"]["sha256"] = hashlib.sha256(data).hexdigest()
    (bundle / META_FILE).write_text(json.dumps(meta))


def test_tensor_shape_must_match_the_config(tmp_path):
    """A weight whose shape differs from what the member's config builds is a BundleError naming the tensor."""
    import torch

    bundle = copy_with(tmp_path, lambda m: None)
    name = "m0.output.weight"  # logistic regression on 10 model inputs: shape [1, 10]
    _retensor(bundle, name, torch.zeros(1, 9))
    with pytest.raises(BundleError, match=rf"tensor {name} has shape \[1, 9\] where the config of members\[0\] \(logistic\) gives \[1, 10\]"):
        Predictor.load(bundle)
    r = run_cli("predict", bundle, V1_DATA)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "has shape [1, 9]" in r.stderr


def test_nan_weights_are_refused(tmp_path):
    """NaN in a parameter would make every probability NaN: refused on load."""
    import torch

    bundle = copy_with(tmp_path, lambda m: None)
    _retensor(bundle, "m0.output.bias", torch.tensor([float("nan")]))
    with pytest.raises(BundleError, match=r"tensor m0\.output\.bias holds NaN"):
        Predictor.load(bundle)


def test_weights_file_symlink_out_of_the_bundle(tmp_path):
    """A weights file that is a link to a file outside the bundle is refused (not read, not hashed)."""
    bundle = copy_with(tmp_path, lambda m: None)
    outside = tmp_path / "outside.safetensors"
    shutil.move(bundle / WEIGHTS_FILE, outside)
    (bundle / WEIGHTS_FILE).symlink_to(outside)
    with pytest.raises(BundleError, match=r"weights\.file 'model\.safetensors' is a link to .*outside the bundle directory"):
        Predictor.load(bundle)


def test_edited_json_is_detected_by_its_hash(tmp_path):
    """A bundle saved now records its JSON's hash; a well-formed edit (threshold 0.32 -> 0.7) is detected as an edit."""
    saved = Predictor.load(V1).save(tmp_path / "new")
    meta = json.loads((saved / META_FILE).read_text())
    assert meta[META_HASH_KEY] == meta_digest(meta)
    Predictor.load(saved)  # intact: loads
    edited = copy_with(tmp_path, _set("threshold.threshold", 0.7), src=saved, name="edited")
    message = r"bundle\.json was modified after it was written \(hash mismatch\); retrain or restore it"
    with pytest.raises(BundleError, match=message):
        Predictor.load(edited)
    for args in (("predict", edited, V1_DATA), ("info", edited)):
        r = run_cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "was modified after it was written (hash mismatch)" in r.stderr


def test_reformatted_json_is_not_an_edit(tmp_path):
    """The hash covers the content, not the layout: re-indented JSON still loads."""
    saved = Predictor.load(V1).save(tmp_path / "new")
    meta = json.loads((saved / META_FILE).read_text())
    (saved / META_FILE).write_text(json.dumps(meta, indent=4))
    Predictor.load(saved)


def test_bundles_without_a_json_hash_still_load():
    """Bundles written before the hash (format version 1, binclf 0.1.0) have none and are accepted."""
    for bundle in sorted(FIXTURES.glob("bundle-v1-*/")):
        assert META_HASH_KEY not in json.loads((bundle / META_FILE).read_text())
        Predictor.load(bundle)


def test_validate_meta_returns_the_model_width():
    """validate_meta passes a good bundle.json and returns the preprocessor's output width."""
    meta = json.loads((V1 / META_FILE).read_text())
    assert validate_meta(meta) == meta["members"][0]["config"]["n_features"] == 10


def test_predictor_is_built_whole():
    """A Predictor needs its fitted calibrator: no placeholder fitted on fake data and replaced later."""
    p = Predictor.load(V1)
    with pytest.raises(TypeError):
        Predictor(schema=p.schema, target=p.target, preprocessor=p.preprocessor, members=p.members)
    with pytest.raises(TypeError, match="fitted calibrator"):
        Predictor(schema=p.schema, target=p.target, preprocessor=p.preprocessor, members=p.members, calibrator=None)


# --------------------------------------------------------------------------- unseen categories

TITANIC = FIXTURES / "bundle-v1-titanic-mlp"  # categories only: class, age, sex (text)


def titanic_rows(n: int = 40) -> pd.DataFrame:
    df = pd.read_csv(DATA / "titanic.csv").head(n)
    return df


def test_mostly_unseen_categories_warn_once_naming_the_column():
    """Integers where training saw text: every row is "unknown"; one warning names the column and the fraction."""
    p = Predictor.load(TITANIC)
    df = titanic_rows()
    df["class"] = np.arange(len(df)) % 3 + 1  # 1, 2, 3 instead of "1st class" ...
    with pytest.warns(UnseenCategoryWarning, match=r"categorical column 'class': 100% of its non-missing values \(40 of 40\)") as rec:
        p.predict_proba(df)
    assert len([w for w in rec if issubclass(w.category, UnseenCategoryWarning)]) == 1


def test_known_categories_do_not_warn():
    """Values that are training levels (and a minority of unknown ones) give no warning."""
    p = Predictor.load(TITANIC)
    df = titanic_rows()
    df.loc[:9, "sex"] = "other"  # 25% unknown: below the 50% line
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnseenCategoryWarning)
        p.predict_proba(df)


def test_predict_file_warns_once_over_many_batches(tmp_path):
    """A file read in batches gives one warning with the whole file's fraction, not one per batch."""
    p = Predictor.load(TITANIC)
    df = titanic_rows(100)
    df["age"] = 7
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    with pytest.warns(UnseenCategoryWarning) as rec:
        p.predict_file(src, tmp_path / "out.csv", batch_rows=10)
    hits = [str(w.message) for w in rec if issubclass(w.category, UnseenCategoryWarning)]
    assert len(hits) == 1 and "'age': 100% of its non-missing values (100 of 100)" in hits[0]


def test_unseen_categories_through_the_command_line(tmp_path):
    """`binclf predict` prints the warning as one `warning:` line, with no source path."""
    df = titanic_rows()
    df["class"] = 1
    src = tmp_path / "in.csv"
    df.to_csv(src, index=False)
    r = run_cli("predict", TITANIC, src, "-o", tmp_path / "out.csv")
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "'class'" in warn[0] and "100%" in warn[0], r.stderr
    assert ".py:" not in r.stderr and "Warning:" not in r.stderr


def test_hash_survives_the_json_round_trip(tmp_path):
    """Integer keys (sorted as numbers, read back as text) and tuples do not make a fresh bundle look edited."""
    import torch

    from binclf.bundle import save_bundle

    meta = {k: v for k, v in json.loads((V1 / META_FILE).read_text()).items() if k not in ("format", "format_version", "weights")}
    meta["info"] = {"by_fold": {10: "a", 9: "b"}, "pair": (1, 2)}
    out = save_bundle(tmp_path / "b", meta=meta, tensors={"m0.output.weight": torch.zeros(1, 10)})
    assert read_meta(out)["info"]["by_fold"] == {"10": "a", "9": "b"}
