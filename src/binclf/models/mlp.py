"""The textbook multilayer perceptron for binary classification."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from binclf.models.base import register

__all__ = ["MLP"]


@register("mlp")
class MLP(nn.Module):
    """Blocks of ``Linear -> BatchNorm1d -> ReLU -> Dropout``, then ``Linear(d, 1)``.

    The output layer has **no activation**: ``forward`` maps ``(n, n_features)``
    to ``(n,)`` logits.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_features = int(n_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.batchnorm = bool(batchnorm)
        layers: list[nn.Module] = []
        d = self.n_features
        for h in self.hidden:
            # The Linear's bias is redundant right before BatchNorm's shift.
            layers.append(nn.Linear(d, h, bias=not self.batchnorm))
            if self.batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            d = h
        self.body = nn.Sequential(*layers)
        self.output = nn.Linear(d, 1)

    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable (what a bundle stores)."""
        return {
            "n_features": self.n_features,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "batchnorm": self.batchnorm,
        }

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.body(x)).squeeze(-1)
