"""Diagnose a user's model + loss + batch: the classic binary-classification bugs.

:func:`check` runs a handful of forward passes of the model on the user's batch
(and on four probe batches derived from it), calls the loss, and reports what
it observed as :class:`Finding` objects: a ReLU before the sigmoid, a double
sigmoid, ``BCELoss`` on logits, sigmoid-then-log instability, shape and target
mistakes, unweighted imbalance, a bias far from the prior, saturated logits,
unscaled inputs and (optionally, ``probe_steps > 0``) a learning rate that makes
the loss rise.

Detection is behavioural, not source-based: forward hooks on the leaf modules
tell which module produced the output (when one did), and the range of the
outputs over the probe batches tells what a functional tail (``F.relu``,
``torch.sigmoid``, ``abs`` ...) did. The user's model is never modified: the
passes run on a deep copy, under a forked random state. A check that cannot run
is skipped with a ``hint``; :func:`check` itself never raises on a user's model.

:func:`run` is what ``binclf doctor FILE.py:NAME --data DATA.csv --target COL``
calls: it loads the model (and loss) from a file with :func:`load_object`, reads
the table as ``binclf train`` does (:func:`binclf.io.read_table`, CSV or Parquet;
the target by :func:`binclf.data.encode_target`; the features by
:func:`binclf.data.infer_schema` and a fitted ``Preprocessor``), samples a batch
and calls :func:`check`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from binclf.doctor.checks import (
    _check_bias,
    _check_imbalance,
    _check_input_scales,
    _check_int_targets,
    _check_output_vs_loss,
    _check_saturation,
    _check_shapes,
    _check_targets,
    _target_summary,
)
from binclf.doctor.findings import FINDING_CODES, Diagnosis, Finding, Report, Severity, _Ctx, _first_line
from binclf.doctor.loading import load_object
from binclf.doctor.probes import (
    _check_lr,
    _classify_loss,
    _fixed_loss_call,
    _forward,
    _logit_space,
    _model_copy,
    _output_kind,
    _param_device_dtype,
    _Pass,
    _try_raw_loss,
)
from binclf.errors import ConfigError, DataError

__all__ = [
    "FINDING_CODES",
    "Diagnosis",
    "Finding",
    "Report",
    "Severity",
    "check",
    "load_object",
    "run",
]

# --------------------------------------------------------------------------- check


def check(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray | Sequence[Any],
    *,
    positive: float | None = None,
    threshold: float = 0.5,
    probe_steps: int = 0,
    lr: float | None = None,
    optimizer: Any = None,
    sampler_used: bool = False,
    feature_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Diagnosis:
    """Diagnose ``model`` + ``loss_fn`` on one batch ``x`` ``(n, n_features)``, ``y`` ``(n,)``.

    Runs the model (in training mode, on a deep copy, without gradients) on the
    batch and on four probe batches (``-x``, ``10 x``, ``N(0, 1)``,
    ``10 N(0, 1)``), calls the loss, and returns what it observed. Never raises on
    a user's model or loss: a check that cannot run is a ``check-skipped`` hint.

    Parameters
    ----------
    model : nn.Module
        The user's model; not modified.
    loss_fn : callable or None
        Called as ``loss_fn(output, target)``; ``None`` means ``nn.BCEWithLogitsLoss()``.
    x : Tensor or ndarray, shape (n, n_features)
        The inputs of one batch.
    y : Tensor, ndarray or sequence, shape (n,)
        The targets of the batch, as the loss would get them.
    positive : float, optional
        When ``y`` takes two values other than 0 and 1, the one that is the positive
        class (default: the larger); the fix of ``bad-targets`` maps it to 1.
    threshold : float
        The decision threshold in use: the imbalance check only fires at 0.5.
    probe_steps : int
        When > 0, also train a copy for that many full-batch steps and report a
        rising loss (``lr-too-high``).
    lr : float, optional
        Learning rate of the probe (default: the optimizer's, else 1e-3).
    optimizer : optional
        An optimizer instance, class or ``params -> optimizer`` callable for the
        probe; default Adam.
    sampler_used : bool
        True declares a class-balancing sampler (no imbalance warning).
    feature_names : sequence of str, optional
        Names of the columns of ``x``, used in messages.
    seed : int
        Seed of the probes; the caller's random state is restored afterwards.

    Returns
    -------
    Diagnosis
        The findings, errors first, and summary lines.
    """
    ctx = _Ctx()
    if loss_fn is None:
        loss_fn = nn.BCEWithLogitsLoss()
    try:
        # torch's own warnings (e.g. on broadcasting) restate what the findings say.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(seed)
            _check(
                ctx,
                model,
                loss_fn,
                x,
                y,
                positive=positive,
                threshold=threshold,
                probe_steps=probe_steps,
                lr=lr,
                optimizer=optimizer,
                sampler_used=sampler_used,
                feature_names=feature_names,
            )
    except Exception as exc:  # noqa: BLE001 - the doctor must not crash on a user's model
        ctx.skipped("the remaining checks", exc)
    return Diagnosis(findings=tuple(ctx.findings), summary=tuple(ctx.summary))


def _check(
    ctx: _Ctx,
    model: nn.Module,
    loss_fn: Any,
    x_in: Any,
    y_in: Any,
    *,
    positive: float | None,
    threshold: float,
    probe_steps: int,
    lr: float | None,
    optimizer: Any,
    sampler_used: bool,
    feature_names: Sequence[str] | None,
) -> None:
    model_name = type(model).__name__
    loss = _classify_loss(loss_fn)
    device, dtype = _param_device_dtype(model)
    x = torch.as_tensor(np.asarray(x_in) if not isinstance(x_in, Tensor) else x_in)
    # Integer or float64 features are cast to the parameters' dtype, as training would.
    x = x.to(device=device, dtype=dtype)
    if x.ndim == 1:
        x = x.unsqueeze(-1)
    n = x.shape[0]
    ctx.summary.append(
        f"binclf doctor: {model_name} + {loss.name} on a batch of {n} rows x "
        f"{x.shape[1] if x.ndim == 2 else tuple(x.shape[1:])} features"
    )

    # ---- targets
    y, y01 = _check_targets(ctx, y_in, n=n, device=device, positive=positive)

    # ---- inputs
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=tuple(range(1, x.ndim))).sum())
        ctx.add(
            "nonfinite-inputs",
            "error",
            f"{bad} of {n} rows of x contain NaN or inf",
            "One NaN input makes that row's output, the batch loss and every gradient NaN.",
            "Impute or drop missing values before training (binclf's preprocessing imputes):\n"
            "    x = torch.nan_to_num(x)  # or a fitted imputer",
        )
        x = torch.nan_to_num(x)
    if x.ndim == 2:
        _check_input_scales(ctx, x, feature_names)

    # ---- forward passes on the batch and the probe batches
    work, restore = _model_copy(model)
    try:
        work.train()
        try:
            main = _forward(work, x)
        except Exception as exc:  # noqa: BLE001
            ctx.add(
                "forward-failed",
                "error",
                f"model(x) with x of shape {tuple(x.shape)} raised {type(exc).__name__}: "
                f"{_first_line(exc)}",
                "The other checks need the model's output on a batch.",
                "Make forward accept a float tensor (n, n_features) and return (n,) logits.",
            )
            return
        probes: list[_Pass] = []
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(x.shape, generator=gen).to(device=device, dtype=x.dtype)
        for px in (-x, 10 * x, noise, 10 * noise):
            try:
                probes.append(_forward(work, px))
            except Exception:  # noqa: BLE001 - a probe is optional evidence
                pass
    finally:
        restore()
    out = main.out
    ctx.summary.append(f"targets: {_target_summary(y01)}; output shape {tuple(out.shape)}")

    if not torch.isfinite(out).all():
        bad = int((~torch.isfinite(out)).sum())
        ctx.add(
            "nonfinite-output",
            "error",
            f"{bad} of {out.numel()} outputs are NaN or inf on finite inputs",
            "The loss and every gradient become NaN on the first step.",
            "Look for a division, log or sqrt in forward; print intermediate values.",
        )
        return

    # ---- shapes
    z_cols = _check_shapes(ctx, out, y, loss, loss_fn, n=n)
    if z_cols is None:
        return
    values = z_cols  # (n,): the model's output per row, as the loss sees it (or z1 - z0)

    # ---- what the output is: logits, probabilities, non-negative, bounded
    kind, evidence = _output_kind(main, probes, n_cols=out.shape[1] if out.ndim == 2 else 1)
    _check_output_vs_loss(ctx, kind, evidence, main, probes, values, loss, loss_fn)

    # ---- calling the loss as written
    raw_error = _try_raw_loss(loss_fn, out, y)
    if y is not None and y01 is not None:
        _check_int_targets(ctx, y, y01, out, loss, loss_fn)

    # ---- logit-space checks
    z = _logit_space(values, kind)
    if y01 is not None:
        _check_imbalance(ctx, y01, loss, threshold=threshold, sampler_used=sampler_used)
        fixed = _fixed_loss_call(loss_fn, loss, out, y, y01)
        if fixed is not None and z is not None:
            l0 = _check_bias(ctx, z, kind, y01, loss, fixed, model)
            if l0 is not None:
                ctx.summary[-1] += f"; loss at initialisation {l0:.4f}"
    if z is not None:
        _check_saturation(ctx, z, kind)

    # ---- the optional training probe
    if probe_steps > 0 and y01 is not None:
        _check_lr(
            ctx, model, loss_fn, loss, x, out, y, y01, probe_steps=probe_steps, lr=lr, optimizer=optimizer
        )

    if raw_error is not None and not any(f.severity == "error" for f in ctx.findings):
        ctx.add(
            "loss-failed",
            "error",
            f"{loss.name}(model(x), y) raised {raw_error}",
            "Training would stop at the first batch.",
            "Call the loss with (n,) float logits and (n,) float 0/1 targets.",
        )


# --------------------------------------------------------------------------- run (the CLI's entry)


@dataclass(frozen=True)
class _Batch:
    """A batch read from a table, prepared as ``binclf train`` prepares its inputs."""

    x: np.ndarray  # (n, n_features) float32: imputed, scaled, one-hot
    y: np.ndarray  # (n,) float32: 0/1, or the raw numbers/codes of a target check() should flag
    positive: float | None  # which raw number is the positive class, for a two-valued numeric target
    feature_names: list[str]
    notices: list[str]  # train's notices on the target (positive class, dropped rows), dropped columns
    mapping: Finding | None  # the target-mapping hint, for text targets


def _is_number_label(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _read_batch(
    path: Path, *, target: str, positive: Any, batch_size: int, seed: int
) -> tuple[_Batch, int]:
    """Read ``path`` like ``binclf train`` does, then sample ``batch_size`` rows; also returns their count.

    The table is read by :func:`binclf.io.read_table` (CSV or Parquet); a two-valued target
    is encoded by :func:`binclf.data.encode_target` (train's positive-class rule and
    notices); the features by :func:`binclf.data.infer_schema` and a
    :class:`~binclf.data.preprocessing.Preprocessor` fitted on the whole table. Rows with
    a missing target are dropped. Targets that train would reject (one class, more than
    two) and two-valued numeric targets other than 0/1 are passed on as they are, so that
    :func:`check` reports them the way the user's own training loop would meet them.
    """
    import pandas as pd

    from binclf.data import encode_target, infer_schema
    from binclf.data.preprocessing import Preprocessor, check_finite
    from binclf.io import read_table

    df = read_table(path)
    if target not in df.columns:
        infer_schema(df, target=target)  # raises the error train raises: close names, the column list
    col = df[target]
    present = col.notna().to_numpy()
    if not present.any():
        raise DataError(f"{path}: column {target!r} has no values")
    notices: list[str] = []
    positive_value: float | None = None
    mapping: Finding | None = None
    if col[present].nunique() == 2:
        y_all, keep, info, notices = encode_target(col, column=target, positive=positive, drop_missing=True)
        if all(map(_is_number_label, (info.positive, info.negative))) and {
            float(info.positive),
            float(info.negative),
        } != {0.0, 1.0}:
            # {-1, 1} or {1, 2}: fed as they are to a loss, a classic bug to report.
            y_all = col[keep].to_numpy(np.float64).astype(np.float32)
            positive_value = float(info.positive)
    else:
        if positive is not None:
            raise DataError(
                f"positive={positive!r} needs a two-valued target; {target!r} has "
                f"{col[present].nunique()} distinct values"
            )
        keep = present
        kept = col[keep]
        if pd.api.types.is_bool_dtype(kept.dtype) or pd.api.types.is_numeric_dtype(kept.dtype):
            y_all = kept.to_numpy(np.float64).astype(np.float32)
        else:
            y_all = pd.Categorical(kept.astype(str)).codes.astype(np.float32)  # check() reports it
        info = None
    rows = np.flatnonzero(keep)
    df = df.loc[keep].reset_index(drop=True)
    schema, _ = infer_schema(df, target=target)  # its notices name train's options (--numeric ...)
    check_finite(df, schema.numeric, source=str(path), rows=rows)
    prep = Preprocessor(schema=schema).fit(df)
    sample = df.sample(n=min(batch_size, len(df)), random_state=seed)
    picked = sample.index.to_numpy()
    y = y_all[picked]
    if info is not None and not _is_number_label(info.positive) and not isinstance(info.positive, (bool, np.bool_)):
        n_pos = int((y == 1.0).sum())
        mapping = Finding(
            "target-mapping",
            "hint",
            f"target `{target}` is text: {info.negative!r} -> 0, {info.positive!r} -> 1 "
            f"({n_pos} positive rows in the batch)",
            "The positive class decides what pos_weight, recall and the threshold refer to.",
            "If the other value is your positive class, map it explicitly in your pipeline (and pass "
            f"--positive {info.negative} to binclf):\n"
            f"    y = (df[{target!r}] == {info.negative!r}).astype('float32')",
        )
    batch = _Batch(
        x=prep.transform(sample.reset_index(drop=True)),
        y=y,
        positive=positive_value,
        feature_names=list(prep.feature_names_),
        notices=notices + _dropped_notice(schema.dropped),
        mapping=mapping,
    )
    return batch, len(sample)


def _dropped_notice(dropped: Sequence[tuple[str, str]]) -> list[str]:
    if not dropped:
        return []
    listing = ", ".join(f"{name!r} ({reason})" for name, reason in dropped)
    return [f"not used as features, as in binclf train: {listing}"]


def run(
    model_spec: str,
    *,
    data_path: str | Path,
    target: str,
    positive: Any = None,
    loss_spec: str | None = None,
    batch_size: int = 512,
    probe: bool = False,
    seed: int = 0,
) -> Diagnosis:
    """What ``binclf doctor FILE.py:NAME --data DATA.csv --target COL`` does.

    Reads the table as ``binclf train`` does (CSV or Parquet; the positive class by
    train's rule; features imputed, scaled and one-hot encoded by a fitted
    :class:`~binclf.data.preprocessing.Preprocessor`), samples ``batch_size`` rows,
    builds the model with the number of input features and the loss, and calls
    :func:`check` on the batch.

    Parameters
    ----------
    model_spec : str
        ``"FILE.py:NAME"``: an ``nn.Module`` class or factory (see :func:`load_object`).
    data_path : str or Path
        The table, ``.csv`` (``.tsv``, ``.txt``, optionally gzipped) or ``.parquet``.
    target : str
        The yes/no column. Rows where it is missing are dropped.
    positive : optional
        The label of the positive class (as ``binclf train --positive``); default:
        the obvious one of 1/0, yes/no, true/false ..., else the rarer class.
    loss_spec : str, optional
        ``"FILE.py:NAME"`` of the loss; default ``nn.BCEWithLogitsLoss()`` (binclf
        assumes models return logits).
    batch_size : int
        Rows to check on (at least 2).
    probe : bool
        Also run a 20-step learning-rate probe (Adam, lr 1e-3, full batch) on a copy
        of the model.
    seed : int
        Seed of the row sample, the model's initialisation and the probes.

    Returns
    -------
    Diagnosis
        The findings; targets train would reject, and two-valued numeric targets
        other than 0/1 ({-1, 1}, {1, 2}), are passed on as they are, so they are
        reported as ``bad-targets``.

    Raises
    ------
    DataError
        The file cannot be read, has no such column, or holds infinite numbers.
    ConfigError
        The model or loss cannot be loaded or built.
    """
    if batch_size < 2:
        raise ConfigError(f"batch_size must be >= 2, got {batch_size}")
    path = Path(data_path)
    batch, n_rows = _read_batch(path, target=target, positive=positive, batch_size=batch_size, seed=seed)
    x = torch.from_numpy(batch.x)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = load_object(model_spec, n_features=x.shape[1])
        loss_fn = nn.BCEWithLogitsLoss() if loss_spec is None else load_object(loss_spec)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{model_spec} gave a {type(model).__name__}, expected a torch nn.Module")
    if not callable(loss_fn):
        raise ConfigError(f"{loss_spec} gave a {type(loss_fn).__name__}, expected a loss callable")
    report = check(
        model,
        loss_fn,
        x,
        torch.from_numpy(batch.y),
        positive=batch.positive,
        probe_steps=20 if probe else 0,
        feature_names=batch.feature_names,
        seed=seed,
    )
    extra: list[Finding] = [batch.mapping] if batch.mapping is not None else []
    if loss_spec is None and report.get("double-sigmoid") is not None:
        extra.append(
            Finding(
                "assumed-loss",
                "hint",
                "no --loss was given, so binclf assumed nn.BCEWithLogitsLoss() (models return "
                "logits), and this model ends in a sigmoid",
                "If you train it with nn.BCELoss the double sigmoid does not happen, but the "
                "sigmoid-then-log instability does.",
                "Pass your loss: --loss FILE.py:NAME, or drop the sigmoid from the model.",
            )
        )
    summary = (
        f"data: {path} ({n_rows} rows sampled), target `{target}`",
        *batch.notices,
        *report.summary,
    )
    return Diagnosis(findings=report.findings + tuple(extra), summary=summary)
