"""Tests for binclf.decide.metrics: agreement with scikit-learn, degenerate data, the bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from binclf.errors import ConfigError, DataError
from binclf.decide.metrics import (
    BINARY_METRIC_KEYS,
    BOOTSTRAP_METRICS,
    _weighted_metrics,
    binary_metrics,
    bootstrap_intervals,
    expected_calibration_error,
    reliability_curve,
)


def _calibrated(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proba = rng.uniform(size=n)
    y = (rng.uniform(size=n) < proba).astype(int)
    return y, proba


def test_binary_metrics_keys_and_values_match_sklearn():
    """Every key is present, in order, and equals the scikit-learn metric."""
    y, proba = _calibrated(500)
    m = binary_metrics(y, proba, threshold=0.4)
    assert tuple(m) == BINARY_METRIC_KEYS
    pred = (proba >= 0.4).astype(int)
    assert m["n"] == 500 and m["positives"] == int(y.sum())
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, proba))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, proba))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert [m[k] for k in ("tn", "fp", "fn", "tp")] == list(skm.confusion_matrix(y, pred).ravel())
    assert m["threshold"] == 0.4


def _sklearn_metrics(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """binary_metrics as it was: scikit-learn's metrics on the rows, one by one."""
    pred = (proba >= threshold).astype(int)
    both = 0 < y.sum() < len(y)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mcc = skm.matthews_corrcoef(y, pred)
        balanced = skm.balanced_accuracy_score(y, pred)
    return {
        "n": len(y), "positives": int(y.sum()),
        "roc_auc": skm.roc_auc_score(y, proba) if both else np.nan,
        "pr_auc": skm.average_precision_score(y, proba) if both else np.nan,
        "log_loss": skm.log_loss(y, proba, labels=[0, 1]),
        "brier": skm.brier_score_loss(y, proba, pos_label=1),
        "ece": expected_calibration_error(y, proba, strategy="uniform"),
        "ece_mass": expected_calibration_error(y, proba, strategy="quantile"),
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "mcc": mcc, "balanced_accuracy": balanced,
        "tn": tn, "fp": fp, "fn": fn, "tp": tp, "threshold": threshold,
    }


@pytest.mark.parametrize("chunk", [None, 7])
def test_binary_metrics_equal_sklearn_with_ties_one_class_and_any_threshold(monkeypatch, chunk):
    """The own sorted-score metrics equal scikit-learn's to 1e-12: heavy ties, scores at 0 and 1,
    a single class, thresholds outside [0, 1]; chunk 7 makes every pass cross chunk borders."""
    import binclf.decide.metrics as mod

    if chunk is not None:
        monkeypatch.setattr(mod, "_CHUNK", chunk)
    rng = np.random.default_rng(3)
    for case in range(60):
        n = int(rng.integers(1, 400))
        proba = [
            rng.uniform(size=n),
            rng.integers(0, 5, n) / 4.0,  # five values, 0 and 1 among them
            np.round(rng.uniform(size=n), 2),
            rng.beta(0.3, 0.3, n),
            np.full(n, 0.3),
        ][case % 5]
        y = (rng.uniform(size=n) < rng.uniform()).astype(int)
        if case % 7 == 0:
            y[:] = case % 2
        threshold = float(rng.choice([0.5, 0.0, 1.0, 1.5, -0.1, proba[0]]))
        got, want = binary_metrics(y, proba, threshold=threshold), _sklearn_metrics(y, proba, threshold)
        assert list(got) == list(BINARY_METRIC_KEYS)
        for key in BINARY_METRIC_KEYS:
            assert isinstance(got[key], int if key in ("n", "positives", "tn", "fp", "fn", "tp") else float), key
            if np.isnan(want[key]):
                assert np.isnan(got[key]), (case, key)
            else:
                assert got[key] == pytest.approx(want[key], rel=0, abs=1e-12), (case, key)


