"""Cross-fitted bagging: k fold models, out-of-fold predictions, a blend chosen on them.

The rows given (train + validation) are cut into ``k`` stratified folds. For
each fold and each kind of network asked for (a "bag"), a neural member is
trained on the other ``k - 1`` folds and early-stopped on the held-out fold's
log-loss, and a linear (logistic) member is fitted on the same rows. Each row
then has an **out-of-fold** (OOF) prediction from models that never trained on
it, so that:

* the blend weights of the bags and the linear member are chosen by OOF
  log-loss (:func:`mixture_weights`, over the simplex): near-linear tables get
  the linear model, curved ones the network, most something in between;
* the calibrator and the decision threshold are fitted on OOF predictions of
  **every** row instead of a 20% validation split.

At prediction every member is averaged as a probability with its bag's weight
divided by ``k``, as :class:`binclf.predictor.Predictor` does; the OOF blend is
the same average with one model per bag, the one that did not see the row.
"""

from __future__ import annotations

import copy
import math
import operator
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from binclf.runtime import one_blas_thread, release_freed_memory
from binclf.nn.models import LogisticModel
from binclf.numeric import binary_labels, log_loss, logit, logit_log_loss, sigmoid

__all__ = ["Bag", "CrossFit", "Folds", "cross_fit", "fit_logistic_path", "fold_indices", "mixture_weights"]

_EPS = 1e-12
# Held-out rows per forward call when predicting out of fold: a PLE network's
# encoding and activations of 8,192 rows left ~7 MB more resident at 1M rows.
_OOF_ROWS = 2048
# Held-out rows copied at a time for a logistic fold model's logits, and rows of
# the blend's probabilities made at a time (their own sizes: not the networks').
_LINEAR_OOF_ROWS = 65_536
_BLEND_ROWS = 8192


class Folds(Sequence):
    """``k`` ``(fit_rows, held_out_rows)`` pairs, kept as each row's fold and made when asked for.

    Every pair as index arrays is ``k`` times the rows in int64 (58 MB for
    2.4M rows and 3 folds); each row's fold is one byte, and a pair costs a
    mask pass when read. The pairs are those scikit-learn's splitter yields:
    sorted row positions, the held-out ones of fold ``i`` where ``fold_of_row == i``.

    Parameters
    ----------
    fold_of_row : ndarray of shape (n,)
        Each row's held-out fold, in ``[0, k)``.
    k : int
    """

    def __init__(self, fold_of_row: np.ndarray, k: int) -> None:
        self.fold_of_row = fold_of_row
        self.k = int(k)

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.k))]
        i = operator.index(i)
        if i < 0:
            i += self.k
        if not 0 <= i < self.k:
            raise IndexError(f"fold {i} of {self.k}")
        held = self.fold_of_row == i
        fit_rows = np.flatnonzero(~held)
        return fit_rows, np.flatnonzero(held)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return (self[i] for i in range(self.k))


def fold_indices(y: np.ndarray, *, k: int, seed: int) -> Folds:
    """``k`` stratified ``(fit_rows, held_out_rows)`` pairs covering every row once as held out.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Labels in {0, 1}.
    k : int
        Folds wanted; fewer (at least 2) when the rarer class has fewer rows.
    seed : int

    Returns
    -------
    Folds
        A sequence of ``(fit_rows, held_out_rows)``: the row indices fitted on
        and held out, per fold (scikit-learn's ``StratifiedKFold``'s, made one
        pair at a time when read).
    """
    n_minority = int(min(y.sum(), len(y) - y.sum()))
    k = max(2, min(k, n_minority))
    if n_minority >= k:
        return Folds(_stratified_folds(np.asarray(y), k, seed), k)
    # scikit-learn's splitter raises or warns on a class too small to split.
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of_row = np.zeros(len(y), dtype=np.uint8 if k <= 255 else np.int32)
    for i, (_, held) in enumerate(splitter.split(np.zeros(len(y), dtype=np.uint8), y)):
        fold_of_row[held] = i
    return Folds(fold_of_row, k)


