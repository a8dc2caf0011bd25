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
a batch from the CSV and calls :func:`check`.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import math
import sys
import textwrap
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from binclf.errors import ConfigError, DataError

__all__ = [
    "FINDING_CODES",
    "Finding",
    "Report",
    "Severity",
    "check",
    "load_object",
    "run",
]

Severity = Literal["error", "warning", "hint"]
_SEVERITIES: tuple[str, ...] = ("error", "warning", "hint")

#: Every finding code :func:`check` and :func:`run` can report, with its title.
FINDING_CODES: dict[str, str] = {
    "nonneg-output": "the output is non-negative (ReLU, Softplus, abs ...) before the sigmoid",
    "bounded-output": "the output passes a bounded activation (Tanh, GELU ...) before the sigmoid",
    "double-sigmoid": "the model outputs probabilities and the loss applies a sigmoid again",
    "bce-on-logits": "a loss that expects probabilities is given values outside [0, 1]",
    "sigmoid-bce-unstable": "sigmoid and log are computed separately: unstable at extreme logits",
    "shape-mismatch": "the output's shape does not match the targets'",
    "two-column-output": "two output columns per row",
    "constant-output": "the model returns the same value for every row",
    "bad-targets": "the targets are not 0/1",
    "int-targets": "integer targets where the loss needs floats",
    "imbalance-no-weighting": "strong class imbalance with no weighting and a 0.5 threshold",
    "bias-not-prior": "the output bias does not start at logit(prior)",
    "saturated-logits": "logits saturate the sigmoid at initialisation",
    "unscaled-inputs": "input features on very different scales",
    "lr-too-high": "the loss rises during a short training probe",
    "nonfinite-inputs": "the inputs contain NaN or inf",
    "nonfinite-output": "the model returns NaN or inf",
    "forward-failed": "the model could not be called on the batch",
    "loss-failed": "the loss could not be called on the model's output",
    "target-mapping": "how text or boolean targets were mapped to 0/1",
    "assumed-loss": "no loss was given: binclf assumed BCEWithLogitsLoss",
    "check-skipped": "a check could not run",
}

# Leaf modules that cap the output from below at 0: sigmoid(output) >= 0.5.
_NONNEG_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Softplus)
# Leaf modules whose output is a probability.
_PROB_MODULES: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Hardsigmoid)
# Leaf modules that bound the output, so sigmoid(output) cannot reach 0 (or 1).
_BOUNDED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Tanh,
    nn.Hardtanh,
    nn.Softsign,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.LogSigmoid,
)
# Leaf modules that only reshape (or are the identity): look past them.
_TRANSPARENT_MODULES: tuple[type[nn.Module], ...] = (nn.Identity, nn.Flatten, nn.Unflatten)

# Constructor parameters that take the number of input features.
_FEATURE_PARAMS = (
    "n_features",
    "in_features",
    "num_features",
    "n_inputs",
    "num_inputs",
    "input_dim",
    "in_dim",
    "dim_in",
    "input_size",
    "input_features",
    "n_in",
    "d_in",
    "d_features",
)

