"""Bundles written before the restructure (commit 479bb6b) load and predict as they did then.

``tests/fixtures/bundle-v1-*`` were written by ``binclf train`` at that commit, and
``*.expected.csv`` by its ``binclf predict`` on the training table: the bundle
format and the prediction path must keep both valid.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from binclf import Predictor, read_table

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(__file__).parent / "data"
CASES = {
    "biopsy-auto": "biopsy.csv",  # the default cross-fitted ensemble, no calibrator
    "titanic-mlp": "titanic.csv",  # one MLP, Platt calibration, categories only
    "participation-logistic": "participation.csv",  # logistic, isotonic, abstain band, cost objective
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_old_bundle_predicts_as_it_did(name):
    bundle = FIXTURES / f"bundle-v1-{name}"
    want = pd.read_csv(FIXTURES / f"bundle-v1-{name}.expected.csv")
    pred = Predictor.load(bundle)
    got = pred.predict_frame(read_table(DATA / CASES[name]))
    np.testing.assert_allclose(got["probability"].to_numpy(), want["probability"].to_numpy(), rtol=0, atol=1e-6)
    # Labels agree wherever the probability is not within float noise of the threshold: titanic-mlp's
    # threshold is one validation row's probability, and 31 passengers with that same probability
    # come out 2e-8 below it on an AMD EPYC (the expected file was written on another CPU).
    same = got["prediction"].astype(str).to_numpy() == want["prediction"].astype(str).to_numpy()
    near = np.abs(want["probability"].to_numpy() - pred.threshold.threshold) < 1e-6
    assert (same | near).all() and same.mean() > 0.95


def test_old_bundle_through_the_command_line(tmp_path):
    out = tmp_path / "p.csv"
    r = subprocess.run(
        [sys.executable, "-m", "binclf", "predict", FIXTURES / "bundle-v1-biopsy-auto", DATA / "biopsy.csv", "-o", out],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    want = pd.read_csv(FIXTURES / "bundle-v1-biopsy-auto.expected.csv")
    got = pd.read_csv(out)
    np.testing.assert_allclose(got["probability"], want["probability"], rtol=0, atol=1e-6)
    assert (got["prediction"] == want["prediction"]).all()
