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
2. **Autograd's per-op overhead.** For binclf's own :class:`~binclf.models.MLP`
   the trainer runs :class:`FusedMLPStep`: the forward and backward written out
   as ~40 ATen calls (matmuls, fused batch-norm forward/backward), with no graph
   to build; on large fits that whole step is compiled into one graph by
   ``torch.compile`` (measured 0.23 -> 0.19 s per epoch of the issue #6
   workload). The gradients equal autograd's through ``MLP.forward``.
3. **glibc's malloc** hands large temporaries back to the OS after each step and
   page-faults them in again on the next (``tune_malloc``).

Every path has a plain fallback: other models, other devices (CUDA) and other
losses use the ordinary autograd loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

T = TypeVar("T")

__all__ = [
    "FusedAdamW",
    "FusedMLPStep",
    "dropout_key",
    "dropout_multiplier",
    "eval_logits",
    "prefetch",
    "relu_dropout",
    "tune_malloc",
]


# --------------------------------------------------------------------------- #
# malloc
# --------------------------------------------------------------------------- #

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
    """Keep freed memory in the heap instead of returning it to the OS (glibc only).

    A training step allocates and frees the same few-hundred-KB temporaries
    every time; with glibc's defaults the larger ones are ``mmap``-ed and
    unmapped each step, and each new mapping is page-faulted in again. Raising
    the mmap and trim thresholds (measured: 500k -> 690k samples/s on the
    no-dropout loop) costs at most the thresholds' worth of retained memory.
    Skipped when the user set ``MALLOC_*`` variables, or off glibc. Returns
    whether the settings were applied (once per process).
    """
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError off glibc (musl)
        # 32 MiB is glibc's largest allowed mmap threshold on 64-bit systems.
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20) == 1 and ok
    except (OSError, AttributeError):
        return False
    _malloc_tuned = ok
    return ok


# --------------------------------------------------------------------------- #
# counter-based dropout
# --------------------------------------------------------------------------- #


def _i64(u: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return u - (1 << 64) if u >= 1 << 63 else u


_GOLDEN = _i64(0x9E3779B97F4A7C15)
_MIX1 = _i64(0xBF58476D1CE4E5B9)
_MIX2 = _i64(0x94D049BB133111EB)
_UNIFORM_BITS = 24  # each keep decision compares a 24-bit uniform: p is exact to 6e-8


def dropout_key(device: torch.device | str = "cpu") -> Tensor:
    """One int64 key (a 0-d tensor) from torch's default generator: the seed of one mask."""
    return torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64).to(device)


def _threshold(p: float) -> int:
    # A 24-bit signed uniform v in [-2^23, 2^23) is kept when v >= threshold: P = 1 - p.
    return -(1 << (_UNIFORM_BITS - 1)) + round(p * (1 << _UNIFORM_BITS))


def _uniform24(numel: int, shape: torch.Size, key: Tensor) -> Tensor:
    """``numel`` independent uniform integers in ``[-2^23, 2^23)`` from ``key``, shaped ``shape``.

    splitmix64 of the Weyl sequence ``key + i * golden``; each 64-bit output
    gives two 32-bit halves, of which the top 24 bits are used. torch's ``>>``
    on int64 is arithmetic, so the logical shifts of splitmix64 mask the sign
    copies off.
    """
    m = (numel + 1) // 2
    z = torch.arange(m, dtype=torch.int64, device=key.device) * _GOLDEN + key
    z = z ^ ((z >> 30) & ((1 << 34) - 1))
    z = z * _MIX1
    z = z ^ ((z >> 27) & ((1 << 37) - 1))
    z = z * _MIX2
    z = z ^ ((z >> 31) & ((1 << 33) - 1))
    return (z.view(torch.int32)[:numel] >> (32 - _UNIFORM_BITS)).view(shape)


def dropout_multiplier(shape: torch.Size | tuple[int, ...], p: float, key: Tensor) -> Tensor:
    """The dropout mask for ``key``: float32 ``shape``, 0 (dropped, probability p) or 1 / (1 - p)."""
    shape = torch.Size(shape)
    keep = _uniform24(shape.numel(), shape, key) >= _threshold(p)
    return keep.to(torch.float32) * (1.0 / (1.0 - p))


def _relu_dropout_kernel(z: Tensor, key: Tensor, threshold: int, scale: float) -> tuple[Tensor, Tensor]:
    v = _uniform24(z.numel(), z.shape, key)
    mult = torch.where((v >= threshold) & (z > 0), scale, 0.0)
    return z * mult, mult


