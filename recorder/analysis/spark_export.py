"""``recorder export --engine spark``: the heavy export kinds on a Spark cluster (or Spark's
local mode), with results equal to the local export row for row (docs/many-machines.md).

- ``book`` and ``quotes``: the work is cut into (symbol, UTC day) tasks, and
  ``groupBy(task).applyInArrow`` runs the project's own rebuild (recorder.analysis.rebuild)
  on each, in parallel: every task opens the dataset where the workers can read it (the
  same directory, or the ``s3://`` prefix) and folds its day from the nearest start point
  before it (the latest book checkpoint, else the snapshot). Snapshots on a grid are cut
  at day boundaries as they are; a series of changes starts its fold at that start point,
  so the first change of a day is judged against the book before it, exactly as in one
  long fold, and rows before the day are dropped.
- ``bars``: Spark SQL over the trades' Parquet files (the Hive layout; the files a
  compaction replaced are left out as the local readers leave them out), each trade once
  however many hosts recorded it (the local rule, recorder.analysis.sql): open/close by
  (time, file, row in file) like the local export, exact decimal sums; the VWAP's last
  rounding (half up, 10 decimals) is done exactly on the collected bars.

The driver collects the result (ordered) and writes it with the local export's writer, so
the file is the same. Spark reads published files only: rows still in a journal (the
current second of a live recording) are not in a Spark export.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from recorder.core.times import DatasetError, parse_interval, parse_time

if TYPE_CHECKING:
    from recorder.analysis.dataset import Dataset

SPARK_KINDS = ("bars", "book", "quotes")
_DAY = 86_400_000_000
Progress = Callable[[int, int], None]


def spark_session(master: str | None = None) -> Any:
    """A SparkSession for exports: UTC, exact decimal arithmetic, Arrow transfers.
    ``master`` (e.g. ``local[2]``, ``spark://host:7077``): default the one spark-submit or
    ``$SPARK_MASTER`` gives, else ``local[*]``."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DatasetError("--engine spark needs pyspark: pip install "
                           "'market-recorder[spark]'") from None
    builder = SparkSession.builder.appName("market-recorder export")
    master = master or os.environ.get("SPARK_MASTER")
    if master:
        builder = builder.master(master)
    if (master or "local").startswith("local"):
        # Local mode: the workers are this interpreter (and so import this package).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.ui.enabled", "false")
    return (builder.config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.decimalOperations.allowPrecisionLoss", "false")
            .config("spark.sql.ansi.enabled", "true")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate())


def export_spark(ds: Dataset, kind: str, out: Path | str, *, spark: Any = None,
                 symbols: Any = None, start: Any = None, end: Any = None,
                 interval: Any = None, depth: int | None = None, time: str = "exchange",
                 unverified: str | None = None, progress: Progress | None = None,
                 chunk_us: int = _DAY) -> int:
    """Like recorder.analysis.export.export() for ``kind`` in SPARK_KINDS, computed by
    Spark (``spark``: a session; default spark_session()). Returns the rows written.
    ``chunk_us``: the span of one book task (a UTC day; the tests cut finer)."""
    from recorder.analysis.export import _Sink

    if kind not in SPARK_KINDS:
        raise DatasetError(f"--engine spark exports {', '.join(SPARK_KINDS)}; "
                           f"{kind!r} runs locally")
    spark = spark or spark_session()
    sink = _Sink(Path(out))
    if kind == "bars":
        table = _bars(spark, ds, interval or "1m", symbols, start, end, time)
    else:
        table = _rebuilt(spark, ds, kind, symbols, start, end, interval, depth, unverified,
                         chunk_us)
    for batch in table.to_batches(65_536):
        sink.write(batch)
    sink.close(table.schema)
    if progress:
        progress(1, 1)
    return sink.rows


# -- book and quotes: the project's rebuild per (symbol, day) --------------------------------


