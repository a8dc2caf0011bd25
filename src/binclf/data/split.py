"""Stratified splits of row positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from binclf.errors import ConfigError


# --------------------------------------------------------------------------- #
# splitting
# --------------------------------------------------------------------------- #


def stratified_split(
    y: np.ndarray, *, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Split row positions ``0..len(y)-1`` into parts of the given fractions.

    Returns one sorted int64 index array per fraction (2 or 3 of them, summing to 1).
    Each part keeps the class balance of ``y`` (scikit-learn's ``train_test_split``
    with ``stratify``); when a class is too small for that, the split falls back to
    a plain random one instead of failing.
    """
    from sklearn.model_selection import train_test_split

    fractions = [float(f) for f in fractions]
    if len(fractions) not in (2, 3) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"fractions must be 2 or 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    y = np.asarray(y)
    idx = np.arange(len(y))

    def split(rows: np.ndarray, frac_second: float, rs: int) -> tuple[np.ndarray, np.ndarray]:
        if frac_second <= 0:
            return rows, rows[:0]
        if frac_second >= 1:
            return rows[:0], rows
        n_second = int(round(frac_second * len(rows)))
        if n_second == 0 or n_second == len(rows):
            return (rows, rows[:0]) if n_second == 0 else (rows[:0], rows)
        try:
            a, b = train_test_split(rows, test_size=n_second, random_state=rs, stratify=y[rows])
        except ValueError:
            a, b = train_test_split(rows, test_size=n_second, random_state=rs, stratify=None)
        return a, b

    if len(fractions) == 2:
        a, b = split(idx, fractions[1], seed)
        return np.sort(a), np.sort(b)
    rest, test = split(idx, fractions[2], seed)
    denom = fractions[0] + fractions[1]
    train, val = split(rest, fractions[1] / denom if denom > 0 else 0.0, seed + 1)
    return np.sort(train), np.sort(val), np.sort(test)
