"""Images: finding, decoding, augmentation, the CNN, and train -> bundle -> predict -> evaluate end to end.

Every test writes its own tiny image folder (a few dozen 12x12 images: bright
squares vs dark ones), so the whole file runs in seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from binclf.cli import main
from binclf.errors import DataError
from binclf.io.images import choose_layout, decode_images, find_class_folders, scan_images
from binclf.nn.augment import AugmentConfig, augment_batch
from binclf.nn.models import build_model, init_output_bias

FAST = ["--max-epochs", "2", "--no-report"]


def _image(rng: np.random.Generator, positive: bool, size: int = 12, mode: str = "L") -> Image.Image:
    a = rng.integers(0, 60, (size, size)).astype(np.uint8)
    if positive:  # a bright square somewhere
        r, c = rng.integers(0, size // 2, 2)
        a[r : r + size // 2, c : c + size // 2] = 230
    im = Image.fromarray(a)
    return im.convert(mode)


def make_folder(root: Path, n: int = 24, *, classes=("yes", "no"), mode: str = "L", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _image(rng, k == 0, mode=mode).save(root / name / f"{i:03d}.png")
    return root


def run(*args, ok: bool = True):
    r = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, r.output + str(r.exception)
    return r


# -- finding and decoding ---------------------------------------------------------------
def test_folder_layout_gives_paths_labels_and_names(tmp_path):
    s = find_class_folders(make_folder(tmp_path, 3))
    assert sorted(set(s.labels)) == ["no", "yes"] and len(s.paths) == 6
    assert s.names[0] == "no/000.png"


def test_decode_gives_uint8_in_the_chosen_layout(tmp_path):
    make_folder(tmp_path, 2, mode="RGB")
    s = find_class_folders(tmp_path)
    size, channels, why = choose_layout(scan_images(s.paths), image_size=None)
    assert (size, channels) == (16, 3)  # the 12-pixel side is clamped up to 16; colour files -> RGB
    images, keep, notices = decode_images(s.paths, size=size, channels=channels)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16) and keep.all() and not notices


def test_mixed_grey_and_colour_become_rgb(tmp_path):
    make_folder(tmp_path, 2)
    Image.new("RGB", (12, 12), (200, 10, 10)).save(tmp_path / "yes" / "red.png")
    _, channels, why = choose_layout(scan_images(find_class_folders(tmp_path).paths), image_size=None)
    assert channels == 3 and "converted to RGB" in why


# -- augmentation and the network ----------------------------------------------------------------
def test_augmentation_keeps_shapes_and_changes_pixels():
    x = torch.randn(8, 3, 20, 20)
    out = augment_batch(x, AugmentConfig(), generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x)


def test_augmentation_with_nothing_to_do_is_the_identity():
    x = torch.randn(4, 1, 10, 10)
    none = AugmentConfig(min_scale=1.0, max_ratio=1.0, flip=False, degrees=0.0, brightness=0.0, contrast=0.0)
    assert torch.allclose(augment_batch(x, none), x, atol=1e-5)


def test_cnn_returns_one_logit_per_image_and_augments_only_in_training():
    m = build_model("cnn", seed=0, channels=1, size=16, widths=[8, 16], augment=AugmentConfig().to_dict())
    init_output_bias(m, 0.2)
    assert math.isclose(float(m.output.bias.detach()), math.log(0.2 / 0.8), rel_tol=1e-6)
    x = torch.randn(5, 256)
    m.eval()
    assert m(x).shape == (5,) and torch.equal(m(x), m(x))  # eval: deterministic, no augmentation


def test_augmentation_grid_is_affine_grids():
    # Rotation and crop only, no jitter: the result is grid_sample on affine_grid's grid for the same draws.
    cfg = AugmentConfig(brightness=0.0, contrast=0.0, flip=False)
    x = torch.randn(6, 2, 12, 9)
    out = augment_batch(x, cfg, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    area, log_ratio = torch.rand(6, generator=g) * 0.25 + 0.75, (torch.rand(6, generator=g) * 2 - 1) * math.log(4 / 3)
    sx = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)
    sy = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
    tx = (torch.rand(6, generator=g) * 2 - 1) * (1 - sx)
    ty = (torch.rand(6, generator=g) * 2 - 1) * (1 - sy)
    a = (torch.rand(6, generator=g) * 20 - 10) * (math.pi / 180)
    theta = torch.stack([torch.stack([a.cos() * sx, -a.sin() * sy, tx], 1), torch.stack([a.sin() * sx, a.cos() * sy, ty], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    want = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(out, want, atol=1e-5)


def test_mixed_precision_changes_training_only():
    kw = dict(channels=1, size=16, widths=[8, 16], augment=None)
    fp32 = build_model("cnn", seed=0, **kw)
    mixed = build_model("cnn", seed=0, mixed_precision=True, **kw)
    assert mixed.config()["mixed_precision"] is True
    x = torch.randn(5, 256)
    fp32.eval(), mixed.eval()
    assert torch.equal(fp32(x), mixed(x)) and mixed(x).dtype == torch.float32  # eval and prediction: float32
    mixed.train()
    z = mixed(x)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    z.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in mixed.parameters())


def test_refreshed_batchnorm_statistics_are_the_clean_float32_images_statistics():
    """Eval-mode statistics from un-augmented float32 images, not the moving average of augmented bf16 batches."""
    model = build_model("cnn", seed=0, channels=1, size=16, widths=[8, 16], mixed_precision=True,
                        augment=AugmentConfig().to_dict())
    x = torch.randn(40, 256) * 2 + 1
    model.train()
    for _ in range(3):
        model(x[:16]).sum().backward()  # moves the moving averages (augmented, bf16)
    model.eval()
    model.refresh_statistics(x)
    conv, bn = model.body[0], model.body[1]
    with torch.no_grad():
        first = conv(x.view(40, 1, 16, 16))
    assert torch.allclose(bn.running_mean, first.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, first.var(dim=(0, 2, 3)), rtol=1e-4)
    assert bn.momentum == 0.1 and not model.training and not model.body.training


def test_the_trainer_refreshes_a_models_statistics_before_each_validation_and_keeps_the_best_epochs():
    from binclf.train.trainer import TrainConfig, Trainer

    model = build_model("cnn", seed=0, channels=1, size=8, widths=[4], augment=AugmentConfig().to_dict())
    seen = []
    real = model.refresh_statistics
    model.refresh_statistics = lambda x: (seen.append(len(x)), real(x))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 64)).astype(np.float32), (rng.random(60) < 0.5).astype(np.float32)
    Trainer(TrainConfig(max_epochs=3, patience=10, batch_size=16, verbose=False)).fit(
        model, X, y, X_valid=X[:20], y_valid=y[:20])
    assert seen == [60, 60, 60]  # every training row (fewer than 256), once per epoch
    # The kept weights' statistics are those refreshed for their epoch: refreshing again changes nothing.
    bn = model.body[1]
    kept = bn.running_mean.clone()
    real(torch.from_numpy(X))
    assert torch.allclose(bn.running_mean, kept, atol=1e-6)
    seen.clear()
    Trainer(TrainConfig(max_epochs=2, batch_size=16, verbose=False)).fit(model, X, y)
    assert seen == [60]  # without validation: once, at the end


# -- training threads (binclf.runtime / binclf.probe) ----------------------------------------------
def _threads_seen(monkeypatch):
    """Record the torch threads of each training epoch of train_images (a callback on the Trainer)."""
    from binclf.train import images as train_images_module

    seen, real = [], train_images_module.Trainer

    def trainer(config, *, callbacks=()):
        return real(config, callbacks=[*callbacks, lambda t, log: seen.append(torch.get_num_threads())])

    monkeypatch.setattr(train_images_module, "Trainer", trainer)
    return seen


def test_image_training_runs_on_the_measured_threads_and_restores_them(tmp_path, two_threads, monkeypatch):
    from binclf import probe, runtime
    from binclf.train.images import ImageTrainOptions, train_images

    timed = []

    def fake_timer(fns, **kw):  # one thread measured 30x faster: a busy machine
        timed.append(sorted(fns))
        return {k: {1: 1e-3, 2: 30e-3}[k] for k in fns}

    monkeypatch.setattr(probe, "time_interleaved", fake_timer)
    monkeypatch.setattr(probe, "runnable_others", lambda: 0.0)
    monkeypatch.setattr(probe.LoadMeter, "others", lambda self: 0.0)
    seen = _threads_seen(monkeypatch)
    with runtime.session(purpose="train") as s:
        result = train_images(make_folder(tmp_path), ImageTrainOptions(max_epochs=2))
    assert timed == [[1, 2]] and seen == [1, 1]
    assert result.predictor.info["torch_threads"] == 1
    assert torch.get_num_threads() == 2  # restored
    assert "torch 1 thread (measured; 1: 1.00 ms, 2: 30.00 ms per step" in runtime.describe(s)


def test_image_training_keeps_the_users_thread_count_untimed(tmp_path, two_threads, monkeypatch):
    from binclf import probe, runtime
    from binclf.train.images import ImageTrainOptions, train_images

    monkeypatch.setattr(probe, "time_interleaved", lambda *a, **k: pytest.fail("a fixed count must not be measured"))
    seen = _threads_seen(monkeypatch)
    with runtime.session(purpose="train", threads=2, pinned=True) as s:  # what `binclf train --threads 2` opens
        result = train_images(make_folder(tmp_path), ImageTrainOptions(max_epochs=2))
    assert seen == [2, 2] and result.predictor.info["torch_threads"] == 2
    assert "fixed by the user" in runtime.describe(s)
    monkeypatch.setenv("BINCLF_THREADS", "1")
    seen.clear()
    train_images(make_folder(tmp_path), ImageTrainOptions(max_epochs=2))
    assert seen == [1, 1] and torch.get_num_threads() == 2


def test_the_epoch_guard_drops_to_one_thread_when_epochs_slow_down_and_the_session_restores(two_threads):
    from binclf import runtime
    from binclf.train.images import _EpochThreadGuard

    with runtime.session(purpose="train"):
        guard = _EpochThreadGuard(2, steps_per_epoch=10)
        for seconds in (1.0, 0.9, 1.2):  # within 1.5x of the best epoch
            guard(None, {"seconds": seconds + 5.0, "valid_seconds": 5.0})  # the validation pass does not count
        assert guard.threads == 2 and torch.get_num_threads() == 2
        guard(None, {"seconds": 2.0, "valid_seconds": 0.0})
        assert guard.threads == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_the_thread_probe_step_leaves_the_model_and_random_stream_as_they_were():
    from binclf.train.images import _step_probe

    m = build_model("cnn", seed=0, channels=1, size=16, widths=[8, 16], augment=AugmentConfig().to_dict())
    state = {k: v.clone() for k, v in m.state_dict().items()}
    run = _step_probe(m, torch.randn(20, 256), np.ones(20, dtype=np.float32), 8)
    rng = torch.get_rng_state()
    run()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in state.items()) and all(p.grad is None for p in m.parameters())


# -- end to end ------------------------------------------------------------------------------------
def test_train_predict_evaluate_a_folder(tmp_path):
    data = make_folder(tmp_path / "data")
    bundle = tmp_path / "model"
    r = run("train", data, "-o", bundle, "--positive", "yes", "--max-epochs", "3")
    assert "channels: 1 (all images are greyscale)" in r.output and "size 16x16" in r.output
    assert (bundle / "bundle.json").is_file() and (bundle / "report.html").is_file()
    assert "Most confident false positives" in (bundle / "report.html").read_text()
    # predict reads the folder recursively (class subfolders allowed, not needed)
    out = tmp_path / "preds.csv"
    run("predict", bundle, data, "-o", out)
    df = pd.read_csv(out)
    assert list(df.columns) == ["path", "probability", "prediction"] and len(df) == 48
    assert set(df["prediction"]) <= {"yes", "no"} and df["path"].str.match(r"(yes|no)/\d+\.png").all()
    r = run("evaluate", bundle, data)
    assert "metrics on" in r.output and "48 images" in r.output
    from binclf import Predictor

    p = Predictor.load(bundle)
    assert type(p).__name__ == "ImagePredictor" and p.target.positive == "yes"
    # ONNX export of an image bundle (parity with predict: tests/test_export_images.py)
    r = run("export", bundle, "-o", tmp_path / "m.onnx")
    assert "input  image: float32 [N, 1, 16, 16]" in r.output and (tmp_path / "m.onnx").is_file()


def test_train_from_a_labels_csv(tmp_path):
    make_folder(tmp_path / "imgs")
    rows = [{"file": f"imgs/{c}/{i:03d}.png", "label": c} for c in ("yes", "no") for i in range(24)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    bundle = tmp_path / "m"
    run("train", tmp_path / "labels.csv", "--image-column", "file", "--target", "label", "-o", bundle, *FAST)
    out = tmp_path / "p.csv"
    run("predict", bundle, tmp_path / "labels.csv", "-o", out)
    assert pd.read_csv(out)["path"].iloc[0] == "imgs/yes/000.png"


# -- bad input: one line, exit 2, nothing written ------------------------------------------------------
def _fails(tmp_path, data, match: str, *extra):
    bundle = tmp_path / "never"
    r = run("train", data, "-o", bundle, *FAST, *extra, ok=False)
    assert r.exit_code == 2, r.output
    err = r.output.strip().splitlines()[-1]
    assert err.startswith("error: ") and match in err, r.output
    assert not bundle.exists()


def test_three_class_folders_is_an_error(tmp_path):
    make_folder(tmp_path / "d", 2, classes=("a", "b", "c"))
    _fails(tmp_path, tmp_path / "d", "expected exactly two class subfolders")


def test_empty_class_is_an_error(tmp_path):
    make_folder(tmp_path / "d", 2, classes=("a",))
    (tmp_path / "d" / "b").mkdir()
    _fails(tmp_path, tmp_path / "d", "'b' has no images")


def test_stray_image_is_an_error(tmp_path):
    make_folder(tmp_path / "d", 2)
    Image.new("L", (12, 12)).save(tmp_path / "d" / "stray.png")
    _fails(tmp_path, tmp_path / "d", "stray.png: 1 file(s) lie directly in")


def test_non_image_file_is_an_error_naming_it(tmp_path):
    make_folder(tmp_path / "d", 2)
    (tmp_path / "d" / "yes" / "notes.txt").write_text("hello")
    _fails(tmp_path, tmp_path / "d", "notes.txt: not an image")


def test_truncated_image_is_an_error_naming_it(tmp_path):
    make_folder(tmp_path / "d", 2)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "x.png")
    data = (tmp_path / "x.png").read_bytes()
    (tmp_path / "d" / "no" / "cut.png").write_bytes(data[: len(data) // 2])
    _fails(tmp_path, tmp_path / "d", "cut.png: unreadable or truncated")


def test_skip_bad_images_skips_up_to_one_percent(tmp_path):
    make_folder(tmp_path / "d", 60)
    (tmp_path / "d" / "yes" / "bad.png").write_bytes(b"not a png")
    r = run("train", tmp_path / "d", "-o", tmp_path / "m", "--skip-bad-images", *FAST)
    assert "skipped 1 unreadable file(s) of 121 (--skip-bad-images): yes/bad.png" in r.output
    (tmp_path / "d" / "no" / "bad2.png").write_bytes(b"nor this")
    _fails(tmp_path, tmp_path / "d", "more than --skip-bad-images allows", "--skip-bad-images")


def test_find_class_folders_error_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        find_class_folders(tmp_path / "missing")


def test_doctor_finds_nothing_wrong_with_the_image_cnn():
    from binclf.doctor import check

    m = build_model("cnn", seed=0, channels=1, size=16, widths=[8, 16], augment={"flip": False})
    init_output_bias(m, 0.5)
    x, y = torch.randn(32, 256), (torch.arange(32) % 2).float()
    report = check(m, None, x, y)
    assert not report.has_errors and "output shape (32,)" in str(report)
