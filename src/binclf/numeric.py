"""NumPy twins of :mod:`binclf.nn.functional`: sigmoid, logit and log-loss on arrays.

Fitted calibrators, thresholds, reports and cross-fitting work on NumPy arrays
of logits and probabilities; these are the one copy of that arithmetic. Nothing
here needs torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "logit", "row_log_loss", "log_loss"]

#: scikit-learn's log_loss clips probabilities to float64's epsilon.
FLOAT_EPS = float(np.finfo(np.float64).eps)


def sigmoid(z) -> np.ndarray:
    """Stable sigmoid: ``exp`` only ever sees non-positive arguments.

    Parameters
    ----------
    z : array-like of shape (n,) or scalar
        Logits.

    Returns
    -------
    ndarray of float64, the shape of ``z``
        ``1 / (1 + exp(-z))``.
    """
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logit(p, *, eps: float = 1e-12) -> np.ndarray:
    """``log(p / (1 - p))`` as ``log(p) - log1p(-p)``, with ``p`` clipped to ``[eps, 1 - eps]``.

    Parameters
    ----------
    p : array-like of shape (n,) or scalar
        Probabilities.
    eps : float
        Clipping distance from 0 and 1 (0 keeps ``p`` as it is; 0 and 1 then give -inf and inf).

    Returns
    -------
    ndarray of float64, the shape of ``p``
    """
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def row_log_loss(y, p, *, eps: float = FLOAT_EPS) -> np.ndarray:
    """Binary log-loss of each row.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Labels in {0, 1}.
    p : ndarray of shape (n,)
        Probabilities of the positive class, clipped to ``[eps, 1 - eps]``.
    eps : float
        Clipping distance from 0 and 1 (scikit-learn's default).

    Returns
    -------
    ndarray of shape (n,)
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def log_loss(y, p, *, eps: float = FLOAT_EPS) -> float:
    """Mean binary log-loss of probabilities ``p`` ``(n,)`` for labels ``y`` ``(n,)``.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Labels in {0, 1}.
    p : ndarray of shape (n,)
        Probabilities of the positive class, clipped to ``[eps, 1 - eps]``.
    eps : float
        Clipping distance from 0 and 1 (scikit-learn's default).

    Returns
    -------
    float
    """
    return float(row_log_loss(y, p, eps=eps).mean())
