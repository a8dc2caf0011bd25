"""The yes/no target: its two labels, the positive class (one rule for every command) and the 0/1 encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from binclf.errors import DataError
from binclf.data.schema import _NUMBER_RE, json_scalar
from binclf.io.messages import FIRST_DATA_LINE, safe_excerpt


# --------------------------------------------------------------------------- #
# target
# --------------------------------------------------------------------------- #

Label = str | int | float | bool
_POS_NEG = [
    ({"1", "1.0", "+1"}, {"0", "0.0", "-1", "-1.0"}),
    ({"true", "t"}, {"false", "f"}),
    ({"yes", "y"}, {"no", "n"}),
    ({"pos", "positive"}, {"neg", "negative"}),
]




def _label_key(v: Any) -> str:
    """Text form used to match labels typed by a user: case-insensitive, 1.0 == 1."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)) or (isinstance(v, str) and _NUMBER_RE.match(v)):
        x = float(v)
        return str(int(x)) if math.isfinite(x) and x.is_integer() else repr(x)
    return str(v).strip().lower()


@dataclass(frozen=True)
class TargetInfo:
    """The target column and its two labels, in their original Python types."""

    column: str
    positive: Label
    negative: Label
    n_positive: int
    n_negative: int

    def encode(self, values: pd.Series, *, source: str = "data") -> np.ndarray:
        """Labels ``(n,)`` -> 0/1 float32, matched as at training (case-insensitive, 1 == 1.0).

        A missing label or a value that is neither label is a DataError naming
        the rows (file rows: row 2 is the first data row) and the counts.
        """
        col = self.column
        missing = values.isna().to_numpy()
        if missing.any():
            rows = np.flatnonzero(missing)
            raise DataError(
                f"{source}: column {col!r} has {len(rows)} missing label(s) (row(s) {_row_list(rows)}); "
                "every row needs a label: fill them in or drop those rows"
            )
        # Each distinct value's key once (a column of millions of rows has two).
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        unique_keys = np.array([_label_key(u) for u in np.asarray(uniques).astype(object)] + [""], dtype=object)
        pos, neg = _label_key(self.positive), _label_key(self.negative)
        bad = ~np.isin(unique_keys, [pos, neg])[codes]
        if bad.any():
            rows = np.flatnonzero(bad)
            counts = values[bad].astype(str).value_counts()
            found = ", ".join(f"{safe_excerpt(k)}: {int(v)}" for k, v in list(counts.items())[:5])
            found += f" and {len(counts) - 5} more" if len(counts) > 5 else ""
            raise DataError(
                f"{source}: column {col!r} has {len(rows)} value(s) that are not the model's labels "
                f"{self.negative!r}/{self.positive!r} ({found}; first at row {int(rows[0]) + FIRST_DATA_LINE}); "
                "use rows labelled like the training data"
            )
        return (unique_keys == pos)[codes].astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "positive": self.positive,
            "negative": self.negative,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetInfo:
        return cls(
            column=str(d["column"]),
            positive=d["positive"],
            negative=d["negative"],
            n_positive=int(d["n_positive"]),
            n_negative=int(d["n_negative"]),
        )


def _row_list(positions: np.ndarray, limit: int = 5) -> str:
    rows = ", ".join(str(int(i) + FIRST_DATA_LINE) for i in positions[:limit])
    return rows + (", ..." if len(positions) > limit else "")


def encode_target(
    series: pd.Series,
    *,
    column: str,
    positive: Any = None,
    drop_missing: bool = False,
) -> tuple[np.ndarray, np.ndarray, TargetInfo, list[str]]:
    """Turn a two-valued column into 0/1.

    Returns ``(y, keep_mask, info, notices)``: ``keep_mask`` (n,) bool marks the rows
    kept (all, unless ``drop_missing`` dropped rows with a missing target) and ``y``
    (keep_mask.sum(),) float32 is 1.0 for the positive class.

    The positive class is ``positive`` when given (matched against the labels as
    text, case-insensitively, ``"1"`` matching ``1.0``), else the obvious one of a
    pair such as 1/0, true/false, yes/no, y/n, pos/neg, else the rarer class.
    """
    missing = series.isna().to_numpy()
    notices: list[str] = []
    if missing.any():
        where = np.flatnonzero(missing)
        if not drop_missing:
            raise DataError(
                f"target column {column!r} has {len(where)} missing value(s) (row(s) {_row_list(where)}); "
                "fill them in, or drop those rows with --drop-missing-target (drop_missing=True)"
            )
        notices.append(
            f"{len(where)} row(s) with a missing {column!r} dropped (row(s) {_row_list(where)})"
        )
    keep = ~missing
    present = series[keep]
    info, why = target_from_counts(present.value_counts(sort=True), column=column, positive=positive)
    y = (present == info.positive).to_numpy(dtype=bool).astype(np.float32)
    notices.append(
        f"positive class of {column!r}: {info.positive!r} ({why}; {info.n_positive} of {len(y)} rows); "
        f"pass --positive {info.negative} for the other class"
    )
    return y, keep, info, notices


def target_from_counts(counts: pd.Series, *, column: str, positive: Any = None) -> tuple[TargetInfo, str]:
    """The two labels and the positive class from the rows per label (most frequent first).

    The rule of :func:`encode_target` (which calls it), usable on counts
    gathered over a stream. Returns ``(info, why)``: ``why`` says how the
    positive class was chosen.
    """
    if len(counts) != 2:
        listing = ", ".join(f"{safe_excerpt(json_scalar(k))}: {int(v)}" for k, v in list(counts.items())[:10])
        more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
        raise DataError(
            f"target column {column!r} must have exactly two classes, found {len(counts)} "
            f"({listing}{more}); choose a yes/no column as --target"
            + (" or merge classes into two" if len(counts) > 2 else "")
        )
    labels = [json_scalar(k) for k in counts.index]
    count_of = {lab: int(c) for lab, c in zip(labels, counts.to_numpy())}
    if positive is not None:
        exact = [lab for lab in labels if str(lab) == str(positive)]
        loose = [lab for lab in labels if _label_key(lab) == _label_key(positive)]
        match = exact or loose
        if len(match) != 1:
            raise DataError(
                f"positive={positive!r} is not one of the two values of target {column!r}: "
                f"{labels[0]!r} or {labels[1]!r}; pass one of them as --positive"
            )
        pos, why = match[0], "as requested"
    else:
        keys = [_label_key(lab) for lab in labels]
        pos, why = None, ""
        for pos_set, neg_set in _POS_NEG:
            for i in (0, 1):
                if keys[i] in pos_set and keys[1 - i] in neg_set:
                    pos, why = labels[i], "the usual positive label"
        if pos is None:
            # value_counts sorts by count; on a tie take the label sorting last.
            a, b = labels
            if count_of[a] == count_of[b]:
                pos = max(labels, key=lambda lab: str(lab))
                why = "the classes are the same size; chose the one sorting last"
            else:
                pos, why = b, "the rarer class"
    neg = labels[1] if pos is labels[0] else labels[0]
    info = TargetInfo(
        column=column, positive=pos, negative=neg, n_positive=count_of[pos], n_negative=count_of[neg]
    )
    return info, why
