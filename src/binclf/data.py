"""Reading tables, inferring a schema and encoding the yes/no target.

Everything a user's file can get wrong is checked here, once, and reported as a
one-line :class:`~binclf.errors.DataError` that names the file, the column, the
row and the fix.

Conventions
-----------
* Files are read with pyarrow (multi-threaded CSV reader, Parquet reader); the
  format follows the extension: ``.csv .tsv .txt`` (optionally ``.gz``) and
  ``.parquet .pq``.
* Column dtypes in the returned DataFrames: numbers are ``float64`` (or
  ``int64`` for integer columns without missing values), text is pandas' default
  string dtype ``str`` (missing = ``NaN``), Parquet booleans are the nullable
  ``boolean`` dtype. CSV cells are never read as booleans or dates: ``"yes"``,
  ``"true"`` and ``"2020-01-01"`` stay text, as written. Dates, times and
  decimals stored in Parquet become text / ``float64``.
* Empty cells and the usual NA spellings (``NA``, ``N/A``, ``null``, ``NaN`` ...)
  are missing in every column.
* "row N" in messages is the line number in the file, the header being row 1,
  so the first data row is row 2.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from binclf.errors import ConfigError, DataError

__all__ = [
    "ColumnSpec",
    "Schema",
    "TargetInfo",
    "read_table",
    "iter_batches",
    "read_columns",
    "infer_schema",
    "encode_target",
    "stratified_split",
    "CSV_EXTENSIONS",
    "PARQUET_EXTENSIONS",
]

CSV_EXTENSIONS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
PARQUET_EXTENSIONS = (".parquet", ".pq")
_SNIFF_BYTES = 1024
_CANDIDATE_SEPS = ",;\t|"
# Lines of the file a row number refers to: header is line 1.
_FIRST_DATA_LINE = 2


# --------------------------------------------------------------------------- #
# reading
# --------------------------------------------------------------------------- #


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _file_format(path: Path) -> Literal["csv", "parquet"]:
    name = path.name.lower()
    if name.endswith(PARQUET_EXTENSIONS):
        return "parquet"
    if name.endswith(CSV_EXTENSIONS):
        return "csv"
    raise DataError(
        f"{path}: unknown file type {''.join(path.suffixes) or '(no extension)'!r}; "
        f"expected one of {', '.join(CSV_EXTENSIONS + PARQUET_EXTENSIONS)}; "
        "rename the file or convert it to CSV or Parquet"
    )


def _check_path(path: str | Path) -> tuple[Path, Literal["csv", "parquet"]]:
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"{p}: no such file (looked in {p.resolve().parent}); check the path and spelling"
        )
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a CSV or Parquet file; give the path of a file")
    fmt = _file_format(p)
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty (0 bytes), expected a header line and data rows")
    return p, fmt


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _sniff_sep(path: Path, encoding: str | None) -> str:
    """Pick the delimiter among , ; tab | from the first KB of the file."""
    if path.name.lower().endswith((".tsv", ".tsv.gz")):
        return "\t"
    with _open_bytes(path) as fh:
        raw = fh.read(_SNIFF_BYTES)
    text = raw.decode(encoding or "utf-8", errors="replace")
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line is cut off by the sample
    header = lines[0] if lines else ""
    sample = "\n".join(lines)
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=_CANDIDATE_SEPS).delimiter
    except csv.Error:
        sep = ""
    if sep and sep in header:
        return sep
    # The sniffer gave up (one line, or one column): the most frequent candidate
    # in the header wins; a file with none of them has a single column.
    counts = {c: header.count(c) for c in _CANDIDATE_SEPS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def _csv_options(
    *,
    sep: str,
    encoding: str | None,
    column_types: dict[str, pa.DataType] | None = None,
    include_columns: Sequence[str] | None = None,
    block_size: int | None = None,
) -> dict[str, Any]:
    read = dict(use_threads=True, encoding=encoding or "utf8")
    if block_size is not None:
        read["block_size"] = block_size
    return dict(
        read_options=pacsv.ReadOptions(**read),
        parse_options=pacsv.ParseOptions(delimiter=sep),
        convert_options=pacsv.ConvertOptions(
            column_types=column_types or {},
            include_columns=list(include_columns) if include_columns else None,
            strings_can_be_null=True,
            # Never booleans: "true"/"yes" stay the text the user wrote.
            true_values=[],
            false_values=[],
        ),
    )


def _first_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(byte offset, line number) of the first byte that is not UTF-8, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with _open_bytes(path) as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start, line + chunk.count(b"\n", 0, exc.start)
            offset += len(chunk)
            line += chunk.count(b"\n")
    return None


def _utf8_error(path: Path, column: str | None = None) -> DataError:
    where = _first_bad_utf8(path)
    at = f" (first bad byte at offset {where[0]}, row {where[1]})" if where else ""
    col = f" in column {column!r}" if column else ""
    return DataError(
        f"{path}: the text{col} is not valid UTF-8{at}; re-save the file as UTF-8, "
        "or give its encoding (encoding='latin-1', --encoding latin-1)"
    )


def _arrow_error(path: Path, exc: Exception, names: Sequence[str] | None = None) -> DataError:
    """Translate a pyarrow error into a one-line DataError."""
    msg = _one_line(str(exc))
    low = msg.lower()
    if "utf8" in low or "utf-8" in low or isinstance(exc, UnicodeDecodeError):
        return _utf8_error(path)
    if "empty csv file" in low:
        return DataError(f"{path}: the file holds no text, expected a header line and data rows")
    m = re.search(r"Expected (\d+) columns?, got (\d+)", msg)
    if m:
        return DataError(
            f"{path}: a line has {m.group(2)} fields where the header has {m.group(1)} "
            f"(pyarrow: {msg[:200]}); check the delimiter (pass sep=/--sep) and quoting"
        )
    return DataError(f"{path}: cannot read the file ({msg[:300]}); check that it is a valid CSV/Parquet file")


def read_columns(path: str | Path, *, sep: str | None = None, encoding: str | None = None) -> list[str]:
    """The column names of a CSV or Parquet file, read from its header only."""
    p, fmt = _check_path(path)
    if fmt == "parquet":
        try:
            return list(pq.read_schema(p).names)
        except Exception as exc:  # noqa: BLE001 - every pyarrow failure becomes a DataError
            raise _arrow_error(p, exc) from exc
    sep = sep or _sniff_sep(p, encoding)
    opts = _csv_options(sep=sep, encoding=encoding, block_size=1 << 16)
    try:
        with pacsv.open_csv(p, **opts) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _arrow_error(p, exc) from exc


def _check_names(path: Path, names: Sequence[str], columns: Sequence[str] | None) -> None:
    dups = sorted({n for n in names if list(names).count(n) > 1})
    if dups:
        raise DataError(
            f"{path}: duplicate column names {', '.join(map(repr, dups))}; "
            "give every column a different name in the header"
        )
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {_names_with_hints(missing, names)}; "
                f"the file has {_list_names(names)}"
            )


def _list_names(names: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _names_with_hints(missing: Sequence[str], names: Sequence[str]) -> str:
    parts = []
    for m in missing:
        close = difflib.get_close_matches(m, list(names), n=1)
        parts.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(parts)


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
                raise _utf8_error(path, name) from None
        elif pa.types.is_integer(t) and t != pa.int64():
            new = new.cast(pa.float64() if t == pa.uint64() else pa.int64())
        elif pa.types.is_floating(t) and t != pa.float64() or pa.types.is_decimal(t):
            new = new.cast(pa.float64())
        elif pa.types.is_null(t):
            new = pa.chunked_array([pa.nulls(len(col), pa.float64())])
        elif pa.types.is_temporal(t):
            new = new.cast(pa.string())
        elif pa.types.is_large_string(t):
            new = new.cast(pa.string())
        elif not (pa.types.is_string(t) or pa.types.is_boolean(t) or t in (pa.int64(), pa.float64())):
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
    p, fmt = _check_path(path)
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(p)
            names = list(pf.schema_arrow.names)
            _check_names(p, names, columns)
            table = pf.read(columns=list(columns) if columns else None, use_threads=True)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _arrow_error(p, exc) from exc
    else:
        sep = sep or _sniff_sep(p, encoding)
        try:
            table = pacsv.read_csv(p, **_csv_options(sep=sep, encoding=encoding))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise _arrow_error(p, exc) from exc
        _check_names(p, table.column_names, columns)
        if columns is not None:
            table = table.select(list(columns))
    if table.num_rows == 0:
        raise _no_rows(p)
    return _to_pandas(table, p)


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
        opts = _csv_options(sep=sep, encoding=encoding, include_columns=rest)
        with pacsv.open_csv(p, **opts) as reader:
            for f in reader.schema:
                t = f.type
                if pa.types.is_integer(t) or pa.types.is_floating(t):
                    types[f.name] = pa.float64()
                elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
                    raise _utf8_error(p, f.name)
                else:
                    types[f.name] = pa.string()
    return types


def _locate_bad_value(p: Path, opts_kw: dict[str, Any], column: str, value: str) -> int | None:
    """Line number of the first cell of ``column`` equal to ``value`` (error path only)."""
    opts = _csv_options(**{**opts_kw, "column_types": {column: pa.string()}, "include_columns": [column]})
    seen = 0
    with pacsv.open_csv(p, **opts) as reader:
        for batch in reader:
            arr = batch.column(0).to_numpy(zero_copy_only=False)
            hits = np.flatnonzero(arr == value)
            if hits.size:
                return seen + int(hits[0]) + _FIRST_DATA_LINE
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
    p, fmt = _check_path(path)
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
        raise _arrow_error(p, exc) from exc
    _check_names(p, list(pf.schema_arrow.names), columns)
    start = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
        if batch.num_rows:
            yield _to_pandas(pa.Table.from_batches([batch]), p, start=start)
            start += batch.num_rows
    if start == 0:
        raise _no_rows(p)


# Bytes of CSV text parsed at a time by the block-parallel reader: large enough
# for pyarrow to spread one block over every core, small enough for flat memory.
_CSV_BLOCK_BYTES = 8 << 20
# A block without a row end grows up to this many times before giving up.
_CSV_MAX_GROWTH = 8


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
    sep = sep or _sniff_sep(p, encoding)
    names = read_columns(p, sep=sep, encoding=encoding)
    _check_names(p, names, columns)
    if column_types:
        unknown = [c for c in column_types if c not in names]
        if unknown:
            raise DataError(f"{p}: missing column(s) {_names_with_hints(unknown, names)}; the file has {_list_names(names)}")
    wanted = list(columns) if columns else names
    try:
        types = _stream_types(p, sep, encoding, wanted, {k: v for k, v in (column_types or {}).items() if k in wanted})
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _arrow_error(p, exc) from exc
    # Small parser blocks keep pyarrow's streaming reader fast (measured: 4 MB blocks
    # read ~2x faster than 256 MB ones); batches of batch_rows are cut from them.
    with _open_bytes(p) as fh:
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


def _block_parallel_ok(p: Path, encoding: str | None) -> bool:
    """Whether the block-parallel reader applies: an uncompressed UTF-8 file."""
    if p.name.lower().endswith(".gz"):
        return False
    if encoding is None:
        return True
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def _csv_tables_streaming(
    p: Path, types: dict[str, pa.DataType], opts_kw: dict[str, Any], *, names: Sequence[str] | None = None,
    offset: int = 0,
) -> Iterator[pa.Table]:
    """pyarrow's streaming reader (one parsing thread), from byte ``offset`` (a row start)."""
    opts = _csv_options(column_types=types, **opts_kw)
    if not offset:
        with pacsv.open_csv(p, **opts) as reader:
            for batch in reader:
                yield pa.Table.from_batches([batch])
        return
    read = opts["read_options"]
    opts["read_options"] = pacsv.ReadOptions(
        use_threads=read.use_threads, encoding=read.encoding, block_size=read.block_size,
        column_names=list(names or []),
    )
    with open(p, "rb") as fh:
        fh.seek(offset)
        with pacsv.open_csv(fh, **opts) as reader:
            for batch in reader:
                yield pa.Table.from_batches([batch])


