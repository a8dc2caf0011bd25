"""Logistic regression as a torch module: one linear layer, one logit."""

from __future__ import annotations

from torch import Tensor, nn

from binclf.nn.models.base import register

__all__ = ["LogisticModel"]


@register("logistic")
class LogisticModel(nn.Module):
    """``z = x @ w + b``: ``(n, n_features) -> (n,)`` logits."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = int(n_features)
        self.output = nn.Linear(self.n_features, 1)
        nn.init.zeros_(self.output.weight)

    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable (what a bundle stores)."""
        return {"n_features": self.n_features}

    def forward(self, x: Tensor) -> Tensor:
        return self.output(x).squeeze(-1)
