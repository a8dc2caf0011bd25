"""Running the user's model and loss and observing them: what the loss expects, forward passes
with hooks on the leaf modules (on the batch and on four probe batches), what the output is
(logit, probability, non-negative, bounded), and the short training probe of ``--probe``.

Nothing here changes the user's model: passes run on a deep copy (or on the model with its state
restored afterwards).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from binclf.doctor.findings import _Ctx, _first_line, _fmt

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


_SATURATION = 15.0  # |z| beyond which float32 sigmoid is within 3e-7 of 0 or 1
_PROBE_NAMES = ("-x", "10x", "N(0,1)", "10 N(0,1)")


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
