"""Tests for binclf.decide.thresholds: the fast search equals brute force; policies behave and round-trip."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from binclf.errors import ConfigError
from binclf.decide.thresholds import (
    Objective,
    ThresholdPolicy,
    choose_abstain_band,
    choose_threshold,
    parse_objective,
    threshold_scores,
)

OBJECTIVES = [
    "f1",
    "fbeta:2",
    "fbeta:0.5",
    "youden",
    "balanced_accuracy",
    "accuracy",
    "mcc",
    "cost:1,10",
    "cost:5,1",
    "precision:0.8",
    "recall:0.9",
    "fpr:0.1",
]


def _candidates(proba: np.ndarray) -> np.ndarray:
    """Brute-force candidate list: every distinct value, plus one above the maximum."""
    return np.r_[np.unique(proba), np.nextafter(proba.max(), np.inf)]


def _brute(y: np.ndarray, proba: np.ndarray, text: str, t: float) -> tuple[float, bool, float]:
    """(value, feasible, constrained metric) at threshold t, straight from scikit-learn."""
    pred = (proba >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    name, _, arg = text.partition(":")
    if name == "f1":
        return skm.f1_score(y, pred, zero_division=0), True, 0.0
    if name == "fbeta":
        return skm.fbeta_score(y, pred, beta=float(arg), zero_division=0), True, 0.0
    if name == "balanced_accuracy":
        return skm.balanced_accuracy_score(y, pred), True, 0.0
    if name == "accuracy":
        return skm.accuracy_score(y, pred), True, 0.0
    if name == "mcc":
        return skm.matthews_corrcoef(y, pred), True, 0.0
    return _from_counts(text, tp, fp, fn, tn)


def _from_counts(text: str, tp, fp, fn, tn) -> tuple[float, bool, float]:
    """The same from confusion counts by the textbook formulas (fast, for many examples)."""
    tp, fp, fn, tn = (float(v) for v in (tp, fp, fn, tn))
    div = lambda a, b: a / b if b else 0.0  # noqa: E731
    precision, recall, fpr = div(tp, tp + fp), div(tp, tp + fn), div(fp, fp + tn)
    name, _, arg = text.partition(":")
    if name in ("f1", "fbeta"):
        b2 = float(arg) ** 2 if arg else 1.0
        return div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp), True, 0.0
    if name == "youden":
        return recall - fpr, True, 0.0
    if name == "balanced_accuracy":
        return (recall + div(tn, tn + fp)) / 2, True, 0.0
    if name == "accuracy":
        return (tp + tn) / (tp + fp + fn + tn), True, 0.0
    if name == "mcc":
        den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) ** 0.5
        return div(tp * tn - fp * fn, den), True, 0.0
    if name == "cost":
        c_fp, c_fn = (float(v) for v in arg.split(","))
        return (c_fp * fp + c_fn * fn) / (tp + fp + fn + tn), True, 0.0
    if name == "precision":
        return recall, precision >= float(arg), precision
    if name == "recall":
        return precision, recall >= float(arg), recall
    return recall, fpr <= float(arg), -fpr


def _brute_fast(y: np.ndarray, proba: np.ndarray, text: str, t: float) -> tuple[float, bool, float]:
    pred = proba >= t
    yb = y == 1
    counts = ((pred & yb).sum(), (pred & ~yb).sum(), (~pred & yb).sum(), (~pred & ~yb).sum())
    return _from_counts(text, *counts)


def _small_data(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proba = np.round(rng.uniform(size=n), 2)  # rounding makes ties
    y = (rng.uniform(size=n) < proba).astype(int)
    y[:2] = [0, 1]  # both classes
    return y, proba


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), text=st.sampled_from(OBJECTIVES))
def test_choice_equals_brute_force_over_all_candidates(seed, text):
    """The cumsum search finds the same optimum as trying every candidate with scikit-learn."""
    y, proba = _small_data(seed)
    obj = parse_objective(text)
    sign = 1.0 if obj.greater_is_better else -1.0
    rows = [(t, *_brute_fast(y, proba, text, t)) for t in _candidates(proba)]
    feasible = [r for r in rows if r[2]]
    assume(feasible)  # infeasible objectives have their own test
    best = max(sign * r[1] for r in feasible)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy = choose_threshold(y, proba, text, n_boot=0)
    value, ok, constrained = _brute_fast(y, proba, text, policy.threshold)
    assert policy.threshold in {r[0] for r in rows}
    assert ok and sign * value == pytest.approx(best, abs=1e-12)
    assert policy.value == pytest.approx(value, abs=1e-12)
    # Ties on the objective go to the better constrained metric.
    tied = [r for r in feasible if sign * r[1] >= best - 1e-12]
    assert constrained == pytest.approx(max(r[3] for r in tied), abs=1e-12)


@pytest.mark.parametrize("text", OBJECTIVES)
def test_threshold_scores_match_sklearn_at_every_candidate(text):
    """Every candidate's score and feasibility equal the scikit-learn computation."""
    y, proba = _small_data(0, n=40)
    thresholds, scores, feasible = threshold_scores(y, proba, text)
    np.testing.assert_array_equal(thresholds, _candidates(proba))
    for t, s, f in zip(thresholds, scores, feasible):
        value, ok, _ = _brute(y, proba, text, t)
        assert s == pytest.approx(value, abs=1e-12) and f == ok


