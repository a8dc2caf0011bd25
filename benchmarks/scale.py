"""Training beyond one machine's memory: in memory, streamed, and on 2 processes under torchrun (issue #18).

    python benchmarks/scale.py                          # 20M rows x 50 columns (~4.5 GB decoded) under --workdir
    python benchmarks/scale.py --rows 200000            # a small run: every row, same table
    python benchmarks/scale.py --rows 2000000 --memory 200MB --max-epochs 2

The data set is generated once (and kept) in ``--workdir``: ``--rows`` rows of
50 feature columns and a 0/1 target ``y``, as a directory of Parquet files
(``--rows-per-file`` rows each, written in row groups of 131,072 rows, one
group at a time, so the generator never holds the table): 42 float32 numbers
(12 carry signal, linear and curved, 30 are noise; 5% missing in six of them)
and 8 text categoricals (3 to 200 levels, three carry signal), the target
drawn from a known logit tuned to ~10% positives, so the oracle log-loss (the
true probabilities' own) is known and printed beside the models'.

Rows of the table, each one ``binclf train`` in a child process measured from
outside (peak RSS by ``/usr/bin/time``, else by polling the child's VmHWM):

* **in memory, 1 process**: ``binclf train SUBSET.parquet --model mlp`` on the
  first ``--in-memory-rows`` rows (one file), the subset that fits;
* **streaming, 1 process**: ``binclf train DIR --stream --memory M``;
* **streaming, 2 processes (torchrun)**: ``binclf train DIR --stream --nproc 2``.

A row whose flags ``binclf train --help`` does not list prints "not
available". Columns: training rows/s (rows x epochs over the fit's epoch
seconds, validation excluded), seconds of the statistics pass (the
preprocessing fit; pass 1 when streaming), wall seconds, peak RSS per process
(MB, and as a multiple of the decoded data read: above the import baseline,
then in all), what :func:`binclf.train.memory.in_memory_peak_bytes` predicts
for the in-memory run (plus the baseline; "inputs" is the model's input
width, one-hot levels included), the test log-loss. The import baseline is a child importing what
``binclf train`` imports.

Never part of the test suite: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _machine import cpu_model

N_NUMERIC, N_SIGNAL, N_CATEGORICAL = 42, 12, 8
CARDINALITIES = (3, 5, 8, 12, 20, 50, 100, 200)
ROW_GROUP = 131_072
SEED = 0


# --------------------------------------------------------------------------- #
# the data set: generated a row group at a time
# --------------------------------------------------------------------------- #


def _weights() -> dict[str, np.ndarray]:
    """The known logit's coefficients (fixed by the seed, the same for every chunk)."""
    rng = np.random.default_rng(SEED)
    return {
        "linear": rng.normal(0.0, 0.6, size=N_SIGNAL),
        "cat": [rng.normal(0.0, 0.5, size=k) for k in CARDINALITIES[:3]],
    }


def _chunk(rows: int, seed: int, w: dict, bias: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``rows`` rows of features and their true probabilities (columns as numpy/object arrays)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, N_NUMERIC), dtype=np.float32)
    z = X[:, :N_SIGNAL].astype(np.float64) @ w["linear"]
    # Curvature a linear model misses: a product and a bump.
    z += 0.8 * X[:, 0] * X[:, 1] - 0.7 * (X[:, 2] ** 2 - 1.0)
    cols: dict[str, np.ndarray] = {}
    for j in range(N_CATEGORICAL):
        k = CARDINALITIES[j]
        # Skewed level frequencies, as real categoricals are.
        codes = np.minimum(rng.zipf(1.6, size=rows) - 1, k - 1)
        if j < 3:
            z += w["cat"][j][codes]
        cols[f"cat{j}"] = codes
    p = 1.0 / (1.0 + np.exp(-(z + bias)))
    for i in range(N_NUMERIC):
        col = X[:, i]
        if i % 7 == 3:  # six columns with 5% missing
            col[rng.random(rows) < 0.05] = np.nan
        cols[f"x{i}"] = col
    return cols, p


def _bias(w: dict, target_rate: float = 0.10) -> float:
    """The intercept giving ~``target_rate`` positives (bisection on a sample)."""
    _, p0 = _chunk(200_000, SEED + 99, w, 0.0)
    z0 = np.log(p0 / (1 - p0))
    lo, hi = -10.0, 5.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(z0 + mid)))))
        lo, hi = (mid, hi) if rate < target_rate else (lo, mid)
    return 0.5 * (lo + hi)


