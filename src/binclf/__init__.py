"""binclf: binary classification with PyTorch, done right.

The public API is flat: ``from binclf import BinaryClassifier, Trainer, ...``.
Names are imported on first use, so ``import binclf`` (and the command line's
start-up) does not pay for torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from binclf.errors import (
    BinclfError,
    BundleError,
    ConfigError,
    DataError,
    NotFittedError,
    TrainingError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "BinaryClassifier": "binclf.estimator",
    "Trainer": "binclf.train.trainer",
    "TrainConfig": "binclf.train.trainer",
    "predict_logits": "binclf.train.trainer",
    "BCEWithLogitsLoss": "binclf.nn.losses",
    "FocalLoss": "binclf.nn.losses",
    "HingeLoss": "binclf.nn.losses",
    "LogisticModel": "binclf.nn.models",
    "MLP": "binclf.nn.models",
    "build_model": "binclf.nn.models",
    "init_output_bias": "binclf.nn.models",
    "Predictor": "binclf.predictor",
    "TrainOptions": "binclf.train.pipeline",
    "train_table": "binclf.train.pipeline",
    "read_table": "binclf.io.tables",
    "validate_meta": "binclf.bundle_schema",
    "UnseenCategoryWarning": "binclf.data.preprocessing",
    "select_calibrator": "binclf.decide.calibration",
    "choose_threshold": "binclf.decide.thresholds",
    "binary_metrics": "binclf.decide.metrics",
    "render_training_report": "binclf.report",
    "render_bundle_report": "binclf.report",
    "ImageCNN": "binclf.nn.models",
    "ImagePredictor": "binclf.image_predictor",
    "ImageTrainOptions": "binclf.train.images",
    "train_images": "binclf.train.images",
}

__all__ = [
    "__version__",
    "BinclfError",
    "BundleError",
    "ConfigError",
    "DataError",
    "NotFittedError",
    "TrainingError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'binclf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
