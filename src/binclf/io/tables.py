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
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from binclf.errors import ConfigError, DataError
from binclf.io.csv_blocks import _CSV_BLOCK_BYTES, _block_parallel_ok, _csv_tables_parallel, _csv_tables_streaming, _streaming_failure, csv_options


CSV_EXTENSIONS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
PARQUET_EXTENSIONS = (".parquet", ".pq")
_SNIFF_BYTES = 1024
_CANDIDATE_SEPS = ",;\t|"
# Lines of the file a row number refers to: header is line 1.
FIRST_DATA_LINE = 2


# --------------------------------------------------------------------------- #
# reading
# --------------------------------------------------------------------------- #


def _one_line(text: str) -> str:
    return escape_controls(" ".join(str(text).split()))


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``, ``\\n``).

    Error messages quote the user's data; raw escape sequences, carriage
    returns or bidi overrides from a binary or hostile file must never reach
    the terminal.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def safe_excerpt(value: Any, *, limit: int = 40) -> str:
    """A short, quoted, terminal-safe rendering of a value from the user's data.

    Every error or warning that quotes data uses it: text is cut to ``limit``
    characters (``...`` marks the cut) and shown as its Python repr, so control
    characters appear escaped (``'\\x1b[31mRED'``); bytes are decoded as UTF-8
    with the undecodable bytes escaped; numbers and other values show as repr.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, str):
        return escape_controls(repr(value))[: limit + 3]
    cut = value if len(value) <= limit else value[:limit]
    # repr escapes control and other non-printable characters (isprintable); the
    # ascii-safe pass covers what repr lets through (none today; kept as a guard).
    return escape_controls(repr(cut)) + ("..." if len(value) > limit else "")


# First bytes of formats people save under a .csv name by mistake: (magic, what it is, offset).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Microsoft Office file (.xls)"),
    (b"BZh", "bzip2-compressed"),  # + a digit and 1AY&SY: checked below, a header may start "BZh"
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"ARROW1", "an Arrow IPC / Feather file"),
    (b"ORC", "an ORC file"),  # + a binary byte: checked below (a header may start "ORCID")
    (b"Obj\x01", "an Avro file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"\xff\xfe", "UTF-16 text (little-endian)"),
    (b"\xfe\xff", "UTF-16 text (big-endian)"),
)
# Enough for the magic numbers and to tell text from binary data.
_MAGIC_BYTES = 4096
# Bytes that text files do not hold (all C0 controls but tab, newlines and form feed; DEL).
_CONTROL_BYTES = tuple(c for c in range(32) if c not in (9, 10, 12, 13)) + (127,)


def _content_kind(path: Path, head: bytes) -> str | None:
    """What the first bytes say the file is, or None for text (the CSV case)."""
    for magic, kind in _MAGIC:
        if head.startswith(magic) and _magic_confirmed(path, head, magic):
            if kind == "a zip archive":
                return _zip_kind(path)
            return kind
    controls = sum(head.count(bytes([c])) for c in _CONTROL_BYTES)
    if b"\x00" in head or (len(head) >= 64 and controls > 0.1 * len(head)):
        return "binary data (it holds NUL or many control bytes)"
    return None


def _magic_confirmed(path: Path, head: bytes, magic: bytes) -> bool:
    """Whether the file really is of the format whose short magic it starts with.

    ``PAR1``, ``ORC`` and ``BZh`` are also the first letters of plausible CSV
    headers (a column named ``PAR1`` or ``ORCID``): those formats are confirmed
    by more of their structure (Parquet ends in ``PAR1`` too).
    """
    if magic == b"PAR1":
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() < 12:
                return False
            fh.seek(-4, os.SEEK_END)
            return fh.read(4) == b"PAR1"
    if magic == b"ORC":
        return len(head) > 3 and not (32 <= head[3] < 127 or head[3] in (9, 10, 13))
    if magic == b"BZh":
        return head[3:4].isdigit() and head[4:10] == b"1AY&SY"
    return True


def _zip_kind(path: Path) -> str:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return "a zip archive"
    if any(n.startswith("xl/") for n in names):
        return "an Excel workbook (.xlsx)"
    if "content.xml" in names:
        return "an OpenDocument file (.ods)"
    csvs = [n for n in names if n.lower().endswith(CSV_EXTENSIONS)]
    return "a zip archive" + (f" (holding {safe_excerpt(csvs[0])})" if csvs else "")


_FIX_KIND = {
    "a Parquet file": "rename it to .parquet",
    "gzip-compressed": "rename it to end in .csv.gz (binclf reads gzip-compressed CSV), or decompress it",
    "an Excel workbook (.xlsx)": "export the sheet as CSV (File > Save As > CSV) or save it as Parquet",
    "a legacy Microsoft Office file (.xls)": "export the sheet as CSV (File > Save As > CSV) or save it as Parquet",
    "an OpenDocument file (.ods)": "export the sheet as CSV or save it as Parquet",
    "UTF-16 text (little-endian)": "re-save it as UTF-8, or pass --encoding utf-16 (encoding='utf-16')",
    "UTF-16 text (big-endian)": "re-save it as UTF-8, or pass --encoding utf-16 (encoding='utf-16')",
}


def _check_content(p: Path, fmt: str, encoding: str | None) -> None:
    """Refuse a file whose first bytes contradict its extension, saying what it is.

    The extension is what the user says the file is; when the content disagrees
    one of them is wrong (a file saved with the wrong name, or the wrong file
    picked), so binclf refuses rather than guesses, and names what it found and
    the rename that fixes it. Reading by content instead would also make
    ``data.csv`` mean Parquet here and CSV for ``-o data.csv``.
    """
    with open(p, "rb") as fh:
        head = fh.read(_MAGIC_BYTES)
    kind = _content_kind(p, head)
    name = p.name.lower()
    if fmt == "parquet":
        if head.startswith(b"PAR1"):
            return  # a Parquet start (pyarrow words a truncated one)
        what = kind or "text, not Parquet (it does not start with the Parquet magic bytes PAR1)"
        fix = " rename it to .csv if it is CSV text," if kind is None else ""
        raise DataError(f"{p}: the file is {what};{fix} or give the Parquet file written by your tool")
    if name.endswith(".gz"):
        if head.startswith(b"\x1f\x8b"):
            return
        what = kind or "plain text, not gzip-compressed"
        raise DataError(f"{p}: the name ends in .gz but the file is {what}; rename it without .gz, or give the compressed file")
    if kind is None:
        return
    if kind.startswith("UTF-16") and encoding and codecs.lookup(encoding).name.startswith("utf-16"):
        return
    fix = _FIX_KIND.get(kind, "give a CSV or Parquet file")
    raise DataError(f"{p}: the file is {kind}, not CSV text (going by its first bytes); {fix}")


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


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


def _check_path(path: str | Path, *, encoding: str | None = None) -> tuple[Path, Literal["csv", "parquet"]]:
    """The path and its format, once the file is known to be a readable regular file whose content fits its name.

    Only ``stat`` is used before the file is known to be regular: opening a FIFO
    would block until a writer comes, and binclf reads a file more than once.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DataError(
            f"{p}: no such file (looked in {p.resolve().parent}); check the path and spelling"
        ) from None
    except OSError as exc:
        raise DataError(f"{p}: cannot be read ({exc.strerror or exc}); check the path and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{p}: is a directory, expected a CSV or Parquet file; give the path of a file")
    for test, what in _NOT_REGULAR:
        if test(st.st_mode):
            raise DataError(
                f"{p}: is {what}, not a regular file; binclf reads its input more than once "
                "(header, types, rows), so save the data to a file first and pass that"
            )
    fmt = _file_format(p)
    if st.st_size == 0:
        raise DataError(f"{p}: the file is empty (0 bytes), expected a header line and data rows")
    try:
        _check_content(p, fmt, encoding)
    except PermissionError:
        raise DataError(f"{p}: permission denied; check the file's permissions") from None
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


