"""From a folder (or labels CSV) of images to a calibrated, thresholded :class:`~binclf.image_predictor.ImagePredictor`.

``train_images`` is the image counterpart of :func:`binclf.train.pipeline.train_table`
and what ``binclf train FOLDER`` runs: find and check the images, encode the
labels with the tables' positive-class rule, choose the channel layout and
size from the data, decode every image once into a ``uint8`` tensor, split
(stratified train / validation / test), fit the normalisation on the training
images, train the compact CNN (:class:`binclf.nn.models.ImageCNN`, batch
augmentation in training mode) with the same :class:`~binclf.train.trainer.Trainer`
(AdamW, early stopping on validation loss, bias at logit(prior), the logit
shift of any imbalance treatment undone), calibrate and choose the threshold
on validation predictions, and report metrics with bootstrap intervals on the
test images, which nothing above has seen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from binclf.data.images import fit_image_preprocessor
from binclf.data.split import stratified_split
from binclf.data.target import encode_target
from binclf import probe, runtime
from binclf.decide.thresholds import parse_objective
from binclf.errors import ConfigError, DataError
from binclf.image_predictor import ImagePredictor, image_member_logits
from binclf.io.images import ImageSet, check_bad, choose_layout, decode_images, find_class_folders, read_labels_csv, scan_images
from binclf.nn.augment import AugmentConfig
from binclf.nn.models import build_model
from binclf.nn.models.cnn import cnn_macs, cnn_shape, native_bf16
from binclf.numeric import sigmoid
from binclf.predictor import Member
from binclf.train.pipeline import TrainResult, decide_on_held_out
from binclf.train.trainer import TrainConfig, Trainer, auto_batch_size

__all__ = ["ImageTrainOptions", "ImageTrainResult", "train_images", "load_image_set"]

FOLDER_TARGET = "class"  # the target's name when the labels are folder names


@dataclass(frozen=True)
class ImageTrainOptions:
    """Everything ``binclf train FOLDER`` can be told; round-trips to JSON (stored in the bundle).

    ``image_size``: the square side images are resized to (None: from the
    data); ``flip``: random horizontal flips in augmentation (turn off where
    orientation carries the meaning: digits, text); ``augment``: augmentation
    on or off; ``skip_bad_images``: skip up to 1% unreadable files.
    """

    target: str | None = None
    image_column: str | None = None
    positive: str | None = None
    image_size: int | None = None
    flip: bool = True
    augment: bool = True
    skip_bad_images: bool = False
    valid_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    calibration: str = "auto"
    objective: str = "f1"
    abstain_precision: float | None = None
    loss: str = "bce"
    pos_weight: float | str | None = None
    sampler: str | None = None
    lr: float = 2e-3
    lr_schedule: str | None = "cosine"
    weight_decay: float = 5e-4
    batch_size: int | str = "auto"
    max_epochs: int | None = None
    patience: int | None = None
    dropout: float = 0.2
    n_boot: int = 200

    def __post_init__(self) -> None:
        problems = []
        if self.image_size is not None and not 8 <= int(self.image_size) <= 1024:
            problems.append(f"--image-size must be in [8, 1024], got {self.image_size}")
        for name in ("valid_fraction", "test_fraction"):
            v = getattr(self, name)
            if not 0.0 < v < 0.5:
                problems.append(f"{name} must be in (0, 0.5), got {v}")
        if problems:
            raise ConfigError("; ".join(problems))
        parse_objective(self.objective)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageTrainResult(TrainResult):
    """A :class:`TrainResult` plus the test images (for the report's example grids)."""

    test_images: Any = None  # uint8 (n_test, C, S, S)
    test_names: list[str] = field(default_factory=list)


def load_image_set(data: str | Path, *, image_column: str | None, target: str | None) -> ImageSet:
    """A folder of class subfolders, or a CSV of image paths (``image_column``) and labels (``target``)."""
    data = Path(data)
    if data.is_dir():
        return find_class_folders(data)
    if image_column is None:
        raise DataError(
            f"{data}: pass a folder with one subfolder per class, or a CSV with --image-column PATH_COLUMN --target LABEL"
        )
    if target is None:
        raise DataError(f"{data}: pass --target, the CSV column holding each image's label")
    return read_labels_csv(data, image_column=image_column, target=target)


def _read_headers(image_set: ImageSet, skip_bad: bool) -> tuple[ImageSet, list, list[str]]:
    """Headers of every file; bad ones raise (or are dropped with ``skip_bad``)."""
    headers = scan_images(image_set.paths)
    bad = [(i, h) for i, h in enumerate(headers) if isinstance(h, str)]
    if not bad:
        return image_set, headers, []
    check_bad(bad, image_set.paths, n_total=len(headers), skip_bad=skip_bad)
    keep = np.array([not isinstance(h, str) for h in headers])
    shown = ", ".join(image_set.names[i] for i, _ in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
    notice = f"skipped {len(bad)} unreadable file(s) of {len(headers)} (--skip-bad-images): {shown}"
    return image_set.subset(keep), [h for h in headers if not isinstance(h, str)], [notice]


# The default's training budget, in modelled seconds of one CPU core: a step
# costs about _MS_PER_IMAGE + _MS_PER_MMAC per million forward multiply-adds
# per image (fitted to measurements at 28 and 128 pixels on one core of the
# 2-core development machine, channels-last). A network trained from scratch
# also needs enough optimiser steps, whatever the images cost: at least
# _MIN_STEPS. Epochs stay within [10, 60]; the cosine schedule decays over
# exactly those epochs, and early stopping may end sooner.
_BUDGET_SECONDS = 45.0
_MS_PER_IMAGE = 0.93
_MS_PER_MMAC = 0.4
_MIN_STEPS = 400
_EPOCHS = (10, 60)


def auto_epochs(*, n_train: int, macs: float, batch_size: int) -> int:
    """Epochs the default trains: the budget over the modelled cost of an epoch, at least ``_MIN_STEPS`` steps."""
    per_image = (_MS_PER_IMAGE + _MS_PER_MMAC * macs / 1e6) / 1000
    by_budget = _BUDGET_SECONDS / max(n_train * per_image, 1e-9)
    by_steps = _MIN_STEPS / max(math.ceil(n_train / batch_size), 1)
    return int(np.clip(max(by_budget, by_steps), *_EPOCHS))


def _train_config(options: ImageTrainOptions, n_train: int, macs: float) -> TrainConfig:
    batch_size = options.batch_size
    if batch_size == "auto":
        # At most 64: from-scratch CNNs on a few thousand images need steps more than big batches.
        batch_size = auto_batch_size(n_train, largest=64)
    max_epochs = options.max_epochs or auto_epochs(n_train=n_train, macs=macs, batch_size=int(batch_size))
    # The validation loss bounces while the cosine schedule's rate is high: a
    # third of the schedule (at least 6 epochs) without improvement stops.
    patience = options.patience or max(6, math.ceil(max_epochs / 3))
    return TrainConfig(
        lr=options.lr, lr_schedule=options.lr_schedule, weight_decay=options.weight_decay, batch_size=int(batch_size), max_epochs=max_epochs,
        patience=patience, seed=options.seed, loss=options.loss, pos_weight=options.pos_weight,
        sampler=options.sampler, eval_batch_size=256, verbose=False, compile=False,
    )


def _step_probe(module: torch.nn.Module, X: torch.Tensor, y: np.ndarray, batch_size: int) -> Callable[[], None]:
    """One training step's forward and backward on a copy of ``module`` and the first batch, changing nothing.

    The copy takes the running statistics, the gradients are returned rather
    than stored, and torch's random stream (augmentation, dropout) is put back,
    so timing it (:func:`binclf.probe.plan_threads`) leaves the fit as it would be.
    """
    import copy

    copied = copy.deepcopy(module).train()
    params = [p for p in copied.parameters() if p.requires_grad]
    xb, yb = X[:batch_size].contiguous(), torch.as_tensor(y[:batch_size])

    def run() -> None:
        with torch.random.fork_rng(devices=[]):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(copied(xb), yb)
            torch.autograd.grad(loss, params)

    return run


class _EpochThreadGuard:
    """Trainer callback: one torch thread for the rest of the fit when epochs on several run 1.5x slower than the best.

    The probe's choice holds for the load of its moment; when other processes
    take the cores later, a second intra-op thread turns every step into a
    wait. The trainer's own guard compares windows of 16 steps, more than an
    image epoch often has (600 images at batch 64: 10), so this one compares
    epochs: their training seconds, the validation pass left out
    (:class:`binclf.probe.ThreadGuard` on that clock). The count is lowered
    through :func:`binclf.runtime.lower_threads`, inside the fit's session,
    which restores it.
    """

    def __init__(self, threads: int, *, steps_per_epoch: int) -> None:
        self.steps = max(1, steps_per_epoch)
        self.seconds = 0.0
        self.guard = probe.ThreadGuard(threads, slower=1.5, clock=lambda: self.seconds)
        self.guard.tick(0)  # the first window starts now

    @property
    def threads(self) -> int:
        return self.guard.threads

    def __call__(self, trainer: Trainer, log: dict[str, float]) -> bool:
        self.seconds += log["seconds"] - log.get("valid_seconds", 0.0)
        if self.guard.tick(self.steps):
            runtime.lower_threads(1)
            runtime.note_choice("threads", "1 thread (epochs slowed down during the fit: load arrived)")
        return False


@runtime.entry_point("train")  # threads, BLAS and malloc set here and restored (binclf.runtime)
def train_images(
    data: str | Path,
    options: ImageTrainOptions,
    *,
    log: Callable[[str], None] | None = None,
) -> ImageTrainResult:
    """Train on a folder of class subfolders or a labels CSV; see the module docstring for the steps.

    Parameters
    ----------
    data : path
        A folder with exactly two class subfolders, or a CSV with ``options.image_column``
        (paths relative to the CSV) and ``options.target``.
    options : ImageTrainOptions
    log : callable, optional
        Receives one-line notes (layout, positive class, progress).

    Returns
    -------
    ImageTrainResult
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    image_set = load_image_set(data, image_column=options.image_column, target=options.target)
    target_name = options.target or FOLDER_TARGET
    # The positive class by the tables' rule, on all labels (checks there are exactly two).
    encode_target(pd.Series(image_set.labels), column=target_name, positive=options.positive)
    image_set, headers, notices = _read_headers(image_set, options.skip_bad_images)
    size, channels, why = choose_layout(headers, image_size=options.image_size)
    images, keep, more = decode_images(
        image_set.paths, size=size, channels=channels, names=image_set.names, skip_bad=options.skip_bad_images
    )
    notices += more
    if not keep.all():
        image_set = image_set.subset(keep)
    y, _, target, target_notices = encode_target(pd.Series(image_set.labels), column=target_name, positive=options.positive)
    notices = target_notices + notices
    y = y.astype(np.float32)
    sides = sorted(max(s) for s, _ in headers)
    size_why = "--image-size" if options.image_size else f"median image side {int(np.median(sides))}, clamped to [16, 128]; --image-size to change"
    notices.append(f"{len(y)} images; channels: {channels} ({why}); size {size}x{size} ({size_why})")
    for n in notices:
        say(n)

    fractions = (1 - options.valid_fraction - options.test_fraction, options.valid_fraction, options.test_fraction)
    idx = dict(zip(("train", "valid", "test"), stratified_split(y, fractions=fractions, seed=options.seed)))
    for name, rows in idx.items():
        if len(np.unique(y[rows])) < 2:
            raise DataError(
                f"{data}: the {name} split has only one class ({len(rows)} images): add images of the rarer class"
            )
    prep = fit_image_preprocessor(images[torch.from_numpy(idx["train"])])
    X = {k: prep.transform(images[torch.from_numpy(v)]) for k, v in idx.items()}
    Y = {k: y[v] for k, v in idx.items()}

    stem, widths = cnn_shape(size=size, n_images=len(idx["train"]))
    augment = AugmentConfig(flip=options.flip).to_dict() if options.augment else None
    # bf16 convolutions in training where the CPU has them natively (eval and prediction stay float32).
    config = {"channels": channels, "size": size, "widths": widths, "stem_stride": stem, "dropout": options.dropout,
              "augment": augment, "mixed_precision": native_bf16()}
    module = build_model("cnn", seed=options.seed, **config)
    macs = cnn_macs(channels=channels, size=size, widths=widths, stem_stride=stem)
    train_config = _train_config(options, len(idx["train"]), macs)
    say(
        f"training cnn (widths {widths}, stem stride {stem}, augmentation {'on' if augment else 'off'}"
        f"{', no flips' if augment and not options.flip else ''}"
        f"{', bf16 mixed precision' if config['mixed_precision'] else ''}; up to {train_config.max_epochs} epochs, "
        f"early stopping on validation loss) on {len(idx['train'])} images "
        f"(validation {len(idx['valid'])}, test {len(idx['test'])})"
    )
    t_fit = time.perf_counter()
    # The step is autograd's, eager: torch.compile of it did not pay (AMD EPYC, 1 thread, 128 px,
    # batch 64, compiled vs eager: the whole step 240 vs 165 ms, 33 s to compile, inductor's grid_sample
    # alone 211 vs 47 ms; the convolution blocks alone 176 vs 181 ms of CPU, within noise, 16 s to compile).
    # The training threads: measured on this step (or the user's --threads), in
    # force for the fit only; the session restores the count for what follows.
    with runtime.session(purpose="train"):
        run = _step_probe(module, X["train"], Y["train"], train_config.batch_size)
        key = ("image cnn", train_config.batch_size, json.dumps(config, sort_keys=True))
        report = probe.plan_threads(run, key=key, prepare=lambda _threads: run())
        callbacks, guard = [], None
        if report.threads > 1 and not runtime.threads_pinned():
            guard = _EpochThreadGuard(report.threads,
                                      steps_per_epoch=math.ceil(len(idx["train"]) / train_config.batch_size))
            callbacks.append(guard)
        trainer = Trainer(train_config, callbacks=callbacks).fit(
            module, X["train"], Y["train"], X_valid=X["valid"], y_valid=Y["valid"]
        )
        threads = guard.threads if guard is not None else report.threads
    fit_seconds = time.perf_counter() - t_fit
    image_epochs = len(idx["train"]) * len(trainer.history_)
    # Training throughput: the epochs' time less their validation passes.
    loop_seconds = sum(h["seconds"] - h.get("valid_seconds", 0.0) for h in trainer.history_)
    say(
        f"trained {len(trainer.history_)} epochs (best {trainer.best_epoch_}) in {fit_seconds:.1f} s, "
        f"{image_epochs / max(loop_seconds, 1e-9):,.0f} training images/s, {threads} torch thread(s)"
    )
    members = [Member("cnn", config, module.eval(), 1.0, trainer.logit_shift_)]
    z_valid = image_member_logits(members, X["valid"])
    z_test = image_member_logits(members, X["test"])
    d = decide_on_held_out(z_valid, Y["valid"], z_test, Y["test"], options, notices=notices)
    calibrator, cal_info, policy, p_valid, p_test = d.calibrator, d.calibration_info, d.policy, d.p_held, d.p_test
    metrics, intervals, valid_metrics, y_test = d.metrics, d.intervals, d.valid_metrics, Y["test"]
    summary = {
        "source": str(data),
        "rows": int(len(y)),
        "positives": int(target.n_positive),
        "negatives": int(target.n_negative),
        "positive_label": target.positive,
        "negative_label": target.negative,
        "columns": [{"name": f"image {channels}x{size}x{size}", "role": "image", "dtype": "uint8", "missing": 0,
                     "distinct": int(len(y))}],
        "dropped": [],
        "split_rows": {k: int(len(v)) for k, v in idx.items()},
    }
    seconds = time.perf_counter() - t0
    predictor = ImagePredictor(
        preprocessor=prep,
        image_column=options.image_column,
        target=target,
        members=members,
        calibrator=calibrator,
        threshold=policy,
        info={
            "options": options.to_dict(),
            "metrics": {"test": metrics, "valid": valid_metrics},
            "intervals": {k: list(v) for k, v in intervals.items()},
            "calibration": cal_info,
            "history": trainer.history_,
            "summary": summary,
            "train_config": train_config.to_dict(),
            "notices": notices,
            "train_seconds": seconds,
            "training_images_per_second": image_epochs / max(loop_seconds, 1e-9),
            "torch_threads": threads,
        },
    )
    return ImageTrainResult(
        predictor=predictor,
        metrics=metrics,
        intervals=intervals,
        valid_metrics=valid_metrics,
        notices=notices,
        history=trainer.history_,
        summary=summary,
        calibration_info=cal_info,
        curves={
            "y_valid": Y["valid"],
            "p_valid_raw": sigmoid(z_valid),
            "p_valid": p_valid,
            "y_test": y_test,
            "p_test_raw": sigmoid(z_test),
            "p_test": p_test,
        },
        seconds=seconds,
        test_images=images[torch.from_numpy(idx["test"])],
        test_names=[image_set.names[i] for i in idx["test"]],
    )
