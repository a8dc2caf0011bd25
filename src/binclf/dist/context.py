"""Who this process is among the ranks, and the process group's lifetime (:func:`init`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

from binclf.errors import ConfigError

__all__ = ["DistContext", "current", "init", "is_main", "launched"]

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class DistContext:
    """One process's place in a run: its rank, the world's size, the backend and its device.

    Attributes
    ----------
    rank : int
        This process's rank, 0 to ``world_size - 1`` over every machine.
    world_size : int
        Processes in the run (1: a single process, no process group).
    local_rank, local_world_size : int
        The same on this machine (``local_rank`` picks the GPU).
    backend : str or None
        ``"gloo"`` (CPU) or ``"nccl"`` (CUDA); None in a single process.
    device : str
        Where this rank trains: ``"cpu"`` or ``"cuda:<local_rank>"``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        """Whether there are other ranks to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and writes."""
        return self.rank == 0

    @classmethod
    def from_env(cls, *, device: str = "cpu") -> DistContext:
        """The context ``torchrun`` describes in this process's environment (one process without it).

        Parameters
        ----------
        device : {"cpu", "cuda"}
            ``"cuda"`` gives NCCL and the GPU ``local_rank``; ``"cpu"`` gloo.

        Returns
        -------
        DistContext
        """
        if device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        env = os.environ
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", "0"))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except ValueError:
            raise ConfigError(
                "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers (torchrun sets them); "
                "launch with torchrun or binclf train --nproc N"
            ) from None
        if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < max(local_world, 1)):
            raise ConfigError(
                f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world}, LOCAL_WORLD_SIZE={local_world}; "
                "launch with torchrun or binclf train --nproc N"
            )
        if world == 1:
            return cls(device="cuda" if device == "cuda" else "cpu", local_world_size=local_world)
        return cls(
            rank=rank,
            world_size=world,
            local_rank=local_rank,
            local_world_size=local_world,
            backend="nccl" if device == "cuda" else "gloo",
            device=f"cuda:{local_rank}" if device == "cuda" else "cpu",
        )


_SINGLE = DistContext()
_active: DistContext | None = None


def current() -> DistContext:
    """The context of the :func:`init` block this process is in; rank 0 of 1 outside one."""
    return _active or _SINGLE


def is_main() -> bool:
    """Whether this process is rank 0 (True in a single process)."""
    return current().is_main


def launched() -> bool:
    """Whether ``torchrun`` started this process as one of several (``WORLD_SIZE`` > 1); reads no torch."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


@contextlib.contextmanager
def init(*, device: str = "cpu", timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """Join the process group ``torchrun`` set up, for the block; a no-op in a single process.

    Inside the block :func:`current` is this process's context, the calling
    thread uses ``max(1, cores // local_world_size)`` torch threads
    (:func:`binclf.runtime.rank_threads`), and a CUDA rank's default GPU is its
    ``local_rank``. On a normal exit every rank waits for the others (so no
    rank leaves while rank 0 still writes), then the group is destroyed; on an
    exception it is destroyed at once. A process group the caller created
    before is used as it is and left alone.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        gloo on the CPU, NCCL on CUDA.
    timeout_s : float
        How long a collective may wait for the other ranks.

    Yields
    ------
    DistContext
    """
    global _active
    ctx = DistContext.from_env(device=device)
    if device == "cuda" or ctx.distributed:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu")
        if device == "cuda" and ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"--device cuda: {ctx.local_world_size} processes on this machine but {torch.cuda.device_count()} "
                "GPU(s) visible; start at most one process per GPU"
            )
    if _active is not None:  # nested: the outer block owns the group
        yield _active
        return
    if not ctx.distributed:
        _active = ctx
        try:
            yield ctx
        finally:
            _active = None
        return

    import torch.distributed as dist

    from binclf import runtime

    owned = not dist.is_initialized()
    if owned:
        if device == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=ctx.backend, timeout=timedelta(seconds=timeout_s))
    else:  # the caller's own group: take its backend and size as they are
        ctx = replace(ctx, rank=dist.get_rank(), world_size=dist.get_world_size(), backend=dist.get_backend())
    _active = ctx
    try:
        with runtime.rank_threads(ctx.local_world_size):
            yield ctx
        dist.barrier()
    finally:
        _active = None
        if owned:
            dist.destroy_process_group()
