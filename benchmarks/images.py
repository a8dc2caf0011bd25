"""Images: binclf's default vs logistic regression on pixels vs the textbook Dataset + DataLoader loop.

    PYTHONPATH=src python benchmarks/images.py [--digits DIR] [--n-small 2000] [--n-large 1000] [--large-side 128]
    PYTHONPATH=src python benchmarks/images.py --sets large       # only the 128-pixel set (also: digits, small)
    PYTHONPATH=src python benchmarks/images.py --step-split 128   # where one training step's time goes

Sets: the digits 3 vs 8 shipped with binclf (1,000 real 28x28 scans, no
flips), and generated shapes (ring vs square outlines at random positions,
sizes, rotations and brightness, on noise) at 28x28 grey and at 128x128 RGB on
a random texture. Every method sees the same stratified 60/20/20 split (the
one binclf draws).

- **binclf**: ``train_images`` on the folder, end to end (find, decode,
  train, calibrate, threshold, test metrics, report, bundle write).
- **pixel logistic**: scikit-learn's LogisticRegression on standardised
  pixels of the same decoded images (train split), no calibration.
- **textbook loop**: a ``Dataset`` that opens, converts, resizes, augments
  (the same transforms, one image at a time) and normalises each image in
  ``__getitem__``, a ``DataLoader`` (shuffle, 2 workers), the same CNN
  without its in-model augmentation, AdamW and BCEWithLogitsLoss, for as many
  epochs as binclf ran (at most ``--textbook-epochs``, 15), with as many torch threads as binclf chose; no
  calibration, no early stopping.

Columns: test ROC-AUC, log-loss, ECE (15 bins), training images/s (image-
epochs over the seconds of the training steps; binclf's per-epoch validation
passes are left out, the textbook loop has none) and seconds (end to end),
threads (torch intra-op threads). Never run by CI.

``--step-split SIDE`` instead times single training steps (batch 64, one
torch thread, the generated shapes at SIDE pixels) of binclf's step (batch
augmentation in the model, float32 and bf16 mixed precision) and of the
textbook loop (2 DataLoader workers), and splits each step's wall time into
the convolutions (forward and backward, from the torch profiler) and the rest.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _machine import cpu_model
from PIL import Image, ImageDraw

from binclf.data.split import stratified_split
from binclf.data.target import encode_target
from binclf.decide.metrics import binary_metrics
from binclf.io.images import decode_images
from binclf.nn.augment import AugmentConfig, augment_batch
from binclf.nn.models import build_model
from binclf.train.images import ImageTrainOptions, load_image_set, train_images

DIGITS = Path(__file__).resolve().parents[1] / "src" / "binclf" / "datasets" / "digits_3_vs_8"


def make_shapes(root: Path, n: int, *, side: int, colour: bool, seed: int = 0) -> Path:
    """``n`` images, half ``ring/`` and half ``square/`` outlines, random position/size/rotation/brightness."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(("ring", "square")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            if colour:  # a random low-frequency texture
                base = rng.integers(0, 120, (side // 8 + 1, side // 8 + 1, 3)).astype(np.uint8)
                bg = Image.fromarray(base).resize((side, side), Image.BILINEAR)
                bg = Image.fromarray(np.clip(np.asarray(bg) + rng.normal(0, 12, (side, side, 3)), 0, 255).astype(np.uint8))
            else:
                bg = Image.fromarray(rng.integers(0, 70, (side, side)).astype(np.uint8))
            im = bg.convert("RGB" if colour else "L")
            d = ImageDraw.Draw(im)
            r = rng.uniform(0.15, 0.35) * side
            cx, cy = rng.uniform(r, side - r, 2)
            fill = tuple(int(v) for v in rng.integers(150, 256, 3)) if colour else int(rng.integers(150, 256))
            width = max(1, int(side / 14))
            if k == 0:
                d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=width)
            else:
                a = rng.uniform(0, math.pi / 2)
                pts = [(cx + r * math.cos(a + j * math.pi / 2), cy + r * math.sin(a + j * math.pi / 2)) for j in range(5)]
                d.line(pts, fill=fill, width=width)
            im.save(root / name / f"{i:05d}.png")
    return root


def _metrics(y, p) -> dict:
    m = binary_metrics(y, p, threshold=0.5)
    return {"roc_auc": m["roc_auc"], "log_loss": m["log_loss"], "ece": m["ece"]}


def run_binclf(folder: Path, flip: bool) -> tuple[dict, object]:
    from binclf.report.images import render_image_report

    t0 = time.perf_counter()
    result = train_images(folder, ImageTrainOptions(flip=flip))
    page = render_image_report(result).encode()
    with tempfile.TemporaryDirectory() as tmp:
        result.predictor.save(Path(tmp) / "m", extra_files={"report.html": page})
    seconds = time.perf_counter() - t0
    row = {**{k: result.metrics[k] for k in ("roc_auc", "log_loss", "ece")},
           "images_per_s": result.predictor.info["training_images_per_second"], "seconds": seconds,
           "threads": result.predictor.info["torch_threads"]}
    return row, result


def splits(folder: Path, seed: int = 0):
    s = load_image_set(folder, image_column=None, target=None)
    y, _, _, _ = encode_target(pd.Series(s.labels), column="class", positive=None)
    idx = stratified_split(y.astype(np.float32), fractions=(0.6, 0.2, 0.2), seed=seed)
    return s, y.astype(np.float32), idx


def run_logistic(folder: Path, size: int, channels: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    s, y, (tr, _, te) = splits(folder)
    images, _, _ = decode_images(s.paths, size=size, channels=channels)
    X = images.reshape(len(images), -1).numpy().astype(np.float32)
    scaler = StandardScaler().fit(X[tr])
    t1 = time.perf_counter()
    clf = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(X[tr]), y[tr])
    fit = time.perf_counter() - t1
    p = clf.predict_proba(scaler.transform(X[te]))[:, 1]
    return {**_metrics(y[te], p), "images_per_s": len(tr) * clf.n_iter_[0] / fit, "seconds": time.perf_counter() - t0}


class TextbookDataset(torch.utils.data.Dataset):
    """The textbook: one image opened, converted, resized, augmented and normalised per ``__getitem__``."""

    def __init__(self, paths, labels, *, size, mode, mean, std, augment: AugmentConfig | None):
        self.paths, self.labels = list(paths), torch.as_tensor(labels)
        self.size, self.mode, self.augment = size, mode, augment
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        im = Image.open(self.paths[i]).convert(self.mode).resize((self.size, self.size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255
        x = torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())
        x = (x - self.mean) / self.std
        if self.augment is not None:
            x = augment_batch(x[None], self.augment)[0]
        return x.reshape(-1), self.labels[i]


def run_textbook(folder: Path, result, epochs: int, threads: int) -> dict:
    pre = result.predictor.preprocessor
    config = dict(result.predictor.members[0].config)
    augment = AugmentConfig(**config["augment"]) if config.get("augment") else None
    config["augment"] = None
    config["mixed_precision"] = False  # the textbook trains in float32
    t0 = time.perf_counter()
    s, y, (tr, _, te) = splits(folder)
    kw = {"size": pre.size, "mode": pre.mode, "mean": pre.mean, "std": pre.std}
    train_ds = TextbookDataset([s.paths[i] for i in tr], y[tr], augment=augment, **kw)
    test_ds = TextbookDataset([s.paths[i] for i in te], y[te], augment=None, **kw)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model("cnn", seed=0, **config)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        loader = torch.utils.data.DataLoader(train_ds, batch_size=64, shuffle=True, num_workers=2, drop_last=True)
        t1 = time.perf_counter()
        for _ in range(epochs):
            model.train()
            for xb, yb in loader:
                opt.zero_grad()
                loss = loss_fn(model(xb), yb.float())
                loss.backward()
                opt.step()
        fit = time.perf_counter() - t1
        model.eval()
        with torch.no_grad():
            z = torch.cat([model(xb) for xb, _ in torch.utils.data.DataLoader(test_ds, batch_size=256)])
    finally:
        torch.set_num_threads(before)
    p = torch.sigmoid(z).numpy()
    return {**_metrics(y[te], p), "images_per_s": len(tr) * epochs / fit, "seconds": time.perf_counter() - t0,
            "threads": threads}


def step_split(side: int, *, n: int = 1000, steps: int = 10) -> pd.DataFrame:
    """Wall milliseconds per training step and their convolution share, binclf's step vs the textbook loop's."""
    from binclf.io.images import find_class_folders
    from binclf.nn.models.cnn import cnn_shape
    from binclf.runtime import tune_malloc

    tune_malloc()  # as binclf's training runs
    channels = 3 if side >= 64 else 1
    conv_ops = ("aten::mkldnn_convolution", "aten::convolution_backward")
    before = torch.get_num_threads()
    torch.set_num_threads(1)

    def timed(model, batches) -> dict:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        model.train()

        def step():
            xb, yb = next(batches)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        t = time.perf_counter()
        with torch.profiler.profile() as prof:
            for _ in range(steps):
                step()
        wall = (time.perf_counter() - t) / steps * 1000
        conv = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in conv_ops) / steps / 1000
        return {"ms_per_step": wall, "conv_ms": conv, "other_ms": wall - conv, "images_per_s": 64_000 / wall}

    try:
        with tempfile.TemporaryDirectory() as tmp:
            s = find_class_folders(make_shapes(Path(tmp) / "shapes", n, side=side, colour=channels == 3))
            y = torch.tensor([float(label == "square") for label in s.labels])
            stem, widths = cnn_shape(size=side, n_images=int(0.6 * n))
            aug = AugmentConfig(flip=True)
            images, _, _ = decode_images(s.paths, size=side, channels=channels)
            X = (images.float() / 255 - 0.3).reshape(n, -1)

            def decoded():
                while True:
                    idx = torch.randperm(n)
                    for i in range(0, n - 63, 64):
                        yield X[idx[i:i + 64]], y[idx[i:i + 64]]

            rows = []
            for mixed in (False, True):
                m = build_model("cnn", seed=0, channels=channels, size=side, widths=widths, stem_stride=stem,
                                augment=aug.to_dict(), mixed_precision=mixed)
                rows.append({"step": f"binclf ({'bf16 mixed' if mixed else 'float32'})", **timed(m, decoded())})
            ds = TextbookDataset(s.paths, y.numpy(), size=side, mode="L" if channels == 1 else "RGB",
                                 mean=[0.3] * channels, std=[1.0] * channels, augment=aug)
            loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, drop_last=True,
                                                 persistent_workers=True)

            def loaded():
                while True:
                    for xb, yb in loader:
                        yield xb, yb.float()

            m = build_model("cnn", seed=0, channels=channels, size=side, widths=widths, stem_stride=stem, augment=None)
            rows.append({"step": "textbook loop (float32, 2 workers)", **timed(m, loaded())})
            t = time.perf_counter()
            for i in range(64):
                ds[i]
            ms = (time.perf_counter() - t) * 1000
            rows.append({"step": "textbook data alone (64 images, 1 process)", "ms_per_step": ms, "conv_ms": 0.0,
                         "other_ms": ms, "images_per_s": 64_000 / ms})
    finally:
        torch.set_num_threads(before)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", type=Path, default=DIGITS)
    ap.add_argument("--n-small", type=int, default=2000)
    ap.add_argument("--n-large", type=int, default=1000)
    ap.add_argument("--large-side", type=int, default=128)
    ap.add_argument("--sets", default="digits,small,large",
                    help="comma-separated subset of digits, small (28px shapes), large (--large-side shapes)")
    ap.add_argument("--skip-textbook", action="store_true")
    ap.add_argument("--textbook-epochs", type=int, default=15)
    ap.add_argument("--step-split", type=int, metavar="SIDE", help="time training steps at SIDE pixels instead")
    args = ap.parse_args(argv)
    if args.step_split:
        df = step_split(args.step_split)
        print(f"{args.step_split}x{args.step_split}, batch 64, 1 torch thread, CPU: {cpu_model()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(df.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
        return
    wanted = {s.strip() for s in args.sets.split(",") if s.strip()}
    if not wanted or wanted - {"digits", "small", "large"}:
        ap.error(f"--sets takes digits, small and/or large, got {args.sets!r}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = []
        if "digits" in wanted:
            sets.append(("digits 3v8 28px", args.digits, False))
        if "small" in wanted:
            sets.append((f"shapes {args.n_small} 28px",
                         make_shapes(Path(tmp) / "small", args.n_small, side=28, colour=False), True))
        if "large" in wanted:
            sets.append((f"shapes {args.n_large} {args.large_side}px RGB",
                         make_shapes(Path(tmp) / "large", args.n_large, side=args.large_side, colour=True), True))
        for name, folder, flip in sets:
            row, result = run_binclf(folder, flip)
            rows.append({"set": name, "method": "binclf default", **row})
            print(rows[-1], file=sys.stderr, flush=True)
            pre = result.predictor.preprocessor
            rows.append({"set": name, "method": "pixel logistic", **run_logistic(folder, pre.size, pre.channels)})
            print(rows[-1], file=sys.stderr, flush=True)
            if not args.skip_textbook:
                # As many epochs as binclf ran, at most --textbook-epochs (the 128-pixel loop is slow).
                epochs = min(len(result.history), args.textbook_epochs)
                threads = result.predictor.info["torch_threads"]
                rows.append({"set": name, "method": f"textbook loop ({epochs} ep)",
                             **run_textbook(folder, result, epochs, threads)})
                print(rows[-1], file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical), load average {os.getloadavg()[0]:.1f}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}" if abs(v) < 10 else f"{v:,.0f}"))


if __name__ == "__main__":
    main()
