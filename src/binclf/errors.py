"""The exceptions binclf raises.

Every error a user can cause is a :class:`BinclfError`; the command line turns
one into a single line on stderr and exit code 2. Each subclass also derives
from the built-in exception a Python caller would expect (``ValueError`` for bad
values, ``FileNotFoundError`` for a missing file ...), so ``except ValueError``
keeps working.
"""

from __future__ import annotations

__all__ = [
    "BinclfError",
    "DataError",
    "BundleError",
    "NotFittedError",
    "TrainingError",
    "ConfigError",
]


class BinclfError(Exception):
    """Base class of every error binclf raises on purpose."""


class ConfigError(BinclfError, ValueError):
    """An argument or option has a value binclf cannot use."""


class DataError(BinclfError, ValueError):
    """The input data is unusable: says what, where (file, column, row) and the fix."""


class BundleError(BinclfError, ValueError):
    """A model bundle is missing, damaged, edited or of an unknown format version."""


class NotFittedError(BinclfError, AttributeError):
    """A fitted object was used before ``fit``."""


class TrainingError(BinclfError, RuntimeError):
    """Training diverged (NaN or inf loss) or could not proceed."""
