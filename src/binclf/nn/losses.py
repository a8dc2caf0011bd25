"""``nn.Module`` losses over :mod:`binclf.nn.functional`, with torch's conventions.

Constructor arguments follow ``torch.nn.BCEWithLogitsLoss`` (``weight``,
``pos_weight``, ``reduction``). ``pos_weight`` may also be ``"balanced"``: it is
resolved from the training labels as ``n_neg / n_pos`` by :meth:`fit` (the
trainer calls it), because a per-batch estimate would be noisy and would make
the loss depend on batch composition.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from binclf.nn import functional as BF
from binclf.errors import ConfigError

__all__ = [
    "BCEWithLogitsLoss",
    "FocalLoss",
    "HingeLoss",
    "resolve_pos_weight",
    "build_loss",
    "LOSS_NAMES",
]

PosWeight = float | Tensor | Literal["balanced"] | None
LOSS_NAMES = ("bce", "focal", "hinge")


def resolve_pos_weight(pos_weight: PosWeight, y: Tensor | np.ndarray | None = None) -> float | None:
    """Turn a ``pos_weight`` setting into a number (or ``None``).

    ``"balanced"`` becomes ``n_neg / n_pos`` of the labels ``y`` (shape ``(n,)``,
    0/1), which weighs the two classes equally in the loss.

    Parameters
    ----------
    pos_weight : float, Tensor, "balanced" or None
    y : Tensor or ndarray of shape (n,), optional
        Training labels; needed for ``"balanced"``.

    Returns
    -------
    float or None
    """
    if pos_weight is None:
        return None
    if isinstance(pos_weight, str):
        if pos_weight != "balanced":
            raise ConfigError(f"pos_weight must be a positive number or 'balanced', got {pos_weight!r}")
        if y is None:
            raise ConfigError("pos_weight='balanced' needs the training labels: call .fit(y_train) first")
        y = torch.as_tensor(y)
        n_pos = float((y > 0.5).sum())
        n_neg = float(y.numel()) - n_pos
        if n_pos == 0 or n_neg == 0:
            raise ConfigError("pos_weight='balanced' needs both classes in the training labels")
        return n_neg / n_pos
    value = float(pos_weight)
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"pos_weight must be a positive finite number, got {pos_weight!r}")
    return value


class _BinaryLoss(nn.Module):
    """Shared plumbing: the ``pos_weight`` setting, its resolution, ``reduction``."""

    def __init__(self, *, weight: Tensor | None, pos_weight: PosWeight, reduction: str) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ConfigError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.pos_weight_setting = pos_weight
        self.register_buffer("weight", weight)
        resolved = None if isinstance(pos_weight, str) else resolve_pos_weight(pos_weight)
        self.register_buffer("pos_weight", None if resolved is None else torch.tensor(resolved))

    def fit(self, y: Tensor | np.ndarray) -> "_BinaryLoss":
        """Resolve ``pos_weight="balanced"`` from the training labels ``y`` (n,)."""
        value = resolve_pos_weight(self.pos_weight_setting, y)
        self.pos_weight = None if value is None else torch.tensor(value, device=_device_of(self))
        return self

    def effective_weights(
        self, sample_weight: Tensor | None = None, *, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor | None, Tensor | None]:
        """The per-row weight and the positive-class weight this loss applies to a batch.

        What the loss's ``forward`` hands to :mod:`binclf.nn.functional`, for
        code that computes the same loss by other means (the fused training step).

        Parameters
        ----------
        sample_weight : Tensor of shape (n,), optional
            The batch's sample weights; multiplied by the loss's ``weight`` buffer.
        dtype : torch.dtype
            The logits' dtype, which ``pos_weight`` is cast to.

        Returns
        -------
        weight : Tensor of shape (n,) or None
        pos_weight : Tensor of shape () or None
        """
        if isinstance(self.pos_weight_setting, str) and self.pos_weight is None:
            raise ConfigError("pos_weight='balanced' is not resolved yet: call loss.fit(y_train) first")
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(dtype=dtype)
        if sample_weight is None:
            weight = self.weight
        else:
            weight = sample_weight if self.weight is None else sample_weight * self.weight
        return weight, pos_weight


def _device_of(module: nn.Module) -> torch.device:
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


class BCEWithLogitsLoss(_BinaryLoss):
    """Binary cross-entropy on logits (torch's semantics) with ``pos_weight="balanced"``.

    ``forward(logits (n,), targets (n,), sample_weight=None (n,))``.
    """

    def __init__(self, weight: Tensor | None = None, *, pos_weight: PosWeight = None, reduction: str = "mean") -> None:
        super().__init__(weight=weight, pos_weight=pos_weight, reduction=reduction)

    def forward(self, logits: Tensor, targets: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        weight, pos_weight = self.effective_weights(sample_weight, dtype=logits.dtype)
        return BF.bce_with_logits(
            logits,
            targets,
            weight=weight,
            pos_weight=pos_weight,
            reduction=self.reduction,
        )


class FocalLoss(_BinaryLoss):
    """Focal loss from log-sigmoid, with ``alpha``, ``gamma`` and ``pos_weight``."""

    def __init__(
        self,
        weight: Tensor | None = None,
        *,
        alpha: float | None = 0.25,
        gamma: float = 2.0,
        pos_weight: PosWeight = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight=weight, pos_weight=pos_weight, reduction=reduction)
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1] or None, got {alpha}")
        self.alpha = alpha
        self.gamma = float(gamma)

    def forward(self, logits: Tensor, targets: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        weight, pos_weight = self.effective_weights(sample_weight, dtype=logits.dtype)
        return BF.focal_loss(
            logits,
            targets,
            alpha=self.alpha,
            gamma=self.gamma,
            pos_weight=pos_weight,
            weight=weight,
            reduction=self.reduction,
        )


class HingeLoss(_BinaryLoss):
    """Hinge (or squared hinge) loss on {0, 1} targets; scores need calibration after."""

    def __init__(
        self,
        weight: Tensor | None = None,
        *,
        margin: float = 1.0,
        squared: bool = False,
        pos_weight: PosWeight = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight=weight, pos_weight=pos_weight, reduction=reduction)
        self.margin = float(margin)
        self.squared = bool(squared)

    def forward(self, logits: Tensor, targets: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        weight, pos_weight = self.effective_weights(sample_weight, dtype=logits.dtype)
        return BF.hinge_loss(
            logits,
            targets,
            margin=self.margin,
            squared=self.squared,
            pos_weight=pos_weight,
            weight=weight,
            reduction=self.reduction,
        )


def build_loss(
    name: str,
    *,
    pos_weight: PosWeight = None,
    focal_alpha: float | None = None,
    focal_gamma: float = 2.0,
    reduction: str = "mean",
) -> _BinaryLoss:
    """Build a loss by name (``"bce"``, ``"focal"``, ``"hinge"``), as the trainer and CLI do.

    Parameters
    ----------
    name : str
        One of :data:`LOSS_NAMES`.
    pos_weight : float, "balanced" or None
    focal_alpha, focal_gamma : float
        Focal loss only.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    nn.Module
        ``loss(logits (n,), targets (n,), sample_weight=None)``.
    """
    if name == "bce":
        return BCEWithLogitsLoss(pos_weight=pos_weight, reduction=reduction)
    if name == "focal":
        return FocalLoss(alpha=focal_alpha, gamma=focal_gamma, pos_weight=pos_weight, reduction=reduction)
    if name == "hinge":
        return HingeLoss(pos_weight=pos_weight, reduction=reduction)
    raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
