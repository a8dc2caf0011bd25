"""The checks: each turns what was observed of the model, the loss and the batch into findings.

Targets (not 0/1, integer, one class), inputs (scales), shapes, the output against the loss
(a ReLU before the sigmoid, a double sigmoid, BCE on logits, an unstable sigmoid-then-log), and
the loss-level checks at initialisation (imbalance without weighting, the bias against the prior,
saturated logits). :func:`binclf.doctor.check` calls them in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from binclf.doctor.findings import _Ctx, _first_line, _fmt, _fmt_p
from binclf.numeric import logit, sigmoid
from binclf.doctor.probes import (
    _SATURATION,
    _Evidence,
    _LossInfo,
    _Pass,
    _call_loss,
    _last_linear_name,
    _last_linear_text,
    _range_text,
    _try_raw_loss,
)

# --------------------------------------------------------------------------- targets


def _target_summary(y01: Tensor | None) -> str:
    if y01 is None:
        return "not 0/1"
    n_pos = int((y01 > 0.5).sum())
    return f"{n_pos} positive, {y01.numel() - n_pos} negative (prior {n_pos / max(y01.numel(), 1):.4f})"


def _check_targets(
    ctx: _Ctx, y_in: Any, *, n: int, device: torch.device, positive: float | None = None
) -> tuple[Tensor | None, Tensor | None]:
    """Return the targets as given (a tensor) and a float 0/1 version for the other checks.

    Of two values other than 0 and 1, ``positive`` is the positive class (default: the larger).
    """
    if not isinstance(y_in, Tensor):
        arr = np.asarray(y_in)
        if arr.dtype.kind in "OUSM":
            values = sorted({str(v) for v in arr.reshape(-1).tolist()})
            shown = ", ".join(repr(v) for v in values[:5])
            ctx.add(
                "bad-targets",
                "error",
                f"the targets are text: {len(values)} distinct values ({shown})",
                "The loss needs numbers: 1.0 for the positive class, 0.0 for the negative.",
                "Map the positive label to 1.0 explicitly (not by sort order or category codes):\n"
                f"    y = torch.tensor((labels == {values[-1]!r}).astype('float32'))",
            )
            return None, None
        y_in = torch.as_tensor(arr)
    y = y_in.detach().to(device)
    if y.shape[0] != n:
        ctx.add(
            "shape-mismatch",
            "error",
            f"x has {n} rows but y has shape {tuple(y.shape)}",
            "Each row needs exactly one target.",
            "Pass the targets of the same rows as x, shape (n,).",
        )
        return None, None
    flat = y.reshape(-1).to(torch.float64)
    if y.numel() != n:
        if y.ndim == 2 and y.shape[1] == 2 and bool(((flat == 0) | (flat == 1)).all()):
            flat = y[:, 1].to(torch.float64)  # one-hot: column 1 is the positive class
        else:
            ctx.add(
                "bad-targets",
                "error",
                f"y has shape {tuple(y.shape)}: more than one value per row",
                "Binary classification needs one 0/1 target per row.",
                "Pass y of shape (n,) with values 0.0 and 1.0.",
            )
            return y, None
    if not torch.isfinite(flat).all():
        bad = int((~torch.isfinite(flat)).sum())
        ctx.add(
            "bad-targets",
            "error",
            f"{bad} of {n} targets are NaN or inf",
            "A NaN target makes the loss and every gradient NaN.",
            "Drop rows whose target is missing before training.",
        )
        return y, None
    uniq = torch.unique(flat)
    shown = "{" + ", ".join(_fmt(float(v)) for v in uniq[:6]) + (", ..." if uniq.numel() > 6 else "") + "}"
    if bool(((uniq == 0) | (uniq == 1)).all()):
        y01 = flat.float()
        if uniq.numel() == 1:
            ctx.add(
                "bad-targets",
                "warning",
                f"all {n} targets are {_fmt(float(uniq[0]))}: the batch has one class only",
                "Nothing can be learned about the boundary from one class, and the loss is "
                "minimised by a constant output.",
                "Shuffle the data before batching, or stratify the batches.",
            )
        return y, y01
    if bool(((uniq >= 0) & (uniq <= 1)).all()):
        return y, flat.float()  # soft labels in [0, 1]: fine for BCE
    if uniq.numel() == 2:
        lo, hi = float(uniq[0]), float(uniq[1])
        n_hi = int((flat == hi).sum())
        pos, neg = (lo, hi) if positive is not None and float(positive) == lo else (hi, lo)
        if (lo, hi) == (-1.0, 1.0):
            hurt = (
                "With y = -1 the BCE term -y*log(p) becomes +log(p): the loss rewards predicting "
                "p -> 0 for those rows and is unbounded below, so training diverges or learns nonsense."
            )
        else:
            hurt = (
                "BCE is only a likelihood for targets in [0, 1]: with these values the loss has no "
                "minimum at the right answer (it can go negative or grow without bound)."
            )
        if (lo, hi) == (-1.0, 1.0) and pos == hi:
            fix = "    y = (y > 0).float()  # {-1, 1} -> {0, 1}"
        else:
            fix = f"    y = (y == {_fmt(pos)}).float()  # {{{_fmt(neg)}, {_fmt(pos)}}} -> {{0, 1}}"
        ctx.add(
            "bad-targets",
            "error",
            f"the targets take the values {shown} ({n - n_hi} x {_fmt(lo)}, {n_hi} x {_fmt(hi)}), "
            "not {0, 1}",
            hurt,
            "Map the positive class to 1 and the other to 0 before training:\n" + fix,
        )
        return y, (flat == pos).float()
    ctx.add(
        "bad-targets",
        "error",
        f"the targets take {uniq.numel()} distinct values {shown}, outside [0, 1]",
        "Binary classification needs two classes encoded 0 and 1 (or soft labels in [0, 1]).",
        "Binarise the target, e.g.\n    y = (y > cut).float()\nor use a multi-class model.",
    )
    return y, None


def _check_int_targets(ctx: _Ctx, y: Tensor, y01: Tensor, out: Tensor, loss: _LossInfo, loss_fn: Any) -> None:
    if y.is_floating_point() or loss.kind == "ce":
        return
    shape = y.shape
    probe = torch.zeros(shape, dtype=out.dtype, device=out.device)
    if loss.kind == "probs":
        probe = probe + 0.5
    try:
        _call_loss(loss_fn, probe, y)
    except Exception as exc:  # noqa: BLE001
        try:
            _call_loss(loss_fn, probe, y.to(out.dtype))
        except Exception:  # noqa: BLE001 - fails for another reason: not ours to report
            return
        ctx.add(
            "int-targets",
            "error",
            f"the targets have dtype {str(y.dtype).replace('torch.', '')}; {loss.name} raised "
            f"{type(exc).__name__}: {_first_line(exc)}",
            "BCE losses take float targets (they may be soft labels in [0, 1]); integer or "
            "boolean targets stop training at the first batch.",
            "Convert the targets once, where the dataset is built:\n    y = y.float()",
        )


# --------------------------------------------------------------------------- inputs


def _check_input_scales(ctx: _Ctx, x: Tensor, feature_names: Sequence[str] | None) -> None:
    if x.shape[0] < 2:
        return
    std = x.double().std(dim=0)
    varying = torch.nonzero(std > 1e-8).reshape(-1)
    if varying.numel() == 0:
        return
    s = std[varying]
    hi_i, lo_i = int(varying[int(s.argmax())]), int(varying[int(s.argmin())])
    hi, lo = float(std[hi_i]), float(std[lo_i])
    ratio = hi / lo
    if ratio <= 100 and hi <= 100:
        return

    def col(i: int) -> str:
        if feature_names is not None and i < len(feature_names):
            return f"`{feature_names[i]}`"
        return f"column {i}"

    ctx.add(
        "unscaled-inputs",
        "warning",
        f"feature standard deviations range from {_fmt(lo)} ({col(lo_i)}) to {_fmt(hi)} "
        f"({col(hi_i)}), a ratio of {ratio:.3g}",
        "Every weight takes steps of similar size, so large-scale features dominate the first "
        "layer and saturate it while small-scale ones are learned slowly; the logits start far "
        "from 0.",
        "Standardise each feature with statistics from the training data:\n"
        "    mean, std = x_train.mean(0), x_train.std(0)\n"
        "    x = (x - mean) / std  # binclf's preprocessing does this for you",
    )


# --------------------------------------------------------------------------- outputs


def _check_shapes(
    ctx: _Ctx, out: Tensor, y: Tensor | None, loss: _LossInfo, loss_fn: Any, *, n: int
) -> Tensor | None:
    """Shape findings; return the output as one value per row (n,), or None to stop."""
    shape, yshape = tuple(out.shape), None if y is None else tuple(y.shape)
    if out.ndim == 0 or out.shape[0] != n or out.ndim > 2:
        ctx.add(
            "shape-mismatch",
            "error",
            f"the model returns shape {shape} for a batch of {n} rows",
            "A binary classifier returns one logit per row, shape (n,).",
            "End forward with the last Linear(d, 1) and squeeze its column:\n"
            "    return self.output(h).squeeze(-1)",
        )
        return None
    if out.ndim == 2 and out.shape[1] == 2:
        if loss.kind == "ce":
            ctx.add(
                "two-column-output",
                "hint",
                f"the model returns 2 columns per row (shape {shape}) with {loss.name}",
                "A 2-way softmax is a single logit in disguise (z = z1 - z0) with twice the "
                "output weights; binclf's models, calibrators and thresholds expect the single logit.",
                "Optionally end in Linear(d, 1), return (n,) logits and use BCEWithLogitsLoss.",
            )
            return (out[:, 1] - out[:, 0]).float()
        ctx.add(
            "two-column-output",
            "error",
            f"the model returns 2 columns per row (shape {shape}) and the loss {loss.name} is "
            f"binary: it expects one value per row against targets of shape {yshape}",
            "BCE on two columns treats them as two independent labels (or fails on the shape); "
            "the sigmoid of either column is not the class probability.",
            "Return one logit per row:\n"
            "    self.output = nn.Linear(d, 1)\n"
            "    return self.output(h).squeeze(-1)\n"
            "or keep 2 columns with nn.CrossEntropyLoss() and long targets.",
        )
        return None
    if out.ndim == 2 and out.shape[1] != 1:
        ctx.add(
            "shape-mismatch",
            "error",
            f"the model returns {out.shape[1]} columns per row (shape {shape})",
            "A binary classifier returns one logit per row, shape (n,).",
            "End in Linear(d, 1) and squeeze:\n    return self.output(h).squeeze(-1)",
        )
        return None
    if y is not None and yshape != shape and y.numel() == n:
        try:
            broadcast = tuple(torch.broadcast_shapes(out.shape, y.shape))
        except RuntimeError:
            broadcast = None
        err = _try_raw_loss(loss_fn, out, y)
        if err is not None:
            effect = f"{loss.name} raised {err}"
        elif broadcast is not None and broadcast != shape:
            effect = (
                f"{loss.name} accepted it silently, broadcasting to a {broadcast} matrix that "
                "compares every output with every target"
            )
        else:
            effect = f"{loss.name} accepted it"
        if out.ndim == 2:
            fix = (
                "Return (n,) logits from the model:\n"
                "    return self.fc_last(h).squeeze(-1)\n"
                "or give the targets the same shape: y = y.view(-1, 1)"
            )
        else:
            fix = "Give the targets the model's shape:\n    y = y.view(-1)  # (n, 1) -> (n,)"
        ctx.add(
            "shape-mismatch",
            "error",
            f"the model returns shape {shape} and the targets have shape {yshape}: {effect}",
            "(n, 1) against (n,) broadcasts to (n, n) in element-wise losses (MSELoss, "
            "hand-written BCE): the loss then trains every row toward the mean target and "
            "still reports a plausible number; torch's BCE losses raise instead.",
            fix,
        )
    return out.reshape(-1).float()


def _check_output_vs_loss(
    ctx: _Ctx,
    kind: str,
    ev: _Evidence,
    main: _Pass,
    probes: list[_Pass],
    values: Tensor,
    loss: _LossInfo,
    loss_fn: Any,
) -> None:
    n = values.numel()
    mn, mx, probes_text = _range_text(main, ev, n)
    last = _last_linear_name(main)
    where = f" (the model {ev.structural})" if ev.structural else ""

    if kind == "unknown" and ev.module is not None and isinstance(ev.module, nn.Softmax):
        ctx.add(
            "constant-output",
            "error",
            f"the model {ev.structural} and returns {_fmt(mx)} for all {n} rows",
            "A softmax over a single column is always exactly 1: the model predicts the "
            "positive class for every row and gets no gradient.",
            f"Drop the softmax and return the logit:\n    return self.{last}(h).squeeze(-1)",
        )
        return
    if kind == "unknown" and not ev.varying and mn == mx and mn in (0.0, 1.0):
        ctx.add(
            "constant-output",
            "error",
            f"the model returns exactly {_fmt(mn)} for all {n} rows and on {probes_text}",
            "An output that ignores the input gets no useful gradient; exactly 0 or 1 usually "
            "means a softmax over one column, or a clamp / round in forward.",
            f"Return the last layer's logit unchanged:\n    return self.{last}(h).squeeze(-1)",
        )
        return

    if kind == "nonneg":
        zeros = int((values == 0).sum())
        ctx.add(
            "nonneg-output",
            "error",
            f"all {n} outputs are >= 0: min {_fmt(mn)}, max {_fmt(mx)} ({zeros} exactly 0), so "
            f"sigmoid(output) >= 0.5{where}; they stayed >= 0 on {probes_text}"
            + _last_linear_text(main),
            "A non-negative activation (ReLU, ReLU6, Softplus, abs ...) after the last layer "
            "clamps every logit to z >= 0, so the predicted probability is never below 0.5: the "
            "model cannot predict the negative class, and rows clamped to 0 get no gradient.",
            "Return the last layer's output unchanged, a logit:\n"
            f"    return self.{last}(out).squeeze(-1)  # no F.relu / ReLU after it",
        )
        if loss.kind == "probs" and ev.hi > 1.0:
            _bce_on_logits(ctx, values, loss, mn, mx, where, ev)
        return

    if kind == "bounded":
        ctx.add(
            "bounded-output",
            "warning",
            f"the model {ev.structural}: outputs stayed in [{_fmt(mn)}, {_fmt(mx)}] on the batch "
            f"and in [{_fmt(ev.lo)}, {_fmt(ev.hi)}] on {probes_text}, so sigmoid(output) is "
            f"confined to about [{float(sigmoid(ev.lo)):.3f}, {float(sigmoid(ev.hi)):.3f}]",
            "An activation after the last layer limits the logit, so the model cannot express "
            "confident probabilities (or, for some, low ones).",
            f"Return the last layer's output unchanged:\n    return self.{last}(h).squeeze(-1)",
        )
        if loss.kind == "probs" and (ev.lo < 0 or ev.hi > 1):
            _bce_on_logits(ctx, values, loss, mn, mx, where, ev)
        return

    if kind == "prob":
        halves = int((values == 0.5).sum())
        exact = f" ({halves} exactly 0.5)" if halves else ""
        if ev.lo >= 0.5:
            ctx.add(
                "nonneg-output",
                "error",
                f"all {n} outputs are in [0.5, 1): min {_fmt_p(mn)}{exact}, max "
                f"{_fmt_p(mx)}{where}, and none went below 0.5 on {probes_text}"
                + _last_linear_text(main)
                + ", so a non-negative op (ReLU, ReLU6, Softplus, abs ...) sits between it and "
                "the sigmoid",
                "sigmoid(z) >= 0.5 whenever z >= 0: with a ReLU before the sigmoid the model "
                "never predicts a probability below 0.5, i.e. never the negative class at "
                "threshold 0.5, and rows whose pre-activation is negative get no gradient.",
                "Drop the activation after the last Linear and the sigmoid; return the logit and "
                "train with the fused loss:\n"
                f"    return self.{last}(out).squeeze(-1)\n"
                "    loss_fn = nn.BCEWithLogitsLoss()\n"
                "    proba = torch.sigmoid(model(x))  # only when reading predictions",
            )
        if loss.kind == "logits":
            ctx.add(
                "double-sigmoid",
                "error",
                f"the model's {n} outputs lie in [{_fmt_p(mn)}, {_fmt_p(mx)}]{where} and stayed "
                f"inside [0, 1] on {probes_text}: they are already probabilities, and {loss.name} "
                f"applies a second sigmoid, so the probabilities it trains are sigmoid(output) in "
                f"[{float(sigmoid(mn)):.4f}, {float(sigmoid(mx)):.4f}], never outside [0.5, 0.7311]",
                f"{loss.name} takes logits. Fed probabilities, its probability cannot leave "
                "[0.5, 0.731]: a negative row's loss never drops below log 2 = 0.693, gradients "
                "shrink by the sigmoid's slope (<= 0.25) and training stalls near the prior.",
                "Remove the final sigmoid from the model and keep the loss:\n"
                f"    return self.{last}(h).squeeze(-1)  # no torch.sigmoid / nn.Sigmoid\n"
                "apply torch.sigmoid only when reading probabilities.",
            )
        elif loss.kind == "probs":
            _sigmoid_bce_model_side(ctx, mn, mx, where, loss, loss_fn, last)
        return

    # kind == "logit"
    if loss.kind == "probs":
        _bce_on_logits(ctx, values, loss, mn, mx, where, ev)
    elif loss.kind in ("logits", "unknown"):
        _check_loss_stability(ctx, loss, loss_fn, values)


def _bce_on_logits(
    ctx: _Ctx, values: Tensor, loss: _LossInfo, mn: float, mx: float, where: str, ev: _Evidence
) -> None:
    n = values.numel()
    outside = int(((values < 0) | (values > 1)).sum())
    if outside == 0 and 0.0 <= ev.lo and ev.hi <= 1.0:
        return
    if outside:
        seen = f"{outside} of {n} model outputs are outside it (range [{_fmt(mn)}, {_fmt(mx)}]){where}"
    else:
        seen = (
            f"the model's outputs{where} reach [{_fmt(ev.lo)}, {_fmt(ev.hi)}] on "
            f"{ev.n_probes} probe batches (on this batch: [{_fmt(mn)}, {_fmt(mx)}])"
        )
    is_bce = "bce" in loss.name.lower() or "binary_cross_entropy" in loss.name
    ctx.add(
        "bce-on-logits",
        "error",
        f"{loss.name} expects probabilities in [0, 1], but {seen}",
        f"{loss.name} treats its input as a probability p; a raw logit is not one: values "
        "outside [0, 1] make BCELoss raise (or return NaN), and other losses push the model to "
        "squash its output into [0, 1] instead of learning log-odds.",
        (
            "Keep the model's logit output and use the fused, stable loss:\n"
            "    loss_fn = nn.BCEWithLogitsLoss()  # instead of nn.BCELoss()"
            if is_bce
            else "Keep the logit output and use nn.BCEWithLogitsLoss(), or apply torch.sigmoid "
            f"before {loss.name}."
        ),
    )


def _sigmoid_bce_model_side(
    ctx: _Ctx, mn: float, mx: float, where: str, loss: _LossInfo, loss_fn: Any, last: str
) -> None:
    z = torch.tensor([-120.0], requires_grad=True)
    try:
        value = _call_loss(loss_fn, torch.sigmoid(z), torch.ones(1)).sum()
        value.backward()
        measured = (
            f"; at a logit of -120 float32 sigmoid underflows to 0 and "
            f"{loss.name}(sigmoid(-120), 1) = {_fmt(value.item())} (exact: 120) with gradient "
            f"{_fmt(float(z.grad) + 0.0)} w.r.t. the logit (exact: -1)"
        )
    except Exception:  # noqa: BLE001 - the numbers are an illustration only
        measured = ""
    ctx.add(
        "sigmoid-bce-unstable",
        "warning",
        f"the model's outputs lie in [{_fmt_p(mn)}, {_fmt_p(mx)}]{where}: a sigmoid output trained with "
        f"{loss.name}{measured}",
        "It trains, but sigmoid then log loses precision: float32 sigmoid rounds to exactly 1 "
        "beyond z ~ 17 and to 0 below z ~ -104, BCELoss clamps log(0) to -100 and the gradient "
        "of confidently wrong rows (the ones that most need it) vanishes. BCEWithLogitsLoss "
        "computes the same loss from the logit in log-sum-exp form, exact at any logit.",
        "Return the logit from the model and use the fused loss:\n"
        f"    return self.{last}(h).squeeze(-1)  # drop the final sigmoid\n"
        "    loss_fn = nn.BCEWithLogitsLoss()  # instead of nn.BCELoss()",
    )


def _check_loss_stability(ctx: _Ctx, loss: _LossInfo, loss_fn: Any, values: Tensor) -> None:
    """Evaluate a loss of logits at large |z|: a stable one stays finite with a gradient."""
    shape_last = ()  # try (1,) then (1, 1)
    for shape in ((1,), (1, 1)):
        try:
            _call_loss(loss_fn, torch.zeros(shape), torch.ones(shape))
            shape_last = shape
            break
        except Exception:  # noqa: BLE001
            continue
    if not shape_last:
        return
    for magnitude in (20.0, 50.0, 120.0):
        for z0, t in ((magnitude, 0.0), (-magnitude, 1.0)):
            z = torch.full(shape_last, z0, requires_grad=True)
            try:
                value = _call_loss(loss_fn, z, torch.full(shape_last, t)).sum()
                value.backward()
                grad = float(z.grad.sum()) + 0.0 if z.grad is not None else 0.0
                v = value.item()
            except Exception:  # noqa: BLE001 - e.g. an input-range check: also a finding
                v, grad = math.nan, math.nan
            if math.isfinite(v) and math.isfinite(grad) and grad != 0.0:
                continue
            exact = float(F.binary_cross_entropy_with_logits(torch.tensor(z0), torch.tensor(t)))
            ctx.add(
                "sigmoid-bce-unstable",
                "warning",
                f"{loss.name}(z={_fmt(z0)}, y={_fmt(t)}) = {_fmt(v)} with gradient {_fmt(grad)} "
                f"(BCE with logits: {_fmt(exact)}, gradient {'+1' if t == 0 else '-1'}); the model's "
                f"logits on this batch reach |z| = {_fmt(float(values.abs().max()))}",
                "The loss evidently computes sigmoid and log separately: in float32 sigmoid(z) "
                "rounds to exactly 1 beyond z ~ 17 (and to 0 below -104), log(0) gives inf and "
                "the gradient NaN (or, clamped, 0) exactly on the confidently wrong rows.",
                "Compute the loss from the logit in one stable call:\n"
                "    loss = F.binary_cross_entropy_with_logits(z, y)  # or nn.BCEWithLogitsLoss()\n"
                "and, for custom losses, use F.logsigmoid(z) and F.logsigmoid(-z) for the logs.",
            )
            return


# --------------------------------------------------------------------------- loss-level checks


def _check_imbalance(
    ctx: _Ctx, y01: Tensor, loss: _LossInfo, *, threshold: float, sampler_used: bool
) -> None:
    n_pos = int((y01 > 0.5).sum())
    n_neg = y01.numel() - n_pos
    if min(n_pos, n_neg) == 0:
        return
    ratio = max(n_pos, n_neg) / min(n_pos, n_neg)
    if ratio <= 10 or loss.weighting is not None or sampler_used or threshold != 0.5:
        return
    minority = "positives" if n_pos < n_neg else "negatives"
    ctx.add(
        "imbalance-no-weighting",
        "warning",
        f"{n_pos} positives and {n_neg} negatives in the batch (1:{ratio:.0f}, prior "
        f"{n_pos / y01.numel():.4f}); {loss.name} has no pos_weight and is not a focal loss, no "
        "sampler was declared (sampler_used=False) and the threshold is 0.5",
        f"Unweighted BCE on 1:{ratio:.0f} data is minimised close to the majority class: most "
        f"{minority}' probabilities stay on the majority side of 0.5, so the 0.5 threshold "
        f"misses most {minority} (recall collapses) while accuracy looks fine.",
        "Weight the minority class, choose the threshold on validation data, or both:\n"
        f"    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor({n_neg / n_pos:.4g}))  "
        "# n_neg / n_pos\n"
        "or a focal loss / WeightedRandomSampler, and a threshold chosen for your objective "
        "(binclf picks it on validation data).",
    )


def _check_bias(
    ctx: _Ctx,
    z: Tensor,
    kind: str,
    y01: Tensor,
    loss: _LossInfo,
    fixed: Callable[[Tensor], float],
    model: nn.Module,
) -> float | None:
    """Compare the initial loss with the best loss a constant shift of the output gives."""
    consistent = (kind == "logit" and loss.kind in ("logits", "unknown", "ce")) or (
        kind == "prob" and loss.kind == "probs"
    )
    try:
        l0 = fixed(z)
    except Exception as exc:  # noqa: BLE001
        ctx.skipped("the initial-loss check", exc)
        return None
    if not consistent or not math.isfinite(l0):
        return l0 if math.isfinite(l0) else None
    n_pos = int((y01 > 0.5).sum())
    prior = n_pos / y01.numel()
    if not 0 < prior < 1:
        return l0
    # The loss is convex in a constant shift for BCE-like losses: a coarse grid, then a
    # finer one around the best point, finds the minimum well enough.
    best_s, best = 0.0, l0
    for step, span in ((0.5, 16.0), (0.05, 0.5)):
        centre = best_s
        k = int(span / step)
        for i in range(-k, k + 1):
            s = centre + i * step
            try:
                v = fixed(z + s)
            except Exception:  # noqa: BLE001
                continue
            if math.isfinite(v) and v < best:
                best_s, best = s, v
    entropy = -(prior * math.log(prior) + (1 - prior) * math.log1p(-prior))
    logit_prior = float(logit(prior, eps=0.0))
    median = float(z.median())
    gap = l0 - best
    # A bias already at logit(prior) is what binclf does, even when a pos_weight
    # moves the loss-minimising constant elsewhere: accept it.
    if abs(median - logit_prior) < 1.0 or gap <= max(0.1, 0.2 * l0):
        return l0
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            last = name
    by_hand = (
        f"\nor by hand:\n    model.{last}.bias.data.fill_({logit_prior:.4f})  # log(p / (1 - p))"
        if last
        else ""
    )
    ctx.add(
        "bias-not-prior",
        "warning",
        f"loss at initialisation {l0:.4f}, but shifting every output by a constant {best_s:+.2f} "
        f"gives {best:.4f} (entropy of the prior: {entropy:.4f}, prior {prior:.4f}); the median "
        f"logit is {median:+.3f}, logit(prior) = {logit_prior:+.3f}",
        "The first epochs are spent learning the base rate instead of features (the "
        "'hockey stick' loss curve), with large early gradients from the majority class.",
        "Start the output bias at logit(prior):\n"
        f"    binclf.nn.models.init_output_bias(model, prior={prior:.4g})  # needs model.output" + by_hand,
    )
    return l0


def _check_saturation(ctx: _Ctx, z: Tensor, kind: str) -> None:
    n = z.numel()
    big = int((z.abs() > _SATURATION).sum())
    if big < max(1, math.ceil(0.05 * n)):
        return
    ctx.add(
        "saturated-logits",
        "warning",
        f"{big} of {n} {'pre-sigmoid ' if kind == 'prob' else ''}logits have |z| > {_SATURATION:g} at "
        f"initialisation (max |z| = {_fmt(float(z.abs().max()))}, median |z| = "
        f"{_fmt(float(z.abs().median()))})",
        "At |z| > 15 the sigmoid is within 3e-7 of 0 or 1: the untrained model is already "
        "certain, wrong rows start with a loss of ~|z| and huge updates, right rows get no "
        "gradient (none at all behind an explicit sigmoid). Usually the inputs are unscaled or "
        "the initial weights too large.",
        "Standardise the inputs and keep torch's default init (or add a normalisation layer):\n"
        "    x = (x - x_train.mean(0)) / x_train.std(0)\n"
        "    nn.BatchNorm1d(n_features)  # or nn.LayerNorm, as the first layer",
    )
