"""Datasets on disk read as record batches: a Parquet file, a directory of Parquet files, a large CSV.

:class:`TableSource` opens the path once: it lists the Parquet files (through
``pyarrow.dataset``, hive partitions ``key=value/`` included), reads every
file's footer (so a file that is not Parquet, or whose columns differ from the
first file's, fails before any training, naming the file) and splits the data
into **units**: one per row group (a CSV file is one unit). Readers take
``rank`` / ``world_size`` and read only their shard of the units (of a CSV,
every rank parses the file and keeps every ``world_size``-th row), in an order
shuffled by a seed if asked.

Batches are DataFrames with the dtypes of :func:`binclf.io.tables.read_table`
(numbers float64/int64, text ``str``, booleans ``boolean``); partition keys
become columns. A failure while reading names the file and the row group.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from binclf.errors import DataError
from binclf.io.formats import check_path
from binclf.io.read_errors import arrow_error
from binclf.io.tables import _check_names, _to_pandas, iter_batches

__all__ = ["TableSource", "Unit", "is_parquet_dataset"]


def is_parquet_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a directory holding at least one Parquet file (at any depth)."""
    from binclf.io.formats import PARQUET_EXTENSIONS

    path = Path(path)
    return path.is_dir() and any(
        f.suffix.lower() in PARQUET_EXTENSIONS for f in path.rglob("*") if not f.name.startswith((".", "_"))
    )


@dataclass(frozen=True)
class Unit:
    """A piece of a dataset read as a whole: one row group of one file (``row_group=None``: a CSV file)."""

    path: Path
    row_group: int | None
    rows: int | None
    partition: tuple[tuple[str, str], ...] = ()


def _kind(t: pa.DataType) -> str:
    """The type family a column is read as (what must agree between the files of a dataset)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return "number"
    if pa.types.is_boolean(t):
        return "boolean"
    return "text" if not pa.types.is_nested(t) else str(t)


def _decoded_bytes(md: pq.FileMetaData) -> int:
    """Decoded size of a Parquet file from its footer: 8 bytes per number, strings by their uncompressed size."""
    total = 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        for j in range(rg.num_columns):
            col = rg.column(j)
            if col.physical_type in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"):
                # Text: its bytes plus pandas' per-value overhead (offsets and object header).
                total += int(col.total_uncompressed_size) + 16 * rg.num_rows
            else:
                total += 8 * rg.num_rows
    return total


def _balanced(units: Sequence[Unit], world_size: int) -> list[list[int]]:
    """Indices of ``units`` per rank, balanced by rows (greedy, largest first); each rank's in file order."""
    order = sorted(range(len(units)), key=lambda i: -(units[i].rows or 0))  # stable: file order among equals
    load = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for i in order:
        r = min(range(world_size), key=lambda k: (load[k], k))
        shards[r].append(i)
        load[r] += units[i].rows or 0
    return [sorted(s) for s in shards]


