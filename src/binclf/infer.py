"""Evaluation-mode logits, fast: cache-sized chunks, BatchNorm folded into the Linear before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from binclf.nn.matmul import _onednn
from binclf.nn.models.mlp import mlp_blocks
from binclf.runtime import torch_threads

# --------------------------------------------------------------------------- #
# inference
# --------------------------------------------------------------------------- #

_EVAL_ROWS = 4096  # a chunk's activations (4096 x 128 floats = 2 MiB) stay in cache


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
            out[lo : lo + len(xb)] = xb.squeeze(-1)
    return out


def _linear(x: Tensor, weight: Tensor, bias: Tensor, relu: bool) -> Tensor:
    if _onednn():
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
        if self.encode is not None:
            x = self.encode(x)
        for weight, bias, relu in self.layers:
            x = _linear(x, weight, bias, relu)
        return x


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
    their Linear layers. Rows go through in cache-sized chunks, every member
    inside the chunk loop, so a chunk's inputs are read from cache by all of
    them. The plan is built from the modules as they are when it is built:
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
        for i, m in enumerate(self.modules):
            if type(m) is LogisticModel and not m.training:
                linear.append(i)
                continue
            network, encode = encoded_network(m), None
            if network is not None:
                encode = m.encode
            layers = _folded_mlp(network if network is not None else m)
            if layers is not None:
                self.parts.append(([i], _Folded(layers, encode, int(getattr(m, "n_features", 0)) or None)))
            else:
                self.parts.append(([i], _Module(m)))
        if linear:
            # Logistic members of different widths (text rows) each read their own columns.
            widths: dict[int, list[int]] = {}
            for i in linear:
                widths.setdefault(self.modules[i].n_features, []).append(i)
            for cols in widths.values():
                self.parts.insert(0, (cols, _Linear([self.modules[i] for i in cols])))

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
        """Logits ``(n, M)`` of every member for inputs ``X`` ``(n, d)`` (float32, CPU)."""
        n = len(X)
        out = torch.empty((n, self.n_members), dtype=torch.float32)
        # One thread (see eval_logits); also for a few rows, where oneDNN would still
        # open a parallel region per layer and wait for the second thread to wake.
        with torch_threads(1):
            for lo in range(0, n, chunk_rows):
                self._chunk(X[lo : lo + chunk_rows], out[lo : lo + chunk_rows])
        return out

    def _chunk(self, xb: Tensor, out: Tensor) -> None:
        for cols, part in self.parts:
            z = part(xb)
            if len(cols) == 1:
                out[:, cols[0]] = z[:, 0]
            else:
                out[:, cols] = z
