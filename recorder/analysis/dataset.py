"""A recorded dataset opened for analysis: DuckDB views, Arrow tables, pandas DataFrames.

    from recorder.analysis.dataset import open_dataset
    ds = open_dataset("data")
    ds.symbols("trades"), ds.time_range("book")
    rel = ds.table("trades", symbols=["BTC/USD"], start="2026-11-22T04:00", end="2026-11-22T05:00")
    ds.arrow("book", symbols="ETH/USD")          # pyarrow.Table, exact decimals
    ds.df("spread")                              # pandas DataFrame (needs pandas)
    ds.book("BTC/USD", at="2026-11-22T04:30")    # top-N book at a moment (analysis.rebuild)

Every table is one view: the Parquet files under ``<data>/<table>/exchange=*/date=*/``
(Hive partitions, so filters on ``date`` and ``exchange`` skip folders; ``union_by_name`` so
files written before a column was added still read, the missing column as NULL) plus the rows
journaled but not yet published (``<data>/.journal/<table>/*.arrows``), so rows are queryable
about one journal interval after they arrive. The view ``trades_unique`` has each trade
once however many hosts recorded it (``Dataset.unique_trades_sql``; docs/many-machines.md).

``data`` may be an object store, ``s3://bucket/prefix`` (configured by the AWS environment
variables, see docs/storage.md): the views then read its files through an fsspec file system
registered with DuckDB (over pyarrow's S3 client; DuckDB's httpfs extension is not needed).
Only uploaded files are read there: rows still in a recording host's spool are not.

A connection is a snapshot taken when it is opened: the list of Parquet files and the
journaled rows are read then. Open a new one (``recorder query`` does, every call) to see
newer rows. A journal segment whose Parquet file was already published (the two coexist for a
few milliseconds during a publish) is left out, matched by the ``market_recorder.segment`` key
of the file's footer, so no row is counted twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recorder.analysis.sql import (  # noqa: F401  (re-exported: the notebook API)
    MARKET_TABLES,
    duckdb_type,
    empty_select,
    sql_str,
    symbol_filter,
    time_filter,
    to_arrow,
    unique_trades_sql,
    unknown_table_message,
    writer_of_source,
    writer_sql,
)
from recorder.core.location import parse_store_url
from recorder.core.schema import TABLES
from recorder.core.times import (  # noqa: F401  (re-exported: the notebook API)
    DatasetError,
    date_of,
    parse_interval,
    parse_time,
    to_datetime,
    ts_literal,
)

if TYPE_CHECKING:
    # Imported where used: `recorder` commands that never query (a collector process) then
    # do not load DuckDB, and with it pandas when installed, about 45 MB of RSS.
    import duckdb

# Hidden columns of the ordered sources (not in the public views): the file a row came from
# and its position there, for "rows of one update in file order", and the row's writer (the
# file name's source token without its pid: recorder.analysis.sql.writer_sql), which tells
# apart redundant collectors recording the same symbols (docs/many-machines.md).
ORDER_COLUMNS = ("_file", "_row", "_writer")


# The view of the trades with each trade once (Dataset.unique_trades_sql).
UNIQUE_TRADES = "trades_unique"


# -- files and the journal -----------------------------------------------------------------


def parquet_files(data: Path, table: str) -> list[Path]:
    """The published files of ``table``, less those a compacted file replaces (between a
    compaction's publish and its deletes both are there: sinks/compacted.py)."""
    store = parse_store_url(data)
    if store is not None:
        from sinks.object_store import S3Store

        return store_files(S3Store(store), table)
    from sinks.compacted import visible
    from sinks.parquet_format import read_file_metadata

    folder = data / table
    if not folder.is_dir():
        return []
    return visible(sorted(folder.glob("exchange=*/date=*/*.parquet")), read_file_metadata)


def store_files(s3: Any, table: str) -> list[PurePosixPath]:
    """Like ``parquet_files`` for an object store (``S3Store``): keys as paths, so
    ``p.parent.name`` is still the date=... folder."""
    from sinks.compacted import visible

    keys = [PurePosixPath(k) for k in s3.parquet_files(table)]
    return visible(keys, lambda p: s3.file_metadata(str(p)))


def journal_segments(data: Path, table: str) -> list[Path]:
    from sinks.journal import segment_files

    return segment_files(data, table)


def available_tables(data: Path | str) -> list[str]:
    """Tables with at least one Parquet file or journal segment under ``data``."""
    if parse_store_url(data) is not None:
        return [t for t in TABLES if parquet_files(data, t)]
    data = Path(data)
    return [t for t in TABLES if parquet_files(data, t) or journal_segments(data, t)]


def _published_segments(folder: Path) -> set[str]:
    from sinks.parquet_format import read_file_metadata

    out = set()
    for path in folder.glob("*.parquet"):
        try:
            seg = read_file_metadata(path).get("segment")
        except (OSError, pa.ArrowInvalid):
            continue
        if seg:
            out.add(seg)
    return out


def read_journal(data: Path, table: str) -> pa.Table | None:
    """Journaled rows of ``table`` not yet in a Parquet file, with ``date``, ``_file`` and
    ``_row`` columns; None if there are none. Segments whose file is already published are
    skipped (read the journal first, then the footers: a publish in between is caught)."""
    from sinks.journal_readers import pending_segments

    pendings = list(pending_segments(data, table))
    if not pendings:
        return None
    published: dict[Path, set[str]] = {}
    parts = []
    for p in pendings:
        folder = data / table / f"exchange={p.exchange}" / f"date={p.date}"
        if folder not in published:
            published[folder] = _published_segments(folder) if folder.is_dir() else set()
        if p.segment in published[folder] or p.table.num_rows == 0:
            continue
        t = p.table
        n = t.num_rows
        day = dt.date.fromisoformat(p.date)
        t = t.append_column("date", pa.array([day] * n, pa.date32()))
        t = t.append_column("_file", pa.array([f"journal:{p.segment}"] * n, pa.string()))
        t = t.append_column("_row", pa.array(range(n), pa.int64()))
        # A segment is named <exchange>-<date>-<source>-<seq> (sinks/writer.py).
        source = p.segment.removeprefix(f"{p.exchange}-{p.date}-").rpartition("-")[0]
        t = t.append_column("_writer", pa.array([writer_of_source(source)] * n, pa.string()))
        parts.append(t)
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="permissive")


