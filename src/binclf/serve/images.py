"""The server of an image bundle: ``POST /predict`` with uploaded images or base64 JSON.

The app is the table server's shell (:func:`binclf.serve.app.app_shell`: the same
middleware, metrics, access log, error bodies, ``/health``, ``/metadata``,
``/metrics``) with an image ``/predict``. It takes three kinds of body:

* ``multipart/form-data``: one or several files in the form fields ``file`` or
  ``files`` (``curl -F file=@cat.png``), answered in the order sent;
* ``application/json``: ``{"images": ["<base64>", ...]}`` (a ``data:`` URL's
  ``data:image/png;base64,`` prefix is accepted too);
* ``image/*`` (``image/png``, ``image/jpeg`` ...): the bytes of one image.

Each image is decoded as ``binclf predict`` decodes a file
(:func:`binclf.io.images.decode_image_bytes`: the same conversion, EXIF
rotation and resizing), so it gets the same probability. An image that cannot
be read (not an image, truncated, empty, larger than :data:`MAX_PIXELS`) is a
422 naming it by its position in the request (from 0) and its file name.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response

from binclf.errors import BinclfError
from binclf.image_predictor import ImagePredictor
from binclf.io.images import decode_image_bytes
from binclf.serve.app import (
    Answers,
    ServeError,
    ThresholdQuery,
    _answer_error,
    _read_body,
    app_shell,
    model_metadata,
    parse_json,
)
from binclf.serve.rows import InputError, Problem
from binclf.serve.schema import ErrorBody, PredictResponse

__all__ = ["FIELDS", "MAX_PIXELS", "ImageService", "create_image_app"]

FIELDS = ("file", "files")
# The most pixels one image may declare: a few kB of PNG can declare gigabytes of pixels;
# 40 megapixels (a large camera photo) decode to at most 120 MB of RGB.
MAX_PIXELS = 40_000_000
_MAX_PROBLEMS = 20
_FORMATS = ["PNG", "JPEG", "BMP", "WebP"]
_SEND = ("send multipart/form-data (files in the field 'file' or 'files'), application/json "
         "({\"images\": [base64, ...]}) or one image as image/png, image/jpeg ...")


def require_multipart() -> None:
    """Image uploads need python-multipart (the serve extra): a one-line error where it is missing."""
    try:
        import python_multipart  # noqa: F401
    except ImportError:
        raise BinclfError(
            "serving an image bundle needs python-multipart, not installed here; install it with: "
            "pip install 'binclf[serve]'"
        ) from None


def image_content_kind(request: Request) -> str:
    """``"multipart"``, ``"json"`` or ``"image"`` from the Content-Type header; anything else is 415."""
    raw = request.headers.get("content-type")
    if raw is None:
        raise ServeError(415, f"the request has no Content-Type; {_SEND}")
    media = raw.partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        return "multipart"
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    if media.startswith("image/"):
        return "image"
    raise ServeError(415, f"unsupported Content-Type {media[:60]!r}; {_SEND}")


async def read_uploads(request: Request, body: bytes) -> list[tuple[str | None, bytes]]:
    """``(file name, bytes)`` of every file in a multipart ``body``, in the order sent."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body
        yield b""

    # Every part is a file or a small field: the body is already within --max-body.
    parser = MultiPartParser(request.headers, stream(), max_files=10_000, max_fields=100, max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InputError.one(f"the multipart body cannot be read: {exc.message}; {_SEND}") from None
    except (KeyError, ValueError) as exc:  # e.g. no boundary in the Content-Type
        raise InputError.one(f"the multipart body cannot be read ({exc!s:.80}); {_SEND}") from None
    try:
        unknown = sorted(set(form.keys()) - set(FIELDS))
        if unknown:
            raise InputError.one(
                f"unknown form field(s) {', '.join(map(repr, unknown[:5]))}; send the images in the field "
                "'file' or 'files'"
            )
        items: list[tuple[str | None, bytes]] = []
        problems: list[Problem] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                items.append((value.filename, await value.read()))
            else:
                problems.append(Problem(len(items), None, f"the field {key!r} holds text, not a file; upload the "
                                        "image as a file (curl -F file=@image.png)", unit="image"))
                items.append((None, b""))
        if problems:
            raise InputError(problems[:_MAX_PROBLEMS], more=max(0, len(problems) - _MAX_PROBLEMS))
        if not items:
            raise InputError.one(f"the form holds no files; {_SEND}")
        return items
    finally:
        await form.close()


def images_from_json(body: bytes) -> list[tuple[str | None, bytes]]:
    """The decoded bytes of ``{"images": ["<base64>", ...]}`` (``data:`` URLs accepted)."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or "images" not in payload:
        raise InputError.one('the body should be {"images": ["<base64>", ...]}; the key \'images\' is missing')
    extra = sorted(set(payload) - {"images"})
    if extra:
        raise InputError.one(f"unknown key(s) {', '.join(map(repr, extra[:5]))}; the only one is 'images'")
    images = payload["images"]
    if not isinstance(images, list):
        raise InputError.one("'images' should be a list of base64 texts, one per image")
    if not images:
        raise InputError.one("'images' is an empty list; send at least one image")
    items: list[tuple[str | None, bytes]] = []
    problems: list[Problem] = []
    for i, text in enumerate(images):
        data = b""
        if not isinstance(text, str):
            problems.append(Problem(i, None, f"should be base64 text, found {type(text).__name__}", unit="image"))
        else:
            if text.startswith("data:"):  # a data URL: data:image/png;base64,....
                head, _, text = text.partition(",")
                if not head.endswith(";base64"):
                    problems.append(Problem(i, None, "is a data: URL without ;base64; send base64 text", unit="image"))
            try:
                data = base64.b64decode("".join(text.split()), validate=True)
            except (binascii.Error, ValueError) as exc:
                problems.append(Problem(i, None, f"is not valid base64 ({exc!s:.80}); encode the file's bytes with "
                                        "base64", unit="image"))
        items.append((None, data))
    if problems:
        raise InputError(problems[:_MAX_PROBLEMS], more=max(0, len(problems) - _MAX_PROBLEMS))
    return items


class ImageService(Answers):
    """What the image ``/predict`` does, without HTTP: encoded images in, JSON bytes and an image count out."""

    def __init__(self, predictor: ImagePredictor, *, max_pixels: int = MAX_PIXELS) -> None:
        super().__init__(predictor)
        self.size = predictor.preprocessor.size
        self.channels = predictor.preprocessor.channels
        self.max_pixels = max_pixels

    def decode(self, items: list[tuple[str | None, bytes]]) -> torch.Tensor:
        """``uint8 (n, C, S, S)`` of the encoded ``items``; every unreadable one is a problem naming it."""
        out = torch.empty((len(items), self.channels, self.size, self.size), dtype=torch.uint8)
        pixels = out.numpy()
        problems: list[Problem] = []
        for i, (name, data) in enumerate(items):
            a = decode_image_bytes(data, size=self.size, channels=self.channels, max_pixels=self.max_pixels)
            if isinstance(a, str):
                problems.append(Problem(i, None, (f"file {name!r}: " if name else "") + a, unit="image"))
            else:
                pixels[i] = a
        if problems:
            raise InputError(problems[:_MAX_PROBLEMS], more=max(0, len(problems) - _MAX_PROBLEMS))
        return out

    def predict_items(self, items: list[tuple[str | None, bytes]], threshold: float | None) -> tuple[bytes, int]:
        """The ``/predict`` answer's JSON and the image count, for ``(file name, bytes)`` items."""
        proba = self.predictor.predict_proba(self.decode(items))
        return self.answer(proba, threshold), len(items)


def image_metadata(predictor: ImagePredictor, sha256: str | None) -> dict[str, Any]:
    """``GET /metadata`` of an image bundle: the input images' layout, then what every bundle reports."""
    pre = predictor.preprocessor
    return {
        "kind": "image",
        "input": {
            "size": pre.size, "channels": pre.channels, "mode": pre.mode, "formats": _FORMATS,
            "max_pixels": MAX_PIXELS, "fields": list(FIELDS),
            "content_types": ["multipart/form-data", "application/json", "image/*"],
            "note": f"any size: converted to {pre.mode} and resized to {pre.size}x{pre.size} as binclf predict does",
        },
        **model_metadata(predictor, sha256),
    }


def _body_doc() -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": binary, "files": {"type": "array", "items": binary}}}},
        "application/json": {"schema": {
            "type": "object", "required": ["images"], "additionalProperties": False,
            "properties": {"images": {"type": "array", "minItems": 1,
                                      "items": {"type": "string", "contentEncoding": "base64"}}}}},
        "image/*": {"schema": binary},
    }}}