def _arrow_error(path: Path, exc: Exception, names: Sequence[str] | None = None, *, sep: str | None = None) -> DataError:
    """Translate a pyarrow error into a one-line DataError (data it quotes is escaped)."""
    raw = " ".join(str(exc).split())
    msg = escape_controls(raw)
    low = msg.lower()
    if "utf8" in low or "utf-8" in low or isinstance(exc, UnicodeDecodeError):
        return _utf8_error(path)
    if "empty csv file" in low:
        return DataError(f"{path}: the file holds no text, expected a header line and data rows")
    m = re.search(r"Expected (\d+) columns?, got (\d+)(?:: (.*))?", raw)
    if m or "csv parse error" in low:
        quote = _unclosed_quote(path, sep)
        if quote is not None:
            line, excerpt = quote
            return DataError(
                f"{path}: row {line}: a quoted field starts here and its closing quote is missing or misplaced "
                f"({excerpt}); close the quote, or double a quote that is part of the text (\"\")"
            )
    if m:
        row = _safe_row(m.group(3)) if m.group(3) else ""
        return DataError(
            f"{path}: a line has {m.group(2)} fields where the header has {m.group(1)}"
            f"{f' (the line starts {row})' if row else ''}; check the delimiter (pass sep=/--sep) and quoting"
        )
    return DataError(
        f"{path}: cannot read the file ({_truncate(msg, 200)}); check that it is a valid CSV/Parquet file"
    )


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _safe_row(text: str) -> str:
    """A short escaped excerpt of a raw CSV line as pyarrow quotes it."""
    return safe_excerpt(text.strip(), limit=60)


