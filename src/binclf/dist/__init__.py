"""Several processes and machines: ``torch.distributed`` launched by ``torchrun``.

nanoGPT's recipe, spelled out in one place. ``torchrun`` (or ``binclf train
--nproc N``) starts one process per rank with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
its environment; :func:`init` reads them, joins the process group (gloo on the
CPU, NCCL on CUDA) and leaves it on exit. Inside it, :class:`DataParallel`
shards each epoch's rows by rank and averages the gradients across ranks
before every optimiser step (one all-reduce of one flat buffer), and
:func:`main_only` runs the writes on rank 0 and tells every rank the outcome.

In a single process (no ``WORLD_SIZE``, or 1) every function here is a cheap
no-op: :func:`current` is rank 0 of 1, :func:`all_reduce_sum` returns its
argument, :func:`broadcast_object` returns its argument, :func:`shard` returns
every row. Importing this package changes nothing and loads no torch; the
names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DistContext": "binclf.dist.context",
    "current": "binclf.dist.context",
    "init": "binclf.dist.context",
    "is_main": "binclf.dist.context",
    "launched": "binclf.dist.context",
    "all_gather_object": "binclf.dist.collectives",
    "all_reduce_sum": "binclf.dist.collectives",
    "barrier": "binclf.dist.collectives",
    "broadcast_object": "binclf.dist.collectives",
    "main_only": "binclf.dist.collectives",
    "together": "binclf.dist.collectives",
    "shard": "binclf.dist.sharding",
    "shard_size": "binclf.dist.sharding",
    "DataParallel": "binclf.dist.parallel",
    "data_parallel": "binclf.dist.parallel",
    "launch_train": "binclf.dist.launch",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'binclf.dist' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
