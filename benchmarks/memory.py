"""In-memory training's peak RSS on a numeric table, as a multiple of the decoded table (issue #18).

    python benchmarks/memory.py                     # 1M and 3M rows x 8 float32 + y, default model and mlp
    python benchmarks/memory.py --rows 1000000 --rows 3000000 --max-epochs 2

The issue's table: ``--rows`` rows of 8 float32 columns and an int64 0/1
target ``y`` (a logistic model of the columns), one Parquet file each,
generated once into ``--workdir``. Each row of the printed table is one
``binclf train FILE -t y --model M --max-epochs E --no-report?`` in a child
process, its peak RSS read by ``/usr/bin/time`` (benchmarks/scale.py's
``child``). Columns: the peak (MB), above the import baseline (a child
importing what ``binclf train`` imports, as in benchmarks/scale.py) as a
multiple of the decoded table, against the issue's target of at most 3x; and,
per model, the slope of the peak over the table sizes (MB of peak per MB of
decoded table added), which is what grows with the data: the rest is fixed
(imports beyond the baseline, the report's figures, the bootstrap's blocks).
``--max-epochs 2`` keeps the training step eager; with the default epochs a
long enough fit compiles its step, and importing inductor adds a fixed
~110 MB.

Never part of the test suite: peaks vary by ~+-10 MB from run to run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _machine import cpu_model
from scale import child, import_baseline

TARGET = 3.0


def make_table(path: Path, rows: int, seed: int = 0) -> int:
    """Write ``rows`` x 8 float32 + int64 ``y`` to ``path`` (once); returns its decoded bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        rng = np.random.default_rng(seed)
        w = rng.normal(size=8).astype(np.float32)
        cols, ys = {f"x{j}": [] for j in range(8)}, []
        for lo in range(0, rows, 1 << 20):  # a block of rows at a time
            m = min(1 << 20, rows - lo)
            X = rng.normal(size=(m, 8)).astype(np.float32)
            z = X @ w + 0.5 * X[:, 0] * X[:, 1]
            ys.append((rng.random(m) < 1 / (1 + np.exp(-z))).astype(np.int64))
            for j in range(8):
                cols[f"x{j}"].append(X[:, j])
        table = pa.table({**{k: np.concatenate(v) for k, v in cols.items()}, "y": np.concatenate(ys)})
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return int(pq.read_metadata(path).num_rows) * (8 * 4 + 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="table sizes (default: 1M and 3M)")
    ap.add_argument("--model", action="append", help="models (default: auto and mlp)")
    ap.add_argument("--max-epochs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/binclf-memory"))
    args = ap.parse_args()
    sizes = args.rows or [1_000_000, 3_000_000]
    models = args.model or ["auto", "mlp"]

    import torch

    import binclf

    print(f"binclf {binclf.__version__}, torch {torch.__version__}, CPU: {cpu_model()}")
    tables = {n: args.workdir / f"numeric_{n}.parquet" for n in sizes}
    decoded = {n: make_table(p, n) for n, p in tables.items()}
    base = import_baseline()
    print(f"import baseline {base:,.0f} MB; every run: binclf train T.parquet -t y --max-epochs {args.max_epochs}")
    print()
    header = f"{'model':<6} {'rows':>10} {'decoded MB':>10} {'peak MB':>8} {'(peak-base)/decoded':>20} {'target':>8}  seconds"
    print(header)
    print("-" * len(header))
    peaks: dict[tuple[str, int], float] = {}
    for model in models:
        for n in sizes:
            out = args.workdir / f"out_{model}_{n}"
            run = child([sys.executable, "-m", "binclf", "train", str(tables[n]), "-t", "y", "--model", model,
                         "--max-epochs", str(args.max_epochs), "--force", "-o", str(out)])
            if run.returncode != 0:
                print(f"{model:<6} {n:>10,} failed (exit {run.returncode}): {run.output.strip().splitlines()[-1:]}")
                continue
            peaks[model, n] = run.peak_mb
            ratio = (run.peak_mb - base) / (decoded[n] / 1e6)
            met = "met" if ratio <= TARGET else "NOT met"
            print(f"{model:<6} {n:>10,} {decoded[n] / 1e6:>10,.0f} {run.peak_mb:>8,.0f} {ratio:>19.2f}x {met:>8}"
                  f"  {run.seconds:7.1f}")
    if len(sizes) > 1:
        print()
        lo, hi = min(sizes), max(sizes)
        for model in models:
            if (model, lo) in peaks and (model, hi) in peaks:
                slope = (peaks[model, hi] - peaks[model, lo]) / ((decoded[hi] - decoded[lo]) / 1e6)
                print(f"{model}: the peak grows {slope:.2f} MB per MB of decoded table from {lo:,} to {hi:,} rows")


if __name__ == "__main__":
    main()