def _streaming_failure(p: Path, types: dict[str, pa.DataType], opts_kw: dict[str, Any], exc: Exception) -> Exception:
    """The error pyarrow's streaming reader gives on this file (error path only).

    Errors are worded as the streaming reader words them, so a failure met by the
    block-parallel reader is re-read that way; ``exc`` if it reads cleanly.
    """
    try:
        for _ in _csv_tables_streaming(p, types, opts_kw):
            pass
    except (pa.ArrowInvalid, UnicodeDecodeError) as streaming_exc:
        return streaming_exc
    return exc


def _quote_cut(buf: bytearray, n: int, sep: int, final: bool) -> tuple[int, bool] | None:
    """Where to cut ``buf[:n]`` (which starts at a row start) after its last complete row.

    Returns (end of the last complete row, whether the part holds quotes), or None
    when a quote is not where RFC 4180 puts one (at the start of a field, or
    doubled inside a quoted field): then a quote's meaning depends on more than
    its count, and the caller reads the rest of the file the slow way. Outside
    quotes the count of quote characters before a position is even.
    """
    end = n if final else buf.rfind(b"\n", 0, n) + 1
    if end == 0:
        return 0, False
    if buf.find(b'"', 0, n) < 0:
        return end, False
    arr = np.frombuffer(buf, dtype=np.uint8, count=n)
    q = np.flatnonzero(arr == ord('"'))
    opening = q[0::2]  # quotes after an even number of quotes: they open a quoted field
    before = arr[np.maximum(opening - 1, 0)]
    ok = (opening == 0) | (before == sep) | (before == ord("\n")) | (before == ord("\r")) | (before == ord('"'))
    if not ok.all():
        return None
    if final:
        return (end, True) if q.size % 2 == 0 else None
    while end > 0:
        k = int(np.searchsorted(q, end - 1))  # quotes before the newline at end - 1
        if k % 2 == 0:
            return end, True
        end = buf.rfind(b"\n", 0, int(q[k - 1])) + 1  # a newline before that quoted field opened
    return 0, True


