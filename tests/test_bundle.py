"""Tests for binclf.bundle: atomic save, --force, hash and version checks, byte-identical round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from binclf import bundle as bundle_module
from binclf.bundle import META_FILE, WEIGHTS_FILE, check_columns, load_bundle, read_meta, save_bundle
from binclf.data.schema import ColumnSpec, Schema
from binclf.errors import BundleError, DataError

FIXTURE = Path(__file__).parent / "fixtures" / "bundle-v1-participation-logistic"
# A real bundle's JSON (every field passes the validator), without what save_bundle adds.
META = {
    **{k: v for k, v in json.loads((FIXTURE / META_FILE).read_text()).items() if k not in ("format", "format_version", "weights")},
    "note": "x",
}
TENSORS = {"m0.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}


def leftovers(directory: Path) -> list[str]:
    """Hidden temporaries (``.name.*.tmp``, ``.name.old``) in ``directory``."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def predictor():
    """A small trained predictor (logistic, 2 epochs)."""
    from binclf.train.pipeline import TrainOptions, train_table

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=120), "c": rng.choice(["u", "v", None], 120)})
    df["y"] = np.where(df["a"] + rng.normal(size=120) > 0, "yes", "no")
    return train_table(df, TrainOptions(target="y", model="logistic", max_epochs=2, n_boot=10)).predictor


def test_save_load_round_trip_is_byte_identical(predictor, tmp_path):
    """A bundle saved, loaded and saved again has byte-identical bundle.json and model.safetensors."""
    from binclf.predictor import Predictor

    first = predictor.save(tmp_path / "a")
    again = Predictor.load(first).save(tmp_path / "b")
    for name in (META_FILE, WEIGHTS_FILE):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    meta = json.loads((first / META_FILE).read_text())
    assert meta["format"] == "binclf-bundle" and meta["format_version"] == 1
    assert {"schema", "preprocessing", "members", "target", "threshold", "calibration", "versions"} <= set(meta)
    assert sorted(p.name for p in first.iterdir()) == [META_FILE, WEIGHTS_FILE]


def test_existing_directory_needs_force(tmp_path):
    """Saving over an existing path is a BundleError without force; force replaces a bundle (its report
    included), leaving no temporaries, but never a directory holding other files: nothing is deleted."""
    out = save_bundle(tmp_path / "b", meta=META, tensors=TENSORS, extra_files={"report.html": b"<html>"})
    with pytest.raises(BundleError, match="already exists.*--force"):
        save_bundle(out, meta=META, tensors=TENSORS)
    save_bundle(out, meta={**META, "note": "y"}, tensors=TENSORS, force=True)
    assert read_meta(out)["note"] == "y" and not (out / "report.html").exists()
    (out / "stale.txt").write_text("mine")
    with pytest.raises(BundleError, match="holds files a binclf bundle does not \\(stale.txt\\).*nothing was deleted"):
        save_bundle(out, meta=META, tensors=TENSORS, force=True)
    assert (out / "stale.txt").read_text() == "mine" and read_meta(out)["note"] == "y"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("interrupt", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_leaves_nothing(tmp_path, monkeypatch, interrupt):
    """A save that fails half-way (an extra file's write, an interrupt) leaves no bundle and no temporary dir;
    with force, the old bundle survives untouched."""
    old = save_bundle(tmp_path / "old", meta=META, tensors=TENSORS)
    before = {p.name: p.read_bytes() for p in old.iterdir()}

    def failing_fsync(fd):
        raise interrupt

    monkeypatch.setattr(bundle_module.os, "fsync", failing_fsync)
    for target, force in ((tmp_path / "new", False), (old, True)):
        with pytest.raises(type(interrupt)):
            save_bundle(target, meta=META, tensors=TENSORS, force=force, extra_files={"report.html": b"<html>"})
    assert not (tmp_path / "new").exists()
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert leftovers(tmp_path) == []


def test_edited_weights_are_refused(tmp_path):
    """Weights that do not match the recorded sha256 are refused with a clear message."""
    out = save_bundle(tmp_path / "b", meta=META, tensors=TENSORS)
    raw = bytearray((out / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 1
    (out / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="does not match the sha256.*modified"):
        load_bundle(out)
    with pytest.raises(BundleError, match="sha256"):
        read_meta(out)


def test_format_version_and_not_a_bundle(tmp_path):
    """Unknown format versions, plain directories, files, missing paths and bad JSON are BundleErrors."""
    out = save_bundle(tmp_path / "b", meta=META, tensors=TENSORS)
    meta = json.loads((out / META_FILE).read_text())
    meta["format_version"] = 2
    (out / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format version 2, this binclf reads version 1"):
        load_bundle(out)
    (tmp_path / "plain").mkdir()
    with pytest.raises(BundleError, match="not a binclf bundle: it has no bundle.json"):
        load_bundle(tmp_path / "plain")
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        load_bundle(tmp_path / "file")
    shutil.copytree(out, tmp_path / "broken")
    (tmp_path / "broken" / META_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path / "broken")


def test_read_meta_does_not_need_torch_tensors(tmp_path):
    """read_meta verifies without parsing the weights (the fast path of the command line)."""
    out = save_bundle(tmp_path / "b", meta=META, tensors=TENSORS)
    meta, tensors = load_bundle(out)
    assert read_meta(out) == meta and torch.equal(tensors["m0.weight"], TENSORS["m0.weight"])


def test_check_columns():
    """Duplicates, all missing features, and absent --keep columns are errors; extras give a notice."""
    schema = Schema(columns=(ColumnSpec("a", "numeric", "float64"), ColumnSpec("b", "categorical", "str"),
                             ColumnSpec("c", "numeric", "float64")))
    with pytest.raises(DataError, match="f.csv: duplicate column names 'a'"):
        check_columns(schema, "f.csv", ["a", "a", "b", "c"])
    with pytest.raises(DataError, match="2 feature column\\(s\\) .* missing: 'a', 'c'"):
        check_columns(schema, "f.csv", ["b"])
    with pytest.raises(DataError, match="--keep column\\(s\\) 'id'"):
        check_columns(schema, "f.csv", ["a", "b", "c"], keep=["id"])
    notices: list[str] = []
    check_columns(schema, "f.csv", ["y", "a", "b", "c", "id", "z"], target="y", keep=["id"], notices=notices)
    assert notices == ["ignoring 1 column(s) the model does not use: z"]