def generate(workdir: Path, rows: int, rows_per_file: int) -> dict:
    """Write the data set under ``workdir/data`` (kept across runs of the same size); returns its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = workdir / "data"
    meta_path = workdir / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("rows") == rows and meta.get("rows_per_file") == rows_per_file and data.is_dir():
            return meta
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    w = _weights()
    bias = _bias(w)
    levels = [np.array([f"L{j}_{v}" for v in range(k)]) for j, k in enumerate(CARDINALITIES)]
    t0 = time.perf_counter()
    written, ll_sum, positives, part = 0, 0.0, 0, 0
    while written < rows:
        n_file = min(rows_per_file, rows - written)
        writer = None
        path = data / f"part-{part:05d}.parquet"
        done = 0
        while done < n_file:
            n = min(ROW_GROUP, n_file - done)
            cols, p = _chunk(n, SEED + 1 + written + done, w, bias)
            y = (np.random.default_rng(SEED + 7 + written + done).random(n) < p).astype(np.int8)
            ll_sum += float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).sum())
            positives += int(y.sum())
            arrays = {}
            for j in range(N_CATEGORICAL):
                codes = cols.pop(f"cat{j}")
                arrays[f"cat{j}"] = pa.DictionaryArray.from_arrays(
                    pa.array(codes.astype(np.int32)), pa.array(levels[j])
                )
            arrays.update({k: pa.array(v) for k, v in cols.items()})
            arrays["y"] = pa.array(y)
            table = pa.table(arrays)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            writer.write_table(table, row_group_size=ROW_GROUP)
            done += n
        writer.close()
        written += n_file
        part += 1
    meta = {
        "rows": rows, "rows_per_file": rows_per_file, "files": part, "columns": N_NUMERIC + N_CATEGORICAL,
        "positive_rate": positives / rows, "oracle_log_loss": ll_sum / rows,
        "generate_seconds": time.perf_counter() - t0,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def subset(workdir: Path, rows: int) -> Path:
    """The first ``rows`` rows of the data set as one Parquet file (read and written a row group at a time)."""
    import pyarrow.parquet as pq

    out = workdir / f"first_{rows}.parquet"
    if out.exists() and pq.ParquetFile(out).metadata.num_rows == rows:
        return out
    tmp = out.with_suffix(".tmp")
    writer, done = None, 0
    for f in sorted((workdir / "data").glob("*.parquet")):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=ROW_GROUP):
            batch = batch.slice(0, rows - done)
            if writer is None:
                writer = pq.ParquetWriter(tmp, batch.schema, compression="snappy")
            writer.write_batch(batch, row_group_size=ROW_GROUP)
            done += batch.num_rows
            if done >= rows:
                break
        if done >= rows:
            break
    writer.close()
    tmp.replace(out)
    return out


# --------------------------------------------------------------------------- #
# a child process measured from outside
# --------------------------------------------------------------------------- #


@dataclass
class Run:
    """What one child ``binclf train`` (or the baseline child) did."""

    seconds: float
    peak_mb: float
    returncode: int
    output: str
    extra: dict = field(default_factory=dict)


def _poll_hwm(pid: int, out: list[float], done: threading.Event) -> None:
    """The child's VmHWM (its own high-water mark, reset at exec), polled until it exits."""
    while not done.is_set():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
            m = re.search(r"VmHWM:\s+(\d+) kB", text)
            if m:
                out.append(int(m.group(1)) * 1024 / 1e6)  # kB -> MB
        except OSError:
            return
        done.wait(0.05)


def child(cmd: list[str], *, env: dict | None = None, timeout: float | None = None) -> Run:
    """Run ``cmd``; its wall seconds and peak RSS in MB (the largest of its processes).

    ``/usr/bin/time``'s maximum resident set covers the whole tree it waits
    for (torchrun's workers too); without it the child's own VmHWM is polled
    (the launcher only: then a worker's peak is not seen).
    """
    timer = Path("/usr/bin/time")
    full = [str(timer), "-f", "MAXRSS_KB %M", *cmd] if timer.exists() else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    hwm: list[float] = []
    done = threading.Event()
    poller = None
    if not timer.exists():
        poller = threading.Thread(target=_poll_hwm, args=(proc.pid, hwm, done), daemon=True)
        poller.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    done.set()
    if poller is not None:
        poller.join()
    seconds = time.perf_counter() - t0
    m = re.findall(r"MAXRSS_KB (\d+)", output)
    peak = int(m[-1]) * 1024 / 1e6 if m else (max(hwm) if hwm else float("nan"))
    output = re.sub(r"MAXRSS_KB \d+\n?", "", output)
    return Run(seconds=seconds, peak_mb=peak, returncode=proc.returncode, output=output)


