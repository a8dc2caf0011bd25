"""Metrics of binary predictions: scikit-learn's, computed from sorted scores, plus a vectorised bootstrap.

Inputs everywhere: ``y`` of shape ``(n,)`` holding 0/1 (int, bool or float) and
``proba`` of shape ``(n,)``, the probability of the positive class in ``[0, 1]``.
Nothing here needs torch.

The point metrics are :mod:`sklearn.metrics`' ones (the same formulas, tested
against it), computed from one sorted copy of the scores per class, in chunks,
so that millions of rows take ~14 bytes a row rather than scikit-learn's ~115
(see :func:`binary_metrics`). The bootstrap does not call
scikit-learn once per resample: a resample is a vector of row multiplicities,
so every metric of ``n_boot`` resamples is a few matrix products and cumulative
sums over one ``(n_boot, n)`` count matrix (200 resamples of 5,000 rows take
a few tens of milliseconds).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from binclf.errors import ConfigError, DataError
from binclf.numeric import row_log_loss
from binclf.runtime import release_freed_memory

__all__ = [
    "BINARY_METRIC_KEYS",
    "BOOTSTRAP_METRICS",
    "HEADLINE_METRICS",
    "METRIC_LABELS",
    "METRIC_NAMES",
    "format_number",
    "check_target",
    "check_scores",
    "check_pair",
    "expected_calibration_error",
    "reliability_curve",
    "binary_metrics",
    "bootstrap_intervals",
]

#: The keys of :func:`binary_metrics`, in the order a table shows them.
BINARY_METRIC_KEYS: tuple[str, ...] = (
    "n",
    "positives",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "ece_mass",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
    "balanced_accuracy",
    "tn",
    "fp",
    "fn",
    "tp",
    "threshold",
)

#: The metrics reported with a bootstrap interval by default (train, evaluate, report).
#: Not ECE: resampling adds noise to every bin's gap, so the bootstrap ECE sits
#: above the estimate and its percentile interval often excludes it.
HEADLINE_METRICS: tuple[str, ...] = (
    "roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "f1", "precision", "recall",
)

#: Short display names of the metrics, in the order a text table shows them.
METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "log_loss": "log-loss",
    "brier": "Brier",
    "ece": "ECE (15 bins)",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
}


#: Full names of every key of :func:`binary_metrics` (the HTML report's metric table).
METRIC_NAMES: dict[str, str] = {
    "n": "rows",
    "positives": "positives",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC (average precision)",
    "log_loss": "log-loss",
    "brier": "Brier score",
    "ece": "ECE (15 equal-width bins)",
    "ece_mass": "ECE (15 equal-mass bins)",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "mcc": "MCC",
    "balanced_accuracy": "balanced accuracy",
    "tn": "true negatives",
    "fp": "false positives",
    "fn": "false negatives",
    "tp": "true positives",
    "threshold": "threshold",
}


def format_number(x: object, digits: int = 3) -> str:
    """A metric or setting as text: ``n/a`` for None/NaN, whole numbers without decimals, else ``digits``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        v = float(x)
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v)}"
        return f"{v:.{digits}f}"
    try:
        v = float(x)  # numpy scalars
    except (TypeError, ValueError):
        return str(x)
    return format_number(v, digits)

#: The metrics :func:`bootstrap_intervals` can resample.
BOOTSTRAP_METRICS: tuple[str, ...] = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
    "balanced_accuracy",
)

_STRATEGIES = ("uniform", "quantile")
# The bootstrap's resamples are those of drawing (resamples, rows) entries at most
# at once (_resamples). Fixed, because the block decides which draws of the
# generator go to which resample; no array of that size is made.
_BLOCK = 4_000_000
# Entries of the (resamples, rows) arrays the metrics are computed on at once
# (~10 of them, so ~20 MiB a pass).
_PASS = 1 << 18


# --------------------------------------------------------------------------- validation


