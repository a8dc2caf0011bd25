"""End to end through ``train_table``: prior correction after imbalance handling, the
precision objective on unseen rows, and every objective's policy surviving the bundle.

The models are logistic (fast, and the synthetic log-odds are nearly linear, so
the prior correction is close to exact); what is checked is the pipeline's
correction and calibration, not the network.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from binclf.decide.metrics import binary_metrics, bootstrap_intervals, expected_calibration_error
from binclf.train.pipeline import TrainOptions, train_table
from binclf.predictor import Predictor
from binclf.decide.thresholds import ThresholdPolicy


def synthetic(n: int, *, prior: float, seed: int, scale: float = 1.0) -> pd.DataFrame:
    """``n`` rows, 5 standard-normal features, a mostly linear log-odds (times ``scale``: the
    separation) with the intercept set for ``prior``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    signal = scale * (1.4 * X[:, 0] - 1.0 * X[:, 1] + 0.7 * X[:, 2] + 0.3 * X[:, 3] * X[:, 4])
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if (1 / (1 + np.exp(-(signal + mid)))).mean() > prior else (mid, hi)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    df["y"] = (rng.random(n) < 1 / (1 + np.exp(-(signal + lo)))).astype(np.int64)
    return df


def _train(df: pd.DataFrame, **kw) -> object:
    options = dict(target="y", model="logistic", max_epochs=15, n_boot=0, seed=0)
    options.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return train_table(df, TrainOptions(**options))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return np.log(p) - np.log1p(-p)


def _eces(result) -> dict[str, float]:
    """Test-set ECE of: the model's own output (before the prior correction), after it, after calibration."""
    c = result.curves
    shift = result.predictor.members[0].logit_shift
    uncorrected = 1 / (1 + np.exp(-(_logit(c["p_test_raw"]) + shift)))
    y = c["y_test"]
    return {
        "uncorrected": expected_calibration_error(y, uncorrected),
        "corrected": expected_calibration_error(y, c["p_test_raw"]),
        "calibrated": expected_calibration_error(y, c["p_test"]),
    }


# --------------------------------------------------------------------------- prior correction


@pytest.fixture(scope="module")
def rare():
    """20,000 rows with 2% positives (test split: 4,000 rows, ~80 positives) and the unweighted baseline."""
    df = synthetic(20_000, prior=0.02, seed=1)
    return df, _eces(_train(df))


@pytest.mark.parametrize(
    "treatment",
    [
        {"pos_weight": "balanced"},
        pytest.param({"sampler": "balanced"}, marks=pytest.mark.slow),
    ],
    ids=["pos_weight", "sampler"],
)
def test_prior_correction_keeps_probabilities_calibrated(rare, treatment):
    """pos_weight / a balanced sampler move the logits by a constant; undoing it restores calibration.

    Observed (seed 0, logistic, 15 epochs): unweighted ECE 0.004-0.013; weighted
    model output ECE ~0.37-0.39 before the correction and ~0.004-0.006 after it.
    """
    df, base = rare
    result = _train(df, **treatment)
    ece = _eces(result)
    # Without the correction the probabilities would be far off: the check below can fail.
    assert ece["uncorrected"] > 0.15, ece
    # The correction alone, before any calibrator, brings them back ...
    assert ece["corrected"] <= max(0.02, 1.5 * base["corrected"]), (ece, base)
    # ... and the reported (calibrated) probabilities are as good as without weighting.
    assert ece["calibrated"] <= max(0.02, 1.5 * base["calibrated"]), (ece, base)


@pytest.mark.slow
def test_focal_loss_is_fixed_by_calibration(rare):
    """Focal loss bends probabilities towards 0.5 non-uniformly (no constant shift undoes it);
    the calibrator, fitted on validation rows, does."""
    df, base = rare
    result = _train(df, loss="focal")
    ece = _eces(result)
    assert result.predictor.members[0].logit_shift == 0.0
    assert result.calibration_info["method"] != "none"
    assert ece["calibrated"] <= max(0.02, 1.5 * base["calibrated"]), (ece, base)
    assert ece["calibrated"] < ece["corrected"], ece


# --------------------------------------------------------------------------- precision objective


def test_precision_objective_holds_on_the_test_split():
    """``precision:0.9`` is met on validation; on the unseen test rows the precision at that
    threshold lies inside the bootstrap interval of validation precision at the same threshold,
    and inside the test interval reported at training."""
    df = synthetic(10_000, prior=0.3, seed=2, scale=2.0)
    result = _train(df, objective="precision:0.9", n_boot=200)
    policy = result.predictor.threshold
    assert policy.fallback is None
    assert result.valid_metrics["precision"] >= 0.9
    c = result.curves
    lo, hi = bootstrap_intervals(c["y_valid"], c["p_valid"], threshold=policy.threshold, metrics=("precision",),
                                 n_boot=500, seed=0)["precision"]
    test_precision = result.metrics["precision"]
    assert lo <= test_precision <= hi, (lo, test_precision, hi)
    t_lo, t_hi = result.intervals["precision"]
    assert t_lo <= test_precision <= t_hi
    # Enough positive decisions on the test rows for the comparison to mean something.
    assert result.metrics["tp"] + result.metrics["fp"] >= 100


# --------------------------------------------------------------------------- every objective


OBJECTIVES = ["f1", "fbeta:2", "youden", "balanced_accuracy", "accuracy", "mcc", "cost:1,5",
              "precision:0.9", "recall:0.9", "fpr:0.1"]


@pytest.fixture(scope="module")
def small(data_dir):
    return pd.read_csv(data_dir / "biopsy.csv")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_round_trips_through_the_bundle(small, objective, tmp_path):
    abstain = 0.95 if objective == "f1" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = train_table(small, TrainOptions(target="class", model="logistic", max_epochs=3, n_boot=20,
                                                 objective=objective, abstain_precision=abstain))
    policy = result.predictor.threshold
    assert isinstance(policy, ThresholdPolicy) and policy.objective == objective
    assert policy.threshold_ci is not None and policy.value_ci is not None
    if objective.startswith("cost"):
        assert policy.analytic_threshold == pytest.approx(1 / 6)
    assert (policy.abstain is not None) == (abstain is not None)
    # The reported test metrics are at the policy's threshold.
    c = result.curves
    assert result.metrics == binary_metrics(c["y_test"], c["p_test"], threshold=policy.threshold)

    result.predictor.save(tmp_path / "model")
    loaded = Predictor.load(tmp_path / "model")
    assert loaded.threshold == policy
    assert loaded.threshold.to_dict() == policy.to_dict()
    np.testing.assert_array_equal(loaded.predict(small), result.predictor.predict(small))
