"""Data-parallel training on this machine: rows/s of 1 process against N under torchrun, and the all-reduce's cost.

    PYTHONPATH=src python benchmarks/dist.py [--rows 200000] [--features 20] [--epochs 3] [--nproc 2]

Generates a table of ``--rows`` x ``--features`` float32 numbers with a curved
boundary (the generator is below) and trains binclf's MLP (128-64, BatchNorm,
dropout 0.1, the fused step, global batch 512, no validation) for
``--epochs`` epochs through :class:`binclf.Trainer`:

* one process on 1 torch thread and on all cores' threads;
* ``--nproc`` processes under ``python -m torch.distributed.run --standalone``
  (gloo on loopback), each on ``cores // nproc`` threads, data-parallel
  (:class:`binclf.dist.DataParallel`: each rank a shard of every epoch, the
  gradients averaged by one all-reduce of one flat buffer per step).

It prints one table: training rows/s (rows of the table per second of
``fit``, so 2 processes each doing half the rows in the same time would show
2x), the ratio to the 1-thread single process, the time per step spent in the
gradient all-reduce (copying in, summing across ranks, handing back), and a
bare all-reduce of a buffer of the same size timed in a loop. Timings on a
shared machine are noisy: repeat, and compare within one run. Never run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model


def table(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``X`` ``(rows, features)`` float32 and ``y`` ``(rows,)`` in {0, 1}: log-odds linear plus a product term."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features), dtype=np.float32)
    w = rng.standard_normal(features).astype(np.float32) / np.sqrt(features)
    z = X @ w + 0.8 * X[:, 0] * X[:, 1]
    y = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return X, y


def fit(args: argparse.Namespace) -> dict:
    """Train once in this process (a rank under torchrun, or alone); rank 0's figures."""
    import torch

    from binclf import dist, runtime
    from binclf.nn.models import MLP
    from binclf.train.trainer import TrainConfig, Trainer

    X, y = table(args.rows, args.features)
    with dist.init() as ctx:
        threads = args.threads or torch.get_num_threads()
        with runtime.session(purpose="train", threads=threads):
            dp = dist.data_parallel()
            model = MLP(args.features, hidden=(128, 64), dropout=0.1)
            cfg = TrainConfig(max_epochs=args.epochs, batch_size=512, seed=0, verbose=False, compile=False)
            t0 = time.perf_counter()
            Trainer(cfg, data_parallel=dp).fit(model, X, y)
            seconds = time.perf_counter() - t0
            out = {"world": ctx.world_size, "threads": torch.get_num_threads(), "seconds": seconds,
                   "rows_per_s": args.rows * args.epochs / seconds}
            if dp is not None:
                out["comm_ms_per_step"] = 1e3 * dp.comm_seconds / max(dp.steps, 1)
                out["steps"] = dp.steps
                # The bare collective on a buffer of the gradient's size, as a floor for the above.
                import torch.distributed as tdist

                buf = torch.zeros(sum(p.numel() for p in model.parameters()))
                for _ in range(20):
                    tdist.all_reduce(buf)
                tdist.barrier()
                t1 = time.perf_counter()
                for _ in range(500):
                    tdist.all_reduce(buf)
                out["bare_allreduce_ms"] = 1e3 * (time.perf_counter() - t1) / 500
                out["buffer_floats"] = buf.numel()
    return out


def run(args: argparse.Namespace, *, nproc: int, threads: int | None) -> dict:
    """One measurement in a fresh process group of ``nproc`` processes (1: a plain process)."""
    here = Path(__file__).resolve()
    worker = [str(here), "--worker", "--rows", str(args.rows), "--features", str(args.features),
              "--epochs", str(args.epochs)] + (["--threads", str(threads)] if threads else [])
    env = dict(os.environ)
    if nproc == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *worker]
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        out = fit(args)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(out), flush=True)
        return
    from binclf.runtime import available_cores

    cores = available_cores()
    rows = [("1 process, 1 thread", run(args, nproc=1, threads=1))]
    if cores > 1:
        rows.append((f"1 process, {cores} threads", run(args, nproc=1, threads=cores)))
    rows.append((f"{args.nproc} processes (gloo), {max(1, cores // args.nproc)} thread(s) each",
                 run(args, nproc=args.nproc, threads=None)))
    base = rows[0][1]["rows_per_s"]
    cpu = cpu_model()
    print(f"MLP 128-64 on {args.rows:,} x {args.features} float32, {args.epochs} epochs, global batch 512; "
          f"{cores} cores ({cpu})")
    print(f"{'run':<38} {'rows/s':>10} {'x 1 thread':>10} {'all-reduce ms/step':>19} {'bare all-reduce ms':>19}")
    for name, r in rows:
        comm = f"{r['comm_ms_per_step']:.3f}" if "comm_ms_per_step" in r else "-"
        bare = f"{r['bare_allreduce_ms']:.3f}" if "bare_allreduce_ms" in r else "-"
        print(f"{name:<38} {r['rows_per_s']:>10,.0f} {r['rows_per_s'] / base:>10.2f} {comm:>19} {bare:>19}")
    dp = rows[-1][1]
    if "steps" in dp:
        step_s = dp["seconds"] / (dp["steps"] / 1)
        print(f"{args.nproc} processes: {dp['steps']} steps, {1e3 * step_s:.3f} ms per step of which "
              f"{dp['comm_ms_per_step']:.3f} ms all-reduce of {dp['buffer_floats']:,} floats "
              f"({100 * dp['comm_ms_per_step'] / (1e3 * step_s):.0f}%)")


if __name__ == "__main__":
    main()
