"""The textbook multilayer perceptron for binary classification."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from binclf.nn.models.hashed_dropout import dropout_key, relu_dropout
from binclf.nn.models.base import register

__all__ = ["MLP", "mlp_blocks"]


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
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            return self.output(self._body_hashed_dropout(x)).squeeze(-1)
        return self.output(self.body(x)).squeeze(-1)

    def _body_hashed_dropout(self, x: Tensor) -> Tensor:
        # On the CPU each ReLU + Dropout pair draws its mask from a counter-based
        # hash (binclf.nn.models.hashed_dropout): the same Bernoulli(1 - p) dropout, but far cheaper
        # than the CPU generator's bernoulli_, and the very masks the trainer's
        # fused step uses, so both paths train the same model.
        layers = list(self.body)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.Dropout):
                x, _ = relu_dropout(x, layers[i + 1].p, dropout_key())
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


def mlp_blocks(model: nn.Module) -> list[tuple[nn.Linear, nn.BatchNorm1d | None, float]]:
    """``(linear, batchnorm or None, dropout p)`` per block of an MLP's body; ValueError otherwise.

    The structure the fused training step and the folded inference path rely on.
    """
    layers = list(model.body)
    blocks = []
    i = 0
    while i < len(layers):
        lin = layers[i]
        if type(lin) is not nn.Linear:
            raise ValueError("block does not start with nn.Linear")
        i += 1
        bn = None
        if i < len(layers) and type(layers[i]) is nn.BatchNorm1d:
            bn = layers[i]
            if not (bn.affine and bn.track_running_stats and bn.momentum is not None):
                raise ValueError("BatchNorm1d without affine/running stats/momentum")
            i += 1
        if i >= len(layers) or type(layers[i]) is not nn.ReLU:
            raise ValueError("block has no ReLU")
        i += 1
        p = 0.0
        if i < len(layers) and isinstance(layers[i], nn.Dropout):
            p = float(layers[i].p)
            i += 1
        blocks.append((lin, bn, p))
    if type(model.output) is not nn.Linear or model.output.out_features != 1 or model.output.bias is None:
        raise ValueError("output is not nn.Linear(d, 1) with a bias")
    return blocks
