"""The model report as one self-contained HTML page.

:func:`render_html` lays out the numbers of :func:`~binclf.report.data.report_data`
and the figures of :mod:`binclf.report.figures` in one HTML page: plots are PNG
images embedded as base64 ``data:`` URIs, styles are inline, and there is no
JavaScript and no external resource, so the file opens from disk, from an
e-mail attachment or an artefact store, with no server.

Public entry points: :func:`render_training_report` (``binclf train`` writes
its output as ``report.html`` in the bundle) and :func:`render_bundle_report`
(``binclf report BUNDLE DATA``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from binclf.decide.metrics import BINARY_METRIC_KEYS, METRIC_NAMES
from binclf.errors import DataError
from binclf.numeric import sigmoid
from binclf.runtime import release_freed_memory
from binclf.report.data import _data_summary, _uncorrected, report_data
from binclf.report.figures import (
    _RC,
    report_number,
    _plot_confusion,
    _plot_histogram,
    _plot_pr,
    _plot_reliability,
    _plot_roc,
    _plot_threshold_metrics,
    _plot_training,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from binclf.predictor import Predictor
    from binclf.train.pipeline import TrainResult

__all__ = ["FIGURE_IDS", "render_bundle_report", "render_html", "render_training_report", "report_data"]

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

# =========================================================================== public


def render_training_report(result: "TrainResult") -> str:
    """The HTML report of a training run (``report.html`` in the bundle).

    Curves, histograms, the confusion matrix and metrics against the threshold
    are on the test split, which training, calibration and the threshold
    choice never saw; the reliability diagram shows the test probabilities
    before and after calibration.

    Parameters
    ----------
    result : TrainResult
        What :func:`~binclf.train.pipeline.train_table` returned.

    Returns
    -------
    str
        One self-contained HTML page.
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

    The training curve and calibration details come from the bundle; everything
    else is computed on ``df``.

    Parameters
    ----------
    predictor : Predictor
        The model, as loaded from a bundle.
    df : DataFrame
        Labelled rows: the model's columns and its target, with the model's labels.
    source : str
        How the data is named on the page and in errors.
    n_boot, seed : int
        Bootstrap resamples and seed of the metrics' confidence intervals.

    Returns
    -------
    str
        One self-contained HTML page.

    Raises
    ------
    DataError
        The target column is missing, the table has no rows, or a label is not
        one of the model's.
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
    p_raw = sigmoid(z)
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


