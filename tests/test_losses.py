"""binclf.nn.losses: module wrappers, pos_weight='balanced' resolution, torch conventions."""

import pytest
import torch

from binclf.errors import ConfigError
from binclf.nn.losses import BCEWithLogitsLoss, FocalLoss, HingeLoss, build_loss, resolve_pos_weight


def test_balanced_pos_weight_is_neg_over_pos_from_training_labels():
    y = torch.tensor([0.0] * 9 + [1.0] * 3)
    assert resolve_pos_weight("balanced", y) == pytest.approx(3.0)
    loss = BCEWithLogitsLoss(pos_weight="balanced").fit(y)
    z = torch.randn(12)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))(z, y)
    assert torch.allclose(loss(z, y), ref)


def test_balanced_pos_weight_must_be_fitted_before_use():
    loss = FocalLoss(pos_weight="balanced")
    with pytest.raises(ConfigError, match=r"call loss.fit\(y_train\) first"):
        loss(torch.zeros(3), torch.zeros(3))


def test_bad_pos_weight_values_are_rejected():
    with pytest.raises(ConfigError, match="positive number or 'balanced'"):
        resolve_pos_weight("equal", torch.zeros(3))
    with pytest.raises(ConfigError, match="positive finite number"):
        resolve_pos_weight(-1.0)
    with pytest.raises(ConfigError, match="both classes"):
        resolve_pos_weight("balanced", torch.ones(5))


def test_bce_module_matches_torch_module_with_weight_and_reduction():
    g = torch.Generator().manual_seed(0)
    z, y, w = torch.randn(50, generator=g), (torch.rand(50, generator=g) > 0.5).float(), torch.rand(50, generator=g)
    for reduction in ("mean", "sum", "none"):
        ours = BCEWithLogitsLoss(weight=w, pos_weight=2.0, reduction=reduction)(z, y)
        ref = torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=torch.tensor(2.0), reduction=reduction)(z, y)
        assert torch.allclose(ours, ref)


def test_sample_weight_multiplies_per_row():
    z = torch.tensor([0.5, -0.5])
    y = torch.tensor([1.0, 0.0])
    per_row = BCEWithLogitsLoss(reduction="none")(z, y)
    weighted = BCEWithLogitsLoss(reduction="none")(z, y, torch.tensor([2.0, 0.0]))
    assert torch.allclose(weighted, per_row * torch.tensor([2.0, 0.0]))


def test_focal_and_hinge_modules_wrap_the_functions():
    z, y = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([1.0, 0.0, 1.0])
    from binclf.nn import functional as BF

    assert torch.allclose(FocalLoss(alpha=None, gamma=1.0)(z, y), BF.focal_loss(z, y, alpha=None, gamma=1.0))
    assert torch.allclose(HingeLoss(margin=2.0)(z, y), BF.hinge_loss(z, y, margin=2.0))


def test_build_loss_by_name_and_unknown_name():
    assert isinstance(build_loss("focal", focal_gamma=1.0), FocalLoss)
    with pytest.raises(ConfigError, match="unknown loss 'mse'"):
        build_loss("mse")
