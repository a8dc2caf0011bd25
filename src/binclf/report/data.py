"""The numbers of the model report, as plain dicts and numpy arrays: no matplotlib, no HTML.

:func:`report_data` gathers everything a report shows from labels and
probabilities: ROC and PR curves with the operating point, reliability curves
before and after calibration, per-class score histograms, metrics against the
threshold, the confusion matrix, the data summary and the training curve, so
the same numbers can feed other views (:mod:`binclf.report.figures` draws them,
:mod:`binclf.report.html` lays them out).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from binclf.decide.metrics import binary_metrics, bootstrap_intervals, reliability_curve
from binclf.decide.thresholds import ThresholdPolicy, parse_objective, threshold_scores
from binclf.numeric import logit, sigmoid

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from binclf.predictor import Predictor

__all__ = ["report_data"]

# Most points a curve keeps for plotting; the metrics are computed on all rows.
_MAX_CURVE_POINTS = 1500
_N_BINS = 15


def _thin(n: int, limit: int = _MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` evenly spread points of ``n``, keeping both ends."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _counts_by_threshold(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """``tp, fp, fn, tn`` ``(k,)`` when predicting ``p >= t`` for each of ``thresholds`` ``(k,)``.

    One sort and one ``searchsorted``: ``O((n + k) log n)``.
    """
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order]
    # Positives / negatives among the rows with p below each threshold.
    cum_pos = np.r_[0.0, np.cumsum(ys)]
    below = np.searchsorted(ps, thresholds, side="left")
    pos_below = cum_pos[below]
    neg_below = below - pos_below
    n_pos, n_neg = cum_pos[-1], len(ys) - cum_pos[-1]
    tp, fp = n_pos - pos_below, n_neg - neg_below
    return tp, fp, n_pos - tp, n_neg - fp


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(a, b).shape)
    np.divide(a, b, out=out, where=np.asarray(b) != 0)
    return out


def _threshold_grid(p: np.ndarray) -> np.ndarray:
    """Thresholds to draw metric curves at: an even grid on [0, 1] plus quantiles of ``p``.

    The quantiles keep resolution where the probabilities crowd (near 0 on
    imbalanced data), the grid where they are sparse.
    """
    quantiles = np.quantile(p, np.linspace(0.0, 1.0, 401))
    return np.unique(np.r_[np.linspace(0.0, 1.0, 401), quantiles])


def _roc_pr(y: np.ndarray, p: np.ndarray, metrics: Mapping[str, float]) -> tuple[dict, dict]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    both = 0 < y.sum() < len(y)
    tp, fp, fn, tn = (float(metrics[k]) for k in ("tp", "fp", "fn", "tn"))
    roc: dict[str, Any] = {"auc": metrics.get("roc_auc"), "available": bool(both)}
    pr: dict[str, Any] = {"ap": metrics.get("pr_auc"), "prevalence": float(y.mean()), "available": bool(both)}
    if both:
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
        keep = _thin(len(fpr))
        roc.update(fpr=fpr[keep], tpr=tpr[keep])
        precision, recall, _ = precision_recall_curve(y, p, drop_intermediate=True)
        keep = _thin(len(recall))
        pr.update(precision=precision[keep], recall=recall[keep])
    roc["point"] = (float(_div(np.array(fp), np.array(fp + tn))), float(_div(np.array(tp), np.array(tp + fn))))
    pr["point"] = (float(_div(np.array(tp), np.array(tp + fn))), float(_div(np.array(tp), np.array(tp + fp))))
    return roc, pr


def _reliability(y: np.ndarray, curves: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Reliability curves (equal-width and equal-mass bins) and ECEs of each probability set."""
    from binclf.decide.metrics import expected_calibration_error

    out: dict[str, Any] = {"n_bins": _N_BINS, "series": []}
    for label, p in curves.items():
        series: dict[str, Any] = {"label": label}
        for strategy in ("uniform", "quantile"):
            mean_p, frac, counts = reliability_curve(y, p, n_bins=_N_BINS, strategy=strategy)
            series[strategy] = {"mean_pred": mean_p, "frac_pos": frac, "counts": counts}
            series[f"ece_{strategy}"] = expected_calibration_error(y, p, n_bins=_N_BINS, strategy=strategy)
        out["series"].append(series)
    return out


