"""A collector's metrics: counted in plain ints, published as a small file for the supervisor.

``recorder run --metrics-port N`` serves one Prometheus endpoint for every collector of the
job (recorder/capture/metrics_server.py). The collectors do not serve anything and do not
use the Prometheus client library: the supervisor hands each one a directory in the
environment (``RECORDER_METRICS_DIR``), and the collector replaces one JSON file there,
``<collector>.<pid>.json``, every ``PUBLISH_SECONDS`` (and at once after a connection event),
with its cumulative counters since the process started. The supervisor sums the files; a
file whose process is gone is folded into that collector's totals and deleted, so a
restarted collector neither resets nor doubles what is served (see docs/operations.md).

Nothing here runs per frame. The receive loop already counts frames (``Collector.frames``)
and bytes (``FrameReader.bytes_received``); the rest is counted where rows are handed to the
sink, every 100 ms (``MeteredSink.write``): rows per table, the events' kinds (gaps,
reconnects, integrity failures), and a few receive-lag samples per table and flush. The
sink's own counters (rows journaled, rows waiting) are read from ``ParquetSink.stats()`` at
publish time.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from recorder.core.schema import GAP_EVENT_KINDS, INTEGRITY_EVENT_KINDS, TABLES, column_index
from recorder.core.secrets import CredentialError

log = logging.getLogger("recorder.metrics")
_encode = msgspec.json.Encoder().encode

METRICS_DIR_ENV = "RECORDER_METRICS_DIR"
FILE_SUFFIX = ".json"
PUBLISH_SECONDS = 0.25
# Receive lag (ts_recv - ts_exchange) buckets, in seconds; negative lags (a local clock behind
# the exchange's) fall in the first one.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
               5.0, 10.0, 30.0, 60.0)
# Rows sampled for the lag histogram per table and flush (evenly spread over the flush).
LAG_SAMPLES = 4
# The clock offset estimate: the smallest lag seen over this many seconds.
OFFSET_WINDOW_SECONDS = 60.0
RECENT_EVENTS = 30
# Events after which the state is published at once (not up to PUBLISH_SECONDS later).
URGENT_EVENTS = frozenset({"connected", "disconnected", "stale", "checksum_mismatch",
                           "sequence_gap", "credentials_refused", "connection_rotated"})
# Market data: a row of these tables means the exchange is delivering.
_NOT_DATA = frozenset({"events", "raw", "book_checkpoints"})
_LAG_TABLES = {t: (column_index(t, "ts_exchange"), column_index(t, "ts_recv"))
               for t, cols in TABLES.items()
               if {"ts_exchange", "ts_recv"} <= {c.name for c in cols}}
_TS_RECV = {t: column_index(t, "ts_recv") for t, cols in TABLES.items()
            if any(c.name == "ts_recv" for c in cols)}
_EV = {name: column_index("events", name) for name in ("ts_recv", "kind", "symbol", "channel",
                                                         "detail")}


def metrics_dir() -> Path | None:
    """The directory the supervisor asked this process to publish into, if any."""
    value = os.environ.get(METRICS_DIR_ENV)
    return Path(value) if value else None


def file_name(key: str, pid: int) -> str:
    return f"{key}.{pid}{FILE_SUFFIX}"


def exchange_time_us(value: Any) -> int | None:
    """``ts_exchange`` as a row carries it (µs int, ISO text, or epoch-seconds text)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        if ":" in value:
            text = value.replace("Z", "+00:00")
            if "." in text:  # fromisoformat takes at most 6 fraction digits
                head, _, rest = text.partition(".")
                digits = len(rest) - len(rest.lstrip("0123456789"))
                text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
            return int(datetime.fromisoformat(text).timestamp() * 1_000_000)
        return int(float(value) * 1_000_000)
    except (TypeError, ValueError):
        return None


