"""binclf.train.trainer: learning, early stopping, reproducibility, imbalance, divergence errors."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from binclf.errors import ConfigError, TrainingError
from binclf.nn.models import MLP, LogisticModel
from binclf.train.trainer import TrainConfig, Trainer, predict_logits


def _linear_data(n=2000, d=5, prior=0.5, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    z = signal * (X @ rng.normal(size=d)) + math.log(prior / (1 - prior))
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return X, y


def test_mlp_beats_logistic_on_the_curved_bananas_boundary(bananas_splits):
    (Xtr, ytr), (Xva, yva), (Xte, yte) = bananas_splits
    cfg = TrainConfig(max_epochs=60, patience=8, verbose=False)
    aucs = {}
    for name, model in {"logistic": LogisticModel(2), "mlp": MLP(2)}.items():
        Trainer(cfg).fit(model, Xtr, ytr, X_valid=Xva, y_valid=yva)
        aucs[name] = roc_auc_score(yte, predict_logits(model, Xte).numpy())
    assert aucs["mlp"] > 0.93
    assert aucs["mlp"] > aucs["logistic"] + 0.2, aucs


def test_same_seed_gives_identical_history_whatever_the_global_rng():
    X, y = _linear_data(n=600)
    histories = []
    for global_seed in (1, 2):
        model = LogisticModel(5)  # deterministic (zero) initial weights
        torch.manual_seed(global_seed)  # the trainer must not depend on the global RNG
        t = Trainer(TrainConfig(max_epochs=5, seed=3, verbose=False)).fit(
            model, X, y, X_valid=X[:100], y_valid=y[:100]
        )
        histories.append([(h["train_loss"], h["valid_loss"]) for h in t.history_])
    assert histories[0] == histories[1]


def test_reproducible_end_to_end_from_model_seed(bananas_splits):
    from binclf.nn.models import build_model

    (Xtr, ytr), (Xva, yva), _ = bananas_splits
    outs = []
    for _ in range(2):
        m = build_model("mlp", seed=1, n_features=2, hidden=(32,))
        Trainer(TrainConfig(max_epochs=3, seed=1, verbose=False)).fit(m, Xtr, ytr, X_valid=Xva, y_valid=yva)
        outs.append(predict_logits(m, Xva))
    assert torch.equal(outs[0], outs[1])


def test_early_stopping_restores_the_best_epoch_weights():
    X, y = _linear_data(n=300, d=40, seed=1)  # few rows, many features: overfits
    Xv, yv = _linear_data(n=300, d=40, seed=2)
    model = MLP(40, hidden=(256, 256), dropout=0.0)
    t = Trainer(TrainConfig(max_epochs=200, patience=5, lr=3e-3, verbose=False)).fit(
        model, X, y, X_valid=Xv, y_valid=yv
    )
    assert len(t.history_) < 200
    assert len(t.history_) == t.best_epoch_ + 5
    best = min(h["valid_loss"] for h in t.history_)
    assert t.best_valid_loss_ == best
    restored = torch.nn.functional.binary_cross_entropy_with_logits(predict_logits(model, Xv), torch.from_numpy(yv))
    assert restored.item() == pytest.approx(best, rel=1e-5)


def test_history_records_train_and_valid_loss_per_epoch_and_loss_goes_down():
    X, y = _linear_data()
    t = Trainer(TrainConfig(max_epochs=6, patience=100, verbose=False)).fit(
        LogisticModel(5), X, y, X_valid=X[:500], y_valid=y[:500]
    )
    assert [h["epoch"] for h in t.history_] == list(range(1, 7))
    assert all({"train_loss", "valid_loss", "lr", "seconds"} <= set(h) for h in t.history_)
    assert t.history_[-1]["train_loss"] < t.history_[0]["train_loss"]


def test_output_bias_starts_at_logit_prior_so_initial_loss_is_prior_entropy():
    X, y = _linear_data(n=4000, prior=0.03, seed=4)
    model = LogisticModel(5)  # zero-initialised weights: output = bias
    prior = y.mean()
    Trainer(TrainConfig(max_epochs=1, lr=1e-9, verbose=False)).fit(model, X, y)
    assert model.output.bias.item() == pytest.approx(math.log(prior / (1 - prior)), abs=1e-4)


def test_pos_weight_balanced_shifts_logits_by_log_pos_weight():
    X, y = _linear_data(n=6000, prior=0.1, seed=5)
    plain, weighted = LogisticModel(5), LogisticModel(5)
    cfg = dict(max_epochs=40, lr=1e-2, verbose=False)
    Trainer(TrainConfig(**cfg)).fit(plain, X, y)
    t = Trainer(TrainConfig(pos_weight="balanced", **cfg)).fit(weighted, X, y)
    expected = (1 - y.mean()) / y.mean()
    assert t.pos_weight_ == pytest.approx(expected)
    assert t.logit_shift_ == pytest.approx(math.log(expected))
    # After undoing the shift the weighted model predicts the same prior as the plain one.
    mean_plain = torch.sigmoid(predict_logits(plain, X)).mean().item()
    mean_corrected = torch.sigmoid(predict_logits(weighted, X) - t.logit_shift_).mean().item()
    assert mean_corrected == pytest.approx(mean_plain, abs=0.02)


@pytest.mark.parametrize("kwargs", [{"sampler": "balanced"}, {"loss": "focal"}, {"loss": "hinge"}])
def test_imbalance_options_train_a_useful_model(kwargs):
    X, y = _linear_data(n=3000, prior=0.05, seed=6, signal=3.0)
    model = MLP(5, hidden=(32,))
    Trainer(TrainConfig(max_epochs=30, lr=3e-3, verbose=False, **kwargs)).fit(model, X, y)
    assert roc_auc_score(y, predict_logits(model, X).numpy()) > 0.9


class _LogOfFeature(torch.nn.Module):
    """A model that yields NaN on a row whose first feature is below -10 (log of a negative)."""

    def __init__(self):
        super().__init__()
        self.output = torch.nn.Linear(5, 1)

    def forward(self, x):
        return self.output(x).squeeze(-1) + torch.log(x[:, 0] + 10)


def test_nan_loss_stops_with_epoch_and_step_and_a_fix():
    X, y = _linear_data(n=1000)
    X[:, 0] = np.abs(X[:, 0])
    X[-1, 0] = -20.0  # one bad row; without shuffling it lands in the last step
    trainer = Trainer(TrainConfig(max_epochs=3, batch_size=100, verbose=False))
    trainer._permutation = lambda n, gen: torch.arange(n)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, step 10: lower the learning rate"):
        trainer.fit(_LogOfFeature(), X, y)


def test_inputs_are_validated_at_the_boundary():
    X, y = _linear_data(n=50)
    with pytest.raises(ConfigError, match="only 0 and 1"):
        Trainer(TrainConfig(verbose=False)).fit(LogisticModel(5), X, y * 2 - 1)
    X[3, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN or inf"):
        Trainer(TrainConfig(verbose=False)).fit(LogisticModel(5), X, y)
    with pytest.raises(ConfigError, match="lr must be a positive number, got 0; batch_size must be >= 1"):
        TrainConfig(lr=0, batch_size=0)


@pytest.mark.parametrize("name", ["mlp", "ple_mlp"])
def test_rows_train_on_the_rows_in_place_as_on_their_copy(name):
    """fit(rows=, valid_rows=) reads the rows of one matrix: the same weights and history as on copies."""
    from binclf.nn.models import build_model

    X, y = _linear_data(n=3000, d=4, prior=0.3, seed=7)
    rng = np.random.default_rng(0)
    fit_rows, held = np.sort(rng.permutation(3000)[:2000]), np.sort(rng.permutation(3000)[:900])
    extra = {"n_numeric": 4, "bins": 8} if name == "ple_mlp" else {}
    models, histories = [], []
    for in_place in (False, True):
        model = build_model(name, seed=2, n_features=4, hidden=[16], **extra)
        cfg = TrainConfig(max_epochs=3, batch_size=128, seed=5, eval_batch_size=256, verbose=False)
        if in_place:
            t = Trainer(cfg).fit(model, X, y, rows=fit_rows, X_valid=X, y_valid=y, valid_rows=held)
        else:
            t = Trainer(cfg).fit(model, X[fit_rows], y[fit_rows], X_valid=X[held], y_valid=y[held])
        models.append(model)
        histories.append([(h["train_loss"], h["valid_loss"]) for h in t.history_])
    assert histories[0] == histories[1]
    for (k, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert torch.equal(a, b), k


def test_rows_outside_the_matrix_are_refused():
    X, y = _linear_data(n=50)
    with pytest.raises(ConfigError, match=r"rows must hold row positions in \[0, 50\), got 0 .. 50"):
        Trainer(TrainConfig(verbose=False)).fit(LogisticModel(5), X, y, rows=np.arange(51))
    with pytest.raises(ConfigError, match="valid_rows must be a 1-D array of integer row positions"):
        Trainer(TrainConfig(verbose=False)).fit(LogisticModel(5), X, y, X_valid=X, y_valid=y, valid_rows=y)


def test_config_round_trips_through_json():
    import json

    cfg = TrainConfig(lr=0.01, pos_weight="balanced", lr_schedule="cosine")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_callback_can_stop_training():
    X, y = _linear_data(n=200)
    seen = []
    t = Trainer(TrainConfig(max_epochs=50, verbose=False), callbacks=[lambda tr, log: seen.append(log) or len(seen) == 3])
    t.fit(LogisticModel(5), X, y)
    assert len(t.history_) == 3


def test_cosine_schedule_anneals_the_learning_rate():
    X, y = _linear_data(n=1000)
    t = Trainer(TrainConfig(max_epochs=10, lr_schedule="cosine", verbose=False)).fit(LogisticModel(5), X, y)
    lrs = [h["lr"] for h in t.history_]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-5


def test_plateau_schedule_lowers_the_learning_rate_when_validation_stalls():
    X, y = _linear_data(n=1000)
    Xv, yv = _linear_data(n=200, seed=9)
    t = Trainer(TrainConfig(max_epochs=60, patience=30, lr=5e-2, lr_schedule="plateau", verbose=False)).fit(
        LogisticModel(5), X, y, X_valid=Xv, y_valid=yv
    )
    assert t.history_[-1]["lr"] < 5e-2


def test_step_losses_are_kept_in_blocks_in_step_order():
    """An epoch's losses go into preallocated blocks (no 0-d tensor kept per step); a
    step that could not run repeats the last loss, as before."""
    from binclf.train.trainer import _StepLosses

    losses = _StepLosses()
    assert losses.tensor().shape == (0,)
    losses.repeat_last(torch.device("cpu"))
    values = torch.rand(2500)
    for i, v in enumerate(values):
        assert losses.append(v.clone()) == i + 1
    losses.repeat_last(torch.device("cpu"))
    want = torch.cat([torch.zeros(1), values, values[-1:]])
    torch.testing.assert_close(losses.tensor(), want, rtol=0, atol=0)
