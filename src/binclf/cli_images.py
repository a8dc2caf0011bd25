"""The image branches of ``binclf train`` / ``predict`` / ``evaluate`` (called from :mod:`binclf.cli`).

Kept apart from the table commands: each command in ``cli.py`` hands over to
one function here when its input is images (a folder, ``--image-column``) or
its bundle is an image bundle.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click

from binclf.cli_format import metrics_table, print_decision, print_training
from binclf.errors import BundleError, ConfigError, DataError

__all__ = ["is_image_bundle", "wants_images", "train_images_command", "predict_images_command", "evaluate_images_command"]


def wants_images(data: Path | None, kw: dict[str, Any]) -> bool:
    """``binclf train`` input is images: a folder, or a CSV with ``--image-column``."""
    from binclf.io.images import is_image_input

    return data is not None and (is_image_input(data) or bool(kw.get("image_column")))


def is_image_bundle(bundle: Path) -> bool:
    """Whether ``bundle`` (verified, without torch) is an image bundle."""
    from binclf.bundle import read_meta

    try:
        return read_meta(bundle).get("kind") == "image"
    except BundleError:
        return False  # the table path reports a bad bundle in its own words


def _say(message: str) -> None:
    click.echo(message, err=True)


def train_images_command(data: Path, kw: dict[str, Any]) -> Any:
    """``binclf train FOLDER`` / ``binclf train labels.csv --image-column path --target label``."""
    from binclf import __version__

    from binclf.bundle import BUNDLE_LAYOUT, REPORT_FILE
    from binclf.io.atomic import check_output_dir

    out: Path = kw.get("out") or Path(f"{Path(data).stem or 'images'}-model")
    check_output_dir(out, layout=BUNDLE_LAYOUT, force=kw.get("force", False), option="--out", inputs=[data],
                     extra=(REPORT_FILE,))
    table_only = [k for k in ("valid_path", "test_path") if kw.get(k)] + [
        k for k in ("drop", "categorical", "numeric") if kw.get(k)
    ]
    if table_only:
        names = ", ".join("--" + k.replace("_path", "").replace("_", "-") for k in table_only)
        raise ConfigError(f"{names}: table options, not available for images; leave them out")
    if kw.get("model") not in (None, "auto"):
        raise ConfigError(f"--model {kw['model']}: images train a CNN; leave --model out")
    batch_size = kw.get("batch_size", "auto")
    if batch_size != "auto":
        try:
            batch_size = int(batch_size)
        except ValueError:
            raise ConfigError(f"--batch-size must be an integer or 'auto', got {batch_size!r}") from None
    from binclf.train.images import ImageTrainOptions, train_images

    options = ImageTrainOptions(
        target=kw.get("target"),
        image_column=kw.get("image_column"),
        positive=kw.get("positive"),
        image_size=kw.get("image_size"),
        flip=not kw.get("no_flip", False),
        skip_bad_images=kw.get("skip_bad_images", False),
        seed=kw.get("seed", 0),
        calibration=kw.get("calibration", "auto"),
        objective=kw.get("objective", "f1"),
        abstain_precision=kw.get("abstain_precision"),
        loss=kw.get("loss", "bce"),
        pos_weight=kw.get("pos_weight"),
        sampler=kw.get("sampler"),
        batch_size=batch_size,
        **({"max_epochs": kw["max_epochs"]} if kw.get("max_epochs") not in (None, 200) else {}),
        **({"lr": kw["lr"]} if kw.get("lr") not in (None, 1e-3) else {}),
    )
    header = [f"binclf {__version__}: images from {data}"]

    def log(message: str) -> None:
        while header:
            _say(header.pop())
        click.echo(f"note: {message}", err=True)

    result = train_images(data, options, log=log)
    print_training(result)
    extra = {}
    if not kw.get("no_report"):
        try:
            from binclf.report.images import render_image_report
        except ImportError:  # the report is optional
            report = None
        else:
            report = render_image_report(result).encode("utf-8")
        if report is not None:
            extra["report.html"] = report
    result.predictor.save(out, force=kw.get("force", False), extra_files=extra)
    click.echo(f"bundle written to {out}/ (model.safetensors + bundle.json)")
    if extra:
        click.echo(f"report written to {out / 'report.html'}")
    return result, out


def _image_set(data: Path, predictor: Any, *, labelled: bool):
    """A folder (recursive; class subfolders allowed) or a CSV of paths in the bundle's image column."""
    from binclf.io.images import ImageSet, find_class_folders, list_images, read_labels_csv

    data = Path(data)
    if data.is_dir():
        if labelled:
            return find_class_folders(data)
        paths = list_images(data)
        if not paths:
            raise DataError(f"{data}: the folder holds no images; pass a folder of PNG, JPEG, BMP or WebP files")
        return ImageSet(root=data, paths=paths, names=[p.relative_to(data).as_posix() for p in paths])
    column = predictor.image_column
    if column is None:
        raise DataError(
            f"{data}: this model was trained on a folder of images; pass a folder"
            + (" with one subfolder per class" if labelled else "")
        )
    return read_labels_csv(data, image_column=column, target=predictor.target.column if labelled else None)


