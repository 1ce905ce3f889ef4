"""Every buffer inside the sink has a limit, and what happens there is explicit: the
event queue counts what it drops (an events row says so), the writer's backlog and the
publisher's queue push back instead of growing."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import duckdb

from sinks import journal, publisher
from sinks.parquet_sink import ParquetSink
from sinks.reporting import Reporter
from tests.rows import row


def _trades(n: int, start: int) -> list[tuple]:
    now = time.time_ns() // 1000
    return [row("trades", ts_recv=now + i, price="1", qty="1", trade_id=start + i)
            for i in range(n)]


def _count(root: Path, table: str) -> tuple[int, int]:
    return duckdb.connect().sql(
        f"select count(*), count(distinct trade_id) from "
        f"read_parquet('{root}/{table}/**/*.parquet')").fetchall()[0]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_event_queue_overflow_is_counted_and_becomes_an_event() -> None:
    rep = Reporter("kraken", None, max_events=5)
    for i in range(8):
        rep.problem("malformed" if i < 6 else "stale", {"i": i})
    assert len(rep.events) == 5 and rep.counts["malformed"] == 6
    rows = rep.take()
    assert [r[2] for r in rows] == ["malformed"] * 5 + ["events_dropped"]
    assert json.loads(rows[-1][5]) == {"count": 3, "kinds": {"malformed": 1, "stale": 2}}
    assert rep.take() == []  # counted once
    rep.problem("stale", {})
    assert [r[2] for r in rep.take()] == ["stale"]


def _producer(sink: ParquetSink, chunks: int, size: int) -> tuple[threading.Thread, list]:
    done: list[int] = []

    def produce() -> None:
        for i in range(chunks):
            sink.write("trades", _trades(size, i * size))
            done.append(i)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    return t, done


def test_writer_backlog_stays_one_chunk_while_segments_cannot_be_created(
        tmp_path: Path, monkeypatch) -> None:
    full = threading.Event()
    full.set()
    real_open = os.open

    def refuse_segments(path, flags, *args, **kw):  # a full disk: no new journal file
        if full.is_set() and str(path).endswith(".arrows"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, *args, **kw)

    sink = ParquetSink(tmp_path, "kraken", source="b-1", flush_rows=100, max_queued_rows=300,
                       journal_interval=0.05, retry_interval=0.05)
    monkeypatch.setattr(journal.os, "open", refuse_segments)
    t, done = _producer(sink, 50, 100)
    _wait(lambda: sink.stats()["write_error"] is not None, 5, "the write error")
    time.sleep(0.5)
    stats = sink.stats()
    # One chunk (100 rows) plus the sink's own event rows; the rest waits in the bounded
    # queue and write() blocks: back-pressure, no growth.
    assert stats["backlog_rows"] <= 100 + 10, stats
    assert stats["queued_rows"] <= 300 and len(done) < 10 and t.is_alive()
    full.clear()
    t.join(20)
    assert not t.is_alive() and len(done) == 50
    assert sink.close(20)
    assert _count(tmp_path, "trades") == (5000, 5000)


def test_publisher_queue_is_bounded_and_pushes_back(tmp_path: Path, monkeypatch) -> None:
    failing = threading.Event()
    failing.set()
    real = publisher.finalize_segment

    def finalize(*args, **kw):  # publishing fails (e.g. no room for the Parquet file)
        if failing.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(publisher, "finalize_segment", finalize)
    sink = ParquetSink(tmp_path, "kraken", source="p-1", flush_rows=100, max_queued_rows=200,
                       max_file_bytes=2048, max_publish_waiting=3, journal_interval=0.05,
                       retry_interval=0.05)
    t, done = _producer(sink, 200, 100)  # each chunk fills a segment: one file per chunk
    _wait(lambda: sink._publisher.waiting >= 3, 10, "segments waiting to be published")
    time.sleep(0.5)
    # 3 queued + 1 being retried + the one the writer holds while put() blocks.
    assert sink._publisher.waiting <= 5 and sink._publisher._queue.qsize() <= 3
    assert len(done) < 20 and t.is_alive()
    failing.clear()
    t.join(60)
    assert not t.is_alive() and len(done) == 200
    assert sink.close(60)
    assert _count(tmp_path, "trades") == (20_000, 20_000)
