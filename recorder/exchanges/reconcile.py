"""Own fills the private WebSocket missed, fetched from the exchange's REST history.

Exchange-free machinery the exchanges' private feeds share (each exchange package supplies
how to ask its history and how a history item becomes a ``fills`` row):

- ``FillLedger``: which fills are recorded, by key, and where each came from (the dataset,
  REST history, a subscription snapshot, or a connection's live stream);
- ``Reconciler``: when to read the history and over which span, the reading itself on a
  worker thread (off the receive loop), the rows handed back on the receive loop
  (``Feed.poll``), and one ``events`` row per reconciliation (``fills_reconciled`` or
  ``reconcile_failed``);
- ``recorded_history``: what the data directory already holds: the most recent fill keys
  and where the next reconciliation must start.

The span. Everything before the *cursor* is recorded. A reconciliation reads the history
from the cursor to the moment it starts and, when it succeeds, moves the cursor to that
moment less ``OVERLAP_US`` (a fill in flight when a connection dropped, or clocks a little
apart; de-duplication keeps each fill once). Once a reconciliation after the stream went live
has succeeded, every later fill arrives on the stream, so the cursor follows the clock (less
the overlap) for as long as the stream stays live: a reconnect reads the outage, not what
the stream already delivered. A failed reconciliation leaves the cursor where it was, so its
retry reads the same span. Every reconciliation's events row carries the cursor after it,
and a stop leaves a ``reconcile_stopped`` row with it: a restart continues from the last
one. On a data directory that has none, the cursor is the last recorded fill (less the
overlap), and without any fill the moment the private feed was created: a first run never
reads further back than its own start.

When. After every private (re)connect, ``SETTLE`` seconds after the subscription went live
(Kraken: its snapshot arrived; KuCoin: its acknowledgement), so that the span reaches past
the moment the stream took over: a fill made while the connection was being set up is in
one of the two (if the history lists it within that second). Then every ``INTERVAL``
seconds while connected; with ``rereads`` (KuCoin, whose private topic has no sequence
numbers), that one reads the whole interval again, which catches a push the exchange never
sent. A failed one is an event and is retried with a capped, jittered backoff for as long
as the job runs; it never stops it.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recorder.core.backoff import Backoff
from recorder.core.events import detail, event, short_error
from recorder.core.times import iso_us

log = logging.getLogger("recorder.reconcile")

# How many fills to remember for de-duplication beyond those of the span being reconciled.
REMEMBER = 10_000
# Seconds between reconciliations while connected.
INTERVAL = 900.0
# The next span starts this long before the previous one ended (the history may list a
# fill a moment after the stream sent it; the clocks may differ a little).
OVERLAP_US = 5_000_000
# Seconds between a subscription and the reconciliation it asks for.
SETTLE = 1.0
# Retries after a failure: uniform in [initial, min(cap, initial * 2**n)] seconds.
RETRY_INITIAL = 2.0
RETRY_MAX = 600.0
# Fills read in one go; beyond it the rest is read by the next reconciliation, at once.
MAX_FILLS_PER_RUN = 20_000
# At stop: how long to wait for a reconciliation under way.
WAIT_ON_STOP = 3.0
KINDS = ("fills_reconciled", "reconcile_failed", "reconcile_stopped")

FillKey = tuple[str | None, str | None, str | None]  # symbol, trade_id, order_id


def parse_iso_us(text: str) -> int:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# -- which fills are recorded -------------------------------------------------------------

SEED, REST, SNAPSHOT = "recorded", "rest", "snapshot"


class FillLedger:
    """Fill keys already recorded, each with where it came from: ``SEED`` (the data
    directory), ``REST``, ``SNAPSHOT`` or, for a fill a connection streamed live, that
    connection's number.

    A fill is new the first time any source delivers it, with one exception: a live fill
    that only *another* connection streamed live is new again. Two connections stream at
    once only while one replaces the other (make-before-break); the runtime keeps one copy
    of what both delivered, and if the replacement is given up, the old connection's copy
    is the one recorded. Memory is bounded: the oldest keys are forgotten first.
    """

    def __init__(self, remember: int = REMEMBER) -> None:
        self.remember = self._room = remember
        self._fills: OrderedDict[FillKey, str | int] = OrderedDict()
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._fills)

    def __contains__(self, key: object) -> bool:
        return key in self._fills

    def seed(self, keys: list[FillKey]) -> None:
        # A reconciliation may reach back over every one of them: keep them all, and room
        # for as many new ones as usual.
        self.remember = max(self.remember, len(keys) + self._room)
        for key in keys:
            self._fills[key] = SEED
        self._trim()

    def is_new(self, key: FillKey, source: str | int = SNAPSHOT) -> bool:
        """True the first time ``key`` is seen (and remember it)."""
        known = self._fills.get(key)
        if known is None:
            self._fills[key] = source
            self._trim()
            return True
        self._fills.move_to_end(key)
        if type(source) is int and type(known) is int and known != source:
            return True  # a rotation's overlap: the runtime keeps one of the two copies
        self.duplicates += 1
        return False

    def _trim(self) -> None:
        while len(self._fills) > self.remember:
            self._fills.popitem(last=False)


# -- what the data directory holds ----------------------------------------------------------


@dataclass
class History:
    keys: list[FillKey]  # the most recent fills, oldest first
    last_fill_us: int | None  # the newest recorded fill's ts_exchange
    cursor_us: int | None  # where the last reconciliation left off, if one did
    cursor_from: str  # how the cursor was found (for the events row)


def recorded_history(data_root: Path, exchange: str, limit: int = REMEMBER) -> History:
    """The fills of ``exchange`` under ``data_root`` (Parquet files and journal segments not
    yet finalized) and the cursor of its last reconciliation."""
    import duckdb

    fills: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    kinds = ", ".join(f"'{k}'" for k in KINDS)
    con = duckdb.connect()
    try:
        pattern = _parquet_pattern(data_root, "events", exchange)
        if pattern is not None:
            events += con.execute(
                "SELECT epoch_us(ts_recv), kind, detail FROM read_parquet("
                f"'{pattern}', hive_partitioning = true, union_by_name = true) "
                f"WHERE exchange = ? AND kind IN ({kinds}) ORDER BY ts_recv DESC LIMIT 1",
                [exchange]).fetchall()
        for table in _pending(data_root, "events"):
            con.register("_pending", table)
            events += con.execute(f"SELECT epoch_us(ts_recv), kind, detail FROM _pending "
                                  f"WHERE exchange = ? AND kind IN ({kinds})",
                                  [exchange]).fetchall()
            con.unregister("_pending")
        cursor, source = _cursor(events)
        pattern = _parquet_pattern(data_root, "fills", exchange)
        if pattern is not None:
            source_sql = (f"read_parquet('{pattern}', hive_partitioning = true, "
                          "union_by_name = true)")
            # The newest ``limit`` fills, and every fill the next span reaches back over.
            wanted = limit
            if cursor is not None:
                wanted += con.execute(
                    f"SELECT count(*) FROM {source_sql} WHERE exchange = ? AND "
                    "epoch_us(ts_exchange) >= ?", [exchange, cursor]).fetchone()[0]
            fills += con.execute(
                f"SELECT symbol, trade_id, order_id, epoch_us(ts_exchange) FROM {source_sql} "
                "WHERE exchange = ? ORDER BY ts_exchange DESC NULLS LAST LIMIT ?",
                [exchange, wanted]).fetchall()
        for table in _pending(data_root, "fills"):
            con.register("_pending", table)
            fills += con.execute("SELECT symbol, trade_id, order_id, epoch_us(ts_exchange) "
                                 "FROM _pending WHERE exchange = ?", [exchange]).fetchall()
            con.unregister("_pending")
    finally:
        con.close()
    fills.sort(key=lambda k: k[3] if k[3] is not None else -1)
    last_fill = max((f[3] for f in fills if f[3] is not None), default=None)
    return History([(s, t, o) for s, t, o, _ in fills], last_fill, cursor, source)


def _cursor(events: list[tuple[Any, ...]]) -> tuple[int | None, str]:
    """The cursor the newest reconciliation event left (None: no usable one)."""
    if not events:
        return None, "none"
    _, kind, text = max(events, key=lambda e: e[0])
    try:
        return parse_iso_us(_json(text)["cursor"]), kind
    except (KeyError, TypeError, ValueError):
        return None, "none"


def _json(text: str) -> dict:
    import json

    return json.loads(text)


def _parquet_pattern(data_root: Path, table: str, exchange: str) -> str | None:
    folder = data_root / table / f"exchange={exchange}"
    if not folder.is_dir() or not any(folder.rglob("*.parquet")):
        return None
    return str(folder.resolve() / "**" / "*.parquet").replace("'", "''")


def _pending(data_root: Path, table: str) -> list[Any]:
    try:
        from sinks.journal_readers import pending_batches
    except ImportError:
        return []
    return [t for t in pending_batches(data_root, table) if "exchange" in t.column_names]


# -- the reconciler ---------------------------------------------------------------------------


@dataclass
class Chunk:
    """Part of a span read completely: every fill from the span's start up to ``until_us``
    (history items, as the exchange's ``fetch`` produced them)."""

    fills: list[Any]
    until_us: int
    pages: int = 1


# fetch(since_us, until_us) -> chunks in time order; raises when the history cannot be read.
Fetch = Callable[[int, int], Iterator[Chunk]]
# record(items, ts_recv, rows) -> (new, already recorded): rows appended for the new ones.
Record = Callable[[list[Any], int, dict[str, list[tuple]]], tuple[int, int]]


@dataclass
class _Run:
    trigger: str
    since_us: int
    until_us: int
    started: float
    attempt: int
    connect: int  # the connection it was started for (Reconciler._connects)
    found: int = 0
    new: int = 0
    pages: int = 0
    error: str | None = None
    more: bool = False  # stopped at MAX_FILLS_PER_RUN: the rest follows at once
    done: bool = False
    thread: threading.Thread | None = None
    results: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)


