"""How a user's data is quoted in messages: escaped, cut short, with close-match hints.

Every error or warning that quotes a file name, a value or a column name goes
through these, so raw control characters never reach the terminal and a row
number means the same thing everywhere.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from binclf.errors import DataError

__all__ = [
    "FIRST_DATA_LINE",
    "check_unique_names",
    "escape_controls",
    "list_names",
    "names_with_hints",
    "one_line",
    "safe_excerpt",
]

# Lines of the file a row number refers to: the header is line 1.
FIRST_DATA_LINE = 2


def one_line(text: str) -> str:
    """``text`` on one line, whitespace runs collapsed, control characters escaped."""
    return escape_controls(" ".join(str(text).split()))


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``, ``\\n``).

    Error messages quote the user's data; raw escape sequences, carriage
    returns or bidi overrides from a binary or hostile file must never reach
    the terminal.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def safe_excerpt(value: Any, *, limit: int = 40) -> str:
    """A short, quoted, terminal-safe rendering of a value from the user's data.

    Every error or warning that quotes data uses it: text is cut to ``limit``
    characters (``...`` marks the cut) and shown as its Python repr, so control
    characters appear escaped (``'\\x1b[31mRED'``); bytes are decoded as UTF-8
    with the undecodable bytes escaped; numbers and other values show as repr.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, str):
        return escape_controls(repr(value))[: limit + 3]
    cut = value if len(value) <= limit else value[:limit]
    # repr escapes control and other non-printable characters (isprintable); the
    # ascii-safe pass covers what repr lets through (none today; kept as a guard).
    return escape_controls(repr(cut)) + ("..." if len(value) > limit else "")



def list_names(names: Sequence[str], limit: int = 30) -> str:
    """The first ``limit`` names, quoted, and how many more there are."""
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def names_with_hints(missing: Sequence[str], names: Sequence[str]) -> str:
    """The ``missing`` names, quoted, each with the closest of ``names`` as a did-you-mean hint."""
    parts = []
    for m in missing:
        close = difflib.get_close_matches(m, list(names), n=1)
        parts.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(parts)


def check_unique_names(source: str | Path, names: Sequence[str]) -> None:
    """Raise a DataError naming every column name that ``names`` holds more than once."""
    dups = sorted(n for n, k in Counter(names).items() if k > 1)
    if dups:
        raise DataError(
            f"{source}: duplicate column names {', '.join(map(repr, dups))}; "
            "give every column a different name in the header"
        )
