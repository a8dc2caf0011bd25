"""Properties of binclf.nn.functional: stability at extreme logits and torch's semantics."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from binclf.nn import functional as BF

DTYPES = [torch.float32, torch.float64]
EXTREME = [-1e4, -1e3, -200.0, -30.0, -1.0, 0.0, 1.0, 30.0, 200.0, 1e3, 1e4]

finite_logits = st.lists(
    st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False), min_size=1, max_size=40
)


def _pair(values, seed=0, dtype=torch.float64):
    z = torch.tensor(values, dtype=dtype)
    y = (torch.rand(len(values), generator=torch.Generator().manual_seed(seed)) < 0.5).to(dtype)
    return z, y


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_logsigmoid_finite_and_symmetric_at_extremes(dtype):
    z = torch.tensor(EXTREME, dtype=dtype)
    p = BF.sigmoid(z)
    assert torch.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert torch.allclose(BF.sigmoid(-z), 1 - p, atol=torch.finfo(dtype).eps)
    ls = BF.log_sigmoid(z)
    assert torch.isfinite(ls).all()
    # log sigmoid(-1e4) is -1e4 exactly, where log(sigmoid(z)) would be -inf.
    assert ls[0].item() == pytest.approx(-1e4)
    assert torch.isinf(torch.log(torch.sigmoid(z[:1].float())))


@pytest.mark.parametrize("dtype", DTYPES)
def test_logit_inverts_sigmoid_and_stays_finite_at_0_and_1(dtype):
    p = torch.tensor([0.0, 1e-30, 0.2, 0.5, 0.9, 1.0], dtype=dtype)
    z = BF.logit(p)
    assert torch.isfinite(z).all()
    assert z[0] < -10 and z[-1] > 10
    mid = torch.tensor([-3.0, 0.0, 2.5], dtype=dtype)
    assert torch.allclose(BF.logit(BF.sigmoid(mid)), mid, atol=1e-5)
    with pytest.raises(ValueError, match="eps must be in"):
        BF.logit(p, eps=0.7)


@settings(max_examples=60, deadline=None)
@given(finite_logits, st.integers(0, 1000))
def test_sigmoid_symmetry_property(values, seed):
    z = torch.tensor(values, dtype=torch.float64)
    assert torch.allclose(BF.sigmoid(-z), 1 - BF.sigmoid(z), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(finite_logits, st.integers(0, 1000))
def test_bce_gradient_is_sigmoid_minus_target_over_n(values, seed):
    z, y = _pair(values, seed)
    z.requires_grad_(True)
    BF.bce_with_logits(z, y).backward()
    expected = (torch.sigmoid(z.detach()) - y) / len(z)
    assert torch.allclose(z.grad, expected, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_torch_with_weight_and_pos_weight(dtype, reduction):
    g = torch.Generator().manual_seed(1)
    z = torch.cat([torch.randn(200, generator=g, dtype=dtype) * 5, torch.tensor(EXTREME, dtype=dtype)])
    y = torch.rand(len(z), generator=g, dtype=dtype)  # soft targets too
    w = torch.rand(len(z), generator=g, dtype=dtype)
    for kwargs in [{}, {"weight": w}, {"pos_weight": torch.tensor(3.0, dtype=dtype)}, {"weight": w, "pos_weight": 0.25}]:
        ours = BF.bce_with_logits(z, y, reduction=reduction, **kwargs)
        pw = kwargs.get("pos_weight")
        if pw is not None and not isinstance(pw, torch.Tensor):
            pw = torch.tensor(pw, dtype=dtype)
        ref = torch.nn.BCEWithLogitsLoss(weight=kwargs.get("weight"), pos_weight=pw, reduction=reduction)(z, y)
        assert torch.allclose(ours, ref, rtol=1e-6, atol=0)


def test_bce_refuses_silent_broadcasting_of_n1_against_n():
    with pytest.raises(ValueError, match=r"same shape.*squeeze"):
        BF.bce_with_logits(torch.zeros(4, 1), torch.zeros(4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss_name", ["bce", "focal", "hinge"])
def test_losses_values_and_gradients_finite_at_extreme_logits(dtype, loss_name):
    z = torch.tensor(EXTREME * 2, dtype=dtype, requires_grad=True)
    y = torch.tensor([0.0] * len(EXTREME) + [1.0] * len(EXTREME), dtype=dtype)
    fn = {
        "bce": lambda: BF.bce_with_logits(z, y, pos_weight=5.0),
        "focal": lambda: BF.focal_loss(z, y, alpha=0.25, gamma=2.0, pos_weight=5.0),
        "hinge": lambda: BF.hinge_loss(z, y),
    }[loss_name]
    loss = fn()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all()


@settings(max_examples=60, deadline=None)
@given(finite_logits, st.integers(0, 1000), st.sampled_from([None, 0.3, 4.0]))
def test_focal_with_gamma0_and_no_alpha_equals_bce(values, seed, pos_weight):
    z, y = _pair(values, seed)
    a = BF.focal_loss(z, y, alpha=None, gamma=0.0, pos_weight=pos_weight)
    b = BF.bce_with_logits(z, y, pos_weight=pos_weight)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_focal_matches_textbook_formula_at_moderate_logits():
    # Reference: torchvision's sigmoid_focal_loss formula written out.
    g = torch.Generator().manual_seed(0)
    z = torch.randn(100, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(100, generator=g) < 0.3).double()
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    ref = (0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2
    assert torch.allclose(BF.focal_loss(z, y, reduction="none"), ref, rtol=1e-9)


def test_focal_pos_weight_scales_only_the_positive_term():
    z = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    base = BF.focal_loss(z, y, reduction="none")
    weighted = BF.focal_loss(z, y, pos_weight=3.0, reduction="none")
    assert torch.allclose(weighted, torch.tensor([3.0, 1.0, 3.0], dtype=torch.float64) * base)


def test_focal_downweights_easy_examples_relative_to_bce():
    z = torch.tensor([6.0, 0.1], dtype=torch.float64)  # an easy and a hard positive
    y = torch.ones(2, dtype=torch.float64)
    ratio = BF.focal_loss(z, y, alpha=None, reduction="none") / BF.bce_with_logits(z, y, reduction="none")
    assert ratio[0] < 1e-4 < ratio[1]


def test_hinge_converts_01_targets_to_signs():
    z = torch.tensor([2.0, 0.5, -0.5, -2.0])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert torch.equal(BF.hinge_loss(z, y, reduction="none"), torch.tensor([0.0, 0.5, 0.5, 0.0]))
    assert torch.equal(BF.hinge_loss(z, y, squared=True, reduction="none"), torch.tensor([0.0, 0.25, 0.25, 0.0]))
    assert BF.hinge_loss(z, 1 - y).item() == pytest.approx((3 + 1.5 + 1.5 + 3) / 4)


def test_reduction_is_validated():
    with pytest.raises(ValueError, match="reduction must be one of"):
        BF.focal_loss(torch.zeros(2), torch.zeros(2), reduction="avg")
