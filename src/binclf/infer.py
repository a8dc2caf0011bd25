"""Evaluation-mode logits, fast: cache-sized chunks, BatchNorm folded into the Linear before it.
"""

from __future__ import annotations

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