def _csv_tables_parallel(
    p: Path, names: Sequence[str], types: dict[str, pa.DataType], opts_kw: dict[str, Any], block_bytes: int
) -> Iterator[pa.Table]:
    """The file as arrow tables, each parsed from ~``block_bytes`` of text on every core.

    pyarrow's streaming reader parses on one thread; ``read_csv`` on a whole
    file uses them all but holds the file. Here the file is read in blocks into
    one reused buffer, each block cut after its last complete row (outside
    quotes) and parsed with ``read_csv``; the rest of the block starts the next
    one. Anything the quote count cannot vouch for (a stray quote, a row longer
    than several blocks) hands the rest of the file, from the last row end, to
    the streaming reader.
    """
    base = _csv_options(column_types=types, **opts_kw)
    sep = ord(opts_kw["sep"])
    header_read = pacsv.ReadOptions(use_threads=True, encoding="utf8")
    body_read = pacsv.ReadOptions(use_threads=True, encoding="utf8", column_names=list(names))
    parse_plain = base["parse_options"]
    parse_quoted = pacsv.ParseOptions(delimiter=opts_kw["sep"], newlines_in_values=True)
    convert = base["convert_options"]
    buf = bytearray(block_bytes)
    n = 0  # bytes of text held in buf
    offset = 0  # file offset of buf[0], always a row start
    first = True
    eof = False
    with open(p, "rb", buffering=0) as fh:
        while not eof or n:
            while True:
                view = memoryview(buf)
                while n < len(buf) and not eof:
                    got = fh.readinto(view[n:])
                    eof = not got
                    n += got or 0
                del view
                cut = _quote_cut(buf, n, sep, eof)
                if cut is None or cut[0] > 0 or eof:
                    break
                if len(buf) >= _CSV_MAX_GROWTH * block_bytes:
                    cut = None
                    break
                buf = buf + bytearray(len(buf))  # no row end yet: a longer block
            if cut is None:
                yield from _csv_tables_streaming(p, types, opts_kw, names=names, offset=offset)
                return
            end, quoted = cut
            if first or end > 2 or bytes(buf[:end]).strip(b"\r\n"):
                with memoryview(buf) as view:
                    table = pacsv.read_csv(
                        pa.py_buffer(view[:end]),
                        read_options=header_read if first else body_read,
                        parse_options=parse_quoted if quoted else parse_plain,
                        convert_options=convert,
                    )
                if table.num_rows:
                    yield table
            first = False
            buf[: n - end] = buf[end:n]
            n -= end
            offset += end
            if end == 0:
                break


