"""NumPy twins of :mod:`binclf.nn.functional`: sigmoid, logit and log-loss on arrays.

Fitted calibrators, thresholds, reports and cross-fitting work on NumPy arrays
of logits and probabilities; these are the one copy of that arithmetic. Nothing
here needs torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "logit", "row_log_loss", "log_loss", "logit_log_loss", "binary_labels"]

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
    # Written in place (three arrays of z's size, not seven): the same operations on
    # each element, so the same numbers as np.where(z >= 0, 1 / (1 + e), e / (1 + e)).
    e = np.empty_like(z)
    np.exp(np.negative(np.abs(z, out=e), out=e), out=e)
    d = np.add(1.0, e, out=np.empty_like(z))
    out = np.divide(1.0, d, out=np.empty_like(z))
    np.divide(e, d, out=d)
    np.copyto(out, d, where=~(z >= 0))
    return out


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
    # log(p) - log1p(-p) with the second term written into the clipped copy: the same
    # numbers, two arrays of p's size instead of four.
    if np.ndim(p) == 0:
        return np.log(p) - np.log1p(-p)
    out = np.log(p)
    np.log1p(np.negative(p, out=p), out=p)
    return np.subtract(out, p, out=out)


def binary_labels(y) -> np.ndarray:
    """``y`` as int8 when it holds only 0 and 1 (a byte a row), else ``y`` unchanged.

    :func:`row_log_loss` gives the same numbers for int8 0/1 labels as for float
    ones, without its float64 copy of them and with ``1 - y`` a byte a row: the
    log-losses of millions of OOF rows in cross-fitting (float32 labels) held
    ~16 bytes a row less.
    """
    y = np.asarray(y)
    if y.dtype == np.int8 or not (y.ndim == 1 and y.size):
        return y
    if not ((y == 0) | (y == 1)).all():
        return y
    return y.astype(np.int8)


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
    y = np.asarray(y)
    # Integer (or bool) 0/1 labels are used as they are: y * v and (1 - y) * v give the
    # same float64 numbers as with 0.0/1.0, without a float copy of the labels (and 1 - y
    # a byte a row for int8 labels, not 8).
    if y.dtype == bool:
        y = y.view(np.int8)
    elif not np.issubdtype(y.dtype, np.integer):
        y = y.astype(np.float64, copy=False)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    if y.shape != p.shape or p.ndim == 0:  # broadcasting or scalars: the plain expression
        return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    # -(y log p + (1 - y) log1p(-p)) written in place into the clipped copy and two more
    # arrays (the plain expression held ~7 arrays of n at once); the same numbers.
    out = np.log(p)
    out *= y
    np.log1p(np.negative(p, out=p), out=p)
    p *= np.subtract(1, y) if y.dtype.kind in "iu" else np.subtract(1.0, y)  # int8 stays int8
    out += p
    return np.negative(out, out=out)


# Rows per block in log_loss and logit_log_loss: their temporaries stay in cache.
_LOSS_BLOCK = 1 << 16


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
    return _block_log_loss(y, p, eps, None)


def _block_log_loss(y, v, eps: float, to_proba) -> float:
    """The mean of ``row_log_loss(y, to_proba(v))`` (``v`` itself for None), a block of rows at a time.

    Each block's row losses go into one array of ``n`` and its mean is taken
    as over the whole array: the same number without the whole-array form's
    float64 temporaries of ``n`` (three in row_log_loss, three more in sigmoid).
    """
    y, v = np.asarray(y), np.asarray(v)
    proba = (lambda a: a) if to_proba is None else to_proba
    if v.ndim != 1 or y.shape != v.shape or len(v) <= _LOSS_BLOCK:
        return float(row_log_loss(y, proba(v), eps=eps).mean())
    rows = np.empty(len(v))
    for lo in range(0, len(v), _LOSS_BLOCK):
        block = slice(lo, lo + _LOSS_BLOCK)
        rows[block] = row_log_loss(y[block], proba(v[block]), eps=eps)
    return float(rows.mean())


def logit_log_loss(y, z, *, eps: float = FLOAT_EPS) -> float:
    """``log_loss(y, sigmoid(z), eps=eps)``, the same number, a block of rows at a time.

    The whole-array form holds about six float64 arrays of ``z``'s length at
    once (the probabilities, :func:`sigmoid`'s and :func:`row_log_loss`'s
    temporaries: ~110 MB for 2.4M out-of-fold logits).

    Parameters
    ----------
    y : ndarray of shape (n,)
        Labels in {0, 1}.
    z : ndarray of shape (n,)
        Logits.
    eps : float
        As :func:`log_loss`.

    Returns
    -------
    float
    """
    return _block_log_loss(y, z, eps, sigmoid)
