"""The model report: data first (plain dicts and arrays), then one self-contained HTML file.

:func:`report_data` gathers everything a report shows from labels and
probabilities: ROC and PR curves with the operating point, reliability curves
before and after calibration, per-class score histograms, metrics against the
threshold, the confusion matrix, the data summary and the training curve. It
needs neither matplotlib nor HTML, so the same numbers can feed other views.

:func:`render_html` draws that data with matplotlib and writes one HTML page:
plots are PNG images embedded as base64 ``data:`` URIs, styles are inline, and
there is no JavaScript and no external resource, so the file opens from disk,
from an e-mail attachment or an artefact store, with no server.

PNG rather than SVG: a histogram or a curve of thousands of points is a few
tens of kilobytes as a PNG at 110 dpi but can be megabytes as SVG paths, and
SVG text depends on the fonts of the machine that opens it; a PNG looks the
same everywhere.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly, never
through ``pyplot``: no global backend is switched, no window can open, and a
user's interactive matplotlib session is left alone.

Public entry points: :func:`render_training_report` (``binclf train`` writes
its output as ``report.html`` in the bundle) and :func:`render_bundle_report`
(``binclf report BUNDLE DATA``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from binclf.errors import DataError
from binclf.decide.metrics import BINARY_METRIC_KEYS, binary_metrics, bootstrap_intervals, reliability_curve
from binclf.decide.thresholds import ThresholdPolicy, parse_objective, threshold_scores

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from binclf.train.pipeline import TrainResult
    from binclf.predictor import Predictor

__all__ = ["report_data", "render_html", "render_training_report", "render_bundle_report", "FIGURE_IDS"]

#: The ``id`` of every ``<figure>`` a full report holds, in page order.
FIGURE_IDS: tuple[str, ...] = (
    "roc",
    "pr",
    "reliability",
    "histogram",
    "threshold-metrics",
    "confusion",
    "training-curve",
)

_DPI = 110
# Most points a curve keeps for plotting; the metrics are computed on all rows.
_MAX_CURVE_POINTS = 1500
_N_BINS = 15

_METRIC_LABELS = {
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


# =========================================================================== data


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1 - 1e-15)
    return np.log(p) - np.log1p(-p)


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

    ``y`` ``(n,)`` 0/1 labels of the rows evaluated; ``proba`` ``(n,)`` the
    reported (calibrated) probabilities; ``proba_uncalibrated`` ``(n,)`` the
    prior-corrected model probabilities before calibration; ``proba_uncorrected``
    ``(n,)`` the model's output before the imbalance treatment's logit shift was
    undone (only when there was one). ``policy``: the threshold policy (its
    threshold marks every plot; 0.5 without one). ``metrics``/``intervals``
    default to :func:`~binclf.decide.metrics.binary_metrics` and
    :func:`~binclf.decide.metrics.bootstrap_intervals` of ``(y, proba)``.
    """
    from binclf.decide.metrics import _check_pair

    y_arr, p = _check_pair(y, proba)
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
        curves["before prior correction"] = _check_pair(y_arr, proba_uncorrected)[1]
    if proba_uncalibrated is not None:
        curves["before calibration"] = _check_pair(y_arr, proba_uncalibrated)[1]
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


# =========================================================================== public


def render_training_report(result: "TrainResult") -> str:
    """The HTML report of a training run (``report.html`` in the bundle).

    Curves, histograms, the confusion matrix and metrics against the threshold
    are on the test split, which training, calibration and the threshold
    choice never saw; the reliability diagram shows the test probabilities
    before and after calibration.
    """
    c = result.curves
    predictor = result.predictor
    options = predictor.info.get("options", {})
    uncorrected = _uncorrected(predictor, c.get("p_test_raw"))
    summary = result.summary or {}
    subtitle = _subtitle(summary.get("source"), options, predictor)
    data = report_data(
        y=c["y_test"],
        proba=c["p_test"],
        proba_uncalibrated=c.get("p_test_raw"),
        proba_uncorrected=uncorrected,
        policy=predictor.threshold,
        metrics=result.metrics,
        intervals=result.intervals,
        valid_metrics=result.valid_metrics,
        history=result.history,
        summary=summary,
        calibration=result.calibration_info,
        notices=result.notices,
        title=f"binclf training report: {predictor.target.column}",
        subtitle=subtitle + (f"; trained in {result.seconds:.1f} s" if result.seconds else ""),
        split_name="test",
    )
    from binclf.report.text import text_terms

    data["text_terms"] = text_terms(predictor)
    return render_html(data)