# -- the dataset ----------------------------------------------------------------------------


class Dataset:
    """A snapshot of a data directory with a DuckDB view per table (see the module doc).

    ``journal=False`` leaves out journaled rows and makes the views read the Parquet files
    through a glob at query time (live for finished files): what ``recorder catalog`` stores.
    """

    def __init__(self, data: Path | str, *, journal: bool = True,
                 database: str = ":memory:", threads: int | None = None) -> None:
        self.store = parse_store_url(data)  # s3://...: the object store (no journal there)
        self.data: Any = self.store.url if self.store else Path(data)
        self.journal = journal
        import duckdb

        self.con = duckdb.connect(database)
        self.con.execute("SET TimeZone = 'UTC'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if self.store is not None:
            from sinks.object_store import S3Store

            self.s3 = S3Store(self.store)
            self.con.register_filesystem(self.s3.fsspec())
        self.files: dict[str, list[Path]] = {}
        self.pending: dict[str, pa.Table] = {}
        for table in TABLES:
            if journal and self.store is None:
                # Journal first, then the file list: a segment published in between shows
                # up as a file (and is dropped from the journal part), never in neither.
                pending = read_journal(self.data, table)
                if pending is not None:
                    self.pending[table] = pending
                    self.con.register(f"_journal_{table}", pending)
            self.files[table] = (parquet_files(self.data, table) if self.store is None else
                                 store_files(self.s3, table))
            self.con.execute(f"CREATE OR REPLACE VIEW {table} AS {self.source_sql(table)}")
        self.con.execute(f"CREATE OR REPLACE VIEW {UNIQUE_TRADES} AS "
                         f"{self.unique_trades_sql()}")

    # -- SQL sources -------------------------------------------------------------------

    def source_sql(self, table: str, order: bool = False, live: bool | None = None) -> str:
        """SELECT over every row of ``table``. ``order`` adds ``_file`` and ``_row`` (the
        row's file and position in it). ``live`` reads the files through a glob at query
        time instead of the list taken at open (default: live when journal=False)."""
        if table not in TABLES:
            raise DatasetError(unknown_table_message(table, self.tables()))
        live = (not self.journal) if live is None else live
        parts = [empty_select(table, order)]
        files = self.files.get(table) or []
        if files:
            if live and self.store is not None:
                src = sql_str(f"s3://{self.store.key(table)}/exchange=*/date=*/*.parquet")
            elif live:
                src = sql_str(str((self.data / table).resolve() / "exchange=*" / "date=*" /
                                  "*.parquet"))
            elif self.store is not None:
                src = "[" + ", ".join(sql_str(f"s3://{p}") for p in files) + "]"
            else:
                src = "[" + ", ".join(sql_str(str(p.resolve())) for p in files) + "]"
            extra = (f", filename AS _file, file_row_number AS _row, {writer_sql()} AS _writer"
                     if order else "")
            parts.append(f"SELECT *{extra} FROM read_parquet({src}, hive_partitioning = true,"
                         " union_by_name = true)")
        if table in self.pending:
            cols = "*" if order else "* EXCLUDE (_file, _row, _writer)"
            parts.append(f"SELECT {cols} FROM _journal_{table}")
        return " UNION ALL BY NAME ".join(parts)

    def unique_trades_sql(self, order: bool = False, live: bool | None = None) -> str:
        """SELECT over the trades with each trade once, however many writers (redundant
        hosts) recorded it (recorder.analysis.sql.unique_trades_sql); ``order`` keeps
        ``_file``, ``_row`` and ``_writer``."""
        query = unique_trades_sql(self.source_sql("trades", order=True, live=live))
        if order:
            return query
        return f"SELECT * EXCLUDE ({', '.join(ORDER_COLUMNS)}) FROM ({query})"

    def has_rows(self, table: str) -> bool:
        return bool(self.files.get(table)) or table in self.pending

    def tables(self) -> list[str]:
        """Tables with rows (Parquet files or journaled rows)."""
        return [t for t in TABLES if self.has_rows(t)]

    # -- the Python API ----------------------------------------------------------------

    def sql(self, query: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyRelation:
        return self.con.sql(query, params=params) if params else self.con.sql(query)

    def table(self, table: str, symbols: str | Iterable[str] | None = None,
              start: Any = None, end: Any = None, columns: Sequence[str] | None = None,
              time_column: str = "ts_recv", *, unique: bool = False
              ) -> duckdb.DuckDBPyRelation:
        """Rows of ``table`` as a DuckDB relation, optionally for some symbols and a time range
        ``start <= time_column < end`` (ISO text, epoch seconds or datetimes). ``unique``
        (trades only): each trade once, however many hosts recorded it (the
        ``trades_unique`` view)."""
        self._check_table(table)
        if unique and table != "trades":
            raise DatasetError("unique=True de-duplicates trades only")
        where = symbol_filter(symbols) if table not in ("events", "raw") or symbols else []
        pad = 0 if time_column == "ts_recv" else 1
        where += time_filter(parse_time(start, "start"), parse_time(end, "end"), time_column,
                             pad_days=pad)
        cols = ", ".join(columns) if columns else "*"
        query = f"SELECT {cols} FROM {UNIQUE_TRADES if unique else table}"
        if where:
            query += " WHERE " + " AND ".join(where)
        return self.con.sql(query)

    def arrow(self, table: str, **kw: Any) -> pa.Table:
        """Like ``table()``, as a pyarrow Table (decimals stay exact ``decimal128``)."""
        return to_arrow(self.table(table, **kw))

    def df(self, table: str, **kw: Any):  # noqa: ANN201 - pandas is optional
        """Like ``table()``, as a pandas DataFrame (needs pandas; decimals become
        ``decimal.Decimal`` objects, timestamps tz-aware UTC)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise ImportError("Dataset.df() needs pandas (pip install 'pandas>=2'); "
                              "Dataset.arrow() needs nothing more") from None
        return self.table(table, **kw).df()

    def symbols(self, table: str | None = None) -> list[str]:
        """Symbols recorded in ``table`` (default: every market-data table)."""
        tables = [table] if table else [t for t in MARKET_TABLES if self.has_rows(t)]
        for t in tables:
            self._check_table(t)
        if not tables:
            return []
        union = " UNION ".join(f"SELECT DISTINCT symbol FROM {t}" for t in tables)
        return [r[0] for r in self.con.sql(f"SELECT symbol FROM ({union}) WHERE symbol IS NOT "
                                           "NULL ORDER BY symbol").fetchall()]

    def exchanges_of(self, table: str | None = None) -> dict[str, list[str]]:
        """The exchanges that recorded each symbol in ``table`` (default: every market-data
        table), sorted."""
        tables = [table] if table else [t for t in MARKET_TABLES if self.has_rows(t)]
        if not tables:
            return {}
        union = " UNION ".join(f"SELECT DISTINCT exchange, symbol FROM {t}" for t in tables)
        out: dict[str, list[str]] = {}
        for exchange, symbol in self.con.sql(
                f"SELECT exchange, symbol FROM ({union}) WHERE symbol IS NOT NULL "
                "ORDER BY symbol, exchange").fetchall():
            out.setdefault(symbol, []).append(exchange)
        return out

    def time_range(self, table: str | None = None, symbol: str | None = None
                   ) -> tuple[dt.datetime | None, dt.datetime | None]:
        """First and last ``ts_recv`` in ``table`` (default: all tables), optionally for one
        symbol; (None, None) when there are no rows."""
        tables = [table] if table else self.tables()
        for t in tables:
            self._check_table(t)
        if not tables:
            return None, None
        where = f" WHERE symbol = {sql_str(symbol)}" if symbol else ""
        union = " UNION ALL ".join(f"SELECT min(epoch_us(ts_recv)) AS a, max(epoch_us(ts_recv))"
                                   f" AS b FROM {t}{where}" for t in tables)
        a, b = self.con.execute(f"SELECT min(a), max(b) FROM ({union})").fetchall()[0]
        return to_datetime(a), to_datetime(b)

    # -- books and exports (see recorder.analysis.rebuild and .export) --------------------

    def book(self, symbol: str, at: Any, depth: int = 10, **kw: Any):  # noqa: ANN201
        from recorder.analysis.rebuild import book_at

        return book_at(self, symbol, at, depth=depth, **kw)

    def book_snapshots(self, symbol: str, start: Any, end: Any, interval: Any = "1s",
                       depth: int = 25, **kw: Any) -> pa.Table:
        from recorder.analysis.rebuild import book_snapshots

        return book_snapshots(self, symbol, start, end, interval=interval, depth=depth, **kw)

    def bars(self, interval: Any = "1m", symbols: Any = None, start: Any = None,
             end: Any = None, **kw: Any) -> pa.Table:
        from recorder.analysis.export import bars

        return bars(self, interval=interval, symbols=symbols, start=start, end=end, **kw)

    def quotes(self, symbol: str, start: Any = None, end: Any = None, **kw: Any) -> pa.Table:
        from recorder.analysis.rebuild import quotes

        return quotes(self, symbol, start, end, **kw)

    # -- housekeeping ------------------------------------------------------------------

    def _check_table(self, table: str) -> None:
        if table not in TABLES:
            raise DatasetError(unknown_table_message(table, self.tables()))

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(data: Path | str, **kw: Any) -> Dataset:
    """Open ``data`` (a directory written by ``recorder run``, or the object store it
    uploads to: ``s3://bucket/prefix``) for analysis."""
    return Dataset(data, **kw)
