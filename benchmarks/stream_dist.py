"""Streamed training on 1 process against N under torchrun: rows/s, the all-reduce's cost, test log-loss.

    PYTHONPATH=src python benchmarks/stream_dist.py [--rows 1000000] [--files 20] [--epochs 2] [--nproc 2]

Generates a directory of ``--files`` Parquet files (``--rows`` in all, row
groups of 25,000 rows; ten numbers and one category, a curved boundary: the
generator is below; kept in ``--dir`` and reused) and trains
``binclf train DIR --stream --model mlp --max-epochs E`` on it:

* one process (the CLI picks its threads);
* ``binclf train ... --stream --nproc N`` (gloo on loopback), each rank reading
  its share of the row groups, gradients averaged every step.

One table: training rows/s (rows stepped on per second of the epochs'
training, validation left out; 2 processes each doing half the rows in the
same time show 2x), the ratio to one process, the statistics pass, the time
per step spent in the gradient all-reduce, the peak RSS per process and the
test log-loss. Timings on a shared machine are noisy: repeat, compare within
one run. Never run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model

ROW_GROUP = 25_000


def generate(directory: Path, *, rows: int, files: int, seed: int = 0) -> None:
    """``files`` Parquet files of ``rows // files`` rows: x0..x9 (float64), ``c`` (8 levels), ``y`` (0/1)."""
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(10) / np.sqrt(10)
    effects = dict(zip("abcdefgh", rng.normal(scale=0.5, size=8)))
    per = rows // files
    for i in range(files):
        X = rng.standard_normal((per, 10))
        c = rng.choice(list("abcdefgh"), size=per)
        z = X @ w + 0.8 * X[:, 0] * X[:, 1] + np.vectorize(effects.get)(c)
        df = pd.DataFrame(X, columns=[f"x{j}" for j in range(10)])
        df["c"] = c
        df["y"] = (rng.random(per) < 1 / (1 + np.exp(-z))).astype(np.int8)
        df.to_parquet(directory / f"part-{i:03d}.parquet", row_group_size=ROW_GROUP)


def train(data: Path, out: Path, *, epochs: int, nproc: int) -> dict:
    """One ``binclf train --stream`` run; the figures from its bundle and its peak-memory line."""
    cmd = [sys.executable, "-m", "binclf", "train", str(data), "--target", "y", "--stream", "--model", "mlp",
           "--max-epochs", str(epochs), "--no-report", "--seed", "0", "-o", str(out), "--force"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    info = json.loads((out / "bundle.json").read_text())["info"]
    stream, history = info["stream"], info["history"]
    batch = stream["batch_size"]  # the global batch of every step
    train_s = sum(h["seconds"] - h.get("valid_seconds", 0.0) for h in history)
    stepped = stream["steps_per_epoch"] * batch * len(history)  # global batch: every rank's rows together
    peak = re.search(r"peak memory: ([\d.]+ [KMG]B)", done.stdout)
    return {"rows_per_s": stepped / train_s, "stats_s": stream["stats_seconds"], "wall_s": wall,
            "comm_ms": 1e3 * stream.get("comm_seconds_per_step", 0.0), "epochs": len(history),
            "step_ms": 1e3 * train_s / (stream["steps_per_epoch"] * len(history)),
            "peak": peak.group(1) if peak else "?", "log_loss": info["metrics"]["test"]["log_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="alternate the runs this many times")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "binclf-stream-dist")
    args = ap.parse_args()
    data = args.dir / f"rows{args.rows}-files{args.files}"
    if not data.is_dir():
        generate(data, rows=args.rows, files=args.files)
    from binclf.runtime import available_cores

    results: dict[str, list[dict]] = {}
    for _ in range(args.repeat):  # alternated, so that load arriving mid-benchmark falls on both
        for nproc in (1, args.nproc):
            name = "1 process" if nproc == 1 else f"{nproc} processes (gloo)"
            results.setdefault(name, []).append(train(data, args.dir / f"model-{nproc}", epochs=args.epochs,
                                                      nproc=nproc))
    cpu = cpu_model()
    print(f"binclf train --stream, MLP on {args.rows:,} rows x 11 columns in {args.files} Parquet files "
          f"(row groups of {ROW_GROUP:,}), {args.epochs} epochs; {available_cores()} cores ({cpu}); "
          f"best of {args.repeat}")
    print(f"{'run':<22} {'rows/s':>9} {'x 1 proc':>9} {'stats s':>8} {'ms/step':>8} {'all-reduce ms':>14} "
          f"{'peak RSS':>10} {'test log-loss':>14}")
    base = max(r["rows_per_s"] for r in results["1 process"])
    for name, runs in results.items():
        r = max(runs, key=lambda x: x["rows_per_s"])
        comm = f"{r['comm_ms']:.3f}" if r["comm_ms"] else "-"
        print(f"{name:<22} {r['rows_per_s']:>9,.0f} {r['rows_per_s'] / base:>9.2f} {r['stats_s']:>8.1f} "
              f"{r['step_ms']:>8.2f} {comm:>14} {r['peak']:>10} {r['log_loss']:>14.4f}")


if __name__ == "__main__":
    main()
