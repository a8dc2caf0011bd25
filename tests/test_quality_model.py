"""The default model (``--model auto``): cross-fitted neural + linear members, OOF calibration."""

import numpy as np
import pandas as pd
import pytest
import torch

from binclf.errors import ConfigError
from binclf.numeric import log_loss
from binclf.train.crossfit import fit_logistic_path, fold_indices, mixture_weights
from binclf.train.pipeline import TrainOptions, train_table
from binclf.predictor import Predictor


@pytest.fixture(scope="module")
def bananas_small(data_dir):
    return pd.read_csv(data_dir / "bananas.csv").sample(1500, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def linear_tiny():
    """300 rows, 8 numbers, a linear log-odds: the setting where a network overfits."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 8))
    z = X[:, :4] @ np.array([1.0, -0.8, 0.6, 0.4]) - 0.5
    y = rng.random(300) < 1 / (1 + np.exp(-z))
    df = pd.DataFrame(X.round(4), columns=[f"f{i}" for i in range(8)])
    df["y"] = np.where(y, "yes", "no")
    return df


@pytest.fixture(scope="module")
def auto_bananas(bananas_small):
    return train_table(bananas_small, TrainOptions(target="label", n_boot=20))


def test_unknown_model_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"--model must be one of auto, mlp, logistic, got 'tree'"):
        TrainOptions(target="y", model="tree")


def test_auto_beats_the_linear_model_on_a_curved_boundary(bananas_small, auto_bananas):
    linear = train_table(bananas_small, TrainOptions(target="label", model="logistic", n_boot=20))
    assert auto_bananas.metrics["log_loss"] <= linear.metrics["log_loss"]
    assert auto_bananas.predictor.info["crossfit"]["linear_weight"] < 0.5


@pytest.mark.slow
def test_auto_matches_the_textbook_mlp_on_a_tiny_linear_table(linear_tiny):
    # A 60-row test split is noisy (one split's log-loss moves by ~0.04 between
    # seeds, and three splits' mean by more than the margin between machines'
    # float rounding): compare means over eight splits.
    def mean_log_loss(model):
        runs = [train_table(linear_tiny, TrainOptions(target="y", model=model, n_boot=0, seed=s)) for s in range(8)]
        return float(np.mean([r.metrics["log_loss"] for r in runs])), runs

    auto, runs = mean_log_loss("auto")
    mlp, _ = mean_log_loss("mlp")
    assert auto <= mlp + 0.005
    assert np.mean([r.predictor.info["crossfit"]["linear_weight"] for r in runs]) > 0.5


def test_calibration_and_threshold_use_every_train_and_validation_row(auto_bananas):
    split = auto_bananas.summary["split_rows"]
    n_fit = split["train"] + split["valid"]
    assert auto_bananas.calibration_info["n"] == n_fit
    assert len(auto_bananas.curves["y_valid"]) == len(auto_bananas.curves["p_valid"]) == n_fit
    assert len(auto_bananas.curves["y_test"]) == split["test"]
    assert "out-of-fold" in auto_bananas.calibration_info["fitted_on"]


def test_members_are_fold_models_whose_weights_match_the_blend(auto_bananas):
    info = auto_bananas.predictor.info["crossfit"]
    members = auto_bananas.predictor.members
    w = info["linear_weight"]
    assert sum(m.weight for m in members) == pytest.approx(1.0)
    linear = [m for m in members if m.kind == "logistic"]
    assert sum(m.weight for m in linear) == pytest.approx(w)
    assert len(members) == info["folds"] * ((w > 0) + (w < 1))


def test_bundle_round_trip_gives_the_same_probabilities(auto_bananas, bananas_small, tmp_path):
    pred = auto_bananas.predictor
    pred.save(tmp_path / "b")
    loaded = Predictor.load(tmp_path / "b")
    rows = bananas_small.head(200)
    np.testing.assert_allclose(loaded.predict_proba(rows), pred.predict_proba(rows), rtol=1e-6, atol=1e-7)


def test_fold_indices_hold_out_every_row_once():
    y = np.r_[np.zeros(40), np.ones(10)]
    folds = fold_indices(y, k=5, seed=0)
    held = np.sort(np.concatenate([h for _, h in folds]))
    np.testing.assert_array_equal(held, np.arange(50))
    for fit, h in folds:
        assert not set(fit) & set(h) and y[h].sum() == 2  # stratified


@pytest.mark.parametrize(
    "n, rate, k, seed, dtype",
    [(1000, 0.3, 4, 11, float), (997, 0.7, 3, 0, np.float32), (50, 0.1, 5, 3, np.int64), (2401, 0.5, 10, 7, np.float32)],
)
def test_fold_indices_are_scikit_learns_stratified_folds(n, rate, k, seed, dtype):
    """The folds are StratifiedKFold's (its draws, counted instead of sorted), whichever class the first row holds."""
    from sklearn.model_selection import StratifiedKFold

    y = (np.random.default_rng(seed).random(n) < rate).astype(dtype)
    folds = fold_indices(y, k=k, seed=seed)
    expected = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), y))
    assert len(folds) == k
    for (fit, held), (fit_sk, held_sk) in zip(folds, expected):
        np.testing.assert_array_equal(fit, fit_sk)
        np.testing.assert_array_equal(held, held_sk)
    np.testing.assert_array_equal(folds[-1][1], expected[-1][1])


