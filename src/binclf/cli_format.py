"""What the ``binclf`` command line prints: metric tables, the training summary, a bundle's description.

Results go to stdout, notes to stderr (:mod:`binclf.cli`). Imported by the
commands that print results, not at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from binclf.decide.metrics import METRIC_LABELS, format_number

__all__ = ["metrics_table", "members_text", "print_bundle_info", "print_training"]


def _say(message: str) -> None:
    click.echo(message, err=True)


def metrics_table(metrics: dict[str, float], intervals: dict | None = None, *, title: str) -> str:
    """A compact plain-text table of the headline metrics (with 95% intervals when given)."""
    intervals = intervals or {}
    rows = []
    for key, label in METRIC_LABELS.items():
        if key not in metrics:
            continue
        ci = intervals.get(key)
        ci_text = f"[{format_number(ci[0])}, {format_number(ci[1])}]" if ci else ""
        rows.append((label, format_number(metrics[key]), ci_text))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [title, f"  {'metric':<{w0}}  {'value':>{w1}}  95% CI" if intervals else f"  {'metric':<{w0}}  value"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
    t = metrics.get("threshold")
    if t is not None and "tp" in metrics:
        lines.append(
            f"  at threshold {format_number(t)}: TP {int(metrics['tp'])}  FP {int(metrics['fp'])}  "
            f"FN {int(metrics['fn'])}  TN {int(metrics['tn'])}"
        )
    return "\n".join(lines)


def print_training(result: Any) -> None:
    """The calibration and threshold chosen (stderr) and the test metrics (stdout) of a training run."""
    cal = result.calibration_info
    before, after = cal.get("log_loss_before"), cal.get("log_loss_after")
    # The default model calibrates on out-of-fold predictions, `--model mlp` on the validation split.
    held_out = "out-of-fold" if result.predictor.info.get("crossfit") else "validation"
    loss_text = f" ({held_out} log-loss {format_number(before, 4)} -> {format_number(after, 4)})" if before is not None else ""
    _say(f"calibration: {cal.get('method')}{loss_text}")
    p = result.predictor.threshold
    ci = f" [{format_number(p.value_ci[0])}, {format_number(p.value_ci[1])}]" if p.value_ci else ""
    tci = f", 95% CI of threshold [{format_number(p.threshold_ci[0])}, {format_number(p.threshold_ci[1])}]" if p.threshold_ci else ""
    _say(f"threshold: {format_number(p.threshold)} chosen for {p.objective} = {format_number(p.value)}{ci} on {held_out} predictions{tci}")
    if p.analytic_threshold is not None:
        _say(f"  (for calibrated probabilities the cost-optimal threshold is c_fp/(c_fp+c_fn) = {format_number(p.analytic_threshold)})")
    if p.abstain:
        _say(
            f"abstain band: [{format_number(p.abstain['low'])}, {format_number(p.abstain['high'])}), "
            f"coverage {format_number(p.abstain['coverage'])} on validation"
        )
    n = int(result.metrics.get("n", 0))
    click.echo(metrics_table(result.metrics, result.intervals, title=f"test metrics ({n} rows, never seen in training)"))


def print_bundle_info(bundle: Path, predictor: Any) -> None:
    """``binclf info``: target, model, features, calibration, threshold, test metrics, versions."""
    t = predictor.target
    click.echo(f"bundle     {bundle}")
    click.echo(f"target     {t.column!r}: positive {t.positive!r}, negative {t.negative!r}")
    click.echo(f"model      {members_text(predictor)}")
    click.echo(f"features   {predictor.preprocessor.n_features_out_} model inputs from {len(predictor.schema.columns)} columns")
    for spec in predictor.schema.columns:
        click.echo(f"  {spec.name:<24} {spec.role}")
    for name, reason in predictor.schema.dropped:
        click.echo(f"  {name:<24} dropped: {reason}")
    print_decision(predictor)
    versions = predictor.info.get("versions") or {}
    click.echo("versions   " + ", ".join(f"{k} {v}" for k, v in versions.items()))


def print_decision(predictor: Any) -> None:
    """``binclf info``'s calibration, threshold and test-metrics lines, for table and image bundles alike."""
    click.echo(f"calibration {predictor.calibrator.to_dict().get('method')}")
    if predictor.threshold is not None:
        click.echo(f"threshold  {format_number(predictor.threshold.threshold)} ({predictor.threshold.objective})")
    test = predictor.info.get("metrics", {}).get("test")
    if test:
        click.echo(metrics_table(test, None, title="test metrics at training time"))


def members_text(predictor: Any) -> str:
    """'5 x mlp(...) weight 0.7 + 5 x logistic() weight 0.3': fold members grouped by model."""
    groups = predictor.member_groups()
    if len(predictor.members) == 1:
        return f"{groups[0][0]}({_config_text(groups[0][1])})"
    return " + ".join(f"{n} x {name}({_config_text(config)}) weight {format_number(w)}" for name, config, n, w in groups)


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items() if k != "n_features")