def render_bundle_report(predictor: "Predictor", df: "pd.DataFrame", *, source: str = "data",
                         n_boot: int = 200, seed: int = 0) -> str:
    """The HTML report of a saved model on any labelled table ``df``.

    The target column must be present, with the model's labels. The training
    curve and calibration details come from the bundle; everything else is
    computed on ``df``.
    """
    target = predictor.target.column
    if target not in df.columns:
        raise DataError(
            f"{source}: the target column {target!r} is not in the data; a report needs labelled rows "
            f"(columns found: {', '.join(map(str, list(df.columns)[:10]))}{' ...' if len(df.columns) > 10 else ''})"
        )
    if len(df) == 0:
        raise DataError(f"{source}: the table has no rows; a report needs labelled rows")
    y = predictor.labels_to_01(df[target], source=source)
    X = predictor.transform(df)
    z = predictor.uncalibrated_logits(X)
    p = predictor.calibrator.predict_proba(z)
    p_raw = _sigmoid(z)
    summary = _data_summary(predictor, df, y, source)
    info = predictor.info
    data = report_data(
        y=y,
        proba=p,
        proba_uncalibrated=p_raw,
        proba_uncorrected=_uncorrected(predictor, p_raw),
        policy=predictor.threshold,
        history=info.get("history"),
        summary=summary,
        calibration=info.get("calibration"),
        notices=[],
        title=f"binclf model report: {target}",
        subtitle=_subtitle(source, info.get("options", {}), predictor),
        split_name="data",
        n_boot=n_boot,
        seed=seed,
    )
    return render_html(data)


def _uncorrected(predictor: "Predictor", p_raw: np.ndarray | None) -> np.ndarray | None:
    """The model's probabilities before the prior correction, when there was one (single model only)."""
    if p_raw is None or len(predictor.members) != 1:
        return None
    shift = float(predictor.members[0].logit_shift)
    if shift == 0.0:
        return None
    return _sigmoid(_logit(p_raw) + shift)


def _subtitle(source: Any, options: Mapping[str, Any], predictor: "Predictor") -> str:
    parts = []
    if source:
        parts.append(f"data {source}")
    groups = predictor.member_groups()
    models = " + ".join(name if n == 1 else f"{n} x {name} (weight {w:.2f})" for name, _, n, w in groups)
    parts.append(f"model {models}")
    treatment = []
    if options.get("loss") and options.get("loss") != "bce":
        treatment.append(f"loss {options['loss']}")
    if options.get("pos_weight") is not None:
        treatment.append(f"pos_weight {options['pos_weight']}")
    if options.get("sampler"):
        treatment.append(f"sampler {options['sampler']}")
    if treatment:
        parts.append("imbalance treatment: " + ", ".join(treatment))
    return "; ".join(parts)


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


# =========================================================================== figures

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",
}
_NEG, _POS, _RAW, _CAL, _OP, _MUTED = "#4c72b0", "#dd8452", "#8c8c8c", "#2a7f62", "#c44e52", "#999999"


def _mpl_text(s: Any) -> str:
    """A user string safe for matplotlib: ``$`` would otherwise start mathtext."""
    return str(s).replace("$", r"\$")


def _figure(width: float = 5.6, height: float = 4.0, **kw):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained", **kw)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot_roc(d: dict) -> str:
    roc = d["roc"]
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls=":", color=_MUTED, label="chance")
    if roc["available"]:
        ax.plot(roc["fpr"], roc["tpr"], color=_CAL, lw=2, label=f"model (AUC {_num(roc['auc'])})")
    fpr, tpr = roc["point"]
    ax.plot([fpr], [tpr], "o", ms=9, color=_OP, mec="white", mew=1.5, zorder=5,
            label=f"threshold {_num(d['threshold'])}: FPR {_num(fpr)}, TPR {_num(tpr)}")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (1 - specificity)",
           ylabel="true-positive rate (recall)", title="ROC curve")
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    return _png(fig)


