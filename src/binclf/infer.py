"""Evaluation-mode logits, fast: cache-sized chunks, BatchNorm folded into the Linear before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from binclf.nn.matmul import _onednn
from binclf.nn.models.mlp import mlp_blocks
from binclf.probe import usable_cores
from binclf.runtime import in_predict_worker, torch_threads

# --------------------------------------------------------------------------- #
# inference
# --------------------------------------------------------------------------- #

_EVAL_ROWS = 4096  # a chunk's activations (4096 x 128 floats = 2 MiB) stay in cache


def _eval_workers(n_chunks: int, ceiling: int) -> int:
    """Threads that evaluate ``n_chunks`` chunks: 1 below 4 chunks, else up to the caller's torch threads and the usable cores.

    ``ceiling`` is the caller's torch thread count (``OMP_NUM_THREADS``,
    ``torch.set_num_threads``, ``--threads``; one per ``binclf serve``
    worker): binclf never evaluates on more threads than it.
    """
    if n_chunks < 4:
        return 1
    return max(1, min(ceiling, usable_cores(), n_chunks // 2))


@torch.inference_mode()
def eval_logits(model: nn.Module, X: Tensor, *, chunk_rows: int = _EVAL_ROWS) -> Tensor:
    """``model(X)`` in eval mode, ``(n,)`` logits, in cache-sized chunks.

    Large batches make every elementwise op (BatchNorm, ReLU) stream hundreds
    of MiB through memory; chunks of a few thousand rows stay in cache. For
    binclf's MLP on the CPU, each eval-mode BatchNorm is folded into the Linear
    before it (an affine map of an affine map) and the ReLU fused into oneDNN's
    linear kernel: one call per layer. The folding changes float rounding only
    (agreement to ~1e-6). The caller sets ``model.eval()``.

    Parameters
    ----------
    model : nn.Module
        A single-logit model in eval mode.
    X : Tensor of shape (n, d)
        Its inputs, on the model's device.
    chunk_rows : int
        Rows per chunk.

    Returns
    -------
    Tensor of shape (n,)
        The logits.
    """
    from binclf.nn.models.base import encoded_network

    n = len(X)
    encode = None
    network = encoded_network(model)
    if network is not None:
        encode, model = model.encode, network  # binclf.nn.models.PLEMLP: encoding, then an MLP
    layers = _folded_mlp(model) if X.device.type == "cpu" and X.dtype == torch.float32 else None
    if layers is None:
        run = model if encode is None else (lambda xb: model(encode(xb)))
        if n <= chunk_rows:
            return run(X)
        return torch.cat([run(X[lo : lo + chunk_rows]) for lo in range(0, n, chunk_rows)])
    out = torch.empty(n, dtype=X.dtype)
    # One thread: a chunk is ~0.5 ms of work, and in prediction it runs beside
    # the file reader's threads; two OpenMP threads spinning at each layer's
    # barrier then cost far more than they save (measured 9 s vs 0.2 s per
    # million rows on a busy 2-core machine). Restored after (binclf.runtime).
    with torch_threads(1):
        for lo in range(0, n, chunk_rows):
            xb = X[lo : lo + chunk_rows]
            if encode is not None:
                xb = encode(xb)
            for weight, bias, relu in layers:
                xb = _linear(xb, weight, bias, relu)
            out[lo : lo + len(xb)] = _nan_where_nan(X[lo : lo + chunk_rows], xb).squeeze(-1)
    return out


def _nan_where_nan(x: Tensor, z: Tensor) -> Tensor:
    """``z`` ``(n, m)`` with NaN in the rows where ``x`` ``(n, d)`` holds NaN, as the module's forward gives.

    oneDNN's fused ReLU maps NaN to 0, which would turn a NaN input into a
    finite logit; one reduction finds that there is none (the usual case).
    """
    if torch.isnan(x.sum()):
        z[torch.isnan(x).any(dim=1)] = float("nan")
    return z


# oneDNN's fused linear + ReLU pays a fixed ~20 us a call (2-core Intel Xeon, one thread), where
# MKL's product (F.linear) pays ~3: for few rows MKL is far faster (1 row, 128 -> 64: 3 vs 24 us;
# 512 rows: 77 vs 94 us), from ~2,048 rows they are level (the fused ReLU saves a pass). A layer
# with one output (the logit) is a matrix-vector product, faster by MKL at every size measured.
_FUSED_ROWS = 2048


def _linear(x: Tensor, weight: Tensor, bias: Tensor, relu: bool) -> Tensor:
    """``x @ weight.T + bias``, then ReLU if ``relu``: oneDNN's fused kernel for large chunks, else MKL (:data:`_FUSED_ROWS`)."""
    if len(x) >= _FUSED_ROWS and weight.shape[0] > 1 and _onednn():
        try:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")
        except RuntimeError:
            pass
    y = F.linear(x, weight, bias)
    return y.relu_() if relu else y


