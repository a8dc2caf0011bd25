"""What a file is: its format by name and by content, and its CSV delimiter.

The extension says what the user means the file to be (``.csv .tsv .txt``,
optionally ``.gz``; ``.parquet .pq``); the first bytes say what it is. When
they disagree binclf refuses and names what it found and the rename that fixes
it. Only ``stat`` is used before a file is known to be regular.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import os
import stat
from pathlib import Path
from typing import Literal

from binclf.errors import DataError
from binclf.io.messages import safe_excerpt

__all__ = ["CSV_EXTENSIONS", "PARQUET_EXTENSIONS", "check_path", "open_bytes", "sniff_sep"]

CSV_EXTENSIONS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".txt.gz")
PARQUET_EXTENSIONS = (".parquet", ".pq")
_SNIFF_BYTES = 1024
_CANDIDATE_SEPS = ",;\t|"


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


def check_path(path: str | Path, *, encoding: str | None = None) -> tuple[Path, Literal["csv", "parquet"]]:
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


def open_bytes(path: Path):
    """The file's bytes, decompressed when its name ends in .gz."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def sniff_sep(path: Path, encoding: str | None) -> str:
    """Pick the delimiter among , ; tab | from the first KB of the file."""
    if path.name.lower().endswith((".tsv", ".tsv.gz")):
        return "\t"
    with open_bytes(path) as fh:
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
