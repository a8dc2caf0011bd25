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
    rows: np.ndarray | None, y: np.ndarray, *, n_second: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``train_test_split(rows, test_size=n_second, random_state=seed, stratify=y)``, the same parts in the same order.

    scikit-learn's ``StratifiedShuffleSplit`` gathers the chosen rows into
    Python lists of NumPy scalars (~100 bytes a row: +300 MB of RSS at 3M
    rows, the largest allocation of an ``--model mlp`` run); here they stay
    integer arrays, with the same random draws in the same order (a
    permutation drawn in place: ``RandomState.permutation`` is a copy then
    ``shuffle``), one class's positions at a time and as int32 where the
    rows allow (traced peak at 3M rows: 180 -> 66 MB). Raises ValueError
    where scikit-learn does (a class of one row, a part smaller than the
    number of classes).

    Parameters
    ----------
    rows : ndarray of shape (n,), or None for ``0..n-1``
    y : ndarray of shape (n,)
        The labels of ``rows``.
    n_second : int
        Rows of the second part, 0 < n_second < n.

    Returns
    -------
    first, second : int64 ndarray
        Disjoint subsets of ``rows``, of ``n - n_second`` and ``n_second`` rows.
    """
    from sklearn.utils.extmath import _approximate_mode

    classes, class_counts = np.unique(y, return_counts=True)
    n_first, n_classes = len(y) - n_second, len(classes)
    if class_counts.min() < 2 or n_first < n_classes or n_second < n_classes:
        raise ValueError("too few rows of a class to stratify")
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(class_counts, n_first, rng)
    t_i = _approximate_mode(class_counts - n_i, n_second, rng)
    small = np.int32 if len(y) < np.iinfo(np.int32).max else np.int64
    first = np.empty(int(n_i.sum()), dtype=small)
    second = np.empty(int(t_i.sum()), dtype=small)
    f = s = 0
    for i in range(n_classes):
        # The class's positions in order (what a stable argsort of the codes lists), shuffled.
        order = np.arange(class_counts[i], dtype=small)
        rng.shuffle(order)
        perm = np.flatnonzero(y == classes[i]).astype(small, copy=False).take(order, mode="clip")
        del order
        first[f : f + n_i[i]] = perm[: n_i[i]]
        second[s : s + t_i[i]] = perm[n_i[i] : n_i[i] + t_i[i]]
        f, s = f + n_i[i], s + t_i[i]
        del perm
    rng.shuffle(first)
    rng.shuffle(second)
    if rows is None:
        return first.astype(np.int64), second.astype(np.int64)
    return rows[first], rows[second]


def stratified_split(
    y: np.ndarray, *, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Split row positions ``0..len(y)-1`` into parts of the given fractions.

    Returns one sorted int64 index array per fraction (2 or 3 of them, summing to 1).
    Each part keeps the class balance of ``y`` (scikit-learn's ``train_test_split``
    with ``stratify``); when a class is too small for that, the split falls back to
    a plain random one instead of failing.
    """
    fractions = [float(f) for f in fractions]
    if len(fractions) not in (2, 3) or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"fractions must be 2 or 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    y = np.asarray(y)

    def split(rows: np.ndarray | None, frac_second: float, rs: int) -> tuple[np.ndarray, np.ndarray]:
        # rows None: every position 0..n-1 (no (n,) array of them made).
        n = len(y) if rows is None else len(rows)
        n_second = 0 if frac_second <= 0 else n if frac_second >= 1 else int(round(frac_second * n))
        if n_second in (0, n):
            every = np.arange(n) if rows is None else rows
            return (every, every[:0]) if n_second == 0 else (every[:0], every)
        try:
            return _stratified_shuffle_split(rows, y if rows is None else y[rows], n_second=n_second, seed=rs)
        except ValueError:
            from sklearn.model_selection import train_test_split

            every = np.arange(n) if rows is None else rows
            return tuple(train_test_split(every, test_size=n_second, random_state=rs, stratify=None))

    if len(fractions) == 2:
        a, b = split(None, fractions[1], seed)
        a.sort()
        b.sort()
        return a, b
    rest, test = split(None, fractions[2], seed)
    denom = fractions[0] + fractions[1]
    train, val = split(rest, fractions[1] / denom if denom > 0 else 0.0, seed + 1)
    del rest
    for part in (train, val, test):
        part.sort()
    return train, val, test
