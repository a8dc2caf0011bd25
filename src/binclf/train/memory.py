"""How much memory training a table in memory takes, measured, and the decoded size of a table on disk.

``binclf train`` holds the decoded table, its transformed model inputs and
the training copies at once; the streaming path exists for tables where that
would not fit. The decision needs two numbers, both here:

* :func:`decoded_bytes`: the bytes of a table once read (numbers at their
  width as binclf reads them, text as Arrow strings), estimated from a Parquet
  file's metadata plus a small sample of its text columns, or from a sample of
  a CSV file;
* :func:`in_memory_peak_bytes`: the peak RSS of an in-memory ``binclf
  train`` above the process's import baseline: a fixed overhead plus
  :data:`IN_MEMORY_PEAK_FACTOR` times the decoded table (measured, see the
  constants), plus copies of the model inputs where one-hot encoding makes
  them wider than the table.

Nothing here reads a whole table.
"""

from __future__ import annotations

import gzip
import io
import resource
import struct
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "IN_MEMORY_OVERHEAD_BYTES",
    "IN_MEMORY_PEAK_FACTOR",
    "MODEL_INPUT_COPIES",
    "decoded_bytes",
    "fits_in_memory",
    "in_memory_peak_bytes",
    "peak_rss_bytes",
]

#: Peak RSS of an in-memory ``binclf train`` above the import baseline, per
#: byte of decoded table (:func:`decoded_bytes`), once the fixed
#: :data:`IN_MEMORY_OVERHEAD_BYTES` is set aside: the slope of the peak over
#: table sizes, worst case measured on numeric tables (``--model mlp`` and the
#: default ``--model auto``, the report included), rounded up. Measured on
#: 1M -> 3M rows x 8 float32 columns + an int64 target (41 -> 123 MB decoded),
#: ``binclf train T.parquet -t y --model M --max-epochs 2``, ``/usr/bin/time
#: -f %M`` (KiB), on a 2-core Intel Xeon (import baseline 388,528 KiB: a child
#: importing what ``binclf train`` imports, as benchmarks/scale.py):
#:
#: * ``--model auto``: 562,280 -> 701,780 / 712,688 KiB (two runs), slope 1.80
#:   (2.6-2.7 x the decoded table above the baseline at 3M rows; 703,196 KiB
#:   with the default epochs);
#: * ``--model mlp``: 569,608 -> 675,812 KiB, slope 1.32 (2.4 x at 3M; with
#:   the default epochs, 783,160 KiB: the compiled training step's import of
#:   inductor, ~110 MB, is fixed).
#:
#: Since the logistic path weighs each fold's held-out rows 0 instead of
#: copying its fit rows, an epoch's step losses are kept in preallocated
#: blocks (each step's 0-d loss tensor had pinned the heap above its freed
#: temporaries: +80 MB over a 1.6M-row epoch), the PLE edges are selected in
#: place, the statistics' freed copies go back before the transform and the
#: blend works in place. Before (same machine): auto 562,172 -> 810,448 KiB
#: (slope 3.09), and on a 2-core AMD EPYC earlier: auto slope 3.03, mlp 1.11;
#: before the table was freed once the inputs are made: auto 3.98, mlp 1.70.
#:
#: Then the bootstrap stopped making its 4M-count block (16-32 MB whatever the
#: rows), the report hands freed memory back before matplotlib, and the OOF
#: forward runs in smaller chunks: benchmarks/memory.py (MB of 10^6 bytes, the
#: baseline a child importing every module the run imported, matplotlib
#: included) gives auto 546 -> 723 MB (slope 2.21) and mlp 515 -> 693 MB
#: (slope 2.23) over 1M -> 3M rows: the fixed part fell more than the slope.
#:
#: The factor stays above the worst measured slope, with margin for the
#: run-to-run spread (up to ~+-20 MB, +-0.25 on the slope) and for tables not
#: measured; the intercepts (~130-140 MB, plus ~110 MB where the step is
#: compiled) are within :data:`IN_MEMORY_OVERHEAD_BYTES`.
IN_MEMORY_PEAK_FACTOR: float = 2.5

#: The part of the in-memory peak that does not grow with the table: glibc
#: keeps up to 256 MiB of freed memory (binclf.runtime.tune_malloc; training
#: hands freed pages back between its stages with
#: binclf.runtime.release_freed_memory), and ``torch.compile``'s first
#: compiled training step costs ~150 MB.
IN_MEMORY_OVERHEAD_BYTES: int = 400_000_000

#: Copies of the dense model inputs (rows x features out x 4 bytes, float32)
#: alive at the peak beyond the table, for tables whose one-hot encoding makes
#: them wider than the table. Measured as the slope over 250k -> 500k rows x
#: (4 float32 + 4 text columns of 50-110 levels; 17 -> 34 MB decoded, 315
#: features out), ``--max-epochs 2``: ``--model mlp`` 1.02 (779 -> 1083 MB),
#: the default ``--model auto`` 1.10 (850 -> 1178 MB; 1.89 before, 1062 ->
#: 1625 MB, when every fold copied its rows); rounded up. Measured again with
#: :data:`IN_MEMORY_PEAK_FACTOR` at 3.5 (the table freed once the inputs are
#: made), 500k -> 1M rows of benchmarks/scale.py's table (50 columns, 347
#: inputs: 242 decoded bytes and 1,388 input bytes a row), ``--max-epochs 1``:
#: ``--model auto`` 1,446,340 -> 2,411,132 KiB (1,976 bytes a row: 0.98
#: copies beyond the factor's share), ``--model mlp`` 1,059,436 -> 1,689,792
#: KiB (1,291 bytes a row: 0.39); the value stays (with the factor at 2.5, the
#: auto run's 1M-row peak is still 0.3 GB under the estimate).
MODEL_INPUT_COPIES: float = 1.2

