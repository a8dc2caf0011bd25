"""Images on disk: finding them (class folders or a labels CSV), checking them, decoding them once.

Two layouts are read:

- a **folder** with exactly two class subfolders (``cats/``, ``dogs/``), images
  anywhere below each (read recursively);
- a **CSV** with an image-path column and a label column; paths are relative
  to the CSV's folder.

Every image is decoded once, in parallel threads (Pillow releases the GIL
while it decodes), converted to one channel layout (``L`` or ``RGB``) and
resized to one square size, into a ``uint8`` tensor ``(n, C, S, S)``.
A file that is not an image, or is truncated, is an error naming the file;
with ``skip_bad=True`` up to 1% of the files are skipped and listed instead.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from binclf.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "GREY_MODES",
    "ImageSet",
    "is_image_input",
    "find_class_folders",
    "list_images",
    "read_labels_csv",
    "scan_images",
    "choose_layout",
    "decode_images",
    "decode_image_bytes",
    "MAX_BAD_FRACTION",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Pillow modes that hold one channel of intensity.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
MAX_BAD_FRACTION = 0.01
_IGNORED = frozenset({"thumbs.db", "desktop.ini"})


@dataclass
class ImageSet:
    """Image files and (for labelled sets) their labels, as found on disk.

    ``paths`` are absolute; ``names`` are what the user sees (relative to the
    folder or as written in the CSV); ``labels`` is None for unlabelled sets.
    """

    root: Path
    paths: list[Path]
    names: list[str]
    labels: list[str] | None = None
    notices: list[str] = field(default_factory=list)

    def subset(self, keep: np.ndarray) -> "ImageSet":
        idx = np.flatnonzero(keep)
        return ImageSet(
            root=self.root,
            paths=[self.paths[i] for i in idx],
            names=[self.names[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            notices=list(self.notices),
        )


def is_image_input(path: str | Path) -> bool:
    """Whether ``path`` is image input: a folder, or an image file."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS


def _visible(p: Path) -> bool:
    return not p.name.startswith(".") and p.name.lower() not in _IGNORED


def list_images(folder: str | Path) -> list[Path]:
    """Every visible file below ``folder`` (recursively, sorted); hidden files and folders are skipped.

    Non-image files are returned too: decoding them reports them by name.
    """
    folder = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if _visible(Path(f))]
    return out


def find_class_folders(folder: str | Path) -> ImageSet:
    """A labelled folder: exactly two class subfolders, each with at least one file.

    Raises DataError for a missing folder, not exactly two subfolders, an
    empty class, or files directly in ``folder`` (outside any class).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; pass a folder with one subfolder per class")
    entries = [p for p in sorted(folder.iterdir()) if _visible(p)]
    classes = [p for p in entries if p.is_dir()]
    stray = [p for p in entries if p.is_file()]
    if len(classes) != 2:
        found = ", ".join(p.name for p in classes[:10]) or "none"
        raise DataError(
            f"{folder}: expected exactly two class subfolders (one per class, e.g. yes/ and no/), found "
            f"{len(classes)} ({found}); put the images in two folders named after the classes"
        )
    if stray:
        raise DataError(
            f"{stray[0]}: {len(stray)} file(s) lie directly in {folder}, outside the class folders "
            f"{classes[0].name}/ and {classes[1].name}/; move them into one of them or remove them"
        )
    paths: list[Path] = []
    labels: list[str] = []
    for c in classes:
        files = list_images(c)
        if not files:
            raise DataError(f"{c}: the class folder {c.name!r} has no images; add images of that class or remove it")
        paths += files
        labels += [c.name] * len(files)
    names = [p.relative_to(folder).as_posix() for p in paths]
    return ImageSet(root=folder, paths=paths, names=names, labels=labels)


def read_labels_csv(csv: str | Path, *, image_column: str, target: str | None) -> ImageSet:
    """A labels CSV: ``image_column`` holds paths relative to the CSV, ``target`` the labels (or None)."""
    import pandas as pd

    csv = Path(csv)
    if not csv.is_file():
        raise DataError(f"{csv}: no such file; pass a folder of images or a CSV of image paths")
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: not a readable CSV ({' '.join(str(exc).split())})") from None
    for col, flag in ((image_column, "--image-column"), (target, "--target")):
        if col is not None and col not in df.columns:
            raise DataError(
                f"{csv}: no column {col!r} ({flag}); the columns are {', '.join(map(repr, list(df.columns)[:20]))}"
            )
    names = [str(v).strip() for v in df[image_column]]
    empty = [i for i, n in enumerate(names) if not n]
    if empty:
        raise DataError(f"{csv}: row {empty[0] + 2} has an empty {image_column!r}; give every row an image path")
    paths = [(csv.parent / n).resolve() for n in names]
    missing = [(n, p) for n, p in zip(names, paths) if not p.is_file()]
    if missing:
        raise DataError(
            f"{missing[0][1]}: image listed in {csv} ({image_column!r} = {missing[0][0]!r}) does not exist "
            f"({len(missing)} missing in all); paths are relative to the CSV's folder"
        )
    labels = None
    if target is not None:
        labels = list(df[target])
        blank = [i for i, v in enumerate(labels) if not str(v).strip()]
        if blank:
            raise DataError(f"{csv}: row {blank[0] + 2} has no {target!r} label; label every image")
    return ImageSet(root=csv.parent, paths=paths, names=names, labels=labels)


def _header(path: Path) -> tuple[tuple[int, int], str] | str:
    """``(size, mode)`` from the file header, or the reason it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except UnidentifiedImageError:
        return "not an image Pillow can read (PNG, JPEG, BMP, WebP)"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable ({' '.join(str(exc).split())})"


