"""Tests for binclf.decide.calibration: each method fixes what it should, stays finite, round-trips."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import log_loss

from binclf.decide.calibration import (
    CALIBRATION_METHODS,
    BetaCalibrator,
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    calibrator_from_dict,
    fit_beta,
    fit_isotonic,
    fit_platt,
    fit_temperature,
    select_calibrator,
)
from binclf.errors import ConfigError, DataError, NotFittedError

CLASSES = [IdentityCalibrator, TemperatureCalibrator, PlattCalibrator, BetaCalibrator, IsotonicCalibrator]


def _data(n: int, seed: int = 0, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """True logits z ~ N(0, scale^2) and labels drawn from sigmoid(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, n)
    y = (rng.uniform(size=n) < expit(z)).astype(int)
    return z, y


def _loss(y, p) -> float:
    return log_loss(y, p, labels=[0, 1])


def test_platt_recovers_an_affine_distortion():
    """Observed logits (z - 1) / 3 of true z: Platt finds a ~ 3, b ~ 1 and lowers the loss."""
    z, y = _data(20000)
    observed = (z - 1.0) / 3.0
    params = fit_platt(observed, y)
    assert params["a"] == pytest.approx(3.0, rel=0.1)
    assert params["b"] == pytest.approx(1.0, abs=0.1)
    cal = PlattCalibrator().fit(observed, y)
    assert cal.params_ == params
    assert _loss(y, cal.predict_proba(observed)) < _loss(y, expit(observed)) - 0.05


def test_temperature_recovers_overconfidence():
    """Logits 2.5 times too large: T ~ 2.5."""
    z, y = _data(20000, seed=1)
    assert fit_temperature(2.5 * z, y)["T"] == pytest.approx(2.5, rel=0.08)
    cal = TemperatureCalibrator().fit(2.5 * z, y)
    assert _loss(y, cal.predict_proba(2.5 * z)) < _loss(y, expit(2.5 * z))


def test_beta_recovers_its_own_family_and_keeps_a_b_nonnegative():
    """Labels from a beta map of sigmoid(s): the fit lands near (a, b, c) = (2, 0.5, 0.3)."""
    rng = np.random.default_rng(2)
    s = rng.normal(0.0, 2.0, 30000)
    log_p, log_q = -np.logaddexp(0, -s), -np.logaddexp(0, s)
    y = (rng.uniform(size=s.size) < expit(2.0 * log_p - 0.5 * log_q + 0.3)).astype(int)
    params = fit_beta(s, y)
    assert params["a"] == pytest.approx(2.0, rel=0.1)
    assert params["b"] == pytest.approx(0.5, abs=0.1)
    assert params["c"] == pytest.approx(0.3, abs=0.15)
    # Anti-correlated logits would need negative slopes: the bounds hold them at 0.
    flipped = fit_beta(-s, y)
    assert flipped["a"] >= 0 and flipped["b"] >= 0


def test_isotonic_fixes_a_step_distortion_that_parametric_maps_cannot():
    """True P(y=1) is a step in the logit; isotonic gets far closer than Platt."""
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 2.0, 5000)
    y = (rng.uniform(size=z.size) < np.where(z < 0.5, 0.1, 0.9)).astype(int)
    iso = IsotonicCalibrator().fit(z, y)
    platt = PlattCalibrator().fit(z, y)
    assert _loss(y, iso.predict_proba(z)) < _loss(y, platt.predict_proba(z)) - 0.02
    assert set(iso.params_) == {"X_thresholds_", "y_thresholds_"}
    assert all(isinstance(v, float) for v in iso.params_["X_thresholds_"])


@pytest.mark.parametrize("cls", CLASSES)
def test_round_trip_through_json_gives_identical_predictions(cls):
    """to_dict -> JSON -> calibrator_from_dict predicts bit-for-bit the same."""
    z, y = _data(2000, seed=4)
    cal = cls().fit(0.5 * z + 0.3, y)
    d = json.loads(json.dumps(cal.to_dict()))
    assert d["method"] == cls.name
    again = calibrator_from_dict(d)
    assert type(again) is cls and again.params_ == cal.params_
    grid = np.linspace(-30, 30, 301)
    np.testing.assert_array_equal(again.predict_proba(grid), cal.predict_proba(grid))


@pytest.mark.parametrize("cls", CLASSES)
def test_extreme_logits_stay_finite_and_strictly_inside_0_1(cls):
    """Logits up to |1e4|, in fit and predict: finite parameters, probabilities in (0, 1)."""
    rng = np.random.default_rng(5)
    z = np.r_[rng.normal(0, 1e4, 200), 1e4, -1e4, 0.0]
    y = (z > 0).astype(int)
    y[:20] = 1 - y[:20]  # some noise so the problem is not separable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cal = cls().fit(z, y)
    assert all(np.isfinite(v).all() for v in cal.params_.values())
    p = cal.predict_proba(np.r_[z, -1e4, 1e4])
    assert np.isfinite(p).all() and (p > 0).all() and (p < 1).all()


@pytest.mark.parametrize("cls", CLASSES)
def test_tiny_separable_set_gives_finite_parameters(cls):
    """20 perfectly separable rows: the fit stays finite (no runaway slope)."""
    z = np.linspace(-2, 2, 20)
    cal = cls().fit(z, (z > 0).astype(int))
    assert all(np.isfinite(v).all() for v in cal.params_.values())
    assert np.isfinite(cal.predict_proba(z)).all()