def check_target(y, *, name: str = "y", dtype: Any = np.int64) -> np.ndarray:
    """``y`` as a 1-D array of 0/1 (int64, or ``dtype``), or a :class:`DataError` saying what is wrong."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        raise DataError(
            f"{name} must be 1-D of shape (n,), got shape {arr.shape}; flatten it with .ravel()"
        )
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D of shape (n,), got shape {arr.shape}")
    # copy=False: an array of the right dtype is returned as is (nothing here writes to it);
    # a copy of millions of labels is tens of MB at the decision steps' peak.
    if arr.dtype == bool:
        return arr.astype(dtype, copy=False)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(
            f"{name} must hold the numbers 0 and 1, got dtype {arr.dtype}; "
            "encode the target as 0/1 first"
        )
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name} must hold only 0 and 1, found {arr[row].item()!r} at row {row} "
            f"({int(bad.sum())} such rows); encode the target as 0/1 first"
        )
    return arr.astype(dtype, copy=False)


def check_scores(x, n: int, *, name: str = "proba", probabilities: bool = True) -> np.ndarray:
    """``x`` as a finite 1-D float64 array of length ``n`` (in ``[0, 1]`` if ``probabilities``)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        raise DataError(
            f"{name} must be 1-D of shape (n,), got shape {arr.shape}; "
            "squeeze a (n, 1) model output with .ravel()"
        )
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D of shape (n,), got shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"y has {n} rows but {name} has {arr.shape[0]}; pass one value per row")
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise DataError(
            f"{name} must be finite, found {arr[row]} at row {row} "
            f"({int((~finite).sum())} such rows)"
        )
    if probabilities:
        out = (arr < 0.0) | (arr > 1.0)
        if out.any():
            row = int(np.flatnonzero(out)[0])
            raise DataError(
                f"{name} must be probabilities in [0, 1], found {arr[row]} at row {row}; "
                "pass sigmoid(logits), not the logits"
            )
    return arr


