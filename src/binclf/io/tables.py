"""Reading tables: CSV and Parquet, whole or in batches.

Everything a user's file can get wrong is checked here, once, and reported as a
one-line :class:`~binclf.errors.DataError` that names the file, the column, the
row and the fix.

Conventions
-----------
* Files are read with pyarrow (multi-threaded CSV reader, Parquet reader); the
  format follows the extension: ``.csv .tsv .txt`` (optionally ``.gz``) and
  ``.parquet .pq``.
* Column dtypes in the returned DataFrames: numbers are ``float64`` (or
  ``int64`` for integer columns without missing values; Parquet ``float32``
  columns stay ``float32``, half the memory), text is pandas' default
  string dtype ``str`` (missing = ``NaN``), Parquet booleans are the nullable
  ``boolean`` dtype. CSV cells are never read as booleans or dates: ``"yes"``,
  ``"true"`` and ``"2020-01-01"`` stay text, as written. Dates, times and
  decimals stored in Parquet become text / ``float64``.
* Empty cells and the usual NA spellings (``NA``, ``N/A``, ``null``, ``NaN`` ...)
  are missing in every column.
* "row N" in messages is the line number in the file, the header being row 1,
  so the first data row is row 2.

What a file is (format by name and content, delimiter) is :mod:`binclf.io.formats`;
how reading failures become messages is :mod:`binclf.io.read_errors`; how data
is quoted in messages is :mod:`binclf.io.messages`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from binclf.errors import ConfigError, DataError
from binclf.io.csv_blocks import _CSV_BLOCK_BYTES, _block_parallel_ok, _csv_tables_parallel, _csv_tables_streaming, _streaming_failure, csv_options
from binclf.io.formats import CSV_EXTENSIONS, PARQUET_EXTENSIONS, check_path, open_bytes, sniff_sep
from binclf.io.messages import FIRST_DATA_LINE, check_unique_names, list_names, names_with_hints, safe_excerpt
from binclf.io.read_errors import arrow_error, utf8_error

# The extensions are re-exported: they belong to what read_table accepts.
__all__ = ["CSV_EXTENSIONS", "PARQUET_EXTENSIONS", "iter_batches", "read_columns", "read_table"]


def read_columns(path: str | Path, *, sep: str | None = None, encoding: str | None = None) -> list[str]:
    """The column names of a CSV or Parquet file, read from its header only."""
    p, fmt = check_path(path, encoding=encoding)
    if fmt == "parquet":
        try:
            return list(pq.read_schema(p).names)
        except Exception as exc:  # noqa: BLE001 - every pyarrow failure becomes a DataError
            raise arrow_error(p, exc) from exc
    sep = sep or sniff_sep(p, encoding)
    opts = csv_options(sep=sep, encoding=encoding, block_size=1 << 16)
    try:
        with pacsv.open_csv(p, **opts) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise arrow_error(p, exc, sep=sep) from exc


def _check_names(path: Path, names: Sequence[str], columns: Sequence[str] | None) -> None:
    check_unique_names(path, names)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {names_with_hints(missing, names)}; "
                f"the file has {list_names(names)}"
            )



def _normalise_arrow(table: pa.Table, path: Path) -> pa.Table:
    """Cast arrow types to the few this library works with (see module docstring)."""
    cols, changed = [], False
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        new = col
        if pa.types.is_dictionary(t):
            new = col.cast(t.value_type)
            t = new.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            try:
                new = new.cast(pa.string())
            except pa.ArrowInvalid:
                raise utf8_error(path, name) from None
        elif pa.types.is_integer(t) and t != pa.int64():
            new = new.cast(pa.float64() if t == pa.uint64() else pa.int64())
        elif pa.types.is_floating(t) and t not in (pa.float32(), pa.float64()) or pa.types.is_decimal(t):
            # float32 stays float32: widening doubled a float table in memory (the
            # preprocessing computes in float64 a block at a time, with the same results).
            new = new.cast(pa.float64())
        elif pa.types.is_null(t):
            new = pa.chunked_array([pa.nulls(len(col), pa.float64())])
        elif pa.types.is_temporal(t):
            new = new.cast(pa.string())
        elif pa.types.is_large_string(t):
            new = new.cast(pa.string())
        elif not (pa.types.is_string(t) or pa.types.is_boolean(t) or t in (pa.int64(), pa.float32(), pa.float64())):
            raise DataError(
                f"{path}: column {name!r} has the nested type {t}, expected numbers or text; "
                "flatten it into plain columns or drop it"
            )
        changed |= new is not col
        cols.append(new)
    return pa.table(cols, names=table.column_names) if changed else table


def _to_pandas(table: pa.Table, path: Path, *, start: int = 0) -> pd.DataFrame:
    table = _normalise_arrow(table, path)
    # split_blocks avoids one big consolidating copy: each column keeps its buffer.
    df = table.to_pandas(
        split_blocks=True,
        types_mapper={pa.bool_(): pd.BooleanDtype()}.get,
    )
    df.index = pd.RangeIndex(start, start + len(df))
    return df


def _no_rows(path: Path) -> DataError:
    return DataError(f"{path}: the file has a header but no data rows; expected at least one row")


def read_table(
    path: str | Path,
    *,
    sep: str | None = None,
    columns: Sequence[str] | None = None,
    encoding: str | None = None,
) -> pd.DataFrame:
    """Read a whole CSV or Parquet file into a DataFrame (dtypes: see module docstring).

    ``sep`` overrides the sniffed CSV delimiter; ``columns`` reads only those columns
    (in that order); ``encoding`` transcodes a CSV that is not UTF-8 (e.g. ``"latin-1"``).
    """
    p, fmt = check_path(path, encoding=encoding)
    if fmt == "parquet":
        try:
            # No pre-buffering: it holds every compressed column chunk next to the
            # decoded table (measured, 1M x 8 float32: +112 MB of RSS for a 32 MB
            # table with it, +72 MB without, and 3x faster on a local disk).
            pf = pq.ParquetFile(p, pre_buffer=False)
            names = list(pf.schema_arrow.names)
            _check_names(p, names, columns)
            table = pf.read(columns=list(columns) if columns else None, use_threads=True)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise arrow_error(p, exc) from exc
    else:
        sep = sep or sniff_sep(p, encoding)
        try:
            table = pacsv.read_csv(p, **csv_options(sep=sep, encoding=encoding))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise arrow_error(p, exc, sep=sep) from exc
        _check_names(p, table.column_names, columns)
        if columns is not None:
            table = table.select(list(columns))
    if table.num_rows == 0:
        raise _no_rows(p)
    df = _to_pandas(table, p)
    del table
    # Arrow's allocator keeps the decoding buffers it freed (~0.45x a numeric
    # table, measured 3M x 8 float32) for reuse; NumPy's copies that follow
    # cannot use them, so hand them back to the system.
    pa.default_memory_pool().release_unused()
    return df


_ROLE_TYPES = {"numeric": pa.float64(), "categorical": pa.string()}


def _stream_types(
    p: Path, sep: str, encoding: str | None, names: Sequence[str], column_types: dict[str, str] | None
) -> dict[str, pa.DataType]:
    """Explicit arrow types for every streamed column, so all batches agree."""
    types: dict[str, pa.DataType] = {}
    for name, role in (column_types or {}).items():
        if role not in _ROLE_TYPES:
            raise ConfigError(
                f"column_types[{name!r}] is {role!r}, expected 'numeric' or 'categorical'"
            )
        types[name] = _ROLE_TYPES[role]
    rest = [n for n in names if n not in types]
    if rest:
        # Types the first block suggests, widened so later blocks cannot break them:
        # integers may meet a decimal later, an empty start may hold text later.
        opts = csv_options(sep=sep, encoding=encoding, include_columns=rest)
        with pacsv.open_csv(p, **opts) as reader:
            for f in reader.schema:
                t = f.type
                if pa.types.is_integer(t) or pa.types.is_floating(t):
                    types[f.name] = pa.float64()
                elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
                    raise utf8_error(p, f.name)
                else:
                    types[f.name] = pa.string()
    return types


def _locate_bad_value(p: Path, opts_kw: dict[str, Any], column: str, value: str) -> int | None:
    """Line number of the first cell of ``column`` equal to ``value`` (error path only)."""
    opts = csv_options(**{**opts_kw, "column_types": {column: pa.string()}, "include_columns": [column]})
    seen = 0
    with pacsv.open_csv(p, **opts) as reader:
        for batch in reader:
            arr = batch.column(0).to_numpy(zero_copy_only=False)
            hits = np.flatnonzero(arr == value)
            if hits.size:
                return seen + int(hits[0]) + FIRST_DATA_LINE
            seen += batch.num_rows
    return None


def iter_batches(
    path: str | Path,
    *,
    batch_rows: int = 262_144,
    sep: str | None = None,
    columns: Sequence[str] | None = None,
    column_types: dict[str, str] | None = None,
    encoding: str | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream a CSV or Parquet file as DataFrames of ``batch_rows`` rows (the last may be shorter).

    Memory stays bounded by a few batches, whatever the file size. Each batch's
    index continues the previous one (0-based data-row number), so
    ``pd.concat(iter_batches(p))`` equals ``read_table(p)`` up to dtypes.

    CSV column types are fixed before the first batch so every batch agrees:
    ``column_types`` maps a column to ``"numeric"`` (float64) or ``"categorical"``
    (text); other columns get the type their first block suggests, with integers
    widened to float64 (a later block may hold decimals). Parquet files carry
    their own types and ignore ``column_types``.
    """
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be a positive integer, got {batch_rows}")
    p, fmt = check_path(path, encoding=encoding)
    if fmt == "parquet":
        yield from _iter_parquet(p, batch_rows=batch_rows, columns=columns)
    else:
        yield from _iter_csv(
            p, batch_rows=batch_rows, sep=sep, columns=columns, column_types=column_types, encoding=encoding
        )


