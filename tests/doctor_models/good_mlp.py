"""A correct model: one logit, no activation after the last Linear (BCEWithLogitsLoss)."""

import torch
from torch import nn


class GoodNet(nn.Module):
    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.output = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.body(x)).squeeze(-1)


def make_model() -> nn.Module:
    """A factory with no arguments, for ``good_mlp.py:make_model`` (8 features)."""
    return GoodNet(8)


def make_loss() -> nn.Module:
    return nn.BCEWithLogitsLoss()


def my_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A loss function: returned as is by load_object, never called as a factory."""
    return nn.functional.binary_cross_entropy_with_logits(output, target)
