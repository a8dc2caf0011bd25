"""``binclf export`` of an image bundle: onnxruntime on pixels / 255 gives ``binclf predict``'s answers (1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from binclf import Predictor  # noqa: E402
from binclf.cli import main  # noqa: E402
from binclf.io.images import decode_image_bytes, find_class_folders, list_images  # noqa: E402

DIGITS = Path(__file__).parents[1] / "src" / "binclf" / "datasets" / "digits_3_vs_8"


def _run(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output + str(r.exception)
    return r.output


def _onnx_predict(model: Path, folder: Path, pred) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The graph's outputs on every image below ``folder``, decoded as binclf decodes them, and their names."""
    files = list_images(folder)
    pre = pred.preprocessor
    pixels = np.stack([decode_image_bytes(f.read_bytes(), size=pre.size, channels=pre.channels) for f in files])
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    proba, label = sess.run(None, {"image": pixels.astype(np.float32) / 255})
    return proba, label, [f.relative_to(folder).as_posix() for f in files]


def test_digits_export_equals_binclf_predict(tmp_path):
    bundle, model = tmp_path / "digits-model", tmp_path / "digits.onnx"
    _run("train", DIGITS, "--no-flip", "--image-size", "16", "--max-epochs", "2", "--no-report", "-o", bundle)
    out = _run("export", bundle, "-o", model)
    assert "input  image: float32 [N, 1, 16, 16] (pixels / 255 in [0, 1], greyscale (L), resized to 16x16" in out
    _run("predict", bundle, DIGITS, "-o", tmp_path / "p.csv")
    want = pd.read_csv(tmp_path / "p.csv").set_index("path")
    pred = Predictor.load(bundle)
    proba, label, names = _onnx_predict(model, DIGITS, pred)
    assert len(names) == 1000
    np.testing.assert_allclose(proba, want.loc[names, "probability"].to_numpy(), atol=1e-5)
    assert (np.asarray(label) == want.loc[names, "prediction"].astype(str).to_numpy()).all()
    sig = json.loads(next(p.value for p in onnx.load(model).metadata_props if p.key == "binclf.signature"))
    assert sig["kind"] == "image" and sig["inputs"][0]["shape"] == ["N", 1, 16, 16]
    assert sig["inputs"][0]["mean"] == list(pred.preprocessor.mean)


def test_rgb_stride2_stem_isotonic_export_equals_the_predictor(tmp_path):
    """64-pixel RGB images (a stride-2 stem, four stages) and an isotonic calibrator: the graph follows."""
    rng = np.random.default_rng(0)
    data = tmp_path / "shapes"
    for k, name in enumerate(("ring", "blank")):
        (data / name).mkdir(parents=True)
        for i in range(20):
            a = rng.integers(0, 90, (70, 60, 3)).astype(np.uint8)
            if k == 0:
                a[20:50, 15:45, i % 3] = 220
            Image.fromarray(a).save(data / name / f"{i}.png")
    bundle, model = tmp_path / "m", tmp_path / "m.onnx"
    _run("train", data, "--image-size", "64", "--max-epochs", "2", "--no-report", "--calibration", "isotonic",
         "-o", bundle)
    pred = Predictor.load(bundle)
    assert pred.members[0].module.stem_stride == 2 and pred.preprocessor.channels == 3
    _run("export", bundle, "-o", model)
    proba, label, _names = _onnx_predict(model, data, pred)
    images, _, _ = pred.read(find_class_folders(data))
    want = pred.predict_proba(images)
    np.testing.assert_allclose(proba, want, atol=1e-5)
    assert list(label) == [str(v) for v in pred._labels(pred.decide(want))]

