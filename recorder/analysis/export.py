"""Exports for backtests and other tools: OHLCV bars, top-N book snapshots, quotes, and the
Tardis CSV layouts (trades, incremental_book_L2, book_snapshot_25, quotes).

Every kind is bounded by symbols and a time range and written as CSV (``.csv``, or gzip with
``.csv.gz``) or Parquet (``.parquet``), streamed in record batches so memory stays flat.

Native kinds keep exact decimals (Parquet ``decimal128``; CSV text with 10 decimals). Tardis
kinds follow docs.tardis.dev's downloadable CSV layouts: comma-separated, timestamps as
microseconds since the epoch (``timestamp`` = the exchange's time, ``local_timestamp`` = when
the recorder received it; where Kraken gives no exchange time, ``timestamp`` falls back to
``local_timestamp`` as Tardis does), numbers as plain decimal text without trailing zeros.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from recorder.analysis.sql import sql_str, symbol_filter, time_filter, to_arrow
from recorder.core.times import DatasetError, parse_interval, parse_time

if TYPE_CHECKING:
    from recorder.analysis.dataset import Dataset

_STEPS = 1000  # progress scale: thousandths of the work (of a query, or of a symbol's rows)
KINDS = ("bars", "book", "quotes", "tardis-trades", "tardis-incremental-book",
         "tardis-book-snapshot-25", "tardis-quotes")
TIME_BASES = ("exchange", "recv")
Progress = Callable[[int, int], None]  # (done, total) in rows or steps


def _where(terms: list[str]) -> str:
    return (" WHERE " + " AND ".join(terms)) if terms else ""


def _num(col: str) -> str:
    """A decimal as plain text without trailing zeros (100.5000000000 -> 100.5)."""
    return f"rtrim(rtrim({col}::VARCHAR, '0'), '.')"


# -- bars ------------------------------------------------------------------------------------


def bars_sql(ds: Dataset, interval: Any = "1m", symbols: Any = None, start: Any = None,
             end: Any = None, time: str = "exchange") -> str:
    """OHLCV bars from trades: one row per symbol and interval with at least one trade.

    ``time="exchange"`` buckets by the trade's exchange time (``ts_exchange``), ``"recv"`` by
    ``ts_recv``; bars start at multiples of the interval since the epoch (so 1m, 1h and 1d
    bars start on the minute, hour and UTC day). open/close are the first/last trade by that
    time, ties in recorded order. ``vwap`` = sum(price × qty) / sum(qty) computed exactly and
    rounded half-up to 10 decimals; ``volume`` is exact. Each trade counts once however many
    hosts recorded it (Dataset.unique_trades_sql)."""
    if time not in TIME_BASES:
        raise DatasetError(f"time {time!r}; allowed: {', '.join(TIME_BASES)}")
    iv = parse_interval(interval)
    col = "ts_exchange" if time == "exchange" else "ts_recv"
    where = symbol_filter(symbols) + time_filter(
        parse_time(start, "start"), parse_time(end, "end"), col,
        pad_days=1 if col != "ts_recv" else 0)
    where.append(f"{col} IS NOT NULL")
    return f"""
        WITH t AS (
            SELECT symbol, epoch_us({col}) // {iv} AS b, epoch_us({col}) AS tu, price, qty,
                   side, _file, _row
            FROM ({ds.unique_trades_sql(order=True)}){_where(where)}
        ), g AS (
            SELECT symbol, b,
                   first(price ORDER BY tu, _file, _row) AS open,
                   max(price) AS high, min(price) AS low,
                   last(price ORDER BY tu, _file, _row) AS close,
                   sum(qty) AS volume,
                   replace(sum(price * qty)::VARCHAR, '.', '')::HUGEINT AS pq,
                   replace(sum(qty)::VARCHAR, '.', '')::HUGEINT AS q,
                   count(*) AS trades,
                   coalesce(sum(qty) FILTER (WHERE side = 'buy'), 0) AS buy_volume,
                   coalesce(sum(qty) FILTER (WHERE side = 'sell'), 0) AS sell_volume
            FROM t GROUP BY symbol, b
        )
        SELECT symbol, make_timestamp(b * {iv})::TIMESTAMPTZ AS ts, open, high, low, close,
               volume,
               CASE WHEN q > 0 THEN (((2 * pq + q) // (2 * q))::DECIMAL(28, 0)
                    * 0.0000000001::DECIMAL(11, 10))::DECIMAL(18, 10) END AS vwap,
               trades, buy_volume, sell_volume
        FROM g ORDER BY symbol, ts"""


def bars(ds: Dataset, interval: Any = "1m", symbols: Any = None, start: Any = None,
         end: Any = None, time: str = "exchange") -> pa.Table:
    """See bars_sql(). Columns: symbol, ts (bar start), open, high, low, close, volume, vwap,
    trades, buy_volume, sell_volume."""
    return to_arrow(ds.con.sql(bars_sql(ds, interval, symbols, start, end, time)))


# -- Tardis layouts from SQL -----------------------------------------------------------------


SYMBOL_NAMES = ("exchange", "canonical")


def _tardis_symbol(ds: Dataset, symbol_names: str, time_column: str = "ts_recv",
                   exchange_column: str | None = "exchange") -> str:
    """The instrument name Tardis would give a row received at ``time_column``: each
    exchange says how it names a symbol, and since when (``ExchangeSpec.tardis_names``;
    Kraken's names follow the API of the day: XBT/USD before Tardis moved to v2, BTC/USD
    after). ``canonical`` keeps ours (BTC/USD) throughout. Without ``exchange_column`` (a
    rebuilt book, one symbol), the exchange that recorded the symbol is used."""
    if symbol_names == "canonical":
        return "symbol"
    from recorder import exchanges

    cases = []
    for sym, recorded_by in ds.exchanges_of().items():
        for ex in recorded_by:
            hook = exchanges.get(ex).tardis_names if ex in exchanges.names() else None
            eras = hook(sym) if hook else [(None, sym)]
            if eras == [(None, sym)]:
                continue
            name = " ".join(f"WHEN {time_column} < TIMESTAMPTZ '{until} 00:00:00+00' "
                            f"THEN {sql_str(n)}" for until, n in eras if until)
            last = next((n for until, n in eras if until is None), sym)
            cond = f"symbol = {sql_str(sym)}"
            if exchange_column:
                cond += f" AND {exchange_column} = {sql_str(ex)}"
            cases.append(f"WHEN {cond} THEN (CASE {name} ELSE {sql_str(last)} END)"
                         if name else f"WHEN {cond} THEN {sql_str(last)}")
    if not cases:
        return "symbol"
    return f"(CASE {' '.join(cases)} ELSE symbol END)"


def tardis_trades_sql(ds: Dataset, symbols: Any = None, start: Any = None, end: Any = None,
                      symbol_names: str = "exchange") -> str:
    where = symbol_filter(symbols) + time_filter(parse_time(start, "start"),
                                                  parse_time(end, "end"))
    return f"""
        SELECT exchange, {_tardis_symbol(ds, symbol_names)} AS symbol,
               coalesce(epoch_us(ts_exchange), epoch_us(ts_recv)) AS timestamp,
               epoch_us(ts_recv) AS local_timestamp, trade_id::VARCHAR AS id, side,
               {_num("price")} AS price, {_num("qty")} AS amount
        FROM ({ds.unique_trades_sql(order=True)}){_where(where)}
        ORDER BY ts_recv, _file, _row"""


def tardis_incremental_sql(ds: Dataset, symbols: Any = None, start: Any = None,
                           end: Any = None, unverified: str = "skip",
                           symbol_names: str = "exchange") -> str:
    """The recorded book rows in the order they are applied. Rows with ``verified = false``
    (a book known to be wrong, until the resync snapshot) are left out unless
    ``unverified="keep"``; the resync snapshot restarts the book for the reader."""
    if unverified not in ("skip", "keep"):
        raise DatasetError(f"unverified {unverified!r}; allowed: skip, keep")
    where = symbol_filter(symbols) + time_filter(parse_time(start, "start"),
                                                  parse_time(end, "end"))
    if unverified == "skip":
        where.append("verified IS NOT false")
    return f"""
        SELECT exchange, {_tardis_symbol(ds, symbol_names)} AS symbol,
               coalesce(epoch_us(ts_exchange), epoch_us(ts_recv)) AS timestamp,
               epoch_us(ts_recv) AS local_timestamp, is_snapshot, side,
               {_num("price")} AS price, {_num("qty")} AS amount
        FROM ({ds.source_sql("book", order=True)}){_where(where)}
        ORDER BY update_id, _file, _row"""


# -- kinds built from the rebuilt book ------------------------------------------------------


def _symbols_for(ds: Dataset, symbols: Any, table: str = "book") -> list[str]:
    """The symbols to export, one book each: a symbol recorded from several exchanges is
    exported once per exchange, named ``exchange:symbol`` (books are never interleaved)."""
    recorded = ds.exchanges_of(table) if ds.has_rows(table) else {}
    have = list(recorded)
    if symbols is None:
        return [name if len(exs) == 1 else f"{ex}:{name}"
                for name, exs in recorded.items() for ex in exs]
    wanted = [s.strip() for s in (symbols.split(",") if isinstance(symbols, str) else symbols)
              if s.strip()]
    missing = [s for s in wanted if s.rpartition(":")[2] not in have]
    if missing:
        raise DatasetError(f"no {table} rows for {', '.join(missing)}; recorded: "
                           f"{', '.join(have) or 'none'}")
    return wanted


def _range(ds: Dataset, start: Any, end: Any, table: str = "book") -> tuple[int, int]:
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if lo is None or hi is None:
        first, last = ds.time_range(table)
        if first is None:
            raise DatasetError(f"no {table} rows in {ds.data}")
        lo = parse_time(first) if lo is None else lo
        hi = parse_time(last) + 1 if hi is None else hi
    if hi <= lo:
        raise DatasetError("--to must be after --from")
    return lo, hi


def _rebuilt(ds: Dataset, kind: str, symbols: list[str], start_us: int, end_us: int,
             interval: Any, depth: int, unverified: str,
             progress: Progress | None) -> Iterable[pa.Table]:
    from recorder.analysis.rebuild import _series

    text = kind.startswith("tardis-")
    steps = _STEPS  # per symbol: the share of its book rows applied so far
    for n, sym in enumerate(symbols):
        def rows_applied(done: int, total: int, n: int = n) -> None:
            if progress:
                progress(n * steps + done * steps // max(total, 1), len(symbols) * steps)

        if kind in ("quotes", "tardis-quotes"):
            yield _series(ds, sym, start_us, end_us, None, 1, None, unverified, text,
                          progress=rows_applied)
        else:
            yield _series(ds, sym, start_us, end_us, interval, depth, None, unverified, text,
                          progress=rows_applied)
        if progress:
            progress((n + 1) * steps, len(symbols) * steps)


def _tardis_book_sql(name: str, depth: int, symbol_expr: str, exchange: str) -> str:
    cols = []
    for lvl in range(depth):
        for side, tside in (("ask", "asks"), ("bid", "bids")):
            cols.append(f'{side}_price_{lvl} AS "{tside}[{lvl}].price"')
            cols.append(f'{side}_qty_{lvl} AS "{tside}[{lvl}].amount"')
    return (f"SELECT {sql_str(exchange)} AS exchange, {symbol_expr} AS symbol, "
            "coalesce(epoch_us(ts_exchange), epoch_us(ts)) AS timestamp, "
            f"epoch_us(ts) AS local_timestamp, {', '.join(cols)} FROM {name}")


def _tardis_quotes_sql(name: str, symbol_expr: str, exchange: str) -> str:
    return (f"SELECT {sql_str(exchange)} AS exchange, {symbol_expr} AS symbol, "
            "coalesce(epoch_us(ts_exchange), epoch_us(ts)) AS timestamp, "
            "epoch_us(ts) AS local_timestamp, ask_qty_0 AS ask_amount, "
            "ask_price_0 AS ask_price, bid_price_0 AS bid_price, bid_qty_0 AS bid_amount "
            f"FROM {name}")


def _quotes_columns(t: pa.Table) -> pa.Table:
    return pa.table({
        "symbol": t.column("symbol"), "ts_recv": t.column("ts"),
        "ts_exchange": t.column("ts_exchange"), "bid_price": t.column("bid_price_0"),
        "bid_qty": t.column("bid_qty_0"), "ask_price": t.column("ask_price_0"),
        "ask_qty": t.column("ask_qty_0"), "verified": t.column("verified"),
    })


# -- writing ---------------------------------------------------------------------------------


class _Sink:
    """CSV (optionally gzip) or Parquet, written one record batch at a time."""

    def __init__(self, out: Path) -> None:
        self.out = out
        name = out.name.lower()
        if name.endswith(".parquet"):
            self.fmt = "parquet"
        elif name.endswith((".csv", ".csv.gz")):
            self.fmt = "csv"
        else:
            raise DatasetError(f"--out {out}: use a .csv, .csv.gz or .parquet file name")
        self.writer: Any = None
        self.stream: Any = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self.fmt == "csv":
            batch = _plain_decimals(batch)
        if self.writer is None:
            self._open(batch.schema)
        if isinstance(batch, pa.Table):
            self.writer.write_table(batch)
        else:
            self.writer.write_batch(batch)
        self.rows += batch.num_rows

    def _open(self, schema: pa.Schema) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(self.out, schema, compression="zstd")
            return
        import pyarrow.csv as pacsv

        if self.out.name.lower().endswith(".gz"):
            self.stream = pa.CompressedOutputStream(str(self.out), "gzip")
        else:
            self.stream = pa.OSFile(str(self.out), "wb")
        # Values are numbers, symbols, sides and timestamps: nothing needs quoting.
        try:
            options = pacsv.WriteOptions(quoting_style="none", quoting_header="none")
        except TypeError:  # pyarrow < 18 always quotes the header
            options = pacsv.WriteOptions(quoting_style="none")
        self.writer = pacsv.CSVWriter(self.stream, _csv_schema(schema), write_options=options)

    def close(self, schema: pa.Schema | None = None) -> None:
        if self.writer is None and schema is not None:
            self._open(schema)  # an empty result still gets its header / schema
        if self.writer is not None:
            self.writer.close()
        if self.stream is not None:
            self.stream.close()


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_decimal(f.type) else f
                      for f in schema])


def _plain_decimals(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """Decimal columns as plain text with their full scale (Arrow's own cast writes 0E-10
    and 1.00E-8)."""
    dec = [i for i, f in enumerate(batch.schema) if pa.types.is_decimal(f.type)]
    if not dec:
        return batch
    con = duckdb.connect()
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    con.register("_b", pa.table({str(i): table.column(i) for i in dec}))
    text = to_arrow(con.sql("SELECT " + ", ".join(f'"{i}"::VARCHAR' for i in dec)
                            + " FROM _b"))
    con.close()
    for n, i in enumerate(dec):
        table = table.set_column(i, table.schema.field(i).name, text.column(n))
    return table


def _batches(rel: duckdb.DuckDBPyRelation, size: int = 65_536) -> pa.RecordBatchReader:
    fn = getattr(rel, "to_arrow_reader", None) or rel.fetch_record_batch
    return fn(size)


def _stream(con: duckdb.DuckDBPyConnection, query: str, sink: _Sink,
            progress: Progress | None) -> None:
    """Run ``query`` and write its batches as they come. Progress is DuckDB's own estimate
    for the running query, polled from a thread: counting the rows first would run an
    aggregate such as the bars twice."""
    if not progress:
        reader = _batches(con.sql(query))
        for batch in reader:
            sink.write(batch)
        sink.close(reader.schema)
        return
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.2):
            pct = con.query_progress()
            if pct >= 0:
                progress(min(_STEPS - 1, int(pct * _STEPS / 100)), _STEPS)

    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    progress(0, _STEPS)
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        reader = _batches(con.sql(query))
        for batch in reader:
            sink.write(batch)
    finally:
        stop.set()
        watcher.join()
        con.execute("RESET enable_progress_bar")
        con.execute("RESET enable_progress_bar_print")
    progress(_STEPS, _STEPS)
    sink.close(reader.schema)


def export(ds: Dataset, kind: str, out: Path | str, *, symbols: Any = None, start: Any = None,
           end: Any = None, interval: Any = None, depth: int | None = None,
           time: str = "exchange", unverified: str | None = None,
           symbol_names: str = "exchange", progress: Progress | None = None) -> int:
    """Write one export ``kind`` (see KINDS) to ``out``; returns the number of rows.

    - ``bars``: OHLCV + vwap + trades per ``interval`` (default 1m), see bars_sql().
    - ``book``: top-``depth`` (default 10) snapshots every ``interval`` (default 1s; none
      or "change": after every change) from the rebuilt book, see
      recorder.analysis.rebuild.book_snapshots().
    - ``quotes``: every change of best bid/ask from the rebuilt book.
    - ``tardis-trades``, ``tardis-incremental-book``, ``tardis-book-snapshot-25`` (every
      change of the top 25, or every ``interval``; ``depth`` changes 25), ``tardis-quotes``.

    ``progress(done, total)``, if given, is called as the work advances (for the SQL kinds
    from a helper thread, with DuckDB's estimate in thousandths); it ends at done == total.
    """
    if kind not in KINDS:
        raise DatasetError(f"kind {kind!r}; allowed: {', '.join(KINDS)}")
    if symbol_names == "kraken":  # the name this option had when Kraken was the only one
        symbol_names = "exchange"
    if symbol_names not in SYMBOL_NAMES:
        raise DatasetError(f"symbol names {symbol_names!r}; allowed: "
                           + ", ".join(SYMBOL_NAMES))
    sink = _Sink(Path(out))
    con = ds.con
    if kind == "bars":
        _stream(con, bars_sql(ds, interval or "1m", symbols, start, end, time), sink, progress)
        return sink.rows
    if kind == "tardis-trades":
        _stream(con, tardis_trades_sql(ds, symbols, start, end, symbol_names), sink, progress)
        return sink.rows
    if kind == "tardis-incremental-book":
        _stream(con, tardis_incremental_sql(ds, symbols, start, end, unverified or "skip",
                                            symbol_names), sink, progress)
        return sink.rows
    # Kinds built from the rebuilt book, one symbol at a time.
    syms = _symbols_for(ds, symbols)
    start_us, end_us = _range(ds, start, end)
    tardis = kind.startswith("tardis-")
    mode = unverified or ("skip" if tardis else "flag")
    if mode not in ("flag", "skip"):
        raise DatasetError(f"unverified {mode!r}; allowed: flag, skip")
    if kind == "book":
        iv, levels = ("1s" if interval is None else interval), depth or 10
        iv = None if iv in ("0", 0, "change") else iv
    elif kind == "tardis-book-snapshot-25":
        iv, levels = (None if interval in (None, "0", 0, "change") else interval), depth or 25
    else:
        iv, levels = None, 1
    symbol_expr = _tardis_symbol(ds, symbol_names, "ts", None) if tardis else "symbol"
    recorded_by = ds.exchanges_of("book") if tardis else {}
    schema = None
    for table in _rebuilt(ds, kind, syms, start_us, end_us, iv, levels, mode, progress):
        if kind == "quotes":
            table = _quotes_columns(table)
        elif tardis:
            con.register("_export_part", table)
            sym = table.column("symbol")[0].as_py() if table.num_rows else None
            exchange = (recorded_by.get(sym) or [""])[0]
            query = (_tardis_quotes_sql("_export_part", symbol_expr, exchange)
                     if kind == "tardis-quotes"
                     else _tardis_book_sql("_export_part", levels, symbol_expr, exchange))
            table = to_arrow(con.sql(query))
            con.unregister("_export_part")
        schema = table.schema
        for batch in table.to_batches(65_536):
            sink.write(batch)
    sink.close(schema)
    return sink.rows