def _plot_pr(d: dict) -> str:
    pr = d["pr"]
    fig = _figure()
    ax = fig.add_subplot()
    ax.axhline(pr["prevalence"], ls=":", color=_MUTED, label=f"chance (prevalence {_num(pr['prevalence'])})")
    if pr["available"]:
        ax.step(pr["recall"], pr["precision"], where="post", color=_CAL, lw=2,
                label=f"model (AP {_num(pr['ap'])})")
    rec, prec = pr["point"]
    ax.plot([rec], [prec], "o", ms=9, color=_OP, mec="white", mew=1.5, zorder=5,
            label=f"threshold {_num(d['threshold'])}: recall {_num(rec)}, precision {_num(prec)}")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), xlabel="recall (true-positive rate)", ylabel="precision",
           title="Precision-recall curve")
    ax.legend(loc="best")
    return _png(fig)


def _plot_reliability(d: dict) -> str:
    rel = d["reliability"]
    fig = _figure(11.2, 4.4)
    axes = fig.subplots(1, 2)
    styles = {
        "before prior correction": dict(color=_POS, ls=":", marker="v"),
        "before calibration": dict(color=_RAW, ls="--", marker="s"),
    }
    titles = {"uniform": f"{rel['n_bins']} equal-width bins", "quantile": f"{rel['n_bins']} equal-mass bins"}
    for ax, strategy in zip(axes, ("uniform", "quantile")):
        for s in rel["series"]:
            pts = s[strategy]
            style = styles.get(s["label"], dict(color=_CAL, ls="-", marker="o"))
            ax.plot(pts["mean_pred"], pts["frac_pos"], lw=1.8, ms=5, **style,
                    label=f"{s['label']} (ECE {_num(s['ece_' + strategy])})")
        pts = rel["series"][-1][strategy]
        top = max(float(np.max(pts["mean_pred"], initial=0)), float(np.max(pts["frac_pos"], initial=0)))
        positive = pts["mean_pred"][pts["mean_pred"] > 0]
        if strategy == "quantile" and top < 0.5 and len(positive) and (pts["frac_pos"] > 0).any():
            # Equal-mass bins follow the reported probabilities; on imbalanced data they all sit
            # near 0, where only log axes separate them. Bins with no positives drop to the bottom
            # edge; curves outside the frame still have their ECE in the legend.
            low = 10 ** math.floor(math.log10(float(positive.min())))
            high = min(1.0, 10 ** math.ceil(math.log10(top * 1.15)))
            ax.set_xscale("log", nonpositive="clip")
            ax.set_yscale("log", nonpositive="clip")
            ax.plot([low, high], [low, high], ls=":", color=_MUTED, label="perfectly calibrated")
            ax.set(xlim=(low, high), ylim=(low, high), title=titles[strategy] + " (log scale)")
        else:
            ax.plot([0, 1], [0, 1], ls=":", color=_MUTED, label="perfectly calibrated")
            ax.set(xlim=(0, 1), ylim=(0, 1), title=titles[strategy])
        ax.set(xlabel="mean predicted probability in bin", ylabel="observed fraction of positives")
        ax.set_aspect("equal")
        ax.legend(loc="upper left")
    return _png(fig)


def _plot_histogram(d: dict) -> str:
    h = d["histogram"]
    neg_label, pos_label = d["labels"]
    fig = _figure(5.6, 4.4)
    ax = fig.add_subplot()
    edges = h["edges"]
    widths = np.diff(edges)
    for counts, color, label in ((h["negative"], _NEG, neg_label), (h["positive"], _POS, pos_label)):
        total = max(1, int(counts.sum()))
        ax.bar(edges[:-1], counts / total, width=widths, align="edge", alpha=0.55, color=color,
               edgecolor=color, lw=0.5, label=f"actual {_mpl_text(label)} ({total} rows)")
    _threshold_marks(ax, d, upper=h["upper"])
    xlabel = "calibrated probability of " + _mpl_text(pos_label)
    if h["upper"] < 1:
        xlabel += f"\n(zoomed to [0, {_num(h['upper'])}]; the last bin also holds the {h['n_above']} rows above)"
    ax.set(xlim=(0, h["upper"]), xlabel=xlabel, ylabel="fraction of the class's rows",
           title="Scores by actual class")
    fig.legend(loc="outside lower center", ncols=2)
    return _png(fig)


