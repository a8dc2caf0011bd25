"""Request bodies -> the fitted preprocessor's parsed columns, every problem naming its row and column.

The server's hot path: no pandas. A body (JSON records, ``{"rows": [...]}``, the
MLflow scoring formats, or CSV text) becomes one float64 array per numeric column
(NaN = missing) and one int64 code array per categorical column (0 = missing,
1 = unknown, 2.. = training levels), which
:meth:`~binclf.data.preprocessing.Preprocessor.transform_arrays` turns into model
inputs. Values mean what they mean in ``binclf predict`` on a CSV file:

* ``null``, an absent optional field, and the texts a CSV reader takes for an
  empty cell (``""``, ``"NA"``, ``"null"``, ``"NaN"`` ...) are missing; so are the
  spellings of "missing" the training data used in a numeric column (e.g. ``"?"``);
* numeric fields take JSON numbers or numeric text (``"3.5"``); anything else
  (other text, ``true``, an object or a list, an infinite number) is a problem;
* categorical fields take text, numbers or booleans, compared as canonical text
  (``1``, ``1.0`` and ``"1"`` are the same level); values never seen in training
  are "unknown"; objects and lists are problems.

A column is *optional* when the model learnt what a missing value means there
(the training data had missing values in it): a record may then leave it out.
Every other column must be present in every record (``null`` is still accepted,
and imputed, as ``binclf predict`` does for an empty cell).

Rows are numbered from 0, in request order.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from binclf.data.preprocessing import Preprocessor, canonical_labels
from binclf.data.schema import _NUMBER_RE

__all__ = ["InputError", "Problem", "Columns", "RowDecoder", "MISSING_TEXTS"]

# The texts pyarrow's CSV reader (and so ``binclf predict``) reads as an empty cell.
MISSING_TEXTS = frozenset(pacsv.ConvertOptions().null_values)
_MAX_PROBLEMS = 20  # listed in one answer at most; the count says how many more there were
_CACHE_LIMIT = 10_000  # raw category texts remembered per column (bounded: clients choose the texts)
_FAST_NUMBER_TYPES = frozenset([float, int, type(None)])
_FAST_CODE_TYPES = frozenset([str, int, type(None)])


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (``row``, ``column``, either may be None) and what.

    ``unit`` names what ``row`` counts in the one-line text (``"image"`` for image requests).
    """

    row: int | None
    column: str | None
    message: str
    unit: str = "row"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "message": self.message}

    def __str__(self) -> str:
        where = ", ".join(
            p for p in (f"{self.unit} {self.row}" if self.row is not None else "",
                        f"column {self.column!r}" if self.column is not None else "") if p
        )
        return f"{where}: {self.message}" if where else self.message


class InputError(Exception):
    """The request cannot be predicted as sent (answered 422 with every problem listed)."""

    def __init__(self, problems: Sequence[Problem], *, more: int = 0) -> None:
        self.problems = list(problems)
        self.more = more
        text = str(self.problems[0]) if self.problems else "invalid input"
        if len(self.problems) + more > 1:
            text += f" (and {len(self.problems) + more - 1} more problem(s))"
        super().__init__(text)

    @classmethod
    def one(cls, message: str, *, row: int | None = None, column: str | None = None) -> InputError:
        return cls([Problem(row, column, message)])


