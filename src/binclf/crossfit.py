"""Cross-fitted bagging: k fold models, out-of-fold predictions, a blend chosen on them.

The rows given (train + validation) are cut into ``k`` stratified folds. For
each fold, a neural member is trained on the other ``k - 1`` folds and
early-stopped on the held-out fold's log-loss, and a linear (logistic) member
is fitted on the same rows. Each row then has an **out-of-fold** (OOF)
prediction from models that never trained on it, so that:

* the blend weight ``w`` between the neural bag and the linear bag is chosen
  by OOF log-loss (a 1-D search over ``[0, 1]``): near-linear tables get the
  linear model, curved ones the network, most something in between;
* the calibrator and the decision threshold are fitted on OOF predictions of
  **every** row instead of a 20% validation split.

At prediction the ``2k`` members are averaged as probabilities with weights
``(1 - w) / k`` (neural) and ``w / k`` (linear), as
:class:`binclf.predictor.Predictor` does; the OOF blend is the same average with
one model per bag, the one that did not see the row.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from binclf.models import LogisticModel

__all__ = ["CrossFit", "blend_weight", "fit_logistic_path", "fold_indices", "log_loss"]

_EPS = 1e-12


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary log-loss of probabilities ``p`` ``(n,)`` for labels ``y`` ``(n,)``."""
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fold_indices(y: np.ndarray, *, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` stratified ``(fit_rows, held_out_rows)`` pairs covering every row once as held out."""
    from sklearn.model_selection import StratifiedKFold

    n_minority = int(min(y.sum(), len(y) - y.sum()))
    k = max(2, min(k, n_minority))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(a, b) for a, b in splitter.split(np.zeros(len(y)), y)]


def blend_weight(p_a: np.ndarray, p_b: np.ndarray, y: np.ndarray, *, step: float = 0.02) -> tuple[float, float]:
    """The weight ``w`` of ``p_b`` in ``(1 - w) p_a + w p_b`` with the lowest log-loss, and that loss.

    A grid search (``step``) over ``[0, 1]``: the loss is convex in ``w``, the
    grid keeps it simple and exact at the ends (pure ``a``, pure ``b``).
    """
    grid = np.linspace(0.0, 1.0, int(round(1 / step)) + 1)
    losses = [log_loss(y, (1 - w) * p_a + w * p_b) for w in grid]
    i = int(np.argmin(losses))
    return float(grid[i]), float(losses[i])


def fit_logistic_path(
    X: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    *,
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
) -> tuple[float, list[LogisticModel], np.ndarray, dict[str, float]]:
    """L2 logistic regression per fold over a path of ``Cs``; the C with the lowest OOF log-loss wins.

    Fitted by scikit-learn (L-BFGS, warm-started along the path) and copied into
    :class:`~binclf.models.LogisticModel` members. Returns ``(C, members,
    oof_logits (n,), {C: oof log-loss})``.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    oof = {c: np.empty(len(y)) for c in Cs}
    coefs: dict[float, list[tuple[np.ndarray, float]]] = {c: [] for c in Cs}
    for fit_rows, held in folds:
        lr = LogisticRegression(max_iter=500, warm_start=True, tol=1e-5)
        for c in Cs:
            lr.set_params(C=c)
            # One BLAS thread: these fits are small, and threads that spin on a
            # busy machine made them 30 times slower.
            with warnings.catch_warnings(), threadpool_limits(1):
                warnings.simplefilter("ignore")  # a ConvergenceWarning at large C on separable data is harmless
                lr.fit(X[fit_rows], y[fit_rows])
            oof[c][held] = lr.decision_function(X[held])
            coefs[c].append((lr.coef_.ravel().copy(), float(lr.intercept_[0])))
    losses = {c: log_loss(y, _sigmoid(oof[c])) for c in Cs}
    best = min(Cs, key=lambda c: losses[c])
    members = []
    for w, b in coefs[best]:
        m = LogisticModel(X.shape[1])
        with torch.no_grad():
            m.output.weight.copy_(torch.from_numpy(w.astype(np.float32)).unsqueeze(0))
            m.output.bias.fill_(b)
        members.append(m.eval())
    return best, members, oof[best], {str(c): v for c, v in losses.items()}


@dataclass
class CrossFit:
    """The outcome of cross-fitting: fold members, OOF logits and the blend.

    ``neural`` and ``linear``: one fitted module per fold; ``shifts``: each
    neural member's logit shift (its imbalance treatment); ``oof_neural`` /
    ``oof_linear``: prior-corrected OOF logits ``(n,)``; ``weight``: the linear
    share ``w``; ``oof_logits``: the blended OOF logit ``(n,)``.
    """

    neural: list[nn.Module]
    linear: list[nn.Module]
    shifts: list[float]
    oof_neural: np.ndarray
    oof_linear: np.ndarray
    weight: float
    oof_logits: np.ndarray
    histories: list[list[dict[str, float]]]
    info: dict[str, Any] = field(default_factory=dict)


FitNeural = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], tuple[nn.Module, float, list]]


def cross_fit(
    X: np.ndarray,
    y: np.ndarray,
    *,
    k: int,
    seed: int,
    fit_neural: FitNeural | None,
    linear: bool = True,
) -> CrossFit:
    """Cross-fit on ``X`` ``(n, d)``, ``y`` ``(n,)``.

    ``fit_neural(X_fit, y_fit, X_held, y_held, fold) -> (module, logit_shift,
    history)`` trains one neural member early-stopped on the held-out rows
    (None for a linear-only fit); ``linear`` adds the logistic members.
    """
    if fit_neural is None and not linear:
        raise ValueError("cross_fit needs a neural member, a linear member or both")
    t0 = time.perf_counter()
    folds = fold_indices(y, k=k, seed=seed)
    n = len(y)
    info: dict[str, Any] = {"folds": len(folds)}
    neural, shifts, histories = [], [], []
    oof_n = np.zeros(n)
    if fit_neural is not None:
        for i, (fit_rows, held) in enumerate(folds):
            module, shift, history = fit_neural(X[fit_rows], y[fit_rows], X[held], y[held], i)
            with torch.inference_mode():
                z = module(torch.from_numpy(np.ascontiguousarray(X[held], dtype=np.float32))).double().numpy()
            oof_n[held] = z - shift
            neural.append(module)
            shifts.append(shift)
            histories.append(history)
        info["neural_oof_log_loss"] = log_loss(y, _sigmoid(oof_n))
        info["neural_best_epochs"] = [_best_epoch(h) for h in histories]
    info["neural_seconds"] = time.perf_counter() - t0
    lin_members: list[nn.Module] = []
    oof_l = np.zeros(n)
    if linear:
        t1 = time.perf_counter()
        C, lin_members, oof_l, losses = fit_logistic_path(X, y, folds)
        info.update(linear_C=C, linear_oof_log_loss=losses[str(C)], linear_path=losses,
                    linear_seconds=time.perf_counter() - t1)
    if fit_neural is not None and linear:
        w, loss = blend_weight(_sigmoid(oof_n), _sigmoid(oof_l), y)
    else:
        w = 0.0 if fit_neural is not None else 1.0
        loss = log_loss(y, _sigmoid(oof_n if fit_neural is not None else oof_l))
    p = (1 - w) * _sigmoid(oof_n) + w * _sigmoid(oof_l)
    p = np.clip(p, _EPS, 1 - _EPS)
    info.update(linear_weight=w, blend_oof_log_loss=loss, seconds=time.perf_counter() - t0)
    return CrossFit(
        neural=neural,
        linear=lin_members,
        shifts=shifts,
        oof_neural=oof_n,
        oof_linear=oof_l,
        weight=w,
        oof_logits=np.log(p) - np.log1p(-p),
        histories=histories,
        info=info,
    )


def _best_epoch(history: list[dict[str, float]]) -> int:
    losses = [(h.get("valid_loss", math.inf), h["epoch"]) for h in history]
    return int(min(losses)[1]) if losses else 0