def _stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each row's held-out fold as ``StratifiedKFold(k, shuffle=True, random_state=seed)`` assigns it, two classes.

    scikit-learn's ``_make_test_folds`` with the same draws, without its
    (n,) int64 arrays (the labels' codes, their sort, each fold's index
    pairs: +122 MB of RSS for 2.4M rows): classes numbered by first
    appearance, each fold's share of a class dealt round robin over the
    sorted labels (counted, not sorted), each class's fold list shuffled.
    """
    second = y != y[0]  # class 0: the first row's label; class 1: the other
    n, n_second = len(y), int(np.count_nonzero(second))
    bounds = ((0, n - n_second), (n - n_second, n))  # each class's place among the sorted codes

    def dealt(stop: int, i: int) -> int:  # positions p < stop with p % k == i
        return max(0, (stop - i + k - 1) // k)

    rng = np.random.RandomState(seed)
    fold_of_row = np.empty(n, dtype=np.uint8 if k <= 255 else np.int32)
    for rows, (lo, hi) in ((~second, bounds[0]), (second, bounds[1])):
        folds_for_class = np.arange(k, dtype=fold_of_row.dtype).repeat(
            [dealt(hi, i) - dealt(lo, i) for i in range(k)]
        )
        rng.shuffle(folds_for_class)  # the same draws whatever the integer width
        fold_of_row[rows] = folds_for_class
    return fold_of_row


def _held_rows(folds: Sequence[tuple[np.ndarray, np.ndarray]], i: int) -> np.ndarray:
    """Fold ``i``'s held-out rows (from a :class:`Folds`, without making its fit rows)."""
    return np.flatnonzero(folds.fold_of_row == i) if isinstance(folds, Folds) else folds[i][1]


def _fit_weight(folds: Sequence[tuple[np.ndarray, np.ndarray]], i: int, n: int, dtype: Any) -> np.ndarray:
    """Fold ``i``'s sample weights ``(n,)``: 1 on the rows it fits, 0 on the others."""
    if isinstance(folds, Folds):
        return (folds.fold_of_row != i).astype(dtype)
    weight = np.zeros(n, dtype=dtype)
    weight[folds[i][0]] = 1.0
    return weight


