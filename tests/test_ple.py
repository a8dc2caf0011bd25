"""binclf.nn.models.PLEMLP: piecewise-linear encodings of the numbers, then the MLP."""

import numpy as np
import pytest
import torch

from binclf.infer import eval_logits
from binclf.nn.models import PLEMLP, build_model
from binclf.train.trainer import TrainConfig, Trainer


def test_encoding_components_are_how_far_x_went_through_each_quantile_bin():
    m = PLEMLP(3, n_numeric=2, bins=4)
    x = torch.stack([torch.arange(0.0, 101.0), (torch.arange(101) % 2).float(), torch.zeros(101)], 1)
    m.fit_encoding(x)
    # Column 0: edges at its quantiles 0, 25, 50, 75, 100.
    e = m.encode(torch.tensor([[-5.0, 0.0, 7.0], [30.0, 1.0, 7.0], [200.0, 0.0, 7.0]]))
    assert e.shape == (3, 3 + 2 * 4)
    np.testing.assert_allclose(e[:, :3], [[-5, 0, 7], [30, 1, 7], [200, 0, 7]])  # the inputs themselves first
    np.testing.assert_allclose(e[:, 3:7], [[0, 0, 0, 0], [1, 0.2, 0, 0], [1, 1, 1, 1]], atol=1e-6)
    # Column 1 has two values: one bin (0 -> 1), the other three always 0.
    np.testing.assert_allclose(e[:, 7:], [[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_a_step_function_is_learnt_better_with_the_encoding_than_without():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4000, 2, generator=g) * 4 - 2
    y = ((x[:, 0] > 0.7) ^ (x[:, 0] < -0.9)).float()  # steps in x0, x1 is noise
    train, valid = slice(0, 3000), slice(3000, None)
    losses = {}
    for name, extra in (("mlp", {}), ("ple_mlp", {"n_numeric": 2, "bins": 16})):
        model = build_model(name, seed=0, n_features=2, hidden=[32, 16], dropout=0.0, **extra)
        cfg = TrainConfig(max_epochs=15, batch_size=128, lr=3e-3, seed=0, verbose=False)
        Trainer(cfg).fit(model, x[train], y[train])
        model.eval()
        z = eval_logits(model, x[valid])
        losses[name] = float(torch.nn.functional.binary_cross_entropy_with_logits(z, y[valid]))
    assert losses["ple_mlp"] < 0.7 * losses["mlp"], losses


def test_trainer_fits_the_edges_and_eval_logits_agree_with_forward():
    x = torch.randn(600, 5) * torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0])
    y = (x[:, 0] + x[:, 1] / 10 > 0).float()
    m = build_model("ple_mlp", seed=1, n_features=5, n_numeric=3, bins=8)
    Trainer(TrainConfig(max_epochs=3, batch_size=64, verbose=False)).fit(m, x, y, X_valid=x[:100], y_valid=y[:100])
    # Edges follow each column's spread, not the standard-normal default.
    assert m.lo[1, 0] < -10 and -1 < m.lo[2, 0] < 0
    assert not m.training and not m.network.training  # fit leaves the whole model in eval mode
    with torch.inference_mode():
        np.testing.assert_allclose(eval_logits(m, x).numpy(), m(x).numpy(), rtol=1e-5, atol=1e-5)


def test_edges_fitted_on_rows_in_place_are_those_of_their_copy():
    x = torch.randn(500, 4) * torch.tensor([1.0, 5.0, 0.2, 1.0])
    rows = torch.randperm(500, generator=torch.Generator().manual_seed(0))[:300]
    a = PLEMLP(4, n_numeric=3, bins=8).fit_encoding(x[rows])
    b = PLEMLP(4, n_numeric=3, bins=8).fit_encoding(x, rows=rows.numpy())
    assert torch.equal(a.lo, b.lo) and torch.equal(a.inv_width, b.inv_width)
    assert not torch.equal(a.lo, PLEMLP(4, n_numeric=3, bins=8).fit_encoding(x).lo)  # the rows matter


def test_edges_are_saved_with_the_weights_and_the_config_rebuilds_the_model():
    m = build_model("ple_mlp", seed=0, n_features=4, n_numeric=2, bins=4).fit_encoding(torch.randn(50, 4) * 3)
    state = m.state_dict()
    assert "lo" in state and "inv_width" in state
    twin = build_model("ple_mlp", **m.config())
    twin.load_state_dict(state)
    m.eval(), twin.eval()
    x = torch.randn(20, 4)
    torch.testing.assert_close(twin(x), m(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_numeric"):
        PLEMLP(3, n_numeric=4)
    with pytest.raises(ValueError, match="bins"):
        PLEMLP(3, n_numeric=1, bins=0)


def test_a_cross_fitted_bag_shares_one_set_of_edges_and_prediction_finds_the_bins_once():
    """The default model's PLE-MLPs (one per fold) get edges fitted once on all the cross-fit's rows (quantiles
    of the inputs: no label involved), so the predictor evaluates them as one group; a plain fit still fits
    its own edges unless told not to."""
    import pandas as pd

    from binclf.infer import MemberPlan, _PLEGroup
    from binclf.train.pipeline import TrainOptions, train_table

    g = np.random.default_rng(0)
    df = pd.DataFrame({"a": g.normal(size=600), "b": g.exponential(size=600), "c": g.integers(0, 9, 600)})
    df["y"] = (df.a + np.log(df.b) + g.normal(size=600) > 0).astype(int)
    predictor = train_table(df, TrainOptions(target="y", max_epochs=2, n_boot=10)).predictor
    ple = [m.module for m in predictor.members if m.kind == "ple_mlp"]
    assert len(ple) >= 3
    assert all(torch.equal(m.lo, ple[0].lo) and torch.equal(m.inv_width, ple[0].inv_width) for m in ple)
    assert torch.isfinite(ple[0].lo).any() and not torch.equal(ple[0].lo, PLEMLP(3, 3, ple[0].bins).lo)
    plan = MemberPlan([m.module for m in predictor.members])
    assert [len(cols) for cols, part in plan.parts if isinstance(part, _PLEGroup)] == [len(ple)]

    x = torch.randn(300, 4)
    m = build_model("ple_mlp", seed=1, n_features=4, n_numeric=3, bins=8)
    default_lo = m.lo.clone()
    Trainer(TrainConfig(max_epochs=1, batch_size=64, verbose=False)).fit(m, x, (x[:, 0] > 0).float(), fit_encoding=False)
    assert torch.equal(m.lo, default_lo)


def test_fitting_the_edges_leaves_float64_inputs_unchanged():
    """The quantiles are selected in place in a copy of each column, never in the caller's tensor."""
    from binclf.nn.models.ple import PLEMLP

    for cols in (1, 3):  # one column: x[:, 0] is contiguous, the case a view would expose
        x = torch.randn(500, cols, dtype=torch.float64)
        before = x.clone()
        PLEMLP(n_features=cols, n_numeric=cols, bins=4).fit_encoding(x)
        assert torch.equal(x, before)