# Rows of text columns read to estimate their bytes per row.
_SAMPLE_ROWS = 65_536
# Bytes of a CSV read to estimate the decoded bytes per byte of file.
_CSV_SAMPLE_BYTES = 4 << 20
_PARQUET_EXT = (".parquet", ".pq")


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes (``getrusage``'s ``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def in_memory_peak_bytes(decoded: int, *, rows: int = 0, features_out: int = 0) -> int:
    """Expected peak RSS above the import baseline of training a table in memory, in bytes.

    ``overhead + factor x decoded``, plus, when the model inputs (``rows x
    features_out`` float32, known once the preprocessing is fitted) are wider
    than the table (one-hot encoded categoricals), their extra copies.

    Parameters
    ----------
    decoded : int
        The table's decoded bytes (:func:`decoded_bytes`).
    rows, features_out : int
        Rows and model input features, when known (0: not counted).

    Returns
    -------
    int
    """
    inputs = 4 * rows * features_out
    wider = MODEL_INPUT_COPIES * max(0, inputs - decoded)
    return int(IN_MEMORY_OVERHEAD_BYTES + IN_MEMORY_PEAK_FACTOR * decoded + wider)


def fits_in_memory(decoded: int, memory: int, *, rows: int = 0, features_out: int = 0) -> bool:
    """Whether training a table in memory stays within ``memory`` bytes above the import baseline."""
    return in_memory_peak_bytes(decoded, rows=rows, features_out=features_out) <= memory


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in _PARQUET_EXT and p.is_file())
    return [path]


def _fixed_width(t) -> float | None:
    """Bytes per row of an Arrow type as binclf reads it (io.tables), or None for text."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return 2.0  # pandas' nullable boolean: values and mask, a byte each
    if t == pa.float32():
        return 4.0
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return 8.0  # widened to int64 / float64
    return None  # strings, binary, dates and times (read as text)


def _text_bytes_per_row(files: list[Path], names: list[str]) -> float:
    """Mean Arrow bytes per row of the text columns ``names``, from the first rows of a few files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not names:
        return 0.0
    step = max(1, len(files) // 4)
    total, rows = 0, 0
    for f in files[::step][:4]:
        pf = pq.ParquetFile(f)
        batch = next(pf.iter_batches(batch_size=_SAMPLE_ROWS, columns=names), None)
        if batch is None:
            continue
        for col in batch.columns:
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                col = col.cast(pa.string())
            total += col.nbytes
        rows += batch.num_rows
    return total / rows if rows else 0.0


def _parquet_decoded(files: list[Path], columns: Iterable[str] | None) -> int:
    import pyarrow.parquet as pq

    if not files:
        return 0
    schema = pq.read_schema(files[0])
    wanted = set(columns) if columns is not None else None
    fixed, text = 0.0, []
    for field in schema:
        if wanted is not None and field.name not in wanted:
            continue
        w = _fixed_width(field.type)
        if w is None:
            text.append(field.name)
        else:
            fixed += w
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return int(rows * (fixed + _text_bytes_per_row(files, text)))


def _csv_decoded(path: Path) -> int:
    """Decoded bytes of a CSV: those of its first few MB, scaled by the file's (uncompressed) size."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    gz = path.suffix.lower() == ".gz"
    if gz:
        # gzip's trailer holds the uncompressed size modulo 4 GiB; a file can only have grown, not shrunk.
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            size = struct.unpack("<I", fh.read(4))[0]
        compressed = path.stat().st_size
        while size < compressed:
            size += 1 << 32
        opener = gzip.open
    else:
        size = path.stat().st_size
        opener = open
    with opener(path, "rb") as fh:
        head = fh.read(_CSV_SAMPLE_BYTES)
    if len(head) < size:
        head = head[: head.rfind(b"\n") + 1]  # whole lines only
    if not head:
        return 0
    table = pacsv.read_csv(io.BytesIO(head))
    per_byte = sum(
        c.nbytes if pa.types.is_string(c.type) else table.num_rows * (_fixed_width(c.type) or 8.0)
        for c in table.columns
    ) / len(head)
    return int(per_byte * size)


def decoded_bytes(path: str | Path, *, columns: Iterable[str] | None = None) -> int:
    """Bytes the table at ``path`` takes once read into memory, estimated without reading it whole.

    Numbers count at the width binclf reads them with (float32 stays 4 bytes,
    other numbers 8, booleans 2), text as Arrow strings (4-byte offsets plus
    the characters, measured on the first rows of up to 4 files).

    Parameters
    ----------
    path : str or Path
        A Parquet file, a directory of Parquet files (searched recursively, as
        a hive-partitioned dataset is laid out) or a CSV file (``.gz`` too).
    columns : iterable of str, optional
        Count only these columns (Parquet).

    Returns
    -------
    int
        Estimated decoded bytes (exact for numeric Parquet tables).
    """
    p = Path(path)
    if p.is_dir() or p.suffix.lower() in _PARQUET_EXT:
        return _parquet_decoded(_parquet_files(p), columns)
    return _csv_decoded(p)