def predict_images_command(bundle: Path, data: Path, output: Path | None, *, threshold: float | None,
                           skip_bad: bool) -> None:
    """``binclf predict IMAGE_BUNDLE FOLDER_OR_CSV -o predictions.csv``: path, probability, prediction."""
    import time

    from binclf.image_predictor import ImagePredictor

    t0 = time.perf_counter()
    if output is not None and output.is_dir():
        raise DataError(f"--output {output} is a directory: pass a file name ending in .csv")
    predictor = ImagePredictor.load(bundle)
    image_set = _image_set(data, predictor, labelled=False)
    frame, notices = predictor.predict_images_frame(image_set, threshold=threshold, skip_bad=skip_bad)
    for n in notices:
        click.echo(f"note: {n}", err=True)
    if output is None:
        click.echo(frame.to_csv(index=False), nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            frame.to_csv(fh, index=False)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    _say(f"wrote {len(frame)} predictions to {output} ({seconds:.2f} s, {len(frame) / max(seconds, 1e-9):,.0f} images/s)")


def evaluate_images_command(bundle: Path, data: Path, *, threshold: float | None, as_json: bool, skip_bad: bool) -> None:
    """``binclf evaluate IMAGE_BUNDLE LABELLED_FOLDER_OR_CSV``."""
    import json

    from binclf.decide.metrics import binary_metrics, bootstrap_intervals
    from binclf.image_predictor import ImagePredictor

    predictor = ImagePredictor.load(bundle)
    image_set = _image_set(data, predictor, labelled=True)
    y, proba, _, notices = predictor.labelled_images(image_set, source=str(data), skip_bad=skip_bad)
    for n in notices:
        click.echo(f"note: {n}", err=True)
    metrics = binary_metrics(y, proba, threshold=predictor.effective_threshold(threshold))
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    intervals = bootstrap_intervals(y, proba, threshold=metrics["threshold"])
    click.echo(metrics_table(metrics, intervals, title=f"metrics on {data} ({int(metrics['n'])} images)"))


def info_images_command(bundle: Path) -> None:
    """``binclf info IMAGE_BUNDLE``: labels, input layout, network, calibration, threshold, test metrics."""
    from binclf.image_predictor import ImagePredictor

    p = ImagePredictor.load(bundle)
    pre, m = p.preprocessor, p.members[0]
    t = p.target
    click.echo(f"bundle     {bundle} (images)")
    click.echo(f"target     {t.column!r}: positive {t.positive!r}, negative {t.negative!r}")
    click.echo(f"input      {pre.channels} x {pre.size} x {pre.size} ({pre.mode}), normalised with mean "
               f"{[round(v, 4) for v in pre.mean]}, std {[round(v, 4) for v in pre.std]}"
               + (f"; CSV column {p.image_column!r}" if p.image_column else ""))
    click.echo(f"model      {m.kind}(widths={m.config['widths']}, stem_stride={m.config['stem_stride']}, "
               f"dropout={m.config['dropout']})")
    print_decision(p)
