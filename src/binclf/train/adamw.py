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
    ``torch._fused_adamw_`` call per group, so the updates are identical.
    No schedulers or ``state_dict``: the trainer uses torch's optimiser for those.
    """

    def __init__(self, groups: list[dict[str, Any]], *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.param_groups = [
            {"params": list(g["params"]), "lr": lr, "betas": tuple(betas), "eps": eps,
             "weight_decay": g.get("weight_decay", 1e-2)}
            for g in groups
        ]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    @staticmethod
    def supports(params: Iterable[Tensor]) -> bool:
        """Whether every parameter is a float32 CPU tensor and torch has the fused kernel."""
        return hasattr(torch, "_fused_adamw_") and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
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
