"""Validation of option values at the boundary (scikit-learn's ``utils/validation.py`` style).

Each ``check_*`` takes the raw value (text from the command line, or a Python
value), returns it converted, and raises :class:`~binclf.errors.ConfigError`
with one line naming the option, the value found, what is expected and the
fix. The command line calls them before reading any data; library code may
call them too, so the rule for a value is written once.

Nothing here imports torch.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Sequence
from typing import Any

from binclf.errors import ConfigError

__all__ = [
    "check_batch_size",
    "check_choice",
    "check_encoding",
    "check_int",
    "check_number",
    "check_objective",
    "check_pos_weight",
    "check_sep",
    "check_threshold",
]


def _example(name: str, example: str | None) -> str:
    """The fix's example: ``--lr 0.001`` for a command-line option, ``lr=0.001`` for a Python argument."""
    if not example:
        return ""
    return f"; pass e.g. {name} {example}" if name.startswith("-") else f"; pass e.g. {name}={example}"


def _bound_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def check_number(
    value: Any,
    *,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    example: str | None = None,
) -> float:
    """``value`` as a finite float within the bounds (``low_open``: strictly above ``low``).

    Raises
    ------
    ConfigError
        "--lr must be a number > 0, got '-1'; pass e.g. --lr 0.001".
    """
    want = f"a number {_bound_text(low, high, low_open, high_open)}"
    fix = _example(name, example)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {want}, got {value!r}{fix}") from None
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {want}, got {value!r}{fix}")
    if not math.isfinite(x):
        raise ConfigError(f"{name} must be {want}, got {value!r} (not finite){fix}")
    if (
        (low is not None and (x <= low if low_open else x < low))
        or (high is not None and (x >= high if high_open else x > high))
    ):
        raise ConfigError(f"{name} must be {want}, got {value!r}{fix}")
    return x


def check_int(
    value: Any, *, name: str, low: int | None = None, high: int | None = None, example: str | None = None
) -> int:
    """``value`` as an int within ``[low, high]``; text such as ``"3.5"`` or ``"abc"`` is refused."""
    want = "an integer" + (f" {_bound_text(low, high, False, False)}" if low is not None or high is not None else "")
    fix = _example(name, example)
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {want}, got {value!r}{fix}")
    if isinstance(value, int):
        n = value
    else:
        try:
            n = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name} must be {want}, got {value!r}{fix}") from None
    if (low is not None and n < low) or (high is not None and n > high):
        raise ConfigError(f"{name} must be {want}, got {value!r}{fix}")
    return n


def check_threshold(value: Any, *, name: str = "--threshold") -> float | None:
    """A decision threshold: ``None`` passes; else a finite probability in [0, 1] (``nan`` is refused)."""
    if value is None:
        return None
    return check_number(value, name=name, low=0.0, high=1.0, example="0.5")


def check_choice(value: Any, choices: Sequence[str], *, name: str) -> Any:
    """``value`` when it is one of ``choices`` (``None`` passes)."""
    if value is None or value in choices:
        return value
    raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_sep(value: str | None, *, name: str = "--sep") -> str | None:
    """A CSV delimiter: one character (``\\t`` and ``tab`` mean a tab); ``None`` (sniffed) passes."""
    if value is None:
        return None
    text = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)
    if len(text) != 1 or text in "\r\n\"":
        raise ConfigError(
            f"{name} must be one character, got {value!r}; pass e.g. {name} ';' or {name} '\\t' "
            "(or leave it out: the delimiter is sniffed)"
        )
    return text


def check_encoding(value: str | None, *, name: str = "--encoding") -> str | None:
    """A text encoding Python knows (``latin-1``, ``cp1252`` ...); ``None`` (UTF-8) passes."""
    if value is None:
        return None
    try:
        codecs.lookup(value)
    except LookupError:
        raise ConfigError(f"{name} {value!r} is not a known text encoding; pass e.g. {name} latin-1") from None
    return value


def check_objective(value: str, *, name: str = "--objective") -> str:
    """A threshold objective text (``f1``, ``cost:1,10``, ``precision:0.9`` ...), parsed to check it."""
    from binclf.decide.thresholds import parse_objective

    try:
        parse_objective(value)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value


def check_pos_weight(value: Any, *, name: str = "--pos-weight") -> float | str | None:
    """``None``, ``"balanced"`` or a finite number > 0."""
    if value is None or value == "balanced":
        return value
    try:
        return check_number(value, name=name, low=0.0, low_open=True, example="balanced")
    except ConfigError:
        raise ConfigError(f"{name} must be a number > 0 or 'balanced', got {value!r}; pass e.g. {name} balanced") from None


def check_batch_size(value: Any, *, name: str = "--batch-size") -> int | str:
    """``"auto"`` or an integer >= 1."""
    if value == "auto":
        return value
    try:
        return check_int(value, name=name, low=1)
    except ConfigError:
        raise ConfigError(f"{name} must be an integer >= 1 or 'auto', got {value!r}; pass e.g. {name} 256") from None