def _ci(pair: Sequence[float] | None) -> str:
    return f"[{report_number(pair[0])}, {report_number(pair[1])}]" if pair else ""


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
        cells = f"<td>{_e(METRIC_NAMES.get(key, key))}</td><td class=\"num\">{report_number(m[key])}</td>"
        cells += f"<td class=\"num\">{_ci(ci.get(key))}</td>"
        if valid:
            cells += f"<td class=\"num\">{report_number(valid.get(key))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f'<table id="metrics-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _policy_html(d: dict) -> str:
    pol = d["policy"]
    if not pol.get("objective"):
        return "<p>No threshold policy in this model: the threshold is 0.5.</p>"
    rows = [
        ("objective", f"<code>{_e(pol['objective'])}</code>"),
        ("threshold", report_number(pol["threshold"], 4)),
        ("95% CI of the threshold (bootstrap)", _ci(pol.get("threshold_ci"))),
        ("objective value on validation", report_number(pol.get("value"))),
        ("95% CI of the value (bootstrap)", _ci(pol.get("value_ci"))),
    ]
    if pol.get("analytic_threshold") is not None:
        rows.append(("cost-optimal threshold for calibrated probabilities, c_fp / (c_fp + c_fn)",
                     report_number(pol["analytic_threshold"], 4)))
    band = pol.get("abstain")
    if band:
        rows.append(("abstain band (no decision for low &le; p &lt; high)",
                     f"[{report_number(band['low'], 4)}, {report_number(band['high'], 4)}), coverage {report_number(band.get('coverage'))} "
                     f"on validation, target precision {report_number(band.get('target'))}"))
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
                     f"{report_number(cal['log_loss_before'], 4)} &rarr; {report_number(cal.get('log_loss_after'), 4)}"))
    if cal.get("n") is not None:
        rows.append(("validation rows", report_number(int(cal["n"]))))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    out = f'<table id="calibration"><tbody>{body}</tbody></table>'
    cv = cal.get("cv_log_loss") or {}
    if cv:
        best = min(cv.values())
        cv_rows = "".join(
            f"<tr><td>{'<b>' if name == cal.get('method') else ''}{_e(name)}{'</b>' if name == cal.get('method') else ''}"
            f"</td><td class=\"num\">{report_number(v, 4)}</td><td class=\"num\">{report_number(v - best, 4)}</td></tr>"
            for name, v in cv.items()
        )
        out += (f'<table id="calibration-cv"><thead><tr><th>candidate</th><th>{report_number(int(cal.get("cv_folds", 0)))}'
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
        ("rows", report_number(int(rows))),
        ("positives", f"{report_number(int(pos))} ({_e(s.get('positive_label'))}, {100 * pos / max(rows, 1):.2f}%)"),
        ("negatives", f"{report_number(int(s.get('negatives', rows - pos)))} ({_e(s.get('negative_label'))})"),
        ("feature columns", report_number(len(s.get("columns", [])))),
    ]
    split = s.get("split_rows")
    if split:
        facts.append(("split rows", ", ".join(f"{_e(k)} {report_number(int(v))}" for k, v in split.items())))
    facts_html = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    col_rows = "".join(
        f"<tr><td>{_e(c['name'])}</td><td>{_e(c.get('role', ''))}</td><td>{_e(c.get('dtype', ''))}</td>"
        f"<td class=\"num\">{report_number(int(c.get('missing', 0)))}</td><td class=\"num\">{report_number(int(c.get('distinct', 0)))}</td></tr>"
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
        (report_number(m.get("roc_auc")), "ROC-AUC"),
        (report_number(m.get("pr_auc")), "PR-AUC"),
        (report_number(m.get("log_loss")), "log-loss"),
        (report_number(m.get("ece")), "ECE (15 bins)"),
        (report_number(d["threshold"]), f"threshold ({_e(d['policy'].get('objective') or 'default')})"),
        (report_number(m.get("precision")), "precision"),
        (report_number(m.get("recall")), "recall"),
        (report_number(int(m.get("n", 0))), f"{_e(d['split_name'])} rows"),
    ]
    return '<div class="cards">' + "".join(f"<div class=\"card\"><b>{v}</b><span>{k}</span></div>" for v, k in items) + "</div>"


def render_html(data: dict[str, Any]) -> str:
    """One self-contained HTML page (plots as embedded PNG, inline CSS, no script).

    Parameters
    ----------
    data : dict
        What :func:`~binclf.report.data.report_data` returned.

    Returns
    -------
    str
        The page.
    """
    # The numbers' temporaries (curves over the test rows) are freed but resident
    # under binclf.runtime.tune_malloc: handed back before matplotlib's import and
    # figures stack on them (measured on 1M rows x 8: the report was the run's peak).
    release_freed_memory()
    from matplotlib import rc_context

    from binclf.report.text import text_section_html

    d = data
    split = _e(d["split_name"])
    neg_label, pos_label = (_e(x) for x in d["labels"])
    t = report_number(d["threshold"])
    with rc_context(_RC):
        roc, pr = _plot_roc(d), _plot_pr(d)
        reliability, hist = _plot_reliability(d), _plot_histogram(d)
        tmetrics, confusion, training = _plot_threshold_metrics(d), _plot_confusion(d), _plot_training(d)

    eces = "; ".join(
        f"{_e(s['label'])}: ECE {report_number(s['ece_uniform'])} (equal-width), {report_number(s['ece_quantile'])} (equal-mass)"
        for s in d["reliability"]["series"]
    )
    band = d["policy"].get("abstain")
    band_note = ""
    if band:
        band_note = (f" The model also has an abstain band: it predicts {pos_label} at p &ge; {report_number(band['high'])}, "
                     f"{neg_label} below {report_number(band['low'])}, and abstains in between; this matrix ignores it.")
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
    # Tables without text columns get no text section and the page stays as it was before text.
    text_html = text_section_html(d.get("text_terms"), d["labels"])
    text_html = f"{text_html}\n" if text_html else ""
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
{text_html}<footer>Generated by binclf on {_e(d['generated'])}. Self-contained: plots are embedded images; no network access needed.</footer>
</main>
</body>
</html>
"""