# A quoted field longer than this many lines is taken to be an unclosed quote.
_QUOTE_MAX_LINES = 10_000
# The error path reads at most this much of the file to find the quote.
_QUOTE_SCAN_BYTES = 1 << 30


def _unclosed_quote(path: Path, sep: str | None) -> tuple[int, str] | None:
    """(line, excerpt) of the first quoted field that is never closed properly, or None (error path only).

    A field opens a quote when ``"`` is its first character; inside, ``""`` is
    a literal quote. It is unclosed when the file ends inside it, or when the
    quote that ends it is followed by something other than the delimiter or a
    line end (the quote meant to close it is missing, so the next one "closes"
    it in the middle of a later field), or when it spans an implausible number
    of lines. Hops from quote to quote with ``bytes.find``: quick even on large files.
    """
    try:
        sep_b = (sep or _sniff_sep(path, None)).encode("utf-8")
    except (OSError, UnicodeError):
        return None
    if len(sep_b) != 1:
        return None
    try:
        with _open_bytes(path) as fh:
            return _scan_quotes(fh.read(_QUOTE_SCAN_BYTES), sep_b)
    except (OSError, ValueError, EOFError):
        return None


def _scan_quotes(data: bytes, sep: bytes) -> tuple[int, str] | None:
    n = len(data)
    line = 1
    pos = 0  # everything before pos is scanned; line counts the newlines before it
    ends = (sep, b"\n", b"\r")
    while True:
        q = data.find(b'"', pos)
        if q < 0:
            return None
        line += data.count(b"\n", pos, q)
        prev = data[q - 1 : q] if q else b"\n"
        if prev not in ends:
            pos = q + 1  # a quote inside an unquoted field is text
            continue
        start_line = line
        i = q + 1
        while True:
            c = data.find(b'"', i)
            if c < 0:
                return start_line, _excerpt_at(data, q)
            if data[c + 1 : c + 2] == b'"':
                i = c + 2
                continue
            break
        spanned = data.count(b"\n", q, c)
        after = data[c + 1 : c + 2]
        if (after and after not in ends) or spanned > _QUOTE_MAX_LINES:
            return start_line, _excerpt_at(data, q)
        line += spanned
        pos = c + 1
        if pos >= n:
            return None


def _excerpt_at(data: bytes, q: int) -> str:
    end = data.find(b"\n", q)
    chunk = bytes(data[q : (end if 0 <= end < q + 80 else q + 80)])
    return "the field starts " + safe_excerpt(chunk.rstrip(b"\r"), limit=40)


def read_columns(path: str | Path, *, sep: str | None = None, encoding: str | None = None) -> list[str]:
    """The column names of a CSV or Parquet file, read from its header only."""
    p, fmt = _check_path(path, encoding=encoding)
    if fmt == "parquet":
        try:
            return list(pq.read_schema(p).names)
        except Exception as exc:  # noqa: BLE001 - every pyarrow failure becomes a DataError
            raise _arrow_error(p, exc) from exc
    sep = sep or _sniff_sep(p, encoding)
    opts = csv_options(sep=sep, encoding=encoding, block_size=1 << 16)
    try:
        with pacsv.open_csv(p, **opts) as reader:
            return list(reader.schema.names)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise _arrow_error(p, exc, sep=sep) from exc


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
    p, fmt = _check_path(path, encoding=encoding)
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
            table = pacsv.read_csv(p, **csv_options(sep=sep, encoding=encoding))
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise _arrow_error(p, exc, sep=sep) from exc
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
        opts = csv_options(sep=sep, encoding=encoding, include_columns=rest)
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
    p, fmt = _check_path(path, encoding=encoding)
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


def _conversion_error(p: Path, exc: Exception, wanted: Sequence[str], opts_kw: dict[str, Any]) -> DataError:
    msg = " ".join(str(exc).split())  # raw: the value is looked up in the file, then shown escaped
    # pyarrow >= 2x puts "Row #N: " between the column and the conversion error.
    m = re.search(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): invalid value '(.*)'$", msg)
    if not m:
        return _arrow_error(p, exc, sep=opts_kw["sep"])
    idx, value = int(m.group(1)), m.group(3)
    names = read_columns(p, sep=opts_kw["sep"], encoding=opts_kw["encoding"])
    column = names[idx] if idx < len(names) else wanted[min(idx, len(wanted) - 1)]
    line = _locate_bad_value(p, opts_kw, column, value)
    at = f" at row {line}" if line else ""
    return DataError(
        f"{p}: column {column!r} should hold numbers but holds {safe_excerpt(value)}{at}; "
        "replace it with a number or leave the cell empty (missing)"
    )
