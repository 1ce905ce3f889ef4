"""The analysis commands: ``query``, ``catalog``, ``export``, ``book`` and ``report``.

Plain functions with typer annotations; recorder/cli/main.py registers them::

    from recorder.cli.query import book, catalog, export, query, report
    app.command("query")(query)  # etc.

Every mistake in the input is one line on stderr naming the option and what is allowed, and
exit code 2.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from recorder.cli.usage import fail
from recorder.core.schema import TABLES
from recorder.core.times import DatasetError, parse_interval, parse_time, to_datetime

FORMATS = ("table", "csv", "json")
DATA_HELP = ("Data directory (what `recorder run --data` wrote), or the object store "
             "it uploads to (s3://bucket/prefix).")


def _check_data(data: Path) -> None:
    from recorder.core.location import is_store_url

    if is_store_url(data):  # s3://bucket/prefix: the object store (docs/storage.md)
        return
    if not data.is_dir():
        fail(f"--data {data}: no such directory (record with `recorder run`, or pass "
              "--data DIR)")


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        fail(f"--format {fmt!r} is not supported; allowed: {', '.join(FORMATS)}")


def _time(value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return to_datetime(parse_time(value, option))
    except DatasetError as e:
        fail(str(e))


def _open(data: Path):  # noqa: ANN202
    from recorder.analysis.dataset import open_dataset

    _check_data(data)
    try:
        return open_dataset(data)
    except (OSError, ValueError) as e:  # an object store that refuses or cannot be reached
        from sinks.object_store import describe

        shown = str(data)
        if shown.startswith("s3:/") and not shown.startswith("s3://"):
            shown = "s3://" + shown[4:]  # what a Path made of the URL
        fail(f"--data {shown}: {describe(e)}")


def _as_json(rel: Any) -> str:
    cols = rel.columns
    rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    # Decimals and timestamps as text: exact, and readable by any JSON consumer.
    return json.dumps(rows, default=str)


def _print(rel: Any, fmt: str) -> None:
    if fmt == "table":
        rel.show(max_width=10_000, max_rows=1_000)
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(rel.columns)
        writer.writerows(rel.fetchall())
    else:
        typer.echo(_as_json(rel))


def _write(rel: Any, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        rel.write_parquet(str(out), compression="zstd")
    elif suffix == ".csv":
        rel.write_csv(str(out))
    elif suffix == ".json":
        out.write_text(_as_json(rel))
    else:
        fail(f"--out {out}: use a .parquet, .csv or .json file name")
    typer.echo(f"wrote {out}", err=True)


# -- query -----------------------------------------------------------------------------------


def query(
    sql: str = typer.Argument(..., help="SQL over the tables: " + ", ".join(TABLES) + "."),
    data: Path = typer.Option(Path("data"), "--data", help=DATA_HELP),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    out: Path | None = typer.Option(None, "--out", help="Write the result to a file "
                                    "(.parquet, .csv or .json) instead of printing it."),
) -> None:
    """Run SQL over the recorded tables (one DuckDB view per table, journaled rows included)."""
    import duckdb

    _check_format(fmt)
    ds = _open(data)
    try:
        rel = ds.con.sql(sql)
    except duckdb.Error as e:
        tables = ", ".join(ds.tables()) or "none yet"
        fail(f"{str(e).splitlines()[0]}\n  tables with data in {data}: {tables} "
              f"(all tables: {', '.join(TABLES)})")
    if rel is None:
        return
    try:
        if out is not None:
            _write(rel, out)
        else:
            _print(rel, fmt)
    except duckdb.Error as e:
        fail(str(e).splitlines()[0])


# -- catalog ---------------------------------------------------------------------------------


def catalog(
    database: Path = typer.Argument(..., help="DuckDB database file to write (e.g. "
                                    "recordings.duckdb)."),
    data: Path = typer.Option(Path("data"), "--data", help=DATA_HELP),
) -> None:
    """Write a DuckDB database with a view per table, for any DuckDB client.

    Open it with the DuckDB CLI, DBeaver or a notebook. Views read the Parquet files when
    queried, so new files show up; journaled rows do not (use `recorder query` for the last
    second)."""
    import duckdb

    from recorder.analysis.query import write_catalog

    _check_data(data)
    from recorder.core.location import is_store_url

    if is_store_url(data):
        fail("--data: a catalog file cannot read an object store on its own; query it with "
             "`recorder query --data s3://...` or open_dataset(\"s3://...\")")
    if database.suffix.lower() not in (".duckdb", ".db", ".ddb"):
        fail(f"{database}: use a .duckdb, .db or .ddb file name")
    try:
        tables = write_catalog(data, database)
    except duckdb.Error as e:
        fail(f"{database}: {str(e).splitlines()[0]}")
    typer.echo(f"wrote {database}: views over {', '.join(tables) or 'no tables yet'} "
               f"(all tables have a view; re-run after a new table gets its first file)",
               err=True)


# -- export ----------------------------------------------------------------------------------


class _Progress:
    """A progress bar on stderr (rich) when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.label = label
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total or None)
        self.bar.update(self.task, completed=done, total=total or None)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def export(
    kind: str = typer.Option(..., "--kind", help="bars, book, quotes, tardis-trades, "
                             "tardis-incremental-book, tardis-book-snapshot-25, tardis-quotes."),
    out: Path = typer.Option(..., "--out", help="Output file: .csv, .csv.gz or .parquet."),
    data: Path = typer.Option(Path("data"), "--data", help=DATA_HELP),
    symbol: list[str] | None = typer.Option(None, "--symbol", help="Symbol(s), e.g. BTC/USD "
                                            "(repeat or comma-separate; default: all)."),
    start: str | None = typer.Option(None, "--from", help="Start (inclusive), ISO-8601 UTC "
                                     "or epoch seconds."),
    end: str | None = typer.Option(None, "--to", help="End (exclusive)."),
    interval: str | None = typer.Option(None, "--interval", help="Bar length (bars, default "
                                        "1m) or snapshot interval (book: default 1s; "
                                        "tardis-book-snapshot-25: default every change); "
                                        "'change' = after every change."),
    depth: int | None = typer.Option(None, "--depth", help="Levels per side (book: 10, "
                                     "tardis-book-snapshot-25: 25)."),
    time_base: str = typer.Option("exchange", "--time", help="bars: bucket by exchange "
                                  "or recv time."),
    unverified: str | None = typer.Option(None, "--unverified", help="Book rows/snapshots "
                                          "known wrong (verified = false): flag (book, "
                                          "quotes), skip (tardis-*), keep (incremental)."),
    symbol_names: str = typer.Option("exchange", "--symbol-names", help="tardis-*: exchange "
                                     "(Tardis's names: Kraken XBT/USD before 2026-07-10 and "
                                     "BTC/USD from then, KuCoin BTC-USDT) or canonical "
                                     "(BTC/USD throughout)."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress "
                                         "bar on stderr (default: when it is a terminal)."),
    engine: str = typer.Option("local", "--engine", help="local (DuckDB, this process) or "
                               "spark (bars, book, quotes: per symbol and day in parallel "
                               "on Spark; needs the spark extra)."),
    spark_master: str | None = typer.Option(None, "--spark-master", help="--engine spark: "
                                            "the Spark master (default: $SPARK_MASTER, else "
                                            "local[*])."),
) -> None:
    """Export bars, book snapshots, quotes or Tardis-compatible CSV, by symbol and time."""
    from recorder.analysis.export import KINDS
    from recorder.analysis.export import export as run_export

    if kind not in KINDS:
        fail(f"--kind {kind!r}; allowed: {', '.join(KINDS)}")
    if engine not in ("local", "spark"):
        fail(f"--engine {engine!r}; allowed: local, spark")
    if engine == "spark":
        from recorder.analysis.spark_export import SPARK_KINDS

        if kind not in SPARK_KINDS:
            fail(f"--engine spark exports {', '.join(SPARK_KINDS)}; --kind {kind} runs "
                 "locally (leave --engine out)")
        if unverified is not None and kind != "bars" and unverified not in ("flag", "skip"):
            fail(f"--unverified {unverified!r}; allowed: flag, skip")
    elif spark_master is not None:
        fail("--spark-master goes with --engine spark")
    name = out.name.lower()
    if not name.endswith((".csv", ".csv.gz", ".parquet")):
        fail(f"--out {out}: use a .csv, .csv.gz or .parquet file name")
    if depth is not None and not 1 <= depth <= 1000:
        fail(f"--depth {depth}: levels per side must be 1..1000")
    if kind == "tardis-book-snapshot-25" and depth not in (None, 25):
        typer.echo(f"note: --depth {depth}: the layout is book_snapshot_{depth}", err=True)
    if interval is not None and interval not in ("0", "change"):
        try:
            parse_interval(interval, "--interval")
        except DatasetError as e:
            fail(str(e))
    if kind == "bars" and interval in ("0", "change"):
        fail("--interval: bars need a length such as 1s, 1m, 1h, 1d")
    if time_base not in ("exchange", "recv"):
        fail(f"--time {time_base!r}; allowed: exchange, recv")
    allowed = {"tardis-incremental-book": ("skip", "keep")}.get(kind, ("flag", "skip"))
    if unverified is not None and unverified not in allowed:
        fail(f"--unverified {unverified!r} for --kind {kind}; allowed: {', '.join(allowed)}")
    if symbol_names not in ("exchange", "kraken", "canonical"):
        fail(f"--symbol-names {symbol_names!r}; allowed: exchange, canonical")
    t0, t1 = _time(start, "--from"), _time(end, "--to")
    if t0 is not None and t1 is not None and t1 <= t0:
        fail("--to must be after --from")
    symbols = [s.strip() for item in (symbol or []) for s in item.split(",") if s.strip()]
    ds = _open(data)
    if symbols:
        have = set(ds.symbols())
        unknown = [s for s in symbols if s not in have]
        if unknown:
            fail(f"--symbol {', '.join(unknown)}: not recorded in {data}; recorded: "
                  f"{', '.join(sorted(have)) or 'none'}")
    bar = _Progress(sys.stderr.isatty() if progress is None else progress, f"export {kind}")
    started = time.perf_counter()
    try:
        if engine == "spark":
            from recorder.analysis.spark_export import export_spark, spark_session

            rows = export_spark(ds, kind, out, spark=spark_session(spark_master),
                                symbols=symbols or None, start=t0, end=t1, interval=interval,
                                depth=depth, time=time_base, unverified=unverified,
                                progress=bar)
        else:
            rows = run_export(ds, kind, out, symbols=symbols or None, start=t0, end=t1,
                              interval=interval, depth=depth, time=time_base,
                              unverified=unverified, symbol_names=symbol_names, progress=bar)
    except DatasetError as e:
        fail(str(e))
    finally:
        bar.close()
    typer.echo(f"wrote {out}: {rows:,} rows in {time.perf_counter() - started:.1f} s",
               err=True)