def test_binary_metrics_single_class_gives_nan_auc_without_warnings():
    """One class in y: roc_auc and pr_auc are nan, nothing raises or warns."""
    proba = np.linspace(0.05, 0.95, 20)
    for label in (0, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m = binary_metrics(np.full(20, label), proba)
        assert np.isnan(m["roc_auc"]) and np.isnan(m["pr_auc"])
        assert np.isfinite(m["log_loss"]) and np.isfinite(m["mcc"])


def test_binary_metrics_nothing_predicted_positive_is_quiet():
    """No row above the threshold: precision and f1 are 0, with no warning spam."""
    y, proba = _calibrated(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics(y, proba * 0.5, threshold=0.9)
    assert m["precision"] == 0.0 and m["f1"] == 0.0 and m["tp"] == 0 and m["fp"] == 0


def test_binary_metrics_accepts_float_and_bool_labels():
    """y as floats 0.0/1.0 or bools gives the same numbers as ints."""
    y, proba = _calibrated(50)
    ref = binary_metrics(y, proba)
    assert binary_metrics(y.astype(float), proba) == ref
    assert binary_metrics(y.astype(bool), proba) == ref


@pytest.mark.parametrize(
    ("y", "proba", "match"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], r"only 0 and 1, found 2 at row 2"),
        ([0, 1, 1], [0.1, 1.2, 0.3], r"probabilities in \[0, 1\].*pass sigmoid"),
        ([0, 1, 1], [0.1, 0.2], r"y has 3 rows but proba has 2"),
        ([0, 1, 1], [0.1, np.nan, 0.3], r"must be finite, found nan at row 1"),
        ([[0], [1]], [0.1, 0.2], r"shape \(2, 1\); flatten"),
    ],
)
def test_bad_inputs_raise_data_error_saying_what_and_where(y, proba, match):
    """Validation at the boundary names the problem, the row and the fix."""
    with pytest.raises(DataError, match=match):
        binary_metrics(y, proba)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn_calibration_curve(strategy):
    """Bins and per-bin rates are scikit-learn's; counts sum to n."""
    y, proba = _calibrated(1000, seed=1)
    mean_pred, frac_pos, counts = reliability_curve(y, proba, n_bins=10, strategy=strategy)
    ref_true, ref_pred = calibration_curve(y, proba, n_bins=10, strategy=strategy)
    np.testing.assert_allclose(mean_pred, ref_pred)
    np.testing.assert_allclose(frac_pos, ref_true)
    assert counts.sum() == 1000


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_is_the_count_weighted_reliability_gap(strategy):
    """ECE = sum_b n_b |frac_b - mean_b| / n, on the same bins as the curve."""
    y, proba = _calibrated(800, seed=2)
    mean_pred, frac_pos, counts = reliability_curve(y, proba, n_bins=15, strategy=strategy)
    expected = float((counts * np.abs(frac_pos - mean_pred)).sum() / counts.sum())
    assert expected_calibration_error(y, proba, strategy=strategy) == pytest.approx(expected)


def test_ece_separates_calibrated_from_miscalibrated():
    """Calibrated probabilities have small ECE; squashed ones a large ECE."""
    y, proba = _calibrated(20000, seed=3)
    assert expected_calibration_error(y, proba) < 0.02
    assert expected_calibration_error(y, 0.5 + 0.2 * (proba - 0.5)) > 0.1
    with pytest.raises(ConfigError, match="strategy must be one of"):
        expected_calibration_error(y, proba, strategy="equal")


