"""DuckDB over the recorded dataset: one view per table.

Each view is the union of the Parquet files under ``<data>/<table>/`` (Hive partitions
``exchange`` and ``date``, so filters on them prune whole folders; ``union_by_name``, so
files written before a column was added stay readable) and the rows journaled but not yet
published, so a row is queryable about one journal interval after it arrived. A table with no
rows yet is an empty view with the full schema, so queries never fail just because nothing
was recorded there. The connection is a snapshot taken at ``connect()``: open a new one to
see newer rows. See recorder.analysis.dataset and docs/queries.md.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from recorder.analysis.dataset import (
    ORDER_COLUMNS,
    UNIQUE_TRADES,
    Dataset,
    empty_select,
    parquet_files,
    sql_str,
)
from recorder.analysis.dataset import available_tables as _available_tables
from recorder.analysis.sql import unique_trades_sql, writer_sql
from recorder.core.location import parse_store_url
from recorder.core.schema import TABLES


def connect(data: Path | str, database: str = ":memory:", *,
            journal: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per table over ``data`` (journaled rows included
    unless ``journal=False``)."""
    return Dataset(data, journal=journal, database=database).con


def create_view(con: duckdb.DuckDBPyConnection, data: Path, table: str) -> None:
    """A live view of ``table`` over the Parquet files only (globbed at query time); an empty
    view with the schema if there are no files yet."""
    data = Path(data)
    parts = [empty_select(table)]
    if parquet_files(data, table):
        pattern = sql_str(str(data.resolve() / table / "exchange=*" / "date=*" / "*.parquet"))
        parts.append(f"SELECT * FROM read_parquet({pattern}, hive_partitioning = true, "
                     "union_by_name = true)")
    con.execute(f"CREATE OR REPLACE VIEW {table} AS {' UNION ALL BY NAME '.join(parts)}")


def _create_unique_trades_view(con: duckdb.DuckDBPyConnection, data: Path) -> None:
    """``trades_unique``: the trades, each once however many hosts recorded it (as in
    Dataset.unique_trades_sql), over the files globbed at query time."""
    parts = [empty_select("trades", order=True)]
    if parquet_files(data, "trades"):
        pattern = sql_str(str(data.resolve() / "trades" / "exchange=*" / "date=*" / "*.parquet"))
        parts.append(f"SELECT *, filename AS _file, file_row_number AS _row, {writer_sql()} "
                     f"AS _writer FROM read_parquet({pattern}, hive_partitioning = true, "
                     "union_by_name = true)")
    query = unique_trades_sql(" UNION ALL BY NAME ".join(parts))
    con.execute(f"CREATE OR REPLACE VIEW {UNIQUE_TRADES} AS SELECT * EXCLUDE "
                f"({', '.join(ORDER_COLUMNS)}) FROM ({query})")


def write_catalog(data: Path | str, database: Path | str) -> list[str]:
    """Write a DuckDB database file whose views read ``data``'s Parquet files (live: new
    files show up in every query). Returns the tables that had files. Tables with no file
    yet are empty views: run it again once they have one."""
    if parse_store_url(data) is not None:
        raise ValueError("a catalog file cannot read an object store on its own (its views "
                         "would need the fsspec file system); use connect(\"s3://...\")")
    data = Path(data)
    con = duckdb.connect(str(database))
    try:
        for table in TABLES:
            create_view(con, data, table)
        _create_unique_trades_view(con, data)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return [t for t in TABLES if parquet_files(data, t)]


def available_tables(data: Path | str) -> list[str]:
    """Tables with at least one Parquet file or journaled segment under ``data``."""
    return _available_tables(data)
