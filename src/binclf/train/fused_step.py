"""Fast paths for training on the CPU: what makes ``Trainer.fit`` run near the machine's limit.

Three measured costs dominate a small MLP's training step on a CPU, and each
has a fix here that leaves the model's math unchanged:

1. **Dropout's random numbers.** ``F.dropout`` draws every mask element from
   the CPU generator (``bernoulli_``), about a third of a step. Here the mask is
   a counter-based hash of ``(key, element index)`` (splitmix64): the same
   Bernoulli(1 - p) keep decision with 1 / (1 - p) scaling, but computable in
   parallel, and, in a compiled step, fused with the ReLU and BatchNorm into one
   loop. One key per call is drawn from torch's default
   generator, so ``torch.manual_seed`` makes it reproducible like ``nn.Dropout``.
2. **Autograd's per-op overhead.** For binclf's own :class:`~binclf.nn.models.MLP`
   the trainer runs :class:`FusedMLPStep`: the forward and backward written out
   as ~40 ATen calls (matmuls, fused batch-norm forward/backward), with no graph
   to build; on large fits that whole step is traced into one ATen graph and
   compiled by inductor, called without TorchDynamo's per-call guards
   (:class:`GraphStep`; measured on an Intel Xeon, 2 threads, 200,000 rows x 50
   features, MLP 50-128-64-1, batch 512: eager 1.15 ms, ``torch.compile``
   0.44 ms, this graph 0.33 ms per step). The gradients equal autograd's
   through ``MLP.forward``.
3. **glibc's malloc** hands large temporaries back to the OS after each step and
   page-faults them in again on the next (:func:`binclf.runtime.tune_malloc`,
   applied by the entry points' :func:`binclf.runtime.session`).

The compile policy's process-wide state (the compiled function, the shapes it
has been built for, whether compiling failed) lives in
:data:`binclf.runtime.COMPILE_CACHE`, where it is documented and resettable.

Which of the fast paths is fastest is measured, not assumed
(:func:`plan_speed`, :mod:`binclf.probe`): the matmul kernel (``torch.mm`` or
oneDNN) and the torch thread count on the fit's real shapes before the first
step, and compiled against eager once the compiled graph is built and checked.

Every path has a plain fallback: other models, other devices (CUDA) and other
losses use the ordinary autograd loop.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from binclf import probe, runtime
from binclf.nn.matmul import backend_name, mm_nt, probe_backends, use_backend
from binclf.nn.models.hashed_dropout import (
    _relu_dropout_kernel,
    _threshold,
    dropout_key,
)
from binclf.nn.models.mlp import mlp_blocks

# --------------------------------------------------------------------------- #
# the fused MLP step
# --------------------------------------------------------------------------- #


class FusedMLPStep:
    """One training step of a :class:`~binclf.nn.models.MLP`, forward and backward by hand.

    ``step(x, y, w)`` computes the loss on a batch, writes every parameter's
    ``.grad`` and updates BatchNorm's running statistics exactly as
    ``loss_fn(model(x), y, w).backward()`` would (same dropout masks for the
    same generator state), and returns the detached loss. The optimiser step
    stays with the caller. Use :meth:`supports` first.

    With ``compiled=True`` (and plain BCE), batches of the first batch's size
    run the whole step, forward, loss and backward, as one graph compiled by
    inductor: the elementwise work of each layer (BatchNorm, ReLU, the dropout
    hash, their gradients) fused into a few C++ loops around the matrix
    products, and one call instead of ~40. The first compiled step is checked
    against the eager one on the same batch and masks; where compiling fails
    (no C++ compiler) or disagrees, every step runs eagerly. ``compiled=None``
    compiles only where this process has already built the graph for the same
    shapes (then it costs nothing: :data:`binclf.runtime.COMPILE_CACHE`).
    """

    def __init__(
        self, model: nn.Module, loss_fn: nn.Module, *, compiled: bool | None = False, forced: bool = False
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.blocks = mlp_blocks(model)
        self.params = []
        for lin, bn, _ in self.blocks:
            self.params += [lin.weight, lin.bias, None if bn is None else bn.weight, None if bn is None else bn.bias]
        self.params += [model.output.weight, model.output.bias]
        self.spec = tuple((bn is not None, p, 0.0 if bn is None else bn.eps) for _, bn, p in self.blocks)
        from binclf.nn.losses import BCEWithLogitsLoss

        # Plain BCE has a closed-form gradient; other losses go through autograd
        # on the logits alone (a graph of a few nodes).
        self.closed_form = type(loss_fn) is BCEWithLogitsLoss and loss_fn.reduction == "mean"
        # None: compiled where this process already built the graph for these shapes.
        self.compiled = compiled if self.closed_form and not runtime.COMPILE_CACHE.failed else False
        self._compiled_rows: int | None = None  # the batch size the graph is built for
        self._checked = False
        # compiled=True from the user (TrainConfig.compile, BINCLF_COMPILE=1): compile
        # without measuring whether the compiled step beats the eager one.
        self.forced = forced or runtime.compile_forced()
        # BatchNorm running statistics, updated after each step in two calls.
        self._bns = [bn for _, bn, _ in self.blocks if bn is not None]
        self._running = [t for bn in self._bns for t in (bn.running_mean, bn.running_var)]
        self._counts = [bn.num_batches_tracked for bn in self._bns]
        momenta = {bn.momentum for bn in self._bns}
        self._momentum = momenta.pop() if len(momenta) == 1 else None
        self.matmul = "mm"  # the eager step's kernel (mm_nt); plan_speed measures which

    @staticmethod
    def supports(model: nn.Module, loss_fn: nn.Module, device: torch.device) -> bool:
        """Whether ``model`` is binclf's MLP in its standard layout, on the CPU, in float32."""
        from binclf.nn.models.mlp import MLP

        if device.type != "cpu" or type(model) is not MLP:
            return False
        if any(p.dtype != torch.float32 or not p.requires_grad for p in model.parameters()):
            return False
        if getattr(loss_fn, "reduction", None) != "mean":
            return False
        try:
            mlp_blocks(model)
        except ValueError:
            return False
        return True

    def compile_from_now(self) -> None:
        """Compile the step from the next full-size batch on (a fit that has proved long)."""
        cache = runtime.COMPILE_CACHE
        if self.closed_form and not cache.failed and not self.compiled:
            if self._compiled_rows is None or self._signature in cache.signatures:
                self.compiled = True
            else:
                self.compiled = len(cache.signatures) < _recompile_limit()

    @property
    def compiled_in_use(self) -> bool:
        """Whether steps run the compiled graph (after the first step has checked it)."""
        return bool(self.compiled) and self._checked

    @torch.no_grad()  # no graph: the backward is written out in _mlp_step
    def __call__(self, x: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
        keys = [dropout_key() if p > 0 else None for _, _, p in self.blocks]
        if self.closed_form:
            weight, pos_weight = self.loss_fn.effective_weights(w, dtype=y.dtype)
            loss_grad = _bce_and_grad
        else:
            weight, pos_weight, loss_grad = w, None, self._autograd_loss_and_grad
        args = (x, y, weight, pos_weight, self.params, keys, self.spec)
        if self._compiled_rows is None:
            self._compiled_rows = len(x)
            self._signature = (len(x), weight is None, pos_weight is None, self.spec) + tuple(
                None if p is None else tuple(p.shape) for p in self.params
            )
            signatures = runtime.COMPILE_CACHE.signatures
            if self.compiled is None:
                # Built here before, and measured faster than the eager step (or not measured).
                faster = runtime.PROBES.compile.get(self._signature, (True, {}))[0]
                self.compiled = self._signature in signatures and (faster or self.forced)
            elif self.compiled and self._signature not in signatures:
                # A bounded number of graphs per process (one per signature);
                # new shapes past that bound train eagerly.
                self.compiled = len(signatures) < _recompile_limit()
        if self.compiled and len(x) == self._compiled_rows:
            loss, grads, stats = self._run_compiled(args)
        else:
            with use_backend(self.matmul):
                loss, grads, stats = _mlp_step(*args, loss_grad)
        for p, g in zip(self.params, grads):
            if p is not None:
                p.grad = g
        if stats:
            # nn.BatchNorm1d's update with the batch mean and unbiased variance
            # (computed in the step): two calls for all layers, not six per layer.
            if self._momentum is not None:
                torch._foreach_lerp_(self._running, [t for ms in stats for t in ms], self._momentum)
            else:
                for r, t, bn in zip(self._running, [t for ms in stats for t in ms], self._bns + self._bns):
                    r.lerp_(t, bn.momentum)
            torch._foreach_add_(self._counts, 1)
        return loss

    def _run_compiled(self, args: tuple) -> tuple[Tensor, list, list]:
        if self._checked:
            return _compiled_mlp_step()(*args, _bce_and_grad)
        with use_backend(self.matmul):
            eager = _mlp_step(*args, _bce_and_grad)
        try:
            got = _compiled_mlp_step()(*args, _bce_and_grad)
            if not _close(got, eager):
                raise RuntimeError("the compiled training step disagrees with the eager one")
        except Exception:  # noqa: BLE001 - no compiler, unsupported platform: stay eager
            runtime.COMPILE_CACHE.failed = True
            self.compiled = False
            return eager
        self._checked = True
        runtime.COMPILE_CACHE.signatures.add(self._signature)
        if not self.forced and not self._compiled_is_faster(args):
            self.compiled = False  # measured: the eager step is faster here
            return eager
        return got

    def _compiled_is_faster(self, args: tuple) -> bool:
        """Whether the compiled step beats the eager one on this batch (measured once per shape and process)."""
        known = runtime.PROBES.compile.get(self._signature)
        if known is None:
            compiled = _compiled_mlp_step()

            def run_eager() -> None:
                with use_backend(self.matmul):
                    _mlp_step(*args, _bce_and_grad)

            seconds = probe.time_interleaved(
                {"compiled": lambda: compiled(*args, _bce_and_grad), "eager": run_eager}, rounds=3, budget_s=0.1
            )
            # A compiled step that only ties the eager one is kept: it was checked and costs nothing more.
            choice = probe.choose_fastest(seconds, default="compiled", margin=0.05) == "compiled"
            known = runtime.PROBES.compile[self._signature] = (choice, seconds)
        choice, seconds = known
        runtime.note_choice(
            "step", f"{'compiled' if choice else 'eager'} step (measured; {probe.timings_text(seconds)})"
        )
        return choice

    def probe_call(self, x: Tensor, y: Tensor, w: Tensor | None) -> Any:
        """A call running one step on this batch as the fit will (compiled if built), changing nothing.

        For timing: no gradients are written, no running statistics updated,
        and the dropout keys are fixed (torch's random stream is untouched).
        """
        if self.closed_form:
            weight, pos_weight = self.loss_fn.effective_weights(w, dtype=y.dtype)
            loss_grad = _bce_and_grad
        else:
            weight, pos_weight, loss_grad = w, None, self._autograd_loss_and_grad
        keys = [torch.tensor(12345 + i, dtype=torch.int64) if p > 0 else None
                for i, (_, _, p) in enumerate(self.blocks)]
        args = (x, y, weight, pos_weight, self.params, keys, self.spec)
        signature = (len(x), weight is None, pos_weight is None, self.spec) + tuple(
            None if p is None else tuple(p.shape) for p in self.params
        )
        ready = (
            self.closed_form and self.compiled is not False and runtime.COMPILE_CACHE.ready
            and signature in runtime.COMPILE_CACHE.signatures
            and runtime.PROBES.compile.get(signature, (True, {}))[0]
        )

        @torch.no_grad()
        def run() -> None:
            if ready:
                _compiled_mlp_step()(*args, loss_grad)
            else:
                with use_backend(self.matmul):
                    _mlp_step(*args, loss_grad)

        return run, signature

    def layer_sizes(self) -> tuple[int, ...]:
        """The widths of the layers' products, input first: ``(d, h1, h2, ...)``."""
        return (self.blocks[0][0].in_features, *(lin.out_features for lin, _, _ in self.blocks))

    def _autograd_loss_and_grad(self, logits: Tensor, y: Tensor, w: Tensor | None, _: Any) -> tuple[Tensor, Tensor]:
        z = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_fn(z, y, w)
            (g,) = torch.autograd.grad(loss, z)
        return loss.detach(), g


def plan_speed(step: FusedMLPStep, x: Tensor, y: Tensor, w: Tensor | None) -> probe.ThreadReport:
    """Measure and put in force the fastest kernel and thread count for ``step`` on batch ``(x, y, w)``.

    Inside a :func:`binclf.runtime.session` (``Trainer.fit`` runs in one):
    the thread count by :func:`binclf.probe.plan_threads`, one step per count
    timed (the count is only ever lowered, the session restores it, and a
    count the user fixed, ``--threads`` or ``BINCLF_THREADS``, stands). Then,
    on the threads chosen, the matmul kernel, once per process and batch and
    layer sizes (``BINCLF_MATMUL`` overrides).

    Returns
    -------
    ThreadReport
        The thread choice and what it rested on (also noted for ``--debug``).
    """
    run, signature = step.probe_call(x, y, w)
    report = probe.plan_threads(run, key=signature)

    # The kernel on the threads the fit will use.
    sizes = step.layer_sizes()
    override = probe.matmul_override()
    key = (len(x), sizes, torch.get_num_threads())
    if override is not None:
        step.matmul, seconds, how = override, {}, "set by BINCLF_MATMUL"
    else:
        if key not in runtime.PROBES.matmul:
            seconds = probe_backends(len(x), sizes)
            # oneDNN must win clearly: a near tie would flip from run to run, and with it the last bits.
            runtime.PROBES.matmul[key] = (probe.choose_fastest(seconds, default="mm", margin=0.10), seconds)
        step.matmul, seconds = runtime.PROBES.matmul[key]
        how = "measured"
    names = {"mm": backend_name("mm"), "onednn": backend_name("onednn")}
    detail = f"; {probe.timings_text(seconds, {k: v.split()[0] for k, v in names.items()})}" if seconds else ""
    runtime.note_choice("matmul", f"{names[step.matmul]} ({how}{detail})")

    return report


def _compiled_mlp_step() -> Any:
    """The compiled step, built once per process (``runtime.COMPILE_CACHE.step``): a :class:`GraphStep`."""
    cache = runtime.COMPILE_CACHE
    if cache.step is None:
        cache.step = GraphStep()
    return cache.step


# torch.compile's default bound on graphs per function: past it, new shapes train eagerly.
_MAX_GRAPHS = 8


def _recompile_limit() -> int:
    """How many compiled graphs of the step this process keeps (one per signature)."""
    return _MAX_GRAPHS


class _Tracing(threading.local):
    on = False  # per thread; False in every thread until set


_TRACING = _Tracing()


@contextlib.contextmanager
def _tracing() -> Iterator[None]:
    """While :class:`GraphStep` traces: ``_mlp_step`` writes the graph's form of its products."""
    before, _TRACING.on = _TRACING.on, True
    try:
        yield
    finally:
        _TRACING.on = before


class GraphStep:
    """:func:`_mlp_step` compiled ahead of time: one ATen graph per signature, called without guards.

    ``torch.compile`` wraps its graph in TorchDynamo's frame hook, which
    checks a guard on every input at every call; for this step, measured on
    2 cores (Intel Xeon, the 50-128-64-1 MLP, batch 512), that cost 75-80 us
    of a 440 us call. Here the step is traced once per signature (batch
    size, which of ``w`` / ``pos_weight`` are given, ``spec``, the loss, the
    parameters' shapes) with ``make_fx`` into one ATen graph over a flat list
    of tensors and compiled by inductor (:func:`torch._inductor.compile`):
    the same fused C++ loops around the same products, called directly
    (368 us). The signature is the guard: it is looked up in a dict, and
    inductor's size-and-stride asserts on the inputs stay on. Products are
    traced as ``torch.mm`` (the kernel choice applies to the eager step).

    Called like :func:`_mlp_step`, with the same results.
    """

    def __init__(self) -> None:
        self.graphs: dict[tuple, tuple[Any, list[int], int]] = {}

    def __call__(
        self, x: Tensor, y: Tensor, w: Tensor | None, pos_weight: Tensor | None,
        params: list[Tensor | None], keys: list[Tensor | None], spec: tuple, loss_grad: Any,
    ) -> tuple[Tensor, list[Tensor | None], list[tuple[Tensor, Tensor]]]:
        signature = (x.shape, w is None, pos_weight is None, spec, loss_grad,
                     *[None if p is None else p.shape for p in params])
        inputs = [x, y, *[t for t in (w, pos_weight) if t is not None],
                  *[p for p in params if p is not None], *[k for k in keys if k is not None]]
        built = self.graphs.get(signature)
        if built is None:
            built = self.graphs[signature] = self._build(inputs, w, pos_weight, params, keys, spec, loss_grad)
        graph, grad_slots, n_stats = built
        out = graph(*inputs)
        grads: list[Tensor | None] = [None] * len(params)
        for j, i in enumerate(grad_slots):
            grads[i] = out[1 + j]
        first = 1 + len(grad_slots)
        return out[0], grads, [(out[first + 2 * j], out[first + 2 * j + 1]) for j in range(n_stats)]

    @staticmethod
    def _build(inputs: list[Tensor], w: Tensor | None, pos_weight: Tensor | None, params: list[Tensor | None],
               keys: list[Tensor | None], spec: tuple, loss_grad: Any) -> tuple[Any, list[int], int]:
        """Trace ``_mlp_step`` over the flat ``inputs`` and compile it; where its outputs go back."""
        import torch._inductor
        from torch.fx.experimental.proxy_tensor import make_fx

        has_w, has_pw = w is not None, pos_weight is not None
        p_slots = [i for i, p in enumerate(params) if p is not None]
        k_slots = [i for i, k in enumerate(keys) if k is not None]
        layout: dict[str, Any] = {}

        def flat(*tensors: Tensor) -> tuple[Tensor, ...]:
            it = iter(tensors)
            x, y = next(it), next(it)
            w_, pw_ = (next(it) if has_w else None), (next(it) if has_pw else None)
            ps: list[Tensor | None] = [None] * len(params)
            for i in p_slots:
                ps[i] = next(it)
            ks: list[Tensor | None] = [None] * len(keys)
            for i in k_slots:
                ks[i] = next(it)
            loss, grads, stats = _mlp_step(x, y, w_, pw_, ps, ks, spec, loss_grad)
            layout["grads"] = [i for i, g in enumerate(grads) if g is not None]
            layout["stats"] = len(stats)
            return (loss, *[g for g in grads if g is not None], *[t for ms in stats for t in ms])

        with torch.no_grad(), use_backend("mm"), _tracing():
            gm = make_fx(flat)(*inputs)
        graph = torch._inductor.compile(gm, inputs)
        return graph, layout["grads"], layout["stats"]


def compiled_step_ready() -> bool:
    """Whether a compiled training step has been built and checked in this process."""
    return runtime.COMPILE_CACHE.ready


def _close(got: tuple, want: tuple) -> bool:
    """Whether two ``_mlp_step`` results agree to float32 rounding."""
    a = [got[0], *(g for g in got[1] if g is not None), *(t for s in got[2] for t in s)]
    b = [want[0], *(g for g in want[1] if g is not None), *(t for s in want[2] for t in s)]
    return len(a) == len(b) and all(
        u.shape == v.shape and float((u - v).norm()) <= 1e-4 * float(v.norm()) + 1e-6 for u, v in zip(a, b)
    )


def _bce_and_grad(logits: Tensor, y: Tensor, weight: Tensor | None, pos_weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean BCE with logits and its gradient with respect to the logits ``(n,)``."""
    loss = F.binary_cross_entropy_with_logits(logits, y, weight=weight, pos_weight=pos_weight)
    # d/dz of -[pw*y*log s(z) + (1-y)*log s(-z)] = s(z)*(1 + (pw-1)*y) - pw*y
    s = torch.sigmoid(logits)
    if pos_weight is None:
        g = s - y
    else:
        g = s * (1 + (pos_weight - 1) * y) - pos_weight * y
    if weight is not None:
        g = g * weight
    return loss, g / len(logits)


def _mlp_step(
    x: Tensor,
    y: Tensor,
    w: Tensor | None,
    pos_weight: Tensor | None,
    params: list[Tensor | None],
    keys: list[Tensor | None],
    spec: tuple[tuple[bool, float, float], ...],
    loss_grad: Any,
) -> tuple[Tensor, list[Tensor | None], list[tuple[Tensor, Tensor]]]:
    """An MLP's loss, gradients and BatchNorm batch statistics on one batch; changes nothing.

    ``params``: per block ``[weight, bias, bn_weight, bn_bias]`` (None where
    absent), then the output layer's ``[weight, bias]``; ``spec``: per block
    ``(has_batchnorm, dropout p, eps)``; ``keys``: per block its dropout key.
    Returns ``(loss, grads aligned with params, [(mean, unbiased variance)] per BatchNorm)``.
    Runs eagerly or as one compiled graph (plain products there, so inductor
    sees the whole step).
    """
    compiling = _TRACING.on  # traced for GraphStep (nothing else compiles this function)
    saved, stats = [], []
    a = x
    for i, (has_bn, p, eps) in enumerate(spec):
        weight, bias, gamma, beta = params[4 * i : 4 * i + 4]
        z = a @ weight.t() if compiling else mm_nt(a, weight)
        if bias is not None:
            z = z + bias
        mean = invstd = None
        zb = z
        if has_bn:
            zb, mean, invstd = torch.native_batch_norm(z, gamma, beta, None, None, True, 0.0, eps)
            # For the running statistics: the batch mean and the unbiased batch variance.
            stats.append((mean, (invstd.pow(-2) - eps) * (len(x) / max(len(x) - 1, 1))))
        if p > 0:
            out, mult = _relu_dropout_kernel(zb, keys[i], _threshold(p), 1.0 / (1.0 - p))
        else:
            out, mult = torch.relu(zb), None
        saved.append((a, z, mean, invstd, out, mult))
        a = out
    head_w, head_b = params[-2:]
    # The one-logit head: a matrix-vector product. In a compiled graph it is
    # written elementwise, so it fuses into the last block's loops instead of
    # three BLAS calls on (n, 1) shapes.
    logits = (a * head_w).sum(1) + head_b if compiling else F.linear(a, head_w, head_b).squeeze(-1)
    loss, g = loss_grad(logits, y, w, pos_weight)

    g = g.unsqueeze(-1)  # (n, 1)
    grads: list[Tensor | None] = [None] * len(params)
    grads[-2] = (g * a).sum(0, keepdim=True) if compiling else g.t().mm(a)
    grads[-1] = g.sum(0)
    da = g * head_w if compiling else g.mm(head_w)
    for i in range(len(spec) - 1, -1, -1):
        has_bn, p, eps = spec[i]
        a_in, z, mean, invstd, out, mult = saved[i]
        weight, bias, gamma, _ = params[4 * i : 4 * i + 4]
        dz = da * mult if mult is not None else torch.ops.aten.threshold_backward(da, out, 0)
        if has_bn:
            dz, grads[4 * i + 2], grads[4 * i + 3] = torch.ops.aten.native_batch_norm_backward(
                dz, z, gamma, None, None, mean, invstd, True, eps, [True, True, True]
            )
        # Both operands transposed: BLAS takes them as they are, where oneDNN
        # would first copy them contiguous (measured 45 vs 60 us, first layer).
        grads[4 * i] = torch.mm(dz.t(), a_in)
        if bias is not None:
            grads[4 * i + 1] = dz.sum(0)
        if i > 0:
            da = dz @ weight if compiling else mm_nt(dz, weight.t())
    return loss, grads, stats
