"""binclf.nn.models: single-logit outputs, no final activation, prior-initialised bias."""

import math

import pytest
import torch
from torch import nn

from binclf.nn.models import MLP, LogisticModel, build_model, init_output_bias


@pytest.mark.parametrize("model", [LogisticModel(7), MLP(7), MLP(7, hidden=(16,), dropout=0.0, batchnorm=False)])
def test_models_return_n_logits_that_can_be_negative(model):
    model.eval()
    with torch.no_grad():  # LogisticModel starts at zero weights; spread them out
        model.output.weight.normal_(0, 1)
    z = model(torch.randn(64, 7) * 3)
    assert z.shape == (64,)
    assert (z < 0).any() or (z > 1).any(), "outputs look like probabilities"


def test_mlp_blocks_are_linear_batchnorm_relu_dropout_and_the_output_has_no_activation():
    m = MLP(5, hidden=(8, 4), dropout=0.2)
    kinds = [type(layer) for layer in m.body]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout] * 2
    assert isinstance(m.output, nn.Linear) and m.output.out_features == 1
    assert list(m.children())[-1] is m.output


def test_init_output_bias_sets_logit_of_prior():
    m = MLP(3)
    init_output_bias(m, 0.02)
    assert m.output.bias.item() == pytest.approx(math.log(0.02 / 0.98), rel=1e-6)
    with pytest.raises(ValueError, match=r"prior must be in \(0, 1\)"):
        init_output_bias(m, 1.0)


def test_build_model_by_name_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("mlp", seed=7, n_features=4)
    after = torch.rand(1)
    b = build_model("mlp", seed=7, n_features=4)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    clone = build_model("mlp", seed=0, **a.config())  # the config a bundle stores rebuilds the same network
    clone.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(5, 4)
    torch.testing.assert_close(clone.eval()(x), a.eval()(x))
    with pytest.raises(ValueError, match="unknown model 'tree'"):
        build_model("tree", n_features=2)
