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
training step eager; with the default epochs (``--max-epochs 0``) a long
enough fit compiles its step.

Each row's import baseline is the peak of a second child that imports every
module that run imported (the report's matplotlib, and inductor where a fit
compiled its step) and does nothing else. The baseline of benchmarks/scale.py
(its fixed list of imports, without matplotlib) is printed above the table.

Never part of the test suite: peaks vary by ~+-10 MB from run to run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _machine import cpu_model
from scale import Run, child, import_baseline

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


# A run: ``binclf train`` in this process, then the modules it imported.
_RUN = """
import sys
import binclf.cli
try:
    binclf.cli.main(sys.argv[1:], standalone_mode=False)
except SystemExit as e:
    if e.code:
        raise
print("MODULES", " ".join(sorted(m for m in sys.modules if m != "__main__")))
"""

# A run's import baseline: the same modules imported, nothing else done.
_IMPORT = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:  # a module that only imports as part of its package's import
        pass
"""


def train_and_baseline(args: list[str]) -> tuple[Run, float]:
    """``binclf train ARGS`` in a child (its run), and the peak RSS (MB) of a child importing every module it imported."""
    run = child([sys.executable, "-c", _RUN, "train", *args])
    found = [line for line in run.output.splitlines() if line.startswith("MODULES ")]
    if run.returncode != 0 or not found:
        return run, float("nan")
    return run, child([sys.executable, "-c", _IMPORT, *found[-1].split()[1:]]).peak_mb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="append", type=parse_table, metavar="ROWSxCOLS[:DTYPE]",
                    help="tables (default: 200000x20:float64, 1000000x8, 3000000x8)")
    ap.add_argument("--model", action="append", help="models (default: auto and mlp)")
    ap.add_argument("--max-epochs", type=int, default=2, help="0: the default epochs (long fits compile their step)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/binclf-memory"))
    args = ap.parse_args()
    specs = args.table or [(200_000, 20, "float64"), (1_000_000, 8, "float32"), (3_000_000, 8, "float32")]
    models = args.model or ["auto", "mlp"]
    epochs = ["--max-epochs", str(args.max_epochs)] if args.max_epochs else []

    import torch

    import binclf

    print(f"binclf {binclf.__version__}, torch {torch.__version__}, CPU: {cpu_model()}")
    tables = {t: args.workdir / f"numeric_{t[0]}x{t[1]}_{t[2]}.parquet" for t in specs}
    decoded = {t: make_table(p, *t) for t, p in tables.items()}
    print(f"every run: {' '.join(['binclf train T.parquet -t y --model M', *epochs])}; base: a process importing every "
          f"module that run imported (benchmarks/scale.py's fixed list, without the report's matplotlib: "
          f"{import_baseline():,.0f} MB)")
    print()
    header = (f"{'model':<6} {'table':>22} {'decoded MB':>10} {'base MB':>8} {'peak MB':>8} "
              f"{'(peak-base)/decoded':>20} {'target':>8}  seconds")
    print(header)
    print("-" * len(header))
    peaks: dict[tuple[str, tuple], float] = {}
    for model in models:
        for t in specs:
            name = f"{t[0]:,} x {t[1]} {t[2]}"
            run, base = train_and_baseline([str(tables[t]), "-t", "y", "--model", model, *epochs, "--force",
                                            "-o", str(args.workdir / "out")])
            if run.returncode != 0:
                print(f"{model:<6} {name:>22} failed (exit {run.returncode}): {run.output.strip().splitlines()[-1:]}")
                continue
            peaks[model, t] = run.peak_mb
            ratio = (run.peak_mb - base) / (decoded[t] / 1e6)
            met = "met" if ratio <= TARGET else "NOT met"
            print(f"{model:<6} {name:>22} {decoded[t] / 1e6:>10,.0f} {base:>8,.0f} {run.peak_mb:>8,.0f} "
                  f"{ratio:>19.2f}x {met:>8}  {run.seconds:7.1f}")
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
