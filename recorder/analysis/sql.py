"""SQL text and conversions shared by the dataset, query, export, rebuild and report modules.

Kept apart from recorder/analysis/dataset.py so that the modules the dataset's notebook
methods call (rebuild, export) need nothing from it but its type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa

from recorder.core.schema import TABLES, arrow_schema
from recorder.core.times import date_of, ts_literal

if TYPE_CHECKING:
    import duckdb

MARKET_TABLES = ("trades", "book", "spread", "ohlc", "ticker", "fills", "orders")


def sql_str(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return {
        pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER",
        pa.uint32(): "UINTEGER", pa.bool_(): "BOOLEAN", pa.date32(): "DATE",
    }[t]


def empty_select(table: str, order: bool = False) -> str:
    """A typed, empty SELECT with every current column of ``table`` plus ``date``."""
    cols = [f"NULL::{duckdb_type(f.type)} AS {f.name}" for f in arrow_schema(table)]
    cols.append("NULL::DATE AS date")
    if order:
        cols += ["NULL::VARCHAR AS _file", "NULL::BIGINT AS _row"]
    return f"SELECT {', '.join(cols)} WHERE false"


def time_filter(start_us: int | None, end_us: int | None, column: str = "ts_recv",
                pad_days: int = 0) -> list[str]:
    """WHERE terms for ``start <= column < end``, plus ``date`` terms that prune partitions
    (``date`` is the UTC date of ts_recv; ``pad_days`` widens them for other columns)."""
    out = []
    pad = pad_days * 86_400_000_000
    if start_us is not None:
        out.append(f"{column} >= {ts_literal(start_us)}")
        out.append(f"date >= DATE '{date_of(start_us - pad)}'")
    if end_us is not None:
        out.append(f"{column} < {ts_literal(end_us)}")
        out.append(f"date <= DATE '{date_of(end_us + pad)}'")
    return out


def symbol_filter(symbols: str | Iterable[str] | None) -> list[str]:
    if symbols is None:
        return []
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",") if s.strip()]
    syms = [s.strip() for s in symbols]
    if not syms:
        return []
    return [f"symbol IN ({', '.join(sql_str(s) for s in syms)})"]




def unknown_table_message(table: str, with_rows: list[str]) -> str:
    return (f"unknown table {table!r}; tables: {', '.join(TABLES)} "
            f"(with data here: {', '.join(with_rows) or 'none yet'})")


def _to_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    # duckdb >= 1.4 spells it to_arrow_table(); older releases arrow().
    fn = getattr(rel, "to_arrow_table", None) or rel.arrow
    result = fn()
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def to_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    return _to_arrow(rel)
