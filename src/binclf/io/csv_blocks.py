"""CSV text cut into blocks at row ends, parsed by pyarrow: the block-parallel reader and its streaming fallback.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv



# Bytes of CSV text parsed at a time by the block-parallel reader: large enough
# for pyarrow to spread one block over every core, small enough for flat memory.
_CSV_BLOCK_BYTES = 8 << 20
# A block without a row end grows up to this many times before giving up.
_CSV_MAX_GROWTH = 8



def csv_options(
    *,
    sep: str,
    encoding: str | None,
    column_types: dict[str, pa.DataType] | None = None,
    include_columns: Sequence[str] | None = None,
    block_size: int | None = None,
    newlines_in_values: bool = True,
) -> dict[str, Any]:
    """pyarrow's CSV options as this library reads files.

    ``newlines_in_values``: quoted values may hold line breaks (RFC 4180; pandas'
    ``to_csv`` writes them so). pyarrow then cuts its own chunks with a
    quote-aware scan; only a block known to hold no quote may skip it.
    """
    read = dict(use_threads=True, encoding=encoding or "utf8")
    if block_size is not None:
        read["block_size"] = block_size
    return dict(
        read_options=pacsv.ReadOptions(**read),
        parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=newlines_in_values),
        convert_options=pacsv.ConvertOptions(
            column_types=column_types or {},
            include_columns=list(include_columns) if include_columns else None,
            strings_can_be_null=True,
            # Never booleans: "true"/"yes" stay the text the user wrote.
            true_values=[],
            false_values=[],
        ),
    )


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
    opts = csv_options(column_types=types, **opts_kw)
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
    base = csv_options(column_types=types, **opts_kw)
    sep = ord(opts_kw["sep"])
    header_read = pacsv.ReadOptions(use_threads=True, encoding="utf8")
    body_read = pacsv.ReadOptions(use_threads=True, encoding="utf8", column_names=list(names))
    parse_plain = pacsv.ParseOptions(delimiter=opts_kw["sep"], newlines_in_values=False)  # no quote in the block
    parse_quoted = base["parse_options"]
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
