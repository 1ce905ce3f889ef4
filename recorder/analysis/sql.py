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

# The writer of a Parquet row: the source token of its file's name (sinks/layout.py,
# ``<first>-<last>-<source>-<seq>[-N].parquet``, the source ``<config>-<role>-<host>-<pid>``)
# without the trailing pid, so a collector the supervisor restarts (a new pid, which starts
# from a fresh snapshot anyway) stays one writer, while two hosts or two configs recording
# the same symbol are two. A name that does not follow the pattern gives ''.
_WRITER_RE = r"(?:^|/)\d{8}T\d{6}Z-\d{8}T\d{6}Z-([^/]+)-\d{4,}(?:-\d+)?\.parquet$"
_PID_RE = r"-\d+$"
# A compacted file's source: compacted-<time>-<id>-<writer>-0 (recorder/analysis/compact.py).
_COMPACTED_RE = r"^compacted-\d{8}T\d{6}Z-[0-9a-f]+-"


def writer_sql(path_column: str = "filename") -> str:
    """DuckDB expression: the writer (see ``_WRITER_RE``) of the file ``path_column`` names."""
    return (f"regexp_replace(regexp_replace(regexp_extract({path_column}, '{_WRITER_RE}', 1), "
            f"'{_PID_RE}', ''), '{_COMPACTED_RE}', '')")


def writer_of_file(name: str) -> str:
    """The writer of a Parquet file's path or name, as ``writer_sql`` computes it."""
    import re

    m = re.search(_WRITER_RE, name)
    return writer_of_source(m.group(1)) if m else ""


def writer_of_source(source: str) -> str:
    """The writer of a sink's ``source`` token (its pid removed), as ``writer_sql``."""
    import re

    return re.sub(_COMPACTED_RE, "", re.sub(_PID_RE, "", source))


# Trades recorded by several writers (redundant hosts) are the same trade when their content
# is: (exchange, symbol, trade_id, ts_exchange, price, qty, side). Two distinct trades never
# share a trade id, so with an id this is exact, and equals de-duplication by trade id for
# real data. Without an id (Kraken v1) two distinct trades can have the same content (one
# taker order filling two equal maker orders), so copies are matched by occurrence: the
# k-th row of a writer with that content is the same trade as the k-th of another writer,
# and it is dropped where at least k trades with ids have that content (a v1 stream on one
# host, its gap repaired from the REST history, which has ids, on another). The copy kept
# is the live one ("ws") before a REST repair, then the first writer by name that has it,
# then file order: one writer's rows stay together, in recorded order.
TRADE_CONTENT = "exchange, symbol, ts_exchange, price, qty, side"


def unique_trades_sql(source: str) -> str:
    """SELECT over ``source`` (trades rows with ``_file``, ``_row`` and ``_writer``) keeping
    one row per trade (see TRADE_CONTENT's comment)."""
    return f"""
        SELECT * EXCLUDE (_occ, _ids, _copy) FROM (
            SELECT *, row_number() OVER (
                PARTITION BY {TRADE_CONTENT}, trade_id, _occ
                ORDER BY coalesce(source, 'ws') <> 'ws', _writer, _file, _row) AS _copy
            FROM (
                SELECT *,
                    CASE WHEN trade_id IS NULL THEN row_number() OVER (
                        PARTITION BY {TRADE_CONTENT}, trade_id IS NULL, _writer
                        ORDER BY _file, _row) END AS _occ,
                    count(DISTINCT trade_id) OVER (PARTITION BY {TRADE_CONTENT}) AS _ids
                FROM ({source})))
        WHERE _copy = 1 AND (_occ IS NULL OR _occ > _ids)"""


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
        cols += ["NULL::VARCHAR AS _file", "NULL::BIGINT AS _row", "NULL::VARCHAR AS _writer"]
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