# -- book ------------------------------------------------------------------------------------


def book(
    symbol: str = typer.Argument(..., help="Symbol, e.g. BTC/USD; exchange:symbol "
                                 "(kucoin:BTC/USDT) when several exchanges recorded it."),
    at: str = typer.Option(..., "--at", help="The moment (ISO-8601 UTC or epoch seconds): "
                           "every message received at or before it is applied."),
    depth: int = typer.Option(10, "--depth", help="Levels per side."),
    data: Path = typer.Option(Path("data"), "--data", help=DATA_HELP),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
) -> None:
    """The top-N book of a symbol at a moment, rebuilt from the book table.

    A series of snapshots: `recorder export --kind book`."""
    _check_format(fmt)
    if not 1 <= depth <= 1000:
        fail(f"--depth {depth}: levels per side must be 1..1000")
    when = _time(at, "--at")
    ds = _open(data)
    have = ds.exchanges_of("book") if ds.has_rows("book") else {}
    exchange, _, name = symbol.rpartition(":")
    if name not in have or (exchange and exchange not in have[name]):
        listed = ", ".join(f"{ex}:{s}" if len(exs) > 1 else s
                           for s, exs in have.items() for ex in exs)
        fail(f"{symbol}: no book rows in {data}; recorded: {listed or 'none'}")
    try:
        b = ds.book(symbol, when, depth=depth)
    except DatasetError as e:
        fail(str(e))
    if b.snapshot_at is None:
        fail(f"{symbol}: no book snapshot at or before {when.isoformat()}", code=1)
    if fmt == "json":
        typer.echo(json.dumps({
            "symbol": b.symbol, "at": b.at.isoformat(),
            "last_update": b.last_update.isoformat() if b.last_update else None,
            "snapshot_at": b.snapshot_at.isoformat(), "verified": b.verified,
            "depth": b.depth,
            "asks": [[str(p), str(q)] for p, q in b.asks],
            "bids": [[str(p), str(q)] for p, q in b.bids]}))
        return
    rows = [(i, *(b.bids[i] if i < len(b.bids) else ("", "")),
             *(b.asks[i] if i < len(b.asks) else ("", "")))
            for i in range(max(len(b.asks), len(b.bids)))]
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["level", "bid_price", "bid_qty", "ask_price", "ask_qty"])
        w.writerows(rows)
        return
    flag = {True: "verified", False: "NOT VERIFIED (known wrong)", None: "not checked"}
    typer.echo(f"{b.symbol} at {b.at.isoformat()}  last update {b.last_update.isoformat()}  "
               f"snapshot {b.snapshot_at.isoformat()}  {flag[b.verified]}")
    typer.echo(f"{'level':>5} {'bid_qty':>22} {'bid_price':>20} | {'ask_price':<20} "
               f"{'ask_qty':<22}")
    for i, bp, bq, ap, aq in rows:
        typer.echo(f"{i:>5} {_plain(bq):>22} {_plain(bp):>20} | {_plain(ap):<20} "
                   f"{_plain(aq):<22}")


