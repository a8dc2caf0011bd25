"""Which rows each rank trains on: the same number on every rank, so every rank takes the same steps."""

from __future__ import annotations

import numpy as np

from binclf.dist.context import current

__all__ = ["shard", "shard_size"]


def shard_size(n_rows: int, *, world_size: int | None = None) -> int:
    """Rows every rank gets from :func:`shard`: ``ceil(n_rows / world_size)``."""
    w = current().world_size if world_size is None else int(world_size)
    return -(-int(n_rows) // w)


def shard(n_rows: int, *, rank: int | None = None, world_size: int | None = None) -> np.ndarray:
    """The positions ``(shard_size,)`` of ``range(n_rows)`` that ``rank`` takes, strided like torch's DistributedSampler.

    Rank ``r`` takes positions ``r, r + W, r + 2W, ...`` of the rows padded to
    a multiple of ``W`` by wrapping around to the start, so every rank gets
    ``ceil(n_rows / W)`` positions and hence takes the same number of steps
    per epoch (a collective per step needs every rank there). The shards are
    disjoint except for the at most ``W - 1`` wrapped positions, and together
    cover every row. Apply it to a permutation (``perm[shard(n)]``) to shard a
    shuffled epoch; since every rank draws the same permutation from the
    shared seed, no rows need to be exchanged.

    Parameters
    ----------
    n_rows : int
        Rows to share out (at least 1).
    rank, world_size : int, optional
        Default: this process's, from :func:`binclf.dist.current` (0 and 1 in a
        single process, where every row is returned, in order).

    Returns
    -------
    ndarray of int64, shape (ceil(n_rows / world_size),)
    """
    ctx = current()
    r = ctx.rank if rank is None else int(rank)
    w = ctx.world_size if world_size is None else int(world_size)
    n = int(n_rows)
    if n < 1 or w < 1 or not 0 <= r < w:
        raise ValueError(f"shard needs n_rows >= 1 and 0 <= rank < world_size, got {n}, {r}, {w}")
    if w == 1:
        return np.arange(n, dtype=np.int64)
    return np.arange(r, shard_size(n, world_size=w) * w, w, dtype=np.int64) % n
