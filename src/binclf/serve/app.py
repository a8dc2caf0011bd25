"""The FastAPI app over one :class:`~binclf.predictor.Predictor`: endpoints, limits, errors, metrics, access log.

Requests never reach pandas: a body is parsed by :class:`~binclf.serve.rows.RowDecoder`
into columns, ``Preprocessor.transform_arrays`` makes the model inputs, and the
predictor's own ``proba_from_inputs`` and ``decide`` give what ``binclf predict``
gives. Small bodies are predicted on the event loop (a thread hop costs more
than their prediction); larger ones in a worker thread, so the loop keeps
answering health checks and small requests meanwhile.

Every error is an answer with a JSON body ``{"detail": ..., "problems": [...]}``
and no traceback or file path: bad input is 422 (each problem naming its row and
column), a body over the limit 413, an unsupported content type 415. Anything
unexpected is logged on the server and answered 500 with a generic body.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Annotated, Any

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from binclf import __version__
from binclf.errors import DataError
from binclf.predictor import ABSTAIN, Predictor
from binclf.serve.metrics import CONTENT_TYPE_LATEST, ServeMetrics
from binclf.serve.rows import Columns, InputError, Problem, RowDecoder
from binclf.serve.schema import ErrorBody, Health, InvocationsResponse, PredictResponse, request_models

try:  # the serve extra's fast JSON; the json module otherwise
    import orjson
except ImportError:  # pragma: no cover - depends on the installation
    orjson = None

__all__ = ["create_app", "app_from_env", "DEFAULT_MAX_BODY", "ENV_BUNDLE", "ENV_MAX_BODY", "ENV_THREADS"]

DEFAULT_MAX_BODY = 10_000_000
# Bodies up to this size are predicted on the event loop: a single-row request
# takes ~0.3 ms there, and a hop to a worker thread and back costs ~0.1-0.2 ms
# more on top (see benchmarks/serve.py).
INLINE_BYTES = 16 * 1024
# Large requests run in at most this many worker threads at once: each holds the
# GIL for its Python parts, so more threads would only interleave, not overlap.
_THREADS = 2
ENV_BUNDLE, ENV_MAX_BODY, ENV_THREADS = "BINCLF_SERVE_BUNDLE", "BINCLF_SERVE_MAX_BODY", "BINCLF_SERVE_THREADS"
_INVOCATION_KEYS = ("dataframe_records", "dataframe_split", "instances", "inputs")

log = logging.getLogger("binclf.serve")
access_log = logging.getLogger("binclf.serve.access")


class ServeError(Exception):
    """An answer other than 200, with its status, one-line detail and problems."""

    def __init__(self, status: int, detail: str, problems: list[Problem] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = problems or []


def _error_response(status: int, detail: str, problems: list[Problem] | None = None, headers=None) -> Response:
    body = {"detail": detail, "problems": [p.to_dict() for p in problems or []]}
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def _answer_error(exc: Exception) -> Response:
    if isinstance(exc, InputError):
        return _error_response(422, str(exc), exc.problems)
    assert isinstance(exc, ServeError)
    return _error_response(exc.status, exc.detail, exc.problems)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (orjson when installed: ~2x faster for 1,000 predictions)."""
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":")).encode()


class _ConstantError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _ConstantError(name)


