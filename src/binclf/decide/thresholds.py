"""Decision thresholds: the search for an objective, the abstain band, and the policy stored in a bundle.

A row is predicted positive when ``proba >= threshold``. The candidate
thresholds on a data set are its distinct ``proba`` values (the smallest
predicts every row positive) plus one value just above the largest
(``np.nextafter(max, inf)``: predicts nothing positive). The chosen threshold
is one of those candidates itself, not a midpoint between neighbours, so that
re-applying it to the same rows reproduces the reported confusion counts and
objective value exactly.

The search sorts once and takes cumulative sums: every objective is evaluated
at every candidate in ``O(n log n)``, and a bootstrap of ``n_boot`` resamples is
the same computation on a ``(n_boot, n)`` matrix of row multiplicities.

Objectives (``f1``, ``cost:C_FP,C_FN``, ``precision:P`` ...) are :mod:`binclf.decide.objectives`.

Ties: among thresholds with the same objective value the constrained metric
decides (higher precision for ``precision:P``, higher recall for ``recall:R``,
lower FPR for ``fpr:A``), then the highest threshold wins.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from binclf.errors import ConfigError
from binclf.decide.metrics import check_pair, check_scores, _resamples
from binclf.decide.objectives import OBJECTIVE_FORMS, Objective, format_float, parse_objective

__all__ = [
    "OBJECTIVE_FORMS",
    "Objective",
    "parse_objective",
    "threshold_scores",
    "choose_threshold",
    "choose_abstain_band",
    "ThresholdPolicy",
]

_CONSTRAINED = ("precision", "recall", "fpr")
# Relative tolerance for "the same objective value": equal rationals computed
# along different float paths (MCC's square root) may differ in the last bits.
_TIE = 1e-12
# Entries of the (resamples, candidates) arrays evaluated at once: the search
# makes ~15 of them, so a pass holds ~15 x 8 x _PASS bytes (~30 MiB).
_PASS = 1 << 18
# From this many rows on, choose_threshold searches in chunks (_chunked_search): one
# resample at a time, candidates a chunk at a time, nothing the size of the rows but the
# sort order, the sorted labels and a resample's multiplicities. Below it, the arrays of
# the whole search are small and evaluating many resamples at once is faster.
_CHUNKED_ROWS = 1 << 17
# Candidates evaluated at once by _chunked_search (~15 arrays of them, ~8 MiB).
_CHUNK = 1 << 16


# --------------------------------------------------------------------------- the search


def _candidates(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by decreasing ``proba`` and group ties.

    Returns ``(order, starts, thresholds)``: the sorting permutation ``(n,)``,
    the start of each tie group in sorted order ``(K,)``, and the ``K + 1``
    candidate thresholds in decreasing order, the first one above the maximum.
    Candidate ``j`` predicts positive the first ``j`` groups.
    """
    order = np.argsort(-proba, kind="stable")
    sorted_p = proba[order]
    # Written into arrays made once (np.r_ copied each part): the same values.
    new_group = np.empty(sorted_p.shape[0], dtype=bool)
    new_group[:1] = True
    np.not_equal(sorted_p[1:], sorted_p[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    del new_group
    thresholds = np.empty(starts.shape[0] + 1)
    thresholds[0] = np.nextafter(sorted_p[0], np.inf)
    np.take(sorted_p, starts, out=thresholds[1:])
    return order, starts, thresholds


def _cumulative_counts(
    y: np.ndarray, order: np.ndarray, starts: np.ndarray, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``tp, fp`` ``(B, K + 1)`` at each candidate and class totals ``P, N`` ``(B, 1)``.

    ``counts`` ``(B, n)`` are row multiplicities of resamples; ``None`` means
    the data itself (``B = 1``).

    Every sum here is of whole numbers (0/1 labels times integer
    multiplicities), exact in float64 in any order: the counts are built a
    resample at a time into ``tp`` and ``fp`` directly, with ~3 arrays of the
    rows alive instead of ~10 (rows x candidates arrays copied by concatenate).
    """
    y_sorted = y[order].astype(np.float64)
    rows = 1 if counts is None else counts.shape[0]
    tp = np.zeros((rows, starts.shape[0] + 1))
    fp = np.zeros((rows, starts.shape[0] + 1))
    if counts is None:
        group = np.add.reduceat(y_sorted, starts)  # positives per tie group
        np.cumsum(group, out=tp[0, 1:])
        np.subtract(np.diff(starts, append=y.shape[0]), group, out=group)  # negatives per group
        np.cumsum(group, out=fp[0, 1:])
    else:
        for b in range(rows):
            w = counts[b, order]
            w_pos = w * y_sorted
            np.subtract(w, w_pos, out=w)  # the negatives' multiplicities
            np.cumsum(np.add.reduceat(w_pos, starts), out=tp[b, 1:])
            np.cumsum(np.add.reduceat(w, starts), out=fp[b, 1:])
    return tp, fp, tp[:, -1:], fp[:, -1:]


def _div(num, den) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _evaluate(obj: Objective, tp, fp, pos, neg) -> dict[str, np.ndarray]:
    """Objective arrays at every candidate, all ``(B, K + 1)``.

    ``value``: the objective as reported (mean cost for ``cost``); ``primary``:
    what is maximised; ``secondary``: the tie-breaker; ``feasible``: whether the
    constraint holds; ``closeness``/``closeness2``: what the fallback maximises
    when no candidate is feasible. Zero divisions count as 0, as scikit-learn's
    ``zero_division=0``.
    """
    # Only what the objective reads is computed: on a bootstrap pass each of these
    # is a (resamples, candidates) array, ~candidates x 8 bytes a resample.
    p = obj.params
    name = obj.name
    fn = pos - tp if name in ("f1", "fbeta", "mcc", "cost") else None
    tn = neg - fp if name in ("balanced_accuracy", "accuracy", "mcc") else None
    n = pos + neg
    if name in ("youden", "balanced_accuracy", "precision", "recall", "fpr"):
        recall = _div(tp, pos)
    if name in ("precision", "recall"):
        precision = _div(tp, tp + fp)
    if name in ("youden", "fpr"):
        fpr = _div(fp, neg)
    # Read-only views, not arrays: constant columns cost no memory.
    ones = np.broadcast_to(True, tp.shape)
    zeros = np.broadcast_to(0.0, tp.shape)
    if name in ("f1", "fbeta"):
        b2 = 1.0 if name == "f1" else p["beta"] ** 2
        # In place: the same sums as ((1 + b2) tp + b2 fn) + fp, addition commuting exactly.
        num = (1.0 + b2) * tp
        den = np.multiply(b2, fn, out=fn)
        den += num
        den += fp
        value = _div(num, den)
        del num, den
    elif name == "youden":
        value = recall - fpr
    elif name == "balanced_accuracy":
        value = 0.5 * (recall + _div(tn, neg))
    elif name == "accuracy":
        value = _div(tp + tn, n)
    elif name == "mcc":
        value = _div(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    elif name == "cost":
        value = _div(p["c_fp"] * fp + p["c_fn"] * fn, n)
    elif name == "precision":
        return dict(value=recall, primary=recall, secondary=precision,
                    feasible=precision >= p["target"] - _TIE,
                    closeness=precision, closeness2=recall)
    elif name == "recall":
        return dict(value=precision, primary=precision, secondary=recall,
                    feasible=recall >= p["target"] - _TIE,
                    closeness=recall, closeness2=precision)
    elif name == "fpr":
        return dict(value=recall, primary=recall, secondary=-fpr,
                    feasible=fpr <= p["target"] + _TIE,
                    closeness=-fpr, closeness2=recall)
    else:  # pragma: no cover - Objective validates the name
        raise ConfigError(f"unknown objective {name!r}")
    primary = -value if name == "cost" else value
    return dict(value=value, primary=primary, secondary=zeros, feasible=ones,
                closeness=primary, closeness2=zeros)


def _tie_bound(best):
    """Values at or above this are tied with ``best`` (float noise, relative above 1): the one tie rule
    of :func:`_argbest` and :class:`_StreamingBest`, so both searches pick the same column."""
    return best - _TIE * np.maximum(1.0, np.abs(best))


def _argbest(primary: np.ndarray, secondary: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row, the first column (highest threshold) maximising ``(primary, secondary)`` within ``mask``.

    Rows whose mask is all False get column 0; callers handle them.
    """
    prim = np.where(mask, primary, -np.inf)
    best = prim.max(axis=1, keepdims=True)
    tied = mask & (primary >= _tie_bound(best))
    sec = np.where(tied, secondary, -np.inf)
    best2 = sec.max(axis=1, keepdims=True)
    tied &= secondary >= _tie_bound(best2)
    return np.argmax(tied, axis=1)


def _select(obj: Objective, tp, fp, pos, neg) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Chosen column, its value and whether the objective was feasible, per row ``(B,)``."""
    ev = _evaluate(obj, tp, fp, pos, neg)
    feasible_any = ev["feasible"].any(axis=1)
    idx = _argbest(ev["primary"], ev["secondary"], ev["feasible"])
    if not feasible_any.all():
        fallback = _argbest(ev["closeness"], ev["closeness2"], np.ones_like(ev["feasible"]))
        idx = np.where(feasible_any, idx, fallback)
    rows = np.arange(tp.shape[0])
    return idx, ev["value"][rows, idx], feasible_any, ev


class _StreamingBest:
    """:func:`_argbest` of one row fed a chunk of columns at a time: the same column.

    The tie rule (:func:`_tie_bound`) compares with the overall best,
    known only at the end; that bound only grows with the best so far, so every
    column kept against the running best is a superset of the final ties, pruned as
    the best grows (a handful of columns, unless many tie exactly). ``value`` is
    kept alongside, to report the chosen column's.
    """

    def __init__(self) -> None:
        self.best = -np.inf
        self.cols = np.empty(0, dtype=np.int64)
        self.primary = self.secondary = self.value = np.empty(0)

    def add(self, offset: int, primary, secondary, mask, value) -> None:
        if mask is None:
            chunk_best = float(primary.max())
        else:
            prim = np.where(mask, primary, -np.inf)
            chunk_best = float(prim.max())
            del prim
        self.best = max(self.best, chunk_best)
        bound = _tie_bound(self.best)
        near = primary >= bound
        if mask is not None:
            near &= mask
        cols = np.flatnonzero(near)
        secondary = np.broadcast_to(secondary, primary.shape)
        keep = self.primary >= bound
        self.cols = np.concatenate([self.cols[keep], cols + offset])
        self.primary = np.concatenate([self.primary[keep], primary[cols]])
        self.secondary = np.concatenate([self.secondary[keep], secondary[cols]])
        self.value = np.concatenate([self.value[keep], value[cols]])

    def choice(self) -> tuple[int, float, float, float]:
        """``(column, value, primary, secondary)`` of the choice; column 0 when nothing was feasible."""
        if not np.isfinite(self.best) or self.cols.shape[0] == 0:
            return 0, float("nan"), float("nan"), float("nan")
        tied = self.primary >= _tie_bound(self.best)
        best2 = float(self.secondary[tied].max())
        tied &= self.secondary >= _tie_bound(best2)
        i = int(np.argmax(tied))
        return int(self.cols[i]), float(self.value[i]), float(self.primary[i]), float(self.secondary[i])


@dataclass
class _Sorted:
    """The rows in decreasing ``proba`` and their tie groups, for :func:`_chunked_search`.

    ``order`` and ``starts`` as :func:`_candidates` (int32 where the rows allow; the
    order within a tie group may differ),
    ``y_sorted`` the labels in that order (int8), ``positive`` where ``y == 1``.
    Candidate ``j`` predicts positive the first ``j`` groups: its threshold is
    :meth:`threshold`.
    """

    proba: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    y_sorted: np.ndarray
    positive: np.ndarray

    @classmethod
    def of(cls, y: np.ndarray, proba: np.ndarray) -> _Sorted:
        # The order within a tie group changes no count (every sum is over whole groups)
        # nor threshold: an unstable ascending argsort, reversed, sorts without the
        # negated copy and the stable sort's buffer (12 bytes a row at the peak, not 20),
        # and the groups are found a chunk of rows at a time, without a sorted copy.
        n = proba.shape[0]
        order = np.argsort(proba)[::-1]
        order = order.astype(np.int32 if n < 2**31 else np.int64)
        pieces, previous = [], None
        for lo in range(0, n, _CHUNK):
            p = proba[order[lo : lo + _CHUNK]]
            new = np.empty(p.shape[0], dtype=bool)
            new[0] = previous is None or p[0] != previous
            np.not_equal(p[1:], p[:-1], out=new[1:])
            pieces.append(np.flatnonzero(new).astype(order.dtype) + lo)
            previous = p[-1]
        starts = np.concatenate(pieces)
        del pieces
        y_sorted = np.empty(n, dtype=np.int8)
        for lo in range(0, n, _CHUNK):
            y_sorted[lo : lo + _CHUNK] = y[order[lo : lo + _CHUNK]]
        return cls(proba, order, starts, y_sorted, y == 1)

    def threshold(self, j) -> np.ndarray:
        """Thresholds of candidates ``j`` (int array), as :func:`_candidates`' ``thresholds[j]``."""
        j = np.asarray(j)
        first = self.proba[self.order[self.starts[np.maximum(j - 1, 0)]]]
        return np.where(j == 0, np.nextafter(self.proba[self.order[0]], np.inf), first)


def _chunked_search(obj: Objective, s: _Sorted, counts: np.ndarray | None = None) -> dict[str, Any]:
    """:func:`_select` for one row, in chunks of candidates, with the same result.

    ``counts`` ``(n,)``: one resample's row multiplicities (``None``: the rows
    themselves). Each chunk's ``tp, fp`` are the running totals plus cumulative
    sums of its groups' counts, whole numbers summed exactly as in
    :func:`_cumulative_counts`; the objective is :func:`_evaluate` on them,
    element for element the same operations. Returns ``{"index", "value",
    "feasible", "closeness", "closeness2"}`` (the last two at the fallback's
    column, for its message).
    """
    n, k = s.order.shape[0], s.starts.shape[0]
    if counts is None:
        pos = int(s.positive.sum())
        total = n
    else:
        pos = int(counts.sum(where=s.positive, dtype=np.int64))
        total = int(counts.sum(dtype=np.int64))
    pos_a, neg_a = np.array([[float(pos)]]), np.array([[float(total - pos)]])
    constrained = obj.name in _CONSTRAINED
    chosen, fallback = _StreamingBest(), _StreamingBest() if constrained else None
    tp_run = fp_run = 0
    # Candidate 0 (nothing positive), then candidates g + 1 for the groups g of each chunk.
    for g0 in (-1, *range(0, k, _CHUNK)):
        g1 = min(g0 + _CHUNK, k)
        if g0 < 0:
            tp = np.zeros((1, 1))
            fp = np.zeros((1, 1))
            offset = 0
        else:
            r0 = int(s.starts[g0])
            r1 = int(s.starts[g1]) if g1 < k else n
            cuts = s.starts[g0:g1] - r0
            ys = s.y_sorted[r0:r1]
            if counts is None:
                g_pos = np.add.reduceat(ys, cuts, dtype=np.int64)
                g_all = np.diff(cuts, append=r1 - r0)
            else:
                w = counts[s.order[r0:r1]]
                g_all = np.add.reduceat(w, cuts, dtype=np.int64)
                w *= ys
                g_pos = np.add.reduceat(w, cuts, dtype=np.int64)
                del w
            g_neg = g_all - g_pos
            tp = np.cumsum(g_pos)
            tp += tp_run
            fp = np.cumsum(g_neg)
            fp += fp_run
            tp_run, fp_run = int(tp[-1]), int(fp[-1])
            tp = tp.astype(np.float64)[None, :]
            fp = fp.astype(np.float64)[None, :]
            offset = g0 + 1
        ev = _evaluate(obj, tp, fp, pos_a, neg_a)
        mask = None if not constrained else ev["feasible"][0]
        chosen.add(offset, ev["primary"][0], ev["secondary"][0], mask, ev["value"][0])
        if constrained:
            fallback.add(offset, ev["closeness"][0], ev["closeness2"][0], None, ev["value"][0])
        del ev, tp, fp
    feasible = bool(np.isfinite(chosen.best))
    if feasible:
        j, value, _, _ = chosen.choice()
        close = close2 = float("nan")
    else:
        j, value, close, close2 = fallback.choice()
    return {"index": j, "value": value, "feasible": feasible, "closeness": close, "closeness2": close2}


def threshold_scores(y, proba, objective: str | Objective) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The objective at every candidate threshold, in ``O(n log n)``.

    ``y``, ``proba``: shape ``(n,)``. Returns ``(thresholds, scores, feasible)``,
    each ``(K + 1,)`` in increasing order of threshold, ``K`` the number of
    distinct probabilities: the candidates are the distinct values of
    ``proba`` plus one just above the largest (nothing predicted positive).
    ``scores`` is the objective's value when predicting ``proba >= t``: the
    mean cost for ``cost`` (lower is better, see
    :attr:`Objective.greater_is_better`), the maximised metric for a
    constrained objective (recall for ``precision:P``); ``feasible`` says where
    the constraint holds (all True for unconstrained objectives).
    """
    obj = parse_objective(objective)
    y, proba = check_pair(y, proba)
    order, starts, thresholds = _candidates(proba)
    tp, fp, pos, neg = _cumulative_counts(y, order, starts)
    ev = _evaluate(obj, tp, fp, pos, neg)
    return thresholds[::-1].copy(), ev["value"][0, ::-1].copy(), ev["feasible"][0, ::-1].copy()


# --------------------------------------------------------------------------- abstain band


def choose_abstain_band(y, proba, *, precision: float = 0.9) -> dict[str, float | None]:
    """The widest band of confident decisions, abstaining in between.

    Finds ``low <= high`` (both candidate thresholds) maximising the fraction
    of rows decided, such that rows with ``proba >= high`` (called positive)
    have precision ``>= precision`` and rows with ``proba < low`` (called
    negative) have negative predictive value ``>= precision``; rows with
    ``low <= proba < high`` abstain. A side with no rows meets its target
    vacuously, so a band always exists (at worst everything abstains). Ties
    go to the lowest ``high``.

    ``y``, ``proba``: shape ``(n,)``. Returns ``{"low", "high", "coverage",
    "precision_pos", "precision_neg", "target"}``; a precision is ``None`` when
    its side is empty.
    """
    if not 0.0 < precision <= 1.0:
        raise ConfigError(f"abstain precision must be in (0, 1], got {precision!r}")
    y, proba = check_pair(y, proba)
    order, starts, desc = _candidates(proba)
    tp, fp, pos, neg = _cumulative_counts(y, order, starts)
    tp, fp, pos, neg = tp[0], fp[0], float(pos[0, 0]), float(neg[0, 0])
    # Work in increasing threshold order: candidate j predicts positive p >= u_j
    # and negative p < u_j.
    u, tp, fp = desc[::-1], tp[::-1], fp[::-1]
    n_pos_pred = tp + fp
    fn, tn = pos - tp, neg - fp
    n_neg_pred = fn + tn
    ok_pos = (n_pos_pred == 0) | (tp >= precision * n_pos_pred - _TIE)
    ok_neg = (n_neg_pred == 0) | (tn >= precision * n_neg_pred - _TIE)
    # For each `high` = u_j, the best `low` is the largest feasible u_i with i <= j
    # (more rows called negative); u_0 (nothing negative) is always feasible.
    best_low = np.maximum.accumulate(np.where(ok_neg, np.arange(u.shape[0]), 0))
    covered = np.where(ok_pos, n_pos_pred + n_neg_pred[best_low], -1.0)
    j = int(np.argmax(covered))
    i = int(best_low[j])
    n = pos + neg
    return {
        "low": float(u[i]),
        "high": float(u[j]),
        "coverage": float(covered[j] / n),
        "precision_pos": float(tp[j] / n_pos_pred[j]) if n_pos_pred[j] else None,
        "precision_neg": float(tn[i] / n_neg_pred[i]) if n_neg_pred[i] else None,
        "target": float(precision),
    }


def _band_containing(y: np.ndarray, proba: np.ndarray, band: dict[str, Any], t: float) -> dict[str, Any]:
    """Widen an abstain band to contain the objective's threshold ``t``.

    Outside the band a decision must agree with both rules: a row the band
    calls positive but ``t`` calls negative (or the reverse) abstains. The
    coverage and the two precisions are recomputed for the widened band.
    """
    low, high = min(band["low"], t), max(band["high"], t)
    if (low, high) == (band["low"], band["high"]):
        return band
    pos_side, neg_side = proba >= high, proba < low
    n_pos, n_neg = int(pos_side.sum()), int(neg_side.sum())
    return {
        **band,
        "low": float(low),
        "high": float(high),
        "coverage": float((n_pos + n_neg) / len(y)),
        "precision_pos": float(y[pos_side].mean()) if n_pos else None,
        "precision_neg": float(1.0 - y[neg_side].mean()) if n_neg else None,
    }


# --------------------------------------------------------------------------- policy


def _pair(v) -> tuple[float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]))


@dataclass(frozen=True)
class ThresholdPolicy:
    """A decision rule chosen on validation data, stored in the model bundle.

    - ``objective``: the objective text (``str(Objective)``);
    - ``threshold``: predict positive when ``proba >= threshold``;
    - ``value``: the objective's value at ``threshold`` on the data it was chosen on;
    - ``threshold_ci``, ``value_ci``: ``(low, high)`` bootstrap percentile
      intervals at ``confidence`` (``None`` without bootstrap);
    - ``analytic_threshold``: for ``cost``, ``c_fp / (c_fp + c_fn)``, the
      Bayes-optimal threshold for calibrated probabilities; otherwise ``None``;
    - ``abstain``: ``None``, or the band of :func:`choose_abstain_band`;
    - ``fallback``: ``None``, or why the objective could not be met and what
      was done instead.
    """

    objective: str
    threshold: float
    value: float
    threshold_ci: tuple[float, float] | None = None
    value_ci: tuple[float, float] | None = None
    analytic_threshold: float | None = None
    abstain: dict[str, Any] | None = None
    fallback: str | None = None
    confidence: float = 0.95

    def decide(self, proba) -> np.ndarray:
        """Decisions ``(n,)`` int64 for probabilities ``(n,)``: 1, 0, or -1 to abstain.

        Without an abstain band: ``1`` where ``proba >= threshold``, else ``0``.
        With one: ``1`` where ``proba >= abstain["high"]``, ``0`` where
        ``proba < abstain["low"]``, ``-1`` in between.
        """
        arr = np.asarray(proba, dtype=np.float64)
        p = check_scores(arr, arr.shape[0] if arr.ndim else -1, name="proba")
        if self.abstain is None:
            return (p >= self.threshold).astype(np.int64)
        out = np.full(p.shape, -1, dtype=np.int64)
        out[p >= self.abstain["high"]] = 1
        out[p < self.abstain["low"]] = 0
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (tuples become lists)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("threshold_ci", "value_ci"):
            if d[key] is not None:
                d[key] = list(d[key])
        if d["abstain"] is not None:
            d["abstain"] = dict(d["abstain"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThresholdPolicy:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        missing = sorted({"objective", "threshold", "value"} - set(d))
        if unknown or missing:
            raise ConfigError(
                f"bad threshold policy: unknown key(s) {unknown}, missing key(s) {missing}; "
                f"expected keys {sorted(names)}"
            )
        kw = dict(d)
        kw["threshold_ci"] = _pair(kw.get("threshold_ci"))
        kw["value_ci"] = _pair(kw.get("value_ci"))
        if kw.get("abstain") is not None:
            kw["abstain"] = dict(kw["abstain"])
        return cls(**kw)


def _fallback_message(obj: Objective, t: float, closest: float, second: float, n: int) -> str:
    """Say which constraint failed, how close the data gets (``closest``, ``second``: the fallback's
    closeness and closeness2 at threshold ``t``), and the threshold used instead."""
    target = format_float(obj.params["target"])
    if obj.name == "precision":
        return (
            f"no threshold reaches precision >= {target} on these {n} rows; the highest precision "
            f"is {closest:.4g} (recall {second:.4g}) at threshold {t:.6g}, which is used instead"
        )
    if obj.name == "recall":
        return (
            f"no threshold reaches recall >= {target} on these {n} rows; the highest recall is "
            f"{closest:.4g} (precision {second:.4g}) at threshold {t:.6g}, which is used instead"
        )
    return (
        f"no threshold keeps the false-positive rate <= {target} on these {n} rows; the lowest "
        f"is {-closest:.4g} (TPR {second:.4g}) at threshold {t:.6g}, which is used instead"
    )


def choose_threshold(
    y,
    proba,
    objective: str | Objective,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    abstain_precision: float | None = None,
) -> ThresholdPolicy:
    """Choose the threshold that optimises ``objective`` on ``(y, proba)``, with intervals.

    ``y``, ``proba``: shape ``(n,)``, validation labels and (calibrated)
    probabilities. The threshold is the best candidate (see the module
    docstring: a ``proba`` value itself, or just above the largest), so the
    reported ``value`` is exactly reproducible on the same rows.

    ``n_boot`` stratified bootstrap resamples (0 to skip) re-choose the
    threshold and recompute the objective; ``threshold_ci`` and ``value_ci``
    are their percentile intervals at ``confidence`` (a resample where the
    objective cannot be met uses the same fallback, silently). They describe how much the
    choice moves with the sample; ``value`` itself is optimistic, being chosen on
    the same rows it is measured on.

    An objective no threshold can meet (``precision:0.99`` on data that never
    reaches it) warns and falls back to the threshold closest to the constraint
    (the highest precision, then the highest recall), recorded in
    ``policy.fallback``. Labels of a single class warn and fall back to 0.5.
    ``abstain_precision`` adds :func:`choose_abstain_band` with that target.
    """
    obj = parse_objective(objective)
    # Labels a byte a row: every use (sums, comparisons, gathers into float64) gives the same numbers.
    y, proba = check_pair(y, proba, dtype=np.int8)
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")
    n = int(y.shape[0])
    positives = int(y.sum())
    analytic = None
    if obj.name == "cost":
        analytic = obj.params["c_fp"] / (obj.params["c_fp"] + obj.params["c_fn"])
    abstain = None
    if abstain_precision is not None:
        abstain = choose_abstain_band(y, proba, precision=abstain_precision)

    if positives in (0, n):
        message = (
            f"all {n} labels are {1 if positives else 0}, so no threshold can be chosen from "
            f"the data for {obj}; using 0.5. Choose the threshold on validation data holding "
            "both classes"
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        pred_pos = proba >= 0.5
        tp = np.array([[float((pred_pos & (y == 1)).sum())]])
        fp = np.array([[float((pred_pos & (y == 0)).sum())]])
        pos = np.array([[float(positives)]])
        neg = np.array([[float(n - positives)]])
        value = float(_evaluate(obj, tp, fp, pos, neg)["value"][0, 0])
        return ThresholdPolicy(
            objective=str(obj), threshold=0.5, value=value, analytic_threshold=analytic,
            abstain=abstain, fallback=message, confidence=confidence,
        )

    if n >= _CHUNKED_ROWS:
        threshold, value, feasible, fallback, threshold_ci, value_ci = _choose_chunked(
            obj, y, proba, n_boot=n_boot, confidence=confidence, seed=seed
        )
    else:
        threshold, value, feasible, fallback, threshold_ci, value_ci = _choose_at_once(
            obj, y, proba, n_boot=n_boot, confidence=confidence, seed=seed
        )
    if not feasible:
        warnings.warn(f"threshold objective {obj} cannot be met: {fallback}", UserWarning, stacklevel=2)

    if abstain is not None:
        abstain = _band_containing(y, proba, abstain, threshold)
    return ThresholdPolicy(
        objective=str(obj),
        threshold=threshold,
        value=value,
        threshold_ci=threshold_ci,
        value_ci=value_ci,
        analytic_threshold=analytic,
        abstain=abstain,
        fallback=fallback,
        confidence=float(confidence),
    )


def _intervals(chosen_t: list, chosen_v: list, confidence: float) -> tuple[tuple[float, float] | None, ...]:
    tail = 50.0 * (1.0 - confidence)
    qs = [tail, 100.0 - tail]
    return _pair(np.percentile(np.concatenate(chosen_t), qs)), _pair(np.percentile(np.concatenate(chosen_v), qs))


def _choose_at_once(obj: Objective, y: np.ndarray, proba: np.ndarray, *, n_boot: int, confidence: float, seed: int):
    """The search on whole arrays, many resamples at once: ``(threshold, value, feasible, fallback, t_ci, v_ci)``."""
    n = int(y.shape[0])
    order, starts, thresholds = _candidates(proba)
    tp, fp, pos, neg = _cumulative_counts(y, order, starts)
    idx, value, feasible, ev = _select(obj, tp, fp, pos, neg)
    j = int(idx[0])
    fallback = None
    if not feasible[0]:
        fallback = _fallback_message(
            obj, float(thresholds[j]), float(ev["closeness"][0, j]), float(ev["closeness2"][0, j]), n
        )
    del tp, fp, ev  # the bootstrap below makes its own, one resample at a time

    threshold_ci = value_ci = None
    if n_boot:
        rows_per_pass = max(1, _PASS // n)
        chosen_t, chosen_v = [], []
        # The ~15 (resamples, candidates) arrays of the search are made a few resamples at a time.
        for _, counts in _resamples(y, n_boot=n_boot, rng=np.random.default_rng(seed), at_once=rows_per_pass):
            b_tp, b_fp, b_pos, b_neg = _cumulative_counts(y, order, starts, counts)
            b_idx, b_value, _, _ = _select(obj, b_tp, b_fp, b_pos, b_neg)
            chosen_t.append(thresholds[b_idx])
            chosen_v.append(b_value)
        threshold_ci, value_ci = _intervals(chosen_t, chosen_v, confidence)
    return float(thresholds[j]), float(value[0]), bool(feasible[0]), fallback, threshold_ci, value_ci


def _choose_chunked(obj: Objective, y: np.ndarray, proba: np.ndarray, *, n_boot: int, confidence: float, seed: int):
    """:func:`_choose_at_once` in chunks (:func:`_chunked_search`), one resample at a time: the same result.

    Millions of rows: the whole-array search held ~80 bytes a row and its bootstrap
    ~130 (2.4M rows, tracemalloc: +190 / +304 MB); this holds the sort order and
    groups (int32), the sorted labels, and a resample's multiplicities (int32,
    drawn exactly as before).
    """
    n = int(y.shape[0])
    s = _Sorted.of(y, proba)
    main = _chunked_search(obj, s)
    j = main["index"]
    threshold = float(s.threshold(j))
    fallback = None
    if not main["feasible"]:
        fallback = _fallback_message(obj, threshold, main["closeness"], main["closeness2"], n)

    threshold_ci = value_ci = None
    if n_boot:
        chosen_j, chosen_v = [], []
        # A resample's multiplicities at a time (int32, drawn as the whole-array search draws them).
        for _, counts in _resamples(y, n_boot=n_boot, rng=np.random.default_rng(seed), at_once=1, dtype=np.int32):
            b = _chunked_search(obj, s, counts[0])
            chosen_j.append(b["index"])
            chosen_v.append(b["value"])
        threshold_ci, value_ci = _intervals([s.threshold(np.array(chosen_j))], [np.array(chosen_v)], confidence)
    return threshold, float(main["value"]), bool(main["feasible"]), fallback, threshold_ci, value_ci
