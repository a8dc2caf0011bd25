"""The few collectives binclf needs, each a no-op in a single process.

They act on the group :func:`binclf.dist.init` joined; outside it (or with one
rank) they return at once without loading ``torch.distributed``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from binclf.dist.context import current
from binclf.errors import BinclfError

__all__ = ["all_gather_object", "all_reduce_sum", "barrier", "broadcast_object", "main_only", "together"]

T = TypeVar("T")


def barrier() -> None:
    """Wait until every rank has reached this call."""
    if current().distributed:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(tensor: Any) -> Any:
    """Sum ``tensor`` over the ranks, in place; every rank gets the same sum.

    Parameters
    ----------
    tensor : Tensor of any shape
        On this rank's device (NCCL wants CUDA tensors, gloo CPU ones).

    Returns
    -------
    Tensor
        ``tensor`` itself, now holding the sum.
    """
    if current().distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: T, *, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (pickled between binclf's own processes, never from a file).

    Parameters
    ----------
    obj : any picklable object
        What rank ``src`` sends; the other ranks' value is ignored.
    src : int

    Returns
    -------
    object
        Rank ``src``'s ``obj``.
    """
    if not current().distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not current().distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * current().world_size
    dist.all_gather_object(out, obj)
    return out


def main_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorator: run ``fn`` on rank 0 only, and let every rank know how it went.

    For writes (the bundle, the report, a checkpoint). Rank 0 runs the call;
    the other ranks get ``None``. A :class:`~binclf.errors.BinclfError` raised
    on rank 0 (an existing output directory, a full disk) is raised again, with
    the same message, on every rank, so that all ranks fail or go on
    together instead of one of them waiting forever in a later collective.
    Any other exception on rank 0 reaches the others as a ``RuntimeError``.
    In a single process it is ``fn`` itself, called directly.
    """

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> T | None:
        ctx = current()
        if not ctx.distributed:
            return fn(*args, **kwargs)
        result, failure = None, None
        if ctx.is_main:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # told to every rank, then raised here as it was
                failure = (type(exc).__name__, str(exc), isinstance(exc, BinclfError))
                broadcast_object(failure)
                raise
        failure = broadcast_object(failure)
        if failure is not None:
            name, message, expected = failure
            if expected:
                raise _RankError(message)
            raise RuntimeError(f"rank 0 failed in {fn.__name__} ({name}: {message})")
        return result

    return guarded


@contextlib.contextmanager
def together() -> Iterator[None]:
    """A block every rank runs on its own data (its shard): if it fails on any rank, it fails on every rank.

    For steps where a rank can fail alone (a damaged row group in its shard):
    at the end of the block the ranks exchange their outcome (one
    all-gather), so a rank whose block went well does not go on to wait
    forever in the next collective for one that failed. The failing rank
    raises its own exception; the others raise the lowest failing rank's
    :class:`~binclf.errors.BinclfError` message again (a ``RuntimeError``
    for anything else). In a single process it is an empty block.
    """
    if not current().distributed:
        yield
        return
    failure: Exception | None = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - told to every rank, then raised here as it was
        failure = exc
    outcomes = all_gather_object(
        None if failure is None else (type(failure).__name__, str(failure), isinstance(failure, BinclfError))
    )
    if failure is not None:
        raise failure
    for rank, outcome in enumerate(outcomes):
        if outcome is not None:
            name, message, expected = outcome
            if expected:
                raise _RankError(message)
            raise RuntimeError(f"rank {rank} failed ({name}: {message})")


class _RankError(BinclfError):
    """Rank 0's BinclfError, as seen by the other ranks (the same message)."""