def _histogram(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Per-class histograms of ``p`` on 40 equal-width bins (or finer near 0 when ``p`` crowds there)."""
    top = float(np.quantile(p, 0.995)) if len(p) else 1.0
    # On strongly imbalanced data nearly every row sits near 0: zoom in so the
    # bins resolve the positives instead of one spike at the left edge.
    upper = 1.0 if top > 0.5 else max(0.05, math.ceil(top * 20) / 20)
    edges = np.linspace(0.0, upper, 41)
    clipped = np.minimum(p, upper)
    neg, _ = np.histogram(clipped[y == 0], bins=edges)
    pos, _ = np.histogram(clipped[y == 1], bins=edges)
    return {"edges": edges, "negative": neg, "positive": pos, "upper": upper,
            "n_above": int((p > upper).sum())}


def _threshold_curves(y: np.ndarray, p: np.ndarray, objective: str | None) -> dict[str, Any]:
    """Precision, recall, F1, balanced accuracy (and the objective) at thresholds on a grid."""
    t = _threshold_grid(p)
    tp, fp, fn, tn = _counts_by_threshold(y, p, t)
    out: dict[str, Any] = {
        "thresholds": t,
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "balanced_accuracy": 0.5 * (_div(tp, tp + fn) + _div(tn, tn + fp)),
        "predicted_positive": _div(tp + fp, np.full(t.shape, float(len(y)))),
    }
    if objective is not None and 0 < y.sum() < len(y):
        obj = parse_objective(objective)
        if obj.name not in ("f1", "balanced_accuracy", "precision", "recall"):
            # Exact objective values at every candidate threshold, thinned for drawing.
            ts, scores, _ = threshold_scores(y, p, obj)
            keep = _thin(len(ts))
            out["objective"] = {"name": str(obj), "thresholds": ts[keep], "values": scores[keep],
                                "greater_is_better": obj.greater_is_better}
    return out


def _flatten_history(history: Any) -> list[list[dict[str, float]]]:
    """History as a list of runs (one per ensemble member), each a list of epoch dicts.

    Accepts a single run (list of dicts) or a list of runs (list of lists);
    anything else gives ``[]``.
    """
    if not history or not isinstance(history, Sequence):
        return []
    if all(isinstance(h, Mapping) for h in history):
        return [list(history)]
    runs = [list(h) for h in history if isinstance(h, Sequence) and h and all(isinstance(e, Mapping) for e in h)]
    return runs


def _training_curve(history: Any) -> dict[str, Any]:
    runs = []
    for run in _flatten_history(history):
        epochs = [float(e.get("epoch", i + 1)) for i, e in enumerate(run)]
        entry: dict[str, Any] = {"epoch": np.asarray(epochs)}
        for key in ("train_loss", "valid_loss"):
            vals = [e.get(key) for e in run]
            if any(v is not None for v in vals):
                entry[key] = np.asarray([np.nan if v is None else float(v) for v in vals])
        if "valid_loss" in entry and np.isfinite(entry["valid_loss"]).any():
            entry["best_epoch"] = float(entry["epoch"][int(np.nanargmin(entry["valid_loss"]))])
        runs.append(entry)
    return {"runs": runs}


def _policy_dict(policy: ThresholdPolicy | Mapping[str, Any] | None, threshold: float) -> dict[str, Any]:
    if policy is None:
        return {"objective": None, "threshold": threshold}
    return dict(policy.to_dict() if isinstance(policy, ThresholdPolicy) else policy)


def report_data(
    *,
    y,
    proba,
    proba_uncalibrated=None,
    proba_uncorrected=None,
    policy: ThresholdPolicy | Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    intervals: Mapping[str, Sequence[float]] | None = None,
    valid_metrics: Mapping[str, float] | None = None,
    history: Any = None,
    summary: Mapping[str, Any] | None = None,
    calibration: Mapping[str, Any] | None = None,
    notices: Sequence[str] = (),
    title: str = "binclf model report",
    subtitle: str = "",
    split_name: str = "test",
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything a report shows, as plain dicts and numpy arrays.

    Parameters
    ----------
    y : array-like, shape (n,)
        0/1 labels of the rows evaluated.
    proba : array-like, shape (n,)
        The reported (calibrated) probabilities.
    proba_uncalibrated : array-like, shape (n,), optional
        The prior-corrected model probabilities before calibration.
    proba_uncorrected : array-like, shape (n,), optional
        The model's output before the imbalance treatment's logit shift was
        undone (only when there was one).
    policy : ThresholdPolicy or mapping, optional
        The threshold policy; its threshold marks every plot (0.5 without one).
    metrics, intervals : mapping, optional
        Default to :func:`~binclf.decide.metrics.binary_metrics` and
        :func:`~binclf.decide.metrics.bootstrap_intervals` of ``(y, proba)``.
    valid_metrics : mapping, optional
        Metrics on the validation rows, shown next to ``metrics``.
    history : optional
        Per-epoch training records: one list of dicts, or one list per member.
    summary, calibration : mapping, optional
        The data summary and the calibration details, shown as tables.
    notices : sequence of str
        Lines shown under "Notices".
    title, subtitle, split_name : str
        Page title, the line under it, and the name of the rows evaluated.
    n_boot, seed : int
        Bootstrap resamples and seed of the default ``intervals``.

    Returns
    -------
    dict
        Plain values and numpy arrays, the input of
        :func:`~binclf.report.html.render_html`; ``"generated"`` holds the time.
    """
    from binclf.decide.metrics import check_pair

    y_arr, p = check_pair(y, proba)
    y_arr = y_arr.astype(np.float64)
    threshold = 0.5
    if policy is not None:
        threshold = float(policy.threshold if isinstance(policy, ThresholdPolicy) else policy["threshold"])
    if metrics is None:
        metrics = binary_metrics(y_arr, p, threshold=threshold)
    if intervals is None:
        intervals = bootstrap_intervals(y_arr, p, threshold=threshold, n_boot=n_boot, seed=seed)
    pol = _policy_dict(policy, threshold)
    curves = {}
    if proba_uncorrected is not None:
        curves["before prior correction"] = check_pair(y_arr, proba_uncorrected)[1]
    if proba_uncalibrated is not None:
        curves["before calibration"] = check_pair(y_arr, proba_uncalibrated)[1]
    curves["after calibration" if proba_uncalibrated is not None else "reported"] = p
    roc, pr = _roc_pr(y_arr, p, metrics)
    return {
        "title": title,
        "subtitle": subtitle,
        "split_name": split_name,
        "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "threshold": threshold,
        "policy": pol,
        "metrics": dict(metrics),
        "intervals": {k: (float(v[0]), float(v[1])) for k, v in (intervals or {}).items()},
        "valid_metrics": dict(valid_metrics) if valid_metrics else None,
        "labels": _labels(summary),
        "roc": roc,
        "pr": pr,
        "reliability": _reliability(y_arr, curves),
        "histogram": _histogram(y_arr, p),
        "threshold_metrics": _threshold_curves(y_arr, p, pol.get("objective")),
        "confusion": {k: int(metrics[k]) for k in ("tn", "fp", "fn", "tp")},
        "training": _training_curve(history),
        "summary": dict(summary) if summary else None,
        "calibration": dict(calibration) if calibration else None,
        "notices": [str(n) for n in notices],
    }


def _labels(summary: Mapping[str, Any] | None) -> tuple[str, str]:
    if summary and "positive_label" in summary:
        return str(summary.get("negative_label")), str(summary.get("positive_label"))
    return "0", "1"


def _uncorrected(predictor: "Predictor", p_raw: np.ndarray | None) -> np.ndarray | None:
    """The model's probabilities before the prior correction, when there was one (single model only)."""
    if p_raw is None or len(predictor.members) != 1:
        return None
    shift = float(predictor.members[0].logit_shift)
    if shift == 0.0:
        return None
    return sigmoid(logit(p_raw, eps=1e-15) + shift)


def _data_summary(predictor: "Predictor", df: "pd.DataFrame", y: np.ndarray, source: str) -> dict[str, Any]:
    columns = []
    for spec in predictor.schema.columns:
        col = df[spec.name] if spec.name in df.columns else None
        columns.append({
            "name": spec.name,
            "role": spec.role,
            "dtype": spec.dtype,
            "missing": int(col.isna().sum()) if col is not None else len(df),
            "distinct": int(col.nunique(dropna=True)) if col is not None else 0,
        })
    used = set(predictor.schema.names) | {predictor.target.column}
    dropped = [list(d) for d in predictor.schema.dropped]
    known = {d[0] for d in dropped}
    dropped += [[str(c), "not used by the model"] for c in df.columns if c not in used and c not in known]
    return {
        "source": source,
        "rows": int(len(df)),
        "positives": int(y.sum()),
        "negatives": int(len(y) - y.sum()),
        "positive_label": predictor.target.positive,
        "negative_label": predictor.target.negative,
        "columns": columns,
        "dropped": dropped,
        "split_rows": None,
    }
