"""Data-parallel training of in-memory tensors: what :class:`binclf.train.trainer.Trainer` asks of the ranks.

DistributedDataParallel's semantics without its autograd hooks: binclf's fast
step (:mod:`binclf.train.fused_step`) writes the gradients by hand, so the
average across ranks is taken explicitly, by :meth:`DataParallel.sync_grads`,
between the backward pass and the optimiser step, for the fused and the
autograd step alike (one code path). Every rank holds the whole table; each
epoch they draw the same permutation from the shared seed and each trains on
its :func:`~binclf.dist.shard` of it, with ``ceil(batch_size / world_size)``
rows a step, so a step's global batch is the configured one and the averaged
gradient is the single-process gradient of that batch.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor, nn

from binclf.dist.context import DistContext, current
from binclf.dist.sharding import shard, shard_size

__all__ = ["DataParallel", "data_parallel"]


class DataParallel:
    """The ranks' side of one fit: sharding, gradient averaging, agreement on when to stop.

    Build it with :func:`data_parallel` (None in a single process), then call
    :meth:`start` once with the model. ``comm_seconds`` adds up the time spent
    in the per-step gradient all-reduce (for benchmarks).

    Parameters
    ----------
    ctx : DistContext
        A distributed context (``world_size`` > 1) inside :func:`binclf.dist.init`.
    """

    def __init__(self, ctx: DistContext) -> None:
        if not ctx.distributed:
            raise ValueError("DataParallel needs a distributed context (world_size > 1)")
        self.ctx = ctx
        self.params: list[Tensor] = []
        self._flat: Tensor | None = None
        self._numels: list[int] = []
        self.comm_seconds = 0.0
        self.steps = 0

    # -- before the first step ---------------------------------------------------
    def start(self, model: nn.Module, *, seed: int) -> None:
        """Rank 0's parameters and buffers on every rank, and a per-rank stream of dropout keys.

        Every rank builds the model from the same seed, so the broadcast only
        guards against a caller that did not (as DDP does at construction).
        Dropout masks are drawn from torch's default generator: reseeded per
        rank (rank 0 keeps ``seed``, as a single process would), so the ranks'
        rows get independent masks.
        """
        import torch.distributed as dist

        self.params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)
        self._numels = [p.numel() for p in self.params]
        self._flat = torch.empty(sum(self._numels), dtype=torch.float32, device=self.params[0].device) if self.params else None
        if self.ctx.rank:
            torch.manual_seed(seed + 7919 * self.ctx.rank)

    # -- each epoch ----------------------------------------------------------------
    def rows_per_rank(self, n_rows: int) -> int:
        """Rows each rank trains on per epoch (:func:`binclf.dist.shard_size`)."""
        return shard_size(n_rows, world_size=self.ctx.world_size)

    def batch_per_rank(self, batch_size: int) -> int:
        """Rows per rank and step, so that a step's global batch is ``batch_size``."""
        return max(1, -(-int(batch_size) // self.ctx.world_size))

    def epoch_rows(self, order: Tensor) -> Tensor:
        """This rank's part ``(rows_per_rank,)`` of the epoch's row order ``(n,)`` (the same on every rank)."""
        positions = torch.from_numpy(shard(len(order), rank=self.ctx.rank, world_size=self.ctx.world_size))
        return order.index_select(0, positions.to(order.device))

    # -- each step -----------------------------------------------------------------
    @torch.no_grad()
    def sync_grads(self) -> None:
        """Average every parameter's ``.grad`` over the ranks: one all-reduce of one flat buffer.

        The gradients are copied into the buffer, summed across ranks, divided
        by ``world_size`` and handed back as views of it (no copy back). A
        parameter without a gradient on this step counts as zero.
        """
        import torch.distributed as dist

        if self._flat is None:
            return
        t0 = time.perf_counter()
        flat = self._flat
        parts = flat.split(self._numels)
        for p, part in zip(self.params, parts):
            if p.grad is None:
                part.zero_()
            else:
                part.copy_(p.grad.reshape(-1))
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.ctx.world_size)
        for p, part in zip(self.params, parts):
            p.grad = part.view_as(p)
        self.comm_seconds += time.perf_counter() - t0
        self.steps += 1

    # -- end of each epoch -----------------------------------------------------------
    @torch.no_grad()
    def end_epoch(self, model: nn.Module, step_losses: Tensor) -> Tensor:
        """Average BatchNorm's running statistics and the per-step losses ``(steps,)`` over the ranks.

        Each rank's BatchNorm has seen only its rows; averaging keeps the ranks'
        models identical, so validation and the weights kept agree. The
        averaged losses make a NaN on one rank a NaN on all (they stop
        together). Returns the averaged losses.
        """
        import torch.distributed as dist

        floats = [b for b in model.buffers() if b.is_floating_point()]
        if floats:
            flat = torch.cat([b.reshape(-1) for b in floats] + [step_losses.float().reshape(-1)])
        else:
            flat = step_losses.float().clone()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.ctx.world_size)
        offset = 0
        for b in floats:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()
        return flat[offset:].to(step_losses.dtype)

    def valid_rows(self, n_rows: int) -> slice:
        """This rank's contiguous part of the validation rows (every row exactly once over the ranks)."""
        per = -(-n_rows // self.ctx.world_size)
        lo = min(n_rows, self.ctx.rank * per)
        return slice(lo, min(n_rows, lo + per))

    def mean_over_ranks(self, mean: float, count: int) -> float:
        """The mean over all ranks' rows from each rank's ``mean`` of its ``count`` rows."""
        import torch.distributed as dist

        device = self._flat.device if self._flat is not None else torch.device("cpu")
        s = mean * count if count else 0.0
        t = torch.tensor([s, float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        total, n = float(t[0]), float(t[1])
        return total / n if n else math.nan

    def agree(self, stop: bool) -> bool:
        """Rank 0's decision, on every rank (early stopping is decided once)."""
        import torch.distributed as dist

        device = self._flat.device if self._flat is not None else torch.device("cpu")
        t = torch.tensor([1 if stop else 0], dtype=torch.int32, device=device)
        dist.broadcast(t, src=0)
        return bool(t.item())


def data_parallel() -> DataParallel | None:
    """A :class:`DataParallel` for this rank inside :func:`binclf.dist.init` with several ranks, else None."""
    ctx = current()
    return DataParallel(ctx) if ctx.distributed else None


