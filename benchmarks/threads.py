"""Training threads on a busy machine: binclf's measured choice against the caller's thread count fixed (issue #19).

    python benchmarks/threads.py                  # as the machine is now
    python benchmarks/threads.py --busy 1         # plus one busy process this benchmark starts and stops
    python benchmarks/threads.py --compile        # the compiled step (compiles once first)

One epoch of ``--rows`` rows x 50 features, the MLP 50-128-64-1 (BatchNorm,
ReLU, Dropout 0.1), batch 512, through ``Trainer.fit``: once with the
thread count fixed at ``--threads`` (``runtime.session(pinned=True)``, what
binclf did before it measured: the caller's threads), once with the probe's
choice (:mod:`binclf.probe`), interleaved ``--repeats`` times so load that
comes and goes hits both; the thread cache is cleared before each fit, as
a new process would start. Prints the CPU, the load average and what the
probe measured. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from _machine import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="the ceiling, and the fixed count compared against")
    ap.add_argument("--busy", type=int, default=0, help="busy processes to start beside the fits")
    ap.add_argument("--compile", action="store_true", help="time the compiled step (compiled once before)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from binclf import runtime
    from binclf.nn.models import MLP
    from binclf.train.trainer import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, 50)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float32)
    cfg = TrainConfig(max_epochs=1, verbose=False, compile=args.compile)
    if args.compile:
        Trainer(cfg).fit(MLP(50), X[:2048], y[:2048])
    code = "import time\nt = time.time() + 600\nwhile time.time() < t: pass"
    busy = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(args.busy)]
    try:
        time.sleep(0.5 if busy else 0)
        times: dict[str, list[float]] = {f"{args.threads} threads fixed": [], "measured choice": []}
        notes = []
        for _ in range(args.repeats):
            for name, seconds in times.items():
                runtime.PROBES.threads.clear()
                t0 = time.perf_counter()
                with runtime.session(purpose="train", threads=args.threads, pinned=name != "measured choice") as s:
                    Trainer(cfg).fit(MLP(50), X, y)
                seconds.append(time.perf_counter() - t0)
                if name == "measured choice":
                    notes.append(s.choices.get("threads", ""))
        load = os.getloadavg()
    finally:
        for p in busy:
            p.terminate()
            p.wait(10)
    print(f"torch {torch.__version__}, CPU: {cpu_model()} ({os.cpu_count()} logical), ceiling {args.threads} threads, "
          f"{args.busy} busy process(es) started, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print(f"one epoch of {args.rows:,} rows x 50, MLP 50-128-64-1, batch 512, "
          f"{'compiled' if args.compile else 'eager'} fused step; median of {args.repeats}, interleaved")
    rate = {k: args.rows / statistics.median(v) for k, v in times.items()}
    base = next(iter(rate.values()))
    print(f"{'threads':<22}{'samples/s':>12}{'vs fixed':>10}   epochs (s)")
    for k, r in rate.items():
        print(f"{k:<22}{r:>12,.0f}{r / base:>9.1f}x   {' '.join(f'{t:.2f}' for t in times[k])}")
    print("the probe measured:")
    for n in notes:
        print(f"  {n}")


if __name__ == "__main__":
    main()
