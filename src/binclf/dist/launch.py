"""``binclf train --nproc N``: torchrun on this machine, launched from inside binclf.

The same as ``torchrun --standalone --nproc-per-node N -m binclf train ...``
(``torch.distributed.run``'s own code, called as a library), with binclf's
conventions kept: the launcher's log lines and failure report are left out,
each rank gets ``cores // N`` threads, and the exit code is rank 0's (2 for
bad input, whose one-line error rank 0 has printed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from binclf.errors import ConfigError

__all__ = ["launch_train", "strip_nproc"]


def strip_nproc(args: Sequence[str]) -> list[str]:
    """``args`` without ``--nproc N`` / ``--nproc=N`` (what each rank runs)."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


@contextlib.contextmanager
def _quiet_launcher(debug: bool) -> Iterator[None]:
    """torchrun's own warnings and failure report off (rank 0 says what went wrong), unless debugging."""
    loggers = [logging.getLogger(n) for n in ("torch.distributed", "torch.distributed.elastic", "torch.distributed.run")]
    levels = [lg.level for lg in loggers]
    if not debug:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set variables the ranks inherit, for the block (the launching process's own are restored)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def launch_train(nproc: int, args: Sequence[str], *, debug: bool = False) -> int:
    """Run ``binclf train ARGS`` on ``nproc`` processes of this machine and return the exit code.

    Parameters
    ----------
    nproc : int
        Processes (ranks), at least 2.
    args : sequence of str
        The ``train`` command's arguments, ``--nproc`` left out.
    debug : bool
        Keep torchrun's log lines and failure report.

    Returns
    -------
    int
        0 when every rank succeeded; else rank 0's exit code (2: bad input,
        already reported in one line by rank 0), or the first failing rank's.
    """
    from binclf.dist.context import launched

    if launched():
        raise ConfigError("--nproc cannot be used inside torchrun: the processes are already launched; drop --nproc")
    if nproc < 2:
        raise ConfigError(f"--nproc must be at least 2, got {nproc}; leave it out to train in one process")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from binclf.runtime import available_cores

    launcher = parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "binclf", "train", *args])
    # torchrun would otherwise set OMP_NUM_THREADS=1 for every rank (and warn); each gets its share of the cores.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, available_cores() // nproc))
    try:
        with _quiet_launcher(debug), _environ(OMP_NUM_THREADS=threads):
            run(launcher)
    except SignalException as exc:
        # Ctrl-C or a kill: torchrun has stopped the ranks (on Ctrl-C rank 0 has said what was written).
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        failures = exc.failures
        main = failures.get(0)
        if main is not None and main.exitcode > 0:
            return int(main.exitcode)
        rank, first = exc.get_first_failure()
        code = first.exitcode if first.exitcode > 0 else 1
        # Rank 0 was stopped before it could say why: say which rank failed.
        print(
            f"error: rank {rank} of {nproc} failed (exit code {first.exitcode}); "
            "run again with --debug to see every rank's output",
            file=sys.stderr,
        )
        return int(code)
    return 0
