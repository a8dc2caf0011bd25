"""Reading and writing files: tables (CSV, Parquet), the block CSV reader, reading ahead."""

from binclf.io.tables import CSV_EXTENSIONS, PARQUET_EXTENSIONS, iter_batches, read_columns, read_table

__all__ = ["CSV_EXTENSIONS", "PARQUET_EXTENSIONS", "iter_batches", "read_columns", "read_table"]
