"""Matrix products on the CPU: ``torch.mm`` (MKL/BLAS) or oneDNN's linear kernel, whichever measures faster.

Which kernel wins depends on the CPU, not on a vendor rule one can write down
(measured on this MLP's 512-row shapes: on an AMD EPYC oneDNN 37 us against
MKL's 62 us for the first layer, MKL running its AVX2 code there; on an Intel
Xeon with AVX-512 and AMX the reverse, MKL 35 us against oneDNN 62 us). So
:func:`probe_backends` times both on a fit's real shapes (a few milliseconds)
and the caller makes the winner current for its steps with
:func:`use_backend`; without a probe, :func:`mm_nt` uses ``torch.mm``.
``BINCLF_MATMUL=mm|onednn`` overrides the measurement.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

__all__ = ["backend_name", "current_backend", "mm_nt", "onednn_works", "probe_backends", "use_backend"]

# --------------------------------------------------------------------------- #
# the kernels
# --------------------------------------------------------------------------- #

_onednn_ok: bool | None = None
_local = threading.local()  # .backend: the calling thread's current kernel ("mm" when unset)


def onednn_works() -> bool:
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


_onednn = onednn_works  # the name older callers used


def current_backend() -> str:
    """The calling thread's kernel for :func:`mm_nt`: ``"mm"`` or ``"onednn"``."""
    return getattr(_local, "backend", "mm")


def backend_name(backend: str) -> str:
    """``"MKL mm"``, ``"BLAS mm"`` or ``"oneDNN linear"``: what the kernel is, for people."""
    if backend == "onednn":
        return "oneDNN linear"
    return "MKL mm" if torch.backends.mkl.is_available() else "BLAS mm"


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[str]:
    """:func:`mm_nt` uses ``backend`` in the calling thread inside the block (restored after).

    ``"onednn"`` where oneDNN does not work here falls back to ``"mm"``; the
    backend in force is yielded.
    """
    before = current_backend()
    _local.backend = "onednn" if backend == "onednn" and onednn_works() else "mm"
    try:
        yield _local.backend
    finally:
        _local.backend = before


def mm_nt(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` for float32 CPU matrices (either may be a transposed view), on the current kernel.

    Parameters
    ----------
    a : Tensor of shape (n, k)
    b : Tensor of shape (m, k)

    Returns
    -------
    Tensor of shape (n, m)
    """
    if getattr(_local, "backend", "mm") == "onednn":
        try:
            return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        except RuntimeError:
            pass  # oneDNN declines some stride layouts; MKL takes any
    return a.mm(b.t())


# --------------------------------------------------------------------------- #
# the probe
# --------------------------------------------------------------------------- #


def probe_backends(rows: int, sizes: Sequence[int], *, rounds: int = 5,
                   timer: Callable[..., dict[str, float]] | None = None) -> dict[str, float]:
    """Median seconds of a training step's products per kernel, on ``rows`` x ``sizes`` shapes.

    The products :func:`binclf.train.fused_step._mlp_step` makes through
    :func:`mm_nt` for layers ``sizes[0] -> sizes[1] -> ...``: each layer's
    forward ``(rows, k) @ (m, k).T`` and, past the first, its input gradient
    ``(rows, m) @ (m, k)`` (a transposed view). Inputs come from a private
    generator: torch's global random stream is untouched. About 3 ms.

    Parameters
    ----------
    rows : int
        The batch size.
    sizes : sequence of int
        Layer widths, input first (the output layer is not included: it is a
        plain ``F.linear``).
    rounds : int
    timer : callable, optional
        :func:`binclf.probe.time_interleaved` (tests pass a fake).

    Returns
    -------
    dict
        ``{"mm": s, "onednn": s}``; only ``"mm"`` where oneDNN does not work.
    """
    from binclf.probe import time_interleaved

    gen = torch.Generator().manual_seed(0)
    pairs = []
    for i, (k, m) in enumerate(itertools.pairwise(sizes)):
        a = torch.randn(rows, k, generator=gen)
        w = torch.randn(m, k, generator=gen)
        pairs.append((a, w))
        if i > 0:
            pairs.append((torch.randn(rows, m, generator=gen), w.t()))

    def run(backend: str) -> Callable[[], None]:
        def fn() -> None:
            with use_backend(backend):
                for a, b in pairs:
                    mm_nt(a, b)

        return fn

    fns = {"mm": run("mm")}
    if onednn_works():
        fns["onednn"] = run("onednn")
    return (timer or time_interleaved)(fns, rounds=rounds)
