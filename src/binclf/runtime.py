"""Every process-wide setting binclf touches: BLAS threads, torch threads, malloc.

Kept free of torch at import so the modules that use it (calibration) import without it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import ctypes
import ctypes.util
import os
import sys
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["one_blas_thread", "with_one_blas_thread"]


_blas_controller: Any = None


def one_blas_thread() -> contextlib.AbstractContextManager:
    """numpy's and scipy's BLAS on one thread inside the block (torch's threads untouched).

    The numpy/scipy work around training (calibrators, the logistic path, blend
    weights, thresholds) is made of many small matrix-vector products; with
    OpenBLAS on two threads each one wakes and syncs a second thread, which on
    a 2-core machine costs far more than it saves (measured: a beta calibrator
    on 17,800 rows 110 ms -> 10 ms; ``binclf train`` on a 22k-row, 85-column
    table 13.2 s -> 11.5 s). A no-op where threadpoolctl finds no BLAS. The
    setting is process-wide (it is the libraries' own thread count), restored
    on leaving the block.
    """
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            importlib.import_module("scipy.linalg")  # loads scipy's own BLAS, so the controller sees it

            _blas_controller = ThreadpoolController()
        except Exception:  # noqa: BLE001 - no threadpoolctl or an unreadable library list: leave threads alone
            _blas_controller = False
    if not _blas_controller:
        return contextlib.nullcontext()
    return _blas_controller.limit(limits=1, user_api="blas")


def with_one_blas_thread(fn: T) -> T:
    """Decorator: run ``fn`` inside :func:`one_blas_thread`."""

    @functools.wraps(fn)  # type: ignore[arg-type]
    def inner(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return fn(*args, **kwargs)  # type: ignore[operator]

    return inner  # type: ignore[return-value]


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
