"""binclf.BinaryClassifier: scikit-learn conformance, labels, meta-estimators, errors."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.exceptions import SkipTestWarning
from sklearn.utils.estimator_checks import check_estimator

from binclf import BinaryClassifier

FAST = dict(max_epochs=15, hidden=(32,), random_state=0)

# Checks expected to fail, each with its reason (scikit-learn skips and reports them).
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch stochastic training: weighting a row by 2 and repeating it change the "
        "batches and the number of steps, so the fits agree in expectation, not to 1e-7"
    ),
}


# Checks scikit-learn itself skips here, each with its reason.
EXPECTED_SKIPPED_CHECKS = {
    "check_array_api_input": "needs SCIPY_ARRAY_API=1 and an array-API library; binclf takes NumPy and pandas",
}


def test_passes_scikit_learn_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipTestWarning)  # reported below, with the reason
        results = check_estimator(
            BinaryClassifier(max_epochs=30), expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None
        )
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert failed == []
    assert skipped <= set(EXPECTED_SKIPPED_CHECKS) | set(EXPECTED_FAILED_CHECKS)
    assert sum(r["status"] == "passed" for r in results) > 40


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(scale=0.5, size=n) > 0.5).astype(int)
    return X, y


@pytest.mark.parametrize(
    "labels", [(0, 1), (-1, 1), ("no", "yes"), (False, True), (1, 2)], ids=["01", "pm1", "str", "bool", "12"]
)
def test_any_two_labels_come_back_from_predict(labels):
    X, y01 = _data()
    y = np.array(labels, dtype=object if isinstance(labels[0], str) else None)[y01]
    clf = BinaryClassifier(**FAST).fit(X, y)
    assert list(clf.classes_) == sorted(labels)
    pred = clf.predict(X)
    assert set(pred) <= set(labels)
    assert clf.score(X, y) > 0.8
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(1), 1)
    # decision_function is the logit of classes_[1].
    z = clf.decision_function(X)
    assert np.allclose(1 / (1 + np.exp(-z)), proba[:, 1])
    assert np.all((z > 0) == (pred == clf.classes_[1]))


def test_accepts_dataframes_and_records_feature_names():
    X, y = _data()
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = BinaryClassifier(**FAST).fit(df, y)
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        assert np.allclose(clf.predict_proba(df), clf.predict_proba(X))


def test_learns_a_nonlinear_boundary_better_than_the_logistic_model(bananas_splits):
    (Xtr, ytr), _, (Xte, yte) = bananas_splits
    from sklearn.metrics import roc_auc_score

    mlp = BinaryClassifier(max_epochs=60, random_state=0).fit(Xtr, ytr)
    lin = BinaryClassifier(model="logistic", max_epochs=60, random_state=0).fit(Xtr, ytr)
    auc_mlp = roc_auc_score(yte, mlp.decision_function(Xte))
    auc_lin = roc_auc_score(yte, lin.decision_function(Xte))
    assert auc_mlp > 0.93 and auc_mlp > auc_lin + 0.2


def test_history_and_early_stopping_are_exposed():
    X, y = _data()
    clf = BinaryClassifier(max_epochs=200, patience=3, random_state=0).fit(X, y)
    assert clf.n_epochs_ == len(clf.history_) < 200
    assert "valid_loss" in clf.history_[0]


def test_sample_weight_changes_the_fit():
    X, y = _data()
    w = np.where(y == 1, 10.0, 1.0)
    plain = BinaryClassifier(**FAST).fit(X, y)
    weighted = BinaryClassifier(**FAST).fit(X, y, sample_weight=w)
    assert weighted.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean() + 0.1


def test_works_in_pipeline_gridsearch_cross_val_and_calibration():
    X, y = _data(n=300)
    pipe = make_pipeline(StandardScaler(), BinaryClassifier(**FAST))
    assert cross_val_score(pipe, X, y, cv=3, scoring="roc_auc").mean() > 0.8
    grid = GridSearchCV(BinaryClassifier(**FAST), {"model": ["logistic", "mlp"]}, cv=3, scoring="neg_log_loss")
    grid.fit(X, y)
    # set_params reaches the fit: the two models score differently, and the refit best one predicts.
    scores = grid.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and abs(scores[0] - scores[1]) > 1e-6
    assert grid.predict_proba(X).shape == (300, 2)
    cal = CalibratedClassifierCV(BinaryClassifier(**FAST), cv=3, method="sigmoid").fit(X, y)
    assert cal.predict_proba(X).shape == (300, 2)


def test_rejects_multiclass_single_class_nan_and_mismatched_lengths():
    X, y = _data(n=60)
    with pytest.raises(ValueError, match="Only binary classification is supported: y has 3 classes"):
        BinaryClassifier(**FAST).fit(X, np.arange(60) % 3)
    with pytest.raises(ValueError, match="needs two classes in y, got 1 class"):
        BinaryClassifier(**FAST).fit(X, np.ones(60))
    Xn = X.copy()
    Xn[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        BinaryClassifier(**FAST).fit(Xn, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        BinaryClassifier(**FAST).fit(X, y[:-1])
    clf = BinaryClassifier(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :2])


def test_ple_mlp_estimator_encodes_every_feature_and_learns_a_step():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (2000, 3))
    y = ((X[:, 0] > 0.7) ^ (X[:, 0] < -0.9)).astype(int)
    clf = BinaryClassifier(model="ple_mlp", random_state=0, max_epochs=30).fit(X[:1500], y[:1500])
    assert clf.model_.n_numeric == 3
    p = clf.predict_proba(X[1500:])
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert log_loss(y[1500:], p[:, 1]) < 0.15