def test_cost_threshold_is_near_the_analytic_one_on_calibrated_data():
    """With calibrated probabilities the cost-optimal threshold is close to c_fp / (c_fp + c_fn)."""
    rng = np.random.default_rng(0)
    proba = rng.uniform(size=100_000)
    y = (rng.uniform(size=proba.size) < proba).astype(int)
    policy = choose_threshold(y, proba, "cost:1,4", n_boot=0)
    assert policy.analytic_threshold == pytest.approx(0.2)
    assert policy.threshold == pytest.approx(0.2, abs=0.03)


def test_infeasible_precision_warns_and_falls_back_to_the_highest_precision():
    """precision:0.99 is never reached: a warning, a stated fallback, no crash, no silent 0.5."""
    proba = np.linspace(0.01, 0.99, 50)
    y = np.r_[np.zeros(25), np.tile([1, 0], 12), 0].astype(int)  # the top row is a negative
    with pytest.warns(UserWarning, match=r"precision:0.99 cannot be met.*highest precision is"):
        policy = choose_threshold(y, proba, "precision:0.99", n_boot=20)
    assert policy.fallback is not None and "used instead" in policy.fallback
    thresholds = _candidates(proba)
    precisions = [skm.precision_score(y, proba >= t, zero_division=0) for t in thresholds]
    assert skm.precision_score(y, proba >= policy.threshold) == pytest.approx(max(precisions))
    assert policy.threshold != 0.5


def test_single_class_labels_warn_and_use_half():
    """One class only: a warning and an explicit, recorded fallback to 0.5."""
    with pytest.warns(UserWarning, match="all 10 labels are 0"):
        policy = choose_threshold(np.zeros(10), np.linspace(0, 1, 10), "f1")
    assert policy.threshold == 0.5 and "using 0.5" in policy.fallback


def test_policy_round_trips_through_json_and_is_reproducible():
    """to_dict -> JSON -> from_dict is equal; same seed, same policy; value re-computes exactly."""
    y, proba = _small_data(3, n=400)
    policy = choose_threshold(y, proba, "fbeta:2", n_boot=50, seed=1, abstain_precision=0.8)
    again = ThresholdPolicy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert again == policy
    assert choose_threshold(y, proba, "fbeta:2", n_boot=50, seed=1, abstain_precision=0.8) == policy
    lo, hi = policy.threshold_ci
    assert lo <= hi and policy.value_ci[0] <= policy.value <= policy.value_ci[1]
    pred = ThresholdPolicy(objective="fbeta:2", threshold=policy.threshold, value=0.0).decide(proba)
    assert skm.fbeta_score(y, pred, beta=2) == policy.value
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['colour'\]"):
        ThresholdPolicy.from_dict({**policy.to_dict(), "colour": "red"})


