"""binclf: binary classification with PyTorch, done right."""

from __future__ import annotations

__version__ = "0.1.0"

from binclf.errors import (
    BinclfError,
    BundleError,
    ConfigError,
    DataError,
    NotFittedError,
    TrainingError,
)

__all__ = [
    "__version__",
    "BinclfError",
    "BundleError",
    "ConfigError",
    "DataError",
    "NotFittedError",
    "TrainingError",
]