def _tasks(symbols: list[str], start_us: int, end_us: int,
           chunk_us: int = _DAY) -> list[tuple[int, str, int, int]]:
    """(task, symbol, lo, hi): each symbol's range cut at multiples of ``chunk_us`` (UTC
    midnight by default), in output order."""
    out = []
    for sym in symbols:
        lo = start_us
        while lo < end_us:
            hi = min(end_us, (lo // chunk_us + 1) * chunk_us)
            out.append((len(out), sym, lo, hi))
            lo = hi
    return out


def rebuild_task(data: str, kind: str, symbol: str, lo: int, hi: int, first: bool,
                 interval: Any, levels: int, unverified: str) -> pa.Table:
    """One (symbol, day) of a book or quotes export, by the local rebuild code; ``first``:
    the task starting the export's range (a later day's series of changes starts its fold
    at the start point before the day, and drops the rows before it)."""
    from recorder.analysis.dataset import open_dataset
    from recorder.analysis.export import _quotes_columns
    from recorder.analysis.rebuild import _series, earliest_start

    with open_dataset(data) as ds:
        begin = lo
        if interval is None and not first:
            # With redundant writers, from the earliest of their start points: the fold
            # then sees any switch between writers before the day as one long fold does.
            sp_us = earliest_start(ds, symbol, lo)
            begin = min(lo, sp_us) if sp_us is not None else lo
        table = _series(ds, symbol, begin, hi, interval, levels, None, unverified)
        if begin < lo:
            import pyarrow.compute as pc

            table = table.filter(pc.greater_equal(table.column("ts").cast(pa.int64()), lo))
    return _quotes_columns(table) if kind == "quotes" else table


def _rebuilt(spark: Any, ds: Dataset, kind: str, symbols: Any, start: Any, end: Any,
             interval: Any, depth: int | None, unverified: str | None,
             chunk_us: int = _DAY) -> pa.Table:
    from recorder.analysis.export import _range, _symbols_for

    syms = _symbols_for(ds, symbols)
    start_us, end_us = _range(ds, start, end)
    mode = unverified or "flag"
    if mode not in ("flag", "skip"):
        raise DatasetError(f"unverified {mode!r}; allowed: flag, skip")
    if kind == "book":
        iv, levels = ("1s" if interval is None else interval), depth or 10
        iv = None if iv in ("0", 0, "change") else iv
    else:
        iv, levels = None, 1
    if iv is not None:
        parse_interval(iv)
    tasks = _tasks(syms, start_us, end_us, chunk_us)
    # The output schema: the same code on an empty range (no rows, every column).
    empty = rebuild_task(str(ds.data), kind, syms[0], start_us, start_us + 1, True, iv, levels,
                         mode).slice(0, 0) if syms else pa.table({})
    if not tasks:
        return empty
    data = str(ds.data)
    firsts = {t for t, sym, lo, _ in tasks if lo == start_us}
    schema = pa.schema([pa.field("_task", pa.int64()), pa.field("_seq", pa.int64()),
                        *empty.schema])

    def run(group: pa.Table) -> pa.Table:
        task, sym, lo, hi = (group.column(c)[0].as_py() for c in ("task", "symbol", "lo", "hi"))
        t = rebuild_task(data, kind, sym, lo, hi, task in firsts, iv, levels, mode)
        n = t.num_rows
        t = t.add_column(0, "_seq", pa.array(range(n), pa.int64()))
        return t.add_column(0, "_task", pa.array([task] * n, pa.int64())).cast(schema)

    frame = spark.createDataFrame([tuple(t) for t in tasks], "task long, symbol string, "
                                  "lo long, hi long")
    result = (frame.repartition(min(len(tasks), 200), "task").groupBy("task")
              .applyInArrow(run, _spark_schema(schema)).orderBy("_task", "_seq"))
    got = _collect(result, schema)
    return got.drop_columns(["_task", "_seq"]).cast(empty.schema)


# -- bars: Spark SQL ---------------------------------------------------------------------------


def _bars(spark: Any, ds: Dataset, interval: Any, symbols: Any, start: Any, end: Any,
          time: str) -> pa.Table:
    from recorder.analysis.export import TIME_BASES, bars_sql
    from recorder.analysis.sql import TRADE_CONTENT, symbol_filter, to_arrow

    if time not in TIME_BASES:
        raise DatasetError(f"time {time!r}; allowed: {', '.join(TIME_BASES)}")
    iv = parse_interval(interval)
    # The local export's own result types, from its query on no rows.
    local = bars_sql(ds, interval, symbols, start, end, time)
    types = to_arrow(ds.con.sql(f"SELECT * FROM ({local}) LIMIT 0")).schema
    files = [str(p) if ds.store is None else f"s3a://{p}" for p in ds.files.get("trades", [])]
    if not files:
        return types.empty_table()
    col = "ts_exchange" if time == "exchange" else "ts_recv"
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    where = [f"{col} IS NOT NULL", *symbol_filter(symbols)]
    if lo is not None:
        where.append(f"unix_micros({col}) >= {lo}")
    if hi is not None:
        where.append(f"unix_micros({col}) < {hi}")
    from pyspark.sql import functions as F

    trades = spark.read.option("mergeSchema", "true").parquet(*files)
    source = trades["source"] if "source" in trades.columns else F.lit(None).cast("string")
    trades.select("exchange", "symbol", "price", "qty", "side", "trade_id",
                  *{"ts_exchange", col}, source.alias("source"),
                  trades["_metadata.file_path"].alias("_file"),
                  trades["_metadata.row_index"].alias("_row")
                  ).createOrReplaceTempView("_recorder_trades")
    order = f"struct(tu, {_path_key('_file')}, _row)"
    query = f"""
        WITH w AS (
            SELECT *, {_writer_expr('_file')} AS _writer FROM _recorder_trades
        ), n AS (
            SELECT *,
                CASE WHEN trade_id IS NULL THEN row_number() OVER (
                    PARTITION BY {TRADE_CONTENT}, trade_id IS NULL, _writer
                    ORDER BY {_path_key('_file')}, _row) END AS _occ,
                size(collect_set(trade_id) OVER (PARTITION BY {TRADE_CONTENT})) AS _ids
            FROM w
        ), u AS (
            SELECT * FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY {TRADE_CONTENT}, trade_id, _occ
                    ORDER BY coalesce(source, 'ws') <> 'ws', _writer, {_path_key('_file')},
                             _row) AS _copy
                FROM n)
            WHERE _copy = 1 AND (_occ IS NULL OR _occ > _ids)
        ), t AS (
            SELECT symbol, floor(unix_micros({col}) / {iv}) AS b, unix_micros({col}) AS tu,
                   price, qty, side, _file, _row
            FROM u WHERE {' AND '.join(where)}
        )
        SELECT symbol, b,
               min_by(price, {order}) AS open, max(price) AS high, min(price) AS low,
               max_by(price, {order}) AS close,
               sum(qty) AS volume, sum(price * qty) AS pq, count(*) AS trades,
               coalesce(sum(CASE WHEN side = 'buy' THEN qty END), 0) AS buy_volume,
               coalesce(sum(CASE WHEN side = 'sell' THEN qty END), 0) AS sell_volume
        FROM t GROUP BY symbol, b ORDER BY symbol, b"""
    rows = _collect(spark.sql(query), None)
    return _finish_bars(rows, iv, types)


def _writer_expr(column: str) -> str:
    """The writer of a file (recorder.analysis.sql.writer_sql) in Spark SQL, from its URI:
    the file name's source token without the pid (``[0-9]``, not ``\\d``: Spark's string
    literals take backslash escapes)."""
    name = (r"(^|/)[0-9]{8}T[0-9]{6}Z-[0-9]{8}T[0-9]{6}Z-([^/]+)-[0-9]{4,}(-[0-9]+)?"
            r"[.]parquet$")
    return f"regexp_replace(regexp_extract({column}, '{name}', 2), '-[0-9]+$', '')"


def _path_key(column: str) -> str:
    """A Spark file path ordered like DuckDB's ``filename`` (the local path): the URI
    scheme removed, %-escapes decoded."""
    return f"url_decode(regexp_replace({column}, '^[a-z0-9]+:(//)?', ''))"


def _finish_bars(rows: pa.Table, iv: int, types: pa.Schema) -> pa.Table:
    """Bar start times, and the VWAP: sum(price × qty) / sum(qty), rounded half up to 10
    decimals, exactly (Python decimals with enough digits)."""
    b = rows.column("b").to_pylist()
    pq = rows.column("pq").to_pylist()
    vol = rows.column("volume").to_pylist()
    vwap = []
    with localcontext() as ctx:
        ctx.prec = 80
        for p, q in zip(pq, vol, strict=True):
            vwap.append((p / q).quantize(Decimal("1e-10"), rounding=ROUND_HALF_UP)
                        if q else None)
    cols = {
        "symbol": rows.column("symbol"),
        "ts": pa.array([int(x) * iv for x in b], pa.int64()).cast(
            pa.timestamp("us", tz="UTC")),
        "open": rows.column("open"), "high": rows.column("high"), "low": rows.column("low"),
        "close": rows.column("close"), "volume": rows.column("volume"),
        "vwap": pa.array(vwap, pa.decimal128(18, 10)),
        "trades": rows.column("trades"), "buy_volume": rows.column("buy_volume"),
        "sell_volume": rows.column("sell_volume"),
    }
    return pa.table({f.name: cols[f.name].cast(f.type) for f in types}, schema=types)


# -- Spark and Arrow --------------------------------------------------------------------------


def _spark_schema(schema: pa.Schema) -> str:
    """A DDL string for an Arrow schema of the types exports have."""
    def ddl(t: pa.DataType) -> str:
        if pa.types.is_decimal(t):
            return f"decimal({t.precision},{t.scale})"
        if pa.types.is_timestamp(t):
            return "timestamp"
        return {pa.string(): "string", pa.int64(): "bigint", pa.int32(): "int",
                pa.bool_(): "boolean", pa.float64(): "double"}[t]
    return ", ".join(f"`{f.name}` {ddl(f.type)}" for f in schema)


def _collect(frame: Any, schema: pa.Schema | None) -> pa.Table:
    """The frame's rows on the driver as Arrow (in order), timestamps back to UTC µs."""
    table = frame.toArrow()
    if schema is None:
        return table
    cols = []
    for f in schema:
        c = table.column(f.name)
        if pa.types.is_timestamp(f.type):
            c = c.cast(pa.timestamp("us", tz="UTC"))
        cols.append(c.cast(f.type))
    return pa.table(cols, schema=schema)