def parse_json(body: bytes) -> Any:
    """The JSON document of ``body``; every way it can be malformed is an InputError.

    orjson (the serve extra) parses 1,000 records ~2.5x faster than the json module;
    what it refuses is parsed again by the json module, whose messages say where
    the body goes wrong (and which reads 1e999 as infinity, for the decoder to name).
    """
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except _ConstantError as exc:
        raise InputError.one(f"{exc} is not a JSON number; send a finite number, or null for a missing value") from None
    except json.JSONDecodeError as exc:
        raise InputError.one(f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError:
        raise InputError.one("the body is not UTF-8 text; send UTF-8 JSON") from None
    except RecursionError:
        raise InputError.one("the JSON body is nested too deeply; send records of plain values") from None


class Answers:
    """The decisions part every server shares: probabilities and decisions -> the ``predictions`` items."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        t = predictor.target
        self._labels = {1: t.positive, 0: t.negative, -1: ABSTAIN}
        band = predictor.threshold.abstain if predictor.threshold is not None else None
        self.band = None if band is None else [float(band["low"]), float(band["high"])]

    def _items(self, proba: np.ndarray, decisions: np.ndarray, with_abstain: bool) -> list[dict[str, Any]]:
        if not np.isfinite(proba).all():
            raise RuntimeError("the model gave a non-finite probability")
        lab = self._labels
        if with_abstain:
            return [{"probability": p, "prediction": lab[d], "abstain": d == -1}
                    for p, d in zip(proba.tolist(), decisions.tolist())]
        return [{"probability": p, "prediction": lab[d]} for p, d in zip(proba.tolist(), decisions.tolist())]

    def answer(self, proba: np.ndarray, threshold: float | None) -> bytes:
        """``{"predictions": [...], "threshold": t}`` (and ``abstain_band``) for probabilities ``(n,)``."""
        decisions = self.predictor.decide(proba, threshold=threshold)
        with_abstain = threshold is None and self.band is not None
        answer: dict[str, Any] = {"predictions": self._items(proba, decisions, with_abstain),
                                  "threshold": self.predictor.effective_threshold(threshold)}
        if with_abstain:
            answer["abstain_band"] = self.band
        return dumps(answer)


class Service(Answers):
    """What the endpoints do, without HTTP: body bytes in, JSON bytes and a row count out."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__(predictor)
        self.decoder = RowDecoder(predictor.preprocessor)

    # -- the prediction --------------------------------------------------------------
    def predict(self, columns: Columns, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities and decisions (1, 0, -1 = abstain), both ``(n,)``."""
        try:
            X = self.predictor.preprocessor.transform_arrays(columns.numbers, columns.codes)
        except DataError as exc:  # the decoder already refuses what this could refuse
            raise InputError.one(str(exc)) from None
        proba = self.predictor.proba_from_inputs(X)
        return proba, self.predictor.decide(proba, threshold=threshold)

    # -- the endpoints' work -------------------------------------------------------
    def predict_body(self, kind: str, body: bytes, threshold: float | None) -> tuple[bytes, int]:
        """``POST /predict``: JSON records, ``{"rows": [...]}`` or CSV -> the answer's JSON and row count."""
        if kind == "csv":
            columns = self.decoder.csv(body)
        else:
            payload = parse_json(body)
            if isinstance(payload, dict):
                extra = sorted(set(payload) - {"rows"})
                if "rows" not in payload or extra:
                    raise InputError.one(
                        "the body should be a list of records or {\"rows\": [records]}; "
                        + (f"found the key(s) {', '.join(map(repr, extra[:5]))}" if extra else "'rows' is missing")
                    )
                columns = self.decoder.records(payload["rows"], what="'rows'")
            else:
                columns = self.decoder.records(payload)
        proba, _ = self.predict(columns, threshold)
        return self.answer(proba, threshold), columns.n

    def invocations_body(self, kind: str, body: bytes) -> tuple[bytes, int]:
        """``POST /invocations`` (MLflow scoring protocol) -> the answer's JSON and row count."""
        threshold = None
        if kind == "csv":
            columns = self.decoder.csv(body)
        else:
            payload = parse_json(body)
            columns, threshold = self._mlflow(payload)
        proba, decisions = self.predict(columns, threshold)
        with_abstain = threshold is None and self.band is not None
        return dumps({"predictions": self._items(proba, decisions, with_abstain)}), columns.n

    def _mlflow(self, payload: Any) -> tuple[Columns, float | None]:
        expected = ", ".join(_INVOCATION_KEYS)
        if not isinstance(payload, dict):
            raise InputError.one(f"the body should be an object with one of the keys {expected}")
        keys = [k for k in _INVOCATION_KEYS if k in payload]
        unknown = sorted(set(payload) - set(_INVOCATION_KEYS) - {"params"})
        if unknown:
            raise InputError.one(f"unknown key(s) {', '.join(map(repr, unknown[:5]))}; expected one of {expected}")
        if len(keys) != 1:
            found = "none of them" if not keys else "more than one: " + ", ".join(keys)
            raise InputError.one(f"the body should hold exactly one of {expected}; found {found}")
        threshold = self._params(payload.get("params"))
        key = keys[0]
        data = payload[key]
        if key == "dataframe_records":
            return self.decoder.records(data, what="dataframe_records"), threshold
        if key == "dataframe_split":
            if not isinstance(data, dict) or "columns" not in data or "data" not in data:
                raise InputError.one("dataframe_split should be an object with 'columns' and 'data'")
            extra = sorted(set(data) - {"columns", "data", "index"})
            if extra:
                raise InputError.one(f"dataframe_split has unknown key(s) {', '.join(map(repr, extra[:5]))}")
            return self.decoder.split(data["columns"], data["data"], what="dataframe_split"), threshold
        if isinstance(data, dict):
            return self.decoder.columnar(data, what=key), threshold
        if isinstance(data, list) and data and all(isinstance(r, list) for r in data):
            return self.decoder.positional(data, what=key), threshold
        return self.decoder.records(data, what=key), threshold

    @staticmethod
    def _params(params: Any) -> float | None:
        if params is None:
            return None
        if not isinstance(params, dict):
            raise InputError.one("params should be an object, e.g. {\"threshold\": 0.4}")
        unknown = sorted(set(params) - {"threshold"})
        if unknown:
            raise InputError.one(f"unknown param(s) {', '.join(map(repr, unknown[:5]))}; the only one is 'threshold'")
        t = params.get("threshold")
        if t is None:
            return None
        if type(t) not in (int, float) or not 0.0 <= t <= 1.0:
            raise InputError.one(f"params.threshold should be a number from 0 to 1, found {t!r:.40}")
        return float(t)


def _content_kind(request: Request) -> str:
    """``"json"`` or ``"csv"`` from the Content-Type header; anything else is 415."""
    raw = request.headers.get("content-type")
    if raw is None:
        raise ServeError(415, "the request has no Content-Type; send application/json or text/csv")
    media, _, params = raw.partition(";")
    media = media.strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        kind = "json"
    elif media in ("text/csv", "application/csv"):
        kind = "csv"
    else:
        raise ServeError(415, f"unsupported Content-Type {media[:60]!r}; send application/json or text/csv")
    for param in params.split(";"):
        k, _, v = param.partition("=")
        if k.strip().lower() == "charset" and v.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise ServeError(415, f"unsupported charset {v.strip()[:30]!r}; send UTF-8")
    return kind


async def _read_body(request: Request, max_body: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``max_body`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise ServeError(413, f"the body is {int(declared):,} bytes; this server takes at most {max_body:,}")
    chunks = []
    size = 0
    async for chunk in request.stream():  # counted as it arrives: chunked bodies have no Content-Length
        size += len(chunk)
        if size > max_body:
            raise ServeError(413, f"the body exceeds {max_body:,} bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Observe:
    """ASGI middleware: metrics and one access-log line per request, and the last-resort 500."""

    def __init__(self, app: Any, *, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        started = False

        async def observed_send(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:  # noqa: BLE001 - the last resort: logged here, never shown to the client
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            status = 500
            if not started:
                body = json.dumps({"detail": "internal server error; the server log has the details", "problems": []})
                await observed_send({"type": "http.response.start", "status": 500,
                                     "headers": [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body.encode()})
        finally:
            seconds = time.perf_counter() - t0
            rows = scope.get("binclf.rows", 0)
            method, path = scope.get("method", "?"), scope.get("path", "?")
            self.metrics.observe(path=path, method=method, status=status, rows=rows, seconds=seconds)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                who = f"{client[0]}:{client[1]} " if client else ""
                access_log.info("%s%s %s %d rows=%d %.2fms", who, method, path[:200], status, rows, seconds * 1e3)


def model_metadata(predictor: Predictor, sha256: str | None) -> dict[str, Any]:
    """The ``/metadata`` fields of every bundle kind: target, threshold, calibration, members, metrics, versions."""
    t = predictor.target
    thr = predictor.threshold
    member_groups = [
        {"model": name, "config": config, "count": count, "weight": weight}
        for name, config, count, weight in predictor.member_groups()
    ]
    return {
        "target": {"column": t.column, "positive": t.positive, "negative": t.negative},
        "threshold": predictor.effective_threshold(),
        "objective": thr.objective if thr is not None else None,
        "abstain_band": (
            [float(thr.abstain["low"]), float(thr.abstain["high"])] if thr is not None and thr.abstain else None
        ),
        "calibration": predictor.calibrator.to_dict().get("method"),
        "members": member_groups,
        "n_features": predictor.preprocessor.n_features_out_,
        "metrics": predictor.info.get("metrics", {}),
        "weights_sha256": sha256,
        "trained_with": predictor.info.get("versions"),
        "serving_with": _serving_versions(),
    }


def _metadata(predictor: Predictor, decoder: RowDecoder, sha256: str | None) -> dict[str, Any]:
    """``GET /metadata``: what a client needs to call the model, and what the model is."""
    levels = {st["name"]: st for st in predictor.preprocessor.categorical_}
    columns = []
    for spec in predictor.schema.columns:
        col: dict[str, Any] = {"name": spec.name, "role": spec.role, "dtype": spec.dtype,
                               "required": spec.name not in decoder.optional}
        if spec.role == "categorical":
            st = levels[spec.name]
            col["categories"] = list(st["levels"])
        columns.append(col)
    return {"columns": columns, **model_metadata(predictor, sha256)}


def _serving_versions() -> dict[str, str]:
    import platform

    import fastapi
    import torch

    return {"binclf": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "fastapi": fastapi.__version__, "python": platform.python_version()}


def check_servable(predictor: Any) -> None:
    """Table and image bundles are served; free-text bundles are refused in one line, before listening."""
    from binclf.errors import BundleError
    from binclf.image_predictor import ImagePredictor

    if isinstance(predictor, ImagePredictor):
        from binclf.serve.images import require_multipart

        require_multipart()  # before listening, also with --workers
        return
    from binclf.data.preprocessing import Preprocessor

    if type(predictor.preprocessor) is not Preprocessor:
        what = "has free-text columns" if hasattr(predictor.preprocessor, "text_") else "is not a table or image bundle"
        raise BundleError(
            f"this bundle {what}, which `binclf serve` cannot serve yet (only tables of numbers and "
            "categories, and images); predict with `binclf predict` or binclf.Predictor.load"
        )


def app_shell(
    *, title: str, description: str, metadata: dict[str, Any], routes: frozenset[str],
    bodies: dict[str, Any] | None = None,
) -> FastAPI:
    """The part every binclf server shares: metrics and access log (middleware), the error handlers,
    ``/health``, ``/metadata``, ``/metrics`` and the OpenAPI schema (with ``bodies`` as its components).

    ``routes`` are the prediction paths the caller adds (they label the metrics).
    """
    app = FastAPI(title=title, version=__version__, description=description)
    metrics = ServeMetrics(frozenset(["/health", "/metadata", "/metrics", "/openapi.json", "/docs"]) | routes)
    app.add_middleware(_Observe, metrics=metrics)

    health = json.dumps({"status": "ok"}).encode()
    meta = json.dumps(metadata, default=str).encode()

    @app.get("/health", response_model=Health, summary="200 once the bundle is loaded")
    async def get_health() -> Response:
        return Response(health, media_type="application/json")

    @app.get("/metadata", summary="Inputs, target labels, threshold, calibration, metrics, versions")
    async def get_metadata() -> Response:
        return Response(meta, media_type="application/json")

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics of this process")
    async def get_metrics() -> Response:
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors():
            loc = [str(x) for x in e.get("loc", ())]
            where = f"{loc[0]} parameter {'.'.join(loc[1:])!r}" if len(loc) > 1 else "the request"
            problems.append(Problem(None, None, f"{where}: {e.get('msg', 'invalid')}"))
        return _error_response(422, str(problems[0]) if problems else "invalid request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(exc.status_code, str(exc.detail), None, headers=getattr(exc, "headers", None))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, body in (bodies or {}).items():
                body = dict(body)
                components.update(body.pop("$defs", {}))
                components[name] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


ThresholdQuery = Annotated[
    float | None,
    Query(ge=0.0, le=1.0, allow_inf_nan=False, description="decide at this threshold instead of the bundle's"),
]


def create_app(
    predictor: Predictor, *, max_body: int = DEFAULT_MAX_BODY, weights_sha256: str | None = None
) -> FastAPI:
    """The FastAPI application serving ``predictor`` (a table bundle, or an image bundle: see
    :mod:`binclf.serve.images`).

    Parameters
    ----------
    predictor : the loaded bundle (never written).
    max_body : the largest request body accepted, in bytes (larger: 413).
    weights_sha256 : the bundle's weights hash, reported by ``/metadata``.
    """
    check_servable(predictor)
    from binclf.image_predictor import ImagePredictor

    if isinstance(predictor, ImagePredictor):
        from binclf.serve.images import create_image_app

        return create_image_app(predictor, max_body=max_body, weights_sha256=weights_sha256)
    service = Service(predictor)
    limiter = anyio.CapacityLimiter(_THREADS)
    app = app_shell(
        title="binclf model server",
        description=f"Predictions of a binclf bundle: target {predictor.target.column!r}, "
        f"positive class {predictor.target.positive!r}.",
        metadata=_metadata(predictor, service.decoder, weights_sha256),
        routes=frozenset(["/predict", "/invocations"]),
        bodies=request_models(predictor.preprocessor, service.decoder.optional),
    )

    errors = {
        413: {"model": ErrorBody, "description": "the body is larger than --max-body"},
        415: {"model": ErrorBody, "description": "the Content-Type is not JSON or CSV"},
        422: {"model": ErrorBody, "description": "the input cannot be predicted; each problem names its row and column"},
    }

    def body_doc(ref: str) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}},
            "text/csv": {"schema": {"type": "string"}},
        }}}

    async def run(request: Request, work: Any, *args: Any) -> Response:
        try:
            kind = _content_kind(request)
            body = await _read_body(request, max_body)
            if len(body) <= INLINE_BYTES:
                content, rows = work(kind, body, *args)
            else:
                content, rows = await anyio.to_thread.run_sync(work, kind, body, *args, limiter=limiter)
        except (ServeError, InputError) as exc:
            return _answer_error(exc)
        request.scope["binclf.rows"] = rows
        return Response(content, media_type="application/json")

    @app.post("/predict", response_model=PredictResponse, responses=errors, openapi_extra=body_doc("PredictBody"),
              summary="Predict records: a JSON list, {\"rows\": [...]}, or CSV with a header")
    async def predict(request: Request, threshold: ThresholdQuery = None) -> Response:
        return await run(request, service.predict_body, threshold)

    @app.post("/invocations", response_model=InvocationsResponse, responses=errors,
              openapi_extra=body_doc("InvocationsBody"),
              summary="MLflow scoring protocol: dataframe_records, dataframe_split, instances or inputs")
    async def invocations(request: Request) -> Response:
        return await run(request, service.invocations_body)

    return app


def app_from_env() -> FastAPI:
    """The app of one ``--workers`` process: the bundle and limits come from the environment."""
    from binclf.serve import _prepare_worker

    path = os.environ[ENV_BUNDLE]
    threads = int(os.environ.get(ENV_THREADS, "1"))
    _prepare_worker(threads)
    from binclf.bundle import read_meta

    predictor = Predictor.load(path)
    sha = read_meta(path)["weights"]["sha256"]
    return create_app(predictor, max_body=int(os.environ.get(ENV_MAX_BODY, DEFAULT_MAX_BODY)), weights_sha256=sha)