def _threshold_marks(ax, d: dict, *, upper: float = 1.0) -> None:
    pol = d["policy"]
    t = d["threshold"]
    ci = pol.get("threshold_ci")
    if ci:
        ax.axvspan(ci[0], ci[1], color=_OP, alpha=0.08, lw=0, label="95% CI of the threshold")
    band = pol.get("abstain")
    if band and band["high"] > band["low"]:
        ax.axvspan(band["low"], band["high"], color="#7f7f7f", alpha=0.15, lw=0, hatch="//",
                   label=f"abstain band [{_num(band['low'])}, {_num(band['high'])})")
    if t <= upper:
        ax.axvline(t, color=_OP, lw=1.8, label=f"threshold {_num(t)}")
    analytic = pol.get("analytic_threshold")
    if analytic is not None and analytic <= upper:
        ax.axvline(analytic, color="black", lw=1.2, ls=":",
                   label=f"cost-optimal c_fp/(c_fp+c_fn) = {_num(analytic)}")


def _plot_threshold_metrics(d: dict) -> str:
    tm = d["threshold_metrics"]
    fig = _figure(5.6, 4.4)
    ax = fig.add_subplot()
    t = tm["thresholds"]
    for key, label, color, ls in (
        ("precision", "precision", "#4c72b0", "-"),
        ("recall", "recall", "#dd8452", "-"),
        ("f1", "F1", "#2a7f62", "-"),
        ("balanced_accuracy", "balanced accuracy", "#8172b3", "--"),
        ("predicted_positive", "fraction predicted positive", _MUTED, ":"),
    ):
        ax.plot(t, tm[key], color=color, ls=ls, lw=1.6, label=label)
    obj = tm.get("objective")
    extra_handles: list = []
    if obj:
        if obj["greater_is_better"] and np.nanmax(np.abs(obj["values"])) <= 1.0:
            ax.plot(obj["thresholds"], obj["values"], color="black", lw=1.2, ls="-.",
                    label=f"objective {obj['name']}")
        else:
            twin = ax.twinx()
            twin.plot(obj["thresholds"], obj["values"], color="black", lw=1.2, ls="-.",
                      label=f"objective {obj['name']} (right axis)")
            twin.set_ylabel(f"{obj['name']} (mean cost per row)" if obj["name"].startswith("cost") else obj["name"])
            twin.grid(False)
            twin.spines["right"].set_visible(True)
            extra_handles = twin.get_legend_handles_labels()[0]
    _threshold_marks(ax, d)
    upper = d["histogram"]["upper"]
    ax.set(xlim=(0, max(upper, min(1.0, d["threshold"] * 1.2))), ylim=(-0.02, 1.02),
           xlabel="threshold on the calibrated probability" + (" (zoomed)" if upper < 1 else ""),
           ylabel="metric value", title=f"Metrics against the threshold ({_mpl_text(d['split_name'])})")
    handles, labels = ax.get_legend_handles_labels()
    handles += extra_handles
    labels += [h.get_label() for h in extra_handles]
    fig.legend(handles, labels, loc="outside lower center", ncols=3 if len(handles) < 10 else 4, fontsize=8)
    return _png(fig)


def _plot_confusion(d: dict) -> str:
    c = d["confusion"]
    neg_label, pos_label = (_mpl_text(x) for x in d["labels"])
    m = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=float)
    row_totals = m.sum(axis=1, keepdims=True)
    share = _div(m, np.broadcast_to(row_totals, m.shape))
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{int(m[i, j]):,}\n{100 * share[i, j]:.1f}% of row", ha="center", va="center",
                    fontsize=11, color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks([0, 1], [f"predicted {neg_label}", f"predicted {pos_label}"])
    ax.set_yticks([0, 1], [f"actual {neg_label}", f"actual {pos_label}"])
    ax.grid(False)
    ax.set_title(f"Confusion matrix at threshold {_num(d['threshold'])}")
    return _png(fig)


def _plot_training(d: dict) -> str | None:
    runs = d["training"]["runs"]
    if not runs:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    single = len(runs) == 1
    alpha = 1.0 if single else 0.45
    for i, run in enumerate(runs):
        first = i == 0
        if "train_loss" in run:
            ax.plot(run["epoch"], run["train_loss"], color=_NEG, lw=1.6 if single else 1.0, alpha=alpha,
                    label=("training loss" if single else "training loss (each member)") if first else None)
        if "valid_loss" in run:
            ax.plot(run["epoch"], run["valid_loss"], color=_POS, lw=1.6 if single else 1.0, alpha=alpha,
                    label=("validation loss" if single else "validation loss (each member)") if first else None)
        if "best_epoch" in run and single:
            ax.axvline(run["best_epoch"], color=_OP, ls="--", lw=1.2,
                       label=f"best epoch {int(run['best_epoch'])} (weights kept)")
    ax.set(xlabel="epoch", ylabel="loss (the training objective)",
           title="Training curve" + ("" if single else f" ({len(runs)} members)"))
    ax.legend(loc="upper right")
    return _png(fig)