def relu_dropout(z: Tensor, p: float, key: Tensor) -> tuple[Tensor, Tensor]:
    """``dropout(relu(z))`` with the hashed mask of ``key``; returns ``(output, multiplier)``.

    ``multiplier`` is 1 / (1 - p) where the unit is positive and kept, else 0,
    so the gradient with respect to ``z`` is ``grad * multiplier``.
    """
    return _relu_dropout_kernel(z, key, _threshold(p), 1.0 / (1.0 - p))


# --------------------------------------------------------------------------- #
# matrix products
# --------------------------------------------------------------------------- #

_onednn_ok: bool | None = None


def _onednn() -> bool:
    """Whether oneDNN's linear kernel is available here and agrees with ``torch.mm``."""
    global _onednn_ok
    if _onednn_ok is None:
        try:
            # Fixed inputs: this check must not consume the global random stream.
            a = torch.linspace(-3, 3, 33 * 17).reshape(33, 17).sin()
            b = torch.linspace(-2, 2, 9 * 17).reshape(9, 17).cos()
            got = torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
            _onednn_ok = bool(torch.backends.mkldnn.is_available()) and torch.allclose(got, a @ b.t(), atol=1e-4)
        except (AttributeError, RuntimeError):
            _onednn_ok = False
    return _onednn_ok