class Reconciler:
    """Reads the REST history of one account's fills and hands missing fills back as rows.

    ``fetch`` runs on a worker thread; ``record``, ``connecting``, ``subscribed`` and
    ``poll`` run on the receive loop. ``source`` names the endpoints in events.
    ``rereads``: the periodic reconciliation reads the whole interval since the previous
    one again (for a stream without sequence numbers, where a lost push shows nowhere
    else), not only what the stream has not covered.
    """

    def __init__(self, exchange: str, source: str, fetch: Fetch, record: Record, *,
                 start_us: int | None = None, interval: float = INTERVAL,
                 overlap_us: int = OVERLAP_US, settle: float = SETTLE,
                 rereads: bool = False,
                 retry: tuple[float, float] = (RETRY_INITIAL, RETRY_MAX),
                 max_fills: int = MAX_FILLS_PER_RUN, wait_on_stop: float = WAIT_ON_STOP,
                 clock: Callable[[], float] = time.monotonic,
                 wall_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.exchange = exchange
        self.source = source
        self.fetch = fetch
        self.record = record
        self.interval = interval
        self.overlap_us = overlap_us
        self.settle = settle
        self.rereads = rereads
        self.max_fills = max_fills
        self.wait_on_stop = wait_on_stop
        self._clock = clock
        self._wall_us = wall_us
        self.backoff = Backoff(*retry)
        # Everything before ``cursor_us`` is recorded; a periodic re-read starts at
        # ``checked_us`` (the end of the last reconciliation, less the overlap).
        self.cursor_us = wall_us() if start_us is None else start_us
        self.checked_us = self.cursor_us
        self.cursor_from = "start"
        self.runs = 0
        self._want: str | None = None  # why a reconciliation is wanted once live
        self._live = False
        # The stream is live and a reconciliation since it went live succeeded: every fill
        # from then on arrives on it, so the cursor follows the clock.
        self._caught_up = False
        self._due: float | None = None
        self._connects = 0
        self._run: _Run | None = None
        self._stopped = False

    # -- set-up ---------------------------------------------------------------------------

    def restore(self, history: History) -> None:
        """Continue where the data directory says the last reconciliation left off."""
        if history.cursor_us is not None:
            self.cursor_us, self.cursor_from = history.cursor_us, history.cursor_from
        elif history.last_fill_us is not None:
            self.cursor_us = history.last_fill_us - self.overlap_us
            self.cursor_from = "last recorded fill"
        self.checked_us = self.cursor_us

    # -- what the private feed tells it -----------------------------------------------------

    def connecting(self) -> None:
        """A private (re)connect is being prepared: reconcile once it is live."""
        self._connects += 1
        self._live = self._caught_up = False
        self._want = "start" if self._connects == 1 else "reconnect"

    def subscribed(self) -> None:
        """The private stream is live: fills from now on arrive on it."""
        self._live = True
        if self._want is not None:
            # A little later: a fill made just before the subscription may reach the
            # history a moment after the stream took over.
            due = self._clock() + self.settle
            if self._due is None or self._due > due:
                self._due = due

    # -- on the receive loop ------------------------------------------------------------------

    def poll(self, rows: dict[str, list[tuple]], stopping: bool = False) -> None:
        try:
            self._poll(rows, stopping)
        except Exception:  # noqa: BLE001 - never a reason to stop recording
            log.exception("fills reconciliation: unexpected failure")
            self._run = None
            self._due = self._clock() + self.backoff.next_delay()

    def _poll(self, rows: dict[str, list[tuple]], stopping: bool) -> None:
        if self._stopped:
            return
        run = self._run
        if run is not None:
            if stopping and run.thread is not None and run.thread.is_alive():
                run.thread.join(self.wait_on_stop)
            self._drain(run, rows)
            if run.done or stopping:
                self._run = None
                if not run.done:
                    run.error = "the job stopped before the history was read"
                self._finish(run, rows)
                if stopping:
                    self._stopped = True
                    return
            else:
                return
        if self._live and self._caught_up:
            self.cursor_us = max(self.cursor_us, self._wall_us() - self.overlap_us)
        if stopping:
            self._stopped = True
            if self._connects:
                # Where the next start continues (the stream covered everything up to here).
                rows["events"].append(event(
                    self.exchange, self._wall_us(), "reconcile_stopped", channel="fills",
                    detail=detail(cursor=iso_us(self.cursor_us), caught_up=self._caught_up,
                                  pending=self._want)))
            return
        if not self._live or self._due is None or self._clock() < self._due:
            return
        self._start()

    def _start(self) -> None:
        now_us = self._wall_us()
        trigger = self._want or "periodic"
        since = min(self.cursor_us, self.checked_us) if self.rereads else self.cursor_us
        run = _Run(trigger, since, max(now_us, since), self._clock(), self.backoff.attempts + 1,
                   self._connects)
        self._run = run
        self._due = None
        run.thread = threading.Thread(target=self._work, args=(run,), daemon=True,
                                      name=f"reconcile-{self.exchange}")
        run.thread.start()

    def _work(self, run: _Run) -> None:
        """On the worker thread: read the history, hand each chunk to the receive loop."""
        found = 0
        try:
            for chunk in self.fetch(run.since_us, run.until_us):
                run.results.put(chunk)
                found += len(chunk.fills)
                if found >= self.max_fills and chunk.until_us < run.until_us:
                    run.results.put("more")
                    break
        except Exception as e:  # noqa: BLE001 - any failure is an event and a retry
            run.results.put(e)
        finally:
            run.results.put(None)

    def _drain(self, run: _Run, rows: dict[str, list[tuple]]) -> None:
        while True:
            try:
                item = run.results.get_nowait()
            except queue.Empty:
                return
            if item is None:
                run.done = True
            elif item == "more":
                run.more = True
            elif isinstance(item, Exception):
                run.error = short_error(item)
            else:
                ts_recv = self._wall_us()
                new, _ = self.record(item.fills, ts_recv, rows)
                run.found += len(item.fills)
                run.new += new
                run.pages += item.pages
                # Everything before the chunk's end is recorded now.
                end = min(item.until_us, run.until_us) - self.overlap_us
                self.cursor_us = max(self.cursor_us, end)
                self.checked_us = max(self.checked_us, end)

    def _finish(self, run: _Run, rows: dict[str, list[tuple]]) -> None:
        self.runs += 1
        ts = self._wall_us()
        took = round(self._clock() - run.started, 3)
        common = dict(trigger=run.trigger, source=self.source, since=iso_us(run.since_us),
                      until=iso_us(run.until_us), found=run.found, new=run.new,
                      already_recorded=run.found - run.new, pages=run.pages, seconds=took)
        first = self.cursor_from if self.runs == 1 else None
        if run.error is None:
            self.backoff.reset()
            if run.more:
                self._want, self._due = "continue", self._clock()
            else:
                end = run.until_us - self.overlap_us
                self.cursor_us = max(self.cursor_us, end)
                self.checked_us = max(self.checked_us, end)
                if run.connect == self._connects:
                    self._want, self._due = None, self._clock() + self.interval
                    self._caught_up = self._live
                else:
                    # A reconnect came while it ran: the new connection needs its own (it
                    # starts once that one is live).
                    self._want = self._want or "reconnect"
                    self._due = self._clock() if self._due is None else self._due
            rows["events"].append(event(
                self.exchange, ts, "fills_reconciled", channel="fills",
                detail=detail(**common, more=run.more or None, cursor=iso_us(self.cursor_us),
                              cursor_from=first)))
            if run.new:
                log.info("fills reconciliation (%s): %d missing fill(s) recorded from %s",
                         run.trigger, run.new, self.source)
            return
        delay = self.backoff.next_delay()
        self._due = self._clock() + delay
        self._want = "retry"
        rows["events"].append(event(
            self.exchange, ts, "reconcile_failed", channel="fills",
            detail=detail(**common, error=run.error, attempt=run.attempt,
                          retry_in_s=round(delay, 3), cursor=iso_us(self.cursor_us),
                          cursor_from=first)))
        log.warning("fills reconciliation failed (attempt %d): %s; retrying in %.0f s",
                    run.attempt, run.error, delay)
