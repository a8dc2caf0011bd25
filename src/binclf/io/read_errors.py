"""Why a file could not be read: pyarrow's failures as one-line DataErrors with the row and the fix.

Runs on the error path only: it may read the file again (to find the first
byte that is not UTF-8, or the quoted field that is never closed).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from pathlib import Path

from binclf.errors import DataError
from binclf.io.formats import open_bytes, sniff_sep
from binclf.io.messages import escape_controls, safe_excerpt

__all__ = ["arrow_error", "utf8_error"]


def _first_bad_utf8(path: Path) -> tuple[int, int] | None:
    """(byte offset, line number) of the first byte that is not UTF-8, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with open_bytes(path) as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset + exc.start, line + chunk.count(b"\n", 0, exc.start)
            offset += len(chunk)
            line += chunk.count(b"\n")
    return None


def utf8_error(path: Path, column: str | None = None) -> DataError:
    """The DataError for text that is not UTF-8, with the offset and row of the first bad byte."""
    where = _first_bad_utf8(path)
    at = f" (first bad byte at offset {where[0]}, row {where[1]})" if where else ""
    col = f" in column {column!r}" if column else ""
    return DataError(
        f"{path}: the text{col} is not valid UTF-8{at}; re-save the file as UTF-8, "
        "or give its encoding (encoding='latin-1', --encoding latin-1)"
    )


def arrow_error(path: Path, exc: Exception, names: Sequence[str] | None = None, *, sep: str | None = None) -> DataError:
    """Translate a pyarrow error into a one-line DataError (data it quotes is escaped)."""
    raw = " ".join(str(exc).split())
    msg = escape_controls(raw)
    low = msg.lower()
    if "utf8" in low or "utf-8" in low or isinstance(exc, UnicodeDecodeError):
        return utf8_error(path)
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
        sep_b = (sep or sniff_sep(path, None)).encode("utf-8")
    except (OSError, UnicodeError):
        return None
    if len(sep_b) != 1:
        return None
    try:
        with open_bytes(path) as fh:
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