class TableSource:
    """A Parquet file, a directory of Parquet files (hive partitions allowed) or a CSV, read in batches.

    Use :meth:`open`. Attributes: ``path``, ``kind`` (``"parquet"`` or ``"csv"``),
    ``units`` (list of :class:`Unit`), ``columns`` (names, partition keys last),
    ``num_rows`` (None for a CSV) and ``decoded_bytes`` (the estimated in-memory
    size of the whole table as DataFrame columns, read from metadata only).
    """

    def __init__(
        self, *, path: Path, kind: str, units: list[Unit], columns: list[str], num_rows: int | None,
        decoded_bytes: int, sep: str | None = None, encoding: str | None = None,
    ) -> None:
        self.path, self.kind, self.units, self.columns = path, kind, units, columns
        self.num_rows, self.decoded_bytes = num_rows, decoded_bytes
        self.sep, self.encoding = sep, encoding

    @classmethod
    def open(cls, path: str | Path, *, sep: str | None = None, encoding: str | None = None) -> TableSource:
        """Open ``path`` and check every file's footer; raises DataError naming the first bad file."""
        path = Path(path)
        if path.is_dir():
            return cls._open_directory(path)
        p, fmt = check_path(path, encoding=encoding)
        if fmt == "csv":
            from binclf.io.tables import read_columns

            size = os.path.getsize(p)
            factor = 4 if p.name.lower().endswith(".gz") else 1  # compressed text expands about 4x
            return cls(path=p, kind="csv", units=[Unit(p, None, None)], columns=read_columns(p, sep=sep, encoding=encoding),
                       num_rows=None, decoded_bytes=size * factor, sep=sep, encoding=encoding)
        return cls._from_files(p, [(p, ())])

    @classmethod
    def _open_directory(cls, path: Path) -> TableSource:
        import pyarrow.dataset as ds

        try:
            dataset = ds.dataset(path, format="parquet", partitioning="hive", exclude_invalid_files=False)
            fragments = list(dataset.get_fragments())
        except Exception as exc:
            raise arrow_error(path, exc) from exc
        if not fragments:
            raise DataError(
                f"{path}: the directory holds no Parquet files; pass a directory of .parquet files, one file, or a CSV"
            )
        files = []
        for frag in sorted(fragments, key=lambda f: f.path):
            keys = ds.get_partition_keys(frag.partition_expression) or {}
            files.append((Path(frag.path), tuple((str(k), str(v)) for k, v in sorted(keys.items()))))
        return cls._from_files(path, files)

    @classmethod
    def _from_files(cls, path: Path, files: list[tuple[Path, tuple[tuple[str, str], ...]]]) -> TableSource:
        units: list[Unit] = []
        first: tuple[Path, dict[str, str]] | None = None
        rows = decoded = 0
        for f, partition in files:
            try:
                md = pq.read_metadata(f)
                schema = md.schema.to_arrow_schema()
            except Exception as exc:
                raise DataError(
                    f"{f}: cannot read it as Parquet ({' '.join(str(exc).split())[:160]}); "
                    "the file is damaged or not Parquet: replace or remove it"
                ) from exc
            kinds = {fld.name: _kind(fld.type) for fld in schema}
            kinds.update({k: "partition" for k, _ in partition})
            if first is None:
                first = (f, kinds)
                _check_names(f, list(kinds), None)
            elif kinds != first[1]:
                diff = [
                    f"{n!r}: {first[1].get(n, 'absent')} in {first[0].name}, {kinds.get(n, 'absent')} here"
                    for n in dict.fromkeys([*first[1], *kinds]) if first[1].get(n) != kinds.get(n)
                ]
                raise DataError(
                    f"{f}: its columns differ from {first[0]}'s ({'; '.join(diff[:5])}); "
                    "every file of a dataset needs the same columns and types: rewrite or remove it"
                )
            for i in range(md.num_row_groups):
                n = md.row_group(i).num_rows
                if n:
                    units.append(Unit(f, i, n, partition))
            rows += md.num_rows
            decoded += _decoded_bytes(md) + 8 * md.num_rows * len(partition)
        assert first is not None
        if rows == 0:
            raise DataError(f"{path}: the dataset has no data rows; expected at least one row")
        return cls(path=path, kind="parquet", units=units, columns=list(first[1]), num_rows=rows, decoded_bytes=decoded)

    # -- reading ---------------------------------------------------------------------
    def shard(self, *, rank: int = 0, world_size: int = 1, seed: int | None = None) -> list[Unit]:
        """This rank's units, shuffled by ``seed`` when given.

        Parquet units are dealt out balanced by rows (largest first, each to
        the rank with the fewest rows so far; ties to the lowest rank): ranks
        must take equal steps, so the rows a rank holds beyond the smallest
        shard are left out of an epoch, at most about one unit's worth. Row
        groups of equal size are dealt round-robin.
        """
        if self.kind != "parquet" or world_size == 1:
            units = list(self.units)
        else:
            units = [self.units[i] for i in _balanced(self.units, world_size)[rank]]
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(units))
            units = [units[i] for i in order]
        return units

    def iter_batches(
        self, *, batch_rows: int, columns: Sequence[str] | None = None, rank: int = 0, world_size: int = 1,
        seed: int | None = None, column_types: dict[str, str] | None = None, ids: bool = False,
    ) -> Iterator[pd.DataFrame] | Iterator[tuple[tuple, pd.DataFrame]]:
        """This rank's rows as DataFrames of at most ``batch_rows`` rows.

        Parquet: the units of :meth:`shard`, in that order. CSV: the file's
        batches in order, each rank keeping every ``world_size``-th row of
        each (every rank parses the whole file; ``column_types`` fixes the CSV
        columns' types, see :func:`binclf.io.tables.iter_batches`).

        With ``ids``, yields ``((unit, start), df)``: the batch's rows are rows
        ``start, start + 1, ...`` of ``unit`` (a row group, named by its file and
        number), the same rows in every pass whatever the shuffled order of the
        units and ``batch_rows``. A CSV batch is its own unit (its number and
        ``batch_rows``: a rank's rows of a CSV depend on the batch size).
        """
        if self.kind == "csv":
            it = iter_batches(self.path, batch_rows=batch_rows, sep=self.sep, columns=columns,
                              column_types=column_types, encoding=self.encoding)
            for i, df in enumerate(it):
                # Rows cannot be found in a CSV without parsing it: every rank parses the file and keeps
                # every world_size-th row of each batch (shards balanced to a row; the same in every pass).
                df = df if world_size == 1 else df.iloc[rank::world_size]
                yield ((("csv", batch_rows, i), 0), df) if ids else df
            return
        for unit in self.shard(rank=rank, world_size=world_size, seed=seed):
            start = 0
            for df in self._read_unit(unit, batch_rows=batch_rows, columns=columns):
                yield (((str(unit.path), unit.row_group), start), df) if ids else df
                start += len(df)

    def _read_unit(self, unit: Unit, *, batch_rows: int, columns: Sequence[str] | None) -> Iterator[pd.DataFrame]:
        part = dict(unit.partition)
        file_cols = None if columns is None else [c for c in columns if c not in part]
        try:
            pf = pq.ParquetFile(unit.path, pre_buffer=False, buffer_size=1 << 20)
            batches = pf.iter_batches(batch_size=batch_rows, row_groups=[unit.row_group], columns=file_cols)
            for batch in batches:
                df = _to_pandas(pa.Table.from_batches([batch]), unit.path)
                for k, v in part.items():
                    if columns is None or k in columns:
                        df[k] = v
                yield df
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"{unit.path}: cannot read row group {unit.row_group} ({' '.join(str(exc).split())[:160]}); "
                "the file is damaged: replace or remove it"
            ) from exc

    def read_all(self) -> pd.DataFrame:
        """The whole table as one DataFrame (for a dataset known to fit in memory)."""
        return pd.concat(list(self.iter_batches(batch_rows=1 << 20)), ignore_index=True)

    def head(self, rows: int) -> pd.DataFrame:
        """The first ``rows`` rows (from the first units, whatever the rank): what column roles are inferred from."""
        parts, n = [], 0
        for df in self.iter_batches(batch_rows=min(rows, 65_536)):
            parts.append(df)
            n += len(df)
            if n >= rows:
                break
        return pd.concat(parts, ignore_index=True).iloc[:rows]