def mm_nt(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` for float32 CPU matrices (either may be a transposed view).

    torch's CPU ``mm`` goes to MKL, which on non-Intel CPUs runs its AVX2 code
    (measured on an AMD EPYC: 112 GFLOP/s per core against oneDNN's 248, and
    37 vs 62 us for this MLP's first layer). oneDNN's linear kernel is used
    where it works; ``mm`` otherwise.
    """
    if _onednn():
        try:
            return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        except RuntimeError:
            pass  # oneDNN declines some stride layouts; MKL takes any
    return a.mm(b.t())


# --------------------------------------------------------------------------- #
# the fused MLP step
# --------------------------------------------------------------------------- #


class FusedMLPStep:
    """One training step of a :class:`~binclf.models.MLP`, forward and backward by hand.

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
    shapes (then it costs nothing).
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, *, compiled: bool | None = False) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.blocks = _blocks(model)
        self.params = []
        for lin, bn, _ in self.blocks:
            self.params += [lin.weight, lin.bias, None if bn is None else bn.weight, None if bn is None else bn.bias]
        self.params += [model.output.weight, model.output.bias]
        self.spec = tuple((bn is not None, p, 0.0 if bn is None else bn.eps) for _, bn, p in self.blocks)
        from binclf.losses import BCEWithLogitsLoss

        # Plain BCE has a closed-form gradient; other losses go through autograd
        # on the logits alone (a graph of a few nodes).
        self.closed_form = type(loss_fn) is BCEWithLogitsLoss and loss_fn.reduction == "mean"
        # None: compiled where this process already built the graph for these shapes.
        self.compiled = compiled if self.closed_form and not _compile_failed else False
        self._compiled_rows: int | None = None  # the batch size the graph is built for
        self._checked = False

    @staticmethod
    def supports(model: nn.Module, loss_fn: nn.Module, device: torch.device) -> bool:
        """Whether ``model`` is binclf's MLP in its standard layout, on the CPU, in float32."""
        from binclf.models.mlp import MLP

        if device.type != "cpu" or type(model) is not MLP:
            return False
        if any(p.dtype != torch.float32 or not p.requires_grad for p in model.parameters()):
            return False
        if getattr(loss_fn, "reduction", None) != "mean":
            return False
        try:
            _blocks(model)
        except ValueError:
            return False
        return True

    def compile_from_now(self) -> None:
        """Compile the step from the next full-size batch on (a fit that has proved long)."""
        if self.closed_form and not _compile_failed and not self.compiled:
            if self._compiled_rows is None or self._signature in _compiled_signatures:
                self.compiled = True
            else:
                self.compiled = len(_compiled_signatures) < _recompile_limit()

    @property
    def compiled_in_use(self) -> bool:
        """Whether steps run the compiled graph (after the first step has checked it)."""
        return bool(self.compiled) and self._checked

    @torch.no_grad()  # no graph: the backward is written out in _mlp_step
    def __call__(self, x: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
        keys = [dropout_key() if p > 0 else None for _, _, p in self.blocks]
        if self.closed_form:
            weight, pos_weight, loss_grad = self.loss_fn._weight(w), self.loss_fn._pos_weight_for(y), _bce_and_grad
        else:
            weight, pos_weight, loss_grad = w, None, self._autograd_loss_and_grad
        args = (x, y, weight, pos_weight, self.params, keys, self.spec)
        if self._compiled_rows is None:
            self._compiled_rows = len(x)
            self._signature = (len(x), weight is None, pos_weight is None, self.spec) + tuple(
                None if p is None else tuple(p.shape) for p in self.params
            )
            if self.compiled is None:
                self.compiled = self._signature in _compiled_signatures
            elif self.compiled and self._signature not in _compiled_signatures:
                # torch.compile keeps a bounded number of graphs per function and
                # warns beyond it; new shapes past that bound train eagerly.
                self.compiled = len(_compiled_signatures) < _recompile_limit()
        if self.compiled and len(x) == self._compiled_rows:
            loss, grads, stats = self._run_compiled(args)
        else:
            loss, grads, stats = _mlp_step(*args, loss_grad)
        for p, g in zip(self.params, grads):
            if p is not None:
                p.grad = g
        n = len(x)
        for (_, bn, _), (mean, invstd) in zip((b for b in self.blocks if b[1] is not None), stats):
            # nn.BatchNorm1d's update: the batch mean and the unbiased batch variance.
            bn.running_mean.lerp_(mean, bn.momentum)
            bn.running_var.lerp_(invstd.pow(-2).sub_(bn.eps).mul_(n / max(n - 1, 1)), bn.momentum)
            bn.num_batches_tracked.add_(1)
        return loss

    def _run_compiled(self, args: tuple) -> tuple[Tensor, list, list]:
        global _compile_failed
        if self._checked:
            return _compiled_mlp_step()(*args, _bce_and_grad)
        eager = _mlp_step(*args, _bce_and_grad)
        try:
            got = _compiled_mlp_step()(*args, _bce_and_grad)
            if not _close(got, eager):
                raise RuntimeError("the compiled training step disagrees with the eager one")
        except Exception:  # noqa: BLE001 - no compiler, unsupported platform: stay eager
            _compile_failed = True
            self.compiled = False
            return eager
        self._checked = True
        _compiled_signatures.add(self._signature)
        return got

    def _autograd_loss_and_grad(self, logits: Tensor, y: Tensor, w: Tensor | None, _: Any) -> tuple[Tensor, Tensor]:
        z = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_fn(z, y, w)
            (g,) = torch.autograd.grad(loss, z)
        return loss.detach(), g


_compile_failed = False
_compiled_step: Any = None
_compiled_signatures: set[tuple] = set()  # shapes whose compiled graph this process has built and checked


def _compiled_mlp_step() -> Any:
    global _compiled_step
    if _compiled_step is None:
        # Static shapes: one graph per (batch, layer sizes); a fit's last, shorter
        # batch runs eagerly instead of compiling a second graph.
        _compiled_step = torch.compile(_mlp_step, dynamic=False)
    return _compiled_step


def _recompile_limit() -> int:
    """How many graphs torch.compile keeps per function (dynamo's recompile limit)."""
    try:
        import torch._dynamo
    except ImportError:
        return 0
    config = torch._dynamo.config
    return int(getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8)))


def compiled_step_ready() -> bool:
    """Whether a compiled training step has been built and checked in this process."""
    return _compiled_step is not None and not _compile_failed


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
    Returns ``(loss, grads aligned with params, [(mean, invstd)] per BatchNorm)``.
    Runs eagerly or as one compiled graph (plain products there, so inductor
    sees the whole step).
    """
    compiling = torch.compiler.is_compiling()
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
            stats.append((mean, invstd))
        if p > 0:
            out, mult = _relu_dropout_kernel(zb, keys[i], _threshold(p), 1.0 / (1.0 - p))
        else:
            out, mult = torch.relu(zb), None
        saved.append((a, z, mean, invstd, out, mult))
        a = out
    head_w, head_b = params[-2:]
    logits = F.linear(a, head_w, head_b).squeeze(-1)
    loss, g = loss_grad(logits, y, w, pos_weight)

    g = g.unsqueeze(-1)  # (n, 1)
    grads: list[Tensor | None] = [None] * len(params)
    grads[-2], grads[-1] = g.t().mm(a), g.sum(0)
    da = g.mm(head_w)
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


def _blocks(model: nn.Module) -> list[tuple[nn.Linear, nn.BatchNorm1d | None, float]]:
    """``(linear, batchnorm or None, dropout p)`` per block of an MLP's body; ValueError otherwise."""
    layers = list(model.body)
    blocks = []
    i = 0
    while i < len(layers):
        lin = layers[i]
        if type(lin) is not nn.Linear:
            raise ValueError("block does not start with nn.Linear")
        i += 1
        bn = None
        if i < len(layers) and type(layers[i]) is nn.BatchNorm1d:
            bn = layers[i]
            if not (bn.affine and bn.track_running_stats and bn.momentum is not None):
                raise ValueError("BatchNorm1d without affine/running stats/momentum")
            i += 1
        if i >= len(layers) or type(layers[i]) is not nn.ReLU:
            raise ValueError("block has no ReLU")
        i += 1
        p = 0.0
        if i < len(layers) and isinstance(layers[i], nn.Dropout):
            p = float(layers[i].p)
            i += 1
        blocks.append((lin, bn, p))
    if type(model.output) is not nn.Linear or model.output.out_features != 1 or model.output.bias is None:
        raise ValueError("output is not nn.Linear(d, 1) with a bias")
    return blocks


# --------------------------------------------------------------------------- #
# inference
# --------------------------------------------------------------------------- #

_EVAL_ROWS = 4096  # a chunk's activations (4096 x 128 floats = 2 MiB) stay in cache


@torch.inference_mode()
def eval_logits(model: nn.Module, X: Tensor, *, chunk_rows: int = _EVAL_ROWS) -> Tensor:
    """``model(X)`` in eval mode, ``(n,)`` logits, in cache-sized chunks.

    Large batches make every elementwise op (BatchNorm, ReLU) stream hundreds
    of MiB through memory; chunks of a few thousand rows stay in cache. For
    binclf's MLP on the CPU, each eval-mode BatchNorm is folded into the Linear
    before it (an affine map of an affine map) and the ReLU fused into oneDNN's
    linear kernel: one call per layer. The folding changes float rounding only
    (agreement to ~1e-6). The caller sets ``model.eval()``.
    """
    from binclf.models.base import encoded_network

    # Chunks allocate the same few-MiB temporaries again and again: keep them
    # in the heap (measured: the default bundle's prediction 9.9 s -> 3.4 s per
    # million rows, the encoding's page faults gone).
    tune_malloc()
    n = len(X)
    encode = None
    network = encoded_network(model)
    if network is not None:
        encode, model = model.encode, network  # binclf.models.PLEMLP: encoding, then an MLP
    layers = _folded_mlp(model) if X.device.type == "cpu" and X.dtype == torch.float32 else None
    if layers is None:
        run = model if encode is None else (lambda xb: model(encode(xb)))
        if n <= chunk_rows:
            return run(X)
        return torch.cat([run(X[lo : lo + chunk_rows]) for lo in range(0, n, chunk_rows)])
    out = torch.empty(n, dtype=X.dtype)
    # One thread: a chunk is ~0.5 ms of work, and in prediction it runs beside
    # the file reader's threads; two OpenMP threads spinning at each layer's
    # barrier then cost far more than they save (measured 9 s vs 0.2 s per
    # million rows on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for lo in range(0, n, chunk_rows):
            xb = X[lo : lo + chunk_rows]
            if encode is not None:
                xb = encode(xb)
            for weight, bias, relu in layers:
                xb = _linear(xb, weight, bias, relu)
            out[lo : lo + len(xb)] = xb.squeeze(-1)
    finally:
        torch.set_num_threads(threads)
    return out


def _linear(x: Tensor, weight: Tensor, bias: Tensor, relu: bool) -> Tensor:
    if _onednn():
        try:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")
        except RuntimeError:
            pass
    y = F.linear(x, weight, bias)
    return y.relu_() if relu else y


def _folded_mlp(model: nn.Module) -> list[tuple[Tensor, Tensor, bool]] | None:
    """``(weight, bias, relu)`` per layer of an eval-mode MLP with BatchNorm folded in, or None."""
    from binclf.models.mlp import MLP

    if type(model) is not MLP or model.training:
        return None
    try:
        blocks = _blocks(model)
    except ValueError:
        return None
    layers = []
    for lin, bn, _ in blocks:  # dropout is the identity in eval mode
        w = lin.weight.detach().float()
        b = lin.bias.detach().float() if lin.bias is not None else torch.zeros(w.shape[0])
        if bn is not None:
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            w = w * scale[:, None]
            b = (b - bn.running_mean) * scale + bn.bias.detach()
        layers.append((w.contiguous(), b.contiguous(), True))
    layers.append((model.output.weight.detach().contiguous(), model.output.bias.detach().contiguous(), False))
    return layers


# --------------------------------------------------------------------------- #
# reading ahead
# --------------------------------------------------------------------------- #

_DONE = object()


def prefetch(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead of the consumer.

    File readers (pyarrow) and the model (torch) release the GIL, so reading
    the next chunk overlaps predicting this one: the wall time becomes the
    larger of the two instead of their sum. At most ``depth + 1`` items are held
    at once, so memory stays flat. Exceptions surface in the consumer, in order.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="binclf-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


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