def scan_images(paths: Sequence[Path], *, workers: int | None = None) -> list[tuple[tuple[int, int], str] | str]:
    """Headers of ``paths`` (size and mode, or a reason), read in parallel without decoding pixels."""
    with ThreadPoolExecutor(max_workers=_workers(workers)) as pool:
        return list(pool.map(_header, paths, chunksize=64))


def choose_layout(headers: Sequence[tuple[tuple[int, int], str]], *, image_size: int | None) -> tuple[int, int, str]:
    """``(size, channels, reason)``: the square side and channel count for a set of headers.

    Channels: 1 when every image is greyscale, else 3 (RGB). The side: the
    median of the images' longer sides, clamped to [16, 128] (a CNN's cost on a
    CPU grows with its square; most binary questions are answered at 128),
    unless ``image_size`` is given.
    """
    modes = Counter("grey" if m in GREY_MODES else "colour" for _, m in headers)
    channels = 1 if modes.get("colour", 0) == 0 else 3
    why = "all images are greyscale" if channels == 1 else (
        "all images are in colour" if modes.get("grey", 0) == 0 else
        f"{modes['grey']} greyscale and {modes['colour']} colour images: all converted to RGB"
    )
    if image_size is None:
        sides = [max(s) for s, _ in headers]
        image_size = int(np.clip(np.median(sides), 16, 128))
    return int(image_size), channels, why


def _decode_one(path: Path | BinaryIO, size: int, mode: str) -> np.ndarray | str:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(mode, (size, size))  # JPEG decodes at a reduced scale directly: much faster
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P", "PA") and mode == "RGB":
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                im = Image.fromarray(((a - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8))
            im = im.convert(mode)
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
            a = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        return "not an image Pillow can read (PNG, JPEG, BMP, WebP)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"unreadable or truncated ({' '.join(str(exc).split())})"
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def decode_image_bytes(data: bytes, *, size: int, channels: int, max_pixels: int | None = None) -> np.ndarray | str:
    """One encoded image (the bytes of a PNG, JPEG, BMP or WebP file) -> ``uint8 (C, S, S)``, or why it cannot be.

    The same decoding as :func:`decode_images` (so a served image gets the
    probability ``binclf predict`` gives its file). ``max_pixels`` refuses
    images whose header declares more pixels, before any decoding: a few
    kilobytes of PNG can declare gigabytes of pixels.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    if not data:
        return "is empty (0 bytes); send the bytes of a PNG, JPEG, BMP or WebP file"
    if max_pixels is not None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
        except UnidentifiedImageError:
            return "not an image Pillow can read (PNG, JPEG, BMP, WebP)"
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            return f"unreadable or truncated ({' '.join(str(exc).split())})"
        if w * h > max_pixels:
            return f"is {w}x{h} pixels, more than the {max_pixels:,} this server decodes; send a smaller image"
    return _decode_one(io.BytesIO(data), size, "L" if channels == 1 else "RGB")


def _workers(workers: int | None) -> int:
    return int(workers or min(8, (os.cpu_count() or 1) * 2))


def decode_images(
    paths: Sequence[Path],
    *,
    size: int,
    channels: int,
    names: Sequence[str] | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
):
    """Decode, convert and resize every image once: ``(uint8 tensor (n, C, S, S), kept mask (n,), notices)``.

    A bad file is a DataError naming it, unless ``skip_bad``: then up to 1%
    of the files (``MAX_BAD_FRACTION``) may be skipped, each listed in the notice.
    """
    import torch

    names = list(names) if names is not None else [str(p) for p in paths]
    mode = "L" if channels == 1 else "RGB"
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    arr = out.numpy()
    bad: list[tuple[int, str]] = []

    def work(i: int) -> None:
        a = _decode_one(paths[i], size, mode)
        if isinstance(a, str):
            bad.append((i, a))
        else:
            arr[i] = a

    with ThreadPoolExecutor(max_workers=_workers(workers)) as pool:
        list(pool.map(work, range(len(paths)), chunksize=32))
    keep = np.ones(len(paths), dtype=bool)
    notices: list[str] = []
    if bad:
        bad.sort()
        check_bad(bad, paths, n_total=len(paths), skip_bad=skip_bad)
        keep[[i for i, _ in bad]] = False
        out = out[torch.from_numpy(keep)]
        shown = ", ".join(names[i] for i, _ in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        notices.append(f"skipped {len(bad)} unreadable image(s) of {len(paths)} (--skip-bad-images): {shown}")
    return out, keep, notices


def check_bad(bad: Sequence[tuple[int, str]], paths: Sequence[Path], *, n_total: int, skip_bad: bool) -> None:
    """Raise for the first bad file, unless skipping is allowed and they are at most 1% of the files."""
    i, reason = bad[0]
    if not skip_bad:
        more = f" ({len(bad)} bad files in all)" if len(bad) > 1 else ""
        raise DataError(
            f"{paths[i]}: {reason}{more}; remove or replace it, or pass --skip-bad-images to skip up to 1% of the files"
        )
    allowed = int(MAX_BAD_FRACTION * n_total)
    if len(bad) > allowed:
        raise DataError(
            f"{paths[i]}: {reason}; {len(bad)} of {n_total} files are unreadable, more than "
            f"--skip-bad-images allows (1%, {allowed} files); fix or remove them"
        )
