"""``binclf export``: the ONNX graph run by onnxruntime equals ``Predictor`` (probabilities and labels).

Parity is measured against the Predictor fed the same float32 numbers the graph
receives, so the comparison is of the graph, not of the input type.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from binclf import Predictor, read_table
from binclf.decide.calibration import (
    BetaCalibrator,
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
)
from binclf.export import ExportError, build_onnx, export_onnx
from binclf.export.graph import THRESHOLD_SLACK
from binclf.predictor import Member
from binclf.train.pipeline import TrainOptions, train_table

DATA = Path(__file__).parent / "data"
FIXTURES = Path(__file__).parent / "fixtures"
CALIBRATORS = {
    "none": IdentityCalibrator,
    "platt": PlattCalibrator,
    "temperature": TemperatureCalibrator,
    "isotonic": IsotonicCalibrator,
    "beta": BetaCalibrator,
}
MODELS = ("logistic", "mlp", "ple_mlp", "tabm", "auto", "mix")
TOL = 1e-5


def _training_table() -> pd.DataFrame:
    """oj.csv with missing numbers and categories, and an integer-coded categorical column."""
    df = pd.read_csv(DATA / "oj.csv")
    rng = np.random.default_rng(0)
    for col in ("PriceCH", "LoyalCH"):
        df.loc[rng.random(len(df)) < 0.05, col] = np.nan
    df["Store7"] = df["Store7"].astype(object)
    df.loc[rng.random(len(df)) < 0.05, "Store7"] = None
    return df


def _scoring_table(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` rows drawn from ``df``, with NaN everywhere, unseen categories and other spellings."""
    rng = np.random.default_rng(1)
    out = df.drop(columns=["Purchase"]).sample(n, replace=True, random_state=1).reset_index(drop=True)
    for col in ("PriceCH", "DiscMM", "WeekofPurchase"):
        out.loc[rng.random(n) < 0.1, col] = np.nan  # DiscMM / WeekofPurchase had no missing in training
    out["Store7"] = out["Store7"].astype(object)
    out.loc[rng.random(n) < 0.1, "Store7"] = None
    out.loc[rng.random(n) < 0.1, "Store7"] = "Maybe"  # unseen
    out["StoreID"] = out["StoreID"].astype(object)
    out.loc[rng.random(n) < 0.1, "StoreID"] = 99  # unseen code
    out.loc[rng.random(n) < 0.1, "StoreID"] = None
    return out


