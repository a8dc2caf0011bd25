"""Every process-wide setting binclf touches, in one place, set at the entry points.

Importing binclf changes nothing in the host process. The public entry points
(:func:`binclf.train_table`, :meth:`binclf.Trainer.fit`,
:meth:`binclf.BinaryClassifier.fit` and its predict methods, the
:class:`binclf.Predictor` predict methods and ``predict_file``) run inside
:func:`session`, which sets the knobs below on entry and restores them on exit,
also when the call raises:

========================================  ===============================  =====================
knob                                      inside a session                 on exit
========================================  ===============================  =====================
torch intra-op threads (calling thread)   ``min(threads, current)``        restored
prediction worker threads (predict_file)  one per torch thread, each on 1  joined
member plan chunk threads (in memory)     one per torch thread, each on 1  joined
torch threads of a torchrun rank          ``cores // local_world_size``    restored
numpy/scipy BLAS threads (threadpoolctl)  1 (``purpose="train"``)          restored
glibc malloc mmap / trim thresholds       raised, once per process         kept (see below)
the compiled training step's cache        grows as graphs are built        kept (see below)
measured speed choices (:data:`PROBES`)   filled by the fits' probes       kept (see below)
========================================  ===============================  =====================

* **torch threads**: a session only ever *lowers* the calling thread's count,
  so a user's ``OMP_NUM_THREADS`` or ``torch.set_num_threads(k)`` is the
  ceiling, and nested sessions (``train_table`` -> ``Trainer.fit``) never
  raise what an outer one chose. torch keeps this count per OS thread (OpenMP's
  own rule), so sessions in several threads at once do not disturb each other.
* **prediction workers**: ``predict_file`` predicts that many batches side
  by side (:func:`prediction_workers`), each worker on one torch thread
  (:func:`in_predict_worker`); they wait on locks, never spin, and are joined
  before ``predict_file`` returns.
* **a member plan's chunk threads**: :class:`binclf.infer.MemberPlan` shares
  a call's 4,096-row chunks out to as many threads as the caller's torch
  thread count (and the usable cores) allow, each evaluating whole chunks on
  one torch thread (the same bits as one thread: chunks are independent). On
  2 cores, ``Predictor.predict_proba`` of 1M rows with the default bundle went
  from 3.0-3.5 s to 1.6-1.8 s. Inside a prediction worker (one torch thread)
  it stays on that thread. The threads are started for the call and joined
  before it returns.
* **a torchrun rank's threads**: ``torchrun`` sets ``OMP_NUM_THREADS=1`` in
  every process it starts (unless the variable is set), which would leave
  ``N`` processes on ``C`` cores with one thread each; inside
  :func:`binclf.dist.init` each rank uses ``max(1, C // local_world_size)``
  threads instead (:func:`rank_threads`; a user's ``OMP_NUM_THREADS`` above 1
  is the ceiling), restored when the block ends.
* **BLAS threads** are one process-wide count per library, which
  threadpoolctl lets one Python thread at a time change (the first to set it,
  while it lives); sessions in other threads leave it as it is.
* **malloc**: ``mallopt`` settings cannot be read back, and setting them turns
  off glibc's dynamic mmap threshold for good, so there is no state to restore
  to. The thresholds are therefore raised once per process, at the first
  session (never at import), and stay: the cost is at most 256 MiB of freed
  memory kept in the heap instead of returned to the OS. ``BINCLF_MALLOC=0`` or
  any ``MALLOC_*`` variable in the environment keeps glibc's defaults;
  :func:`state` and :func:`describe` say whether it was applied.
* **compile cache**: the training step compiled by inductor is built
  once per process and shape; a later fit of the same shapes reuses it for
  free, so one fit's code path depends on earlier fits (never its results:
  the compiled step is checked against the eager one). That state lives in
  :data:`COMPILE_CACHE`; :func:`reset_compile_cache` empties it, and
  ``BINCLF_COMPILE=0`` in the environment turns automatic compiling off,
  ``BINCLF_COMPILE=1`` compiles every fit's step without measuring whether
  it beats the eager one.
* **measured choices** (:mod:`binclf.probe`): the matmul kernel and
  compiled-or-eager step per shape, and the recent thread choice, live in
  :data:`PROBES` (:func:`reset_probes` empties it). ``BINCLF_THREADS=N`` or
  ``session(threads=N, pinned=True)`` (``binclf train --threads N``) fixes
  the training threads (still at most the ceiling); ``BINCLF_MATMUL=mm|onednn``
  fixes the kernel.

The module is free of torch at import, so modules that only need the BLAS
limit (calibration) do not load it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

__all__ = [
    "COMPILE_CACHE",
    "PROBES",
    "CompileCache",
    "ProbeCache",
    "Session",
    "auto_compile_enabled",
    "compile_forced",
    "available_cores",
    "describe",
    "entry_point",
    "in_predict_worker",
    "lower_threads",
    "release_freed_memory",
    "note_choice",
    "note_fit",
    "one_blas_thread",
    "prediction_workers",
    "rank_threads",
    "reset_compile_cache",
    "reset_probes",
    "session",
    "state",
    "threads_pinned",
    "torch_threads",
    "tune_malloc",
    "with_one_blas_thread",
]

Purpose = Literal["train", "predict"]


# --------------------------------------------------------------------------- #
# torch intra-op threads (per OS thread)
# --------------------------------------------------------------------------- #


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """The calling thread's torch intra-op threads at most ``threads`` inside the block.

    Parameters
    ----------
    threads : int or None
        The most threads to use; ``None`` keeps the current count. Never raises
        the count: the current one (the user's ``OMP_NUM_THREADS`` or
        ``torch.set_num_threads``) is the ceiling.

    Yields
    ------
    int
        The thread count in force inside the block. The count before is
        restored on leaving it, also on an exception.
    """
    import torch

    before = torch.get_num_threads()
    now = before if threads is None else max(1, min(int(threads), before))
    if now != before:
        torch.set_num_threads(now)
    try:
        yield now
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def prediction_workers(batches: int | None = None) -> int:
    """How many threads predict a file's batches side by side (:meth:`binclf.Predictor.predict_file`).

    One per torch intra-op thread the calling thread may use (so the user's
    ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` is the ceiling, and a
    session's lower count wins), at most the CPUs this process may run on, and
    at most ``batches`` when the file is known to have fewer. Each worker runs
    its torch calls on one intra-op thread (:class:`binclf.infer.MemberPlan`):
    workers wait on a lock, never spin, so on a busy machine they cost what
    they compute and no more (OpenMP threads spinning at a barrier beside the
    reader cost far more, see :func:`binclf.infer.eval_logits`).

    Parameters
    ----------
    batches : int, optional
        The number of batches to predict, when known.

    Returns
    -------
    int
        At least 1.
    """
    import torch

    n = min(torch.get_num_threads(), available_cores())
    if batches is not None:
        n = min(n, batches)
    return max(1, n)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: taskset, cgroups' cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def rank_threads(local_world_size: int) -> Iterator[int]:
    """The calling thread's torch threads for one of ``local_world_size`` processes on this machine.

    ``max(1, cores // local_world_size)``, where ``cores`` is
    :func:`available_cores`; an ``OMP_NUM_THREADS`` above 1 in the environment
    (the user's, since torchrun's own default is 1) caps it. Unlike
    :func:`torch_threads` this may raise the count: it replaces torchrun's
    blanket ``OMP_NUM_THREADS=1``.

    Parameters
    ----------
    local_world_size : int
        Processes sharing this machine's cores.

    Yields
    ------
    int
        The count in force inside the block; the count before is restored after.
    """
    import torch

    n = max(1, available_cores() // max(1, int(local_world_size)))
    try:
        user = int(os.environ.get("OMP_NUM_THREADS", "1"))
    except ValueError:
        user = 1
    if user > 1:
        n = min(n, user)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- #
# BLAS threads (process-wide; threadpoolctl decides which Python thread may set them)
# --------------------------------------------------------------------------- #

_blas_controller: Any = None


def _controller() -> Any:
    global _blas_controller
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            importlib.import_module("scipy.linalg")  # loads scipy's own BLAS, so the controller sees it

            _blas_controller = ThreadpoolController()
        except Exception:  # noqa: BLE001 - no threadpoolctl or an unreadable library list: leave threads alone
            _blas_controller = False
    return _blas_controller


def one_blas_thread() -> contextlib.AbstractContextManager:
    """numpy's and scipy's BLAS on one thread inside the block (torch's threads untouched).

    The numpy/scipy work around training (calibrators, the logistic path, blend
    weights, thresholds) is made of many small matrix-vector products; with
    OpenBLAS on two threads each one wakes and syncs a second thread, which on
    a 2-core machine costs far more than it saves (measured: a beta calibrator
    on 17,800 rows 110 ms -> 10 ms; ``binclf train`` on a 22k-row, 85-column
    table 13.2 s -> 11.5 s). A no-op where threadpoolctl finds no BLAS.

    The count is the libraries' own, process-wide, and restored on leaving the
    block (nested blocks restore in turn). OpenBLAS's pool is shared by all
    threads, so threadpoolctl lets one Python thread control it (the first to
    set it, while it lives) and ignores the others: a block entered from
    another thread then leaves BLAS as it is, which can only cost speed.
    """
    controller = _controller()
    if not controller:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def with_one_blas_thread(fn: T) -> T:
    """Decorator: run ``fn`` inside :func:`one_blas_thread`."""

    @functools.wraps(fn)  # type: ignore[arg-type]
    def inner(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return fn(*args, **kwargs)  # type: ignore[operator]

    return inner  # type: ignore[return-value]


def _blas_threads_now() -> int | None:
    controller = _controller()
    if not controller:
        return None
    counts = [lib.num_threads for lib in controller.select(user_api="blas").lib_controllers]
    return max(counts) if counts else None


# --------------------------------------------------------------------------- #
# malloc (once per process: it cannot be read back)
# --------------------------------------------------------------------------- #

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_malloc_tuned: bool | None = None  # None: not tried in this process
_malloc_lock = threading.Lock()


def _malloc_allowed() -> bool:
    if os.environ.get("BINCLF_MALLOC", "1") == "0":
        return False
    return sys.platform.startswith("linux") and not any(k.startswith("MALLOC_") for k in os.environ)


def tune_malloc() -> bool:
    """Keep freed memory in the heap instead of returning it to the OS (glibc only).

    A training step allocates and frees the same few-hundred-KB temporaries
    every time; with glibc's defaults the larger ones are ``mmap``-ed and
    unmapped each step, and each new mapping is page-faulted in again. Raising
    the mmap and trim thresholds (measured: 500k -> 690k samples/s on the
    no-dropout loop; prediction 9.9 s -> 3.4 s per million rows) costs at most
    the thresholds' worth of retained memory. Skipped when ``BINCLF_MALLOC=0``
    or ``MALLOC_*`` variables are set, or off glibc. Applied at most once per
    process and never undone (see the module docstring); :func:`session` calls it.

    Returns
    -------
    bool
        Whether the settings are in force.
    """
    global _malloc_tuned
    with _malloc_lock:
        if _malloc_tuned is not None:
            return _malloc_tuned
        _malloc_tuned = False
        if not _malloc_allowed():
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


# Arrays below this size free too little for a trim to matter: each costs ~2 ms
# (walking the heap; measured: 33 trims, 40 ms in a 2 s fit of a 1,000-row table).
_TRIM_MIN_BYTES = 4 << 20


def release_freed_memory(*, array_bytes: int | None = None, arrow: bool = False) -> bool:
    """Hand the heap's freed pages back to the OS (glibc's ``malloc_trim``), where :func:`tune_malloc` is in force.

    The raised thresholds keep freed memory in the heap (up to 256 MiB at its
    top, and every free page between live blocks): between the stages of a
    training run (split, transform, cross-fit, decision) that memory is
    resident but unused, and the next stage's arrays stack on top of it
    (measured with ``binclf train``, 1M rows x 8 float32 columns). A one-shot
    release, not a setting: nothing to restore; the next allocations fault
    pages in again. ``array_bytes``: the size of the arrays the caller's step
    freed; below ~4 MB nothing is done. Returns whether memory was trimmed
    (glibc, tuned). ``arrow``: also hand back what Arrow's memory pool keeps of
    buffers freed since (a table read with pyarrow and dropped: its own
    allocator, which keeps freed memory for reuse whatever glibc does).
    """
    if arrow and "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    if not _malloc_tuned or (array_bytes is not None and array_bytes < _TRIM_MIN_BYTES):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------- #
# the compiled training step's cache
# --------------------------------------------------------------------------- #


@dataclass
class CompileCache:
    """What inductor has built for the fused training step in this process.

    Attributes
    ----------
    step : callable or None
        A :class:`binclf.train.fused_step.GraphStep` (one compiled graph per
        signature), built on first use.
    signatures : set of tuple
        Batch and layer shapes whose compiled graph has been built and checked
        against the eager step; a later fit with one of them compiles for free.
    failed : bool
        Compiling failed or disagreed once; every later step runs eagerly.
    """

    step: Any = None
    signatures: set[tuple] = field(default_factory=set)
    failed: bool = False

    @property
    def ready(self) -> bool:
        """Whether a compiled step has been built and not failed."""
        return self.step is not None and not self.failed


COMPILE_CACHE = CompileCache()


def reset_compile_cache() -> None:
    """Forget every compiled step (and dynamo's graphs, if loaded): the next fits start fresh."""
    COMPILE_CACHE.step = None
    COMPILE_CACHE.signatures.clear()
    COMPILE_CACHE.failed = False
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.reset()


def auto_compile_enabled() -> bool:
    """False when ``BINCLF_COMPILE=0``: ``compile=None`` then never compiles the step."""
    return os.environ.get("BINCLF_COMPILE", "1") != "0"


def compile_forced() -> bool:
    """True when ``BINCLF_COMPILE=1``: every fit compiles its step, unmeasured (where a compiler works)."""
    return os.environ.get("BINCLF_COMPILE", "").strip() == "1"


# --------------------------------------------------------------------------- #
# measured speed choices (binclf.probe)
# --------------------------------------------------------------------------- #


@dataclass
class ProbeCache:
    """The speed choices :mod:`binclf.probe` measured in this process.

    Attributes
    ----------
    matmul : dict
        ``(batch rows, layer sizes, threads)`` -> ``(backend, {backend: median
        seconds of the layers' products})``.
    compile : dict
        Step signature -> ``(use_compiled, {"compiled": s, "eager": s})``.
    threads : dict
        ``(step signature, ceiling, cores)`` -> ``(report, perf_counter time)``:
        reused by fits of the same shapes for :data:`THREADS_FRESH_S` seconds
        (load changes; the other choices do not).
    """

    matmul: dict[tuple, tuple[str, dict[str, float]]] = field(default_factory=dict)
    compile: dict[tuple, tuple[bool, dict[str, float]]] = field(default_factory=dict)
    threads: dict[tuple, tuple[Any, float]] = field(default_factory=dict)


PROBES = ProbeCache()
THREADS_FRESH_S = 30.0


def reset_probes() -> None:
    """Forget every measured choice: the next fits measure afresh."""
    PROBES.matmul.clear()
    PROBES.compile.clear()
    PROBES.threads.clear()


# --------------------------------------------------------------------------- #
# the session
# --------------------------------------------------------------------------- #


@dataclass
class Session:
    """The settings one :func:`session` put in force, and the training paths it saw.

    Attributes
    ----------
    purpose : {"train", "predict"}
    torch_threads : int
        The calling thread's torch intra-op threads inside the session.
    blas_threads : int or None
        numpy/scipy's BLAS threads inside it (None: left untouched, as in
        prediction, or no BLAS library found).
    malloc_tuned : bool
        Whether glibc's malloc thresholds are raised (see :func:`tune_malloc`).
    fits : Counter
        ``(step, torch threads)`` of each :meth:`binclf.Trainer.fit` run inside
        it, e.g. ``("compiled fused step", 1)``.
    pinned : bool
        The thread count was fixed by the user (``--threads``,
        ``BINCLF_THREADS``): nested sessions and probes leave it as it is.
    choices : dict
        The last measured choice of each kind (``"threads"``, ``"matmul"``,
        ``"step"``) made inside it, in words with what each alternative measured.
    """

    purpose: Purpose
    torch_threads: int
    blas_threads: int | None
    malloc_tuned: bool
    fits: Counter = field(default_factory=Counter)
    pinned: bool = False
    choices: dict[str, str] = field(default_factory=dict)


_local = threading.local()
_last: Session | None = None
_last_train: Session | None = None  # what --debug describes after a command that trained and then predicted


def _stack() -> list[Session]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def threads_pinned() -> bool:
    """Whether an enclosing session in this thread has its thread count fixed by the user."""
    return any(s.pinned for s in _stack())


@contextlib.contextmanager
def session(*, purpose: Purpose, threads: int | None = None, pinned: bool = False) -> Iterator[Session]:
    """Put binclf's process settings in force for one train or predict call, and restore them.

    Parameters
    ----------
    purpose : {"train", "predict"}
        ``"train"`` also runs numpy/scipy's BLAS on one thread (restored after);
        ``"predict"`` leaves BLAS alone (its numpy work is elementwise).
    threads : int or None
        torch intra-op threads for the calling thread, at most the current
        count (the user's setting is the ceiling); ``None`` keeps it.
    pinned : bool
        ``threads`` is the user's own choice (``binclf train --threads``):
        nested sessions keep it, and the fits' probes do not lower it.
        ``BINCLF_THREADS=N`` pins a ``"train"`` session the same way.

    Yields
    ------
    Session
        What is in force. Nested sessions (``train_table`` -> ``Trainer.fit``)
        only lower the thread count further and restore what they found; the
        outermost one is what :func:`describe` reports afterwards.
    """
    global _last, _last_train
    malloc = tune_malloc()  # once per process; False where refused or off glibc
    stack = _stack()
    if any(s.pinned for s in stack):
        threads, pinned = None, True  # the user's count holds inside
    elif not pinned and purpose == "train":
        from binclf.probe import thread_override

        env = thread_override()
        if env is not None:
            threads, pinned = env, True
    with contextlib.ExitStack() as knobs:
        n = knobs.enter_context(torch_threads(threads))
        if purpose == "train":
            knobs.enter_context(one_blas_thread())
        blas = _blas_threads_now() if purpose == "train" else None
        current = Session(purpose=purpose, torch_threads=n, blas_threads=blas, malloc_tuned=malloc, pinned=pinned)
        stack.append(current)
        try:
            yield current
        finally:
            stack.pop()
            if not stack:
                _last = current
                if purpose == "train":
                    _last_train = current


def entry_point(purpose: Purpose) -> Callable[[T], T]:
    """Decorator: run a public function or method inside ``session(purpose=purpose)``."""

    def wrap(fn: T) -> T:
        @functools.wraps(fn)  # type: ignore[arg-type]
        def inner(*args: Any, **kwargs: Any) -> Any:
            with session(purpose=purpose):
                return fn(*args, **kwargs)  # type: ignore[operator]

        return inner  # type: ignore[return-value]

    return wrap


def in_predict_worker(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a prediction worker thread (:func:`prediction_workers`): inside a
    predict session with one torch intra-op thread, so several workers never oversubscribe the cores."""
    with session(purpose="predict", threads=1):
        return fn(*args, **kwargs)


def note_fit(step: str, threads: int) -> None:
    """Record, in the calling thread's sessions, that a fit ran ``step`` on ``threads`` torch threads."""
    for s in _stack():
        s.fits[(step, threads)] += 1


def lower_threads(threads: int) -> int:
    """Lower the calling thread's torch threads to ``threads`` for the rest of the innermost session.

    Never raises the count; the session restores what it found on exit.
    Outside a session it changes nothing (a library must not change the
    host's threads behind its back). Returns the count in force.
    """
    stack = _stack()
    if not stack:
        return sys.modules["torch"].get_num_threads() if "torch" in sys.modules else 1
    import torch

    now = torch.get_num_threads()
    want = max(1, min(int(threads), now))
    if want != now:
        torch.set_num_threads(want)
    stack[-1].torch_threads = want
    return want


def note_choice(kind: str, text: str) -> None:
    """Record, in the calling thread's sessions, a measured choice of ``kind`` in words (for :func:`describe`)."""
    for s in _stack():
        s.choices[kind] = text


def state() -> dict[str, Any]:
    """The process settings binclf can observe now (for tests and ``--debug``).

    Returns
    -------
    dict
        ``torch_threads`` (calling thread), ``blas_threads`` (None: no BLAS
        found or threadpoolctl not loaded yet), ``malloc_tuned`` (None: not
        tried in this process), ``compiled_step`` (a compiled step is built),
        ``in_session`` (the calling thread is inside :func:`session`).
    """
    torch = sys.modules.get("torch")
    return {
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "blas_threads": _blas_threads_now() if _blas_controller is not None else None,
        "malloc_tuned": _malloc_tuned,
        "compiled_step": COMPILE_CACHE.ready,
        "in_session": bool(_stack()),
    }


def describe(current: Session | None = None) -> str:
    """One line naming the fast path in use, like nanoGPT prints at start-up.

    Parameters
    ----------
    current : Session, optional
        The session to describe; default: the calling thread's innermost open
        session, else the last finished outermost training one (in any
        thread: ``binclf train`` also predicts, and its training is what
        ``--debug`` should name), else the last finished one, else the
        process as it is now.

    Returns
    -------
    str
        e.g. ``"fast path: compiled fused step (5 fits on 1 torch thread),
        MKL mm (measured; mm 0.30 ms, oneDNN 0.52 ms), torch 1 thread
        (measured; 1: 1.10 ms, 2: 9.80 ms per step), compiled step (measured;
        compiled 0.95 ms, eager 2.40 ms), BLAS 1 thread, malloc tuned"``.
    """
    stack = _stack()
    s = current or (stack[-1] if stack else _last_train or _last)
    parts = []
    if s is not None:
        for (step, threads), count in sorted(s.fits.items()):
            fits = f"{count} fit{'s' * (count != 1)}"
            parts.append(f"{step} ({fits} on {threads} torch thread{'s' * (threads != 1)})")
    chosen = dict(s.choices) if s is not None else {}
    if "matmul" not in chosen and "torch" in sys.modules:
        from binclf.nn.matmul import backend_name, current_backend

        chosen["matmul"] = backend_name(current_backend())
    if "matmul" in chosen:
        parts.append(chosen.pop("matmul"))
    now = state()
    threads = s.torch_threads if s is not None else now["torch_threads"]
    if "threads" in chosen:
        parts.append("torch " + chosen.pop("threads"))
    elif threads is not None:
        fixed = " (fixed)" if s is not None and s.pinned else ""
        parts.append(f"{threads} torch thread{'s' * (threads != 1)}{fixed}")
    parts += chosen.values()
    blas = s.blas_threads if s is not None else now["blas_threads"]
    parts.append("BLAS untouched" if blas is None else f"BLAS {blas} thread{'s' * (blas != 1)}")
    malloc = s.malloc_tuned if s is not None else now["malloc_tuned"]
    parts.append("malloc tuned" if malloc else "malloc default")
    if not auto_compile_enabled() or compile_forced():
        parts.append(f"BINCLF_COMPILE={os.environ['BINCLF_COMPILE'].strip()}")
    return "fast path: " + ", ".join(parts)