def check_pair(y, proba, *, dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """``(y, proba)`` checked as by :func:`check_target` (``y`` as ``dtype``) and :func:`check_scores`; ``y`` not empty."""
    y = check_target(y, dtype=dtype)
    if y.shape[0] == 0:
        raise DataError("y is empty; metrics need at least one row")
    return y, check_scores(proba, y.shape[0])


# --------------------------------------------------------------------------- calibration


def _bin_ids(proba: np.ndarray, *, n_bins: int, strategy: str) -> np.ndarray:
    """Bin of each row, with scikit-learn's ``calibration_curve`` edges."""
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.percentile(proba, np.linspace(0.0, 100.0, n_bins + 1))
    else:
        raise ConfigError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
    return np.searchsorted(edges[1:-1], proba, side="right")


def reliability_curve(
    y, proba, *, n_bins: int = 15, strategy: str = "uniform"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of a reliability diagram: per non-empty bin, mean prediction vs observed rate.

    ``strategy="uniform"`` uses ``n_bins`` equal-width bins on ``[0, 1]``;
    ``"quantile"`` uses equal-mass bins (edges at the quantiles of ``proba``).
    The edges are scikit-learn's ``calibration_curve`` ones.

    Returns ``(mean_pred, frac_pos, counts)``, each of shape ``(k,)`` with
    ``k <= n_bins`` the number of non-empty bins, in increasing order of bin.
    """
    y, proba = check_pair(y, proba)
    ids = _bin_ids(proba, n_bins=n_bins, strategy=strategy)
    counts = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=proba, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y.astype(np.float64), minlength=n_bins)
    keep = counts > 0
    return sum_p[keep] / counts[keep], sum_y[keep] / counts[keep], counts[keep]


def expected_calibration_error(
    y, proba, *, n_bins: int = 15, strategy: str = "uniform"
) -> float:
    """Expected calibration error: ``sum_b (n_b / n) |mean(y_b) - mean(proba_b)|``.

    ``strategy="uniform"``: ``n_bins`` equal-width bins; ``"quantile"``:
    equal-mass bins, less noisy when the probabilities crowd near 0 or 1.
    ``y``, ``proba``: shape ``(n,)``. Returns a float in ``[0, 1]``.
    """
    y, proba = check_pair(y, proba)
    ids = _bin_ids(proba, n_bins=n_bins, strategy=strategy)
    sum_p = np.bincount(ids, weights=proba, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y.astype(np.float64), minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / y.shape[0])


# --------------------------------------------------------------------------- point metrics


# Rows of a chunk in the passes of binary_metrics (2 MiB of float64): their temporaries
# stay this small whatever the number of rows.
_CHUNK = 1 << 18


def _by_class(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positives' and the negatives' probabilities, each sorted increasing (``8 n`` bytes together)."""
    pos = proba[y == 1]
    pos.sort()
    neg = proba[y == 0]
    neg.sort()
    return pos, neg


def _chunks(n: int):
    return ((lo, min(lo + _CHUNK, n)) for lo in range(0, n, _CHUNK))


def _ranking(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and average precision from the sorted class scores (both classes present).

    ROC-AUC is the Mann-Whitney statistic, a positive-negative tie counting half:
    twice the wins is a whole number, summed exactly, and divided once by
    ``2 P N`` (the area under scikit-learn's trapezoidal ROC curve, which is the
    same rational number rounded along another path). Average precision is
    scikit-learn's ``sum over thresholds of (recall step) x precision``: each
    positive row steps recall by ``1 / P`` at its own score, where precision is
    ``#positives >= s / #rows >= s`` (tied rows share one threshold, as there).
    """
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    twice_wins = 0
    precision_sum = 0.0
    for lo, hi in _chunks(n_pos):
        s = pos[lo:hi]
        below = np.searchsorted(neg, s, side="left")  # negatives < s
        not_above = np.searchsorted(neg, s, side="right")  # negatives <= s
        twice_wins += int(below.sum()) + int(not_above.sum())
        tp = n_pos - np.searchsorted(pos, s, side="left")  # positives >= s
        fp = n_neg - below  # negatives >= s
        precision_sum += float((tp / (tp + fp)).sum())
    return twice_wins / (2 * n_pos * n_neg), precision_sum / n_pos


def _calibration_error(pos: np.ndarray, neg: np.ndarray, edges: np.ndarray, n: int) -> float:
    """:func:`expected_calibration_error` from the sorted class scores: each bin is a slice of each.

    A row with ``edges[b] <= p < edges[b + 1]`` (inner edges) is in bin ``b``, as
    :func:`_bin_ids`; the sums are the same up to the order of float additions.
    """
    inner = edges[1:-1]
    cut_pos = np.r_[0, np.searchsorted(pos, inner, side="left"), pos.shape[0]]
    cut_neg = np.r_[0, np.searchsorted(neg, inner, side="left"), neg.shape[0]]
    total = 0.0
    for b in range(len(inner) + 1):
        sum_p = float(pos[cut_pos[b] : cut_pos[b + 1]].sum()) + float(neg[cut_neg[b] : cut_neg[b + 1]].sum())
        total += abs(float(cut_pos[b + 1] - cut_pos[b]) - sum_p)
    return total / n


def binary_metrics(y, proba, *, threshold: float = 0.5) -> dict[str, float]:
    """Every metric binclf reports, for probabilities ``proba`` and labels ``y`` (both ``(n,)``).

    Rows with ``proba >= threshold`` are predicted positive. The keys are
    :data:`BINARY_METRIC_KEYS`; ``n``, ``positives`` and the confusion counts
    ``tn, fp, fn, tp`` are ints, the rest floats. ``ece`` uses 15 equal-width
    bins, ``ece_mass`` 15 equal-mass bins.

    Degenerate data gives defined values, not exceptions or warnings: with a
    single class in ``y``, ``roc_auc`` and ``pr_auc`` are ``nan``; when nothing
    is predicted positive, ``precision`` (and ``f1``) is 0.

    Every value is scikit-learn's (``roc_auc_score``, ``average_precision_score``,
    ``log_loss``, ``brier_score_loss``, ``matthews_corrcoef``, ...; the tests
    compare them to ~1e-12, ties included), computed here from one sorted copy
    of the scores per class in chunks: scikit-learn's ranking metrics and
    log-loss each made ~10 arrays of the rows, ~115 bytes a row at the peak,
    hundreds of MB on the millions of out-of-fold rows ``binclf train`` scores;
    this holds ~14 (2.4M rows, tracemalloc: +274 -> +33 MB, 4.4 -> 0.3 s).
    """
    y, proba = check_pair(y, proba, dtype=np.int8)  # labels a byte a row (float32 ones from training were copied to int64)
    threshold = float(threshold)
    n = int(y.shape[0])
    # The equal-mass edges first: np.percentile copies the scores, freed before the sorted copies.
    mass_edges = np.percentile(proba, np.linspace(0.0, 100.0, 16))
    pos, neg = _by_class(y, proba)
    positives, negatives = int(pos.shape[0]), int(neg.shape[0])
    both = positives > 0 and negatives > 0
    # Predicted positive: proba >= threshold, counted on the sorted scores.
    tp = positives - int(np.searchsorted(pos, threshold, side="left"))
    fp = negatives - int(np.searchsorted(neg, threshold, side="left"))
    fn, tn = positives - tp, negatives - fp
    roc_auc, pr_auc = _ranking(pos, neg) if both else (float("nan"), float("nan"))
    # log-loss as scikit-learn: probabilities clipped to [eps, 1 - eps], log(p) and log(1 - p).
    eps = float(np.finfo(np.float64).eps)
    loss = 0.0
    squares = 0.0
    for lo, hi in _chunks(positives):
        s = np.clip(pos[lo:hi], eps, 1.0 - eps)
        loss -= float(np.log(s).sum())
        squares += float(np.square(1.0 - pos[lo:hi]).sum())
    for lo, hi in _chunks(negatives):
        s = np.subtract(1.0, np.clip(neg[lo:hi], eps, 1.0 - eps))
        loss -= float(np.log(s).sum())
        squares += float(np.square(neg[lo:hi]).sum())
    ece = _calibration_error(pos, neg, np.linspace(0.0, 1.0, 16), n)
    ece_mass = _calibration_error(pos, neg, mass_edges, n)
    del pos, neg
    release_freed_memory(array_bytes=proba.nbytes)
    # The confusion-matrix metrics with scikit-learn's formulas and zero_division=0.
    t_sum = np.array([negatives, positives], dtype=np.float64)
    p_sum = np.array([tn + fn, fp + tp], dtype=np.float64)
    n_samples = p_sum.sum()
    cov_ytyp = float(tn + tp) * n_samples - np.dot(t_sum, p_sum)
    cov_ypyp = n_samples**2 - np.dot(p_sum, p_sum)
    cov_ytyt = n_samples**2 - np.dot(t_sum, t_sum)
    cov_ypyp_ytyt = cov_ypyp * cov_ytyt
    mcc = 0.0 if cov_ypyp_ytyt == 0 else float(cov_ytyp / np.sqrt(cov_ypyp_ytyt))
    # Mean recall over the classes present in y, as scikit-learn's balanced accuracy.
    recalls = ([tn / negatives] if negatives else []) + ([tp / positives] if positives else [])
    return {
        "n": n,
        "positives": positives,
        "roc_auc": float(roc_auc),
        "pr_auc": float(pr_auc),
        "log_loss": loss / n,
        "brier": squares / n,
        "ece": ece,
        "ece_mass": ece_mass,
        "accuracy": (tp + tn) / n,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / positives if positives else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "mcc": mcc,
        "balanced_accuracy": float(sum(recalls) / len(recalls)),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "threshold": threshold,
    }


# --------------------------------------------------------------------------- bootstrap


def _resamples(
    y: np.ndarray, *, n_boot: int, rng: np.random.Generator, at_once: int, dtype: Any = np.float64
) -> Iterator[tuple[int, np.ndarray]]:
    """Row multiplicities of ``n_boot`` stratified bootstrap resamples, ``at_once`` resamples at a time.

    Yields ``(first, counts)``: resamples ``first, first + 1, ...`` as a
    ``(<= at_once, n)`` array of ``dtype``, one buffer reused (use it before the
    next). Positives and negatives are each drawn with replacement from their
    own rows, so every resample keeps the class counts of ``y`` (and both
    classes, when ``y`` has both).

    The resamples are those of drawing, per block of ``_BLOCK // n`` resamples,
    all the block's positives and then all its negatives (one ``(block, m)``
    draw per class of ``m`` rows, as the bootstrap first did: a seed gives the same resamples,
    tested). The block's array is not made: a copy of the generator replays the
    positives beside the negatives (each block's positives are drawn twice, the
    first time only to reach the negatives' draws). The block's counts were the
    bootstrap's largest array (a block of 4M entries: 16-32 MB, whatever the rows).
    The same speed inside binclf's session (:func:`binclf.runtime.tune_malloc`);
    with glibc's default thresholds, nothing large is freed any more to raise
    its mmap threshold, so each pass's temporaries are mapped afresh (measured:
    ``bootstrap_intervals`` of 150k rows, 1.4 -> 2.2 s when called outside one).
    """
    n = y.shape[0]
    block = max(1, _BLOCK // max(n, 1))
    classes = [r for r in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)) if r.shape[0]]
    buffer = np.empty((max(1, min(at_once, n_boot)), n), dtype=dtype)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        gens = [copy.deepcopy(rng) for _ in classes]  # each at the block's first draw
        if len(classes) == 2:  # the negatives' draws follow all the block's positives
            m = classes[0].shape[0]
            for _ in range(size):
                gens[1].integers(0, m, size=m)
        for lo in range(0, size, at_once):
            counts = buffer[: min(at_once, size - lo)]
            for b in range(counts.shape[0]):
                # A row is in one class, so its count is assigned, not added.
                for idx, g in zip(classes, gens):
                    counts[b, idx] = np.bincount(g.integers(0, idx.shape[0], size=idx.shape[0]), minlength=idx.shape[0])
            yield start + lo, counts
        if gens:
            rng.bit_generator.state = gens[-1].bit_generator.state  # past the block's last draw
    del buffer


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _sort_groups(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order of decreasing ``proba`` and the start of each tie group in it (for the ranking metrics)."""
    order = np.argsort(-proba, kind="stable")
    sorted_p = proba[order]
    return order, np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])


