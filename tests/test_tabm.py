"""TabM: k weight-sharing MLP members, one logit per row."""

import numpy as np
import torch

from binclf.nn.models import TabM, build_model
from binclf.train.trainer import TrainConfig, Trainer


def test_eval_returns_the_logit_of_the_mean_member_probability():
    model = build_model("tabm", seed=0, n_features=5, hidden=[16, 8], k=4).eval()
    x = torch.randn(7, 5)
    z = model(x)
    assert z.shape == (7,)
    p = torch.sigmoid(model.member_logits(x)).mean(1)
    torch.testing.assert_close(torch.sigmoid(z), p, rtol=1e-5, atol=1e-6)


def test_training_gives_each_row_one_member():
    model = build_model("tabm", seed=0, n_features=5, hidden=[16], dropout=0.0, k=3)
    x = torch.randn(6, 5)
    model.train()
    z = model(x)
    members = model.member_logits(x)
    torch.testing.assert_close(z, members[torch.arange(6), torch.arange(6) % 3])


def test_config_rebuilds_the_same_model():
    model = build_model("tabm", seed=1, n_features=4, hidden=[8, 8], dropout=0.2, k=5)
    clone = build_model("tabm", **model.config())
    clone.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(3, 4)
    torch.testing.assert_close(model.eval()(x), clone.eval()(x))


def test_trains_with_the_trainer(bananas_splits):
    (X, y), (Xv, yv), _ = bananas_splits
    model = TabM(2, hidden=[32, 32], k=4)
    trainer = Trainer(TrainConfig(lr=3e-3, max_epochs=10, patience=5, verbose=False)).fit(
        model, X, y, X_valid=Xv, y_valid=yv
    )
    assert trainer.best_valid_loss_ < trainer.history_[0]["valid_loss"] < 0.69
    assert np.isfinite(trainer.history_[-1]["train_loss"])