def _conversion_error(p: Path, exc: Exception, wanted: Sequence[str], opts_kw: dict[str, Any]) -> DataError:
    msg = _one_line(str(exc))
    # pyarrow >= 2x puts "Row #N: " between the column and the conversion error.
    m = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): invalid value '(.*)'$", msg)
    if not m:
        return _arrow_error(p, exc)
    idx, value = int(m.group(1)), m.group(3)
    names = read_columns(p, sep=opts_kw["sep"], encoding=opts_kw["encoding"])
    column = names[idx] if idx < len(names) else wanted[min(idx, len(wanted) - 1)]
    line = _locate_bad_value(p, opts_kw, column, value)
    at = f" at row {line}" if line else ""
    return DataError(
        f"{p}: column {column!r} should hold numbers but holds {value!r}{at}; "
        "replace it with a number or leave the cell empty (missing)"
    )


# --------------------------------------------------------------------------- #
# schema
# --------------------------------------------------------------------------- #

Role = Literal["numeric", "categorical"]


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
        if d.get("role") not in ("numeric", "categorical"):
            raise ConfigError(f"column spec {d!r}: role must be 'numeric' or 'categorical'")
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

    def column_types(self) -> dict[str, str]:
        """``{name: role}``, the ``column_types`` argument of :func:`iter_batches`."""
        return {c.name: c.role for c in self.columns}

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


