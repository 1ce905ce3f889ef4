"""ParquetSink end to end: what DuckDB sees, rotation, atomic publish, back-pressure, errors."""

from __future__ import annotations

import errno
import os
import threading
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from sinks import journal, parquet_sink, writer
from sinks.journal_readers import pending_batches
from sinks.parquet_format import read_file_metadata
from sinks.parquet_sink import ParquetSink, SinkError
from tests.rows import row, us

T0 = us("2026-11-22T04:00:00Z")


class Clock:
    def __init__(self, t_us: int) -> None:
        self.now = t_us / 1e6

    def __call__(self) -> float:
        return self.now

    def at(self, t_us: int) -> None:
        self.now = t_us / 1e6


def sink_at(root: Path, clock: Clock, **kw) -> ParquetSink:
    kw.setdefault("source", "test-1")
    kw.setdefault("journal_interval", 0.05)
    return ParquetSink(root, "kraken", clock=clock, **kw)


def sql(query: str) -> list[tuple]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.sql(query).fetchall()


def files(root: Path, table: str) -> list[Path]:
    return sorted((root / table).rglob("*.parquet"))


def trades_view(root: Path) -> str:
    return f"read_parquet('{root}/trades/**/*.parquet', hive_partitioning=true)"


def test_duckdb_reads_exact_decimals_types_and_both_timestamp_forms(tmp_path: Path) -> None:
    rows = [
        row("trades", symbol="BTC/JPY", ts_exchange="1618678142.557535", ts_recv=T0,
            price="15000000.5", qty="1000.00005100", side="buy", trade_id=1),
        row("trades", symbol="DOGE/USD", ts_exchange="2026-09-25T17:48:26.844359566Z",
            ts_recv=T0 + 1, price="0.00005100", qty="999999999999.9999999999", side="sell",
            trade_id=2),
        row("trades", symbol="ETH/USD", ts_exchange=None, ts_recv=T0 + 2, price="1774.00",
            qty="0.1", side="buy", trade_id=3),
    ]
    with sink_at(tmp_path, Clock(T0)) as sink:
        sink.write("trades", rows)
    got = sql(f"""select price, qty, ts_exchange::varchar, typeof(price), typeof(qty),
                  typeof(ts_exchange), typeof(ts_recv), exchange, date::varchar
                  from {trades_view(tmp_path)} order by trade_id""")
    assert [(g[0], g[1]) for g in got] == [(Decimal(r[4]), Decimal(r[5])) for r in rows]
    assert [g[2] for g in got] == ["2021-04-17 16:49:02.557535+00",
                                   "2026-09-25 17:48:26.844359+00", None]
    assert got[0][3:] == ("DECIMAL(18,10)", "DECIMAL(22,10)", "TIMESTAMP WITH TIME ZONE",
                          "TIMESTAMP WITH TIME ZONE", "kraken", "2026-11-22")
    # VWAP-style SQL on the raw columns must not overflow for large but real values.
    notional = sql(f"""select sum(price * qty), sum(price * qty) / sum(qty)
                       from {trades_view(tmp_path)} where symbol = 'BTC/JPY'""")[0]
    assert notional[0] == Decimal("15000000.5") * Decimal("1000.00005100")
    many = sql(f"select sum(price * qty) from {trades_view(tmp_path)}, range(100000)")[0][0]
    assert many == 100000 * sum(Decimal(r[4]) * Decimal(r[5]) for r in rows)


def test_rotation_by_time_and_file_names(tmp_path: Path) -> None:
    clock = Clock(T0)
    sink = sink_at(tmp_path, clock, rotate_seconds=60, late_seconds=1)
    for minute in range(3):
        t = T0 + minute * 60_000_000
        clock.at(t + 30_000_000)
        sink.write("trades", [row("trades", ts_recv=t + 5_000_000 + i, price="1", qty="1")
                              for i in range(10)])
        sink.tick()
        assert sink.flush(10)
    # The first two windows ended more than late_seconds ago: published. The third is open.
    clock.at(T0 + 2 * 60_000_000 + 61_500_000)
    assert [p.name for p in files(tmp_path, "trades")] == [
        "20261122T040005Z-20261122T040005Z-test-1-0001.parquet",
        "20261122T040105Z-20261122T040105Z-test-1-0002.parquet",
    ]
    sink.tick()
    assert sink.flush(10)
    assert len(files(tmp_path, "trades")) == 3
    sink.close()
    for path in files(tmp_path, "trades"):
        assert pq.read_metadata(path).num_rows == 10


