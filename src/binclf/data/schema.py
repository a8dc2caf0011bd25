"""Column roles: which columns are numeric, categorical or dropped, inferred from the table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from binclf.errors import ConfigError, DataError
from binclf.io.messages import list_names, names_with_hints, safe_excerpt


# --------------------------------------------------------------------------- #
# schema
# --------------------------------------------------------------------------- #

Role = Literal["numeric", "categorical", "text"]


@dataclass(frozen=True)
class ColumnSpec:
    """One feature column: its name, how it is used, and the dtype it was read with."""

    name: str
    role: Role
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnSpec:
        if d.get("role") not in ("numeric", "categorical", "text"):
            raise ConfigError(f"column spec {d!r}: role must be 'numeric', 'categorical' or 'text'")
        return cls(name=str(d["name"]), role=d["role"], dtype=str(d["dtype"]))


@dataclass(frozen=True)
class Schema:
    """The feature columns of a table and the columns left out (with the reason)."""

    columns: tuple[ColumnSpec, ...]
    dropped: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "categorical"]

    @property
    def text(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "text"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [c.to_dict() for c in self.columns],
            "dropped": [[name, reason] for name, reason in self.dropped],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        return cls(
            columns=tuple(ColumnSpec.from_dict(c) for c in d["columns"]),
            dropped=tuple((str(n), str(r)) for n, r in d.get("dropped", [])),
        )


_NUMBER_RE = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")



def json_scalar(v: Any) -> str | int | float | bool:
    """A JSON scalar of the value's own Python type (numpy scalars unwrapped)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _is_numeric_dtype(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _is_plain_number(s: pd.Series) -> bool:
    """A NumPy int or float column (not pandas' nullable or extension types)."""
    return isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuf"


# Rows tested at a time for whole numbers: a measurement's first block already
# holds a fraction, and the test's temporaries stay small.
_INTEGRAL_BLOCK = 1 << 16


def _is_integral(values: np.ndarray) -> bool:
    """Whether every value is a whole number (``values`` ``(n,)``, any numeric dtype)."""
    if not values.size:
        return False
    if values.dtype.kind in "iu":
        return True
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not integral, and no warning on stderr
        # x % 1 == 0 is exact at any float width: float32 need not be widened.
        return all(
            bool(np.all(np.mod(values[lo : lo + _INTEGRAL_BLOCK], 1.0) == 0))
            for lo in range(0, values.size, _INTEGRAL_BLOCK)
        )


def _text_role(name: str, present: pd.Series, n_distinct: int, notices: list[str]) -> Role | None:
    """``"text"`` for a free-text column, ``"categorical"`` for words repeated over few values, else None.

    The thresholds are those of :func:`binclf.data.text.looks_like_text`.
    """
    from binclf.data.text import _MIN_MEDIAN_WORDS, _MIN_WORDY_SHARE, looks_like_text

    verdict, ev = looks_like_text(present)
    if verdict:
        notices.append(f"column {name!r} is free text (median {ev['median_words']:g} words); pass --categorical {name} to use it as categories")
        return "text"
    if ev["median_words"] >= _MIN_MEDIAN_WORDS and ev["wordy_share"] >= _MIN_WORDY_SHARE and len(present) >= 20:
        notices.append(
            f"column {name!r} holds sentences but only {n_distinct} distinct values: it is treated as categorical; "
            f"pass --text {name} to read its words"
        )
        return "categorical"
    return None