# =========================================================================== HTML

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; background: #f6f7f9; color: #1f2328; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 28px 0 10px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
.sub { color: #57606a; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px 12px; min-width: 100px;
        flex: 1 1 100px; }
.card b { display: block; font-size: 1.3rem; }
.card span { color: #57606a; font-size: .85rem; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.grid .wide { grid-column: 1 / -1; }
@media (max-width: 900px) { .grid { grid-template-columns: minmax(0, 1fr); } }
figure { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; margin: 0; padding: 10px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: #57606a; font-size: .88rem; margin-top: 6px; }
table { border-collapse: collapse; background: #fff; font-size: .9rem; margin: 6px 0 12px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tables { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
.tables .side { flex: 1 1 420px; min-width: 0; }
.notice { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 6px 10px; margin: 4px 0; }
ul.notices { list-style: none; padding: 0; }
code { background: #eff1f3; padding: 1px 4px; border-radius: 4px; }
footer { color: #57606a; font-size: .8rem; margin-top: 32px; }
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "n/a"
    if v.is_integer() and abs(v) >= 1:
        return f"{int(v):,}"
    if v != 0 and abs(v) < 10 ** -digits:
        text = f"{v:.{digits + 1}f}"
        return text if float(text) != 0 else f"{v:.1e}"
    return f"{v:.{digits}f}"


def _ci(pair: Sequence[float] | None) -> str:
    return f"[{_num(pair[0])}, {_num(pair[1])}]" if pair else ""


def _figure_html(fid: str, png: str | None, caption: str, *, wide: bool = False, alt: str = "") -> str:
    cls = ' class="wide"' if wide else ""
    if png is None:
        body = f'<p class="sub">{_e(alt or "not available")}</p>'
    else:
        body = f'<img src="data:image/png;base64,{png}" alt="{_e(alt or caption)}">'
    return f'<figure id="{fid}"{cls}>{body}<figcaption>{caption}</figcaption></figure>'


def _metrics_table(d: dict) -> str:
    m, ci, valid = d["metrics"], d["intervals"], d["valid_metrics"]
    head = f"<tr><th>metric</th><th>{_e(d['split_name'])}</th><th>95% bootstrap CI</th>"
    head += "<th>validation</th></tr>" if valid else "</tr>"
    rows = []
    for key in BINARY_METRIC_KEYS:
        if key not in m:
            continue
        cells = f"<td>{_e(_METRIC_LABELS.get(key, key))}</td><td class=\"num\">{_num(m[key])}</td>"
        cells += f"<td class=\"num\">{_ci(ci.get(key))}</td>"
        if valid:
            cells += f"<td class=\"num\">{_num(valid.get(key))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f'<table id="metrics-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _policy_html(d: dict) -> str:
    pol = d["policy"]
    if not pol.get("objective"):
        return "<p>No threshold policy in this model: the threshold is 0.5.</p>"
    rows = [
        ("objective", f"<code>{_e(pol['objective'])}</code>"),
        ("threshold", _num(pol["threshold"], 4)),
        ("95% CI of the threshold (bootstrap)", _ci(pol.get("threshold_ci"))),
        ("objective value on validation", _num(pol.get("value"))),
        ("95% CI of the value (bootstrap)", _ci(pol.get("value_ci"))),
    ]
    if pol.get("analytic_threshold") is not None:
        rows.append(("cost-optimal threshold for calibrated probabilities, c_fp / (c_fp + c_fn)",
                     _num(pol["analytic_threshold"], 4)))
    band = pol.get("abstain")
    if band:
        rows.append(("abstain band (no decision for low &le; p &lt; high)",
                     f"[{_num(band['low'], 4)}, {_num(band['high'], 4)}), coverage {_num(band.get('coverage'))} "
                     f"on validation, target precision {_num(band.get('target'))}"))
    if pol.get("fallback"):
        rows.append(("fallback", _e(pol["fallback"])))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="threshold-policy"><tbody>{body}</tbody></table>'


def _calibration_html(d: dict) -> str:
    cal = d["calibration"]
    if not cal:
        return "<p>No calibration details in this model.</p>"
    rows = [("method", f"<code>{_e(cal.get('method'))}</code>")]
    if cal.get("reason"):
        rows.append(("why", _e(cal["reason"])))
    if cal.get("log_loss_before") is not None:
        rows.append(("validation log-loss before &rarr; after",
                     f"{_num(cal['log_loss_before'], 4)} &rarr; {_num(cal.get('log_loss_after'), 4)}"))
    if cal.get("n") is not None:
        rows.append(("validation rows", _num(int(cal["n"]))))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    out = f'<table id="calibration"><tbody>{body}</tbody></table>'
    cv = cal.get("cv_log_loss") or {}
    if cv:
        best = min(cv.values())
        cv_rows = "".join(
            f"<tr><td>{'<b>' if name == cal.get('method') else ''}{_e(name)}{'</b>' if name == cal.get('method') else ''}"
            f"</td><td class=\"num\">{_num(v, 4)}</td><td class=\"num\">{_num(v - best, 4)}</td></tr>"
            for name, v in cv.items()
        )
        out += (f'<table id="calibration-cv"><thead><tr><th>candidate</th><th>{_num(int(cal.get("cv_folds", 0)))}'
                f"-fold log-loss</th><th>vs best</th></tr></thead><tbody>{cv_rows}</tbody></table>")
    return out


def _summary_html(d: dict) -> str:
    s = d["summary"]
    if not s:
        return "<p>No data summary.</p>"
    rows = s.get("rows", 0)
    pos = s.get("positives", 0)
    facts = [
        ("source", _e(s.get("source", ""))),
        ("rows", _num(int(rows))),
        ("positives", f"{_num(int(pos))} ({_e(s.get('positive_label'))}, {100 * pos / max(rows, 1):.2f}%)"),
        ("negatives", f"{_num(int(s.get('negatives', rows - pos)))} ({_e(s.get('negative_label'))})"),
        ("feature columns", _num(len(s.get("columns", [])))),
    ]
    split = s.get("split_rows")
    if split:
        facts.append(("split rows", ", ".join(f"{_e(k)} {_num(int(v))}" for k, v in split.items())))
    facts_html = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    col_rows = "".join(
        f"<tr><td>{_e(c['name'])}</td><td>{_e(c.get('role', ''))}</td><td>{_e(c.get('dtype', ''))}</td>"
        f"<td class=\"num\">{_num(int(c.get('missing', 0)))}</td><td class=\"num\">{_num(int(c.get('distinct', 0)))}</td></tr>"
        for c in s.get("columns", [])
    )
    out = (f'<div class="tables"><table id="data-facts"><tbody>{facts_html}</tbody></table>'
           f'<table id="data-summary"><thead><tr><th>column</th><th>role</th><th>dtype</th><th>missing</th>'
           f"<th>distinct</th></tr></thead><tbody>{col_rows}</tbody></table>")
    dropped = s.get("dropped") or []
    if dropped:
        drop_rows = "".join(f"<tr><td>{_e(name)}</td><td>{_e(reason)}</td></tr>" for name, reason in dropped)
        out += (f'<table id="dropped-columns"><thead><tr><th>left out</th><th>reason</th></tr></thead>'
                f"<tbody>{drop_rows}</tbody></table>")
    return out + "</div>"


def _cards(d: dict) -> str:
    m = d["metrics"]
    items = [
        (_num(m.get("roc_auc")), "ROC-AUC"),
        (_num(m.get("pr_auc")), "PR-AUC"),
        (_num(m.get("log_loss")), "log-loss"),
        (_num(m.get("ece")), "ECE (15 bins)"),
        (_num(d["threshold"]), f"threshold ({_e(d['policy'].get('objective') or 'default')})"),
        (_num(m.get("precision")), "precision"),
        (_num(m.get("recall")), "recall"),
        (_num(int(m.get("n", 0))), f"{_e(d['split_name'])} rows"),
    ]
    return '<div class="cards">' + "".join(f"<div class=\"card\"><b>{v}</b><span>{k}</span></div>" for v, k in items) + "</div>"


def render_html(data: dict[str, Any]) -> str:
    """One self-contained HTML page (plots as embedded PNG, inline CSS, no script) from :func:`report_data`."""
    from matplotlib import rc_context

    from binclf.report.text import text_section_html

    d = data
    split = _e(d["split_name"])
    neg_label, pos_label = (_e(x) for x in d["labels"])
    t = _num(d["threshold"])
    with rc_context(_RC):
        roc, pr = _plot_roc(d), _plot_pr(d)
        reliability, hist = _plot_reliability(d), _plot_histogram(d)
        tmetrics, confusion, training = _plot_threshold_metrics(d), _plot_confusion(d), _plot_training(d)

    eces = "; ".join(
        f"{_e(s['label'])}: ECE {_num(s['ece_uniform'])} (equal-width), {_num(s['ece_quantile'])} (equal-mass)"
        for s in d["reliability"]["series"]
    )
    band = d["policy"].get("abstain")
    band_note = ""
    if band:
        band_note = (f" The model also has an abstain band: it predicts {pos_label} at p &ge; {_num(band['high'])}, "
                     f"{neg_label} below {_num(band['low'])}, and abstains in between; this matrix ignores it.")
    method = (d["calibration"] or {}).get("method")
    same = (" The calibrator is <code>none</code>, so the before and after calibration curves coincide."
            if method == "none" else "")
    if any(s["label"] == "before prior correction" for s in d["reliability"]["series"]):
        same += (" Before prior correction is the network's own output under the imbalance treatment "
                 "(pos_weight or balanced sampling), which overstates the positive class.")
    figures = [
        _figure_html("roc", roc, f"ROC curve on the {split} rows; the dot is the operating point at threshold {t}."),
        _figure_html("pr", pr, f"Precision-recall curve on the {split} rows; the dot is the operating point at "
                               f"threshold {t}; the dotted line is the precision of guessing (the prevalence)."),
        _figure_html("reliability", reliability,
                     f"Reliability diagram on the {split} rows: observed rate of <b>{pos_label}</b> against the "
                     f"predicted probability, per bin. {eces}. "
                     "Before calibration means after the imbalance treatment's prior correction, before the "
                     f"calibrator.{same}", wide=True),
        _figure_html("histogram", hist, f"Calibrated probabilities on the {split} rows by actual class, each class "
                                        f"normalised to sum to 1; the vertical line is the threshold {t}."),
        _figure_html("threshold-metrics", tmetrics,
                     f"Metrics on the {split} rows if the threshold were moved; the vertical line is the chosen "
                     f"threshold {t}, the shaded band its 95% bootstrap interval from validation."),
        _figure_html("confusion", confusion,
                     f"Confusion matrix on the {split} rows at threshold {t} (rows: actual class, "
                     f"{neg_label} / {pos_label}; shading: share of the row).{band_note}"),
        _figure_html("training-curve", training,
                     "Loss per epoch on the training and validation rows; training stops early when the validation "
                     "loss stops improving and keeps the best epoch's weights.",
                     alt="no training history in this model"),
    ]
    notices = ""
    if d["notices"]:
        notices = "<h2>Notices</h2><ul class=\"notices\">" + "".join(
            f"<li class=\"notice\">{_e(n)}</li>" for n in d["notices"]) + "</ul>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(d['title'])}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{_e(d['title'])}</h1>
<p class="sub">{_e(d['subtitle'])}</p>
<p class="sub">Positive class: <b>{pos_label}</b>; negative class: <b>{neg_label}</b>. Metrics and plots are on the
{split} rows{' (held out: never used for training, calibration or choosing the threshold)' if d['split_name'] == 'test' else ''}.</p>
{_cards(d)}
{notices}
<div class="tables">
<section><h2>Metrics</h2>
{_metrics_table(d)}</section>
<section class="side"><h2>Decision threshold</h2>
{_policy_html(d)}
<h2>Calibration</h2>
{_calibration_html(d)}</section>
</div>
<h2>Plots</h2>
<div class="grid">
{''.join(figures)}
</div>
<h2>Data</h2>
{_summary_html(d)}
{text_section_html(d.get("text_terms"), d["labels"])}
<footer>Generated by binclf on {_e(d['generated'])}. Self-contained: plots are embedded images; no network access needed.</footer>
</main>
</body>
</html>
"""