def test_rows_split_at_utc_midnight(tmp_path: Path) -> None:
    midnight = us("2026-11-23T00:00:00Z")
    rows = [row("book", ts_recv=midnight + d, price="1", qty="1", side="bid")
            for d in (-1_500_000, -1, 0, 700_000)]
    with sink_at(tmp_path, Clock(midnight), rotate_seconds=7 * 3600) as sink:
        sink.write("book", rows)
    by_date = sql(f"""select date::varchar, count(*), min(ts_recv)::varchar, max(ts_recv)::varchar
                      from read_parquet('{tmp_path}/book/**/*.parquet', hive_partitioning=true)
                      group by all order by 1""")
    assert by_date == [
        ("2026-11-22", 2, "2026-11-22 23:59:58.5+00", "2026-11-22 23:59:59.999999+00"),
        ("2026-11-23", 2, "2026-11-23 00:00:00+00", "2026-11-23 00:00:00.7+00"),
    ]
    names = [p.name for p in files(tmp_path, "book")]
    assert names[0].startswith("20261122T235958Z-20261122T235959Z-")
    assert names[1].startswith("20261123T000000Z-20261123T000000Z-")


def test_rotation_by_size(tmp_path: Path) -> None:
    rows = [row("trades", ts_recv=T0 + i, price=f"{i}.5", qty="0.1", trade_id=i)
            for i in range(30_000)]
    with sink_at(tmp_path, Clock(T0), max_file_bytes=64 * 1024, flush_rows=1000) as sink:
        sink.write("trades", rows)
    paths = files(tmp_path, "trades")
    assert len(paths) > 3
    assert sum(pq.read_metadata(p).num_rows for p in paths) == len(rows)
    assert all(p.stat().st_size <= 64 * 1024 for p in paths)
    ids = sql(f"select count(distinct trade_id), min(trade_id::BIGINT), max(trade_id::BIGINT) "
              f"from {trades_view(tmp_path)}")
    assert ids == [(30_000, 0, 29_999)]


def test_nothing_is_visible_as_parquet_until_complete(tmp_path: Path) -> None:
    clock = Clock(T0)
    sink = sink_at(tmp_path, clock)
    sink.write("trades", [row("trades", ts_recv=T0, price="1", qty="1")])
    clock.at(T0 + 1_000_000)
    sink.tick()
    assert sink.flush(10)
    # Journaled (queryable through pending_batches) but no Parquet file in any glob.
    assert list(tmp_path.rglob("*.parquet")) == []
    assert sum(t.num_rows for t in pending_batches(tmp_path, "trades")) == 1
    assert sink.stats()["rows_journaled"] == {"trades": 1}
    sink.close()
    assert len(list(tmp_path.rglob("*.parquet"))) == 1
    assert list(tmp_path.rglob("*.tmp")) == [] and list(pending_batches(tmp_path, "trades")) == []


def test_file_metadata_is_small_and_clean(tmp_path: Path) -> None:
    with sink_at(tmp_path, Clock(T0)) as sink:
        sink.write("book", [row("book", ts_recv=T0, price="1", qty="1", side="ask")])
    (path,) = files(tmp_path, "book")
    meta = read_file_metadata(path)
    assert meta["table"] == "book" and meta["schema_version"] and meta["recorder_version"]
    assert set(meta) <= {"recorder_version", "format_version", "table", "schema_version",
                         "schema_fingerprint", "exchange", "date", "source", "seq", "segment",
                         "window_start_us", "window_end_us"}
    raw = b" ".join(k + v for k, v in (pq.read_schema(path).metadata or {}).items())
    for secret in ("HOME", "PATH", "KRAKEN_API"):
        assert os.environ.get(secret, "\0").encode() not in raw
    pf = pq.ParquetFile(path)
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"