def _iter_parquet(p: Path, *, batch_rows: int, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
    try:
        # No pre-buffering: pyarrow would otherwise keep the column chunks it has
        # read cached, and memory would grow with the file (measured: 428 MiB for
        # 500k rows, 631 MiB for 1M; with a 1 MiB read buffer instead: 298 and 302).
        pf = pq.ParquetFile(p, pre_buffer=False, buffer_size=1 << 20)
    except Exception as exc:  # noqa: BLE001
        raise arrow_error(p, exc) from exc
    _check_names(p, list(pf.schema_arrow.names), columns)
    start = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
        if batch.num_rows:
            yield _to_pandas(pa.Table.from_batches([batch]), p, start=start)
            start += batch.num_rows
    if start == 0:
        raise _no_rows(p)


def _iter_csv(
    p: Path,
    *,
    batch_rows: int,
    sep: str | None,
    columns: Sequence[str] | None,
    column_types: dict[str, str] | None,
    encoding: str | None,
    block_bytes: int = _CSV_BLOCK_BYTES,
) -> Iterator[pd.DataFrame]:
    sep = sep or sniff_sep(p, encoding)
    names = read_columns(p, sep=sep, encoding=encoding)
    _check_names(p, names, columns)
    if column_types:
        unknown = [c for c in column_types if c not in names]
        if unknown:
            raise DataError(f"{p}: missing column(s) {names_with_hints(unknown, names)}; the file has {list_names(names)}")
    wanted = list(columns) if columns else names
    try:
        types = _stream_types(p, sep, encoding, wanted, {k: v for k, v in (column_types or {}).items() if k in wanted})
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise arrow_error(p, exc) from exc
    # Small parser blocks keep pyarrow's streaming reader fast (measured: 4 MB blocks
    # read ~2x faster than 256 MB ones); batches of batch_rows are cut from them.
    with open_bytes(p) as fh:
        head = fh.read(1 << 16)
    bytes_per_line = len(head) / max(head.count(b"\n"), 1)
    block_size = int(max(4 << 20, 64 * bytes_per_line))
    opts_kw = dict(sep=sep, encoding=encoding, include_columns=wanted, block_size=block_size)
    parallel = _block_parallel_ok(p, encoding)
    if parallel:
        tables = _csv_tables_parallel(p, names, types, opts_kw, block_bytes)
    else:
        tables = _csv_tables_streaming(p, types, opts_kw)
    pending: list[pa.RecordBatch] = []
    n_pending = 0
    start = 0
    try:
        for piece in tables:
            pending.extend(piece.to_batches())
            n_pending += piece.num_rows
            while n_pending >= batch_rows:
                table = pa.Table.from_batches(pending)
                out, rest = table.slice(0, batch_rows), table.slice(batch_rows)
                yield _to_pandas(out, p, start=start)
                start += batch_rows
                pending, n_pending = rest.to_batches(), rest.num_rows
        if n_pending:
            yield _to_pandas(pa.Table.from_batches(pending), p, start=start)
            start += n_pending
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if parallel:  # word it as the streaming reader does
            exc = _streaming_failure(p, types, opts_kw, exc)
        raise _conversion_error(p, exc, wanted, opts_kw) from exc
    if start == 0:
        raise _no_rows(p)


def _conversion_error(p: Path, exc: Exception, wanted: Sequence[str], opts_kw: dict[str, Any]) -> DataError:
    msg = " ".join(str(exc).split())  # raw: the value is looked up in the file, then shown escaped
    # pyarrow >= 2x puts "Row #N: " between the column and the conversion error.
    m = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): invalid value '(.*)'$", msg)
    if not m:
        return arrow_error(p, exc, sep=opts_kw["sep"])
    idx, value = int(m.group(1)), m.group(3)
    names = read_columns(p, sep=opts_kw["sep"], encoding=opts_kw["encoding"])
    column = names[idx] if idx < len(names) else wanted[min(idx, len(wanted) - 1)]
    line = _locate_bad_value(p, opts_kw, column, value)
    at = f" at row {line}" if line else ""
    return DataError(
        f"{p}: column {column!r} should hold numbers but holds {safe_excerpt(value)}{at}; "
        "replace it with a number or leave the cell empty (missing)"
    )
