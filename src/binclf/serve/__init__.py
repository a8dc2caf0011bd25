"""``binclf serve``: an HTTP server over a bundle's :class:`~binclf.predictor.Predictor` (FastAPI + uvicorn).

Endpoints: ``POST /predict``, ``POST /invocations`` (MLflow scoring protocol),
``GET /health``, ``GET /metadata``, ``GET /metrics`` (Prometheus) and the OpenAPI
schema at ``/openapi.json``. An image bundle's ``POST /predict`` takes image
uploads, base64 JSON or one image body (:mod:`binclf.serve.images`) and has no
``/invocations``. Needs the ``serve`` extra: ``pip install binclf[serve]``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from binclf.errors import BinclfError, ConfigError

__all__ = ["run", "create_app", "parse_size"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30}


def parse_size(text: str | int) -> int:
    """Bytes from ``"10MB"``, ``"512KiB"``, ``"1e6"``-free plain ``"1000000"`` or an int (KB = 1000, KiB = 1024)."""
    if isinstance(text, int):
        size = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise ConfigError(f"--max-body {text!r} is not a size; write e.g. 10MB, 512KiB or 1000000")
        size = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if size < 1:
        raise ConfigError(f"--max-body must be at least 1 byte, got {text!r}")
    return size


def _require_serve_extra() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise BinclfError(
            f"binclf serve needs {', '.join(missing)}, not installed here; install them with: pip install 'binclf[serve]'"
        )


def create_app(predictor: Any, **kwargs: Any) -> Any:
    """The FastAPI app over ``predictor`` (see :func:`binclf.serve.app.create_app`)."""
    _require_serve_extra()
    from binclf.serve.app import create_app as _create

    return _create(predictor, **kwargs)


def _prepare_worker(threads: int) -> int:
    """One server process's torch threads (intra-op ``threads``, inter-op 1); returns the old intra-op count."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel work; then it stays as it is
        pass
    _setup_logging()
    return old


def _setup_logging() -> None:
    logger = logging.getLogger("binclf.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run(
    bundle: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_body: int | str = "10MB",
    threads: int = 1,
    access_log: bool = True,
) -> None:
    """Serve ``bundle`` over HTTP until interrupted (Ctrl-C or SIGTERM).

    Parameters
    ----------
    bundle : a bundle directory; loaded (and hash-checked) once per worker, never written.
    host, port : where to listen (default: loopback only).
    workers : server processes; each holds its own copy of the model.
    max_body : the largest request body, in bytes or as ``"10MB"``; larger ones get 413.
    threads : torch intra-op threads per worker (default 1: requests are small,
        and ``--workers`` is the way to use more cores).
    access_log : one line per request on stderr (method, path, status, rows, ms).
    """
    _require_serve_extra()
    import uvicorn

    from binclf.bundle import read_meta
    from binclf.predictor import Predictor
    from binclf.serve.app import ENV_BUNDLE, ENV_MAX_BODY, ENV_THREADS

    limit = parse_size(max_body)
    if workers < 1 or threads < 1:
        raise ConfigError(f"--workers and --threads must be at least 1, got {workers} and {threads}")
    old_threads = _prepare_worker(threads)
    if not access_log:
        logging.getLogger("binclf.serve.access").setLevel(logging.WARNING)
    try:
        predictor = Predictor.load(bundle)  # fails here, before listening, on a bad bundle
        from binclf.serve.app import check_servable

        check_servable(predictor)
        sha = read_meta(bundle)["weights"]["sha256"]
        log = logging.getLogger("binclf.serve")
        log.info(
            "bundle %s (weights sha256 %s...), %d worker(s), %d torch thread(s) each, bodies up to %s bytes",
            bundle, sha[:12], workers, threads, f"{limit:,}",
        )
        common = dict(host=host, port=port, access_log=False, server_header=False, log_level="info")
        if workers == 1:
            app = create_app(predictor, max_body=limit, weights_sha256=sha)
            uvicorn.run(app, **common)
        else:
            del predictor
            os.environ[ENV_BUNDLE] = str(Path(bundle).resolve())
            os.environ[ENV_MAX_BODY] = str(limit)
            os.environ[ENV_THREADS] = str(threads)
            uvicorn.run("binclf.serve.app:app_from_env", factory=True, workers=workers, **common)
    finally:
        import torch

        torch.set_num_threads(old_threads)
