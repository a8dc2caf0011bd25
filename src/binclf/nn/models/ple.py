"""The MLP on numbers also given as piecewise-linear encodings (PLE).

A plain MLP draws smooth functions of each number; tables often hold
step-like effects (a price tier, an age band) that it only approximates with
many units. The piecewise-linear encoding (Gorishniy et al., "On Embeddings
for Numerical Features in Tabular Deep Learning", 2022) turns a number ``x``
into ``bins`` components, component ``t`` being how far ``x`` has gone through
bin ``t``: ``clamp((x - lo_t) / (hi_t - lo_t), 0, 1)``. A linear layer on them
is any piecewise-linear function of ``x`` with knots at the bin edges, so the
first layer can draw steps and kinks directly.

The encoding is part of the model: it applies to the first ``n_numeric`` input
columns (where binclf's preprocessing puts the scaled numbers), its bin edges
are the training rows' quantiles of each column (``fit_encoding``; ties merged,
so a column with few distinct values gets few bins) and are saved with the
weights. The network sees the inputs themselves next to the encoding, so
linear trends and values beyond the training range still reach it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor, nn

from binclf.nn.models.base import register
from binclf.nn.models.mlp import MLP

__all__ = ["PLEMLP"]


@register("ple_mlp")
class PLEMLP(nn.Module):
    """``MLP`` on ``[x, PLE(x[:, :n_numeric])]``; ``forward`` maps ``(n, n_features)`` to ``(n,)`` logits.

    The encoding has no trainable parameters (``encode``), so the trainer fits
    its edges, encodes the rows once and trains ``network``, a plain
    :class:`MLP`, on them (with the MLP's fast paths); prediction does the same.
    Before ``fit_encoding`` the edges are those of standard-normal inputs.
    """

    def __init__(
        self,
        n_features: int,
        n_numeric: int,
        bins: int = 16,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.1,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= n_numeric <= n_features:
            raise ValueError(f"n_numeric must be in [0, n_features={n_features}], got {n_numeric}")
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.n_features = int(n_features)
        self.n_numeric = int(n_numeric)
        self.bins = int(bins)
        self.network = MLP(self.n_features + self.n_numeric * self.bins, hidden, dropout, batchnorm)
        nd = NormalDist()
        edges = torch.tensor([nd.inv_cdf((t + 0.5) / (self.bins + 1)) for t in range(self.bins + 1)])
        lo, width = edges[:-1], edges[1:] - edges[:-1]
        self.register_buffer("lo", lo.expand(self.n_numeric, -1).clone())
        self.register_buffer("inv_width", (1.0 / width).expand(self.n_numeric, -1).clone())

    @property
    def output(self) -> nn.Linear:
        """The final ``Linear(d, 1)`` (for :func:`~binclf.nn.models.init_output_bias`)."""
        return self.network.output

    def config(self) -> dict:
        net = self.network.config()
        return {
            "n_features": self.n_features,
            "n_numeric": self.n_numeric,
            "bins": self.bins,
            "hidden": net["hidden"],
            "dropout": net["dropout"],
            "batchnorm": net["batchnorm"],
        }

    @torch.no_grad()
    def fit_encoding(self, x: Tensor, *, rows: Tensor | None = None) -> "PLEMLP":
        """Bin edges at the quantiles of each numeric column of the training rows ``x`` ``(n, n_features)``.

        Tied quantiles merge; a column's unused bins get an edge at +inf
        (their component is always 0). ``rows`` ``(m,)``: fit on ``x[rows]``
        only, read in place (:meth:`binclf.train.trainer.Trainer.fit`'s ``rows``).
        """
        if rows is not None:
            rows = torch.as_tensor(rows, device=x.device)
        if self.n_numeric == 0 or len(x if rows is None else rows) == 0:
            return self
        q = torch.linspace(0.0, 1.0, self.bins + 1, dtype=torch.float64)
        lo = torch.full((self.n_numeric, self.bins), math.inf, dtype=torch.float64)
        inv = torch.ones((self.n_numeric, self.bins), dtype=torch.float64)
        for j in range(self.n_numeric):
            # One column at a time in float64: the whole block's float64 copy was twice
            # the float32 rows (102 MB for 1.6M x 8), the largest allocation of a fold.
            col = x[:, j].detach() if rows is None else x[:, j].detach().index_select(0, rows)
            # NumPy selects the quantiles in place in that copy (a partition); torch.quantile
            # sorted another copy with an int64 index beside it (3 arrays of the column in
            # all: +60 MB a column at 2.4M rows). The same linear interpolation (equal to
            # torch's but for a last-bit difference in rare cases).
            col = col.to("cpu", torch.float64, copy=True).numpy()  # always a copy: it is overwritten
            e = torch.unique(torch.from_numpy(np.quantile(col, q.numpy(), overwrite_input=True)))
            if len(e) < 2:
                continue  # a constant column: the input itself says all there is
            lo[j, : len(e) - 1] = e[:-1]
            inv[j, : len(e) - 1] = 1.0 / (e[1:] - e[:-1])
        self.lo.copy_(lo.to(self.lo))
        self.inv_width.copy_(inv.to(self.inv_width))
        return self

    def encode(self, x: Tensor) -> Tensor:
        """``(n, n_features)`` -> ``(n, n_features + n_numeric * bins)``: the inputs, then the encodings."""
        if self.n_numeric == 0:
            return x
        n, d, k, t = len(x), self.n_features, self.n_numeric, self.bins
        # Written in place into one buffer: no (n, k, t) temporaries, no concatenation.
        out = x.new_empty((n, d + k * t))
        out[:, :d] = x
        e = out[:, d:].view(n, k, t)
        torch.sub(x[:, :k, None], self.lo.to(x.dtype), out=e)
        e.mul_(self.inv_width.to(x.dtype)).clamp_(0.0, 1.0)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.network(self.encode(x))