def _weighted_metrics(
    y: np.ndarray,
    proba: np.ndarray,
    counts: np.ndarray,
    *,
    threshold: float,
    names: Sequence[str],
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Metrics of many resamples at once.

    ``counts`` ``(B, n)`` holds how often each row appears in each resample;
    returns ``{name: (B,) array}``, equal to the scikit-learn metric computed on
    the rows repeated accordingly (``nan`` where undefined). ``groups``:
    :func:`_sort_groups` of ``proba``, when the caller sorted once for many calls.
    """
    yf = y.astype(np.float64)
    w_pos = counts * yf
    w_neg = counts - w_pos
    n_pos = w_pos.sum(axis=1)
    n_neg = w_neg.sum(axis=1)
    total = n_pos + n_neg
    out: dict[str, np.ndarray] = {}

    if "roc_auc" in names or "pr_auc" in names:
        # Ties share a group: sort once, sum the multiplicities per distinct value.
        order, starts = groups if groups is not None else _sort_groups(proba)
        g_pos = np.add.reduceat(w_pos[:, order], starts, axis=1)
        g_neg = np.add.reduceat(w_neg[:, order], starts, axis=1)
        cum_pos = np.cumsum(g_pos, axis=1)
        cum_neg = np.cumsum(g_neg, axis=1)
        undefined = (n_pos == 0) | (n_neg == 0)
        if "roc_auc" in names:
            # Mann-Whitney: each positive beats the negatives below it, ties count half.
            below = n_neg[:, None] - cum_neg
            wins = (g_pos * (below + 0.5 * g_neg)).sum(axis=1)
            out["roc_auc"] = np.where(undefined, np.nan, _safe_div(wins, n_pos * n_neg))
        if "pr_auc" in names:
            # scikit-learn's average precision: sum of (recall step) * precision.
            precision = _safe_div(cum_pos, cum_pos + cum_neg)
            ap = _safe_div((g_pos * precision).sum(axis=1), n_pos)
            out["pr_auc"] = np.where(undefined, np.nan, ap)

    if "log_loss" in names:
        out["log_loss"] = counts @ row_log_loss(yf, proba) / total
    if "brier" in names:
        out["brier"] = counts @ (proba - yf) ** 2 / total
    if "ece" in names:
        ids = _bin_ids(proba, n_bins=15, strategy="uniform")
        onehot = np.zeros((proba.shape[0], 15))
        onehot[np.arange(proba.shape[0]), ids] = 1.0
        gap = w_pos @ onehot - (counts * proba) @ onehot
        out["ece"] = np.abs(gap).sum(axis=1) / total

    threshold_names = {"accuracy", "precision", "recall", "f1", "mcc", "balanced_accuracy"}
    if threshold_names.intersection(names):
        pred = (proba >= threshold).astype(np.float64)
        tp = w_pos @ pred
        fp = w_neg @ pred
        fn = n_pos - tp
        tn = n_neg - fp
        out["accuracy"] = (tp + tn) / total
        out["precision"] = _safe_div(tp, tp + fp)
        out["recall"] = _safe_div(tp, n_pos)
        out["f1"] = _safe_div(2.0 * tp, 2.0 * tp + fp + fn)
        out["mcc"] = _safe_div(
            tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        )
        # Mean recall over the classes present, as scikit-learn does.
        recalls = np.stack([_safe_div(tp, n_pos), _safe_div(tn, n_neg)])
        present = np.stack([n_pos > 0, n_neg > 0])
        out["balanced_accuracy"] = _safe_div((recalls * present).sum(axis=0), present.sum(axis=0))
    return {name: out[name] for name in names}


def bootstrap_intervals(
    y,
    proba,
    *,
    threshold: float = 0.5,
    metrics: Sequence[str] = HEADLINE_METRICS,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals of metrics, ``{name: (low, high)}``.

    Rows are resampled with replacement within each class (stratified), so
    every resample has the class counts of ``y`` and the ranking metrics stay
    defined. ``metrics`` are names from :data:`BOOTSTRAP_METRICS`; threshold
    metrics predict positive when ``proba >= threshold``. ``confidence=0.95``
    gives the 2.5th and 97.5th percentiles. Undefined metrics (``roc_auc`` on
    single-class ``y``) give ``(nan, nan)``. Reproducible for a given ``seed``.
    ``n_boot=0`` skips the bootstrap and returns ``{}``.

    ``y``, ``proba``: shape ``(n,)``.
    """
    y, proba = check_pair(y, proba)
    names = tuple(metrics)
    unknown = [m for m in names if m not in BOOTSTRAP_METRICS]
    if unknown:
        raise ConfigError(
            f"unknown bootstrap metric(s) {unknown}; choose from {list(BOOTSTRAP_METRICS)}"
        )
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    if n_boot == 0:
        return {}
    rng = np.random.default_rng(seed)
    # Each resample's metric values written in place (no array kept per block).
    values = {name: np.empty(n_boot) for name in names}
    groups = _sort_groups(proba) if {"roc_auc", "pr_auc"} & set(names) else None
    # The metrics make ~10 arrays the shape of the counts: a few resamples at a time.
    rows_per_pass = max(1, _PASS // y.shape[0])
    for first, counts in _resamples(y, n_boot=n_boot, rng=rng, at_once=rows_per_pass):
        for name, vals in _weighted_metrics(
            y, proba, counts, threshold=float(threshold), names=names, groups=groups
        ).items():
            values[name][first : first + len(counts)] = vals
    tail = 50.0 * (1.0 - confidence)
    intervals: dict[str, tuple[float, float]] = {}
    for name in names:
        vals = values[name]
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            intervals[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(vals, [tail, 100.0 - tail])
            intervals[name] = (float(lo), float(hi))
    return intervals
