"""DuckDB over the recorded dataset: one view per table.

Each view reads ``<data>/<table>/**/*.parquet`` with Hive partitions (exchange, date), so
filters on them prune whole folders, and ``union_by_name`` so files written before a column
was added stay readable. A table with no files yet is an empty view with the full schema,
so queries never fail just because nothing was recorded there.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from recorder.schema import TABLES, arrow_schema


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("*.parquet"))


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(data: Path | str, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view per table over the Parquet files under ``data``."""
    data = Path(data)
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    for table in TABLES:
        create_view(con, data, table)
    return con


def create_view(con: duckdb.DuckDBPyConnection, data: Path, table: str) -> None:
    folder = data / table
    if _has_files(folder):
        pattern = _sql_str(str(folder.resolve() / "**" / "*.parquet"))
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet("
                    f"{pattern}, hive_partitioning = true, union_by_name = true)")
        return
    empty = arrow_schema(table).empty_table()
    con.register(f"_empty_{table}", empty)
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT *, NULL::DATE AS date "
                f"FROM _empty_{table}")


def available_tables(data: Path | str) -> list[str]:
    return [t for t in TABLES if _has_files(Path(data) / t)]
