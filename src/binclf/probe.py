"""Speed choices measured at run time: training threads, the matmul kernel, compiled or eager step.

What is fastest differs by CPU and by what else runs on the machine, so binclf
measures it instead of guessing per vendor (measured on one Intel Xeon, 2
cores: oneDNN's linear kernel 1.3-2.6x *slower* than ``torch.mm`` on this MLP's
shapes; on an AMD EPYC 1.7x *faster*; with one busy process beside it a
2-thread step 27x slower than unloaded while a 1-thread step kept its speed).

Each choice is made in two parts:

* a **pure choice function** (:func:`choose_threads`, :func:`choose_fastest`)
  that takes every input as an argument (usable cores, the thread ceiling,
  other processes' load, the measured seconds of each alternative, the
  user's override) and returns the choice: tests drive it with fake numbers;
* a **short timed probe** (:func:`time_interleaved`) on the fit's real shapes:
  the alternatives run in turn, round after round, so a burst of load hits
  all of them alike, and each is summarised by its median; alternatives
  already 4x slower than the best are dropped early (a spinning second thread
  can make a step take 30 ms). A probe costs a few milliseconds.

Overrides (environment, read at each choice): ``BINCLF_THREADS=N`` (or
``binclf train --threads N``), ``BINCLF_MATMUL=mm|onednn`` and
``BINCLF_COMPILE=0|1`` (see :mod:`binclf.runtime`). Results are cached per
process in :data:`binclf.runtime.PROBES`, and deliberately not on disk: the
thread choice depends on the load of the moment, and the kernel choice costs
about 3 ms to remeasure, less than reading and validating a cache file keyed
by CPU model, torch version and shapes would save on a fit of any size.

The alternatives compute the same math; their results agree to float32
rounding (reductions split over threads add in another order), so a fit
repeats bit for bit only where the choices do: fix them for that.

Importing this module loads no torch; the torch-specific probes import it
when called.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from binclf.errors import ConfigError

K = TypeVar("K", bound=Hashable)
Clock = Callable[[], float]

__all__ = [
    "LoadMeter",
    "ThreadGuard",
    "ThreadReport",
    "choose_fastest",
    "choose_threads",
    "matmul_override",
    "plan_threads",
    "runnable_others",
    "thread_override",
    "time_interleaved",
    "usable_cores",
]

MATMUL_BACKENDS = ("mm", "onednn")
RUNNING_NOW = "others running now"  # ThreadReport.how when the runnable tasks alone decided


# --------------------------------------------------------------------------- #
# overrides
# --------------------------------------------------------------------------- #


def thread_override(environ: Mapping[str, str] | None = None) -> int | None:
    """``BINCLF_THREADS`` as a positive int, or None when unset or empty."""
    raw = (os.environ if environ is None else environ).get("BINCLF_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"BINCLF_THREADS must be a whole number >= 1, got {raw!r}: unset it or set e.g. 2")
    return int(raw)


def matmul_override(environ: Mapping[str, str] | None = None) -> str | None:
    """``BINCLF_MATMUL`` as ``"mm"`` or ``"onednn"`` (``mkl``/``blas`` mean ``mm``), None when unset or ``auto``."""
    raw = (os.environ if environ is None else environ).get("BINCLF_MATMUL", "").strip().lower()
    if raw in ("", "auto"):
        return None
    raw = {"mkl": "mm", "blas": "mm"}.get(raw, raw)
    if raw not in MATMUL_BACKENDS:
        raise ConfigError(f"BINCLF_MATMUL must be auto, mm (alias mkl, blas) or onednn, got {raw!r}")
    return raw


# --------------------------------------------------------------------------- #
# cores and load
# --------------------------------------------------------------------------- #


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, as containers and ``taskset`` set it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_busy_seconds(cpus: set[int]) -> float | None:
    """Busy CPU seconds since boot, summed over ``cpus``, from ``/proc/stat`` (None where unreadable)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    busy = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            if int(name[3:]) not in cpus:
                continue
            v = [int(x) for x in rest.split()]
        except ValueError:
            return None
        busy += sum(v[:8]) - v[3] - v[4]  # all but idle and iowait (guest time is inside user)
    return busy / hz


