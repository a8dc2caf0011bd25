"""A compact CNN for binary image classification, ending in one logit."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from binclf.nn.augment import Augment, AugmentConfig
from binclf.nn.models.base import register

__all__ = ["ImageCNN", "cnn_macs", "cnn_shape", "native_bf16"]


def cnn_shape(*, size: int, n_images: int) -> tuple[int, list[int]]:
    """``(stem_stride, widths)``: the network's shape from the image side and the image count.

    Depth: stride-2 stages until the feature map is about 4-7 pixels wide
    (28 -> 2 stages, 64 -> 4, 128 -> 4 after a stride-2 stem), so the
    receptive field covers the image. Width: 16 channels at first, doubling per
    stage up to 128; twice that (up to 256) from 10,000 images, where there is
    data enough for the extra capacity. Images of 64 pixels and more start
    with a stride-2 stem: full-resolution convolutions dominate a CPU's time.
    """
    stem_stride = 2 if size >= 64 else 1
    side = size // stem_stride
    stages = max(1, int(math.floor(math.log2(max(side, 4) / 4))))
    base = 32 if n_images >= 10_000 else 16
    cap = 256 if n_images >= 10_000 else 128
    widths = [min(base * 2**i, cap) for i in range(stages + 1)]
    return stem_stride, widths


def cnn_macs(*, channels: int, size: int, widths: Sequence[int], stem_stride: int) -> float:
    """Multiply-adds of one image's forward pass through the convolutions."""
    side = -(-size // stem_stride)
    macs = side * side * channels * widths[0] * 9
    for a, b in zip(widths, widths[1:]):
        side = -(-side // 2)
        macs += side * side * a * b * 9
    return float(macs)


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16), where oneDNN's bf16 convolutions pay.

    Elsewhere bf16 is emulated and slower than float32.
    """
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes
        return False


def _block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    # No conv bias: BatchNorm's shift right after it makes it redundant.
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register("cnn")
class ImageCNN(nn.Module):
    """Conv-BatchNorm-ReLU blocks (stride-2 downsampling), global average pooling, dropout, ``Linear(d, 1)``.

    ``forward`` maps normalised images, flattened ``(n, channels * size * size)``
    or ``(n, channels, size, size)``, to ``(n,)`` logits. In training mode the
    batch is first augmented (:func:`binclf.nn.augment.augment_batch`); in eval
    mode it is not. The output layer has no activation; its bias starts at
    ``logit(prior)`` (:func:`binclf.nn.models.init_output_bias`).

    ``mixed_precision``: in training mode, the convolution blocks run under
    bfloat16 autocast (weights, gradients and optimiser state stay float32;
    pooling, the output layer and the loss too). On a CPU with native bf16
    (:func:`native_bf16`) that cuts a 128-pixel step by about a third. Eval
    mode, and so every prediction and export, is float32 either way.
    """

    def __init__(
        self,
        channels: int,
        size: int,
        widths: Sequence[int] = (16, 32, 64),
        stem_stride: int = 1,
        dropout: float = 0.2,
        augment: dict[str, Any] | None = None,
        mixed_precision: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.channels, self.size = int(channels), int(size)
        self.widths = [int(w) for w in widths]
        self.stem_stride = int(stem_stride)
        self.dropout = float(dropout)
        self.mixed_precision = bool(mixed_precision)
        self.augment_config = None if augment is None else AugmentConfig(**augment)
        self.augment = Augment(self.augment_config) if augment is not None else nn.Identity()
        layers = _block(self.channels, self.widths[0], self.stem_stride)
        for a, b in zip(self.widths, self.widths[1:]):
            layers += _block(a, b, 2)
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(self.dropout)
        self.output = nn.Linear(self.widths[-1], 1)
        # oneDNN's CPU convolutions run ~1.4x faster on channels-last tensors (measured, 28-128 px);
        # on an AMD EPYC (AVX2, 1 thread) the 128-pixel network's five convolutions, forward and
        # backward at batch 64, took 119 ms channels-last against 198 ms contiguous.
        self.body.to(memory_format=torch.channels_last)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable (what a bundle stores)."""
        return {
            "channels": self.channels,
            "size": self.size,
            "widths": list(self.widths),
            "stem_stride": self.stem_stride,
            "dropout": self.dropout,
            "augment": None if self.augment_config is None else self.augment_config.to_dict(),
            "mixed_precision": self.mixed_precision,
        }

    @torch.no_grad()
    def refresh_statistics(self, x: Tensor, *, batch_size: int = 128) -> None:
        """Set every BatchNorm's running statistics to those of images ``x`` as eval mode sees them.

        Training normalises each batch by its own statistics and keeps a
        moving average of them for eval mode. But the training batches are
        augmented and (``mixed_precision``) bf16 where eval sees clean float32
        images, and the average trails weights that still move fast: on the
        image benchmark's 28x28 shapes the validation loss with the moving
        averages jumped between 0.15 and 3.2 from epoch to epoch (early
        stopping picking among those jumps) while with the statistics
        recomputed here ("precise BatchNorm") it fell smoothly from 0.66 to
        0.07. ``x``: normalised images as ``forward`` takes them, a few
        hundred are enough for per-channel means and variances; each chunk of
        ``batch_size`` counts equally (a cumulative average).
        """
        bns = [m for m in self.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta, was_training = [m.momentum for m in bns], self.body.training
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.body.train()
        try:
            for lo in range(0, len(x), batch_size):
                chunk = x[lo : lo + batch_size]
                self.body(chunk.reshape(len(chunk), self.channels, self.size, self.size)
                          .contiguous(memory_format=torch.channels_last))
        finally:
            for m, momentum in zip(bns, momenta):
                m.momentum = momentum
            self.body.train(was_training)

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(x.shape[0], self.channels, self.size, self.size)
        x = self.augment(x).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision and self.training):
            x = self.body(x)
        x = x.float().mean(dim=(2, 3))
        return self.output(self.drop(x)).squeeze(-1)
