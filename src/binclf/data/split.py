"""Stratified splits of row positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from binclf.errors import ConfigError


# --------------------------------------------------------------------------- #
# splitting
# --------------------------------------------------------------------------- #


def _stratified_shuffle_split(
    rows: np.ndarray, y: np.ndarray, *, n_second: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``train_test_split(rows, test_size=n_second, random_state=seed, stratify=y)``, the same parts in the same order.

    scikit-learn's ``StratifiedShuffleSplit`` gathers the chosen rows into
    Python lists of NumPy scalars (~100 bytes a row: +300 MB of RSS at 3M
    rows, the largest allocation of an ``--model mlp`` run); here they stay
    int64 arrays, with the same random draws in the same order. Raises
    ValueError where scikit-learn does (a class of one row, a part smaller than
    the number of classes).

    Parameters
    ----------
    rows : ndarray of shape (n,)
    y : ndarray of shape (n,)
        The labels of ``rows``.
    n_second : int
        Rows of the second part, 0 < n_second < n.

    Returns
    -------
    first, second : ndarray
        Disjoint subsets of ``rows``, of ``n - n_second`` and ``n_second`` rows.
    """
    from sklearn.utils.extmath import _approximate_mode

    classes, class_counts = np.unique(y, return_counts=True)
    n_first, n_classes = len(rows) - n_second, len(classes)
    if class_counts.min() < 2 or n_first < n_classes or n_second < n_classes:
        raise ValueError("too few rows of a class to stratify")
    # A stable argsort of the class codes lists each class's positions in order: flatnonzero
    # gives the same without the (n,) codes and their argsort.
    class_indices = [np.flatnonzero(y == c) for c in classes]
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_first, rng)
    t_i = _approximate_mode(class_counts - n_i, n_second, rng)
    first, second = [], []
    for i in range(n_classes):
        perm = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        first.append(perm[: n_i[i]])
        second.append(perm[n_i[i] : n_i[i] + t_i[i]])
    a = rng.permutation(np.concatenate(first))
    b = rng.permutation(np.concatenate(second))
    return rows[a], rows[b]


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
            a, b = _stratified_shuffle_split(rows, y[rows], n_second=n_second, seed=rs)
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
