"""Pure tensor math for binary classification: no state, no modules.

Every function takes *logits* (real numbers, ``z``), never probabilities, and is
stable for finite logits as large as ``+-1e4`` in float32 and float64: values
and gradients stay finite. The probability is only ever formed on read-out
(:func:`sigmoid`); losses are computed from :func:`log_sigmoid`, never from
``log(sigmoid(z))``, which underflows to ``log(0) = -inf`` for ``z < -104`` in
float32.

Shapes: ``logits`` and ``targets`` are ``(n,)`` (any shape works as long as the
two match; binclf never broadcasts ``(n, 1)`` against ``(n,)`` silently).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "sigmoid",
    "log_sigmoid",
    "logit",
    "bce_with_logits",
    "focal_loss",
    "hinge_loss",
    "reduce_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def sigmoid(z: Tensor) -> Tensor:
    """Probability of the positive class from logits, ``1 / (1 + exp(-z))``.

    torch's kernel evaluates the numerically safe branch for each sign, so the
    result is in ``[0, 1]`` for every finite input and ``sigmoid(-z) = 1 - sigmoid(z)``.
    """
    return torch.sigmoid(z)


def log_sigmoid(z: Tensor) -> Tensor:
    """``log(sigmoid(z)) = -softplus(-z)``, finite for every finite ``z``."""
    return F.logsigmoid(z)


def logit(p: Tensor, eps: float | None = None) -> Tensor:
    """Inverse of :func:`sigmoid`: ``log(p) - log(1 - p)``.

    ``p`` is clamped to ``[eps, 1 - eps]`` first so that 0 and 1 give large but
    finite logits; ``eps`` defaults to the machine epsilon of ``p``'s dtype
    (float32: ``logit(1) ~ 15.9``).
    """
    p = torch.as_tensor(p)
    if not p.is_floating_point():
        p = p.to(torch.get_default_dtype())
    if eps is None:
        eps = torch.finfo(p.dtype).eps
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Apply torch's ``reduction`` convention: ``"mean"``, ``"sum"`` or ``"none"``."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_pair(logits: Tensor, targets: Tensor) -> Tensor:
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}; squeeze a (n, 1) model output to (n,) with .squeeze(-1)"
        )
    if not targets.is_floating_point():
        targets = targets.to(logits.dtype)
    return targets


def bce_with_logits(
    logits: Tensor,
    targets: Tensor,
    *,
    weight: Tensor | None = None,
    pos_weight: Tensor | float | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Binary cross-entropy on logits, exactly torch's ``BCEWithLogitsLoss``.

    ``loss_i = -w_i [pw * y_i * log sigmoid(z_i) + (1 - y_i) * log sigmoid(-z_i)]``,
    evaluated in the log-sum-exp form torch's fused kernel uses. ``weight`` scales
    each element (broadcast to ``logits``), ``pos_weight`` the positive term.
    Targets may be soft (in ``[0, 1]``) and of any numeric dtype.
    """
    targets = _check_pair(logits, targets)
    if pos_weight is not None and not isinstance(pos_weight, Tensor):
        pos_weight = torch.tensor(float(pos_weight), dtype=logits.dtype, device=logits.device)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return F.binary_cross_entropy_with_logits(
        logits, targets, weight=weight, pos_weight=pos_weight, reduction=reduction
    )


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    pos_weight: Tensor | float | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Focal loss (Lin et al. 2017) from log-sigmoid, with ``pos_weight``.

    ``loss = -[a * pw * y * (1-p)^g * log p + (1-a) * (1-y) * p^g * log(1-p)]``
    with ``log p = log_sigmoid(z)``, ``log(1-p) = log_sigmoid(-z)`` and the
    modulating factors ``p^g = exp(g * log p)``, so values and gradients stay
    finite at any finite logit. ``alpha=None`` drops the alpha weighting; with
    ``gamma=0`` and ``alpha=None`` this is :func:`bce_with_logits`.
    """
    targets = _check_pair(logits, targets)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
    log_p = F.logsigmoid(logits)
    log_q = F.logsigmoid(-logits)
    pos = targets * log_p
    neg = (1.0 - targets) * log_q
    if gamma != 0:
        pos = pos * torch.exp(gamma * log_q)
        neg = neg * torch.exp(gamma * log_p)
    if pos_weight is not None:
        pos = pos * pos_weight
    if alpha is not None:
        pos = alpha * pos
        neg = (1.0 - alpha) * neg
    loss = -(pos + neg)
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction)


def hinge_loss(
    logits: Tensor,
    targets01: Tensor,
    *,
    margin: float = 1.0,
    squared: bool = False,
    pos_weight: Tensor | float | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Hinge loss ``max(0, margin - s * z)`` with ``s = 2y - 1`` from {0, 1} targets.

    ``squared=True`` gives the squared hinge. Hinge-trained scores are margins,
    not log-odds: calibrate them before reading them as probabilities.
    """
    targets01 = _check_pair(logits, targets01)
    signs = 2.0 * targets01 - 1.0
    loss = F.relu(margin - signs * logits)
    if squared:
        loss = loss * loss
    if pos_weight is not None:
        loss = loss * (1.0 + (pos_weight - 1.0) * targets01)
    if weight is not None:
        loss = loss * weight
    return reduce_loss(loss, reduction)