def infer_schema(
    df: pd.DataFrame,
    *,
    target: str,
    drop: Iterable[str] = (),
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
    text: Iterable[str] = (),
    max_code_levels: int = 5,
) -> tuple[Schema, list[str]]:
    """Decide the role of every column of ``df`` except ``target``; returns ``(schema, notices)``.

    Rules (``categorical=`` / ``numeric=`` override them, ``drop=`` removes columns):

    * free text (mostly distinct values of several words, see
      :func:`binclf.data.text.looks_like_text`) is ``text``; sentences repeated
      over few distinct values are categorical, with a notice;
    * other strings and boolean columns are categorical;
    * numbers are numeric, except integer-valued columns (int, or float holding
      only whole numbers, as an int column with missing values does) with at most
      ``max_code_levels`` (5) distinct values: those are far more often codes
      (store, type, grade, flag) than measurements, and one-hot loses nothing for
      so few values; integer columns with more values (scores 1..10, counts,
      years of age) keep their order as numbers;
    * identifier-like columns are dropped: text or integers, at least 20 rows,
      one distinct value per row (integers also sorted or a gap-free range);
    * constant columns (one value, nothing missing) are dropped;
    * a text column whose values nearly all parse as numbers stays categorical,
      with a notice; a text column whose values all parse is treated as numbers.

    Raises DataError for a missing target, unknown names in the overrides, and
    all-missing columns.
    """
    names = [str(c) for c in df.columns]
    drop, categorical, numeric, text = list(drop), list(categorical), list(numeric), list(text)
    if target not in names:
        raise DataError(
            f"target column {names_with_hints([target], names)} is not in the table; "
            f"the columns are {list_names(names)}; pass one of them as --target"
        )
    problems = []
    for option, given in (("drop", drop), ("categorical", categorical), ("numeric", numeric), ("text", text)):
        unknown = [c for c in given if c not in names]
        if unknown:
            problems.append(f"--{option} names unknown column(s) {names_with_hints(unknown, names)}")
    for (a, ga), (b, gb) in (
        (("categorical", categorical), ("numeric", numeric)),
        (("text", text), ("categorical", categorical)),
        (("text", text), ("numeric", numeric)),
    ):
        both = sorted(set(ga) & set(gb))
        if both:
            problems.append(f"column(s) {', '.join(map(repr, both))} are given as both --{a} and --{b}")
    if target in drop or target in categorical or target in numeric or target in text:
        problems.append(f"the target {target!r} cannot also be in --drop/--categorical/--numeric/--text")
    if problems:
        raise DataError("; ".join(problems) + f"; the columns are {list_names(names)}")

    specs: list[ColumnSpec] = []
    dropped: list[tuple[str, str]] = [(c, "dropped on request") for c in drop]
    notices: list[str] = []
    all_missing: list[str] = []
    codes: list[str] = []
    n = len(df)
    for name in names:
        if name == target or name in drop:
            continue
        s = df[name]
        if _is_plain_number(s):
            # NumPy numbers: no hash table of a whole float column (~6x the
            # column's bytes at the peak); the distinct count is needed only
            # for whole numbers (codes, identifiers), a constant is min == max.
            arr = s.to_numpy()
            missing = np.isnan(arr) if arr.dtype.kind == "f" else None
            has_missing = missing is not None and bool(missing.any())
            present = pd.Series(arr[~missing] if has_missing else arr, copy=False)
            if present.empty:
                all_missing.append(name)
                continue
            lo, hi = present.min(), present.max()
            whole = _is_integral(present.to_numpy())
            n_distinct = present.nunique() if whole else 1 if lo == hi else 2  # 2: "more than one"
            del missing
        else:
            present = s.dropna()
            if present.empty:
                all_missing.append(name)
                continue
            n_distinct = present.nunique()
            has_missing = len(present) < n
            whole = None
        dtype = str(s.dtype)
        if n_distinct == 1 and not has_missing:
            dropped.append((name, "constant"))
            notices.append(f"column {name!r} dropped: it holds the single value {safe_excerpt(json_scalar(present.iloc[0]))}")
            continue
        forced: Role | None = (
            "categorical" if name in categorical else "numeric" if name in numeric else "text" if name in text else None
        )
        if forced is not None:
            specs.append(ColumnSpec(name, forced, dtype))
            continue
        values: np.ndarray | None = None  # the numbers, when the column holds numbers
        if whole is not None:
            values = present.to_numpy()  # float64 only where an identifier test below needs it
        elif _is_numeric_dtype(s):
            values = present.to_numpy(dtype=np.float64)
        elif not pd.api.types.is_bool_dtype(s.dtype):
            # Parse each distinct text once (a category column of 22k rows has
            # ~100), then count the rows whose text does not parse.
            distinct = pd.Series(present.unique())
            unparsed = distinct[pd.to_numeric(distinct.astype(str), errors="coerce").isna()]
            n_bad = int(present.isin(unparsed).sum()) if len(unparsed) else 0
            if n_bad == 0:
                values = pd.to_numeric(present.astype(str), errors="coerce").to_numpy(dtype=np.float64)
            elif n_bad <= 0.1 * len(present):
                bad = unparsed.astype(str).to_numpy()[:3]
                notices.append(
                    f"column {name!r} holds numbers except {n_bad} value(s) such as "
                    f"{', '.join(map(safe_excerpt, bad))}; it is treated as categorical; to use it as numbers, "
                    f"empty those cells or pass --numeric {name} (they then count as missing)"
                )
        if values is None and not pd.api.types.is_bool_dtype(s.dtype):
            role = _text_role(name, present, n_distinct, notices)
            if role is not None:
                specs.append(ColumnSpec(name, role, dtype))
                continue
        integral = values is not None and (whole if whole is not None else _is_integral(values))
        if values is None or integral:
            unique_per_row = n_distinct == n and n >= 20
            if unique_per_row and values is None:
                dropped.append((name, "identifier"))
                notices.append(f"column {name!r} dropped: a different text in every row, like an identifier")
                continue
            if unique_per_row and integral:
                values = values.astype(np.float64, copy=False)
                sorted_ = bool(np.all(np.diff(values) > 0) or np.all(np.diff(values) < 0))
                gapless = values.max() - values.min() == n - 1
                if sorted_ or gapless:
                    dropped.append((name, "identifier"))
                    notices.append(
                        f"column {name!r} dropped: a different integer in every row, like an identifier; "
                        f"pass --numeric {name} to keep it"
                    )
                    continue
        if values is None:
            specs.append(ColumnSpec(name, "categorical", dtype))
        elif integral and n_distinct <= max_code_levels:
            specs.append(ColumnSpec(name, "categorical", dtype))
            codes.append(name)
        else:
            specs.append(ColumnSpec(name, "numeric", dtype))
    if all_missing:
        raise DataError(
            f"column(s) {', '.join(map(repr, all_missing))} have no values at all (every cell is missing); "
            f"drop them with --drop {' '.join(all_missing)}"
        )
    if codes:
        notices.append(
            f"integer column(s) {', '.join(map(repr, codes))} have at most {max_code_levels} distinct values "
            "and are treated as categories; pass --numeric NAME to treat one as a number"
        )
    if not specs:
        raise DataError(
            f"no feature columns are left besides the target {target!r} "
            f"(dropped: {', '.join(f'{c} ({r})' for c, r in dropped) or 'none'}); "
            "the table needs at least one usable feature column"
        )
    return Schema(columns=tuple(specs), dropped=tuple(dropped)), notices