def import_baseline() -> float:
    """Peak RSS (MB) of a process importing what ``binclf train`` imports, and nothing else."""
    code = ("import binclf.cli, binclf.train.pipeline, binclf.report, binclf.bundle, torch, sklearn.linear_model, "
            "sklearn.metrics, sklearn.model_selection, scipy.optimize, pyarrow.parquet, pandas")
    return child([sys.executable, "-c", code]).peak_mb


def train_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "binclf", "train", "--help"], capture_output=True, text=True, check=False
    ).stdout


# --------------------------------------------------------------------------- #
# the rows of the table
# --------------------------------------------------------------------------- #


@dataclass
class Row:
    name: str
    rows: int = 0
    decoded_mb: float = float("nan")
    rows_per_s: float = float("nan")
    stats_s: float = float("nan")
    wall_s: float = float("nan")
    peak_mb: float = float("nan")
    test_log_loss: float = float("nan")
    features_out: int = 0
    estimate_mb: float = float("nan")
    note: str = ""


def _bundle_figures(bundle: Path) -> dict:
    """Training rows/s, statistics seconds and test log-loss from a bundle's ``bundle.json``."""
    meta = json.loads((bundle / "bundle.json").read_text())
    info = meta.get("info", {})
    history = info.get("history") or []
    n_train = (info.get("summary") or {}).get("split_rows", {}).get("train", 0)
    fit_s = sum(h.get("seconds", 0.0) - h.get("valid_seconds", 0.0) for h in history)
    timings = info.get("timings") or {}
    stats_s = timings.get("statistics_seconds", (info.get("stream") or {}).get("stats_seconds", float("nan")))
    return {
        "rows_per_s": n_train * len(history) / fit_s if fit_s > 0 else float("nan"),
        "stats_s": stats_s,  # in memory: the preprocessing fit; streaming: pass 1
        "test_log_loss": ((info.get("metrics") or {}).get("test") or {}).get("log_loss", float("nan")),
        "features_out": _features_out(meta.get("preprocessing") or {}),
    }


def _features_out(prep: dict) -> int:
    """Model input features of a bundle's table preprocessing (numbers, indicators, one-hot levels)."""
    n = sum(1 + bool(st.get("indicator")) for st in prep.get("numeric_", []))
    return n + sum(len(st["levels"]) + bool(st.get("missing")) + bool(st.get("unknown")) for st in prep.get("categorical_", []))