class _Problems:
    """Collects problems up to a limit, counting the rest."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.more = 0

    def add(self, row: int | None, column: str | None, message: str) -> None:
        if len(self.items) < _MAX_PROBLEMS:
            self.items.append(Problem(row, column, message))
        else:
            self.more += 1

    def raise_if_any(self) -> None:
        if self.items:
            raise InputError(self.items, more=self.more)


@dataclass(frozen=True)
class Columns:
    """Parsed columns of ``n`` rows, ready for ``Preprocessor.transform_arrays``."""

    n: int
    numbers: list[np.ndarray]  # float64 (n,) per numeric column, NaN = missing
    codes: list[np.ndarray]  # int64 (n,) per categorical column


def _shown(v: Any) -> str:
    text = json.dumps(v) if isinstance(v, (str, bool)) or v is None else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    return f"{_shown(v)}"


class RowDecoder:
    """Turns request rows into :class:`Columns` for one fitted :class:`Preprocessor`.

    Parameters
    ----------
    preprocessor : the bundle's fitted preprocessor (its schema, levels and
        missing-value spellings decide what each value means).
    """

    def __init__(self, preprocessor: Preprocessor) -> None:
        self.preprocessor = preprocessor
        self.names: list[str] = list(preprocessor.schema.names)
        self.numeric: list[tuple[str, frozenset[str]]] = [
            (st["name"], frozenset(st["na_tokens"])) for st in preprocessor.numeric_
        ]
        self.categorical: list[tuple[str, dict[str, int]]] = [
            (st["name"], {lvl: i + 2 for i, lvl in enumerate(st["levels"])}) for st in preprocessor.categorical_
        ]
        self.optional: frozenset[str] = frozenset(
            [st["name"] for st in preprocessor.numeric_ if st["indicator"]]
            + [st["name"] for st in preprocessor.categorical_ if st["missing"]]
        )
        self._getter = operator.itemgetter(*self.names)
        # Raw text -> code, per categorical column: most requests repeat a few spellings.
        self._cache: list[dict[Any, int]] = [{None: 0} for _ in self.categorical]

    # ------------------------------------------------------------------ shapes

    def records(self, rows: Any, *, what: str = "the body") -> Columns:
        """A list of ``{column: value}`` objects."""
        if not isinstance(rows, list):
            raise InputError.one(f"{what} should be a list of records (objects), found {_type_name(rows)}")
        if not rows:
            raise InputError.one(f"{what} is an empty list; send at least one record")
        problems = _Problems()
        if set(map(type, rows)) != {dict}:
            for i, r in enumerate(rows):
                if not isinstance(r, dict):
                    problems.add(i, None, f"should be an object of column: value, found {_type_name(r)}")
            problems.raise_if_any()
        try:  # every column in every record: gathered and transposed in C
            values = list(map(self._getter, rows))
        except KeyError:
            pass  # some record leaves a column out: column by column below
        else:
            if len(self.names) == 1:
                values = [(v,) for v in values]
            return self._parse(dict(zip(self.names, zip(*values))), len(rows), problems)
        columns: dict[str, Any] = {}
        for name in self.names:
            if name in self.optional:
                columns[name] = [r.get(name) for r in rows]  # absent = missing
                continue
            values = [r.get(name, _ABSENT) for r in rows]
            if any(v is _ABSENT for v in values):
                for i, v in enumerate(values):
                    if v is _ABSENT:
                        problems.add(i, name, "is missing; every record needs this column (null for a missing value)")
                        values[i] = None  # reported; the row's other values are still checked
            columns[name] = values
        return self._parse(columns, len(rows), problems)

    def split(self, names: Any, data: Any, *, what: str) -> Columns:
        """Column names and a list of rows (lists of values), as pandas' ``orient="split"``."""
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise InputError.one(f"{what}: 'columns' should be a list of column names (text)")
        if len(set(names)) < len(names):
            dup = sorted({c for c in names if names.count(c) > 1})
            raise InputError.one(f"{what}: 'columns' names {', '.join(map(repr, dup))} more than once")
        if not isinstance(data, list):
            raise InputError.one(f"{what}: 'data' should be a list of rows (lists of values), found {_type_name(data)}")
        if not data:
            raise InputError.one(f"{what}: 'data' is an empty list; send at least one row")
        problems = _Problems()
        width = len(names)
        for i, r in enumerate(data):
            if not isinstance(r, list):
                problems.add(i, None, f"should be a list of {width} values, found {_type_name(r)}")
            elif len(r) != width:
                problems.add(i, None, f"has {len(r)} values for {width} columns")
        problems.raise_if_any()
        index = {c: j for j, c in enumerate(names)}
        missing = [c for c in self.names if c not in index and c not in self.optional]
        if missing:
            raise InputError(
                [Problem(None, c, "is missing from 'columns'; send every column of the model") for c in missing]
            )
        n = len(data)
        columns = {
            c: ([r[index[c]] for r in data] if c in index else [None] * n) for c in self.names
        }
        return self._parse(columns, n, problems)

    def columnar(self, mapping: Any, *, what: str) -> Columns:
        """``{column: [values]}``, all lists of one length (TF-serving ``inputs``)."""
        if not isinstance(mapping, dict):
            raise InputError.one(f"{what} should be an object of column: list of values")
        lengths = {len(v) for v in mapping.values() if isinstance(v, list)}
        bad = [c for c, v in mapping.items() if not isinstance(v, list)]
        if bad:
            raise InputError([Problem(None, c, "should be a list of values, one per row") for c in bad[:_MAX_PROBLEMS]])
        if len(lengths) > 1:
            raise InputError.one(f"{what}: the columns' lists have different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if n == 0:
            raise InputError.one(f"{what} holds no rows; send at least one")
        missing = [c for c in self.names if c not in mapping and c not in self.optional]
        if missing:
            raise InputError([Problem(None, c, "is missing; send every column of the model") for c in missing])
        columns = {c: (mapping[c] if c in mapping else [None] * n) for c in self.names}
        return self._parse(columns, n, _Problems())

    def csv(self, body: bytes) -> Columns:
        """CSV text with a header line, read as ``binclf predict`` reads a CSV file (comma-separated)."""
        if body.startswith(b"\xef\xbb\xbf"):
            body = body[3:]  # a UTF-8 byte-order mark, as spreadsheets write
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError.one(f"the CSV body is not UTF-8 text (byte {exc.start}); send UTF-8") from None
        first = text.split("\n", 1)[0].rstrip("\r")
        try:
            header = next(csv.reader([first]), [])
        except csv.Error:
            header = []
        if not header or header == [""]:
            raise InputError.one("the CSV body has no header line; send the column names on the first line")
        if len(set(header)) < len(header):
            dup = sorted({c for c in header if header.count(c) > 1})
            raise InputError.one(f"the CSV header names {', '.join(map(repr, dup))} more than once")
        missing = [c for c in self.names if c not in header and c not in self.optional]
        if missing:
            raise InputError([Problem(None, c, "is missing from the CSV header; send every column of the model") for c in missing])
        wanted = [c for c in self.names if c in header]
        try:
            table = pacsv.read_csv(
                io.BytesIO(body),
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(delimiter=","),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in header},
                    include_columns=wanted or None,
                    strings_can_be_null=True,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError) as exc:
            reason = str(exc).split("\n", 1)[0].removeprefix("CSV parse error: ")
            raise InputError.one(f"the CSV body cannot be read: {reason[:200]}") from None
        n = table.num_rows
        if n == 0:
            raise InputError.one("the CSV body has a header but no rows; send at least one row")
        columns = {c: (table.column(c).to_pylist() if c in header else [None] * n) for c in self.names}
        return self._parse(columns, n, _Problems())

    def positional(self, rows: list[Any], *, what: str) -> Columns:
        """Rows as lists of values in the model's column order (``GET /metadata`` lists it)."""
        return self.split(list(self.names), rows, what=what)

    # ------------------------------------------------------------------ values

    def _parse(self, columns: dict[str, list[Any]], n: int, problems: _Problems) -> Columns:
        numbers = [self._numbers(name, tokens, columns[name], problems) for name, tokens in self.numeric]
        codes = [
            self._codes(name, index, self._cache[k], columns[name], problems)
            for k, (name, index) in enumerate(self.categorical)
        ]
        problems.raise_if_any()
        return Columns(n=n, numbers=numbers, codes=codes)

    @staticmethod
    def _numbers(name: str, tokens: frozenset[str], values: list[Any], problems: _Problems) -> np.ndarray:
        if set(map(type, values)) <= _FAST_NUMBER_TYPES:
            try:
                x = np.array(values, dtype=np.float64)  # None -> NaN
            except OverflowError:
                pass  # an integer too large for a float: the slow path names it
            else:
                if math.isfinite(float(x.sum())) or not np.isinf(x).any():
                    return x
        x = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            t = type(v)
            if v is None:
                x[i] = np.nan
                continue
            if t is str:
                if v in MISSING_TEXTS or v.strip() in tokens:
                    x[i] = np.nan
                    continue
                if not _NUMBER_RE.match(v):
                    problems.add(i, name, f"should hold a number but holds {_shown(v)}; send a number or null (missing)")
                    continue
            elif t is bool or t not in (int, float):
                problems.add(i, name, f"should hold a number but holds {_kind(v)}; send a number or null (missing)")
                continue
            try:
                f = float(v)
            except OverflowError:
                f = math.inf
            if math.isinf(f):
                problems.add(i, name, f"holds {_shown(v)}, an infinite or too large number; send a finite number or null")
                continue
            x[i] = f
        return x

    @staticmethod
    def _codes(
        name: str, index: dict[str, int], cache: dict[Any, int], values: list[Any], problems: _Problems
    ) -> np.ndarray:
        get = cache.get
        if set(map(type, values)) <= _FAST_CODE_TYPES:  # no bool: True == 1 would find 1's code
            codes = list(map(get, values))
            if None in codes:  # spellings not seen yet
                for i, c in enumerate(codes):
                    if c is None:
                        codes[i] = code = _code(values[i], index)
                        if len(cache) < _CACHE_LIMIT:
                            cache[values[i]] = code
            return np.array(codes, dtype=np.int64)
        out: list[int] = []
        append = out.append
        for i, v in enumerate(values):
            t = type(v)
            if t is str or t is int:  # cached by value: str and int keys never collide ("1" != 1)
                code = get(v)
                if code is None:
                    code = _code(v, index)
                    if len(cache) < _CACHE_LIMIT:
                        cache[v] = code
                append(code)
            elif v is None:
                append(0)
            elif t is float or t is bool:
                append(0 if v != v else index.get(canonical_labels([v])[0], 1))  # NaN is missing
            else:
                problems.add(i, name, f"holds {_kind(v)} where a single value belongs; send text, a number or null")
                append(0)
        return np.array(out, dtype=np.int64)


def _code(v: str | int, index: dict[str, int]) -> int:
    """The code of one text or integer category value: 0 missing, 1 unknown, 2.. a level."""
    if type(v) is str and v in MISSING_TEXTS:
        return 0
    return index.get(canonical_labels([v])[0], 1)


class _Absent:
    """A field left out of a record (missing, where the column is optional)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__
    )
