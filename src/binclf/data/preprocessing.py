"""Fitted, JSON-serialisable feature transforms: numbers, categories, missing values.

:class:`Preprocessor` turns a DataFrame into a float32 matrix ``(n, d)``:

* **numeric** columns: imputed with the training median, scaled
  (``"robust"``: ``(x - median) / (IQR / 1.349)``, falling back to the standard
  deviation, then 1, for columns whose IQR is 0; ``"standard"``:
  ``(x - mean) / std``; ``"quantile"``: through 64 stored training quantiles to
  normal scores, bounded to about +-2.4), then softly clipped with
  ``clip * tanh(x / clip)`` (``clip=5``) so an outlier cannot blow up a network
  while typical values (|x| < 2) change by less than 5%. A column gets a
  missing-indicator feature ``NAME__missing`` if and only if it had missing
  values in the training data; at prediction, a missing value in a column
  without an indicator is imputed silently (the model never learnt anything
  else to do with it).
* **categorical** columns: one-hot over the levels seen in training (most
  frequent first, at most ``max_levels``, each with at least
  ``min_level_count`` rows); rarer levels and values never seen in training
  are "unknown". Like the numeric indicator, ``NAME=<missing>`` and
  ``NAME=<unknown>`` exist only if training had missing / rare values; when
  they do not, such a value gets an all-zero block ("none of the known levels").
  Values are compared as canonical text, so ``1``, ``1.0`` and ``"1"`` are the
  same level whether the file is CSV or Parquet, ``True``/``"true"`` are the same,
  and surrounding spaces are ignored.

:meth:`Preprocessor.categorical_codes` gives the same categories as integer codes
(0 = missing, 1 = unknown, 2.. = levels) for models with embeddings.

Row numbers in messages are file line numbers (header = row 1); pass
``row_offset`` (the number of data rows before this batch) when transforming a
batch of a larger file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from binclf.data.schema import _NUMBER_RE, Schema
from binclf.errors import BundleError, ConfigError, DataError, NotFittedError
from binclf.io.messages import FIRST_DATA_LINE, safe_excerpt

__all__ = ["Preprocessor", "UnseenCategoryWarning", "UnseenCounts", "canonical_labels", "check_finite"]

_FORMAT = "binclf.preprocessor/1"
_BLOCK_ROWS = 32_768  # rows per block at most
# Floats of the (d, block) scratch: it stays in cache, so wide one-hot outputs
# get short blocks (measured, 22k rows x 3,082 features: 1.31 s with 32k-row
# blocks, 0.09 s with these 340-row ones; 50 columns: 31 -> 21 ms per 262k rows).
_BLOCK_FLOATS = 1 << 20
NumericMode = Literal["robust", "standard", "quantile"]
# A categorical column is reported when more than this share of its non-missing
# values at prediction were never seen in training (a type change, 1 vs "a").
UNSEEN_WARN_FRACTION = 0.5


class UnseenCategoryWarning(UserWarning):
    """Most values of a categorical column are not training levels: they all become "unknown"."""


class UnseenCounts:
    """Unseen values per categorical column, summed over the batches of one prediction call.

    ``Preprocessor.transform(df, unseen=counts)`` adds to it instead of warning
    per batch; :meth:`warn` then warns once per column above the fraction.
    """

    def __init__(self) -> None:
        self.counts: dict[str, list[Any]] = {}  # name -> [unseen, present, an unseen value, training levels]

    def add(self, name: str, unseen: int, present: int, example: Any, levels: Sequence[str]) -> None:
        c = self.counts.setdefault(name, [0, 0, None, list(levels)])
        c[0] += unseen
        c[1] += present
        if c[2] is None and unseen:
            c[2] = example

    def warn(self, *, stacklevel: int = 2) -> None:
        """One :class:`UnseenCategoryWarning` per column with more than half its values unseen."""
        from binclf.io.messages import safe_excerpt

        for name, (unseen, present, example, levels) in self.counts.items():
            if present and unseen / present > UNSEEN_WARN_FRACTION:
                known = ", ".join(safe_excerpt(v, limit=20) for v in levels[:3]) + (", ..." if len(levels) > 3 else "")
                warnings.warn(
                    f"categorical column {name!r}: {unseen / present:.0%} of its non-missing values "
                    f"({unseen} of {present}) are not among its training levels (e.g. {safe_excerpt(example, limit=30)}; "
                    f"training saw {known or 'no level often enough'}) and are treated as unknown; "
                    "check the column's type and spelling against the training data",
                    UnseenCategoryWarning,
                    stacklevel=stacklevel + 1,
                )



def canonical_labels(values: Sequence[Any] | np.ndarray) -> list[str]:
    """Canonical text of category values, so CSV and Parquet spellings agree.

    Whole numbers lose their decimals (``1.0`` -> ``"1"``), numeric text is read as a
    number (``" 2.50"`` -> ``"2.5"``), booleans and their spellings become
    ``"True"``/``"False"``, other text is stripped of surrounding spaces.
    """
    out = []
    for v in values:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bool):
            out.append("True" if v else "False")
        elif isinstance(v, int):
            out.append(str(v))
        elif isinstance(v, float):
            out.append(_float_text(v))
        else:
            s = str(v).strip()
            low = s.lower()
            if low == "true":
                s = "True"
            elif low == "false":
                s = "False"
            elif _NUMBER_RE.match(s):
                s = _float_text(float(s)) if ("." in s or "e" in low) else str(int(s))
            out.append(s)
    return out


def _float_text(x: float) -> str:
    if math.isfinite(x) and x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(x)


def _line(i: int, row_offset: int) -> int:
    return int(i) + row_offset + FIRST_DATA_LINE


class Preprocessor:
    """Turns a DataFrame into model inputs, as learnt from the training table.

    Parameters
    ----------
    schema : which columns are numeric and which categorical.
    numeric : ``"robust"`` (default), ``"standard"`` or ``"quantile"`` scaling.
    clip : soft-clip bound ``c`` of ``c * tanh(x / c)`` after scaling; None for none
        (never applied to ``"quantile"``, whose output is already bounded).
    max_levels : most one-hot levels per categorical column.
    min_level_count : levels with fewer training rows are merged into "unknown".
    n_quantiles : stored quantiles per column for ``numeric="quantile"``.

    Fitted attributes: ``feature_names_`` (list[str], length ``n_features_out_``),
    ``numeric_`` and ``categorical_`` (per-column fitted statistics),
    ``cardinalities_`` (codes per categorical column, for embeddings).
    """

    def __init__(
        self,
        *,
        schema: Schema,
        numeric: NumericMode = "robust",
        clip: float | None = 5.0,
        max_levels: int = 100,
        min_level_count: int = 5,
        n_quantiles: int = 64,
    ) -> None:
        if numeric not in ("robust", "standard", "quantile"):
            raise ConfigError(f"numeric must be 'robust', 'standard' or 'quantile', got {numeric!r}")
        if clip is not None and not clip > 0:
            raise ConfigError(f"clip must be a positive number or None, got {clip!r}")
        if max_levels < 1 or min_level_count < 1 or n_quantiles < 2:
            raise ConfigError(
                f"max_levels and min_level_count must be >= 1 and n_quantiles >= 2, "
                f"got {max_levels}, {min_level_count}, {n_quantiles}"
            )
        self.schema = schema
        self.numeric = numeric
        self.clip = None if clip is None else float(clip)
        self.max_levels = int(max_levels)
        self.min_level_count = int(min_level_count)
        self.n_quantiles = int(n_quantiles)

    # ------------------------------------------------------------------ fit

    def fit(self, df: pd.DataFrame, *, rows: np.ndarray | None = None) -> Preprocessor:
        """Learn medians, scales and levels from the training table ``df``.

        ``rows`` (positions or a boolean mask of ``df``'s rows) fits on those rows
        only, as ``fit(df.iloc[rows])`` would, one column's copy at a time instead
        of the frame's.
        """
        problems = self._missing_columns(df)
        if problems:
            raise DataError("; ".join(problems))
        numeric_: list[dict[str, Any]] = []
        problems = []
        for name in self.schema.numeric:
            col = df[name] if rows is None else df[name].iloc[rows]
            x, na_tokens, _ = _to_float(col, name=name, na_tokens=None, row_offset=0)
            del col
            inf = np.isinf(x)
            if inf.any():
                problems.append(_inf_problem(name, int(np.flatnonzero(inf)[0]), 0))
                continue
            numeric_.append(self._fit_numeric(name, x, na_tokens))
        if problems:
            raise DataError("; ".join(problems))
        categorical_ = [
            self._fit_categorical(name, df[name] if rows is None else df[name].iloc[rows])
            for name in self.schema.categorical
        ]
        self.numeric_ = numeric_
        self.categorical_ = categorical_
        self._finish()
        return self

    def fit_from_summaries(self, *, numeric: Sequence[Any], categorical: Sequence[Any]) -> Preprocessor:
        """Fit from per-column summaries of a table too large to hold (the streaming path).

        The same fitted state as :meth:`fit`, computed from what one pass over
        the data collected (:mod:`binclf.data.sketch`), one summary per column
        in ``schema.numeric`` / ``schema.categorical`` order:

        Parameters
        ----------
        numeric : sequence of numeric summaries
            Each with ``name``, ``sample()`` (float64 array of present values
            whose quantiles stand for the column's), ``n_missing`` (int),
            ``mean`` and ``std`` (exact, of all present values) and
            ``na_tokens`` (text read as missing).
        categorical : sequence of category summaries
            Each with ``name``, ``counts()`` (canonical text -> rows) and ``n_missing``.

        Returns
        -------
        Preprocessor
            ``self``, fitted.
        """
        names = [s.name for s in numeric], [s.name for s in categorical]
        if names != (self.schema.numeric, self.schema.categorical):
            raise ConfigError(f"summaries for columns {names} do not match the schema's {self.schema.names}")
        self.numeric_ = [
            self._numeric_state(
                s.name, s.sample(), has_missing=s.n_missing > 0, na_tokens=sorted(s.na_tokens),
                mean_std=(float(s.mean), float(s.std)),
            )
            for s in numeric
        ]
        self.categorical_ = [self._categorical_state(s.name, s.counts(), has_missing=s.n_missing > 0) for s in categorical]
        self._finish()
        return self

    def _fit_numeric(self, name: str, x: np.ndarray, na_tokens: list[str]) -> dict[str, Any]:
        # Statistics in float64 whatever the column's width (a float32 column: one column's copy).
        present = x[~np.isnan(x)].astype(np.float64, copy=False)
        return self._numeric_state(name, present, has_missing=present.size < x.size, na_tokens=na_tokens)

    def _numeric_state(
        self, name: str, present: np.ndarray, *, has_missing: bool, na_tokens: list[str],
        mean_std: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """A numeric column's fitted state from its present values (or a sample of them)."""
        if present.size == 0:
            raise DataError(
                f"column {name!r} has no numbers at all (every cell is missing); drop it with --drop {name}"
            )
        median = float(np.median(present))
        stats: dict[str, Any] = {"name": name, "median": median}
        if self.numeric == "quantile":
            from scipy.special import ndtri

            probs = np.linspace(0.0, 1.0, self.n_quantiles)
            q = np.quantile(present, probs)
            # Tied quantiles (whole-number columns) become one knot at their mean
            # probability; knots map to normal scores, bounded by keeping p off 0 and 1.
            knots, inverse = np.unique(q, return_inverse=True)
            p = np.bincount(inverse, weights=probs) / np.bincount(inverse)
            eps = 0.5 / self.n_quantiles
            scores = ndtri(np.clip(p, eps, 1 - eps))
            stats["quantiles"] = [float(v) for v in knots]
            stats["scores"] = [float(v) for v in scores]
            center, scale = 0.0, 1.0
        elif self.numeric == "standard":
            center, scale = mean_std or _mean_std(present)
        else:
            q25, q75 = np.quantile(present, [0.25, 0.75])
            with np.errstate(over="ignore"):  # q75 - q25 beyond 1.8e308 is inf, caught below
                center, scale = median, float(q75 - q25) / 1.349
            if not (scale > 0 and math.isfinite(scale)):
                scale = (mean_std or _mean_std(present))[1]
        if not (scale > 0 and math.isfinite(scale)):
            scale = 1.0
        stats.update(center=center, scale=scale)
        stats["indicator"] = bool(has_missing)
        stats["na_tokens"] = na_tokens
        # The imputed value, in the transformed space (so it is filled after scaling).
        stats["fill"] = float(self._scale_block(np.array([median]), stats)[0])
        return stats

    def _fit_categorical(self, name: str, s: pd.Series) -> dict[str, Any]:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        texts = canonical_labels(np.asarray(uniques, dtype=object))
        counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
        per_level: dict[str, int] = {}
        for t, c in zip(texts, counts):
            per_level[t] = per_level.get(t, 0) + int(c)
        return self._categorical_state(name, per_level, has_missing=bool((codes < 0).any()))

    def _categorical_state(self, name: str, per_level: dict[str, int], *, has_missing: bool) -> dict[str, Any]:
        """A categorical column's fitted state from its rows per canonical level."""
        ranked = sorted(per_level.items(), key=lambda kv: (-kv[1], kv[0]))
        levels = [t for t, c in ranked if c >= self.min_level_count][: self.max_levels]
        return {
            "name": name,
            "levels": levels,
            "missing": has_missing,
            "unknown": len(levels) < len(ranked),
        }

    def _finish(self) -> None:
        names: list[str] = []
        for st in self.numeric_:
            names.append(st["name"])
        for st in self.numeric_:
            if st["indicator"]:
                names.append(f"{st['name']}__missing")
        for st in self.categorical_:
            names += [f"{st['name']}={lvl}" for lvl in st["levels"]]
            if st["missing"]:
                names.append(f"{st['name']}=<missing>")
            if st["unknown"]:
                names.append(f"{st['name']}=<unknown>")
        self.feature_names_ = names
        self.n_features_out_ = len(names)
        self.cardinalities_ = [len(st["levels"]) + 2 for st in self.categorical_]
        self._level_index = [{lvl: i + 2 for i, lvl in enumerate(st["levels"])} for st in self.categorical_]

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise NotFittedError("this Preprocessor is not fitted yet; call fit(df) first")

    # ------------------------------------------------------------ transform

    def _missing_columns(self, df: pd.DataFrame) -> list[str]:
        missing = [c for c in self.schema.names if c not in df.columns]
        if not missing:
            return []
        return [
            f"missing feature column(s) {', '.join(map(repr, missing))}; the table has "
            f"{', '.join(map(repr, map(str, df.columns[:30])))}; give a table with every training column"
        ]

    def extra_columns(self, df: pd.DataFrame) -> list[str]:
        """Columns of ``df`` the preprocessor does not use (ignored by ``transform``)."""
        used = set(self.schema.names)
        return [str(c) for c in df.columns if c not in used]

    def read_types(self) -> dict[str, str]:
        """``column_types`` for :func:`binclf.io.iter_batches` matching this preprocessor.

        Numeric columns whose training data spelled missing values as text (e.g. ``"?"``)
        are read as text and converted here, so those spellings stay "missing".
        """
        self._check_fitted()
        types = {st["name"]: ("categorical" if st["na_tokens"] else "numeric") for st in self.numeric_}
        types.update({st["name"]: "categorical" for st in self.categorical_})
        return types

    def check(self, df: pd.DataFrame, *, row_offset: int = 0, rows: np.ndarray | None = None) -> None:
        """Raise the DataError :meth:`transform` would raise for its columns, without making the inputs.

        Missing columns and text in a numeric column, one column at a time
        (infinite values are :func:`check_finite`'s): a caller can validate rows
        early and transform them later, when memory allows. ``rows``: only those
        positions of ``df``, numbered as in ``df.iloc[rows]``.
        """
        self._check_fitted()
        problems = self._missing_columns(df)
        if problems:
            raise DataError("; ".join(problems))
        for st in self.numeric_:
            if not st["na_tokens"] and pd.api.types.is_numeric_dtype(df[st["name"]].dtype):
                continue  # numbers already: nothing to parse
            col = df[st["name"]] if rows is None else df[st["name"]].iloc[rows].reset_index(drop=True)
            _, _, problem = _to_float(col, name=st["name"], na_tokens=st["na_tokens"], row_offset=row_offset)
            if problem:
                problems.append(problem)
        if problems:
            raise DataError("; ".join(problems))

    def transform(
        self, df: pd.DataFrame, *, row_offset: int = 0, unseen: UnseenCounts | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """DataFrame (n rows) -> float32 array (n, n_features_out_), C-contiguous.

        Columns are laid out as ``feature_names_``: scaled numbers, their missing
        indicators, then the one-hot blocks. Raises one DataError listing every
        problem: missing columns, text in a numeric column, infinite values.

        With ``unseen``, the values of each categorical column that are not
        training levels are counted there (integers where training saw text turn
        every row into "unknown"); prediction warns from those counts
        (:meth:`UnseenCounts.warn`), once per call even over many batches. Training
        does not count: its rare levels are "unknown" by design.

        ``rows`` (a boolean mask or positions of ``df``'s rows) transforms only
        those rows, as ``transform(df.iloc[rows])`` would, without copying the
        frame first: the columns are parsed whole (numbers without a copy) and
        each block of output rows gathered from them (:meth:`transform_arrays`'s
        ``take``). Streaming training cuts each read batch this way, and
        in-memory training its splits (measured, 200k-row batches of 50
        columns, 60% kept: see ``train/stream.py``). Infinite values are then
        named by their row in ``df``.
        """
        self._check_fitted()
        problems = self._missing_columns(df)
        if problems:
            raise DataError("; ".join(problems))
        num_x: list[np.ndarray] = []
        for st in self.numeric_:
            x, _, problem = _to_float(df[st["name"]], name=st["name"], na_tokens=st["na_tokens"], row_offset=row_offset)
            if problem:
                problems.append(problem)
            num_x.append(x)
        cat_codes = [self._codes(df[st["name"]], k) for k, st in enumerate(self.categorical_)]
        if problems:
            raise DataError("; ".join(problems))
        n_rows = len(df)
        take = None
        if rows is not None:
            rows = np.asarray(rows)
            take = np.flatnonzero(rows) if rows.dtype == bool else rows
            n_rows = len(take)
            if unseen is not None:
                raise ValueError("transform: `unseen` counts every row of the frame; it cannot be given with `rows`")
        if unseen is not None:
            for k, st in enumerate(self.categorical_):
                codes = cat_codes[k]
                hit = np.flatnonzero(codes == 1)
                example = df[st["name"]].iloc[int(hit[0])] if hit.size else None
                unseen.add(st["name"], int(hit.size), int((codes != 0).sum()), example, st["levels"])
        return self.transform_arrays(num_x, cat_codes, row_offset=row_offset, n_rows=n_rows, take=take)

    def transform_arrays(
        self, numbers: Sequence[np.ndarray], codes: Sequence[np.ndarray], *, row_offset: int = 0,
        n_rows: int | None = None, take: np.ndarray | None = None,
    ) -> np.ndarray:
        """Parsed columns -> float32 array (n, n_features_out_), as :meth:`transform` lays it out.

        The pandas-free half of :meth:`transform` (the server's records path uses it).

        Parameters
        ----------
        numbers : one float64 array ``(n,)`` per numeric column, in ``schema.numeric``
            order; NaN is missing.
        codes : one int64 array ``(n,)`` per categorical column, in ``schema.categorical``
            order: 0 = missing, 1 = unknown, 2.. = the training levels in ``categorical_[k]["levels"]``.
        take : int array, optional
            Positions in those arrays of the rows to transform, in output order
            (default: every row): each block of output rows is gathered from
            them, so no copy of whole columns is made.

        Raises DataError naming the first infinite value of each numeric column.
        """
        self._check_fitted()
        num_x, cat_codes = list(numbers), list(codes)
        # n_rows: a table of text columns only has neither numbers nor codes to count rows by.
        n = (
            len(take) if take is not None
            else n_rows if n_rows is not None else len(num_x[0]) if num_x else len(cat_codes[0]) if cat_codes else 0
        )
        d = self.n_features_out_
        out = np.empty((n, d), dtype=np.float32)
        n_num = len(self.numeric_)
        ind_rows = [i for i, st in enumerate(self.numeric_) if st["indicator"]]
        ind_pos = {i: n_num + k for k, i in enumerate(ind_rows)}
        # One-hot: code -> output row (or -1 for "no column": all-zero block).
        onehot: list[np.ndarray] = []
        pos = n_num + len(ind_rows)
        for st in self.categorical_:
            n_lv = len(st["levels"])
            lut = np.full(n_lv + 2, -1, dtype=np.int64)
            lut[2:] = pos + np.arange(n_lv)
            pos += n_lv
            if st["missing"]:
                lut[0] = pos
                pos += 1
            if st["unknown"]:
                lut[1] = pos
                pos += 1
            onehot.append(lut)
        inf_first: dict[int, int] = {}
        block = min(_BLOCK_ROWS, max(256, _BLOCK_FLOATS // max(d, 1)), max(n, 1))
        scratch = np.empty((d, block), dtype=np.float32)
        for start in range(0, n, block):
            stop = min(start + block, n)
            b = stop - start
            sc = scratch[:, :b]
            part = slice(start, stop) if take is None else take[start:stop]
            for j, st in enumerate(self.numeric_):
                # float32 columns are scaled in float64 a block at a time: the same
                # numbers as a table widened to float64 whole, without its copy.
                x = num_x[j][part].astype(np.float64, copy=False)
                row = sc[j]
                self._scale_block(x, st, out=row)
                # One cheap reduction tells whether the block holds NaN or inf at all
                # (a sum that overflows from huge finite values only sends it to the exact check).
                with np.errstate(over="ignore", invalid="ignore"):
                    block_sum = float(x.sum()) if x.dtype.kind == "f" else 0.0
                if x.dtype.kind == "f" and not math.isfinite(block_sum):
                    nan = np.isnan(x)
                    inf = np.isinf(x)
                    if inf.any() and j not in inf_first:
                        first = start + int(np.flatnonzero(inf)[0])
                        inf_first[j] = first if take is None else int(take[first])
                    row[nan] = st["fill"]
                    if j in ind_pos:
                        sc[ind_pos[j]] = nan
                elif j in ind_pos:
                    sc[ind_pos[j]] = 0.0
            if onehot:
                sc[n_num + len(ind_rows) :] = 0.0
                cols = np.arange(b)
                for k, lut in enumerate(onehot):
                    rows = lut[cat_codes[k][part]]
                    hit = rows >= 0
                    sc[rows[hit], cols[hit]] = 1.0
            out[start:stop] = sc.T
        if inf_first:
            raise DataError(
                "; ".join(
                    _inf_problem(self.numeric_[j]["name"], i, row_offset) for j, i in sorted(inf_first.items())
                )
            )
        return out

    def _scale_block(self, x: np.ndarray, st: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
        """Scale numbers (NaN stays NaN) into float32 ``out``.

        Values beyond float32's range (|x - center| / scale above ~3.4e38, e.g.
        1e308 in a column of small numbers) become +-inf here and +-clip after the
        soft clip, the value any huge number gets: NumPy's overflow warnings are
        silenced for that reason (without a clip they stay +-inf, as before).
        """
        if out is None:
            out = np.empty(x.shape, dtype=np.float32)
        if self.numeric == "quantile":
            out[...] = np.interp(x, st["quantiles"], st["scores"])
            return out
        inv = 1.0 / st["scale"]
        with np.errstate(over="ignore"):
            if np.float32(inv) > 0 and math.isfinite(np.float32(st["center"])):
                np.subtract(x, st["center"], out=out, casting="unsafe")
                np.multiply(out, np.float32(inv), out=out)
            else:  # a scale or centre beyond float32's range (columns of values near 1e308): in float64
                np.multiply(np.subtract(x, st["center"], dtype=np.float64), inv, out=out, casting="unsafe")
        if self.clip is not None:  # smooth clip: identity near 0, bounded by +-clip
            c = np.float32(self.clip)
            np.multiply(out, np.float32(1.0) / c, out=out)
            np.tanh(out, out=out)
            np.multiply(out, c, out=out)
        return out

    def _codes(self, s: pd.Series, k: int) -> np.ndarray:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        index = self._level_index[k]
        lut = np.array([index.get(t, 1) for t in canonical_labels(np.asarray(uniques, dtype=object))] + [0], dtype=np.int64)
        return lut[codes]  # code -1 (missing) picks the trailing 0

    def categorical_codes(self, df: pd.DataFrame, *, row_offset: int = 0) -> np.ndarray:
        """int64 array (n, n_categorical): 0 = missing, 1 = unknown, 2.. = training levels.

        Column ``k`` has codes below ``cardinalities_[k]`` (an embedding table size).
        """
        self._check_fitted()
        cat = self.schema.categorical
        missing = [c for c in cat if c not in df.columns]
        if missing:
            raise DataError("; ".join(self._missing_columns(df)))
        out = np.empty((len(df), len(cat)), dtype=np.int64)
        for k, st in enumerate(self.categorical_):
            out[:, k] = self._codes(df[st["name"]], k)
        return out

    def fit_transform(self, df: pd.DataFrame) -> np.ndarray:
        return self.fit(df).transform(df)

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state; ``Preprocessor.from_dict(p.to_dict())`` transforms identically."""
        self._check_fitted()
        return {
            "format": _FORMAT,
            "schema": self.schema.to_dict(),
            "numeric": self.numeric,
            "clip": self.clip,
            "max_levels": self.max_levels,
            "min_level_count": self.min_level_count,
            "n_quantiles": self.n_quantiles,
            "numeric_": [dict(st) for st in self.numeric_],
            "categorical_": [dict(st) for st in self.categorical_],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise BundleError(f"preprocessor state has format {found!r}, expected {_FORMAT!r}; re-train the model")
        try:
            p = cls(
                schema=Schema.from_dict(d["schema"]),
                numeric=d["numeric"],
                clip=d["clip"],
                max_levels=d["max_levels"],
                min_level_count=d["min_level_count"],
                n_quantiles=d["n_quantiles"],
            )
            p.numeric_ = [dict(st) for st in d["numeric_"]]
            p.categorical_ = [dict(st) for st in d["categorical_"]]
        except (KeyError, TypeError) as exc:
            raise BundleError(f"preprocessor state is damaged: missing or bad entry {exc}; re-train the model") from exc
        if [st["name"] for st in p.numeric_] != p.schema.numeric or [
            st["name"] for st in p.categorical_
        ] != p.schema.categorical:
            raise BundleError("preprocessor state is damaged: fitted columns differ from its schema; re-train the model")
        p._finish()
        return p

    def __repr__(self) -> str:
        fitted = f", n_features_out_={self.n_features_out_}" if hasattr(self, "feature_names_") else ""
        return f"Preprocessor(numeric={self.numeric!r}, columns={len(self.schema.columns)}{fitted})"


def check_finite(
    df: pd.DataFrame, columns: Sequence[str], *, source: str = "data", rows: np.ndarray | None = None
) -> None:
    """Raise one DataError naming every column of ``columns`` holding an infinite number.

    ``rows[i]`` is the 0-based data-row position in the file of ``df``'s row ``i``
    (default: ``i``), so messages name file rows even after rows were dropped.
    Columns absent from ``df`` are skipped (the transform reports them).
    """
    problems = []
    for name in columns:
        if name not in df.columns:
            continue
        x, _, _ = _to_float(df[name], name=name, na_tokens=None, row_offset=0)
        inf = np.flatnonzero(np.isinf(x))
        if inf.size:
            problems.append(_inf_problem(name, int(inf[0] if rows is None else rows[inf[0]]), 0))
    if problems:
        raise DataError(f"{source}: " + "; ".join(problems))


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of finite ``x`` without overflow (values near 1e308 included).

    Computed on ``x / max|x|`` and scaled back, so the sums stay finite; the
    result is finite whenever it is representable.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(x.mean()), float(x.std())
    if math.isfinite(mean) and math.isfinite(std):
        return mean, std
    m = float(np.abs(x).max())
    y = x / m
    with np.errstate(over="ignore"):
        return float(y.mean() * m), float(y.std() * m)


def _inf_problem(name: str, i: int, row_offset: int) -> str:
    return (
        f"column {name!r} holds an infinite value at row {_line(i, row_offset)}; "
        "replace it with a finite number or leave the cell empty (missing)"
    )


def _to_float(
    s: pd.Series, *, name: str, na_tokens: list[str] | None, row_offset: int
) -> tuple[np.ndarray, list[str], str | None]:
    """A column as float numbers (NaN = missing): float64, or float32 for a float32 column (no copy).

    Text is parsed as numbers. At fit (``na_tokens is None``) text that is not a
    number is taken as a spelling of "missing" and returned in the token list; at
    transform only the training tokens are, and anything else is a problem.
    """
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        if pd.api.types.is_extension_array_dtype(s.dtype):
            return s.to_numpy(dtype=np.float64, na_value=np.nan), [], None
        return s.to_numpy(), [], None  # float64 / float32 / int64: no copy
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan), [], None
    text = s.astype("str") if s.dtype != "str" else s
    x = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(x) & s.notna().to_numpy()
    if not bad.any():
        return x, [], None
    bad_values = text[bad].str.strip()
    if na_tokens is None:
        return x, sorted(set(bad_values)), None
    unknown = ~bad_values.isin(na_tokens).to_numpy()
    if not unknown.any():
        return x, list(na_tokens), None
    first = int(np.flatnonzero(bad)[np.flatnonzero(unknown)[0]])
    return x, list(na_tokens), (
        f"column {name!r} should hold numbers but holds {safe_excerpt(str(s.iloc[first]))} at row {_line(first, row_offset)}; "
        "replace it with a number or leave the cell empty (missing)"
    )