def create_image_app(
    predictor: ImagePredictor, *, max_body: int, weights_sha256: str | None = None, max_pixels: int = MAX_PIXELS
) -> FastAPI:
    """The FastAPI application serving an image bundle (see the module docstring).

    Parameters
    ----------
    predictor : the loaded image bundle (never written).
    max_body : the largest request body accepted, in bytes (larger: 413).
    weights_sha256 : the bundle's weights hash, reported by ``/metadata``.
    max_pixels : the most pixels one image may declare (more: 422).
    """
    require_multipart()
    service = ImageService(predictor, max_pixels=max_pixels)
    limiter = anyio.CapacityLimiter(2)
    pre = predictor.preprocessor
    app = app_shell(
        title="binclf image model server",
        description=f"Predictions of a binclf image bundle ({pre.size}x{pre.size}, {pre.mode}): "
        f"positive class {predictor.target.positive!r}.",
        metadata=image_metadata(predictor, weights_sha256),
        routes=frozenset(["/predict"]),
    )
    errors = {
        413: {"model": ErrorBody, "description": "the body is larger than --max-body"},
        415: {"model": ErrorBody, "description": "the Content-Type is not multipart/form-data, JSON or image/*"},
        422: {"model": ErrorBody, "description": "an image cannot be read; each problem names its position"},
    }

    def work(items: list[tuple[str | None, bytes]] | None, body: bytes, threshold: float | None) -> tuple[bytes, int]:
        # items None: a JSON body, its base64 decoded here, in the worker thread.
        return service.predict_items(images_from_json(body) if items is None else items, threshold)

    @app.post("/predict", response_model=PredictResponse, responses=errors, openapi_extra=_body_doc(),
              summary="Predict images: uploads in 'file'/'files', {\"images\": [base64]}, or one image/* body")
    async def predict(request: Request, threshold: ThresholdQuery = None) -> Response:
        try:
            kind = image_content_kind(request)
            body = await _read_body(request, max_body)
            if not body:
                raise InputError.one(f"the body is empty; {_SEND}")
            items = None
            if kind == "multipart":
                items = await read_uploads(request, body)
            elif kind == "image":
                items = [(None, body)]
            # Base64 decoding, image decoding and the CNN hold the CPU for milliseconds: off the event loop.
            content, n = await anyio.to_thread.run_sync(work, items, body, threshold, limiter=limiter)
        except (ServeError, InputError) as exc:
            return _answer_error(exc)
        request.scope["binclf.rows"] = n
        return Response(content, media_type="application/json")

    return app