def test_decide_semantics():
    """proba >= threshold is positive; with a band, below low is 0, at or above high 1, else -1."""
    plain = ThresholdPolicy(objective="f1", threshold=0.3, value=0.0)
    np.testing.assert_array_equal(plain.decide([0.1, 0.3, 0.9]), [0, 1, 1])
    band = ThresholdPolicy(
        objective="f1", threshold=0.5, value=0.0, abstain={"low": 0.2, "high": 0.7, "coverage": 0.5}
    )
    np.testing.assert_array_equal(band.decide([0.1, 0.2, 0.5, 0.7, 0.9]), [0, -1, -1, 1, 1])
    assert band.decide([0.5]).dtype == np.int64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abstain_band_is_the_widest_valid_band(seed):
    """Brute force over all (low, high) pairs: same best coverage, both precisions met."""
    y, proba = _small_data(seed, n=80)
    band = choose_abstain_band(y, proba, precision=0.8)
    cands = _candidates(proba)
    best = 0
    for lo in cands:
        for hi in cands[cands >= lo]:
            pos, neg = proba >= hi, proba < lo
            if pos.any() and y[pos].mean() < 0.8 or neg.any() and (1 - y[neg]).mean() < 0.8:
                continue
            best = max(best, int(pos.sum() + neg.sum()))
    assert band["coverage"] == pytest.approx(best / len(y))
    assert band["low"] <= band["high"]
    pos, neg = proba >= band["high"], proba < band["low"]
    assert band["precision_pos"] is None or band["precision_pos"] == pytest.approx(y[pos].mean())
    assert band["precision_pos"] is None or band["precision_pos"] >= 0.8
    assert band["precision_neg"] is None or band["precision_neg"] >= 0.8


@pytest.mark.parametrize(
    "text",
    ["f1", "fbeta:2", "youden", "balanced_accuracy", "accuracy", "mcc", "cost:1,10",
     "precision:0.9", "recall:0.95", "fpr:0.01", "fbeta:0.5", "cost:2.5,1"],
)
def test_parse_objective_round_trips_text_and_dict(text):
    """str(parse_objective(t)) == t, and to_dict/from_dict gives an equal Objective."""
    obj = parse_objective(text)
    assert str(obj) == text
    assert Objective.from_dict(json.loads(json.dumps(obj.to_dict()))) == obj
    assert parse_objective(f"  {text.upper()} ") == obj


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("f2", r"unknown objective 'f2'; valid forms: f1, fbeta:BETA"),
        ("precision:1.5", r"precision target must be in \(0, 1\]"),
        ("precision", r"precision takes 1 number\(s\) after ':'"),
        ("cost:1", r"cost takes 2 number\(s\)"),
        ("f1:3", r"f1 takes no ':' arguments"),
        ("fbeta:x", r"'x' is not a number list"),
        ("cost:0,0", r"costs must be >= 0 and not both 0"),
    ],
)
def test_parse_objective_errors_list_the_valid_forms(text, match):
    """Bad text raises ConfigError, one line, with the reason and the valid forms."""
    with pytest.raises(ConfigError, match=match) as info:
        parse_objective(text)
    assert "valid forms:" in str(info.value) and "\n" not in str(info.value)


def test_choose_threshold_interval_holds_the_chosen_threshold():
    """With 200 bootstrap resamples and a band, the threshold lies inside its own interval."""
    rng = np.random.default_rng(0)
    proba = rng.uniform(size=5000)
    y = (rng.uniform(size=5000) < proba).astype(int)
    policy = choose_threshold(y, proba, "mcc", n_boot=200, abstain_precision=0.9)
    assert policy.threshold_ci[0] <= policy.threshold <= policy.threshold_ci[1]


