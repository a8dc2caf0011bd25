"""The figures of the model report, drawn with matplotlib from :func:`~binclf.report.data.report_data`.

Each ``_plot_*`` function returns one PNG, base64-encoded, for an embedded
``data:`` URI. PNG rather than SVG: a histogram or a curve of thousands of
points is a few tens of kilobytes as a PNG at 110 dpi but can be megabytes as
SVG paths, and SVG text depends on the fonts of the machine that opens it; a
PNG looks the same everywhere.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly, never
through ``pyplot``: no global backend is switched, no window can open, and a
user's interactive matplotlib session is left alone. ``_RC`` holds the
style; :func:`~binclf.report.html.render_html` applies it with ``matplotlib.rc_context``.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from binclf.report.data import _div

_DPI = 110

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
        ax.plot(roc["fpr"], roc["tpr"], color=_CAL, lw=2, label=f"model (AUC {report_number(roc['auc'])})")
    fpr, tpr = roc["point"]
    ax.plot([fpr], [tpr], "o", ms=9, color=_OP, mec="white", mew=1.5, zorder=5,
            label=f"threshold {report_number(d['threshold'])}: FPR {report_number(fpr)}, TPR {report_number(tpr)}")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false-positive rate (1 - specificity)",
           ylabel="true-positive rate (recall)", title="ROC curve")
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    return _png(fig)


def _plot_pr(d: dict) -> str:
    pr = d["pr"]
    fig = _figure()
    ax = fig.add_subplot()
    ax.axhline(pr["prevalence"], ls=":", color=_MUTED, label=f"chance (prevalence {report_number(pr['prevalence'])})")
    if pr["available"]:
        ax.step(pr["recall"], pr["precision"], where="post", color=_CAL, lw=2,
                label=f"model (AP {report_number(pr['ap'])})")
    rec, prec = pr["point"]
    ax.plot([rec], [prec], "o", ms=9, color=_OP, mec="white", mew=1.5, zorder=5,
            label=f"threshold {report_number(d['threshold'])}: recall {report_number(rec)}, precision {report_number(prec)}")
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
                    label=f"{s['label']} (ECE {report_number(s['ece_' + strategy])})")
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
        xlabel += f"\n(zoomed to [0, {report_number(h['upper'])}]; the last bin also holds the {h['n_above']} rows above)"
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
                   label=f"abstain band [{report_number(band['low'])}, {report_number(band['high'])})")
    if t <= upper:
        ax.axvline(t, color=_OP, lw=1.8, label=f"threshold {report_number(t)}")
    analytic = pol.get("analytic_threshold")
    if analytic is not None and analytic <= upper:
        ax.axvline(analytic, color="black", lw=1.2, ls=":",
                   label=f"cost-optimal c_fp/(c_fp+c_fn) = {report_number(analytic)}")


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
    ax.set_title(f"Confusion matrix at threshold {report_number(d['threshold'])}")
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


def report_number(x: Any, digits: int = 3) -> str:
    """A number as the report shows it: thousands grouped, tiny values with the digits they need, ``n/a`` for None/NaN.

    Unlike :func:`binclf.decide.metrics.format_number` (the command line's plain
    text), whole numbers are grouped (``12,345``) and values below ``10**-digits``
    keep a significant digit.
    """
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