def _runnable_now() -> tuple[int, int] | None:
    """(runnable tasks on the machine, runnable threads of this process) now, or None off Linux."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat") as f:
                    own += f.read().rpartition(")")[2].split()[0] == "R"
            except OSError:
                continue  # a thread that ended meanwhile
    except (OSError, ValueError, IndexError):
        return None
    return running, own


def runnable_others(*, samples: int = 5, interval_s: float = 0.001,
                    read: Callable[[], tuple[int, int] | None] = _runnable_now,
                    sleep: Callable[[float], None] = time.sleep) -> float | None:
    """Other processes' runnable tasks right now: the median of a few snapshots (~5 ms), or None off Linux.

    ``/proc/loadavg`` counts the tasks running or waiting for a CPU at this
    instant; this process's own runnable threads are taken off. Unlike the
    load average (a minute's decaying mean, this process's own past included)
    it says what competes now, and unlike timing several threads it costs no
    step: a second thread beside a busy process can take a whole second for
    one step on an overloaded machine, so counts the free cores cannot hold
    are not timed at all. The median of ``samples`` snapshots ignores blips.
    The count is machine-wide: where this process may run on only some CPUs
    (a container's cpuset, ``taskset``), it is scaled to their share.
    """
    share = usable_cores() / max(os.cpu_count() or 1, usable_cores())
    seen = []
    for i in range(samples):
        got = read()
        if got is None:
            return None
        seen.append(max(0, got[0] - got[1]))
        if i + 1 < samples:
            sleep(interval_s)
    return float(statistics.median(seen)) * share


class LoadMeter:
    """How many of this process's cores other processes kept busy during a window.

    ``/proc/stat``'s busy time on the usable CPUs minus this process's own CPU
    time, over the wall time: e.g. 0.95 while one other process spins on one
    core. ``/proc/stat`` counts in kernel ticks (10 ms per CPU) while the
    process's own time is exact, so windows shorter than ``min_window_s``
    (about ten ticks per CPU) read None rather than a figure off by half a
    core; a quick probe on a quiet machine then rests on its timings alone.
    Off Linux it reads None.
    """

    def __init__(self, *, clock: Clock = time.perf_counter, min_window_s: float = 0.1) -> None:
        self.clock = clock
        self.min_window_s = min_window_s
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = set(range(os.cpu_count() or 1))
        self._start = (clock(), _cpu_busy_seconds(self.cpus), time.process_time())

    def others(self) -> float | None:
        """Cores' worth of CPU other processes used since the meter started (None: unknown or too short)."""
        wall0, busy0, own0 = self._start
        wall = self.clock() - wall0
        busy = _cpu_busy_seconds(self.cpus)
        if busy is None or busy0 is None or wall < self.min_window_s:
            return None
        return max(0.0, (busy - busy0 - (time.process_time() - own0)) / wall)


# --------------------------------------------------------------------------- #
# the pure choices
# --------------------------------------------------------------------------- #


def choose_threads(
    *,
    ceiling: int,
    cores: int,
    others: float | None = None,
    seconds: Mapping[int, float] | None = None,
    override: int | None = None,
    margin: float = 0.05,
) -> int:
    """How many torch threads a training step should use.

    Parameters
    ----------
    ceiling : int
        The most allowed: the caller's torch thread count (``OMP_NUM_THREADS``,
        ``torch.set_num_threads``, an enclosing :func:`binclf.runtime.session`).
    cores : int
        CPUs this process may run on (:func:`usable_cores`).
    others : float, optional
        Cores' worth of CPU other processes are using (:class:`LoadMeter`).
        Threads beyond the cores left free would wait for a core at every
        parallel region, which makes every step wait for them.
    seconds : mapping int -> float, optional
        Measured seconds of one step per thread count.
    override : int, optional
        The user's count (``--threads``, ``BINCLF_THREADS``): taken as it is,
        within the ceiling and the cores.
    margin : float
        A thread more must make the step at least this much faster than the
        fewer threads (noise, and the share of the machine it takes from others).

    Returns
    -------
    int
        At least 1, never more than ``ceiling`` or ``cores``.
    """
    most = max(1, min(int(ceiling), int(cores)))
    if override is not None:
        return max(1, min(int(override), most))
    if others is not None and others > 0:
        free = cores - others
        most = max(1, min(most, math.floor(free + 0.5)))
    timed = {int(n): float(t) for n, t in (seconds or {}).items() if 1 <= int(n) <= most and math.isfinite(t)}
    if not timed:
        return most
    best = min(timed.values())
    # The fewest threads within the margin of the fastest.
    return min(n for n, t in timed.items() if t <= best * (1 + margin))


def choose_fastest(seconds: Mapping[str, float], *, default: str, override: str | None = None,
                   margin: float = 0.0) -> str:
    """The alternative with the least measured seconds; ``default`` unless another beats it by ``margin``.

    Parameters
    ----------
    seconds : mapping name -> float
        Measured seconds per alternative (missing or non-finite: not a candidate).
    default : str
        What to use without measurements, and on a near tie.
    override : str, optional
        The user's choice, taken as it is.
    margin : float
        How much faster (as a fraction) another alternative must be than ``default``.

    Returns
    -------
    str
    """
    if override is not None:
        return override
    timed = {k: float(t) for k, t in seconds.items() if math.isfinite(t)}
    if not timed:
        return default
    fastest = min(timed, key=timed.__getitem__)
    if default in timed and timed[fastest] * (1 + margin) >= timed[default]:
        return default
    return fastest


# --------------------------------------------------------------------------- #
# timing
# --------------------------------------------------------------------------- #


def time_interleaved(
    fns: Mapping[K, Callable[[], Any]],
    *,
    rounds: int = 5,
    context: Callable[[K], contextlib.AbstractContextManager] | None = None,
    clock: Clock = time.perf_counter,
    give_up: float = 4.0,
    budget_s: float = 0.25,
) -> dict[K, float]:
    """Median seconds of each alternative, run in turn round after round.

    Each runs once first as a warm-up (caches, thread pools); one already
    more than ``give_up`` times slower than the fastest warm-up runs no more
    (its warm-up time is its figure). Then each round runs every remaining
    alternative once, starting from a different one each round, so load that
    comes and goes hits them alike. After two rounds, alternatives more than
    ``give_up`` times slower than the best are dropped; after ``budget_s``
    seconds of probing no new round starts.

    Parameters
    ----------
    fns : mapping key -> callable
        The alternatives (each called with no arguments).
    rounds : int
    context : callable key -> context manager, optional
        Entered around each call of ``fns[key]`` (outside its timing), e.g.
        :func:`binclf.runtime.torch_threads`.
    clock : callable
        Seconds, monotonic (tests pass a fake one).
    give_up, budget_s : float

    Returns
    -------
    dict key -> float
        Median seconds per call; a dropped alternative keeps its median so far.
    """
    ctx = context or (lambda _k: contextlib.nullcontext())
    keys = list(fns)
    warm: dict[K, float] = {}
    for k in keys:
        with ctx(k):
            t0 = clock()
            fns[k]()
            warm[k] = clock() - t0
    times: dict[K, list[float]] = {k: [] for k in keys}
    # Already hopeless on the warm-up call (a second thread waiting for a busy
    # core: 30x slower): not run again, its warm-up time stands as its figure.
    live = [k for k in keys if warm[k] <= give_up * min(warm.values())]
    for k in keys:
        if k not in live:
            times[k].append(warm[k])
    start = clock()
    for r in range(max(1, rounds)):
        order = live[r % len(live):] + live[: r % len(live)]
        for k in order:
            with ctx(k):
                t0 = clock()
                fns[k]()
                times[k].append(clock() - t0)
        if r >= 1:
            best = min(min(times[k]) for k in live)
            live = [k for k in live if min(times[k]) <= give_up * best]
            if clock() - start > budget_s:
                break
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------- #
# what was chosen, for describe()
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ThreadReport:
    """One thread choice and what it rested on.

    Attributes
    ----------
    threads : int
        The count chosen.
    how : str
        ``"measured"``, ``"others running now"`` (other processes' runnable
        tasks left one core: nothing timed), ``"cached"`` (measured by an earlier fit of the same
        shapes and checked again on two steps), ``"fixed by the user"`` or
        ``"the most allowed"`` (a ceiling of one: nothing to choose).
    seconds : dict int -> float
        Median seconds per step per thread count measured.
    others : float or None
        Cores' worth of other processes' CPU seen during the probe.
    cores, ceiling : int
    """

    threads: int
    how: str
    seconds: dict[int, float] = field(default_factory=dict)
    others: float | None = None
    cores: int = 1
    ceiling: int = 1

    def text(self) -> str:
        head = f"{self.threads} thread{'s' * (self.threads != 1)} ({self.how}"
        if self.seconds:
            head += "; " + ", ".join(f"{n}: {t * 1e3:.2f} ms" for n, t in sorted(self.seconds.items())) + " per step"
        if self.others is not None and self.how == RUNNING_NOW:
            head += f"; {self.others:.0f} other tasks runnable on {self.cores} cores"
        elif self.others is not None:
            head += f"; others busy {self.others:.1f} of {self.cores} cores"
        return head + ")"


def timings_text(seconds: Mapping[str, float], names: Mapping[str, str] | None = None) -> str:
    """``"mm 0.31 ms, oneDNN 0.52 ms"``: measured alternatives for describe()."""
    names = names or {}
    return ", ".join(f"{names.get(k, k)} {t * 1e3:.2f} ms" for k, t in seconds.items())


# --------------------------------------------------------------------------- #
# the thread plan of one fit
# --------------------------------------------------------------------------- #


def plan_threads(run: Callable[[], Any], *, key: Hashable, prepare: Callable[[int], Any] | None = None) -> ThreadReport:
    """Choose, put in force and note the calling thread's torch threads for a fit whose step is ``run``.

    Inside a :func:`binclf.runtime.session` (the fits' entry points run in
    one): the thread counts worth trying run from 1 to the ceiling (the
    current count, which the user's ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads`` sets), the usable cores, and the cores the tasks
    other processes have runnable now leave free (:func:`runnable_others`);
    ``run`` is timed on each count, interleaved (:func:`time_interleaved`),
    while a :class:`LoadMeter` reads what other processes use, and
    :func:`choose_threads` decides. A count the user fixed (``--threads``,
    ``BINCLF_THREADS``) is taken as it is and nothing is timed. The choice is
    cached per ``key`` (the step's shapes), the ceiling and the cores for
    :data:`binclf.runtime.THREADS_FRESH_S` seconds, checked again on two calls.
    The count is only ever lowered, in the innermost session, which restores
    it on exit (:func:`binclf.runtime.lower_threads`).

    Parameters
    ----------
    run : callable
        One step of the fit as it will run, changing nothing (no parameter
        update, torch's random stream untouched).
    key : hashable
        What makes two fits' steps the same for the cache.
    prepare : callable int -> None, optional
        Called once per thread count before any timing, on that many threads
        (one-off costs, e.g. oneDNN building its kernels for the count, would
        otherwise make the first count timed look hopeless).

    Returns
    -------
    ThreadReport
        The thread choice and what it rested on (also noted for ``--debug``).
    """
    import torch

    from binclf import runtime

    ceiling, cores = torch.get_num_threads(), usable_cores()
    if runtime.threads_pinned() or thread_override() is not None:
        report = ThreadReport(ceiling, "fixed by the user", cores=cores, ceiling=ceiling)
    elif min(ceiling, cores) <= 1:
        report = ThreadReport(1, "the most allowed", cores=cores, ceiling=ceiling)
    else:
        cache_key = (key, ceiling, cores)
        cached = runtime.PROBES.threads.get(cache_key)
        report = None
        if cached is not None and time.perf_counter() - cached[1] < runtime.THREADS_FRESH_S:
            old = cached[0]
            # Still as fast as when measured? Two steps tell; load that came since means measuring again.
            now = time_interleaved({old.threads: run}, rounds=2, context=runtime.torch_threads)[old.threads]
            if now <= 2 * old.seconds.get(old.threads, now):
                report = ThreadReport(old.threads, "cached", old.seconds, old.others, cores, ceiling)
        if report is None:
            # What competes now bounds the counts worth timing: a thread count the
            # free cores cannot hold is not tried (one such step can take seconds).
            now = runnable_others()
            most = choose_threads(ceiling=ceiling, cores=cores, others=now)
            if most <= 1:
                report = ThreadReport(1, RUNNING_NOW, {}, now, cores, ceiling)
            else:
                counts = sorted({1, most, *(2**i for i in range(1, 8) if 2**i < most)})
                if prepare is not None:
                    for n in counts:
                        with runtime.torch_threads(n):
                            prepare(n)
                meter = LoadMeter()
                seconds = time_interleaved({n: run for n in counts}, rounds=5, context=runtime.torch_threads)
                others = meter.others()
                n = choose_threads(ceiling=ceiling, cores=cores, others=others, seconds=seconds)
                report = ThreadReport(n, "measured", dict(seconds), others, cores, ceiling)
            runtime.PROBES.threads[cache_key] = (report, time.perf_counter())
    runtime.lower_threads(report.threads)
    runtime.note_choice("threads", report.text())
    return report


# --------------------------------------------------------------------------- #
# the guard: load that arrives after the probe
# --------------------------------------------------------------------------- #


class ThreadGuard:
    """Back to one thread when steps on several slow down far past the best seen (load arrived).

    The probe's choice holds for the load of its moment; when another process
    takes a core later, a second intra-op thread makes every step wait for it
    (27x slower measured). ``tick(steps)`` after every few steps compares the
    seconds per step since the last tick with the best window so far; past
    ``slower`` times it, :meth:`tick` returns True once and the caller drops to
    one thread (inside its session, which restores the count). ``reset()``
    starts a new window (a new epoch, a newly compiled step).
    """

    def __init__(self, threads: int, *, slower: float = 2.5, clock: Clock = time.perf_counter) -> None:
        self.threads = threads
        self.slower = slower
        self.clock = clock
        self.best = math.inf
        self.tripped = False
        self._t: float | None = None

    def reset(self) -> None:
        self._t = None

    def tick(self, steps: int) -> bool:
        """Note ``steps`` more steps done; True when the caller should drop to one thread now."""
        now = self.clock()
        if self._t is None or steps <= 0:
            self._t = now
            return False
        per_step = (now - self._t) / steps
        self._t = now
        if self.threads > 1 and per_step > self.slower * self.best:
            self.threads = 1
            self.tripped = True
            self.best = math.inf  # one thread's pace is measured afresh
            return True
        self.best = min(self.best, per_step)
        return False
