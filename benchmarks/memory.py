"""In-memory training's peak RSS on a numeric table, as a multiple of the decoded table (issue #18).

    python benchmarks/memory.py          # the issue's tables: 200k x 20 float64, 1M and 3M x 8 float32; auto and mlp
    python benchmarks/memory.py --table 1000000x8 --table 200000x20:float64 --model auto --max-epochs 2

Each ``--table ROWSxCOLS[:DTYPE]`` is ROWS rows of COLS columns (float32
unless DTYPE says float64) and an int64 0/1 target ``y`` (a logistic model of
the columns), one Parquet file each, generated once into ``--workdir``. Each
row of the printed table is one ``binclf train FILE -t y --model M
--max-epochs E`` in a child process, its peak RSS read by ``/usr/bin/time``
(benchmarks/scale.py's ``child``). Columns: the peak (MB), above the import
baseline as a multiple of the decoded table, against the issue's target of at
most 3x; and, per model, the slope of the peak between the smallest and the
largest table of the same width (MB of peak per MB of decoded table added),
which is what grows with the data: the rest is fixed (code paged in as it
first runs, the threads' heaps, the report's figures), so a table of a few MB
is a large multiple of itself whatever is done. ``--max-epochs 2`` keeps the
training step eager; with the default epochs a long enough fit compiles its
step, and importing inductor adds a fixed ~110 MB.

The import baseline is the peak of a child that imports every module a
``binclf train --model M`` run imports (found by a run on a 2,000-row table
with the same flags: the report's matplotlib included) and does nothing else.
The baseline of benchmarks/scale.py (its fixed list of imports, without
matplotlib) is printed beside it.

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


def make_table(path: Path, rows: int, cols: int = 8, dtype: str = "float32", seed: int = 0) -> int:
    """Write ``rows`` x ``cols`` ``dtype`` + int64 ``y`` to ``path`` (once); returns its decoded bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        rng = np.random.default_rng(seed)
        w = rng.normal(size=cols).astype(np.float32)
        columns, ys = {f"x{j}": [] for j in range(cols)}, []
        for lo in range(0, rows, 1 << 20):  # a block of rows at a time
            m = min(1 << 20, rows - lo)
            X = rng.normal(size=(m, cols)).astype(np.float32)
            z = X @ w + 0.5 * X[:, 0] * X[:, 1]
            ys.append((rng.random(m) < 1 / (1 + np.exp(-z))).astype(np.int64))
            for j in range(cols):
                columns[f"x{j}"].append(X[:, j].astype(dtype))
        table = pa.table({**{k: np.concatenate(v) for k, v in columns.items()}, "y": np.concatenate(ys)})
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return int(pq.read_metadata(path).num_rows) * (cols * np.dtype(dtype).itemsize + 8)


def parse_table(text: str) -> tuple[int, int, str]:
    """``"ROWSxCOLS[:DTYPE]"`` -> ``(rows, cols, dtype)``."""
    shape, _, dtype = text.partition(":")
    rows, cols = (int(v) for v in shape.lower().split("x"))
    return rows, cols, dtype or "float32"


_MODULES = """
import sys
import binclf.cli
try:
    binclf.cli.main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print("MODULES", " ".join(sorted(m for m in sys.modules if m != "__main__")))
"""

_IMPORT = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:  # a module that only imports as part of its package's import
        pass
"""


def run_import_baseline(train_args: list[str]) -> float:
    """Peak RSS (MB) of a child importing every module ``binclf train TRAIN_ARGS`` imports, and nothing else."""
    import subprocess

    found = subprocess.run([sys.executable, "-c", _MODULES, "train", *train_args], capture_output=True, text=True,
                           check=True).stdout
    modules = next(line for line in found.splitlines() if line.startswith("MODULES ")).split()[1:]
    return child([sys.executable, "-c", _IMPORT, *modules]).peak_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="append", type=parse_table, metavar="ROWSxCOLS[:DTYPE]",
                    help="tables (default: 200000x20:float64, 1000000x8, 3000000x8)")
    ap.add_argument("--model", action="append", help="models (default: auto and mlp)")
    ap.add_argument("--max-epochs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/binclf-memory"))
    args = ap.parse_args()
    specs = args.table or [(200_000, 20, "float64"), (1_000_000, 8, "float32"), (3_000_000, 8, "float32")]
    models = args.model or ["auto", "mlp"]

    import torch

    import binclf

    print(f"binclf {binclf.__version__}, torch {torch.__version__}, CPU: {cpu_model()}")
    tables = {t: args.workdir / f"numeric_{t[0]}x{t[1]}_{t[2]}.parquet" for t in specs}
    decoded = {t: make_table(p, *t) for t, p in tables.items()}
    tiny = args.workdir / "numeric_2000.parquet"
    make_table(tiny, 2000)
    bases = {m: run_import_baseline([str(tiny), "-t", "y", "--model", m, "--max-epochs", str(args.max_epochs),
                                     "--force", "-o", str(args.workdir / "out_baseline")]) for m in models}
    print("import baseline: every module binclf train --model M imports, "
          + ", ".join(f"{m} {b:,.0f} MB" for m, b in bases.items())
          + f" (benchmarks/scale.py's list, without the report's matplotlib: {import_baseline():,.0f} MB)")
    print(f"every run: binclf train T.parquet -t y --model M --max-epochs {args.max_epochs}")
    print()
    header = (f"{'model':<6} {'table':>22} {'decoded MB':>10} {'peak MB':>8} {'(peak-base)/decoded':>20} "
              f"{'target':>8}  seconds")
    print(header)
    print("-" * len(header))
    peaks: dict[tuple[str, tuple], float] = {}
    for model in models:
        for t in specs:
            name = f"{t[0]:,} x {t[1]} {t[2]}"
            run = child([sys.executable, "-m", "binclf", "train", str(tables[t]), "-t", "y", "--model", model,
                         "--max-epochs", str(args.max_epochs), "--force", "-o", str(args.workdir / "out")])
            if run.returncode != 0:
                print(f"{model:<6} {name:>22} failed (exit {run.returncode}): {run.output.strip().splitlines()[-1:]}")
                continue
            peaks[model, t] = run.peak_mb
            ratio = (run.peak_mb - bases[model]) / (decoded[t] / 1e6)
            met = "met" if ratio <= TARGET else "NOT met"
            print(f"{model:<6} {name:>22} {decoded[t] / 1e6:>10,.0f} {run.peak_mb:>8,.0f} {ratio:>19.2f}x {met:>8}"
                  f"  {run.seconds:7.1f}")
    print()
    for model in models:
        for width in sorted({t[1:] for t in specs}):
            same = sorted((t for t in specs if t[1:] == width and (model, t) in peaks), key=lambda t: t[0])
            if len(same) > 1:
                lo, hi = same[0], same[-1]
                slope = (peaks[model, hi] - peaks[model, lo]) / ((decoded[hi] - decoded[lo]) / 1e6)
                print(f"{model}: the peak grows {slope:.2f} MB per MB of decoded table from {lo[0]:,} to {hi[0]:,} "
                      f"rows x {width[0]} {width[1]}")

if __name__ == "__main__":
    main()