def test_abstain_band_always_contains_the_objective_threshold():
    """A cost threshold far below the precision band widens the band: no row is decided against the objective."""
    rng = np.random.default_rng(3)
    proba = rng.uniform(size=3000)
    y = (rng.uniform(size=3000) < proba).astype(int)
    policy = choose_threshold(y, proba, "cost:1,20", n_boot=0, abstain_precision=0.9)
    band = policy.abstain
    assert band["low"] <= policy.threshold <= band["high"]
    decided = policy.decide(proba)
    # Every decision outside the band agrees with the cost threshold.
    agree = decided[decided >= 0] == (proba[decided >= 0] >= policy.threshold)
    assert agree.all()
    assert band["coverage"] == pytest.approx((decided >= 0).mean())


@pytest.mark.parametrize("chunk", [3, 1 << 16])
def test_chunked_search_equals_the_whole_array_search(monkeypatch, chunk):
    """The chunked search (millions of rows) gives the whole-array search's threshold, value, fallback
    and bootstrap intervals, exactly: ties, infeasible constraints, chunks of 3 candidates."""
    import binclf.decide.thresholds as mod

    monkeypatch.setattr(mod, "_CHUNK", chunk)
    rng = np.random.default_rng(11)
    for case in range(12):
        n = int(rng.integers(2, 400))
        proba = [rng.uniform(size=n), rng.integers(0, 6, n) / 5.0, np.round(rng.uniform(size=n), 2)][case % 3]
        y = (rng.uniform(size=n) < (proba if case % 2 else 0.5)).astype(int)
        y[:2] = [0, 1]
        for text in [*OBJECTIVES, "precision:0.999", "fpr:0.0001"]:
            obj = parse_objective(text)
            at_once = mod._choose_at_once(obj, y, proba, n_boot=5, confidence=0.9, seed=case)
            chunked = mod._choose_chunked(obj, y, proba, n_boot=5, confidence=0.9, seed=case)
            assert chunked == at_once, (case, text)


def test_large_input_thresholds_are_unchanged():
    """A fixed example above the chunked search's size: the thresholds and intervals it gave before."""
    rng = np.random.default_rng(0)
    n = 200_000
    proba = np.round(rng.uniform(size=n), 4)  # ties
    y = (rng.uniform(size=n) < proba).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = {t: choose_threshold(y, proba, t, n_boot=3, seed=1).to_dict() for t in ("f1", "precision:0.9", "precision:0.99999")}
    assert got == EXPECTED_LARGE


# choose_threshold's results before the chunked search (commit 673bb2b), for test_large_input_thresholds_are_unchanged.
EXPECTED_LARGE = {'f1': {'objective': 'f1', 'threshold': 0.3775, 'value': 0.7611831066366784, 'threshold_ci': [0.37752, 0.37809], 'value_ci': [0.759315501684466, 0.7605327171947383], 'analytic_threshold': None, 'abstain': None, 'fallback': None, 'confidence': 0.95}, 'precision:0.9': {'objective': 'precision:0.9', 'threshold': 0.8053, 'value': 0.3484682658419768, 'threshold_ci': [0.80361, 0.80627], 'value_ci': [0.34612171538160313, 0.3509865151165243], 'analytic_threshold': None, 'abstain': None, 'fallback': None, 'confidence': 0.95}, 'precision:0.99999': {'objective': 'precision:0.99999', 'threshold': 0.9984, 'value': 0.0034540580161256315, 'threshold_ci': [0.9984, 0.9984], 'value_ci': [0.003050415189822578, 0.0038325986766138184], 'analytic_threshold': None, 'abstain': None, 'fallback': None, 'confidence': 0.95}}
