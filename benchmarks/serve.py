"""`binclf serve` against a plain FastAPI handler (DataFrame + Predictor per request), in the same run.

    python benchmarks/serve.py [--bundle DIR --data CSV --target COL] [--requests 10000]

Starts both servers on loopback (one worker, one torch thread each) and drives
them with a small asyncio HTTP/1.1 client (keep-alive connections, pre-built
requests, so the client costs little of the machine's CPU):

* single-row latency at concurrency 1: p50 / p99 over ``--single`` requests;
* rows/s with 1,000-row requests (concurrency 2);
* ``--requests`` requests at concurrency 32, a quarter of them invalid in nine
  ways (missing column, text in a number, nested object, infinity, malformed
  JSON, empty list, wrong shape, wrong content type, body over the limit):
  counts 5xx, invalid answered 4xx, valid answered 200 with the right
  probabilities (to 1e-6, against ``Predictor`` in this process on the same
  rows, batched as the requests batch them).

Prints one table. Bounded: every phase stops at its request count or at
``--max-seconds`` in all, and both servers are stopped at the end.
Default bundle: the default (cross-fitted, ten-member) bundle of
tests/fixtures, the one users serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 1_000_000


# --------------------------------------------------------------------------- #
# the plain handler users write by hand
# --------------------------------------------------------------------------- #

def baseline_server(bundle: str, port: int) -> None:
    import pandas as pd
    import torch
    import uvicorn
    from fastapi import FastAPI

    from binclf import Predictor

    torch.set_num_threads(1)
    predictor = Predictor.load(bundle)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(rows: list[dict]) -> dict:
        df = pd.DataFrame(rows)
        proba = predictor.predict_proba(df)
        labels = predictor.predict(df)
        return {"predictions": [{"probability": float(p), "prediction": str(label)} for p, label in zip(proba, labels)]}

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


# --------------------------------------------------------------------------- #
# a light HTTP/1.1 client
# --------------------------------------------------------------------------- #

def request_bytes(port: int, path: str, body: bytes, ctype: str = "application/json") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "connection" and "close" in v.lower():
                close = True
        body = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def drive(port: int, jobs: list, concurrency: int, deadline: float) -> list[tuple[int, bytes, float]]:
    """Send ``jobs`` (raw request bytes) over ``concurrency`` connections; (status, body, seconds) per job."""
    results: list = [None] * len(jobs)
    queue = iter(range(len(jobs)))

    async def worker() -> None:
        conn = Conn(port)
        try:
            for i in queue:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    status, body = await conn.send(jobs[i])
                except (ConnectionError, asyncio.IncompleteReadError):
                    conn.close()
                    status, body = -1, b""
                results[i] = (status, body, time.perf_counter() - t0)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]


# --------------------------------------------------------------------------- #
# the run
# --------------------------------------------------------------------------- #

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited early: {' '.join(cmd)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return proc
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit("server did not start")
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def invalid_bodies(record: dict, numeric: str, categorical: str | None) -> list[tuple[str, bytes, str]]:
    """(kind, body, content type): nine ways to be wrong."""
    missing = {k: v for k, v in record.items() if k != numeric}
    nested_col = categorical or numeric
    return [
        ("missing column", json.dumps([missing]).encode(), "application/json"),
        ("text in number", json.dumps([{**record, numeric: "lots"}]).encode(), "application/json"),
        ("nested object", json.dumps([{**record, nested_col: {"a": [1]}}]).encode(), "application/json"),
        ("infinity", json.dumps([record]).replace(json.dumps(record[numeric]), "1e999", 1).encode()
         if isinstance(record[numeric], (int, float)) else b"[{\"x\": 1e999}]", "application/json"),
        ("malformed JSON", json.dumps([record]).encode()[:-3], "application/json"),
        ("empty list", b"[]", "application/json"),
        ("wrong shape", json.dumps({"data": [list(record.values())]}).encode(), "application/json"),
        ("content type", json.dumps([record]).encode(), "text/plain"),
        ("too large", b"[" + b" " * (MAX_BODY + 10) + b"]", "application/json"),
    ]


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "tests/fixtures/bundle-v1-biopsy-auto"))
    ap.add_argument("--data", default=str(ROOT / "tests/data/biopsy.csv"))
    ap.add_argument("--target", default="class")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--single", type=int, default=2_000, help="single-row requests at concurrency 1")
    ap.add_argument("--batches", type=int, default=60, help="1,000-row requests")
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--baseline-server", nargs=2, metavar=("BUNDLE", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server[0], int(args.baseline_server[1]))
        return

    sys.path.insert(0, str(ROOT / "src"))
    from binclf import Predictor, read_table

    deadline = time.monotonic() + args.max_seconds
    predictor = Predictor.load(args.bundle)
    df = read_table(args.data).drop(columns=[args.target], errors="ignore")[predictor.schema.names]
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
               for r in df.to_dict("records")]
    # What `binclf predict` gives for the same rows in the same batches: float32 logits can
    # differ in the last bits between a 1-row and a many-row batch, and a steep isotonic
    # step turns 3e-8 in a logit into 2e-6 in a probability (participation, row 439).
    want = np.array([predictor.predict_proba(df.iloc[[i]])[0] for i in range(len(df))])
    if not predictor.schema.numeric:
        raise SystemExit("the invalid mix needs a bundle with a numeric column (text in a number, infinity)")
    numeric = predictor.schema.numeric[0]
    categorical = predictor.schema.categorical[0] if predictor.schema.categorical else None
    rng = random.Random(0)
    big_rows = [rng.randrange(len(records)) for _ in range(1000)]
    big_body = json.dumps([records[i] for i in big_rows]).encode()
    big_want = predictor.predict_proba(df.iloc[big_rows])

    servers = {
        "binclf serve": lambda port: [sys.executable, "-m", "binclf", "serve", args.bundle, "--port", str(port),
                                      "--max-body", str(MAX_BODY)],
        "plain FastAPI + DataFrame": lambda port: [sys.executable, __file__, "--baseline-server", args.bundle,
                                                   str(port)],
    }
    rows_out = []
    for name, cmd in servers.items():
        port = free_port()
        proc = start(cmd(port), port)
        try:
            row = {"server": name}
            # single-row latency, concurrency 1 (after a warm-up)
            single = [request_bytes(port, "/predict", json.dumps([records[i % len(records)]]).encode())
                      for i in range(args.single)]
            asyncio.run(drive(port, single[:200], 1, deadline))
            res = asyncio.run(drive(port, single, 1, deadline))
            lat = [s for st, _, s in res if st == 200]
            row["p50"], row["p99"] = percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3
            # 1,000-row requests
            jobs = [request_bytes(port, "/predict", big_body)] * args.batches
            t0 = time.perf_counter()
            res = asyncio.run(drive(port, jobs, 2, deadline))
            took = time.perf_counter() - t0
            ok = [b for st, b, _ in res if st == 200]
            right = all(np.allclose([p["probability"] for p in json.loads(b)["predictions"]], big_want, rtol=0,
                                    atol=1e-6) for b in ok)
            row["rows/s"] = 1000 * len(ok) / took
            row["batch ok"] = len(ok) == len(res) and right
            # the mixed load at concurrency 32
            bad = invalid_bodies(records[0], numeric, categorical)
            jobs, kinds = [], []
            for k in range(args.requests):
                if k % 4 == 3:
                    kind, body, ctype = bad[(k // 4) % len(bad)]
                    jobs.append(request_bytes(port, "/predict", body, ctype))
                    kinds.append(-1)
                else:
                    i = rng.randrange(len(records))
                    jobs.append(request_bytes(port, "/predict", json.dumps([records[i]]).encode()))
                    kinds.append(i)
            t0 = time.perf_counter()
            res = asyncio.run(drive(port, jobs, 32, deadline))
            took = time.perf_counter() - t0
            n5xx = invalid4xx = valid_right = n_invalid = n_valid = failed = 0
            wrong: list = []
            for (status, body, _), i in zip(res, kinds):
                if status >= 500:
                    n5xx += 1
                elif status < 0:
                    failed += 1
                if i < 0:
                    n_invalid += 1
                    invalid4xx += 400 <= status < 500
                else:
                    n_valid += 1
                    p = json.loads(body)["predictions"][0]["probability"] if status == 200 else None
                    if p is not None and abs(p - want[i]) <= 1e-6:
                        valid_right += 1
                    else:
                        wrong.append((status, body[:200], i))
            row.update(sent=len(res), invalid=n_invalid, n5xx=n5xx, failed=failed,
                       invalid4xx=f"{invalid4xx}/{n_invalid}", valid200=f"{valid_right}/{n_valid}",
                       rps=len(res) / took)
            rows_out.append(row)
            for status, body, i in wrong[:5]:
                print(f"{name}: a valid request (row {i}) answered {status}: {body!r}", file=sys.stderr)
        finally:
            stop(proc)

    cpu = cpu_model()
    print(f"\nbinclf serve benchmark: {cpu}, {os.cpu_count()} cores; bundle {Path(args.bundle).name} "
          f"({len(predictor.members)} member(s)); one worker, one torch thread each; loopback\n")
    head = ("server", "1-row p50 ms", "1-row p99 ms", "rows/s (1,000-row)", "mixed req/s", "sent",
            "invalid", "5xx", "invalid -> 4xx", "valid -> 200, right p", "conn. errors")
    table = [head] + [
        (r["server"], f"{r['p50']:.2f}", f"{r['p99']:.2f}",
         f"{r['rows/s']:,.0f}" + ("" if r["batch ok"] else " (WRONG)"), f"{r['rps']:,.0f}", str(r["sent"]),
         f"{r['invalid']} ({r['invalid'] / max(r['sent'], 1):.0%})", str(r["n5xx"]), r["invalid4xx"],
         r["valid200"], str(r["failed"]))
        for r in rows_out
    ]
    widths = [max(len(row[j]) for row in table) for j in range(len(head))]
    for k, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