def _plain(v: Any) -> str:
    if v == "" or v is None:
        return ""
    text = format(v, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# -- report ----------------------------------------------------------------------------------


def report(
    data: Path = typer.Option(Path("data"), "--data", help=DATA_HELP),
    out: Path | None = typer.Option(None, "--out", help="Also write the coverage chart: "
                                    ".html (chart + table, self-contained) or .png."),
    symbol: list[str] | None = typer.Option(None, "--symbol", help="Symbol(s) (default: all)."),
    start: str | None = typer.Option(None, "--from", help="Start (inclusive)."),
    end: str | None = typer.Option(None, "--to", help="End (exclusive)."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
) -> None:
    """Rows, empty minutes, gaps and integrity failures per symbol and hour; --out: a chart.

    With --out x.html (self-contained) or x.png, a coverage chart over time."""
    from recorder.analysis.report import report as run_report

    _check_format(fmt)
    if out is not None and out.suffix.lower() not in (".html", ".htm", ".png"):
        fail(f"--out {out}: use a .html or .png file name")
    t0, t1 = _time(start, "--from"), _time(end, "--to")
    symbols = [s.strip() for item in (symbol or []) for s in item.split(",") if s.strip()]
    ds = _open(data)
    try:
        table = run_report(ds, out, symbols or None, t0, t1)
    except DatasetError as e:
        fail(str(e))
    ds.con.register("_report", table)
    _print(ds.con.sql("SELECT * FROM _report"), fmt)
    if out is not None:
        typer.echo(f"wrote {out}", err=True)
