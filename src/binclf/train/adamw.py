"""AdamW on torch's fused CPU kernel, with less per-step bookkeeping than ``torch.optim``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

# --------------------------------------------------------------------------- #
# the optimiser step
# --------------------------------------------------------------------------- #


def _adamw_update(
    group: dict[str, Any],
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
) -> None:
    """One AdamW step of a parameter group, as ``torch.optim.AdamW(fused=True)`` makes it on the CPU."""
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    torch._fused_adamw_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


class FusedAdamW:
    """AdamW on torch's fused CPU kernel, without ``torch.optim.Optimizer``: the same numbers.

    ``torch.optim``'s optimisers import ``torch._dynamo`` the first time one is
    built in a process (their methods are wrapped to keep the compiler out),
    about a second on a laptop CPU, more than a small table's whole fit. This
    holds ``param_groups`` (params, lr, betas, eps, weight_decay) and per
    parameter ``state`` (``step``, ``exp_avg``, ``exp_avg_sq``) as
    ``torch.optim.AdamW(fused=True)`` does and makes the same
    ``torch._fused_adamw_`` arithmetic, so the updates are identical.
    No schedulers or ``state_dict``: the trainer uses torch's optimiser for those.

    **One call per group over a flat buffer.** At the first step each group's
    parameters are moved into one contiguous buffer (each parameter a view of
    it), with their moments alongside; every step then copies the gradients
    into a flat gradient buffer (one ``_foreach_copy_``) and updates the whole
    group in one fused call over one tensor, instead of one parallel region
    per parameter (measured on 2 cores, the 50-128-64-1 MLP: 40 -> 28 us per
    step on one thread, 56 -> 29 us on two). A group stays flat while every
    parameter gets a gradient at every step; the first step that leaves one
    out switches that group to per-parameter updates for good (each parameter
    then keeps its own step count, as torch's does). :meth:`release` gives
    each parameter its own storage back (the trainer calls it when a fit
    ends: safetensors refuses tensors that share memory).
    """

    def __init__(self, groups: list[dict[str, Any]], *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 flat: bool = True) -> None:
        self.param_groups = [
            {"params": list(g["params"]), "lr": lr, "betas": tuple(betas), "eps": eps,
             "weight_decay": g.get("weight_decay", 1e-2)}
            for g in groups
        ]
        self.state: dict[Tensor, dict[str, Tensor]] = {}
        self._flat_ok = flat
        # Per group (by index): (params, param buffer, grad buffer, grad views, exp_avg, exp_avg_sq, step), or None.
        self._flat: dict[int, tuple] = {}

    @staticmethod
    def supports(params: Iterable[Tensor]) -> bool:
        """Whether every parameter is a float32 CPU tensor and torch has the fused kernel."""
        return hasattr(torch, "_fused_adamw_") and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def _flatten(self, i: int, params: list[Tensor]) -> tuple | None:
        """Group ``i``'s parameters and moments as views of flat buffers (its first step), or None where it cannot."""
        ids = {id(p) for p in params}
        if len(ids) != len(params) or any(p in self.state or not p.is_contiguous() for p in params):
            return None
        with torch.no_grad():
            buf = torch.cat([p.detach().reshape(-1) for p in params])
            exp_avg, exp_avg_sq = torch.zeros_like(buf), torch.zeros_like(buf)
            grad = torch.empty_like(buf)
            step = torch.tensor(0.0, dtype=torch.float32)
            grad_views, offset = [], 0
            for p in params:
                n = p.numel()
                p.data = buf[offset : offset + n].view_as(p)
                grad_views.append(grad[offset : offset + n].view_as(p))
                self.state[p] = {
                    "step": step,
                    "exp_avg": exp_avg[offset : offset + n].view_as(p),
                    "exp_avg_sq": exp_avg_sq[offset : offset + n].view_as(p),
                }
                offset += n
        return params, buf, grad, grad_views, exp_avg, exp_avg_sq, step

    def _unflatten(self, i: int) -> None:
        """Group ``i`` back to per-parameter state, each with its own step count (as torch keeps them)."""
        flat = self._flat.pop(i, None)
        if flat is not None:
            step = flat[-1]
            for p in flat[0]:
                self.state[p]["step"] = step.clone()

    def release(self) -> None:
        """Every parameter and moment in its own storage again; later steps update per parameter."""
        for i in list(self._flat):
            self._unflatten(i)
        with torch.no_grad():
            for p, st in self.state.items():
                p.data = p.data.clone()
                st["exp_avg"], st["exp_avg_sq"] = st["exp_avg"].clone(), st["exp_avg_sq"].clone()
        self._flat_ok = False

    @torch.no_grad()
    def step(self) -> None:
        for i, g in enumerate(self.param_groups):
            flat = self._flat.get(i)
            if flat is not None:
                grads = [p.grad for p in flat[0]]
                if all(gr is not None for gr in grads):
                    params, buf, grad, grad_views, exp_avg, exp_avg_sq, step = flat
                    torch._foreach_copy_(grad_views, grads)
                    _adamw_update(g, [buf], [grad], [exp_avg], [exp_avg_sq], [step])
                    continue
                self._unflatten(i)  # a parameter without a gradient: per parameter from now on
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            if self._flat_ok and i not in self._flat and len(params) == len(g["params"]) and not any(
                p in self.state for p in params
            ):
                flat = self._flatten(i, params)
                if flat is not None:
                    self._flat[i] = flat
                    params_, buf, grad, grad_views, exp_avg, exp_avg_sq, step = flat
                    torch._foreach_copy_(grad_views, [p.grad for p in params_])
                    _adamw_update(g, [buf], [grad], [exp_avg], [exp_avg_sq], [step])
                    continue
            for p in params:
                if p not in self.state:  # as torch.optim.AdamW initialises it (fused: a float32 step)
                    self.state[p] = {
                        "step": torch.tensor(0.0, dtype=torch.float32),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            st = [self.state[p] for p in params]
            _adamw_update(
                g, params, [p.grad for p in params], [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st],
                [s["step"] for s in st],
            )


class FastAdamWStep:
    """``opt.step()`` of a fused AdamW, without its per-call Python bookkeeping.

    ``Optimizer.step`` regroups every tensor by device and dtype, checks flags
    and runs hooks on each call: ~100-200 us, as much as a small MLP's whole
    forward pass. The arithmetic is one ``torch._fused_adamw_`` call per
    parameter group, which this makes directly, on the optimiser's own state
    (``state_dict()`` and schedulers see no difference). The first call goes
    through ``opt.step()`` to create that state. Use :meth:`supports` first.
    """

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt = opt
        self._groups: list[tuple[dict[str, Any], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]] = []

    @staticmethod
    def supports(opt: torch.optim.Optimizer) -> bool:
        """Whether ``opt`` is a plain fused AdamW on CPU tensors (no amsgrad, maximize, capturable)."""
        if type(opt) is not torch.optim.AdamW or not hasattr(torch, "_fused_adamw_") or opt._optimizer_step_pre_hooks:
            return False
        for g in opt.param_groups:
            if not g.get("fused") or g["amsgrad"] or g["maximize"] or g["capturable"] or g["differentiable"]:
                return False
            if isinstance(g["lr"], Tensor) or any(p.device.type != "cpu" for p in g["params"]):
                return False
        return True

    def __call__(self) -> None:
        if not self._groups:
            self.opt.step()  # creates the state (exp_avg, exp_avg_sq, step) the usual way
            state = self.opt.state
            for g in self.opt.param_groups:
                params = [p for p in g["params"] if p in state]
                self._groups.append(
                    (
                        g,
                        params,
                        [state[p]["exp_avg"] for p in params],
                        [state[p]["exp_avg_sq"] for p in params],
                        [state[p]["step"] for p in params],
                    )
                )
            return
        for g, params, exp_avgs, exp_avg_sqs, steps in self._groups:
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(gr is None for gr in grads):
                self.opt.step()  # a parameter without a gradient: torch's rules decide
                return
            _adamw_update(g, params, grads, exp_avgs, exp_avg_sqs, steps)
