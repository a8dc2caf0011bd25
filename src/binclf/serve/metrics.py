"""Prometheus metrics of one server process (prometheus_client): requests, rows, latency, errors.

Each app gets its own registry, so two apps in one process (tests) do not
collide. With ``--workers N`` each worker counts its own requests; set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before starting the server
to have ``/metrics`` add up every worker (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["ServeMetrics", "CONTENT_TYPE_LATEST"]

# Latency buckets from 0.5 ms: single-row requests take a few ms, 1,000-row ones tens.
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServeMetrics:
    """The counters and the latency histogram; ``paths`` bounds the ``path`` label's values."""

    def __init__(self, paths: frozenset[str]) -> None:
        self.paths = paths
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.requests = Counter(
            "binclf_requests", "HTTP requests answered, by path, method and status.",
            ["path", "method", "status"], registry=self.registry,
        )
        self.rows = Counter("binclf_rows", "Rows predicted, by path.", ["path"], registry=self.registry)
        self.latency = Histogram(
            "binclf_request_duration_seconds", "Time from the request's arrival to the end of the answer, by path.",
            ["path"], buckets=_BUCKETS, registry=self.registry,
        )
        self.errors = Counter(
            "binclf_errors", "Answers with status >= 400, by path and status.", ["path", "status"],
            registry=self.registry,
        )

    def label(self, path: str) -> str:
        """The ``path`` label: a route of the app, or ``other`` (unknown paths must not grow the label set)."""
        return path if path in self.paths else "other"

    def observe(self, *, path: str, method: str, status: int, rows: int, seconds: float) -> None:
        p = self.label(path)
        self.requests.labels(p, method if method in ("GET", "POST", "HEAD") else "other", str(status)).inc()
        self.latency.labels(p).observe(seconds)
        if rows:
            self.rows.labels(p).inc(rows)
        if status >= 400:
            self.errors.labels(p, str(status)).inc()

    def text(self) -> bytes:
        """The Prometheus text exposition of this process (or of every worker, in multiprocess mode)."""
        if self._multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
