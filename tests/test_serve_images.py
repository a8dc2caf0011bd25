"""``binclf serve`` of an image bundle: uploads, base64 JSON and image/* bodies, equal to ``binclf predict``.

One tiny bundle (the bundled digits at 16x16, two epochs) is trained once for
the module; the real server runs in a subprocess on a loopback port for the
end-to-end test, and the bad-input cases go through FastAPI's TestClient.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
httpx = pytest.importorskip("httpx")

from binclf import Predictor  # noqa: E402
from binclf.cli import main  # noqa: E402

DIGITS = Path(__file__).parents[1] / "src" / "binclf" / "datasets" / "digits_3_vs_8"
MAX_BODY = 200_000


def _run(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output + str(r.exception)
    return r.output


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("img") / "digits-model"
    _run("train", DIGITS, "--no-flip", "--image-size", "16", "--max-epochs", "2", "--no-report", "-o", out)
    return out


@pytest.fixture(scope="module")
def files() -> list[Path]:
    """Six digit scans, three of each class."""
    three, eight = sorted((DIGITS / "three").iterdir())[:3], sorted((DIGITS / "eight").iterdir())[:3]
    return three + eight


@pytest.fixture(scope="module")
def client(bundle):
    from fastapi.testclient import TestClient

    from binclf.serve import create_app

    with TestClient(create_app(Predictor.load(bundle), max_body=MAX_BODY)) as c:
        yield c


def _clean(body: str) -> None:
    for leak in ("Traceback", 'File "', ".py\"", "/tmp/", "site-packages"):
        assert leak not in body, body


class _Server:
    def __init__(self, bundle: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "binclf", "serve", str(bundle), "--port", str(self.port),
             "--max-body", str(MAX_BODY)],
            stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not start:\n{log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def test_served_images_equal_binclf_predict(bundle, files, tmp_path):
    """Multipart uploads, base64 JSON and one image/png body get `binclf predict`'s probabilities (1e-6)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f"{f.parent.name}-{f.name}")
    _run("predict", bundle, folder, "-o", tmp_path / "p.csv")
    want = pd.read_csv(tmp_path / "p.csv").set_index("path")
    names = [f"{f.parent.name}-{f.name}" for f in files]

    server = _Server(bundle, tmp_path / "serve.log")
    try:
        c = httpx.Client(base_url=server.url, timeout=30)
        up = c.post("/predict", files=[("files", (n, (folder / n).read_bytes(), "image/png")) for n in names])
        b64 = c.post("/predict", json={"images": [base64.b64encode((folder / n).read_bytes()).decode() for n in names]})
        one = c.post("/predict", content=(folder / names[0]).read_bytes(), headers={"content-type": "image/png"})
        single = c.post("/predict", files={"file": (names[1], (folder / names[1]).read_bytes(), "image/png")})
        for r, shown in ((up, names), (b64, names), (one, names[:1]), (single, names[1:2])):
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["threshold"] == pytest.approx(Predictor.load(bundle).effective_threshold())
            assert len(body["predictions"]) == len(shown)
            for item, n in zip(body["predictions"], shown):
                assert item["probability"] == pytest.approx(want.loc[n, "probability"], abs=1e-6)
                assert item["prediction"] == want.loc[n, "prediction"]

        assert c.get("/health").json() == {"status": "ok"}
        meta = c.get("/metadata").json()
        assert meta["kind"] == "image" and meta["input"]["size"] == 16 and meta["input"]["channels"] == 1
        assert meta["target"]["positive"] in ("three", "eight") and 0 <= meta["threshold"] <= 1
        assert meta["weights_sha256"] and len(meta["weights_sha256"]) == 64
        r = c.post("/predict", files=[("file", ("notes.txt", b"hello", "text/plain"))])
        assert r.status_code == 422 and "notes.txt" in r.json()["detail"]
        text = c.get("/metrics").text
        assert 'binclf_rows_total{path="/predict"} 14.0' in text
        assert 'binclf_errors_total{path="/predict",status="422"} 1.0' in text
        c.close()
    finally:
        server.stop()
    log = server.log.read_text()
    assert "POST /predict 200 rows=6 " in log and "POST /predict 422 rows=0 " in log and "Traceback" not in log


def test_threshold_override(client, files):
    """?threshold= decides at that threshold: 0 makes every image positive, 1 every image below 1 negative."""
    target = client.get("/metadata").json()["target"]
    data = files[0].read_bytes()
    for t, label in ((0.0, target["positive"]), (1.0, target["negative"])):
        r = client.post("/predict", params={"threshold": t}, content=data, headers={"content-type": "image/png"})
        body = r.json()
        assert body["threshold"] == t and body["predictions"][0]["prediction"] == label
    r = client.post("/predict", params={"threshold": "2"}, content=data, headers={"content-type": "image/png"})
    assert r.status_code == 422 and "threshold" in r.json()["detail"]