def _oof_logits(models: Sequence[Any], X: Any, folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Each row's logit from the fold model that held it out, ``(n,)`` float64."""
    n = X.shape[0]
    oof = np.empty(n)
    for i, lr in enumerate(models):
        held = _held_rows(folds, i)
        for lo in range(0, len(held), _LINEAR_OOF_ROWS):  # the held-out rows' copy a block at a time
            rows = held[lo : lo + _LINEAR_OOF_ROWS]
            oof[rows] = lr.decision_function(X[rows])
    return oof


def fit_logistic_path(
    X: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    *,
    Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
    solver: str = "lbfgs",
    bracket: bool = False,
) -> tuple[float, list[LogisticModel], np.ndarray, dict[str, float]]:
    """L2 logistic regression per fold over a path of ``Cs``; the C with the lowest OOF log-loss wins.

    ``solver``: scikit-learn's; ``"liblinear"`` (coordinate descent, intercept
    lightly regularised) is ~2x faster than L-BFGS on wide TF-IDF rows.

    Fitted by scikit-learn (L-BFGS, warm-started along the path) and copied into
    :class:`~binclf.nn.models.LogisticModel` members.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    folds : sequence of (ndarray, ndarray)
        From :func:`fold_indices`, or ``(fit_rows, held_out_rows)`` pairs covering
        every row once as held out. Dense rows are fitted in place (a fold's
        held-out rows weigh 0); sparse ones copied one fold at a time.
    Cs : tuple of float
        Inverse regularisation strengths to try.
    bracket : bool
        Fit the middle pair of ``Cs`` first and walk towards the better one
        only while the OOF loss improves (the same winner on a unimodal path,
        usually one C fewer); ``losses`` then holds the Cs fitted.

    Returns
    -------
    C : float
        The winning C.
    members : list of LogisticModel
        One per fold, fitted at ``C``.
    oof_logits : ndarray of shape (n,)
    losses : dict
        ``{str(C): out-of-fold log-loss}``.
    """
    from sklearn.linear_model import LogisticRegression

    from scipy import sparse as _sparse

    if _sparse.issparse(X):  # text columns: TF-IDF rows next to the table's features
        X = _sparse.csr_matrix(X)
    elif X.size and np.count_nonzero(X) < 0.1 * X.size:
        # Mostly one-hot zeros: sparse rows make each L-BFGS iteration as cheap
        # as the non-zeros (measured 7.5 s -> under 1 s on 22k rows x 3,208 features).
        from scipy import sparse

        X = sparse.csr_matrix(X)
    models = [
        LogisticRegression(solver=solver, max_iter=500, warm_start=solver == "lbfgs", tol=1e-5) for _ in folds
    ]
    # Only the best C so far keeps its fitted fold models (a few numbers each); its
    # OOF logits are made again from them at the end, the same numbers, rather than
    # kept beside the next C's (8 bytes a row). Ties go to the C listed first, as
    # min() over the path does.
    rank = {c: i for i, c in enumerate(Cs if not bracket or len(Cs) < 3 else sorted(Cs))}
    kept: dict[str, Any] = {"C": None}
    losses: dict[float, float] = {}
    oof_bytes = 8 * len(y)
    y01 = binary_labels(y)  # the log-losses' labels: int8, the same numbers

    # Dense rows are not copied per fold: the fold's fit weighs its held-out rows 0.
    # scikit-learn's L-BFGS objective is the weighted mean loss plus the penalty over
    # C times the weights' sum, so the fit is that of X[fit_rows] (to the solver's
    # tolerance), each ~1.35x as long (0.38 -> 0.52 s on 1.6M of 2.4M rows x 8: the
    # held-out rows are still multiplied). The fold copy was the largest array of the
    # default model's run; with the OOF logits made after the fits (not held through
    # them) and the folds' weights made from each row's fold (no index arrays), the
    # path's RSS above its start on 2.4M rows x 8, 3 folds: +155 -> +61 MB.
    # Sparse rows (one-hot, TF-IDF) copy only their non-zeros.
    in_place = isinstance(X, np.ndarray) and solver == "lbfgs"

    def fit_at(c: float) -> float:
        for i, lr in enumerate(models):
            lr.set_params(C=c)
            # One BLAS thread: these fits are small, and threads that spin on a
            # busy machine made them 30 times slower.
            with warnings.catch_warnings(), one_blas_thread():
                warnings.simplefilter("ignore")  # a ConvergenceWarning at large C on separable data is harmless
                if in_place:
                    lr.fit(X, y, sample_weight=_fit_weight(folds, i, len(y), X.dtype))
                else:
                    fit_rows = folds[i][0]
                    lr.fit(X[fit_rows], y[fit_rows])
                    del fit_rows
            # The solver's arrays (and a fold's copy), before the next fold's
            # (left in the heap, the next fold's were stacked above them).
            release_freed_memory(array_bytes=oof_bytes)
        # The OOF logits once every fold is fitted: not held through the fits.
        oof = _oof_logits(models, X, folds)
        losses[c] = logit_log_loss(y01, oof, eps=_EPS)
        best = kept["C"]
        if best is None or (losses[c], rank[c]) < (losses[best], rank[best]):
            kept.update(C=c, models=[copy.deepcopy(lr) for lr in models])
        del oof
        release_freed_memory(array_bytes=oof_bytes)  # this C's OOF logits and losses, before the next C's
        return losses[c]

    if not bracket or len(Cs) < 3:
        for c in Cs:
            fit_at(c)
    else:
        # OOF log-loss along an L2 path is unimodal in practice: fit the middle
        # pair, then walk towards the better one while it keeps improving.
        order = sorted(Cs)
        i = (len(order) - 1) // 2
        lo, hi = fit_at(order[i]), fit_at(order[i + 1])
        step, j = (1, i + 1) if hi < lo else (-1, i)
        while 0 <= j + step < len(order) and fit_at(order[j + step]) < losses[order[j]]:
            j += step
        Cs = tuple(c for c in order if c in losses)
    best = kept["C"]
    oof = _oof_logits(kept["models"], X, folds)
    members = []
    for lr in kept["models"]:
        m = LogisticModel(X.shape[1])
        with torch.no_grad():
            m.output.weight.copy_(torch.from_numpy(lr.coef_.ravel().astype(np.float32)).unsqueeze(0))
            m.output.bias.fill_(float(lr.intercept_[0]))
        members.append(m.eval())
    return best, members, oof, {str(c): losses[c] for c in Cs}


def mixture_weights(P: np.ndarray, y: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
    """Simplex weights ``w`` ``(m,)`` of the probability mixture ``P @ w`` with the lowest log-loss.

    ``P`` ``(n, m)``: each source's probabilities. The mixture's log-likelihood
    is concave in its weights, so a constrained Newton-type solver (SLSQP, with
    the exact gradient) finds the global optimum, edges of the simplex included,
    in a few dozen evaluations (EM's multiplicative update needs thousands when
    two sources nearly agree).

    Parameters
    ----------
    P : ndarray of shape (n, m)
    y : ndarray of shape (n,)
    overwrite : bool
        Work in ``P``'s memory (float64, C-contiguous), leaving each row's
        probability of its own class there: no second ``(n, m)`` array.

    Returns
    -------
    ndarray of shape (m,)
        Non-negative weights summing to 1.
    """
    from scipy.optimize import minimize

    m = P.shape[1]
    if m == 1:
        return np.ones(1)
    # Each row's probability of its own class, built in place: no (n, m) temporaries
    # beyond Q itself (np.where and np.clip made three).
    if overwrite and P.dtype == np.float64 and P.flags.c_contiguous:
        Q = P
        np.subtract(1.0, Q, out=Q, where=(y != 1)[:, None])
    else:
        Q = np.subtract(1.0, P, dtype=np.float64)
        np.copyto(Q, P, where=(y == 1)[:, None])
    np.clip(Q, _EPS, 1.0, out=Q)
    n = len(Q)
    chunk = 1 << 16

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        mix = Q @ w
        np.maximum(mix, _EPS, out=mix)
        # The gradient -mean(Q / mix) a block of rows at a time: Q / mix whole is another (n, m).
        grad = np.zeros(m)
        for lo in range(0, n, chunk):
            grad += (Q[lo : lo + chunk] / mix[lo : lo + chunk, None]).sum(axis=0)
        return float(-np.log(mix, out=mix).mean()), -grad / n

    res = minimize(
        loss, np.full(m, 1.0 / m), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        options={"ftol": 1e-12, "maxiter": 200},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


@dataclass
class Bag:
    """One kind of neural member over the folds: a module per fold, its logit shift, OOF logits ``(n,)``."""

    name: str
    modules: list[nn.Module]
    shifts: list[float]
    oof: np.ndarray
    histories: list[list[dict[str, float]]]
    weight: float = 0.0


@dataclass
class CrossFit:
    """The outcome of cross-fitting: fold members, OOF logits and the blend.

    ``bags``: the neural members, one :class:`Bag` per kind (each with its
    share of the blend); ``linear``: one logistic module per fold;
    ``oof_linear``: its prior-corrected OOF logits ``(n,)``; ``weight``: the
    linear share; ``oof_logits``: the blended OOF logit ``(n,)``.
    """

    bags: list[Bag]
    linear: list[nn.Module]
    oof_linear: np.ndarray
    weight: float
    oof_logits: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def histories(self) -> list[list[dict[str, float]]]:
        return [h for bag in self.bags for h in bag.histories]


# fit(X, y, fit_rows, held_rows, fold) -> (module, logit_shift, history): the rows are positions in X and y.
FitNeural = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], tuple[nn.Module, float, list]]


def cross_fit(
    X: np.ndarray,
    y: np.ndarray,
    *,
    k: int,
    seed: int,
    fit_neural: dict[str, FitNeural] | None,
    linear: bool = True,
    X_linear: Any = None,
    linear_path: dict[str, Any] | None = None,
) -> CrossFit:
    """Cross-fit on ``X`` ``(n, d)``, ``y`` ``(n,)``.

    ``fit_neural``: a name -> ``fit(X, y, fit_rows, held_rows, fold) ->
    (module, logit_shift, history)`` per kind of neural member, each trained
    per fold on the rows ``fit_rows`` of ``X`` and ``y`` and early-stopped on
    the rows ``held_rows``, read in place (:meth:`binclf.train.trainer.Trainer.fit`'s
    ``rows`` and ``valid_rows``: no fold copies its rows), None or empty for a
    linear-only fit; ``linear`` adds the logistic members. The blend weights
    of the bags and the linear member minimise OOF log-loss (:func:`mixture_weights`).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    k : int
        Folds (see :func:`fold_indices`).
    seed : int
    fit_neural : dict or None
        Name -> fit function, as above.
    linear : bool
        Add the cross-fitted logistic members.
    X_linear : ndarray or scipy sparse matrix of shape (n, d'), optional
        The linear member's inputs when they differ from the networks' (text
        columns' TF-IDF rows); ``X`` by default.
    linear_path : dict, optional
        Keyword arguments of :func:`fit_logistic_path` for it (``Cs``, ``solver``).

    Returns
    -------
    CrossFit
        The bags, the linear members, their weights and the OOF logits ``(n,)``.
    """
    fit_neural = dict(fit_neural or {})
    if not fit_neural and not linear:
        raise ValueError("cross_fit needs a neural member, a linear member or both")
    t0 = time.perf_counter()
    folds = fold_indices(y, k=k, seed=seed)
    # Each stage's freed temporaries go back to the OS before the next stage's are made:
    # freed blocks left resident between live arrays are holes the next stage's
    # arrays rarely fit, and RSS grew by them stage after stage (the cross-fit's
    # peak on 2.4M rows x 8 columns: 814 -> 759 MB in one measurement).
    release_freed_memory(array_bytes=X.nbytes)
    n = len(y)
    y01 = binary_labels(y)  # the log-losses' labels: int8, the same numbers
    info: dict[str, Any] = {"folds": len(folds)}
    bags = []
    for name, fit in fit_neural.items():
        bag = Bag(name, [], [], np.zeros(n), [])
        for i, (fit_rows, held) in enumerate(folds):
            module, shift, history = fit(X, y, fit_rows, held, i)
            del fit_rows
            with torch.inference_mode():
                # In chunks, each gathered from X: a network's activations (and an encoding's
                # inputs, ~17x the rows' width) over a whole fold took ~330 MB at 267k rows;
                # rows are independent, so the logits are the same. Written into one buffer:
                # each chunk's result kept alive above its temporaries fragmented the heap
                # (measured +130-290 MB RSS for 800k rows, against +30 MB).
                z = torch.empty(len(held))
                for lo in range(0, len(held), _OOF_ROWS):
                    xb = np.ascontiguousarray(X[held[lo : lo + _OOF_ROWS]], dtype=np.float32)
                    z[lo : lo + _OOF_ROWS] = module(torch.from_numpy(xb))
            bag.oof[held] = z.double().numpy() - shift
            bag.modules.append(module)
            bag.shifts.append(shift)
            bag.histories.append(history)
            del held, z
            release_freed_memory()  # the fold's temporaries, before the next fold's
        bags.append(bag)
        info[f"{name}_oof_log_loss"] = logit_log_loss(y01, bag.oof, eps=_EPS)
        release_freed_memory(array_bytes=bag.oof.nbytes)
    if bags:
        info["neural_oof_log_loss"] = min(info[f"{b.name}_oof_log_loss"] for b in bags)
        info["neural_best_epochs"] = [_best_epoch(h) for b in bags for h in b.histories]
    info["neural_seconds"] = time.perf_counter() - t0
    lin_members: list[nn.Module] = []
    oof_l = np.zeros(n)
    if linear:
        t1 = time.perf_counter()
        C, lin_members, oof_l, losses = fit_logistic_path(
            X if X_linear is None else X_linear, y, folds, **(linear_path or {})
        )
        info.update(linear_C=C, linear_oof_log_loss=losses[str(C)], linear_path=losses,
                    linear_seconds=time.perf_counter() - t1)
        release_freed_memory(array_bytes=oof_l.nbytes)
    sources = [b.oof for b in bags] + ([oof_l] if linear else [])

    def probabilities(lo: int) -> np.ndarray:
        """Each source's probabilities ``(rows, m)`` for a block of rows (sigmoid's temporaries a block at a time)."""
        block = np.empty((min(_BLEND_ROWS, n - lo), len(sources)))
        for j, oof in enumerate(sources):
            block[:, j] = sigmoid(oof[lo : lo + _BLEND_ROWS])
        return block

    P = np.empty((n, len(sources)))
    for lo in range(0, n, _BLEND_ROWS):
        P[lo : lo + _BLEND_ROWS] = probabilities(lo)
    w = mixture_weights(P, y, overwrite=True)  # a single source gets all the weight
    del P  # overwritten: each row's probability of its own class
    # Shares below 1% add members that hardly move a prediction: drop them.
    w = np.where(w < 0.01, 0.0, w)
    w /= w.sum()
    for bag, share in zip(bags, w):
        bag.weight = float(share)
    w_lin = float(w[-1]) if linear else 0.0
    p = np.empty(n)
    for lo in range(0, n, _BLEND_ROWS):
        p[lo : lo + _BLEND_ROWS] = probabilities(lo) @ w
    np.clip(p, _EPS, 1 - _EPS, out=p)
    info.update(linear_weight=w_lin, bag_weights={b.name: b.weight for b in bags},
                blend_oof_log_loss=log_loss(y01, p, eps=_EPS), seconds=time.perf_counter() - t0)
    return CrossFit(
        bags=bags,
        linear=lin_members,
        oof_linear=oof_l,
        weight=w_lin,
        oof_logits=logit(p, eps=0.0),
        info=info,
    )


def _best_epoch(history: list[dict[str, float]]) -> int:
    losses = [(h.get("valid_loss", math.inf), h["epoch"]) for h in history]
    return int(min(losses)[1]) if losses else 0