def test_logistic_path_returns_the_winning_cs_members_and_oof_logits():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    y = (rng.random(600) < 1 / (1 + np.exp(-X[:, 0] + 0.5 * X[:, 1]))).astype(float)
    folds = fold_indices(y, k=3, seed=0)
    for bracket in (False, True):
        C, members, oof, losses = fit_logistic_path(X, y, folds, bracket=bracket)
        assert C == float(min(losses, key=losses.get))
        for m, (_, held) in zip(members, folds):
            with torch.no_grad():
                z = m(torch.from_numpy(X[held])).double().numpy()
            np.testing.assert_allclose(oof[held], z, rtol=1e-5, atol=1e-5)


def test_logistic_path_fits_each_fold_as_on_its_rows_alone_without_copying_them():
    """The dense path weighs a fold's held-out rows 0 instead of copying its fit rows: the
    same fit as scikit-learn's on X[fit_rows] (to the solver's tolerance), for Folds and
    for plain (fit, held) pairs alike."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 5)).astype(np.float32)
    y = (rng.random(3000) < 1 / (1 + np.exp(-X[:, 0] + X[:, 2]))).astype(np.float32)
    folds = fold_indices(y, k=3, seed=0)
    for given in (folds, [tuple(f) for f in folds]):
        C, members, oof, _ = fit_logistic_path(X, y, given, Cs=(0.5,))
        for m, (fit, held) in zip(members, folds):
            ref = LogisticRegression(C=0.5, max_iter=500, tol=1e-8).fit(X[fit], y[fit])
            np.testing.assert_allclose(m.output.weight.detach().numpy().ravel(), ref.coef_.ravel(), atol=2e-4)
            np.testing.assert_allclose(oof[held], ref.decision_function(X[held]), atol=2e-4)


def test_mixture_weights_overwriting_p_give_the_same_weights():
    rng = np.random.default_rng(2)
    P = rng.random((5000, 3))
    y = (rng.random(5000) < 0.3).astype(np.float32)
    w = mixture_weights(P, y)
    work = P.copy()
    np.testing.assert_array_equal(mixture_weights(work, y, overwrite=True), w)
    np.testing.assert_array_equal(work, np.clip(np.where(y[:, None] == 1, P, 1 - P), 1e-12, 1.0))


def test_fold_indices_shrink_k_to_the_rarer_class():
    y = np.r_[np.zeros(40), np.ones(3)]
    assert len(fold_indices(y, k=5, seed=0)) == 3


def test_mixture_weights_find_the_better_source_and_the_best_blend():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.5).astype(float)
    good = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.05, 2000), 0.01, 0.99)
    noise = np.full(2000, 0.5)
    assert mixture_weights(np.c_[noise, good], y)[1] > 0.99
    other = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.2, 2000), 0.01, 0.99)
    w = mixture_weights(np.c_[good, other, noise], y)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    best = log_loss(y, np.c_[good, other, noise] @ w)
    # No point of a fine grid over the simplex does better.
    grid = [(a, b, 1 - a - b) for a in np.linspace(0, 1, 41) for b in np.linspace(0, 1, 41) if a + b <= 1 + 1e-9]
    assert best <= min(log_loss(y, np.c_[good, other, noise] @ np.array(g)) for g in grid) + 1e-6


def test_the_default_network_encodes_the_numbers_and_a_table_without_numbers_gets_the_mlp(auto_bananas, data_dir):
    nets = [m for m in auto_bananas.predictor.members if m.kind != "logistic"]
    assert nets and all(m.kind == "ple_mlp" for m in nets)
    assert nets[0].config["n_numeric"] == 2 and nets[0].config["bins"] == 16
    titanic = pd.read_csv(data_dir / "titanic.csv").head(400)  # three categorical columns
    res = train_table(titanic, TrainOptions(target="survived", n_boot=0, max_epochs=3))
    assert {m.kind for m in res.predictor.members} <= {"mlp", "logistic"}


def test_a_wide_numeric_table_gets_fewer_bins_per_column():
    """80 numbers x 16 bins would make a 1,280-wide first layer: the default network encodes them with 6."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 80))
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(80)]).assign(y=(X[:, 0] + rng.normal(size=300) > 0).astype(int))
    res = train_table(df, TrainOptions(target="y", n_boot=0, max_epochs=2, folds=2))
    # The bundle records the network's config (its members may all lose to the linear one here).
    config = res.predictor.info["crossfit"]["neural_configs"]["ple_mlp"]
    assert config["n_numeric"] == 80 and config["bins"] == 6


def test_epoch_budget_shrinks_for_wide_inputs_only(auto_bananas):
    from binclf.train.pipeline import _epoch_cap, _flops_per_row

    # A small table keeps its epochs (the cap a trained bundle records) ...
    assert auto_bananas.predictor.info["crossfit"]["train_config"]["max_epochs"] >= 10
    # ... as does a medium one; 15k rows of wide one-hot inputs get few, and never fewer than 3
    # (computed, not trained: training that table takes minutes).
    def cap(n_rows, n_features, **extra):
        config = {"n_features": n_features, "hidden": [128, 64], **extra}
        return _epoch_cap(3, n_rows, 512, _flops_per_row("ple_mlp" if extra else "mlp", config), 200)

    assert cap(14_800, 50, n_numeric=20, bins=16) >= 10
    assert cap(14_800, 3208) == cap(1_000_000, 3208) == 3
