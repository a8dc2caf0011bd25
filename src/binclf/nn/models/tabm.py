"""A parameter-efficient ensemble of MLPs (TabM-mini style) with one logit per row.

``k`` members share every weight of an MLP except two vectors each: a
multiplicative adapter on the inputs and one on the last hidden layer
(BatchEnsemble's rank-one scaling, as in TabM-mini). The ensemble costs about
one MLP, yet its members disagree enough for their average to be smoother and
better calibrated than any one of them.

Training and prediction:

* in ``train()`` mode each row of a batch goes to one member (row ``i`` to
  member ``i mod k``; batches are shuffled every epoch), so the batch loss is an
  unbiased estimate of the **mean of the member losses**, TabM's objective, at
  the cost of one forward pass;
* in ``eval()`` mode every member scores every row and the **probabilities are
  averaged**; ``forward`` returns the logit of that average ``(n,)``, so early
  stopping watches the ensemble's log-loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from binclf.nn.models.base import register

__all__ = ["TabM"]


@register("tabm")
class TabM(nn.Module):
    """``k`` MLP members sharing weights: ``(n, n_features) -> (n,)`` logits.

    ``hidden``: widths of the shared ``Linear -> ReLU -> Dropout`` blocks;
    ``k``: members. The output layer (``self.output``, ``Linear(d, 1)``) is shared
    too, so its bias starts at ``logit(prior)`` for every member.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.1,
        k: int = 16,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.n_features = int(n_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.k = int(k)
        # Member adapters start at random signs (TabM-mini): members differ from step one.
        self.r_in = nn.Parameter(torch.randint(0, 2, (self.k, self.n_features)).float() * 2 - 1)
        layers: list[nn.Module] = []
        d = self.n_features
        for h in self.hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            d = h
        self.body = nn.Sequential(*layers)
        self.r_out = nn.Parameter(torch.ones(self.k, d))
        self.output = nn.Linear(d, 1)

    def config(self) -> dict:
        """Constructor arguments, JSON-serialisable (what a bundle stores)."""
        return {"n_features": self.n_features, "hidden": list(self.hidden), "dropout": self.dropout, "k": self.k}

    def member_logits(self, x: Tensor) -> Tensor:
        """Every member's logits ``(n, k)``."""
        n = len(x)
        h = (x.unsqueeze(1) * self.r_in).reshape(n * self.k, -1)
        h = self.body(h).reshape(n, self.k, -1) * self.r_out
        return self.output(h).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            member = torch.arange(len(x), device=x.device) % self.k
            h = self.body(x * self.r_in[member]) * self.r_out[member]
            return self.output(h).squeeze(-1)
        z = self.member_logits(x)
        # log(mean_j sigmoid(z_j)) - log(mean_j (1 - sigmoid(z_j))): the logit of the mean probability.
        return torch.logsumexp(nn.functional.logsigmoid(z), dim=1) - torch.logsumexp(nn.functional.logsigmoid(-z), dim=1)