def _folded_mlp(model: nn.Module) -> list[tuple[Tensor, Tensor, bool]] | None:
    """``(weight, bias, relu)`` per layer of an eval-mode MLP with BatchNorm folded in, or None."""
    from binclf.nn.models.mlp import MLP

    if type(model) is not MLP or model.training:
        return None
    try:
        blocks = mlp_blocks(model)
    except ValueError:
        return None
    layers = []
    for lin, bn, _ in blocks:  # dropout is the identity in eval mode
        w = lin.weight.detach().float()
        b = lin.bias.detach().float() if lin.bias is not None else torch.zeros(w.shape[0])
        if bn is not None:
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            w = w * scale[:, None]
            b = (b - bn.running_mean) * scale + bn.bias.detach()
        layers.append((w.contiguous(), b.contiguous(), True))
    layers.append((model.output.weight.detach().contiguous(), model.output.bias.detach().contiguous(), False))
    return layers


# --------------------------------------------------------------------------- #
# several members at once
# --------------------------------------------------------------------------- #

class _Linear:
    """Members that are one ``Linear(d, 1)`` (logistic): all of them in one ``(d, L)`` product."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.weight = torch.cat([m.output.weight.detach() for m in modules]).float().contiguous()
        self.bias = torch.cat([m.output.bias.detach() for m in modules]).float().contiguous()

    def __call__(self, x: Tensor) -> Tensor:
        return F.linear(x[:, : self.weight.shape[1]], self.weight, self.bias)


class _Folded:
    """One MLP (or PLE-MLP: encoding, then MLP) with BatchNorm folded in, built once."""

    def __init__(self, layers: list[tuple[Tensor, Tensor, bool]], encode: Any, width: int | None) -> None:
        self.layers, self.encode, self.width = layers, encode, width

    def __call__(self, x: Tensor) -> Tensor:
        x = x[:, : self.width]
        z = x if self.encode is None else self.encode(x)
        for weight, bias, relu in self.layers:
            z = _linear(z, weight, bias, relu)
        return _nan_where_nan(x, z)


# Up to this many numbers in a chunk (rows x numeric columns), PLE bins are found by one
# torch.searchsorted call rather than a comparison pass per edge: ~9 vs ~45-57 us for
# one row; from ~2,000 numbers on the passes win (50 columns: 128 rows, 103 vs 201 us).
_SEARCH_VALUES = 2048


def _searched_bins(edges: Tensor, base: Tensor, lo: Tensor, inv: Tensor, xn: Tensor) -> tuple[Tensor, Tensor]:
    """Table entries and fractions of numbers ``xn`` ``(n, c)`` by one binary search per number.

    ``edges`` ``(c, e)`` holds column ``j``'s edges in ascending order; the entry
    is the count of edges <= x plus the column's ``base`` offset (as the
    comparison passes of :meth:`_PLETables.bins` count it). NaN lands on some
    entry of its column: its fraction is NaN.
    """
    idx = torch.searchsorted(edges, xn.t().contiguous(), right=True).t().contiguous().add_(base)
    return idx, _fractions(lo, inv, xn, idx)


def _fractions(lo: Tensor, inv: Tensor, xn: Tensor, idx: Tensor) -> Tensor:
    """Each number's ``frac`` in its table entry ``idx`` (entry starts ``lo``, inverse widths ``inv``).

    Inside a bin, frac as the encoding computes it (the same float operations);
    below and beyond the bins, how far x lies from the first edge (0) or the last
    end (see :class:`_PLETables`). NaN stays NaN (the row's logit is NaN, as in the forward).
    """
    frac = torch.sub(xn, torch.take(lo, idx))
    frac.mul_(torch.take(inv, idx))
    return frac


class _PLETables:
    """A PLE-MLP whose encoding times first layer is looked up per bin instead of multiplied out.

    Column ``j``'s encoding of a number ``x`` in its bin ``b`` is
    ``[1, ..., 1, frac, 0, ..., 0]`` (``frac = (x - lo_b) / width_b``), so the
    first layer's product with it is a sum of looked-up rows:
    ``W1[:, j, :b].sum(-1) + frac * W1[:, j, b]``. The cumulative sums (the
    layer's bias folded into column 0's, the number's own input folded into
    each bin's rows) and the per-bin weights are built once; a chunk then needs
    each number's bin (``n_numeric * (bins + 1)`` comparisons), its ``frac``
    and two ``embedding_bag`` sums of ``n_numeric`` rows each, in place of
    ``encode`` and a product with ``n_numeric * bins`` more inputs (measured,
    2 loaded cores, 550 encoded inputs into 128 units: 1.3-1.6 vs 1.7-1.8 us per
    row). Bins must chain (each ends where the next starts; unused ones at +inf
    at the end), as ``fit_encoding`` and the default edges make them; other
    edges go through :class:`_Folded`. Agreement with the module's forward:
    float rounding only (a value on an edge is the same in both bins, so a
    rounding-close bin choice changes nothing).

    Parameters
    ----------
    model : PLEMLP
        In eval mode, with ``applies(model)``.
    layers : list of (weight, bias, relu)
        ``model.network``'s layers, BatchNorm folded (:func:`_folded_mlp`).
    """

    def __init__(self, model: nn.Module, layers: list[tuple[Tensor, Tensor, bool]]) -> None:
        d, k, t = model.n_features, model.n_numeric, model.bins
        w, b, _ = layers[0]
        h = w.shape[0]
        wp = w[:, d:].double().reshape(h, k, t).permute(1, 2, 0)  # (k, t, h): column j, bin s
        r = w[:, :k].double().t()  # (k, h): the numbers' own inputs
        lo, inv = model.lo.detach().double(), model.inv_width.detach().double()
        # Entry e of column j is "x has reached e of its edges": its bins' lower edges,
        # then where the last one ends. Entry e has a start L and a scale I, and the
        # column adds full[e] + g * part[e], g = (x - L) * I, which is the first layer's
        # product with both the number's input (r) and its encoding:
        # * e = 0, below every bin (or a column without bins): L = 0, I = 1, so g = x,
        #   and the encoding is 0: full 0, part r;
        # * 1 <= e <= used, inside bin s = e - 1: g = frac, the encoding's component;
        #   bins before s are full (cum), and x * r = lo_s * r + frac / inv_s * r;
        # * e = used + 1, beyond the last bin (every component 1): L = its end, I = 1.
        # The numbers' inputs ride on the lookups this way instead of a matrix product
        # of their own (measured: 0.23 of a member's ~1.6 us per row at 50 x 128).
        cum = torch.zeros((k, t + 1, h), dtype=torch.float64)
        cum[:, 1:] = wp.cumsum(dim=1)
        full = torch.zeros((k, t + 2, h), dtype=torch.float64)
        part = torch.zeros((k, t + 2, h), dtype=torch.float64)
        start = torch.zeros((k, t + 2), dtype=torch.float64)
        scale = torch.ones((k, t + 2), dtype=torch.float64)
        edges = torch.full((k, t + 1), math.inf, dtype=torch.float64)
        part[:, 0] = r
        for j in range(k):
            used = int(torch.isfinite(lo[j]).sum())
            if used == 0:
                continue
            end = lo[j, used - 1] + 1.0 / inv[j, used - 1]
            e = slice(1, used + 1)
            full[j, e] = cum[j, :used] + lo[j, :used, None] * r[j]
            part[j, e] = wp[j, :used] + r[j] / inv[j, :used, None]
            start[j, e], scale[j, e] = lo[j, :used], inv[j, :used]
            full[j, used + 1] = cum[j, used] + end * r[j]
            part[j, used + 1] = r[j]
            start[j, used + 1] = end
            edges[j, :used], edges[j, used] = lo[j, :used], end
        full[0] += b.double()  # the layer's bias, with column 0's entries (each row has one)
        self.full = full.reshape(-1, h).float().contiguous()
        self.part = part.reshape(-1, h).float().contiguous()
        self.lo = start.reshape(-1).float().contiguous()
        self.inv = scale.reshape(-1).float().contiguous()
        self.edges = [edges[:, s].float().contiguous() for s in range(t + 1)]
        self.sorted_edges = edges.float().contiguous()  # (k, t + 1), each column's edges ascending
        self.base = (torch.arange(k) * (t + 2)).reshape(1, k)
        # The other inputs (one-hot categories, missing indicators) by a matrix product.
        self.raw = w[:, k:d].t().contiguous() if d > k else None
        self.d, self.k = d, k
        self.rest = layers[1:]

    @staticmethod
    def applies(model: nn.Module) -> bool:
        """Whether ``model`` is a PLE-MLP (binclf's own: a subclass may encode differently) whose bins chain."""
        from binclf.nn.models.ple import PLEMLP

        if type(model) is not PLEMLP or model.training or model.n_numeric < 1:
            return False
        lo, inv = model.lo, model.inv_width
        lo, inv = lo.detach().double(), inv.detach().double()
        for j in range(lo.shape[0]):
            used = int(torch.isfinite(lo[j]).sum())
            lj, ij = lo[j, :used], inv[j, :used]
            # A constant column has no bins (all +inf): it is read through its input alone.
            if not (torch.isposinf(lo[j, used:]).all() and torch.isfinite(lj).all()):
                return False
            if not (torch.isfinite(ij).all() and (ij > 0).all() and (lj[1:] > lj[:-1]).all()):
                return False
            # Each bin must end where the next starts (to float32 rounding of the width).
            if not ((lj[:-1] + 1.0 / ij[:-1] - lj[1:]).abs() <= 1e-5 * (lj[1:] - lj[:-1])).all():
                return False
        return True

    def same_bins(self, other: _PLETables) -> bool:
        """Whether ``other`` finds the same bins and fractions (the same edges on the same columns)."""
        if (self.d, self.k, len(self.edges)) != (other.d, other.k, len(other.edges)):
            return False
        mine, theirs = (self.lo, self.inv, *self.edges), (other.lo, other.inv, *other.edges)
        return all(torch.equal(a, b) for a, b in zip(mine, theirs))

    def __call__(self, x: Tensor) -> Tensor:
        x = x[:, : self.d]
        return self.member(x, *self.bins(x))

    def bins(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each number's table entry ``(n, n_numeric)`` (int64, offset per column) and its ``frac``."""
        xn = x[:, : self.k]
        n, k = len(x), self.k
        if n * k <= _SEARCH_VALUES:  # few numbers (a request's rows): one search call
            return _searched_bins(self.sorted_edges, self.base, self.lo, self.inv, xn)
        # e = #{edges <= x}, counted in floats: each comparison is written as 0.0 / 1.0
        # into a float buffer and added (two passes an edge; adding comparison results
        # into integers ran ~4x slower, and the former sum of sign(x - edge) took three
        # passes: measured 0.43 vs 0.57 us per row, 50 columns x 11 edges, one core).
        # An edge equal to x counts as reached; NaN compares below every edge (e = 0).
        count = torch.ge(xn, self.edges[0]).to(x.dtype)
        reached = torch.empty((n, k), dtype=x.dtype)
        for edge in self.edges[1:]:
            count.add_(torch.ge(xn, edge, out=reached))
        idx = count.to(torch.int64).add_(self.base)
        return idx, _fractions(self.lo, self.inv, xn, idx)

    def member(self, x: Tensor, idx: Tensor, frac: Tensor) -> Tensor:
        """The logits ``(n, 1)`` of inputs ``x`` ``(n, d)`` whose bins are ``idx``, ``frac`` (:meth:`bins`)."""
        return self.hidden(x, self.first(x, idx, frac))

    def first(self, x: Tensor, idx: Tensor, frac: Tensor) -> Tensor:
        """The first layer's pre-activations ``(n, h)``: the lookups (and the other inputs' product)."""
        z = F.embedding_bag(idx, self.full, mode="sum")
        z += F.embedding_bag(idx, self.part, per_sample_weights=frac, mode="sum")
        if self.raw is not None:
            z.addmm_(x[:, self.k :], self.raw)
        return z

    def hidden(self, x: Tensor, z: Tensor) -> Tensor:
        """The logits ``(n, 1)`` from the first layer's pre-activations ``z`` (:meth:`first`) of inputs ``x``."""
        z.relu_()
        for weight, bias, relu in self.rest:
            z = _linear(z, weight, bias, relu)
        return _nan_where_nan(x, z)


# A plan's PLE-MLPs run stacked (_PLEStack) on chunks of up to _STACK_ROWS rows where they
# share their edges (one search), else up to _STACK_VALUES numbers (rows x numeric columns x
# members: each member's columns searched). Measured, whole plans on one core, stacked vs
# each member (or bag) on its own: three sharing their edges (50 columns): 1 row 179 vs 292
# us, 64 rows 684 vs 661, 600 rows 2,395 vs 2,421; five with their own edges (9 columns):
# 1 row 187 vs 528 us, 256 rows 1,231 vs 1,766, 600 rows (27,000 numbers) 2,448 vs 2,701.
_STACK_ROWS = 512
_STACK_VALUES = 16384


class _PLEStack:
    """Every PLE-MLP of a plan at once, for a few rows: one bin search, two lookups and one batched product a layer.

    For a request's few rows the separate path's cost is its calls (about 14 a
    member, ~85 us a member for one row); stacked, the calls do not grow with
    the members. The members must agree in shape (numeric and other inputs,
    table entries per column, units per layer); their edges may differ (each
    member's columns are searched as columns of their own). The numbers are
    each member's own, to float rounding (batched products in place of each
    layer's).

    Parameters
    ----------
    tables : list of _PLETables
        At least two, of the same shapes (:meth:`build` checks). Their tables
        are rebound to views of the stack's.
    """

    def __init__(self, tables: list[_PLETables]) -> None:
        t0 = tables[0]
        self.m, self.k, self.d = len(tables), t0.k, t0.d
        self.values = self.m * self.k  # numbers looked up per row
        # Members with the same edges (a cross-fitted bag) share one search: each member's
        # entries are then the first member's, offset by the member's place in the tables.
        self.shared = t0 if all(t0.same_bins(t) for t in tables[1:]) else None
        rows = t0.lo.numel()  # a member's table entries (and rows of its tables)
        self.offsets = (torch.arange(self.m) * rows).reshape(1, -1, 1)
        if self.shared is None:  # each member's columns searched as columns of their own
            self.edges = torch.cat([t.sorted_edges for t in tables])  # (m * k, edges)
            self.base = (torch.arange(self.values) * (rows // self.k)).reshape(1, -1)
        self.full = torch.cat([t.full for t in tables])
        self.part = torch.cat([t.part for t in tables])
        self.lo = torch.cat([t.lo for t in tables])
        self.inv = torch.cat([t.inv for t in tables])
        # Each member's tables become its rows of the stacked ones (contiguous views, the same
        # numbers): the stack holds no second copy (wide tables: megabytes a member).
        for i, t in enumerate(tables):
            own = slice(i * rows, (i + 1) * rows)
            t.full, t.part, t.lo, t.inv = self.full[own], self.part[own], self.lo[own], self.inv[own]
        self.raw = None if t0.raw is None else torch.stack([t.raw for t in tables])  # (m, d - k, h)
        self.layers = [
            (torch.stack([t.rest[j][0].t() for t in tables]).contiguous(),  # (m, in, out)
             torch.stack([t.rest[j][1] for t in tables])[:, None, :].contiguous(),  # (m, 1, out)
             t0.rest[j][2])
            for j in range(len(t0.rest))
        ]

    @staticmethod
    def build(tables: list[_PLETables]) -> _PLEStack | None:
        """The stack of ``tables``, or None where there are fewer than two or their shapes differ."""
        if len(tables) < 2:
            return None

        def shape(t: _PLETables) -> tuple:
            raw = None if t.raw is None else tuple(t.raw.shape)
            return (t.k, t.d, tuple(t.full.shape), tuple(t.sorted_edges.shape), raw,
                    tuple((tuple(w.shape), relu) for w, _, relu in t.rest))

        first = shape(tables[0])
        return _PLEStack(tables) if all(shape(t) == first for t in tables[1:]) else None

    def __call__(self, x: Tensor) -> Tensor:
        n, m, k = len(x), self.m, self.k
        x = x[:, : self.d]
        if self.shared is not None:
            idx, frac = self.shared.bins(x)
            idx = (idx[:, None, :] + self.offsets).reshape(n * m, k)
            frac = frac[:, None, :].expand(n, m, k).reshape(n * m, k)
        else:
            # each member's copy of the numbers: (n, m * k)
            idx, frac = _searched_bins(self.edges, self.base, self.lo, self.inv, x[:, :k].repeat(1, m))
            idx, frac = idx.reshape(n * m, k), frac.reshape(n * m, k)
        z = F.embedding_bag(idx, self.full, mode="sum")
        z += F.embedding_bag(idx, self.part, per_sample_weights=frac, mode="sum")
        z = z.view(n, m, -1).transpose(0, 1)  # (m, n, h)
        if self.raw is not None:
            z = torch.baddbmm(z, x[:, k:].expand(m, n, -1), self.raw)
        z = z.relu_()
        for weight, bias, relu in self.layers:
            z = torch.baddbmm(bias, z, weight)
            if relu:
                z = z.relu_()
        return _nan_where_nan(x, z[..., 0].t().contiguous())


class _PLEGroup:
    """PLE-MLPs with the same edges (a cross-fitted bag's members): bins found once, then each member.

    Finding each number's bin and fraction costs about one member's lookups
    (50 columns x 11 edges, one core: 0.43 us per row alone, ~0.7 among the
    members, against ~0.6 of lookups and ~0.25 of hidden layers a member); the
    lookups behind it are per member (each has its own tables), kept
    one member at a time: concatenated tables (3 x 128 units wide) outgrow the
    L2 cache and ran slower (6.7-7.0 vs 3.8-4.1 us per row for three members,
    2-core AMD EPYC, one core, 4,096-row chunks; separate members 4.9-5.2;
    3.5 once the numbers' inputs were folded into the tables; on a 2-core Intel
    Xeon, the lookups alone: 1.94 vs 1.46). The numbers are the members' own,
    bit for bit.
    """

    def __init__(self, tables: list[_PLETables]) -> None:
        self.tables = tables
        self.d = tables[0].d

    def __call__(self, x: Tensor) -> Tensor:
        x = x[:, : self.d]
        idx, frac = self.tables[0].bins(x)
        out = torch.empty((len(x), len(self.tables)), dtype=x.dtype)
        for i, t in enumerate(self.tables):
            out[:, i] = t.member(x, idx, frac)[:, 0]
        return out


class _Module:
    """Any other single-logit module, called as it is (TabM, user models)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x).reshape(len(x), 1)


class MemberPlan:
    """Every member's eval-mode logits at once, ``(n, d) -> (n, M)``, from weights prepared once.

    Members of one kind are grouped (the logistic ones become one matrix
    product); binclf's MLPs and PLE-MLPs keep their BatchNorm folded into
    their Linear layers, and PLE-MLPs with the same edges (a cross-fitted
    bag) find each number's bin once for all of them. Rows go through in
    cache-sized chunks, every member inside the chunk loop, so a chunk's
    inputs are read from cache by all of them. The plan is built from the modules as they are when it is built:
    :meth:`current` tells whether they have changed since (a parameter or
    buffer written in place, or a module put in training mode).

    Parameters
    ----------
    modules : sequence of nn.Module
        Single-logit models in eval mode, on the CPU, in float32.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        from binclf.nn.models.base import encoded_network
        from binclf.nn.models.logistic import LogisticModel

        self.modules = list(modules)
        self.n_members = len(self.modules)
        self._tensors = [t for m in self.modules for t in (*m.parameters(), *m.buffers())]
        self._signature = self._state()
        self.parts: list[tuple[list[int], Any]] = []
        linear: list[int] = []
        ple: list[tuple[int, _PLETables]] = []
        for i, m in enumerate(self.modules):
            if type(m) is LogisticModel and not m.training:
                linear.append(i)
                continue
            network, encode = encoded_network(m), None
            if network is not None:
                encode = m.encode
            layers = _folded_mlp(network if network is not None else m)
            if layers is not None and encode is not None and _PLETables.applies(m):
                ple.append((i, _PLETables(m, layers)))
            elif layers is not None:
                self.parts.append(([i], _Folded(layers, encode, int(getattr(m, "n_features", 0)) or None)))
            else:
                self.parts.append(([i], _Module(m)))
        # PLE-MLPs with the same edges share their bins (one group per set of edges).
        groups: list[list[tuple[int, _PLETables]]] = []
        for i, t in ple:
            group = next((g for g in groups if g[0][1].same_bins(t)), None)
            if group is None:
                groups.append([(i, t)])
            else:
                group.append((i, t))
        for g in groups:
            cols = [i for i, _ in g]
            self.parts.append((cols, g[0][1] if len(g) == 1 else _PLEGroup([t for _, t in g])))
        if linear:
            # Logistic members of different widths (text rows) each read their own columns.
            widths: dict[int, list[int]] = {}
            for i in linear:
                widths.setdefault(self.modules[i].n_features, []).append(i)
            for cols in widths.values():
                self.parts.insert(0, (cols, _Linear([self.modules[i] for i in cols])))
        # For a few rows, every PLE-MLP at once (_PLEStack), where their shapes agree.
        stack = _PLEStack.build([t for _, t in ple])
        self.few_parts = None
        if stack is not None:
            tabled = {i for i, _ in ple}
            self.few_parts = [p for p in self.parts if not set(p[0]) <= tabled] + [([i for i, _ in ple], stack)]
            self.few_rows = _STACK_ROWS if stack.shared is not None else max(1, _STACK_VALUES // stack.values)

    def _state(self) -> tuple:
        return (tuple(t._version for t in self._tensors), tuple(m.training for m in self.modules))

    def current(self, modules: Sequence[nn.Module]) -> bool:
        """Whether this plan still computes ``modules`` (the same objects, unchanged since it was built)."""
        return (
            len(modules) == self.n_members
            and all(a is b for a, b in zip(modules, self.modules))
            and self._state() == self._signature
        )

    @torch.inference_mode()
    def __call__(self, X: Tensor, *, chunk_rows: int = _EVAL_ROWS) -> Tensor:
        """Logits ``(n, M)`` of every member for inputs ``X`` ``(n, d)`` (float32, CPU).

        Each chunk runs on one torch thread (see :func:`eval_logits`; for a few
        rows oneDNN would still open a parallel region per layer and wait for
        the second thread to wake). Many chunks are shared out between up to
        the caller's torch thread count of threads (:func:`_eval_workers`),
        each evaluating whole chunks on its own: no barrier inside a chunk to
        spin at, so a busy core only slows the share it runs.
        """
        n = len(X)
        out = torch.empty((n, self.n_members), dtype=torch.float32)
        starts = range(0, n, chunk_rows)
        workers = _eval_workers(len(starts), torch.get_num_threads())
        with torch_threads(1):
            if workers == 1:
                self._chunks(X, out, starts, chunk_rows)
            else:
                # Threads for this call only, joined before it returns (~0.1 ms to start,
                # against at least 4 chunks of work).
                shares = [starts[i::workers] for i in range(workers)]
                with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="binclf-eval") as pool:
                    pending = [pool.submit(in_predict_worker, self._worker_chunks, X, out, share, chunk_rows)
                               for share in shares[1:]]
                    self._chunks(X, out, shares[0], chunk_rows)
                    for f in pending:
                        f.result()
        return out

    @torch.inference_mode()  # per thread: a pool thread needs its own
    def _worker_chunks(self, X: Tensor, out: Tensor, starts: Sequence[int], chunk_rows: int) -> None:
        self._chunks(X, out, starts, chunk_rows)

    def _chunks(self, X: Tensor, out: Tensor, starts: Sequence[int], chunk_rows: int) -> None:
        for lo in starts:
            self._chunk(X[lo : lo + chunk_rows], out[lo : lo + chunk_rows])

    def _chunk(self, xb: Tensor, out: Tensor) -> None:
        few = self.few_parts is not None and len(xb) <= self.few_rows
        for cols, part in self.few_parts if few else self.parts:
            z = part(xb)
            if len(cols) == 1:
                out[:, cols[0]] = z[:, 0]
            else:
                out[:, cols] = z
