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
    "Trainer": "binclf.trainer",
    "TrainConfig": "binclf.trainer",
    "predict_logits": "binclf.trainer",
    "BCEWithLogitsLoss": "binclf.losses",
    "FocalLoss": "binclf.losses",
    "HingeLoss": "binclf.losses",
    "LogisticModel": "binclf.models",
    "MLP": "binclf.models",
    "build_model": "binclf.models",
    "init_output_bias": "binclf.models",
    "Predictor": "binclf.predictor",
    "TrainOptions": "binclf.pipeline",
    "train_table": "binclf.pipeline",
    "read_table": "binclf.data",
    "select_calibrator": "binclf.calibration",
    "choose_threshold": "binclf.thresholds",
    "binary_metrics": "binclf.metrics",
    "render_training_report": "binclf.report",
    "render_bundle_report": "binclf.report",
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
