"""``ImagePredictor``: the :class:`~binclf.predictor.Predictor` of an image bundle.

Same order as for tables (inputs -> member logits less their logit shift ->
calibrator -> threshold), with images in place of rows: the fitted
:class:`~binclf.data.images.ImagePreprocessor` turns decoded ``uint8`` images
into the CNN's input. A bundle says ``"kind": "image"`` in ``bundle.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from binclf import __version__
from binclf.bundle import load_bundle
from binclf.data.images import ImagePreprocessor
from binclf.data.target import TargetInfo
from binclf.decide.calibration import calibrator_from_dict
from binclf.decide.thresholds import ThresholdPolicy
from binclf.errors import BundleError, DataError
from binclf.nn.models import build_model
from binclf.numeric import logit
from binclf.predictor import Member, Predictor, _versions

__all__ = ["ImagePredictor", "IMAGE_KIND"]

IMAGE_KIND = "image"
_EVAL_IMAGES = 256  # a chunk's conv activations stay within a few hundred MiB even at 128 x 128


@torch.inference_mode()
def image_member_logits(members: list[Member], X: Any) -> np.ndarray:
    """Prior-corrected, member-averaged logits ``(n,)`` of image models on inputs ``(n, C * S * S)``.

    The image counterpart of :func:`binclf.predictor.member_logits`, in chunks of
    images (a CNN's activations, not a row's, set the memory); training calls it
    before the calibrator exists.
    """
    X = torch.as_tensor(X, dtype=torch.float32)
    p = torch.zeros(len(X), dtype=torch.float64)
    for m in members:
        m.module.eval()
        chunks = [m.module(X[lo : lo + _EVAL_IMAGES]) for lo in range(0, len(X), _EVAL_IMAGES)]
        zm = (torch.cat(chunks) if chunks else torch.zeros(0)).double() - m.logit_shift
        if len(members) == 1:
            return zm.numpy()
        p += m.weight * torch.sigmoid(zm)
    return logit(p.numpy())


class ImagePredictor(Predictor):
    """Applies a trained image model to decoded images, folders or a labels CSV.

    ``image_column``: the CSV column of image paths it was trained with (or None
    for a folder of class subfolders).
    """

    def __init__(self, *, preprocessor: ImagePreprocessor, image_column: str | None = None, **kw: Any) -> None:
        super().__init__(schema=None, preprocessor=preprocessor, **kw)
        self.image_column = image_column

    # -- persistence ---------------------------------------------------------------
    def to_meta(self) -> dict[str, Any]:
        return {
            "kind": IMAGE_KIND,
            "binclf_version": self.info.get("binclf_version", __version__),
            "versions": self.info.get("versions", _versions()),
            "image_column": self.image_column,
            "target": self.target.to_dict(),
            "preprocessing": self.preprocessor.to_dict(),
            "members": [m.to_dict(f"m{i}.") for i, m in enumerate(self.members)],
            "calibration": self.calibrator.to_dict(),
            "threshold": None if self.threshold is None else self.threshold.to_dict(),
            "info": {k: v for k, v in self.info.items() if k not in ("binclf_version", "versions")},
        }

    @classmethod
    def load(cls, path: str | Path) -> "ImagePredictor":
        meta, tensors = load_bundle(path)
        return cls.from_meta(meta, tensors, path=path)

    @classmethod
    def from_meta(cls, meta: dict[str, Any], tensors: dict[str, torch.Tensor], *, path: Any = "bundle") -> "ImagePredictor":
        if meta.get("kind") != IMAGE_KIND:
            raise BundleError(f"{path}: not an image bundle; load it with binclf.Predictor.load")
        try:
            members = []
            for spec in meta["members"]:
                module = build_model(spec["name"], **spec["config"])
                prefix = spec["prefix"]
                module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
                members.append(Member(spec["name"], spec["config"], module, float(spec["weight"]), float(spec["logit_shift"])))
            info = dict(meta.get("info", {}))
            info["binclf_version"] = meta.get("binclf_version")
            info["versions"] = meta.get("versions")
            return cls(
                preprocessor=ImagePreprocessor.from_dict(meta["preprocessing"]),
                image_column=meta.get("image_column"),
                target=TargetInfo.from_dict(meta["target"]),
                members=members,
                calibrator=calibrator_from_dict(meta["calibration"]),
                threshold=None if meta.get("threshold") is None else ThresholdPolicy.from_dict(meta["threshold"]),
                info=info,
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise BundleError(f"{path}: bundle.json does not describe a loadable image model ({exc!s:.200})") from None

    # -- the prediction path ----------------------------------------------------------
    def transform(self, images: torch.Tensor, *, row_offset: int = 0) -> torch.Tensor:  # type: ignore[override]
        """Decoded images ``uint8 (n, C, S, S)`` -> model inputs ``float32 (n, C * S * S)``."""
        return self.preprocessor.transform(images)

    def uncalibrated_logits(self, X: Any) -> np.ndarray:
        """Prior-corrected, member-averaged logits ``(n,)`` from model inputs ``(n, C * S * S)``."""
        return image_member_logits(self.members, X)

    def predict_proba(self, images: torch.Tensor, *, row_offset: int = 0) -> np.ndarray:  # type: ignore[override]
        """Calibrated probability of the positive class ``(n,)`` for decoded images ``uint8 (n, C, S, S)``."""
        return self.proba_from_inputs(self.transform(images))

    def read(self, image_set, *, skip_bad: bool = False):
        """Decode an :class:`~binclf.io.images.ImageSet` to this model's layout: ``(uint8 images, kept mask, notices)``."""
        from binclf.io.images import decode_images

        return decode_images(
            image_set.paths, size=self.preprocessor.size, channels=self.preprocessor.channels,
            names=image_set.names, skip_bad=skip_bad,
        )

    def predict_images_frame(self, image_set, *, threshold: float | None = None, skip_bad: bool = False):
        """``path``, ``probability``, ``prediction``: one row per readable image of ``image_set``; and notices."""
        images, keep, notices = self.read(image_set, skip_bad=skip_bad)
        proba = self.predict_proba(images)
        frame = pd.DataFrame({
            "path": [n for n, k in zip(image_set.names, keep) if k],
            "probability": proba,
            "prediction": self._labels(self.decide(proba, threshold=threshold)),
        })
        return frame, notices

    def labelled_images(self, image_set, *, source: str = "data", skip_bad: bool = False):
        """0/1 labels, calibrated probabilities (both ``(n,)``), the images and notices, of a labelled set."""
        if image_set.labels is None:
            raise DataError(f"{source}: the images have no labels; evaluation needs labelled images")
        images, keep, notices = self.read(image_set, skip_bad=skip_bad)
        labels = pd.Series([lab for lab, k in zip(image_set.labels, keep) if k])
        y = self.target.encode(labels, source=source)
        return y, self.predict_proba(images), images, notices