@pytest.mark.parametrize("cls", CLASSES[1:])
def test_single_class_warns_and_falls_back_to_identity(cls):
    """All labels 1: a clear warning and the plain sigmoid, never NaN."""
    z = np.linspace(-3, 3, 20)
    with pytest.warns(UserWarning, match=r"all 20 labels are 1.*falling back to the identity"):
        cal = cls().fit(z, np.ones(20))
    p = cal.predict_proba(z)
    assert not np.isnan(p).any()
    if cls is not IsotonicCalibrator:
        np.testing.assert_allclose(p, expit(z))


def test_unfitted_and_bad_inputs_raise_clear_errors():
    """predict before fit, NaN logits, unknown method in a dict."""
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        PlattCalibrator().predict_proba(np.zeros(3))
    with pytest.raises(DataError, match="logits must be finite, found nan at row 1"):
        PlattCalibrator().fit([0.0, np.nan, 1.0], [0, 1, 1])
    with pytest.raises(ConfigError, match="unknown calibration method 'sigmoid'"):
        calibrator_from_dict({"method": "sigmoid", "params": {}})
    with pytest.raises(ConfigError, match=r"platt calibrator is missing parameter\(s\) \['b'\]"):
        calibrator_from_dict({"method": "platt", "params": {"a": 1.0}})


def test_select_auto_picks_platt_for_an_affine_distortion():
    """(z - 1) / 3: a shift is needed, so not none/temperature; CV losses are reported."""
    z, y = _data(3000, seed=6)
    cal, info = select_calibrator((z - 1.0) / 3.0, y)
    assert info["method"] in ("platt", "beta") and cal.name == info["method"]
    assert set(info["cv_log_loss"]) == set(CALIBRATION_METHODS)
    assert info["log_loss_after"] < info["log_loss_before"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_auto_on_calibrated_data_keeps_it_simple(seed):
    """Already calibrated logits: 'none', or 'temperature' with T close to 1."""
    z, y = _data(3000, seed=20 + seed)
    cal, info = select_calibrator(z, y, seed=seed)
    assert info["method"] in ("none", "temperature")
    if info["method"] == "temperature":
        assert cal.params_["T"] == pytest.approx(1.0, abs=0.1)


def test_select_auto_picks_isotonic_only_with_enough_rows():
    """A step distortion: isotonic wins at n = 4000, is not even tried at n = 500."""
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 2.0, 4000)
    y = (rng.uniform(size=z.size) < np.where(z < 0.5, 0.1, 0.9)).astype(int)
    _, info = select_calibrator(z, y)
    assert info["method"] == "isotonic"
    _, small = select_calibrator(z[:500], y[:500])
    assert small["method"] != "isotonic" and "isotonic" not in small["cv_log_loss"]


def test_select_explicit_method_and_errors():
    """An explicit method is fitted as asked; unknown names and too-small data are handled."""
    z, y = _data(300, seed=8)
    cal, info = select_calibrator(z, y, method="beta")
    assert isinstance(cal, BetaCalibrator) and info["cv_log_loss"] == {}
    with pytest.raises(ConfigError, match=r"unknown calibration method 'spline'; choose one of"):
        select_calibrator(z, y, method="spline")
    with pytest.warns(UserWarning, match="too few to cross-validate"):
        cal, info = select_calibrator(z[:10], np.r_[1, np.zeros(9)])
    assert info["method"] == "none"




def test_isotonic_knots_equal_sklearn_with_ties_and_values_closer_than_its_resolution():
    """fit_isotonic's own sort-and-group gives scikit-learn's IsotonicRegression knots exactly:
    exact ties, saturated logits (p == 1), and runs of distinct probabilities closer than 1e-15,
    which scikit-learn's _make_unique merges into the first value of each run."""
    from sklearn.isotonic import IsotonicRegression

    from binclf.decide.calibration import ISOTONIC_EPS
    from binclf.numeric import sigmoid

    rng = np.random.default_rng(4)
    for case in range(40):
        n = int(rng.integers(2, 3000))
        z = [
            rng.normal(0, 2, n),
            np.round(rng.normal(0, 2, n), 1),  # ties
            rng.normal(30, 8, n),  # p within a few ulps of 1, and exactly 1
            rng.normal(-30, 8, n),  # p down to 1e-20
        ][case % 4]
        if case % 5 == 0:  # chains of consecutive floats just below 1: gaps of ~1e-16
            p_near = 1.0 - np.arange(1, 40) * 2.0**-53
            z[: min(n, 39)] = -np.log(1.0 / p_near[: min(n, 39)] - 1.0)
        y = (rng.uniform(size=n) < sigmoid(z / 3)).astype(int)
        y[:2] = [0, 1]
        iso = IsotonicRegression(y_min=ISOTONIC_EPS, y_max=1.0 - ISOTONIC_EPS, increasing=True, out_of_bounds="clip")
        iso.fit(sigmoid(z), y.astype(float))
        got = fit_isotonic(z, y)
        assert got["X_thresholds_"] == [float(v) for v in iso.X_thresholds_], case
        assert got["y_thresholds_"] == [float(v) for v in iso.y_thresholds_], case
