"""Query views: multi-day datasets, older schemas, journal inclusion and de-duplication, the
catalog file, the Python API and the `query` command's errors."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recorder.analysis.dataset import open_dataset
from recorder.analysis.query import available_tables, connect, write_catalog
from recorder.core.schema import TABLES, arrow_schema
from sinks.parquet_sink import ParquetSink
from tests.datasets import (
    DAY,
    HOUR,
    T0,
    run,
    trade,
    write,
)


def multi_day_trades() -> list[tuple]:
    out = []
    n = 0
    for day in range(3):
        for k in range(40):
            t = T0 + day * DAY + k * 15 * 60_000_000 + 123  # every 15 min
            for sym, base in (("BTC/USD", 63000), ("ETH/USD", 1700)):
                n += 1
                out.append(trade(sym, t, f"{base + k % 7}.{k % 10}", f"0.{n:08d}",
                                 "buy" if n % 3 else "sell", n))
    return out


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("days")
    write(root, {"trades": multi_day_trades()})
    return root


def test_several_days_and_partition_pruning(days: Path) -> None:
    files = sorted((days / "trades").rglob("*.parquet"))
    assert {p.parent.name for p in files} == {"date=2026-11-18", "date=2026-11-19",
                                                "date=2026-11-20"}
    con = connect(days)
    got = con.execute("SELECT date::VARCHAR, symbol, count(*) FROM trades GROUP BY ALL "
                      "ORDER BY ALL").fetchall()
    assert got == [(d, s, 40) for d in ("2026-11-18", "2026-11-19", "2026-11-20")
                   for s in ("BTC/USD", "ETH/USD")]
    plan = con.execute("EXPLAIN SELECT count(*) FROM trades WHERE date = '2026-11-19'"
                       ).fetchall()[0][1]
    per_day = sum(p.parent.name == "date=2026-11-19" for p in files)
    assert f"Scanning Files: {per_day}/{len(files)}" in plan  # the other days are pruned
    # Exact decimals survive the round trip.
    rows = multi_day_trades()
    total = sum(Decimal(r[4]) * Decimal(r[5]) for r in rows)
    assert con.execute("SELECT sum(price * qty) FROM trades").fetchall()[0][0] == total


def test_schema_addition_old_files_still_read(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write(root, {"trades": [trade("BTC/USD", T0 + 5 * HOUR, "100.5", "1", tid=1)]})
    # A file from "an older version", written by hand: no ord_type/misc/sequence/source columns,
    # and schema 1's types (narrower decimals, numeric trade ids).
    before = {"price": pa.decimal128(18, 10), "qty": pa.decimal128(22, 10),
              "trade_id": pa.int64()}
    old = pa.schema([pa.field(f.name, before.get(f.name, f.type)) for f in arrow_schema("trades")
                     if f.name not in ("ord_type", "misc", "sequence", "source")])
    part = root / "trades" / "exchange=kraken" / "date=2026-11-17"
    part.mkdir(parents=True)
    table = pa.table({
        "exchange": ["kraken"], "symbol": ["BTC/USD"],
        "ts_exchange": pa.array([T0 - DAY + 10], pa.int64()).cast(old.field("ts_exchange").type),
        "ts_recv": pa.array([T0 - DAY + 20], pa.int64()).cast(old.field("ts_recv").type),
        "price": pa.array([Decimal("99.25")], old.field("price").type),
        "qty": pa.array([Decimal("2")], old.field("qty").type),
        "side": ["sell"], "trade_id": pa.array([0], pa.int64()),
    }, schema=old)
    pq.write_table(table, part / "20261117T000000Z-20261117T000000Z-old-0001.parquet")
    con = connect(root)
    got = con.execute("SELECT date::VARCHAR, price, ord_type, misc, trade_id, sequence, "
                      "source FROM trades ORDER BY ts_recv").fetchall()
    assert got == [("2026-11-17", Decimal("99.25"), None, None, "0", None, None),
                   ("2026-11-18", Decimal("100.5"), "limit", None, "1", None, "ws")]
    # Every current column is in the view, with its type, even if no file had it.
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE trades)")
                 .fetchall())
    assert types["ord_type"] == "VARCHAR" and types["price"] == "DECIMAL(18,10)"


def test_only_old_files_still_have_new_columns(tmp_path: Path) -> None:
    # Before conn_id, there was no host either (both are the last columns they were added as).
    old = pa.schema([f for f in arrow_schema("events") if f.name not in ("conn_id", "host")])
    part = tmp_path / "events" / "exchange=kraken" / "date=2026-11-18"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"exchange": ["kraken"], "ts_recv": pa.array(
        [T0], pa.int64()).cast(old.field("ts_recv").type), "kind": ["connected"],
        "symbol": [None], "channel": [None], "detail": ["{}"]}, schema=old),
        part / "a.parquet")
    con = connect(tmp_path)
    assert con.execute("SELECT kind, conn_id FROM events").fetchall() == [("connected", None)]


def test_empty_tables_have_the_schema(tmp_path: Path) -> None:
    con = connect(tmp_path)
    for table in TABLES:
        cols = [r[0] for r in con.execute(f"SELECT column_name FROM (DESCRIBE {table})")
                .fetchall()]
        assert cols == [c.name for c in TABLES[table]] + ["date"]
        assert con.execute(f"SELECT count(*) FROM {table}").fetchall() == [(0,)]
    assert available_tables(tmp_path) == []


def test_journaled_rows_are_queryable_before_publish(tmp_path: Path) -> None:
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    sink = ParquetSink(tmp_path, "kraken", source="live", journal_interval=0.05)
    try:
        sink.write("trades", [trade("BTC/USD", now + i, "100", "1", tid=i) for i in range(5)])
        sink.write("spread", [("kraken", "BTC/USD", None, now, "99", "1", "101", "2")])
        assert sink.flush(10)
        assert not list(tmp_path.rglob("*.parquet"))  # nothing published yet
        assert set(available_tables(tmp_path)) == {"trades", "spread"}
        con = connect(tmp_path)
        assert con.execute("SELECT count(*) FROM trades").fetchall() == [(5,)]
        assert con.execute("SELECT bid_price, date::VARCHAR FROM spread").fetchall() == [
            (Decimal("99"), datetime.fromtimestamp(now / 1e6, UTC).strftime("%Y-%m-%d"))]
        # The connection is a snapshot: rows written later are not in it.
        sink.write("trades", [trade("BTC/USD", now + 10, "100", "1", tid=10)])
        assert sink.flush(10)
        assert con.execute("SELECT count(*) FROM trades").fetchall() == [(5,)]
        assert connect(tmp_path).execute("SELECT count(*) FROM trades").fetchall() == [(6,)]
    finally:
        sink.close()
    assert connect(tmp_path).execute("SELECT count(*) FROM trades").fetchall() == [(6,)]


def test_a_segment_and_its_published_file_count_once(tmp_path: Path) -> None:
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    sink = ParquetSink(tmp_path, "kraken", source="dup", journal_interval=0.05)
    sink.write("trades", [trade("ETH/USD", now + i, "1700", "1", tid=i) for i in range(7)])
    assert sink.flush(10)
    segments = list((tmp_path / ".journal" / "trades").glob("*.arrows"))
    assert len(segments) == 1
    saved = tmp_path / "saved.arrows"
    shutil.copy(segments[0], saved)
    sink.close()
    assert not list((tmp_path / ".journal" / "trades").glob("*.arrows"))
    # Put the segment back next to its published file: the state during a publish.
    shutil.copy(saved, segments[0])
    assert connect(tmp_path).execute("SELECT count(*) FROM trades").fetchall() == [(7,)]


def test_python_api(days: Path) -> None:
    ds = open_dataset(days)
    assert ds.tables() == ["trades"]
    assert ds.symbols() == ["BTC/USD", "ETH/USD"]
    lo, hi = ds.time_range("trades")
    assert lo == datetime.fromtimestamp((T0 + 123) / 1e6, UTC)
    assert hi.date().isoformat() == "2026-11-20"
    t = ds.arrow("trades", symbols="ETH/USD", start="2026-11-19", end="2026-11-19T05:00")
    assert isinstance(t, pa.Table)
    assert t.num_rows == 20 and set(t.column("symbol").to_pylist()) == {"ETH/USD"}
    assert t.schema.field("price").type == pa.decimal128(18, 10)
    rel = ds.table("trades", symbols=["BTC/USD"], columns=["price"])
    assert len(rel.fetchall()) == 120
    with pytest.raises(ValueError, match="unknown table 'tradez'.*trades"):
        ds.table("tradez")
    with pytest.raises(ValueError, match="is not a time"):
        ds.table("trades", start="yesterday")
    import pandas as pd
    df = ds.df("trades", symbols="BTC/USD", start="2026-11-20")
    assert isinstance(df, pd.DataFrame) and len(df) == 40


def test_catalog_file_opens_in_any_client(days: Path, tmp_path: Path) -> None:
    db = tmp_path / "rec.duckdb"
    assert write_catalog(days, db) == ["trades"]
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM trades WHERE date = '2026-11-19'").fetchall() \
        == [(80,)]
    assert con.execute("SELECT count(*) FROM book").fetchall() == [(0,)]


# -- the commands ----------------------------------------------------------------------------






def test_query_command_formats_and_out(days: Path, tmp_path: Path) -> None:
    r = run("query", "SELECT symbol, count(*) AS n FROM trades GROUP BY 1 ORDER BY 1",
            "--data", str(days), "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["symbol,n", "BTC/USD,120", "ETH/USD,120"]
    r = run("query", "SELECT price FROM trades ORDER BY ts_recv LIMIT 1", "--data", str(days),
            "--format", "json")
    assert r.stdout.strip() == '[{"price": "63000.0000000000"}]'
    out = tmp_path / "x.parquet"
    r = run("query", "SELECT * FROM trades WHERE symbol = 'ETH/USD'", "--data", str(days),
            "--out", str(out))
    assert r.exit_code == 0
    t = pq.read_table(out)
    assert t.num_rows == 120 and t.schema.field("qty").type == pa.decimal128(22, 10)
    r = run("catalog", str(tmp_path / "c.duckdb"), "--data", str(days))
    assert r.exit_code == 0 and (tmp_path / "c.duckdb").exists()


@pytest.mark.parametrize("sql", ["SELECT * FROM tradez", "SELEC 1", "SELECT nope FROM trades"])
def test_bad_sql_or_unknown_table_lists_the_tables(days: Path, sql: str) -> None:
    r = run("query", sql, "--data", str(days))
    assert r.exit_code == 2
    assert r.output.startswith("error: ")
    assert "tables with data in" in r.output and "trades" in r.output
    assert ("all tables: trades, book, book_checkpoints, spread, ohlc, ticker, fills, "
            "orders, events, raw") in r.output


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "--format 'xml' is not supported; allowed: table, csv, json"),
    (["--data", "/nonexistent"], "--data /nonexistent: no such directory"),
    (["--out", "x.txt"], "--out x.txt: use a .parquet, .csv or .json file name"),
])
def test_query_command_bad_options(days: Path, args: list[str], message: str) -> None:
    if "--data" not in args:
        args = [*args, "--data", str(days)]
    r = run("query", "SELECT 1", *args)
    assert r.exit_code == 2
    assert message in r.output
