"""Mergeable one-pass statistics of a table too large to hold: what streaming preprocessing is fitted from.

Every statistic here is built by ``update`` over batches, combined with
``merge(other)`` (ranks of a distributed run all-gather and merge theirs), and
travels as plain arrays (``to_arrays()`` / ``from_arrays()``: numbers and
strings only, so a collective or a checkpoint can carry them).

* :class:`QuantileSketch` (a numeric column): a **bottom-k sample** (the ``k``
  present values whose row keys are smallest; the keys are a hash of the row,
  :func:`row_keys`) plus exact count, missing count, mean and variance (Chan's
  pairwise update). The sample is a uniform sample of the column's present
  values without replacement, the same one whatever the batch size, file order
  or number of ranks (merging keeps the ``k`` smallest keys of the union). Its
  quantiles are exact while the column has at most ``k`` present values; above,
  the rank error of any quantile is at most ``sqrt(ln(2 / delta) / (2 k))`` with
  probability ``1 - delta`` (Dvoretzky-Kiefer-Wolfowitz): 0.0076 for the default
  ``k = 65,536`` and ``delta = 0.001``, i.e. the fitted median is the true
  49.2-50.8th percentile.
* :class:`CategoryCounts` (a categorical column): rows per canonical level,
  exact while the column has at most ``2 * cap`` distinct levels; beyond that
  the rarest are forgotten (counted as pruned rows), which only ever removes
  levels far below the ``max_levels`` one-hot levels kept (``cap`` = 10,000).
* :class:`LabelCounts` (the target): rows per label and missing labels, exact.

:class:`TableStats` holds one of each per column, and the row counts of the
train / validation / test splits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from binclf.data.preprocessing import _to_float, canonical_labels
from binclf.data.schema import json_scalar

__all__ = [
    "CATEGORY_CAP",
    "SKETCH_SIZE",
    "CategoryCounts",
    "LabelCounts",
    "QuantileSketch",
    "TableStats",
    "row_keys",
    "split_of",
]

SKETCH_SIZE = 65_536
CATEGORY_CAP = 10_000
SPLITS = ("train", "valid", "test")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = h.astype(np.uint64, copy=True)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def row_keys(df: pd.DataFrame, *, columns: Sequence[str]) -> np.ndarray:
    """A 64-bit hash ``(n,)`` uint64 of each row's values in ``columns`` (taken in sorted name order).

    Depends only on the row's values (and dtypes), never on its position, the
    batch or the file: the same row gets the same key in every pass and every
    process (pandas' hash uses a fixed key).
    """
    cols = sorted(columns)
    return pd.util.hash_pandas_object(df[cols], index=False).to_numpy(dtype=np.uint64)


def split_of(keys: np.ndarray, *, valid_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split of each row from its key: 0 = train, 1 = validation, 2 = test; ``(n,)`` int8.

    ``u`` = the seeded key mapped to [0, 1): test if ``u < test_fraction``,
    validation if below ``test_fraction + valid_fraction``, else train. Not
    stratified (the class shares of large splits agree to sampling noise).
    """
    u = (_mix(keys ^ _mix(np.array([seed + 0x5EED], dtype=np.uint64))) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    out = np.zeros(len(keys), dtype=np.int8)
    out[u < test_fraction + valid_fraction] = 1
    out[u < test_fraction] = 2
    return out


class QuantileSketch:
    """A numeric column's bottom-k sample, counts and moments (see the module docstring).

    Parameters
    ----------
    name : the column.
    k : sample size.
    """

    def __init__(self, name: str, *, k: int = SKETCH_SIZE) -> None:
        self.name = name
        self.k = int(k)
        self._values = np.empty(0, dtype=np.float64)
        self._keys = np.empty(0, dtype=np.uint64)
        self.n = 0  # present values
        self.n_missing = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.na_tokens: set[str] = set()

    @property
    def std(self) -> float:
        """Population standard deviation of the present values (as numpy's ``std``)."""
        return math.sqrt(self._m2 / self.n) if self.n else 0.0

    def update(self, x: np.ndarray, keys: np.ndarray, *, na_tokens: Sequence[str] = ()) -> None:
        """Add values ``x`` ``(n,)`` float64 (NaN = missing) whose rows have ``keys`` ``(n,)`` uint64."""
        present = ~np.isnan(x)
        v = x[present]
        self.n_missing += int(len(x) - len(v))
        self.na_tokens.update(na_tokens)
        if len(v):
            with np.errstate(over="ignore", invalid="ignore"):
                mean = float(v.mean())
                m2 = float(np.square(v - mean).sum())
            self._add_moments(len(v), mean, m2)
            self._values = np.concatenate([self._values, v])
            self._keys = np.concatenate([self._keys, _mix(keys[present] ^ np.uint64(0xC0FFEE))])
            if len(self._keys) > 2 * self.k:
                self._compact()

    def _add_moments(self, n: int, mean: float, m2: float) -> None:
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self._m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def _compact(self) -> None:
        if len(self._keys) > self.k:
            # Ties at the boundary are rows with equal keys, i.e. equal rows: equal values.
            keep = np.argpartition(self._keys, self.k - 1)[: self.k]
            self._keys, self._values = self._keys[keep], self._values[keep]

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Add ``other`` (the same column seen elsewhere) into this one; returns ``self``."""
        self.n_missing += other.n_missing
        self.na_tokens |= other.na_tokens
        if other.n:
            self._add_moments(other.n, other.mean, other._m2)
            self._values = np.concatenate([self._values, other._values])
            self._keys = np.concatenate([self._keys, other._keys])
            self._compact()
        return self

    def sample(self) -> np.ndarray:
        """The sampled present values ``(min(k, n),)`` float64, sorted."""
        self._compact()
        return np.sort(self._values)

    def to_arrays(self) -> dict[str, np.ndarray]:
        self._compact()
        order = np.argsort(self._keys, kind="stable")
        return {
            "values": self._values[order],
            "keys": self._keys[order],
            "counts": np.array([self.n, self.n_missing, self.k], dtype=np.int64),
            "moments": np.array([self.mean, self._m2], dtype=np.float64),
            "na_tokens": np.array(sorted(self.na_tokens), dtype=str),
        }

    @classmethod
    def from_arrays(cls, name: str, a: dict[str, np.ndarray]) -> QuantileSketch:
        s = cls(name, k=int(a["counts"][2]))
        s._values, s._keys = np.asarray(a["values"], np.float64), np.asarray(a["keys"], np.uint64)
        s.n, s.n_missing = int(a["counts"][0]), int(a["counts"][1])
        s.mean, s._m2 = float(a["moments"][0]), float(a["moments"][1])
        s.na_tokens = {str(t) for t in a["na_tokens"]}
        return s


class CategoryCounts:
    """Rows per canonical level of a categorical column, with a cap on levels kept."""

    def __init__(self, name: str, *, cap: int = CATEGORY_CAP) -> None:
        self.name = name
        self.cap = int(cap)
        self._counts: dict[str, int] = {}
        self.n_missing = 0
        self.pruned = 0  # rows of levels forgotten under the cap

    def update(self, s: pd.Series) -> None:
        """Count the values of ``s`` (missing ones apart)."""
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        self.n_missing += int((codes < 0).sum())
        counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
        for t, c in zip(canonical_labels(np.asarray(uniques, dtype=object)), counts):
            self._counts[t] = self._counts.get(t, 0) + int(c)
        if len(self._counts) > 2 * self.cap:
            self._prune()

    def _prune(self) -> None:
        ranked = sorted(self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.pruned += sum(c for _, c in ranked[self.cap :])
        self._counts = dict(ranked[: self.cap])

    def merge(self, other: CategoryCounts) -> CategoryCounts:
        for t, c in other._counts.items():
            self._counts[t] = self._counts.get(t, 0) + c
        self.n_missing += other.n_missing
        self.pruned += other.pruned
        if len(self._counts) > 2 * self.cap:
            self._prune()
        return self

    def counts(self) -> dict[str, int]:
        """Canonical level -> rows; a pruned remainder shows as one extra rare level (so "unknown" exists)."""
        out = dict(self._counts)
        if self.pruned:
            out["\x00<pruned>"] = 0
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        levels = sorted(self._counts)
        return {
            "levels": np.array(levels, dtype=str),
            "counts": np.array([self._counts[t] for t in levels], dtype=np.int64),
            "extra": np.array([self.n_missing, self.pruned, self.cap], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, name: str, a: dict[str, np.ndarray]) -> CategoryCounts:
        c = cls(name, cap=int(a["extra"][2]))
        c._counts = {str(t): int(n) for t, n in zip(a["levels"], a["counts"])}
        c.n_missing, c.pruned = int(a["extra"][0]), int(a["extra"][1])
        return c


class LabelCounts:
    """Rows per target label (the labels in their JSON types), per split, and missing labels."""

    def __init__(self) -> None:
        self._counts: dict[str, np.ndarray] = {}  # JSON of the label -> rows per split (3,)
        self.n_missing = 0

    def update(self, s: pd.Series, split: np.ndarray) -> None:
        """Count labels ``s`` ``(n,)`` of rows in splits ``split`` ``(n,)`` (0 train, 1 valid, 2 test)."""
        missing = s.isna().to_numpy()
        self.n_missing += int(missing.sum())
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        ok = codes >= 0
        table = np.zeros((len(uniques), 3), dtype=np.int64)
        np.add.at(table, (codes[ok], split[ok].astype(np.intp)), 1)
        for u, row in zip(uniques, table):
            key = json.dumps(json_scalar(u))
            self._counts[key] = self._counts.get(key, np.zeros(3, np.int64)) + row

    def merge(self, other: LabelCounts) -> LabelCounts:
        for k, v in other._counts.items():
            self._counts[k] = self._counts.get(k, np.zeros(3, np.int64)) + v
        self.n_missing += other.n_missing
        return self

    def series(self, split: int | None = None) -> pd.Series:
        """Rows per label (all splits, or one), most frequent first (as ``value_counts``)."""
        items = [(json.loads(k), int(v.sum() if split is None else v[split])) for k, v in self._counts.items()]
        items.sort(key=lambda kv: (-kv[1], str(kv[0])))
        return pd.Series([c for _, c in items], index=pd.Index([k for k, _ in items], dtype=object), dtype=np.int64)

    def rows(self, split: int) -> int:
        return int(sum(v[split] for v in self._counts.values()))

    def count(self, label: Any, split: int | None = None) -> int:
        v = self._counts.get(json.dumps(json_scalar(label)), np.zeros(3, np.int64))
        return int(v.sum() if split is None else v[split])

    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = sorted(self._counts)
        return {
            "labels": np.array(keys, dtype=str),
            "counts": np.array([self._counts[k] for k in keys], dtype=np.int64).reshape(-1, 3),
            "missing": np.array([self.n_missing], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> LabelCounts:
        c = cls()
        c._counts = {str(k): np.asarray(v, np.int64) for k, v in zip(a["labels"], a["counts"])}
        c.n_missing = int(a["missing"][0])
        return c


class TableStats:
    """Pass 1's statistics of a table: one sketch per numeric column, counts per categorical one, the labels.

    Parameters
    ----------
    numeric, categorical : column names (the schema's order).
    sketch_size : ``k`` of each :class:`QuantileSketch`.
    category_cap : ``cap`` of each :class:`CategoryCounts`.
    """

    def __init__(
        self, *, numeric: Sequence[str], categorical: Sequence[str], sketch_size: int = SKETCH_SIZE,
        category_cap: int = CATEGORY_CAP,
    ) -> None:
        self.numeric = [QuantileSketch(n, k=sketch_size) for n in numeric]
        self.categorical = [CategoryCounts(n, cap=category_cap) for n in categorical]
        self.labels = LabelCounts()
        # Missing cells per column over every row (all splits), numeric columns first.
        self.missing_cells = np.zeros(len(self.numeric) + len(self.categorical), dtype=np.int64)

    @property
    def columns(self) -> list[str]:
        return [s.name for s in self.numeric] + [c.name for c in self.categorical]

    def count_missing(self, df: pd.DataFrame) -> None:
        """Add the missing cells of every row of ``df`` (whatever its split) to ``missing_cells``."""
        self.missing_cells += np.array([int(df[name].isna().sum()) for name in self.columns], dtype=np.int64)

    def update(self, df: pd.DataFrame, *, target: str, keys: np.ndarray, split: np.ndarray) -> None:
        """Add one batch: labels of every row; features of the training rows (``split == 0``)."""
        self.labels.update(df[target], split)
        train = split == 0
        part = df.loc[train] if not train.all() else df
        part_keys = keys[train]
        for s in self.numeric:
            x, tokens, _ = _to_float(part[s.name], name=s.name, na_tokens=None, row_offset=0)
            s.update(np.asarray(x, dtype=np.float64), part_keys, na_tokens=tokens)
        for c in self.categorical:
            c.update(part[c.name])

    def merge(self, other: TableStats) -> TableStats:
        """Add another shard's statistics (same columns); returns ``self``."""
        for a, b in zip(self.numeric, other.numeric):
            a.merge(b)
        for a, b in zip(self.categorical, other.categorical):
            a.merge(b)
        self.labels.merge(other.labels)
        self.missing_cells += other.missing_cells
        return self

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``name -> array`` form (``numeric/<i>/...``, ``categorical/<i>/...``, ``labels/...``)."""
        out: dict[str, np.ndarray] = {
            "columns/numeric": np.array([s.name for s in self.numeric], dtype=str),
            "columns/categorical": np.array([c.name for c in self.categorical], dtype=str),
        }
        for i, s in enumerate(self.numeric):
            out.update({f"numeric/{i}/{k}": v for k, v in s.to_arrays().items()})
        for i, c in enumerate(self.categorical):
            out.update({f"categorical/{i}/{k}": v for k, v in c.to_arrays().items()})
        out.update({f"labels/{k}": v for k, v in self.labels.to_arrays().items()})
        out["missing_cells"] = self.missing_cells.copy()
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> TableStats:
        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix) :]: v for k, v in a.items() if k.startswith(prefix)}

        t = cls(numeric=[], categorical=[])
        t.numeric = [QuantileSketch.from_arrays(str(n), part(f"numeric/{i}/")) for i, n in enumerate(a["columns/numeric"])]
        t.categorical = [
            CategoryCounts.from_arrays(str(n), part(f"categorical/{i}/")) for i, n in enumerate(a["columns/categorical"])
        ]
        t.labels = LabelCounts.from_arrays(part("labels/"))
        t.missing_cells = np.asarray(a["missing_cells"], dtype=np.int64).copy()
        return t