def _train_row(name: str, cmd: list[str], bundle: Path, rows: int, decoded: int, timeout: float) -> Row:
    shutil.rmtree(bundle, ignore_errors=True)
    run = child(cmd, timeout=timeout)
    row = Row(name=name, rows=rows, decoded_mb=decoded / 1e6, wall_s=run.seconds, peak_mb=run.peak_mb)
    if run.returncode != 0 or not (bundle / "bundle.json").exists():
        last = [ln for ln in run.output.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        row.note = f"failed (exit {run.returncode}): {last[0][:120]}"
        return row
    for k, v in _bundle_figures(bundle).items():
        setattr(row, k, v)
    return row


def _common_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--target", "y", "--model", args.model, "--max-epochs", str(args.max_epochs), "--seed", "0", "--force"]
    return flags + (["--no-report"] if args.no_report else [])


def row_in_memory(args: argparse.Namespace, workdir: Path) -> Row:
    """In memory, one process, on the first ``--in-memory-rows`` rows (one Parquet file)."""
    from binclf.train.memory import decoded_bytes, in_memory_peak_bytes

    rows = min(args.in_memory_rows, args.rows)
    path = subset(workdir, rows)
    bundle = workdir / "bundle-in-memory"
    cmd = [sys.executable, "-m", "binclf", "train", str(path), *_common_flags(args), "--out", str(bundle)]
    row = _train_row("in memory, 1 process", cmd, bundle, rows, decoded_bytes(path), args.timeout)
    # What binclf.train.memory predicts for this table (above the import baseline).
    row.estimate_mb = in_memory_peak_bytes(int(row.decoded_mb * 1e6), rows=rows, features_out=row.features_out) / 1e6
    return row


def row_streaming(args: argparse.Namespace, workdir: Path, help_text: str) -> Row:
    """Streaming, one process: ``binclf train DIR --stream --memory M`` (issue #18's streaming path)."""
    from binclf.train.memory import decoded_bytes

    name = f"streaming, 1 process (--memory {args.memory})"
    if "--stream" not in help_text or "--memory" not in help_text:
        return Row(name=name, note="not available (binclf train has no --stream / --memory)")
    data = workdir / "data"
    bundle = workdir / "bundle-stream"
    cmd = [sys.executable, "-m", "binclf", "train", str(data), *_common_flags(args), "--stream",
           "--memory", args.memory, "--out", str(bundle)]
    return _train_row(name, cmd, bundle, args.rows, decoded_bytes(data), args.timeout)


def row_torchrun(args: argparse.Namespace, workdir: Path, help_text: str) -> Row:
    """Streaming on 2 processes: ``binclf train DIR --stream --nproc 2`` (torchrun, gloo on the CPU)."""
    from binclf.train.memory import decoded_bytes

    name = "streaming, 2 processes (torchrun)"
    if "--stream" not in help_text or "--nproc" not in help_text:
        return Row(name=name, note="not available (binclf train has no --stream / --nproc)")
    data = workdir / "data"
    bundle = workdir / "bundle-torchrun"
    cmd = [sys.executable, "-m", "binclf", "train", str(data), *_common_flags(args), "--stream",
           "--memory", args.memory, "--nproc", "2", "--out", str(bundle)]
    return _train_row(name, cmd, bundle, args.rows, decoded_bytes(data), args.timeout)


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def _fmt(x: float, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def print_table(rows: list[Row], baseline_mb: float) -> None:
    head = ("run", "rows", "decoded MB", "inputs", "train rows/s", "stats s", "wall s", "peak RSS MB",
            "(peak-base)/decoded", "peak/decoded", "estimate MB", "test log-loss")
    lines = []
    for r in rows:
        ok = not math.isnan(r.peak_mb) and r.decoded_mb > 0 and not r.note
        lines.append((
            r.name, f"{r.rows:,}" if r.rows else "", _fmt(r.decoded_mb, ",.0f"), str(r.features_out or ""),
            _fmt(r.rows_per_s, ",.0f"),
            _fmt(r.stats_s, ".1f"), _fmt(r.wall_s, ".0f"), _fmt(r.peak_mb, ",.0f"),
            _fmt((r.peak_mb - baseline_mb) / r.decoded_mb, ".2f") if ok else "",
            _fmt(r.peak_mb / r.decoded_mb, ".2f") if ok else "",
            _fmt(baseline_mb + r.estimate_mb, ",.0f") if not math.isnan(r.estimate_mb) else "",
            _fmt(r.test_log_loss, ".4f"),
        ))
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for ln, r in zip(lines, rows):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(ln, widths))))
        if r.note:
            print(f"    {r.note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000, help="rows of the generated data set")
    ap.add_argument("--rows-per-file", type=int, default=1_048_576, help="rows per Parquet file of the data set")
    ap.add_argument("--in-memory-rows", type=int, default=2_000_000, help="rows of the in-memory run (a subset)")
    ap.add_argument("--memory", default="1GB", help="--memory of the streaming runs")
    ap.add_argument("--model", default="mlp", help="--model of every run (streaming trains one network)")
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--no-report", action="store_true", help="pass --no-report (the report's cost left out)")
    ap.add_argument("--only", choices=("memory", "stream", "torchrun"), action="append", help="run only these rows")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per run at most")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/binclf-scale"))
    args = ap.parse_args()

    import torch

    import binclf

    print(f"binclf {binclf.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
          f"CPU: {cpu_model()} ({os.cpu_count()} logical), load average {os.getloadavg()[0]:.1f}")
    workdir = args.workdir / f"rows_{args.rows}"
    meta = generate(workdir, args.rows, args.rows_per_file)
    from binclf.train.memory import IN_MEMORY_PEAK_FACTOR, decoded_bytes

    print(f"data: {meta['rows']:,} rows x {meta['columns']} columns + y in {meta['files']} Parquet file(s) under "
          f"{workdir / 'data'} ({decoded_bytes(workdir / 'data') / 1e6:,.0f} MB decoded), positives "
          f"{meta['positive_rate']:.1%}, oracle log-loss {meta['oracle_log_loss']:.4f}")
    baseline = import_baseline()
    help_text = train_help()
    print(f"import baseline {baseline:,.0f} MB; binclf's in-memory peak factor IN_MEMORY_PEAK_FACTOR = "
          f"{IN_MEMORY_PEAK_FACTOR}; every run: --model {args.model} --max-epochs {args.max_epochs}")
    only = set(args.only or ("memory", "stream", "torchrun"))
    rows = []
    if "memory" in only:
        rows.append(row_in_memory(args, workdir))
    if "stream" in only:
        rows.append(row_streaming(args, workdir, help_text))
    if "torchrun" in only:
        rows.append(row_torchrun(args, workdir, help_text))
    print()
    print_table(rows, baseline)


if __name__ == "__main__":
    main()