def test_unconvertible_values_become_events(tmp_path: Path) -> None:
    seen: list[tuple[str, dict]] = []
    with sink_at(tmp_path, Clock(T0), on_problem=lambda k, d: seen.append((k, d))) as sink:
        sink.write("trades", [
            row("trades", symbol="BTC/USD", ts_recv=T0, price="1.12345678901", qty="1"),
            row("trades", symbol="BTC/USD", ts_recv=T0 + 1, price="2", qty="1"),
        ])
    assert sql(f"select count(*), count(price) from {trades_view(tmp_path)}") == [(2, 1)]
    events = sql(f"""select kind, symbol, channel, detail, ts_recv::varchar
                     from read_parquet('{tmp_path}/events/**/*.parquet')""")
    assert len(events) == 1
    kind, symbol, channel, detail, ts = events[0]
    assert (kind, symbol, channel) == ("value_unconvertible", "BTC/USD", "trades")
    assert "1.12345678901" in detail and '"column":"price"' in detail
    assert ts == "2026-11-22 04:00:00+00"
    assert seen and seen[0][0] == "value_unconvertible"


def test_a_conversion_bug_is_an_event_and_recording_goes_on(tmp_path: Path,
                                                            monkeypatch) -> None:
    # The rows become Arrow in the caller's thread: a converter that raises (a bug, not a
    # bad value) must cost only its own chunk, say so with the count, and not stop the sink.
    real = parquet_sink.rows_to_batch
    calls = []

    def first_call_raises(table, rows):
        calls.append(table)
        if len(calls) == 1:
            raise RuntimeError("converter bug")
        return real(table, rows)

    monkeypatch.setattr(parquet_sink, "rows_to_batch", first_call_raises)
    seen: list[tuple[str, dict]] = []
    with sink_at(tmp_path, Clock(T0), flush_rows=3,
                 on_problem=lambda k, d: seen.append((k, d))) as sink:
        sink.write("trades", [row("trades", ts_recv=T0 + i, price="1", qty="1")
                              for i in range(3)])
        sink.write("trades", [row("trades", ts_recv=T0 + 10 + i, price="2", qty="1")
                              for i in range(3)])
    assert sql(f"select count(*), min(price) from {trades_view(tmp_path)}") == [
        (3, Decimal("2"))]
    ((kind, detail),) = seen
    assert kind == "sink_internal_error"
    assert detail["rows_lost"] == 3 and detail["table"] == "trades"
    assert "converter bug" in detail["error"]
    events = sql(f"""select kind, detail from read_parquet('{tmp_path}/events/**/*.parquet')""")
    assert [k for k, _ in events] == ["sink_internal_error"]
    assert '"rows_lost":3' in events[0][1]


def test_write_blocks_when_the_queue_is_full(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    original = writer.Writer._batch

    def slow_batch(self, *args):
        gate.wait(10)
        return original(self, *args)

    monkeypatch.setattr(writer.Writer, "_batch", slow_batch)
    sink = sink_at(tmp_path, Clock(T0), max_queued_rows=300, flush_rows=100)
    done = threading.Event()

    def produce() -> None:
        for i in range(10):
            sink.write("trades", [row("trades", ts_recv=T0 + i * 100 + j, price="1", qty="1")
                                  for j in range(100)])
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set()  # blocked: 1 chunk in the writer + 300 rows queued
    assert sink.stats()["queued_rows"] <= 300
    gate.set()
    thread.join(10)
    assert done.is_set()
    sink.close()
    assert sink.stats()["blocked_seconds"] > 0.2
    assert sql(f"select count(*) from {trades_view(tmp_path)}") == [(1000,)]


def test_unwritable_data_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="cannot write to the data directory"):
        ParquetSink(blocker / "data", "kraken")