def _is_numeric_dtype(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _is_integral(values: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not integral, and no warning on stderr
        return bool(values.size) and bool(np.all(np.mod(values, 1.0) == 0))


def infer_schema(
    df: pd.DataFrame,
    *,
    target: str,
    drop: Iterable[str] = (),
    categorical: Iterable[str] = (),
    numeric: Iterable[str] = (),
    max_code_levels: int = 5,
) -> tuple[Schema, list[str]]:
    """Decide the role of every column of ``df`` except ``target``; returns ``(schema, notices)``.

    Rules (``categorical=`` / ``numeric=`` override them, ``drop=`` removes columns):

    * text and boolean columns are categorical;
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
    drop, categorical, numeric = list(drop), list(categorical), list(numeric)
    if target not in names:
        raise DataError(
            f"target column {_names_with_hints([target], names)} is not in the table; "
            f"the columns are {_list_names(names)}; pass one of them as --target"
        )
    problems = []
    for option, given in (("drop", drop), ("categorical", categorical), ("numeric", numeric)):
        unknown = [c for c in given if c not in names]
        if unknown:
            problems.append(f"--{option} names unknown column(s) {_names_with_hints(unknown, names)}")
    both = sorted(set(categorical) & set(numeric))
    if both:
        problems.append(f"column(s) {', '.join(map(repr, both))} are given as both --categorical and --numeric")
    if target in drop or target in categorical or target in numeric:
        problems.append(f"the target {target!r} cannot also be in --drop/--categorical/--numeric")
    if problems:
        raise DataError("; ".join(problems) + f"; the columns are {_list_names(names)}")

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
        present = s.dropna()
        if present.empty:
            all_missing.append(name)
            continue
        n_distinct = present.nunique()
        has_missing = len(present) < n
        dtype = str(s.dtype)
        if n_distinct == 1 and not has_missing:
            dropped.append((name, "constant"))
            notices.append(f"column {name!r} dropped: it holds the single value {_python_label(present.iloc[0])!r}")
            continue
        forced: Role | None = "categorical" if name in categorical else "numeric" if name in numeric else None
        if forced is not None:
            specs.append(ColumnSpec(name, forced, dtype))
            continue
        values: np.ndarray | None = None  # the numbers, when the column holds numbers
        if _is_numeric_dtype(s):
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
                    f"{', '.join(map(repr, bad))}; it is treated as categorical; to use it as numbers, "
                    f"empty those cells or pass --numeric {name} (they then count as missing)"
                )
        integral = values is not None and _is_integral(values)
        if values is None or integral:
            unique_per_row = n_distinct == n and n >= 20
            if unique_per_row and values is None:
                dropped.append((name, "identifier"))
                notices.append(f"column {name!r} dropped: a different text in every row, like an identifier")
                continue
            if unique_per_row and integral:
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


def _python_label(v: Any) -> Label:
    """A JSON scalar of the value's own Python type (numpy scalars unwrapped)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


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

    def decode(self, is_positive: np.ndarray) -> np.ndarray:
        """Boolean array (n,) -> object array (n,) of the original labels."""
        out = np.empty(len(is_positive), dtype=object)
        out[:] = self.negative
        out[np.asarray(is_positive, dtype=bool)] = self.positive
        return out

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
        keys = values.map(_label_key)
        pos, neg = _label_key(self.positive), _label_key(self.negative)
        bad = ~keys.isin([pos, neg]).to_numpy()
        if bad.any():
            rows = np.flatnonzero(bad)
            counts = values[bad].astype(str).value_counts()
            found = ", ".join(f"{k!r}: {int(v)}" for k, v in list(counts.items())[:5])
            found += f" and {len(counts) - 5} more" if len(counts) > 5 else ""
            raise DataError(
                f"{source}: column {col!r} has {len(rows)} value(s) that are not the model's labels "
                f"{self.negative!r}/{self.positive!r} ({found}; first at row {int(rows[0]) + _FIRST_DATA_LINE}); "
                "use rows labelled like the training data"
            )
        return (keys == pos).to_numpy(np.float32)

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
    rows = ", ".join(str(int(i) + _FIRST_DATA_LINE) for i in positions[:limit])
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
    counts = present.value_counts(sort=True)
    if len(counts) != 2:
        listing = ", ".join(f"{_python_label(k)!r}: {int(v)}" for k, v in list(counts.items())[:10])
        more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
        raise DataError(
            f"target column {column!r} must have exactly two classes, found {len(counts)} "
            f"({listing}{more}); choose a yes/no column as --target"
            + (" or merge classes into two" if len(counts) > 2 else "")
        )
    labels = [_python_label(k) for k in counts.index]
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
    y = (present == pos).to_numpy(dtype=bool).astype(np.float32)
    info = TargetInfo(
        column=column, positive=pos, negative=neg, n_positive=count_of[pos], n_negative=count_of[neg]
    )
    notices.append(
        f"positive class of {column!r}: {pos!r} ({why}; {info.n_positive} of {len(y)} rows); "
        f"pass --positive {neg} for the other class"
    )
    return y, keep, info, notices


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