def test_a_colour_jpeg_of_another_size_is_converted_as_predict_converts_it(bundle, client, files, tmp_path):
    from PIL import Image

    jpg = tmp_path / "x.jpg"
    Image.open(files[0]).convert("RGB").resize((57, 40)).save(jpg, quality=90)
    pred = Predictor.load(bundle)
    images, _, _ = pred.read(type("S", (), {"paths": [jpg], "names": ["x.jpg"]})())
    want = float(pred.predict_proba(images)[0])
    r = client.post("/predict", files={"file": ("x.jpg", jpg.read_bytes(), "image/jpeg")})
    assert r.json()["predictions"][0]["probability"] == pytest.approx(want, abs=1e-6)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case, status, match", [
    ("not-an-image", 422, r"^image 1: file 'b\.png': not an image Pillow can read"),
    ("truncated", 422, r"^image 0: file 'cut\.png': unreadable or truncated"),
    ("empty-file", 422, r"^image 0: file 'e\.png': is empty \(0 bytes\)"),
    ("empty-body", 422, r"^the body is empty; send multipart/form-data"),
    ("no-files", 422, r"^the form holds no files"),
    ("unknown-field", 422, r"^unknown form field\(s\) 'photo'; send the images in the field 'file' or 'files'"),
    ("text-field", 422, r"^image 0: the field 'file' holds text, not a file"),
    ("no-boundary", 422, r"^the multipart body cannot be read"),
    ("bad-base64", 422, r"^image 1: is not valid base64"),
    ("not-text", 422, r"^image 0: should be base64 text, found int"),
    ("no-images-key", 422, r"the key 'images' is missing"),
    ("empty-list", 422, r"^'images' is an empty list"),
    ("bad-json", 422, r"^the body is not valid JSON"),
    ("huge-declared", 422, r"^image 0: is 8000x8000 pixels, more than the 40,000,000 this server decodes"),
    ("csv", 415, r"^unsupported Content-Type 'text/csv'; send multipart/form-data"),
    ("no-content-type", 415, r"^the request has no Content-Type"),
    ("too-big", 413, r"^the body is 300,000 bytes; this server takes at most 200,000"),
])
def test_bad_input_is_4xx_naming_the_image(client, files, case, status, match):
    import re
    import struct
    import zlib

    good = files[0].read_bytes()
    png = "image/png"
    # A PNG header declaring 8000 x 8000 pixels (64 megapixels) and no pixel data: refused before decoding.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    huge = PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", 8000, 8000, 8, 0, 0, 0, 0)) + chunk(b"IDAT", b"")
    kw = {
        "not-an-image": {"files": [("files", ("a.png", good, png)), ("files", ("b.png", b"hello", png))]},
        "truncated": {"files": {"file": ("cut.png", good[: len(good) // 2], png)}},
        "empty-file": {"files": {"file": ("e.png", b"", png)}},
        "empty-body": {"content": b"", "headers": {"content-type": png}},
        "no-files": {"content": b"--xx--\r\n", "headers": {"content-type": "multipart/form-data; boundary=xx"}},
        "unknown-field": {"files": {"photo": ("a.png", good, png)}},
        "text-field": {"data": {"file": "hello"}, "files": {"files": ("a.png", good, png)}},
        "no-boundary": {"content": b"abc", "headers": {"content-type": "multipart/form-data"}},
        "bad-base64": {"json": {"images": [base64.b64encode(good).decode(), "!!not base64"]}},
        "not-text": {"json": {"images": [3]}},
        "no-images-key": {"json": {"image": []}},
        "empty-list": {"json": {"images": []}},
        "bad-json": {"content": b"{", "headers": {"content-type": "application/json"}},
        "huge-declared": {"content": huge, "headers": {"content-type": png}},
        "csv": {"content": b"a,b\n1,2\n", "headers": {"content-type": "text/csv"}},
        "no-content-type": {"content": b"x"},
        "too-big": {"content": b"x" * 300_000, "headers": {"content-type": png}},
    }[case]
    r = client.post("/predict", **kw)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert re.search(match, detail), detail
    assert "\n" not in detail
    _clean(r.text)


def test_table_only_routes_are_absent_and_openapi_documents_the_bodies(client):
    assert client.post("/invocations", json={}).status_code == 404
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json", "image/*"}


def test_service_without_http_names_every_bad_image(bundle, files):
    from binclf.serve.images import ImageService
    from binclf.serve.rows import InputError

    service = ImageService(Predictor.load(bundle))
    good = files[0].read_bytes()
    content, n = service.predict_items([("a.png", good), (None, good)], None)
    assert n == 2 and len(json.loads(content)["predictions"]) == 2
    with pytest.raises(InputError, match=r"^image 1: not an image .* \(and 1 more problem\(s\)\)$"):
        service.predict_items([("a.png", good), (None, b"x"), ("c.png", b"y")], None)