_SATURATION = 15.0  # |z| beyond which float32 sigmoid is within 3e-7 of 0 or 1
_PROBE_NAMES = ("-x", "10x", "N(0,1)", "10 N(0,1)")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Finding:
    """One problem (or note) found by :func:`check`.

    ``code`` is a stable short id (see :data:`FINDING_CODES`), ``severity`` one of
    ``"error"`` (the model cannot learn the task as written), ``"warning"`` (it
    trains, badly or fragilely) or ``"hint"``. ``observed`` states what was
    measured, with numbers; ``why`` why it matters; ``fix`` the code change
    (lines starting with four spaces are code).
    """

    code: str
    severity: Severity
    observed: str
    why: str
    fix: str

    def __post_init__(self) -> None:
        if self.severity not in _SEVERITIES:
            raise ValueError(f"severity must be one of {_SEVERITIES}, got {self.severity!r}")

    @property
    def title(self) -> str:
        """One-line description of the code."""
        return FINDING_CODES.get(self.code, self.code)

    def to_dict(self) -> dict[str, str]:
        """JSON-serialisable form."""
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "observed": self.observed,
            "why": self.why,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Report:
    """The findings of :func:`check`, errors first, and a few summary lines.

    Iterating a report yields its findings; ``str(report)`` is the text the
    command line prints (lines shorter than 100 characters).
    """

    findings: tuple[Finding, ...] = ()
    summary: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        order = {s: i for i, s in enumerate(_SEVERITIES)}
        ordered = tuple(sorted(self.findings, key=lambda f: order[f.severity]))
        object.__setattr__(self, "findings", ordered)
        object.__setattr__(self, "summary", tuple(self.summary))

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    @property
    def has_errors(self) -> bool:
        """True when at least one finding is an error (the CLI then exits 1)."""
        return any(f.severity == "error" for f in self.findings)

    @property
    def codes(self) -> list[str]:
        """The finding codes, in report order."""
        return [f.code for f in self.findings]

    def get(self, code: str) -> Finding | None:
        """The first finding with ``code``, or ``None``."""
        return next((f for f in self.findings if f.code == code), None)

    def with_findings(self, *extra: Finding) -> Report:
        """A copy with ``extra`` findings added."""
        return Report(findings=self.findings + tuple(extra), summary=self.summary)

    def format(self, *, width: int = 96) -> str:
        """Plain text: summary, then each finding (observed / why / fix), then a count."""
        lines: list[str] = []
        for s in self.summary:
            lines.extend(textwrap.wrap(s, width=width, subsequent_indent="  ") or [""])
        for f in self.findings:
            lines.append("")
            lines.append(f"[{f.severity}] {f.code}: {f.title}")
            for label, text in (("observed", f.observed), ("why", f.why), ("fix", f.fix)):
                lines.extend(_wrap_field(label, text, width))
        counts = {s: sum(f.severity == s for f in self.findings) for s in _SEVERITIES}
        lines.append("")
        if counts["error"] == counts["warning"] == 0:
            lines.append(f"no errors or warnings ({_plural(counts['hint'], 'hint')})")
        else:
            lines.append(
                f"{_plural(counts['error'], 'error')}, {_plural(counts['warning'], 'warning')}, "
                f"{_plural(counts['hint'], 'hint')}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "has_errors": self.has_errors,
            "summary": list(self.summary),
            "findings": [f.to_dict() for f in self.findings],
        }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _wrap_field(label: str, text: str, width: int) -> list[str]:
    # Prose is wrapped; lines indented by four spaces are code and kept whole.
    out: list[str] = []
    head = f"  {label}: "
    first = True
    for line in text.split("\n"):
        if line.startswith("    "):
            out.append("      " + line.strip() if not first else head + line.strip())
        else:
            out.extend(
                textwrap.wrap(
                    line,
                    width=width,
                    initial_indent=head if first else "    ",
                    subsequent_indent="    ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
        first = False
    return out


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _LossInfo:
    """What the loss expects: ``kind`` is "logits", "probs", "ce" or "unknown"."""

    name: str
    kind: str
    weighting: str | None  # e.g. "pos_weight=19", "focal loss"; None when unweighted


@dataclass
class _Pass:
    """One forward pass: the output and the last leaf modules that ran."""

    out: Tensor
    ends_in: tuple[str, nn.Module] | None  # the leaf module whose output is the model's
    last_linear: tuple[str, Tensor] | None  # name and output of the last nn.Linear run


@dataclass
class _Ctx:
    """State shared by the checks of one :func:`check` call."""

    findings: list[Finding] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def add(self, code: str, severity: Severity, observed: str, why: str, fix: str) -> None:
        self.findings.append(Finding(code, severity, observed, why, fix))

    def has(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    def skipped(self, what: str, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {_first_line(exc)}"
        self.add(
            "check-skipped",
            "hint",
            f"{what} was skipped: {reason}",
            "The other checks ran; this one could not on this model, loss or batch.",
            "Nothing to change unless the reason above is unexpected.",
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n")[0]
    return text if len(text) <= 160 else text[:157] + "..."


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _fmt_p(p: float) -> str:
    # Saturated probabilities would all print as 1.0000: show the distance to 1.
    if 0.9999 < p < 1.0:
        return f"1 - {1.0 - p:.2g}"
    if 0.0 < p < 1e-4:
        return f"{p:.2g}"
    return f"{p:.4f}"


def _sigmoid(v: float) -> float:
    return float(torch.sigmoid(torch.tensor(v, dtype=torch.float64)))


def _unwrap_loss(loss_fn: Any) -> tuple[Any, dict[str, Any]]:
    keywords: dict[str, Any] = {}
    while isinstance(loss_fn, functools.partial):
        keywords = {**loss_fn.keywords, **keywords}
        loss_fn = loss_fn.func
    return loss_fn, keywords


def _loss_name(loss_fn: Any) -> str:
    fn, _ = _unwrap_loss(loss_fn)
    if inspect.isfunction(fn) or inspect.isbuiltin(fn):
        name = getattr(fn, "__name__", "loss_fn")
        return "loss_fn (a lambda)" if name == "<lambda>" else f"{name}()"
    return type(fn).__name__


def _is_weight_set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return True  # e.g. binclf's pos_weight="balanced"
    try:
        t = torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return True
    return bool(t.numel() > 0 and not torch.all(t == 1.0))


def _describe_weighting(fn: Any, keywords: dict[str, Any], name: str) -> str | None:
    # Duck typing: torch's and binclf's losses keep pos_weight / weight as attributes,
    # functools.partial keeps them as keywords; a focal loss reweights by itself.
    if "focal" in name.lower():
        return "focal loss"
    for attr in ("pos_weight", "pos_weight_setting", "weight", "class_weight"):
        value = keywords.get(attr, getattr(fn, attr, None))
        if _is_weight_set(value) and not callable(value):
            if isinstance(value, Tensor) and value.numel() == 1:
                return f"{attr}={float(value):.4g}"
            if isinstance(value, (int, float)):
                return f"{attr}={value:.4g}"
            return f"{attr} set"
    return None


def _classify_loss(loss_fn: Any) -> _LossInfo:
    fn, keywords = _unwrap_loss(loss_fn)
    name = _loss_name(loss_fn)
    raw_name = type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", "")
    weighting = _describe_weighting(fn, keywords, raw_name)
    module = getattr(fn, "__module__", "") or type(fn).__module__
    lowered = raw_name.lower()
    if isinstance(fn, nn.BCEWithLogitsLoss) or fn is F.binary_cross_entropy_with_logits:
        kind = "logits"
    elif isinstance(fn, nn.BCELoss) or fn is F.binary_cross_entropy:
        kind = "probs"
    elif isinstance(fn, (nn.CrossEntropyLoss, nn.NLLLoss)) or fn in (F.cross_entropy, F.nll_loss):
        kind = "ce"
    elif "withlogits" in lowered or "with_logits" in lowered or "focal" in lowered:
        kind = "logits"
    elif module.startswith("binclf."):
        kind = "logits"  # every binclf loss takes logits (DESIGN.md)
    else:
        kind = _probe_loss_kind(loss_fn)
    return _LossInfo(name=name, kind=kind, weighting=weighting)


def _call_loss(loss_fn: Any, inp: Tensor, target: Tensor) -> Tensor:
    value = loss_fn(inp, target)
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    return value


def _probe_loss_kind(loss_fn: Any) -> str:
    """Call an unknown loss on confident logits and on confident probabilities.

    A loss of logits is small at z = (6, -6) for targets (1, 0); a loss of
    probabilities is small at p = (0.99, 0.01) and large, NaN or raising at z.
    """
    target = torch.tensor([1.0, 0.0])
    for shape in ((2,), (2, 1)):
        t = target.view(shape)
        try:
            on_probs = float(_call_loss(loss_fn, torch.tensor([0.99, 0.01]).view(shape), t).mean())
        except Exception:  # noqa: BLE001 - a user's loss may raise anything
            continue
        try:
            on_logits = float(_call_loss(loss_fn, torch.tensor([6.0, -6.0]).view(shape), t).mean())
        except Exception:  # noqa: BLE001
            on_logits = math.nan
        if math.isfinite(on_logits) and on_logits < 0.5 * on_probs:
            return "logits"
        if math.isfinite(on_probs) and (not math.isfinite(on_logits) or on_probs < 0.5 * on_logits):
            return "probs"
        return "unknown"
    return "unknown"


def _leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n or type(m).__name__, m) for n, m in model.named_modules() if next(m.children(), None) is None]


def _forward(model: nn.Module, x: Tensor) -> _Pass:
    """``model(x)`` under no_grad, with hooks recording the last leaf modules run."""
    recent: deque[tuple[str, nn.Module, Tensor]] = deque(maxlen=8)
    last_linear: list[tuple[str, Tensor]] = []

    def hook(name: str, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            recent.append((name, module, output.detach()))
            if isinstance(module, nn.Linear):
                last_linear[:] = [(name, output.detach())]

    handles = [m.register_forward_hook(functools.partial(hook, n)) for n, m in _leaf_modules(model)]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        out = out[0]
    if not isinstance(out, Tensor):
        raise TypeError(f"the model returned {type(out).__name__}, expected a tensor of logits")
    out = out.detach()
    ends_in = None
    # Walk back from the last module run: the first whose output *is* the model's
    # output (same values) produced it; shape-only modules are looked past.
    for name, module, value in reversed(recent):
        if value.numel() != out.numel() or not torch.equal(value.reshape(-1), out.reshape(-1)):
            break
        if isinstance(module, _TRANSPARENT_MODULES):
            continue
        ends_in = (name, module)
        break
    return _Pass(out=out, ends_in=ends_in, last_linear=last_linear[0] if last_linear else None)


def _model_copy(model: nn.Module) -> tuple[nn.Module, Callable[[], None]]:
    """A deep copy to run on, or the model itself plus a function restoring its state."""
    try:
        return copy.deepcopy(model), lambda: None
    except Exception:  # noqa: BLE001 - some modules cannot be deep-copied
        state = copy.deepcopy(model.state_dict())
        training = model.training

        def restore() -> None:
            model.load_state_dict(state)
            model.train(training)

        return model, restore


def _param_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


# --------------------------------------------------------------------------- check


def check(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray | Sequence[Any],
    *,
    threshold: float = 0.5,
    probe_steps: int = 0,
    lr: float | None = None,
    optimizer: Any = None,
    sampler_used: bool = False,
    feature_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Report:
    """Diagnose ``model`` + ``loss_fn`` on one batch ``x`` ``(n, n_features)``, ``y`` ``(n,)``.

    Runs the model (in training mode, on a deep copy, without gradients) on the
    batch and on four probe batches (``-x``, ``10 x``, ``N(0, 1)``,
    ``10 N(0, 1)``), calls the loss, and returns a :class:`Report`. ``loss_fn`` is
    called as ``loss_fn(output, target)``; ``None`` means ``nn.BCEWithLogitsLoss()``.

    ``threshold`` is the decision threshold in use (the imbalance check only
    fires at 0.5); ``sampler_used=True`` declares a class-balancing sampler.
    ``probe_steps > 0`` also trains a copy for that many full-batch steps with
    ``optimizer`` (an optimizer instance, class or ``params -> optimizer``
    callable; default Adam) at ``lr`` (default: the optimizer's, else 1e-3) and
    reports a rising loss. ``feature_names`` name the columns in messages.
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
                threshold=threshold,
                probe_steps=probe_steps,
                lr=lr,
                optimizer=optimizer,
                sampler_used=sampler_used,
                feature_names=feature_names,
            )
    except Exception as exc:  # noqa: BLE001 - the doctor must not crash on a user's model
        ctx.skipped("the remaining checks", exc)
    return Report(findings=tuple(ctx.findings), summary=tuple(ctx.summary))


def _check(
    ctx: _Ctx,
    model: nn.Module,
    loss_fn: Any,
    x_in: Any,
    y_in: Any,
    *,
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
    y, y01 = _check_targets(ctx, y_in, n=n, device=device)

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


# --------------------------------------------------------------------------- targets


def _target_summary(y01: Tensor | None) -> str:
    if y01 is None:
        return "not 0/1"
    n_pos = int((y01 > 0.5).sum())
    return f"{n_pos} positive, {y01.numel() - n_pos} negative (prior {n_pos / max(y01.numel(), 1):.4f})"


def _check_targets(
    ctx: _Ctx, y_in: Any, *, n: int, device: torch.device
) -> tuple[Tensor | None, Tensor | None]:
    """Return the targets as given (a tensor) and a float 0/1 version for the other checks."""
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
        if (lo, hi) == (-1.0, 1.0):
            fix = "    y = (y > 0).float()  # {-1, 1} -> {0, 1}"
            hurt = (
                "With y = -1 the BCE term -y*log(p) becomes +log(p): the loss rewards predicting "
                "p -> 0 for those rows and is unbounded below, so training diverges or learns nonsense."
            )
        else:
            fix = f"    y = (y == {_fmt(hi)}).float()  # {{{_fmt(lo)}, {_fmt(hi)}}} -> {{0, 1}}"
            hurt = (
                "BCE is only a likelihood for targets in [0, 1]: with these values the loss has no "
                "minimum at the right answer (it can go negative or grow without bound)."
            )
        ctx.add(
            "bad-targets",
            "error",
            f"the targets take the values {shown} ({n - n_hi} x {_fmt(lo)}, {n_hi} x {_fmt(hi)}), "
            "not {0, 1}",
            hurt,
            "Map the positive class to 1 and the other to 0 before training:\n" + fix,
        )
        return y, (flat == hi).float()
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


@dataclass
class _Evidence:
    """What was seen of the output: its range on the batch and on the probes."""

    structural: str | None  # "ends in `name` (Type)" when a module produced the output
    module: nn.Module | None
    lo: float  # min / max over batch and probes
    hi: float
    n_probes: int
    varying: bool


def _output_kind(main: _Pass, probes: list[_Pass], *, n_cols: int) -> tuple[str, _Evidence]:
    """Classify the output as "logit", "prob", "nonneg", "bounded" or "unknown"."""
    passes = [main, *probes]
    outs = [p.out.reshape(-1).double() for p in passes]
    outs = [o[torch.isfinite(o)] for o in outs]
    every = torch.cat(outs)
    lo, hi = float(every.min()), float(every.max())
    scale = 1.0 + float(every.abs().mean())
    varying = any(o.numel() > 1 and float(o.std()) > 1e-6 * scale for o in outs)
    ends = {None if p.ends_in is None else id(p.ends_in[1]) for p in passes}
    module = main.ends_in[1] if main.ends_in is not None and len(ends) == 1 else None
    structural = None
    if module is not None:
        structural = f"ends in `{main.ends_in[0]}` ({type(module).__name__})"  # type: ignore[index]
    ev = _Evidence(structural, module, lo, hi, len(probes), varying)
    if n_cols == 2:
        return "logit", ev
    if module is not None:
        # A module produced the output on every pass: trust the module type over the
        # range (a zero-initialised Linear is constant and could look like anything).
        if isinstance(module, _PROB_MODULES):
            return "prob", ev
        if isinstance(module, _NONNEG_MODULES):
            return "nonneg", ev
        if isinstance(module, _BOUNDED_MODULES):
            return "bounded", ev
        if isinstance(module, nn.Softmax):
            return "unknown", ev
        return "logit", ev
    if not varying:
        return "unknown", ev
    # A functional tail (F.relu, torch.sigmoid, abs ...): judge by the range over
    # the batch and the probes (negated, x10, and pure noise), which a logit leaves.
    if lo >= 0.0 and hi <= 1.0:
        return "prob", ev
    if lo >= 0.0:
        return "nonneg", ev
    return "logit", ev


def _range_text(main: _Pass, ev: _Evidence, n: int) -> tuple[float, float, str]:
    o = main.out.reshape(-1).double()
    mn, mx = float(o.min()), float(o.max())
    probes = f"{ev.n_probes} probe batches ({', '.join(_PROBE_NAMES[: ev.n_probes])})"
    return mn, mx, probes


def _last_linear_text(main: _Pass) -> str:
    if main.last_linear is None:
        return ""
    name, value = main.last_linear
    return f"; the last Linear `{name}` outputs [{_fmt(float(value.min()))}, {_fmt(float(value.max()))}]"


def _last_linear_name(model_pass: _Pass) -> str:
    return model_pass.last_linear[0] if model_pass.last_linear is not None else "fc_last"


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
            f"confined to about [{_sigmoid(ev.lo):.3f}, {_sigmoid(ev.hi):.3f}]",
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
                f"[{_sigmoid(mn):.4f}, {_sigmoid(mx):.4f}], never outside [0.5, 0.7311]",
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


def _try_raw_loss(loss_fn: Any, out: Tensor, y: Tensor | None) -> str | None:
    if y is None:
        return None
    target = y if not y.is_floating_point() else y.to(out.dtype)
    try:
        value = _call_loss(loss_fn, out, target)
        if not torch.isfinite(value).all():
            return f"a non-finite loss ({_fmt(float(value.reshape(-1)[0]))})"
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {_first_line(exc)}"


def _logit_space(values: Tensor, kind: str) -> Tensor | None:
    if kind in ("logit", "bounded", "nonneg"):
        return values.double()
    if kind == "prob":
        eps = 1e-7
        p = values.double().clamp(eps, 1 - eps)
        return torch.log(p) - torch.log1p(-p)
    return None


# --------------------------------------------------------------------------- loss-level checks


def _fixed_loss_call(
    loss_fn: Any, loss: _LossInfo, out: Tensor, y: Tensor | None, y01: Tensor
) -> Callable[[Tensor], float] | None:
    """``f(z) -> loss`` for logits ``z`` (n,), with the user's bugs in shape / targets fixed.

    So that one bug (a (n, 1) output, {-1, 1} targets) does not hide the others.
    """
    n = y01.numel()
    target = y01.to(out.dtype)

    def as_input(z: Tensor) -> Tensor:
        if loss.kind == "probs":
            return torch.sigmoid(z)
        if loss.kind == "ce":
            return torch.stack([torch.zeros_like(z), z], dim=1)
        return z

    candidates: list[tuple[tuple[int, ...], Tensor]] = []
    if loss.kind == "ce":
        candidates.append(((n,), (y01 > 0.5).long()))
    else:
        candidates += [((n,), target), ((n, 1), target.view(n, 1))]
    for shape, t in candidates:

        def call(z: Tensor, shape: tuple[int, ...] = shape, t: Tensor = t) -> float:
            inp = as_input(z.to(out.dtype))
            if loss.kind != "ce":
                inp = inp.view(shape)
            return float(_call_loss(loss_fn, inp, t).mean())

        try:
            if math.isfinite(call(torch.zeros(n, dtype=out.dtype))):
                return call
        except Exception:  # noqa: BLE001
            continue
    return None


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
    logit_prior = math.log(prior) - math.log1p(-prior)
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


def _make_optimizer(
    optimizer: Any, params: Any, lr: float | None
) -> tuple[torch.optim.Optimizer, str, float]:
    if isinstance(optimizer, torch.optim.Optimizer):
        defaults = dict(optimizer.defaults)
        if lr is not None:
            defaults["lr"] = lr
        opt = type(optimizer)(params, **defaults)
    elif isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        opt = optimizer(params, lr=lr) if lr is not None else optimizer(params)
    elif optimizer is not None:
        opt = optimizer(params)
        if lr is not None:
            for g in opt.param_groups:
                g["lr"] = lr
    else:
        opt = torch.optim.Adam(params, lr=1e-3 if lr is None else lr)
    return opt, type(opt).__name__, float(opt.param_groups[0]["lr"])


def _check_lr(
    ctx: _Ctx,
    model: nn.Module,
    loss_fn: Any,
    loss: _LossInfo,
    x: Tensor,
    out: Tensor,
    y: Tensor | None,
    y01: Tensor,
    *,
    probe_steps: int,
    lr: float | None,
    optimizer: Any,
) -> None:
    """Train a copy for a few full-batch steps and watch the loss."""
    work, restore = _model_copy(model)
    try:
        work.train()
        opt, opt_name, lr_used = _make_optimizer(optimizer, work.parameters(), lr)
        target = y01.to(out.dtype)
        if loss.kind == "ce":
            target = (y01 > 0.5).long()
        losses: list[float] = []
        for _ in range(probe_steps):
            opt.zero_grad()
            o = work(x)
            if isinstance(o, (tuple, list)):
                o = o[0]
            if loss.kind != "ce" and o.numel() == target.numel():
                o = o.reshape(target.shape)
            value = _call_loss(loss_fn, o, target).mean()
            losses.append(value.item())
            if not math.isfinite(losses[-1]):
                break
            value.backward()
            opt.step()
    except Exception as exc:  # noqa: BLE001
        ctx.skipped("the learning-rate probe", exc)
        return
    finally:
        restore()
    first = losses[0]
    tail = losses[len(losses) * 2 // 3 :] or losses[-1:]
    peak = max(v for v in losses if math.isfinite(v)) if any(math.isfinite(v) for v in losses) else math.nan
    steps = f"in a {len(losses)}-step probe with {opt_name}(lr={lr_used:g}) on this batch"
    fix = (
        "Lower the learning rate about 10x and probe again:\n"
        f"    optimizer = torch.optim.{opt_name}(model.parameters(), lr={lr_used / 10:g})\n"
        "(or run a learning-rate range test; warm up the first steps)"
    )
    if not math.isfinite(losses[-1]):
        ctx.add(
            "lr-too-high",
            "error",
            f"{steps} the loss went {first:.4f} -> {_fmt(losses[-1])} at step {len(losses)}",
            "The updates overshoot until the weights overflow; training cannot recover.",
            fix,
        )
    elif sum(tail) / len(tail) > 1.1 * first + 1e-3:
        ctx.add(
            "lr-too-high",
            "warning",
            f"{steps} the loss rose: {first:.4f} at the start, peak {peak:.4f}, "
            f"{losses[-1]:.4f} after the last step",
            "On the batch it is trained on the loss should fall step by step; rising means the "
            "steps overshoot the minimum.",
            fix,
        )


# --------------------------------------------------------------------------- loading


def _import_file(path: Path) -> Any:
    name = f"_binclf_doctor_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses, pickling-free torch.jit etc. can find it.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"importing {path} raised {type(exc).__name__}: {_first_line(exc)}") from exc
    return module


def _required_params(fn: Callable[..., Any], *, skip_self: bool) -> list[inspect.Parameter] | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if skip_self and params and params[0].name == "self":
        params = params[1:]
    return [
        p
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _call_with_features(
    obj: Callable[..., Any], label: str, n_features: int | None, *, is_class: bool
) -> Any:
    required = _required_params(obj, skip_self=False)
    kwargs: dict[str, Any] = {}
    args: tuple[Any, ...] = ()
    if required:
        # One required argument is the number of features: by its name, or, for a
        # class, whatever it is called (``Net(in_size)``).
        if len(required) == 1 and (required[0].name in _FEATURE_PARAMS or is_class):
            if n_features is None:
                raise ConfigError(
                    f"{label} needs `{required[0].name}` (the number of features), but it is unknown here"
                )
            if required[0].kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[required[0].name] = n_features
            else:
                args = (n_features,)
        else:
            names = ", ".join(p.name for p in required)
            raise ConfigError(
                f"cannot build {label}: it requires ({names}); binclf doctor can only pass the "
                f"number of features (as one of {', '.join(_FEATURE_PARAMS[:4])} ...). "
                "Write a factory function in the file that builds it, and name that instead"
            )
    try:
        return obj(*args, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        given = f"{n_features}" if args or kwargs else ""
        raise ConfigError(f"{label}({given}) raised {type(exc).__name__}: {_first_line(exc)}") from exc


def load_object(spec: str, *, n_features: int | None = None) -> Any:
    """Load ``"path/to/file.py:NAME"`` and build it.

    - an ``nn.Module`` subclass (or any class) is instantiated; a single required
      constructor argument (``n_features``, ``in_features``, ``input_dim`` ..., or
      whatever its name) gets ``n_features``;
    - a function with no required arguments is a factory and is called; one whose
      only required argument is named like ``n_features`` is called with it;
    - any other function (e.g. ``def my_loss(output, target)``) and any instance
      (``criterion = nn.BCELoss()``) is returned as is.

    Raises :class:`~binclf.errors.ConfigError` when the file or the name is missing,
    the file fails to import, or the object cannot be built.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep or not path_text or not name or not name.isidentifier():
        raise ConfigError(f"expected FILE.py:NAME (e.g. model.py:Net), got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"file not found: {path} (from {spec!r})")
    module = _import_file(path)
    if not hasattr(module, name):
        available = sorted(
            k
            for k, v in vars(module).items()
            if not k.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
            and (inspect.isclass(v) or inspect.isfunction(v))
        )
        raise ConfigError(
            f"{path} has no {name!r}; classes and functions defined there: "
            f"{', '.join(available) or 'none'}"
        )
    obj = getattr(module, name)
    label = f"{path.name}:{name}"
    if inspect.isclass(obj):
        return _call_with_features(obj, label, n_features, is_class=True)
    if inspect.isfunction(obj):
        required = _required_params(obj, skip_self=False)
        if required is not None and (
            not required or (len(required) == 1 and required[0].name in _FEATURE_PARAMS)
        ):
            return _call_with_features(obj, label, n_features, is_class=False)
        return obj  # a loss function (output, target) or similar: used as is
    return obj


# --------------------------------------------------------------------------- run (CLI)

_POSITIVE_WORDS = ("1", "yes", "y", "true", "t", "pos", "positive", "1.0")


def _encode_target(col: Any, target: str) -> tuple[np.ndarray, Finding | None]:
    """Text and booleans become 0/1 (kept visible in a hint); numbers are kept as they are."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(np.float32), None
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(np.float64).astype(np.float32), None
    labels = [str(v) for v in pd.unique(col.astype(str))]
    if len(labels) != 2:
        codes = pd.Categorical(col.astype(str)).codes.astype(np.float32)
        return codes, None  # check() reports the non-binary target
    positive = next((v for v in labels if v.strip().lower() in _POSITIVE_WORDS), sorted(labels)[1])
    negative = next(v for v in labels if v != positive)
    encoded = (col.astype(str) == positive).to_numpy(np.float32)
    hint = Finding(
        "target-mapping",
        "hint",
        f"target `{target}` is text: {negative!r} -> 0, {positive!r} -> 1 "
        f"({int(encoded.sum())} positive rows in the batch)",
        "The positive class decides what pos_weight, recall and the threshold refer to.",
        "If the other value is your positive class, map it explicitly in your pipeline:\n"
        f"    y = (df[{target!r}] == {negative!r}).astype('float32')",
    )
    return encoded, hint


def run(
    model_spec: str,
    *,
    data_path: str | Path,
    target: str,
    loss_spec: str | None = None,
    batch_size: int = 512,
    probe: bool = False,
    seed: int = 0,
) -> Report:
    """What ``binclf doctor FILE.py:NAME --data DATA.csv --target COL`` does.

    Reads the CSV (numeric columns as they are, text columns one-hot encoded,
    missing values filled with the column median), samples ``batch_size`` rows,
    builds the model from ``model_spec`` with the number of feature columns, the
    loss from ``loss_spec`` (default ``nn.BCEWithLogitsLoss()``, which is what
    binclf assumes: the model returns logits) and calls :func:`check`;
    ``probe=True`` adds a 20-step learning-rate probe. Numeric targets are kept
    as they are, so {-1, 1} or {1, 2} targets are reported.
    """
    import pandas as pd

    if batch_size < 2:
        raise ConfigError(f"batch_size must be >= 2, got {batch_size}")
    path = Path(data_path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise DataError(f"cannot read {path} as CSV: {_first_line(exc)}") from exc
    if target not in df.columns:
        raise DataError(f"{path} has no column {target!r}; columns: {', '.join(map(str, df.columns))}")
    df = df[df[target].notna()]
    if len(df) == 0:
        raise DataError(f"{path}: column {target!r} has no values")
    df = df.sample(n=min(batch_size, len(df)), random_state=seed).reset_index(drop=True)
    y, mapping = _encode_target(df[target], target)
    features = df.drop(columns=[target])
    text = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    features = pd.get_dummies(features, columns=text, dtype=np.float32) if text else features
    features = features.astype(np.float64)
    features = features.fillna(features.median()).fillna(0.0)
    if features.shape[1] == 0:
        raise DataError(f"{path} has no feature columns besides {target!r}")
    x = torch.tensor(features.to_numpy(np.float32))

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
        torch.tensor(y),
        probe_steps=20 if probe else 0,
        feature_names=[str(c) for c in features.columns],
        seed=seed,
    )
    extra: list[Finding] = [mapping] if mapping is not None else []
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
    summary = (f"data: {path} ({len(df)} rows sampled), target `{target}`",) + report.summary
    return Report(findings=report.findings + tuple(extra), summary=summary)