def _feeds(predictor: Predictor, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The graph's inputs: float32 numbers (NaN missing), categories as CSV text ("" missing)."""
    feeds = {}
    for st in predictor.preprocessor.numeric_:
        feeds[st["name"]] = pd.to_numeric(df[st["name"]], errors="coerce").to_numpy(np.float32)
    for st in predictor.preprocessor.categorical_:
        feeds[st["name"]] = np.array(["" if pd.isna(v) else str(v) for v in df[st["name"]]], dtype=object)
    return feeds


def _as_float32(predictor: Predictor, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its numbers rounded to float32 (what the graph is given)."""
    df = df.copy()
    for st in predictor.preprocessor.numeric_:
        df[st["name"]] = pd.to_numeric(df[st["name"]], errors="coerce").astype(np.float32).astype(np.float64)
    return df


def _session(predictor: Predictor) -> ort.InferenceSession:
    return ort.InferenceSession(build_onnx(predictor).SerializeToString(), providers=["CPUExecutionProvider"])


def _compare(predictor: Predictor, df: pd.DataFrame, session=None) -> tuple[float, float, int]:
    """``(max |dp| over all rows, max |dp| over the rows checked at 1e-5, label mismatches)``.

    Labels may differ only for rows on the threshold itself (float rounding puts them on
    either side); every other row must agree.
    """
    session = session or _session(predictor)
    proba, label = session.run(["probability", "label"], _feeds(predictor, df))
    assert proba.dtype == np.float32 and proba.shape == (len(df),)
    df32 = _as_float32(predictor, df)
    z = predictor.uncalibrated_logits(predictor.transform(df32))
    want = predictor.calibrator.predict_proba(z)
    want_label = predictor.predict(df32).astype(str)
    diff = np.abs(proba.astype(np.float64) - want)
    checked = np.ones(len(df), bool)
    if predictor.calibrator.name == "isotonic":
        # Isotonic maps are near-step functions (sklearn puts knots 1e-6 apart around a jump),
        # so the ~1e-7 float32 differences between two runtimes' logits can move a row across
        # a step. The map is monotone: the graph must land between its values at z -+ 1e-6|z|,
        # and rows away from a step are held to 1e-5.
        delta = 1e-6 * np.maximum(1.0, np.abs(z))
        lo = predictor.calibrator.predict_proba(z - delta)
        hi = predictor.calibrator.predict_proba(z + delta)
        assert ((proba >= lo - TOL) & (proba <= hi + TOL)).all()
        checked = (hi - lo) <= TOL
    edges = [predictor.effective_threshold()]
    if predictor.threshold is not None and predictor.threshold.abstain is not None:
        edges = [predictor.threshold.abstain["low"], predictor.threshold.abstain["high"]]
    near = ~checked
    for t in edges:
        near |= np.abs(want - t) <= 2 * THRESHOLD_SLACK
    wrong = int(((label.astype(str) != want_label) & ~near).sum())
    return float(diff.max()), float(diff[checked].max(initial=0.0)), wrong


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _training_table()


@pytest.fixture(scope="module")
def scoring(table) -> pd.DataFrame:
    return _scoring_table(table, 10_000)


@pytest.fixture(scope="module")
def trained(table) -> dict[str, Predictor]:
    """One tiny-trained predictor per model kind (calibration "none")."""
    out = {}
    for model in ("logistic", "mlp", "ple_mlp", "tabm", "auto"):
        # ple_mlp and tabm members come from the cross-fitted model (--model auto) without its linear member.
        kind = {"ple_mlp": {"model": "auto", "neural_member": "ple_mlp", "linear_member": False},
                "tabm": {"model": "auto", "neural_member": "tabm", "linear_member": False}}.get(model, {"model": model})
        options = TrainOptions(
            target="Purchase", categorical=("StoreID",), calibration="none", max_epochs=3,
            n_boot=20, folds=2, hidden=(16, 8), **kind,
        )
        out[model] = train_table(table, options).predictor
        if model != "auto":
            assert {m.kind for m in out[model].members} == {model}
    # Every kind in one blend (the same table and options give the same preprocessing).
    base = out["mlp"]
    members = [replace(out[k].members[0], weight=w) for k, w in
               (("ple_mlp", 0.4), ("tabm", 0.3), ("mlp", 0.2), ("logistic", 0.1))]
    out["mix"] = Predictor(schema=base.schema, target=base.target, preprocessor=base.preprocessor,
                           members=members, calibrator=base.calibrator, threshold=base.threshold)
    return out


def _with_calibrator(predictor: Predictor, method: str, df: pd.DataFrame) -> Predictor:
    """``predictor`` with a ``method`` calibrator fitted on ``df``'s rows (labels from ``Purchase``)."""
    y = predictor.labels_to_01(df["Purchase"])
    z = predictor.uncalibrated_logits(predictor.transform(df))
    calibrator = CALIBRATORS[method]().fit(z, y)
    return Predictor(
        schema=predictor.schema, target=predictor.target, preprocessor=predictor.preprocessor,
        members=predictor.members, calibrator=calibrator, threshold=predictor.threshold, info=predictor.info,
    )


@pytest.mark.parametrize("model", MODELS)
def test_every_model_matches_the_predictor_on_10000_rows_with_nan_and_unseen_categories(trained, scoring, model):
    diff, _, wrong = _compare(trained[model], scoring)
    print(f"{model}: max |dp| = {diff:.2e}")
    assert diff <= TOL
    assert wrong == 0


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
@pytest.mark.parametrize("model", ["mlp", "auto"])
def test_every_calibrator_matches_the_predictor(trained, table, scoring, model, method):
    predictor = _with_calibrator(trained[model], method, table)
    diff, checked, wrong = _compare(predictor, scoring)
    print(f"{model}+{method}: max |dp| = {diff:.2e} (off isotonic steps: {checked:.2e})")
    assert checked <= TOL
    assert wrong == 0


def test_batch_of_one_row_and_a_single_session_for_every_batch_size(trained, scoring):
    predictor = trained["auto"]
    session = _session(predictor)
    for n in (1, 2, 10_000):
        diff, _, wrong = _compare(predictor, scoring.head(n), session)
        assert diff <= TOL and wrong == 0, n


def test_category_spellings_read_as_canonical_labels(trained, table):
    """Integer codes as "3", "3.0" and " 3 "; true/false in any case; NA spellings are missing."""
    predictor = trained["logistic"]
    row = table.drop(columns=["Purchase"]).iloc[[0]]
    session = _session(predictor)
    base = session.run(["probability"], _feeds(predictor, row))[0]
    feeds = _feeds(predictor, row)
    code = feeds["StoreID"][0]
    for spelling in (f"{code}.0", f" {code} ", f"+{code}"):
        feeds["StoreID"] = np.array([spelling], dtype=object)
        assert session.run(["probability"], feeds)[0] == pytest.approx(base, abs=0), spelling
    missing = row.copy()
    missing["Store7"] = None
    want = session.run(["probability"], _feeds(predictor, missing))[0]
    feeds = _feeds(predictor, row)
    for spelling in ("", "NA", "null"):
        feeds["Store7"] = np.array([spelling], dtype=object)
        assert session.run(["probability"], feeds)[0] == pytest.approx(want, abs=0), spelling


def test_graph_signature_is_in_the_metadata_and_the_batch_is_dynamic(trained):
    predictor = trained["mlp"]
    model = build_onnx(predictor)
    sig = json.loads({p.key: p.value for p in model.metadata_props}["binclf.signature"])
    assert [d["name"] for d in sig["inputs"]] == predictor.schema.names
    types = {d["name"]: d["type"] for d in sig["inputs"]}
    assert types["StoreID"] == "string" and types["PriceCH"] == "float32"
    assert [(o.name, o.type.tensor_type.shape.dim[0].dim_param) for o in model.graph.output] == [
        ("probability", "N"), ("label", "N")
    ]
    assert sig["outputs"][1]["values"] == [str(predictor.target.negative), str(predictor.target.positive)]


@pytest.mark.parametrize(
    "name, data", [("biopsy-auto", "biopsy"), ("titanic-mlp", "titanic"), ("participation-logistic", "participation")]
)
def test_committed_bundles_export_and_match_their_expected_predictions(tmp_path, name, data):
    bundle = FIXTURES / f"bundle-v1-{name}"
    predictor = Predictor.load(bundle)
    export_onnx(bundle, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    df = read_table(DATA / f"{data}.csv")
    proba, label = session.run(["probability", "label"], _feeds(predictor, df))
    _, checked, wrong = _compare(predictor, df, session)  # the graph against the Predictor on float32 inputs
    assert checked <= TOL and wrong == 0
    want = pd.read_csv(FIXTURES / f"bundle-v1-{name}.expected.csv")
    diff = np.abs(proba - want["probability"].to_numpy())
    if name == "participation-logistic":
        # Against the file (float64 inputs): isotonic knots 2e-4 apart (slope ~590 in
        # probability) turn the float32 rounding of the inputs and logits (~1e-7) into ~4e-5.
        assert diff.max() <= 1e-4
        assert (label.astype(str) != want["prediction"].astype(str)).sum() <= 2
    else:
        assert diff.max() <= TOL
        assert label.astype(str).tolist() == want["prediction"].astype(str).tolist()


def test_a_member_without_an_onnx_form_is_a_one_line_error(trained):
    import torch

    class Custom(torch.nn.Module):
        def forward(self, x):
            return x.sum(-1)

    p = trained["logistic"]
    bad = Predictor(schema=p.schema, target=p.target, preprocessor=p.preprocessor,
                    members=[Member("custom", {}, Custom())], calibrator=p.calibrator, threshold=p.threshold)
    with pytest.raises(ExportError, match=r"member 0 \(custom\): model kind 'custom' \(Custom\) has no ONNX export"):
        build_onnx(bad)


def test_command_line_export_prints_the_signature_and_matches_predict(tmp_path):
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src
    run = lambda *a: subprocess.run([sys.executable, "-m", "binclf", *map(str, a)],
                                    capture_output=True, text=True, env=env, timeout=300, check=False)
    r = run("train", DATA / "participation.csv", "-t", "lfp", "--model", "mlp", "--calibration", "beta",
            "-o", tmp_path / "b", "--no-report", "--max-epochs", "3")
    assert r.returncode == 0, r.stderr
    r = run("export", tmp_path / "b", "-o", tmp_path / "m.onnx")
    assert r.returncode == 0, r.stderr
    assert "input  foreign: string [N] (missing: empty string)" in r.stdout
    assert "input  age: float32 [N] (missing: NaN)" in r.stdout
    assert "output label: string [N] (one of 'no', 'yes'" in r.stdout
    r = run("predict", tmp_path / "b", DATA / "participation.csv", "-o", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    predictor = Predictor.load(tmp_path / "b")
    df = read_table(DATA / "participation.csv")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    proba, label = session.run(["probability", "label"], _feeds(predictor, df))
    want = pd.read_csv(tmp_path / "p.csv")
    assert np.abs(proba - want["probability"].to_numpy()).max() <= TOL
    assert label.astype(str).tolist() == want["prediction"].astype(str).tolist()
    r = run("export", tmp_path / "missing-bundle", "-o", tmp_path / "x.onnx")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_boolean_levels_match_any_case_and_text_levels_match_exactly():
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"flag": rng.choice(["True", "False"], n), "kind": rng.choice(["a", "b"], n),
                       "x": rng.normal(size=n)})
    df["y"] = np.where((df["flag"] == "True") ^ (rng.random(n) < 0.2), "yes", "no")
    options = TrainOptions(target="y", model="logistic", categorical=("flag",), calibration="none", max_epochs=3,
                           n_boot=20)
    predictor = train_table(df, options).predictor
    assert sorted(predictor.preprocessor.categorical_[0]["levels"]) == ["False", "True"]
    session = _session(predictor)
    rows = pd.DataFrame({"flag": ["True", "true", " TRUE ", "False", "false", "maybe"],
                         "kind": ["a", "a", "a", "a", "a", "A"], "x": [0.0] * 6})
    got = session.run(["probability"], _feeds(predictor, rows))[0]
    want = predictor.predict_proba(rows)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert got[0] == got[1] == got[2] and got[3] == got[4]


@pytest.mark.parametrize("scaling", ["standard", "quantile"])
def test_other_numeric_scalings_match_the_predictor(table, scoring, scaling):
    options = TrainOptions(target="Purchase", model="logistic", categorical=("StoreID",), calibration="platt",
                           max_epochs=3, n_boot=20, numeric_scaling=scaling)
    predictor = train_table(table, options).predictor
    assert predictor.preprocessor.numeric == scaling
    diff, _, wrong = _compare(predictor, scoring)
    assert diff <= TOL and wrong == 0