def test_weighted_metrics_equal_sklearn_on_explicit_resamples():
    """The vectorised bootstrap metrics equal scikit-learn on the repeated rows (ties included)."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 80)
    proba = np.round(rng.uniform(size=80), 1)  # many ties
    idx = rng.integers(0, 80, size=(3, 80))
    counts = np.stack([np.bincount(i, minlength=80) for i in idx]).astype(float)
    got = _weighted_metrics(y, proba, counts, threshold=0.5, names=BOOTSTRAP_METRICS)
    for b in range(3):
        yb, pb = y[idx[b]], proba[idx[b]]
        pred = (pb >= 0.5).astype(int)
        ref = {
            "roc_auc": skm.roc_auc_score(yb, pb),
            "pr_auc": skm.average_precision_score(yb, pb),
            "log_loss": skm.log_loss(yb, pb, labels=[0, 1]),
            "brier": skm.brier_score_loss(yb, pb),
            "ece": expected_calibration_error(yb, pb),
            "accuracy": skm.accuracy_score(yb, pred),
            "precision": skm.precision_score(yb, pred, zero_division=0),
            "recall": skm.recall_score(yb, pred),
            "f1": skm.f1_score(yb, pred),
            "mcc": skm.matthews_corrcoef(yb, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(yb, pred),
        }
        for name, value in ref.items():
            assert got[name][b] == pytest.approx(value, abs=1e-12), name


def test_bootstrap_intervals_are_reproducible_and_cover_the_estimate():
    """Same seed, same intervals; each interval holds the point estimate and is narrow at n=5000."""
    y, proba = _calibrated(5000, seed=5)
    ci = bootstrap_intervals(y, proba, n_boot=200, seed=1)
    assert ci == bootstrap_intervals(y, proba, n_boot=200, seed=1)
    point = binary_metrics(y, proba)
    assert set(ci) == {"roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1", "precision", "recall"}
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi, name
        assert hi - lo < 0.1


def test_bootstrap_intervals_single_class_bad_arguments_and_no_bootstrap():
    """Undefined metrics give (nan, nan); bad settings raise ConfigError; n_boot=0 gives {}."""
    ci = bootstrap_intervals(np.ones(30), np.linspace(0, 1, 30), metrics=("roc_auc", "brier"), n_boot=20)
    assert all(np.isnan(v) for v in ci["roc_auc"]) and np.isfinite(ci["brier"]).all()
    y, proba = _calibrated(50)
    with pytest.raises(ConfigError, match=r"unknown bootstrap metric\(s\) \['auc'\]; choose from"):
        bootstrap_intervals(y, proba, metrics=("auc",))
    with pytest.raises(ConfigError, match="confidence must be in"):
        bootstrap_intervals(y, proba, confidence=95)
    assert bootstrap_intervals(y, proba, n_boot=0) == {}


@pytest.mark.parametrize("n", [1, 7, 65_536, 65_537, 200_003])
def test_block_wise_log_losses_are_the_whole_array_numbers(n):
    """log_loss, logit_log_loss and logit work a block at a time or in place: the numbers are
    those of the plain expressions, bit for bit."""
    from binclf.numeric import log_loss, logit, logit_log_loss, row_log_loss, sigmoid

    rng = np.random.default_rng(n)
    z = rng.normal(0, 6, n)
    z[::11] = 60.0
    p = sigmoid(z)
    for y in ((rng.random(n) < 0.4).astype(np.int8), (rng.random(n) < 0.4).astype(np.float32)):
        for eps in (1e-12, np.finfo(float).eps):
            whole = float(row_log_loss(y, p, eps=eps).mean())
            assert log_loss(y, p, eps=eps) == whole
            assert logit_log_loss(y, z, eps=eps) == whole
    for eps in (0.0, 1e-12):
        q = np.clip(p, eps, 1 - eps)
        with np.errstate(divide="ignore"):
            np.testing.assert_array_equal(logit(p, eps=eps), np.log(q) - np.log1p(-q))
    assert logit(0.25) == np.log(0.25) - np.log1p(-0.25)


def _block_draws(y, n_boot, block, seed):
    """The bootstrap's resamples as first drawn: per block, one (block, rows) draw of each class, positives first."""
    rng = np.random.default_rng(seed)
    want = np.zeros((n_boot, len(y)), dtype=np.int64)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        for label in (1, 0):
            rows = np.flatnonzero(y == label)
            if len(rows):
                draws = rng.integers(0, len(rows), size=(size, len(rows)))
                for b in range(size):
                    want[start + b, rows] = np.bincount(draws[b], minlength=len(rows))
    return want


@pytest.mark.parametrize("prevalence", [0.2, 0.0, 1.0])
@pytest.mark.parametrize(("n_boot", "at_once"), [(6, 1), (7, 3), (10, 10), (5, 16)])
def test_resamples_are_those_of_one_draw_per_block(monkeypatch, prevalence, n_boot, at_once):
    """A few resamples at a time, without the block's array, yet the same resamples for a
    seed as drawing each block's positives then negatives at once (blocks of 3 here)."""
    from binclf.decide import metrics

    monkeypatch.setattr(metrics, "_BLOCK", 3 * 301)
    y = (np.random.default_rng(1).random(301) < prevalence).astype(np.float32)
    got, seen = np.zeros((n_boot, len(y)), dtype=np.int64), []
    for first, counts in metrics._resamples(y, n_boot=n_boot, rng=np.random.default_rng(11), at_once=at_once, dtype=np.int32):
        assert counts.shape[0] <= at_once and counts.dtype == np.int32
        got[first : first + len(counts)] = counts
        seen.extend(range(first, first + len(counts)))
        assert (counts[:, y == 1].sum(axis=1) == int(y.sum())).all()  # the class counts kept
    assert seen == list(range(n_boot))
    np.testing.assert_array_equal(got, _block_draws(y, n_boot, 3, 11))