def test_permission_denied_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    def denied(path, *args, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(parquet_sink.os, "open", denied)  # what a read-only mount does
    with pytest.raises(SinkError, match=r"data directory .*: Permission denied \(.*\.incidents\)$"):
        ParquetSink(tmp_path, "kraken")


def test_disk_full_keeps_rows_and_resumes(tmp_path: Path, monkeypatch) -> None:
    full = threading.Event()
    full.set()
    real_pwrite = os.pwrite
    seen: list[str] = []
    clock = Clock(T0)
    sink = sink_at(tmp_path, clock, retry_interval=0.05, on_problem=lambda k, d: seen.append(k))
    incident_fd = sink._incidents.fd

    def pwrite(fd, data, offset):
        # A full disk still lets the incident file overwrite the blocks it owns.
        if full.is_set() and fd != incident_fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(journal.os, "pwrite", pwrite)
    sink.write("trades", [row("trades", ts_recv=T0 + i, price="1", qty="1") for i in range(50)])
    clock.at(T0 + 1_000_000)
    sink.tick()
    deadline = time.monotonic() + 5
    while "sink_write_error" not in seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "sink_write_error" in seen
    assert "No space left" in sink.stats()["write_error"]
    assert sink.stats()["rows_journaled"] == {}
    # Should the process die now, the next start still gets the event.
    assert b"sink_write_error" in sink._incidents.path.read_bytes()
    full.clear()
    assert sink.flush(10)
    assert b"sink_write_error" not in sink._incidents.path.read_bytes()
    assert sink.close(10)
    assert not sink._incidents.path.exists()
    assert "sink_write_resumed" in seen
    assert sql(f"select count(*) from {trades_view(tmp_path)}") == [(50,)]
    kinds = sql(f"select kind from read_parquet('{tmp_path}/events/**/*.parquet') order by 1")
    assert kinds == [("sink_write_error",), ("sink_write_resumed",)]


def test_failing_fsync_is_retried_without_a_torn_journal(tmp_path: Path, monkeypatch) -> None:
    failures = [OSError(errno.EIO, "Input/output error")] * 3
    real_fsync = os.fsync
    clock = Clock(T0)
    seen: list[str] = []
    sink = sink_at(tmp_path, clock, retry_interval=0.05, on_problem=lambda k, d: seen.append(k))
    truncated: list[int] = []
    real_ftruncate = os.ftruncate

    def fsync(fd):  # the journal segment's fsync fails (an I/O error), nothing else's
        if failures and os.readlink(f"/proc/self/fd/{fd}").endswith(".arrows"):
            raise failures.pop()
        return real_fsync(fd)

    def ftruncate(fd, length):
        truncated.append(length)
        return real_ftruncate(fd, length)

    monkeypatch.setattr(journal.os, "fsync", fsync)
    monkeypatch.setattr(journal.os, "ftruncate", ftruncate)
    for i in range(3):
        sink.write("trades", [row("trades", ts_recv=T0 + i * 10 + j, price="1", qty="1",
                                  trade_id=i * 10 + j) for j in range(10)])
        clock.at(T0 + (i + 1) * 1_000_000)
        sink.tick()
    assert sink.flush(10)
    assert sink.close(10)
    # Each failed fsync cut the segment back to its last synced length (0: nothing synced
    # yet), so the retry rewrote everything: no gap, no duplicate.
    assert truncated and set(truncated) == {0}
    assert seen.count("sink_write_error") == 1 and "sink_write_resumed" in seen
    assert sql(f"select count(*), count(distinct trade_id) from {trades_view(tmp_path)}") == [
        (30, 30)]


def test_publish_failure_is_retried(tmp_path: Path, monkeypatch) -> None:
    from sinks import finalize

    failures = [OSError(errno.ENOSPC, "No space left on device")] * 2
    real = finalize._write_parquet

    def flaky(*args, **kw):
        if failures:
            raise failures.pop()
        return real(*args, **kw)

    monkeypatch.setattr(finalize, "_write_parquet", flaky)
    seen: list[str] = []
    with sink_at(tmp_path, Clock(T0), retry_interval=0.01,
                 on_problem=lambda k, d: seen.append(k)) as sink:
        sink.write("trades", [row("trades", ts_recv=T0, price="1", qty="1")])
    assert seen[:2] == ["parquet_write_error", "parquet_write_resumed"]
    assert sql(f"select count(*) from {trades_view(tmp_path)}") == [(1,)]
    assert list(tmp_path.rglob("*.tmp")) == []


def test_stats_and_closed_sink(tmp_path: Path) -> None:
    sink = sink_at(tmp_path, Clock(T0))
    sink.write("spread", [row("spread", ts_recv=T0, bid_price="1", ask_price="2")] * 3)
    with pytest.raises(KeyError):
        sink.write("nope", [()])
    assert sink.stats()["rows_received"] == {"spread": 3}
    assert sink.close()
    stats = sink.stats()
    assert stats["rows_written"] == {"spread": 3} and stats["files_finalized"] == 1
    assert stats["pending_rows"] == 0 and stats["bytes_written"] > 0
    with pytest.raises(RuntimeError):
        sink.write("spread", [row("spread", ts_recv=T0)])
    assert parquet_sink.ParquetSink  # the module imports cleanly on its own
