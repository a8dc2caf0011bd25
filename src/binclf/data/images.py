"""The fitted image preprocessing: channel layout, square size, per-channel normalisation.

Stored as JSON in the bundle. Decoding and resizing happen in
:mod:`binclf.io.images`; this turns the decoded ``uint8`` tensor into the
model's float input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ImagePreprocessor", "fit_image_preprocessor"]


@dataclass(frozen=True)
class ImagePreprocessor:
    """Images of ``channels`` x ``size`` x ``size`` pixels, normalised per channel.

    The model input is ``(pixel / 255 - mean[c]) / std[c]``, flattened to
    ``(n, channels * size * size)`` float32 (channels first, rows, columns).
    ``mean`` and ``std`` are those of the training images. An exported ONNX
    model takes ``pixel / 255`` as ``(n, channels, size, size)`` and
    normalises inside the graph (:mod:`binclf.export.images`).
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def mode(self) -> str:
        """The Pillow mode images are converted to: ``L`` or ``RGB``."""
        return "L" if self.channels == 1 else "RGB"

    @property
    def n_features_out_(self) -> int:
        return self.channels * self.size * self.size

    def transform(self, images: Tensor) -> Tensor:
        """``uint8 (n, C, S, S)`` -> normalised ``float32 (n, C * S * S)``."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (self.channels, self.size, self.size):
            raise ValueError(
                f"images must have shape (n, {self.channels}, {self.size}, {self.size}), got {tuple(images.shape)}"
            )
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = images.to(torch.float32).mul_(1 / 255).sub_(mean).div_(std)
        return x.reshape(len(images), -1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "image", **asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImagePreprocessor":
        return cls(size=int(d["size"]), channels=int(d["channels"]), mean=tuple(d["mean"]), std=tuple(d["std"]))


def fit_image_preprocessor(images: Tensor) -> ImagePreprocessor:
    """Per-channel mean and standard deviation of training images ``uint8 (n, C, S, S)``."""
    n, c, s, _ = images.shape
    mean, std = [], []
    for k in range(c):
        v = images[:, k].to(torch.float64) / 255
        mean.append(float(v.mean()))
        std.append(max(float(v.std()), 1e-3))
    return ImagePreprocessor(size=int(s), channels=int(c), mean=tuple(mean), std=tuple(std))
