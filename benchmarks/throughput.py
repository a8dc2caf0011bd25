"""Training and prediction throughput of binclf against the usual ways (issue #6).

    python benchmarks/throughput.py                 # everything, prints one table
    python benchmarks/throughput.py --no-predict    # training rows only
    python benchmarks/throughput.py --repeats 5

Training workload: 200,000 rows x 50 float features, the MLP 50 -> 128 -> 64 -> 1
with BatchNorm, ReLU, Dropout 0.1, BCE with logits, AdamW, batch 512, one epoch
after a warm-up, ``--threads`` threads (2) as the ceiling (binclf's probe may
use fewer). Each contender's epoch is timed ``--repeats`` times; the table
shows the median. Contenders: binclf's public ``Trainer.fit`` (end to end:
its speed probe, permutation, gather, steps); a plain PyTorch loop over
``DataLoader(TensorDataset(...), batch_size=512, shuffle=True)``; skorch's
``NeuralNetBinaryClassifier``; scikit-learn's ``MLPClassifier`` for one epoch.
Then binclf and the DataLoader loop again with one busy process beside them
(a bounded ``while time.time() < t: pass`` loop in a child process this
benchmark starts and stops; the DataLoader loop on a tenth of the rows there,
as it can slow down tenfold). Printed with them: the choices binclf's probe
made (matmul kernel, torch threads, compiled or eager step) and what each
alternative measured (:mod:`binclf.probe`).

Prediction: ``python -m binclf predict`` end to end in a child process on a
1,000,000 x 50 Parquet and CSV file (written once under ``--workdir``), its
rows/s and peak memory (the child's max RSS), beside pyarrow reading the same
file alone (in a fresh process, as the command runs, and warm in this one),
with two bundles trained on a 20,000-row sample: the workload's MLP
(``--model mlp``) and binclf's default model; then peak memory on files of
20x and 40x the chunk size; then where each bundle's prediction spends its CPU
(the whole command's work in a fresh process, its members alone on one core,
and the default model's PLE-MLP bag stage by stage), with the ratio the
default bundle could reach were its bin search and everything else in its
members free (:func:`breakdown`).

Never part of the test suite: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from _machine import cpu_model

N_ROWS, N_FEATURES, BATCH = 200_000, 50, 512
HIDDEN = (128, 64)
DROPOUT = 0.1


# --------------------------------------------------------------------------- #
# data and the reference module
# --------------------------------------------------------------------------- #


def make_data(n: int, d: int = N_FEATURES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    z = X[:, :10] @ rng.normal(size=10) + 0.5 * np.sin(3 * X[:, 10]) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return X, y


class PlainMLP(nn.Module):
    """The workload's network in plain PyTorch (torch's own Dropout), returning (n,) logits."""

    def __init__(self, d: int = N_FEATURES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for h in HIDDEN:
            layers += [nn.Linear(d, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(DROPOUT)]
            d = h
        self.body = nn.Sequential(*layers)
        self.output = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.body(x)).squeeze(-1)


def flops_per_sample() -> int:
    """Matmul FLOPs of one training sample: forward, weight gradients, input gradients (not layer 1's)."""
    dims = [N_FEATURES, *HIDDEN, 1]
    macs = [a * b for a, b in zip(dims[:-1], dims[1:])]
    return 2 * (sum(macs) + sum(macs) + sum(macs[1:]))


def matmul_gflops(repeats: int = 5) -> float:
    """Best float32 matmul rate (GFLOP/s) on 2048 x 2048 matrices with the current threads."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
    return best


# --------------------------------------------------------------------------- #
# contenders: each returns the seconds of one timed epoch
# --------------------------------------------------------------------------- #


def run_binclf(X: np.ndarray, y: np.ndarray, *, valid: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    from binclf import runtime
    from binclf.nn.models import MLP
    from binclf.train.trainer import TrainConfig, Trainer

    cfg = TrainConfig(batch_size=BATCH, max_epochs=1, verbose=False, seed=int(time.time_ns() % 1000))
    model = MLP(N_FEATURES, hidden=HIDDEN, dropout=DROPOUT)
    kw = {} if valid is None else {"X_valid": valid[0], "y_valid": valid[1]}
    # As a new process would: measure the threads afresh (the kernel and compile choices stay cached).
    runtime.PROBES.threads.clear()
    t0 = time.perf_counter()
    with runtime.session(purpose="train") as s:
        t = Trainer(cfg).fit(model, X, y, **kw)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "valid_seconds": t.history_[0].get("valid_seconds", 0.0),
            "choices": dict(s.choices), "threads": [k[1] for k in s.fits]}


class BusyProcess:
    """One other process spinning on a core for at most ``seconds`` (stopped on leaving the block)."""

    def __init__(self, seconds: float = 600.0) -> None:
        self.code = f"import time\nt = time.time() + {seconds}\nwhile time.time() < t: pass"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> BusyProcess:  # noqa: PYI034 - a final class
        self.proc = subprocess.Popen([sys.executable, "-c", self.code])
        time.sleep(0.5)  # running before the contender starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def run_dataloader(X: np.ndarray, y: np.ndarray, *, epochs: int = 1) -> float:
    from torch.utils.data import DataLoader, TensorDataset

    model = PlainMLP()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=BATCH, shuffle=True)
    model.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            if len(xb) < 2:
                continue
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def run_skorch(X: np.ndarray, y: np.ndarray) -> float:
    from skorch import NeuralNetBinaryClassifier

    net = NeuralNetBinaryClassifier(
        PlainMLP,
        max_epochs=1,
        batch_size=BATCH,
        lr=1e-3,
        optimizer=torch.optim.AdamW,
        iterator_train__shuffle=True,
        train_split=None,
        verbose=0,
    )
    t0 = time.perf_counter()
    net.fit(X, y)
    return time.perf_counter() - t0


def run_sklearn(X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, batch_size=BATCH, max_iter=1, shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(X, y)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- #
# prediction
# --------------------------------------------------------------------------- #


def _child(cmd: list[str], *, src: str | None = None) -> tuple[float, float, float | None, float]:
    """Wall seconds, peak RSS (MiB), the CLI's own rows/s (None if not printed) and CPU seconds (user +
    system, NaN where unknown) of a child process. CPU seconds say how much work a command does even
    on a busy machine, where wall time mostly says how much of the cores it got.

    The peak comes from ``/usr/bin/time`` where it exists: a child forked
    straight from this (large) process would inherit its high-water mark.
    """
    timer = Path("/usr/bin/time")
    full = [str(timer), "-f", "MAXRSS_KB %M CPU_S %U %S", *cmd] if timer.exists() else cmd
    env = None if src is None else {**os.environ, "PYTHONPATH": src}
    t0 = time.perf_counter()
    proc = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    m = re.search(r"MAXRSS_KB (\d+) CPU_S ([\d.]+) ([\d.]+)", proc.stderr)
    peak = int(m.group(1)) / 1024 if m else float("nan")
    cpu = float(m.group(2)) + float(m.group(3)) if m else float("nan")
    m = re.search(r"\(([\d.]+) s, ([\d,]+) rows/s\)", proc.stderr)
    rate = float(m.group(2).replace(",", "")) if m else None
    return seconds, peak, rate, cpu


def _fresh_read_seconds(fmt: str, path: Path) -> float:
    """Seconds pyarrow takes to read ``path`` whole in a new process (imports not counted)."""
    reader = "pyarrow.parquet.read_table" if fmt == "parquet" else "pyarrow.csv.read_csv"
    code = (f"import time, pyarrow.csv, pyarrow.parquet; t = time.perf_counter(); {reader}({str(path)!r}); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def prepare_files(workdir: Path, rows: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    workdir.mkdir(parents=True, exist_ok=True)
    files = {
        "parquet": workdir / f"big_{rows}.parquet",
        "csv": workdir / f"big_{rows}.csv",
        "half_parquet": workdir / f"big_{rows // 2}.parquet",
        "half_csv": workdir / f"big_{rows // 2}.csv",
        "sample": workdir / "sample.csv",
    }
    if all(p.exists() for p in files.values()):
        return files
    X, y = make_data(rows, seed=1)
    cols = {f"x{i}": X[:, i].astype(np.float64) for i in range(N_FEATURES)}
    table = pa.table({**cols, "y": pa.array(np.where(y > 0, "yes", "no"))})
    features = table.drop(["y"])
    # Row groups of 64k rows, as data-lake writers make them: a reader holds one
    # row group at a time, so this, not the file, bounds a Parquet reader's memory.
    pq.write_table(features, files["parquet"], row_group_size=65_536)
    pq.write_table(features.slice(0, rows // 2), files["half_parquet"], row_group_size=65_536)
    pacsv.write_csv(features, files["csv"])
    pacsv.write_csv(features.slice(0, rows // 2), files["half_csv"])
    pacsv.write_csv(table.slice(0, 20_000), files["sample"])
    return files


# The bundles predicted with: the workload's MLP (what the targets are about:
# reading, preprocessing and writing around one network), and binclf's
# default model (5 cross-fitted networks with encodings + logistic members).
BUNDLES = {"mlp": ["--model", "mlp"], "default": []}


def bench_predict(
    workdir: Path, rows: int, repeats: int, formats: tuple[str, ...] = ("parquet", "csv"), baseline: str | None = None
) -> list[dict]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    files = prepare_files(workdir, rows)
    bundles = {}
    for label, flags in BUNDLES.items():
        bundles[label] = workdir / f"bundle-{label}"
        if not (bundles[label] / "bundle.json").exists():
            subprocess.run(
                [sys.executable, "-m", "binclf", "train", str(files["sample"]), "--target", "y", "--max-epochs", "2",
                 *flags, "--out", str(bundles[label])],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
    # pyarrow reading the whole file, two ways: in a fresh process, as binclf
    # predict runs (the first read of a process also pays for its fresh memory),
    # and again in this process, warm (allocator and thread pools primed).
    read_s, warm_s = {}, {}
    for fmt, read in (("parquet", pq.read_table), ("csv", pacsv.read_csv)):
        if fmt not in formats:
            continue
        read(files[fmt])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            read(files[fmt])
            times.append(time.perf_counter() - t0)
        warm_s[fmt] = statistics.median(times)
        read_s[fmt] = statistics.median(_fresh_read_seconds(fmt, files[fmt]) for _ in range(repeats))
    results = []
    # Interleaved (mlp, default, mlp, default, ...): a burst of machine load hits both bundles alike;
    # with a baseline source tree, its binclf runs the same commands in the same rounds.
    sources = {"": None} if baseline is None else {"": None, " (baseline)": baseline}
    runs: dict[tuple[str, str, str], list] = {
        (label, fmt, tag): [] for label in bundles for fmt in formats for tag in sources
    }
    for _ in range(repeats):
        for fmt in formats:
            for tag, src in sources.items():
                for label, bundle in bundles.items():
                    out = workdir / f"out.{fmt}"
                    runs[label, fmt, tag].append(_child(
                        [sys.executable, "-m", "binclf", "predict", str(bundle), str(files[fmt]), "-o", str(out)],
                        src=src,
                    ))
    for tag in sources:
        for label, bundle in bundles.items():
            for fmt in formats:
                done = runs[label, fmt, tag]
                cli_rate = statistics.median(r[2] for r in done) if all(r[2] for r in done) else float("nan")
                results.append({
                    "name": f"{fmt}, {label} bundle{tag}",
                    "rows_per_s": cli_rate,
                    "seconds": rows / cli_rate,
                    "process_s": statistics.median(r[0] for r in done),
                    "peak_mib": max(r[1] for r in done),
                    "cpu_s": statistics.median(r[3] for r in done),
                    "read_s": read_s[fmt],
                    "warm_s": warm_s[fmt],
                    "mlp_name": f"{fmt}, mlp bundle{tag}",
                })
    # Flat memory: the same chunk size on files of 20x and 40x its length.
    chunk = rows // 40
    flat = {}
    for fmt in formats if len(formats) > 1 else ():
        for label, src in (("20x", files[f"half_{fmt}"]), ("40x", files[fmt])):
            _, peak, _, _ = _child([sys.executable, "-m", "binclf", "predict", str(bundles["mlp"]), str(src), "-o",
                              str(workdir / f"out_flat.{fmt}"), "--batch-rows", str(chunk)])
            flat[f"{fmt} {label}"] = peak
    results.append({"flat": flat, "chunk": chunk})
    return results


def member_breakdown(bundle: str, parquet: str) -> dict[str, float]:
    """CPU microseconds per row of one bundle: ``binclf predict``'s whole work in this process, and its members' stages.

    ``whole``: user + system CPU of :meth:`Predictor.predict_file` on ``parquet``
    (after a first call that builds the members' plan), over its rows. Then the
    members alone on one core (``members``: :class:`binclf.infer.MemberPlan` on
    the first 262,144 rows, in its 4,096-row chunks), and inside them the stages
    of the PLE-MLPs that share their bins: ``bins`` (each number's bin and
    fraction, once for the group), ``lookups`` (the first layer: two
    ``embedding_bag`` sums a member) and ``layers`` (the hidden layers after it).
    Run in a fresh process (:func:`breakdown`): nothing else warm, one
    bundle at a time.
    """
    import resource
    import tempfile

    import pyarrow.parquet as pq

    from binclf import runtime
    from binclf.infer import _EVAL_ROWS, _PLEGroup, _PLETables
    from binclf.predictor import Predictor

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    P = Predictor.load(bundle)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.parquet"
        rows = P.predict_file(parquet, out)["rows"]
        c0 = cpu()
        P.predict_file(parquet, out)
        whole = (cpu() - c0) / rows * 1e6
    n = min(rows, 262_144)
    X = torch.from_numpy(P.transform(pq.read_table(parquet).slice(0, n).to_pandas()))
    plan = P._plan
    got = {"whole": whole, "members": 0.0, "bins": 0.0, "lookups": 0.0, "layers": 0.0}
    with torch.inference_mode(), runtime.torch_threads(1):
        plan(X[:_EVAL_ROWS])
        t0 = time.perf_counter()
        plan(X)
        got["members"] = (time.perf_counter() - t0) / n * 1e6
        for _, part in plan.parts:
            tables = part.tables if isinstance(part, _PLEGroup) else [part] if isinstance(part, _PLETables) else []
            for lo in range(0, n, _EVAL_ROWS) if tables else ():
                xb = X[lo : lo + _EVAL_ROWS, : tables[0].d]
                t0 = time.perf_counter()
                idx, frac = tables[0].bins(xb)
                got["bins"] += time.perf_counter() - t0
                for t in tables:
                    t0 = time.perf_counter()
                    z = t.first(xb, idx, frac)
                    t1 = time.perf_counter()
                    t.hidden(xb, z)
                    got["lookups"] += t1 - t0
                    got["layers"] += time.perf_counter() - t1
    for k in ("bins", "lookups", "layers"):
        got[k] *= 1e6 / n
    return got


def breakdown(bundles: dict[str, Path], parquet: Path) -> None:
    """Prints where each bundle's prediction spends its CPU, and what that allows the default bundle's ratio to reach."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    got = {}
    for label, bundle in bundles.items():  # one fresh process each, one after the other
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            got[label] = pool.submit(member_breakdown, str(bundle), str(parquet)).result()
    mlp, ens = got["mlp"], got["default"]
    rest = {k: v["whole"] - v["members"] for k, v in got.items()}
    print()
    print(f"where binclf predict's CPU goes, microseconds per row ({parquet.name}; whole = user + system CPU of "
          "Predictor.predict_file in a fresh process,")
    print("members = the members alone on one core, in 4,096-row chunks; rest = whole - members: reading, "
          "preprocessing, calibrating, deciding, writing)")
    print(f"{'stage':<58}{'mlp bundle':>12}{'default bundle':>16}")
    lines = [
        ("whole prediction", "whole"),
        ("  members", "members"),
        ("    PLE-MLP bag: bins and fractions (once for the bag)", "bins"),
        ("    PLE-MLP bag: first layers (2 embedding_bag a member)", "lookups"),
        ("    PLE-MLP bag: hidden layers", "layers"),
    ]
    for name, key in lines:
        print(f"{name:<58}{mlp[key]:>12.2f}{ens[key]:>16.2f}")
    print(f"{'  rest':<58}{rest['mlp']:>12.2f}{rest['default']:>16.2f}")
    ratio = mlp["whole"] / ens["whole"]
    allowed = 2 * mlp["whole"] - rest["default"]
    bound = mlp["whole"] / (rest["default"] + ens["lookups"] + ens["layers"])
    print(f"CPU ratio mlp / default: {ratio:.0%}; 50% needs the default bundle's members at <= {allowed:.2f} us per "
          f"row (now {ens['members']:.2f});")
    print(f"with its bins and everything else in its members free, lookups and hidden layers as they are: "
          f"{bound:.0%}")


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs per contender (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-predict", action="store_true", help="skip the prediction benchmark")
    ap.add_argument("--predict-only", action="store_true", help="run the prediction benchmark only")
    ap.add_argument("--no-csv", action="store_true", help="prediction: Parquet only (no CSV, no flat-memory runs)")
    ap.add_argument("--no-others", action="store_true", help="time binclf and the DataLoader loop only")
    ap.add_argument("--no-busy", action="store_true", help="skip the rows with one busy process beside")
    ap.add_argument("--predict-rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-src", default=None, metavar="DIR",
                    help="prediction: also run each command with PYTHONPATH=DIR (another checkout's src), interleaved")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/binclf-throughput"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.predict_only:
        print_predict(args)
        return

    import binclf
    from binclf.train import fused_step
    from binclf.nn.models import MLP
    from binclf.train.trainer import TrainConfig, Trainer

    X, y = make_data(N_ROWS)
    Xv, yv = make_data(N_ROWS // 5, seed=2)

    print(f"torch {torch.__version__}, binclf {binclf.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} threads, CPU: {cpu_model()} ({os.cpu_count()} logical)")
    print(f"workload: {N_ROWS:,} rows x {N_FEATURES}, MLP {N_FEATURES}-{HIDDEN[0]}-{HIDDEN[1]}-1, BatchNorm, ReLU, "
          f"Dropout {DROPOUT}, BCE with logits, AdamW, batch {BATCH}, one epoch after a warm-up; "
          f"median of {args.repeats}")

    # Warm-up: binclf's first fit compiles its training step (reported).
    t0 = time.perf_counter()
    Trainer(TrainConfig(batch_size=BATCH, max_epochs=1, verbose=False, compile=True)).fit(MLP(N_FEATURES), X, y)
    first_fit = time.perf_counter() - t0
    compiled = fused_step.compiled_step_ready()
    run_dataloader(X[:20_000], y[:20_000])

    timings: dict[str, list[float]] = {"binclf": [], "torch DataLoader loop": []}
    binclf_runs: list[dict] = []
    if not args.no_others:
        timings |= {"skorch": [], "sklearn MLPClassifier": []}
        run_skorch(X[:20_000], y[:20_000])
    # Interleave the contenders so a burst of machine load hits all of them alike.
    # A pause before each: BLAS and OpenMP worker threads spin for a while after
    # their last call and would otherwise steal the cores from the next contender.
    for _ in range(args.repeats):
        time.sleep(1)
        binclf_runs.append(run_binclf(X, y))
        timings["binclf"].append(binclf_runs[-1]["seconds"])
        time.sleep(1)
        timings["torch DataLoader loop"].append(run_dataloader(X, y))
        if not args.no_others:
            time.sleep(1)
            timings["skorch"].append(run_skorch(X, y))
            time.sleep(1)
            timings["sklearn MLPClassifier"].append(run_sklearn(X, y))
    time.sleep(1)
    valid = [run_binclf(X, y, valid=(Xv, yv)) for _ in range(args.repeats)]
    choices = binclf_runs[-1]["choices"] if binclf_runs else {}

    # One busy process beside: binclf (whose probe sees it) and the DataLoader loop on the same ceiling.
    rows = {k: N_ROWS for k in timings}
    busy_b, busy_d = "binclf, one busy process beside it", "DataLoader loop, one busy process beside it"
    timings[busy_b], timings[busy_d] = [], []
    rows[busy_b], rows[busy_d] = N_ROWS, N_ROWS // 10
    busy_runs = []
    if not args.no_busy:
        time.sleep(1)
        with BusyProcess():
            for _ in range(args.repeats):
                busy_runs.append(run_binclf(X, y))
                timings[busy_b].append(busy_runs[-1]["seconds"])
                timings[busy_d].append(run_dataloader(X[: rows[busy_d]], y[: rows[busy_d]]))
    timings = {k: v for k, v in timings.items() if v}

    rate = {k: rows[k] / statistics.median(v) for k, v in timings.items()}
    base = rate["torch DataLoader loop"]
    print()
    print(f"{'contender':<46}{'samples/s':>12}{'vs DataLoader':>15}   epochs (s)")
    for name, r in rate.items():
        ref = rate[busy_d] if name == busy_b else base
        print(f"{name:<46}{r:>12,.0f}{r / ref:>14.1f}x   {' '.join(f'{t:.2f}' for t in timings[name])}")
    if busy_b in rate:
        print(f"(the busy rows' ratio is against the DataLoader loop beside the same busy process; "
              f"binclf under it: {rate['binclf'] / rate[busy_b]:.2f}x slower than unloaded)")

    gflops = matmul_gflops()
    fps = flops_per_sample()
    roof = gflops * 1e9 / fps
    print()
    print(f"roofline: {gflops:,.0f} GFLOP/s float32 matmul / {fps:,} FLOPs per sample (fwd+bwd matmuls) "
          f"= {roof:,.0f} samples/s; binclf reaches {rate['binclf'] / roof:.0%}")
    vfrac = statistics.median(v["valid_seconds"] / v["seconds"] for v in valid)
    print(f"validation on {len(Xv):,} rows each epoch: {statistics.median(v['valid_seconds'] for v in valid) * 1e3:.0f} ms"
          f" = {vfrac:.1%} of the epoch")
    print(f"binclf first fit (compiles the training step{'' if compiled else ': unavailable, eager'}): "
          f"{first_fit:.1f} s")
    print()
    print("binclf's measured choices (binclf.probe; the last unloaded run, then the last run beside the busy process):")
    for label, got in (("unloaded", choices), ("busy", busy_runs[-1]["choices"] if busy_runs else {})):
        for kind in ("matmul", "threads", "step"):
            if kind in got:
                print(f"  {label:<9}{kind:<8} {got[kind]}")
    loaded = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at the end: {loaded:.2f} on {os.cpu_count()} logical CPUs (above ~0.5 the figures are noisy)")
    print()
    busy_ratio = rate["binclf"] / rate[busy_b] if busy_b in rate else float("nan")
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"targets: training >= 5x the DataLoader loop: {rate['binclf'] / base:.1f}x {met(rate['binclf'] >= 5 * base)}; "
          f">= 25% of the matmul roofline: {rate['binclf'] / roof:.0%} {met(rate['binclf'] >= 0.25 * roof)}; "
          f"beside one busy process <= 2x slower: {busy_ratio:.2f}x {met(busy_ratio <= 2)}")

    if args.no_predict:
        return
    print()
    print_predict(args)


def print_predict(args: argparse.Namespace) -> None:
    formats = ("parquet",) if args.no_csv else ("parquet", "csv")
    results = bench_predict(args.workdir, args.predict_rows, max(1, min(args.repeats, 3)), formats=formats,
                            baseline=args.baseline_src)
    print(f"prediction, {args.predict_rows:,} rows x {N_FEATURES}: python -m binclf predict BUNDLE FILE -o OUT "
          "in a child process; rows/s and seconds as the command reports them (first read to last write),")
    print("process = the whole command with interpreter start and imports; pyarrow read = reading the whole file "
          "with pyarrow alone in a fresh process (imports not counted), as binclf predict runs;")
    print("warm read = the same read repeated in this process; ratio = seconds / pyarrow read")
    print("bundles: 'mlp' = the workload's MLP (binclf train --model mlp), 'default' = binclf train's default model;")
    print("vs mlp = rows/s / the mlp bundle's rows/s (same format, same code)"
          + (f"; (baseline) = the same commands with PYTHONPATH={args.baseline_src}, in the same rounds"
             if args.baseline_src else ""))
    rates = {r["name"]: r["rows_per_s"] for r in results[:-1]}
    width = max(24, *(len(r["name"]) + 2 for r in results[:-1]))
    print("cpu s = the command's user + system CPU seconds (the work done, whatever the machine's load)")
    print(f"{'binclf predict':<{width}}{'rows/s':>12}{'vs mlp':>8}{'seconds':>10}{'process s':>11}{'cpu s':>8}"
          f"{'peak MiB':>10}"
          f"{'pyarrow read s':>16}{'ratio':>8}{'warm read s':>13}{'ratio':>8}")
    for r in results[:-1]:
        print(f"{r['name']:<{width}}{r['rows_per_s']:>12,.0f}{r['rows_per_s'] / rates[r['mlp_name']]:>7.0%} "
              f"{r['seconds']:>10.2f}{r['process_s']:>11.2f}{r['cpu_s']:>8.2f}"
              f"{r['peak_mib']:>10.0f}{r['read_s']:>16.2f}{r['seconds'] / r['read_s']:>7.2f}x"
              f"{r['warm_s']:>13.2f}{r['seconds'] / r['warm_s']:>7.2f}x")
    for fmt in formats:
        share = rates[f"{fmt}, default bundle"] / rates[f"{fmt}, mlp bundle"]
        print(f"{fmt}: the default bundle predicts at {share:.0%} of the mlp bundle's rows/s")
        if args.baseline_src:
            for label in BUNDLES:
                gain = rates[f"{fmt}, {label} bundle"] / rates[f"{fmt}, {label} bundle (baseline)"]
                print(f"{fmt}, {label} bundle: {gain:.2f}x the baseline's rows/s")
    flat = results[-1]
    if flat["flat"]:
        print(f"peak memory, mlp bundle, --batch-rows {flat['chunk']:,}: "
              + ", ".join(f"{k} the chunk: {v:.0f} MiB" for k, v in flat["flat"].items()))
    breakdown({label: args.workdir / f"bundle-{label}" for label in BUNDLES},
              prepare_files(args.workdir, args.predict_rows)["parquet"])


if __name__ == "__main__":
    main()