class CollectorMetrics:
    """The counters of one collector process (cumulative since it started)."""

    def __init__(self, key: str, exchange: str, role: str, directory: Path | None,
                 clock=time.time) -> None:
        self.key = key
        self.exchange = exchange
        self.role = role
        self.directory = directory
        self.path = directory / file_name(key, os.getpid()) if directory else None
        self.clock = clock
        self.started_at = clock()
        self.collector: Any = None  # set by attach(); read at publish time only
        self.sink: Any = None
        self.rows_handed: dict[str, int] = {}
        self.events: dict[str, int] = {}
        self.reconnects = 0
        self.connections = 0
        self.token_fetches = 0
        self.token_fetch_failures = 0
        self.credentials_refused = 0
        self.token_at: float | None = None  # wall clock of the current connection's token
        self.uses_token = role == "private"
        self.lag_counts: dict[str, list[int]] = {}
        self.lag_sum: dict[str, float] = {}
        self.offsets: deque[tuple[float, float]] = deque()  # (monotonic, min lag s)
        self.last_data_at: float | None = None
        self.recent: deque[list] = deque(maxlen=RECENT_EVENTS)
        self.urgent = False
        self.next_publish = 0.0
        self._bytes_closed = 0  # bytes of readers no longer open
        self._readers: dict[int, tuple[Any, int]] = {}
        self._journaled_total = 0
        self._journal_progress_at = time.monotonic()

    # -- counting (called where rows reach the sink, every ~100 ms) ---------------------

    def rows(self, table: str, rows: list[tuple]) -> None:
        n = len(rows)
        self.rows_handed[table] = self.rows_handed.get(table, 0) + n
        if table == "events":
            self._events(rows)
            return
        if table in _NOT_DATA:
            return
        recv = _TS_RECV.get(table)
        if recv is not None:
            last = rows[-1][recv]
            if isinstance(last, int):
                self.last_data_at = last / 1e6
        cols = _LAG_TABLES.get(table)
        if cols is not None:
            self._sample_lag(table, rows, cols)

    def _sample_lag(self, table: str, rows: list[tuple], cols: tuple[int, int]) -> None:
        ex, recv = cols
        n = len(rows)
        step = max(1, n // LAG_SAMPLES)
        counts = self.lag_counts.get(table)
        if counts is None:
            counts = self.lag_counts[table] = [0] * (len(LAG_BUCKETS) + 1)
            self.lag_sum[table] = 0.0
        low = None
        for i in range(n - 1, -1, -step):  # the newest row first
            row = rows[i]
            t_ex = exchange_time_us(row[ex])
            t_recv = row[recv]
            if t_ex is None or not isinstance(t_recv, int):
                continue
            lag = (t_recv - t_ex) / 1e6
            counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
            self.lag_sum[table] += lag
            low = lag if low is None else min(low, lag)
        if low is not None:
            self.offsets.append((time.monotonic(), low))

    def _events(self, rows: list[tuple]) -> None:
        kind_i, ts_i = _EV["kind"], _EV["ts_recv"]
        for row in rows:
            kind = row[kind_i]
            self.events[kind] = self.events.get(kind, 0) + 1
            if kind == "connected":
                self.connections += 1
                if self.connections > 1:
                    self.reconnects += 1
            if kind in URGENT_EVENTS:
                self.urgent = True
            detail = row[_EV["detail"]]
            self.recent.append([row[ts_i], kind, row[_EV["symbol"]], row[_EV["channel"]],
                                detail[:300] if isinstance(detail, str) else None])

    def prepared(self, plan: Any) -> None:
        """A connection was prepared (the exchange's hook ran)."""
        if self.uses_token or getattr(plan, "raw_records", None):
            self.uses_token = True
            self.token_fetches += 1
            self.token_at = self.clock()

    def prepare_failed(self, error: BaseException, credentials: bool) -> None:
        # Only a token or bullet fetch (REST) can make ``prepare`` fail.
        if credentials:
            self.credentials_refused += 1
        else:
            self.token_fetch_failures += 1
        self.urgent = True

    # -- publishing ---------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return self.urgent or now >= self.next_publish

    def snapshot(self) -> dict:
        """Everything the supervisor serves for this process, as JSON-able data."""
        now = self.clock()
        mono = time.monotonic()
        c = self.collector
        stats = self.sink.stats() if self.sink is not None else {}
        journaled = dict(stats.get("rows_journaled") or {})
        total = sum(journaled.values())
        pending = int(stats.get("pending_rows") or 0)
        if total != self._journaled_total or not pending:
            self._journaled_total = total
            self._journal_progress_at = mono
        while self.offsets and mono - self.offsets[0][0] > OFFSET_WINDOW_SECONDS:
            self.offsets.popleft()
        conn = getattr(c, "conn", None)
        last_frame = getattr(conn, "last_frame", None) if conn is not None else None
        frames = getattr(c, "frames", 0) if c is not None else 0
        connected = bool(c is not None and getattr(c, "ws", None) is not None)
        events = self.events
        return {
            "v": 1, "key": self.key, "pid": os.getpid(), "exchange": self.exchange,
            "role": self.role, "started_at": self.started_at, "published_at": now,
            "counters": {
                "messages": frames, "bytes": self._bytes(c),
                "reconnects": self.reconnects,
                "gaps": sum(events.get(k, 0) for k in GAP_EVENT_KINDS),
                "resyncs": getattr(c, "resyncs", 0) if c is not None else 0,
                "rotations": getattr(c, "rotations", 0) if c is not None else 0,
                "token_fetches": self.token_fetches,
                "token_fetch_failures": self.token_fetch_failures,
                "credentials_refused": self.credentials_refused,
                "sink_blocked_seconds": float(stats.get("blocked_seconds") or 0.0),
            },
            "rows": journaled,
            "rows_handed": dict(self.rows_handed),
            "integrity": {k: events[k] for k in INTEGRITY_EVENT_KINDS if k in events},
            "events": dict(events),
            "sink_problems": dict(stats.get("problems") or {}),
            "lag": {t: {"buckets": list(v), "sum": self.lag_sum[t]}
                    for t, v in self.lag_counts.items()},
            "gauges": {
                "connected": connected,
                "conn_id": getattr(c, "conn_id", None) if c is not None else None,
                "url": getattr(c, "url", None) if c is not None else None,
                "last_message_at": (now - (mono - last_frame)
                                    if last_frame is not None and frames else None),
                "last_data_at": self.last_data_at,
                "token_at": self.token_at if self.uses_token else None,
                "clock_offset_s": (min(v for _, v in self.offsets) if self.offsets
                                   else None),
                "journal_pending_rows": pending,
                "journal_lag_s": round(mono - self._journal_progress_at, 3) if pending else 0.0,
                "queued_rows": int(stats.get("queued_rows") or 0),
                # Storing to an object store: the oldest finished file still in the spool.
                "upload_lag_s": _upload_lag(stats.get("upload"), now),
                "spool_bytes": (int((stats.get("upload") or {}).get("waiting_bytes") or 0)
                                if stats.get("upload") is not None else None),
                "books_verified": (getattr(c.books, "verified", None)
                                   if c is not None and hasattr(c, "books") else None),
            },
            "recent_events": list(self.recent),
        }

    def _bytes(self, c: Any) -> int:
        """Wire bytes received: the open readers' counts plus those of closed ones (a reader
        that closed between two publishes keeps the count of its last publish)."""
        readers = {}
        for conn in (getattr(c, "conn", None), getattr(c, "_rotation", None)):
            reader = getattr(conn, "reader", None)
            if reader is not None:
                readers[id(reader)] = reader
        for rid, (_reader, seen) in list(self._readers.items()):
            if rid not in readers:
                self._bytes_closed += seen
                del self._readers[rid]
        total = self._bytes_closed
        for rid, reader in readers.items():
            seen = int(getattr(reader, "bytes_received", 0))
            self._readers[rid] = (reader, seen)
            total += seen
        return total

    def publish(self, final: bool = False) -> None:
        self.urgent = False
        self.next_publish = time.monotonic() + PUBLISH_SECONDS
        if self.path is None:
            return
        snap = self.snapshot()
        snap["final"] = final
        try:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_bytes(_encode(snap))
            os.replace(tmp, self.path)
        except OSError as e:  # metrics must never stop the recording
            log.debug("cannot publish metrics to %s: %s", self.path, e)


class MeteredSink:
    """The collector's sink, counted: ``write``/``tick``/``close`` pass through and feed
    ``CollectorMetrics``; publishing happens on ``tick`` (every flush) when due."""

    def __init__(self, sink: Any, metrics: CollectorMetrics) -> None:
        self.inner = sink
        self.metrics = metrics
        metrics.sink = sink

    def write(self, table: str, rows: list[tuple]) -> None:
        self.inner.write(table, rows)
        if rows:
            self.metrics.rows(table, rows)

    def tick(self) -> None:
        self.inner.tick()
        m = self.metrics
        if m.urgent or time.monotonic() >= m.next_publish:
            m.publish()

    def close(self, timeout: float | None = None) -> bool:
        ok = self.inner.close(timeout=timeout)
        self.metrics.publish(final=True)
        return ok

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def instrument(sink: Any, feed: Any, key: str, exchange: str, role: str,
               directory: Path | None = None) -> tuple[Any, CollectorMetrics | None]:
    """Count what ``sink`` and ``feed`` do, when the supervisor asked for metrics (the
    environment names a directory); otherwise change nothing."""
    directory = directory or metrics_dir()
    if directory is None:
        return sink, None
    metrics = CollectorMetrics(key, exchange, role, directory)
    prepare = feed.prepare

    def counted_prepare() -> Any:
        try:
            plan = prepare()
        except CredentialError as e:
            metrics.prepare_failed(e, credentials=True)
            raise
        except Exception as e:
            metrics.prepare_failed(e, credentials=False)
            raise
        metrics.prepared(plan)
        return plan

    feed.prepare = counted_prepare
    return MeteredSink(sink, metrics), metrics


def attach(metrics: CollectorMetrics | None, collector: Any) -> None:
    if metrics is not None:
        metrics.collector = collector
        metrics.publish()


def read_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _upload_lag(upload: dict | None, now: float) -> float | None:
    """Seconds the oldest finished file has waited in the spool (0: none waits); None when
    the data is not stored in an object store."""
    if upload is None:
        return None
    oldest = upload.get("oldest_waiting_at")
    return round(max(0.0, now - oldest), 3) if oldest else 0.0
