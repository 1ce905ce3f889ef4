"""Trades and candles a gap left out, fetched from the exchange's REST history.

Every gap in a live stream (a connection that ended, a stale one, a collector that crashed
and was restarted, a job stopped and started again) is repaired the same way, lane by lane
(a lane is a symbol's trades, or a symbol's candles of one interval):

- The *lower bound* of a lane's gap is its last row recorded before it (the trades of that
  very microsecond are known by key, so none is recorded twice; the candle then in
  progress is fetched again, its last update before the gap not being its final value).
  After a restart it comes from the data directory; on a data directory with no row of the
  lane there is no gap to repair (a job never reaches back before its own first
  subscription). It is never older than ``max_span`` (the repair then says it is
  incomplete).
- The *upper bound* is the first row the stream delivers after the reconnect. A quiet lane
  whose first live row has not come ``LIVE_WAIT`` seconds after the reconnect is repaired
  up to the moment its fetch starts, and live rows up to then are known by key.
- The history is read on a worker thread, one call at a time at the exchange's pace
  (``min_interval``, shared by every lane and table of the collector), never on the receive
  loop. Its rows come back on the receive loop (``poll``): those inside the span and not
  already recorded are recorded, with ``source = 'rest'``.
- One ``events`` row per repair: ``trades_backfilled`` / ``ohlc_backfilled`` (span, rows
  found, recorded, and ``complete``: false when the history did not reach back to the
  lower bound, as KuCoin's last-100 trade window may not, or the span was cut to
  ``max_span``; ``unrepaired_since``/``unrepaired_until`` then say where rows may be
  missing); ``backfill_failed`` when the history could not be read (retried with backoff
  for as long as the job runs; never a reason to stop); and ``backfill_abandoned`` for a
  repair still pending when the job stops.

Keys. ``TradeHistory.key`` gives a trade the same identity in its live row and its history
row: Kraken's trade id (v2 and REST), KuCoin's sequence, and for Kraken v1 (whose stream
carries no id) time, price, quantity and side. A candle's key is its interval's start.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from recorder.core.backoff import Backoff
from recorder.core.events import detail, event, short_error
from recorder.core.schema import column_index
from recorder.core.times import iso_us
from recorder.exchanges.base import CandleHistory, RateLimited, TradeHistory

log = logging.getLogger("recorder.backfill")

# After a reconnect, how long a symbol's first live trade is waited for (it bounds the span).
LIVE_WAIT = 5.0
# Retries after a failed read: uniform in [initial, min(cap, initial * 2**n)] seconds.
RETRY_INITIAL = 2.0
RETRY_MAX = 120.0
KINDS = ("trades_backfilled", "ohlc_backfilled", "backfill_failed", "backfill_abandoned")


@dataclass(frozen=True)
class Stream:
    """What a backfill repairs: one table's rows, lane by lane, from one history."""

    table: str
    channel: str  # the events rows' channel
    repaired_kind: str  # the events kind of a finished repair
    endpoint: str
    fetch: Callable[[Any, int], Iterable[list[tuple]]]  # (lane, since_us) -> pages
    lane_of: Callable[[tuple], Any]
    time_col: int  # the column placing a row in time
    key: Callable[[tuple], Any]
    ordered: bool
    window: int | None
    min_interval: float
    # The row at the gap's start is fetched again (a candle's last update before the gap
    # is not its final value) rather than known.
    refetch_since: bool = False
    describe: Callable[[Any], tuple[str, dict]] = lambda lane: (lane, {})


def trade_stream(history: TradeHistory) -> Stream:
    return Stream("trades", "trade", "trades_backfilled", history.endpoint, history.fetch,
                  itemgetter(column_index("trades", "symbol")),
                  column_index("trades", "ts_exchange"), history.key,
                  history.ordered, history.window, history.min_interval)


def candle_stream(history: CandleHistory) -> Stream:
    symbol, interval = column_index("ohlc", "symbol"), column_index("ohlc", "interval")
    begin = column_index("ohlc", "interval_begin")
    return Stream("ohlc", "ohlc", "ohlc_backfilled", history.endpoint,
                  lambda lane, since: history.fetch(lane[0], lane[1], since),
                  itemgetter(symbol, interval), begin, lambda r: time_us(r[begin]),
                  True, history.window, history.min_interval, refetch_since=True,
                  describe=lambda lane: (lane[0], {"interval": lane[1]}))


class Pacer:
    """One REST call at a time per ``min_interval`` across the backfills that share it."""

    def __init__(self, min_interval: float, clock: Callable[[], float] = time.monotonic):
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next = -1e18

    def wait(self, stop: threading.Event) -> bool:
        """Block until a call may be made (False: ``stop`` was set first)."""
        while True:
            with self._lock:
                now = self._clock()
                if now >= self._next:
                    self._next = now + self.min_interval
                    return True
                wait = self._next - now
            if stop.wait(wait):
                return False


def time_us(value: Any) -> int:
    """A ``ts_text`` value as adapters hand it in (integer µs, ISO-8601 text, or decimal
    epoch seconds text) as integer µs, digits beyond the microsecond dropped."""
    if value.__class__ is int:
        return value
    text = str(value)
    if "T" in text:
        # Kraken v2's form, 2026-07-07T23:00:03.947173Z: the minute's start is cached.
        minute = _MINUTES.get(text[:16])
        if minute is None:
            if len(_MINUTES) > 10_000:
                _MINUTES.clear()
            d = dt.datetime.fromisoformat(text[:16] + ":00+00:00")
            minute = _MINUTES[text[:16]] = (d - _EPOCH) // dt.timedelta(microseconds=1)
        tail = text[19:]
        if "+" in tail or "-" in tail:  # an offset other than Z
            d = dt.datetime.fromisoformat(text)
            return (d - _EPOCH) // dt.timedelta(microseconds=1)
        seconds, _, frac = text[17:].rstrip("Z").partition(".")
        return minute + int(seconds) * 1_000_000 + int((frac + "000000")[:6])
    seconds, _, frac = text.partition(".")
    return int(seconds) * 1_000_000 + int((frac + "000000")[:6])


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MINUTES: dict[str, int] = {}


# Live rows kept per lane to know, when a gap opens, the newest recorded ones (their time
# and keys): appending to a bounded deque is all a row costs while nothing is missing.
_TAIL = 64


@dataclass
class Gap:
    """One lane's span of missing rows and what is known of its edges."""

    lane: Any
    trigger: str  # reconnect | restart
    since_us: int  # the last row recorded before the gap (or max_span ago)
    since_keys: set  # keys of the rows recorded at since_us
    capped: bool = False  # since_us was moved up to max_span ago
    first_us: int | None = None  # the first live row after the gap
    first_key: Any = None
    live_keys: set = field(default_factory=set)  # live rows the history may list too
    ready_at: float | None = None  # monotonic: repair even without a first live row
    until_us: int | None = None  # the span's end, fixed when a read starts
    attempts: int = 0
    next_try: float = 0.0
    recorded: set = field(default_factory=set)  # keys recorded by this repair
    found: int = 0
    pages: int = 0
    oldest_us: int | None = None  # the oldest row the history returned
    returned: int = 0  # history rows returned, in the span or not
    reached_since: bool = False  # the history reached back to the gap's start
    started: float = 0.0


@dataclass
class _Run:
    gap: Gap
    thread: threading.Thread | None = None
    results: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    retry_after: float = 0.0
    done: bool = False


class Backfiller:
    """Repairs the gaps of one collector's lanes of one table from the exchange's history.

    ``observe`` sees every row of the table before it goes to the sink; ``disconnected``
    and ``connected`` mark the stream's gaps; ``poll`` runs on the receive loop (start due
    work, hand back rows and events). ``fetch`` runs on a worker thread.
    """

    def __init__(self, exchange: str, stream: Stream, lanes: Iterable[Any], *,
                 max_span_us: int, live_wait: float = LIVE_WAIT,
                 retry: tuple[float, float] = (RETRY_INITIAL, RETRY_MAX),
                 pacer: Pacer | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self.exchange = exchange
        self.stream = stream
        self.key = stream.key
        self.lanes = tuple(lanes)
        self.max_span_us = max_span_us
        self.live_wait = live_wait
        self.pacer = pacer or Pacer(stream.min_interval, clock)
        self._clock = clock
        self._wall_us = wall_us
        self._tails: dict[Any, deque] = {lane: deque(maxlen=_TAIL) for lane in self.lanes}
        self._rest_rows = False  # history rows were handed out since the last observe
        self.gaps: list[Gap] = []
        self._waiting: dict[Any, Gap] = {}  # lane -> gap awaiting its first live row
        self._run: _Run | None = None
        self._backoff = Backoff(*retry)
        self._live = False

    # -- what the data directory and the stream say ----------------------------------------

    def restore(self, last_rows: dict[Any, list[tuple]]) -> None:
        """At start: the rows last recorded per lane (the data directory's newest); each
        lane that has some has a gap up to the stream's first row."""
        now = self._wall_us()
        for lane, rows in last_rows.items():
            if lane in self._tails and rows:
                self._tails[lane].extend(rows)
                self._open(lane, "restart", now, rows)

    def observe(self, rows: list[tuple]) -> None:
        """Rows on their way to the sink (live ones and repaired ones)."""
        tails, lane_of = self._tails, self.stream.lane_of
        if self._rest_rows:
            # Repaired rows are older than the live ones around them: they must not push
            # the newest live rows out of a tail (a repaired quiet lane's newest row is
            # known to its repair's span anyway).
            self._rest_rows = False
            for r in rows:
                if r[-1] != "rest":
                    tail = tails.get(lane_of(r))
                    if tail is not None:
                        tail.append(r)
        else:
            for r in rows:
                tail = tails.get(lane_of(r))
                if tail is not None:
                    tail.append(r)
        if self._waiting or self._run is not None:
            self._edges(rows)

    def _edges(self, rows: list[tuple]) -> None:
        """The first live row after a gap, and live rows a running read may list."""
        key, lane_of, col = self.key, self.stream.lane_of, self.stream.time_col
        run_gap = self._run.gap if self._run is not None else None
        for r in rows:
            if r[-1] == "rest":  # ``source``, the last column
                continue
            lane = lane_of(r)
            gap = self._waiting.get(lane)
            if gap is not None and self._live:
                gap.first_us, gap.first_key = time_us(r[col]), key(r)
                gap.live_keys.add(gap.first_key)
                del self._waiting[lane]
            elif run_gap is not None and run_gap.lane == lane:
                bound = run_gap.first_us if run_gap.first_us is not None else run_gap.until_us
                if bound is None or time_us(r[col]) <= bound:
                    run_gap.live_keys.add(key(r))

    def disconnected(self) -> None:
        """The stream ended: every lane has a gap from its last recorded row."""
        self._live = False
        now = self._wall_us()
        for lane in self.lanes:
            if lane in self._waiting:
                continue  # no row since the last gap: that repair's span goes on
            if self._tails[lane]:
                self._open(lane, "reconnect", now)

    def connected(self) -> None:
        """The stream is live again: its first row per lane ends each gap."""
        self._live = True
        ready = self._clock() + self.live_wait
        for gap in self._waiting.values():
            gap.ready_at = ready

    def _open(self, lane: Any, trigger: str, now_us: int,
              rows: list[tuple] | None = None) -> None:
        col, key = self.stream.time_col, self.key
        times = [(time_us(r[col]), r) for r in (rows or self._tails[lane])]
        newest = max(t for t, _ in times)
        gap = Gap(lane, trigger, newest, {key(r) for t, r in times if t == newest})
        floor = now_us - self.max_span_us
        if newest < floor:
            gap.since_us, gap.since_keys, gap.capped = floor, set(), True
        self.gaps.append(gap)
        self._waiting[lane] = gap

    # -- on the receive loop -----------------------------------------------------------------

    def poll(self, rows: dict[str, list[tuple]], stopping: bool = False) -> None:
        try:
            self._poll(rows, stopping)
        except Exception:  # noqa: BLE001 - never a reason to stop recording
            log.exception("%s backfill: unexpected failure", self.stream.table)
            self._run = None

    def _poll(self, rows: dict[str, list[tuple]], stopping: bool) -> None:
        run = self._run
        if run is not None:
            if stopping:
                run.stop.set()
                if run.thread is not None:
                    run.thread.join(2.0)
            self._drain(run, rows)
            if run.done or stopping:
                self._run = None
                self._finish(run, rows, stopping)
        if stopping:
            for gap in self.gaps:
                self._abandoned(gap, rows)
            self.gaps = []
            self._waiting.clear()
            return
        if self._run is None:
            self._start_due()

    def _start_due(self) -> None:
        now = self._clock()
        for gap in self.gaps:
            if now < gap.next_try:
                continue
            if gap.first_us is None and (gap.ready_at is None or now < gap.ready_at):
                continue
            self._start(gap)
            return

    def _start(self, gap: Gap) -> None:
        if gap.first_us is None:
            # A quiet lane: up to now; live rows from here on are known by key.
            gap.until_us = max(self._wall_us(), gap.since_us)
            self._waiting.pop(gap.lane, None)
        else:
            gap.until_us = gap.first_us
        gap.attempts += 1
        gap.started = self._clock()
        run = _Run(gap)
        self._run = run
        run.thread = threading.Thread(target=self._work, args=(run,), daemon=True,
                                      name=f"backfill-{self.exchange}-{self.stream.table}")
        run.thread.start()

    def _work(self, run: _Run) -> None:
        """On the worker thread: read the history page by page, at the exchange's pace."""
        gap = run.gap
        try:
            pages = iter(self.stream.fetch(gap.lane, gap.since_us))
            while self.pacer.wait(run.stop):
                try:
                    page = next(pages)
                except StopIteration:
                    break
                run.results.put(page)
                if not page or self._beyond(gap, page[-1]):
                    break
        except RateLimited as e:
            run.retry_after = e.retry_after
            run.results.put(e)
        except Exception as e:  # noqa: BLE001 - any failure is an event and a retry
            run.results.put(e)
        finally:
            run.results.put(None)

    def _beyond(self, gap: Gap, row: tuple) -> bool:
        """The history has reached the span's end (pages are oldest first)."""
        if self.stream.ordered and gap.first_key is not None:
            return self.key(row) >= gap.first_key
        return time_us(row[self.stream.time_col]) >= gap.until_us

    def _drain(self, run: _Run, rows: dict[str, list[tuple]]) -> None:
        table = self.stream.table
        while True:
            try:
                item = run.results.get_nowait()
            except queue.Empty:
                return
            if item is None:
                run.done = True
            elif isinstance(item, Exception):
                run.error = short_error(item)
            else:
                # Live rows not yet flushed must be known before history rows are judged.
                self._edges(rows[table])
                self._record(run.gap, item, rows[table])

    def _record(self, gap: Gap, page: list[tuple], out: list[tuple]) -> None:
        gap.pages += 1
        key, ordered, col = self.key, self.stream.ordered, self.stream.time_col
        refetch = self.stream.refetch_since
        since_key = max(gap.since_keys) if ordered and gap.since_keys else None
        for r in page:
            ts = time_us(r[col])
            k = key(r)
            gap.returned += 1
            if gap.oldest_us is None or ts < gap.oldest_us:
                gap.oldest_us = ts
            if ordered and since_key is not None:
                if k <= since_key:
                    gap.reached_since = True
                    if k < since_key or not refetch:
                        continue
            elif ts < gap.since_us or (ts == gap.since_us and k in gap.since_keys):
                gap.reached_since = True
                if ts < gap.since_us or not refetch:
                    continue
            if ordered and gap.first_key is not None:
                if k >= gap.first_key:
                    continue
            elif ts > gap.until_us:
                continue
            gap.found += 1
            if k in gap.live_keys or k in gap.recorded:
                continue
            gap.recorded.add(k)
            out.append(r)
            self._rest_rows = True

    def _finish(self, run: _Run, rows: dict[str, list[tuple]], stopping: bool) -> None:
        gap = run.gap
        if run.error is None and run.done and not run.stop.is_set():
            self._backoff.reset()
            self.gaps.remove(gap)
            self._done(gap, rows)
            return
        if stopping:
            return  # the gap is still in self.gaps: abandoned below
        delay = max(self._backoff.next_delay(), run.retry_after)
        gap.next_try = self._clock() + delay
        symbol, extra = self.stream.describe(gap.lane)
        rows["events"].append(event(
            self.exchange, self._wall_us(), "backfill_failed", symbol=symbol,
            channel=self.stream.channel, detail=detail(
                **extra, trigger=gap.trigger, since=iso_us(gap.since_us),
                until=iso_us(gap.until_us), error=run.error or "stopped", attempt=gap.attempts,
                retry_in_s=round(delay, 3), source=self.stream.endpoint)))
        log.warning("%s backfill of %s failed (attempt %d): %s; retrying in %.0f s",
                    self.stream.table, symbol, gap.attempts, run.error, delay)

    def _complete(self, gap: Gap) -> tuple[bool, int | None]:
        """Whether the history covered the whole span, and if not, up to when rows may be
        missing."""
        if gap.capped:
            return False, gap.since_us
        window = self.stream.window
        if window is None or gap.returned < window or gap.reached_since:
            return True, None
        return False, gap.oldest_us

    def _done(self, gap: Gap, rows: dict[str, list[tuple]]) -> None:
        complete, unrepaired = self._complete(gap)
        new = len(gap.recorded)
        symbol, extra = self.stream.describe(gap.lane)
        rows["events"].append(event(
            self.exchange, self._wall_us(), self.stream.repaired_kind, symbol=symbol,
            channel=self.stream.channel, detail=detail(
                **extra, trigger=gap.trigger, since=iso_us(gap.since_us),
                until=iso_us(gap.until_us), found=gap.found, new=new,
                already_recorded=gap.found - new, pages=gap.pages, complete=complete,
                unrepaired_since=iso_us(gap.since_us) if unrepaired is not None else None,
                unrepaired_until=iso_us(unrepaired) if unrepaired is not None else None,
                capped_at_max_span=gap.capped or None, source=self.stream.endpoint,
                attempts=gap.attempts, seconds=round(self._clock() - gap.started, 3))))
        log.info("%s backfill of %s: %d missing row(s) recorded from %s%s",
                 self.stream.table, symbol, new, self.stream.endpoint,
                 "" if complete else " (the history did not reach back to the gap's start)")

    def _abandoned(self, gap: Gap, rows: dict[str, list[tuple]]) -> None:
        end = gap.until_us if gap.until_us is not None else (gap.first_us or self._wall_us())
        symbol, extra = self.stream.describe(gap.lane)
        rows["events"].append(event(
            self.exchange, self._wall_us(), "backfill_abandoned", symbol=symbol,
            channel=self.stream.channel, detail=detail(
                **extra, trigger=gap.trigger, since=iso_us(gap.since_us), until=iso_us(end),
                new=len(gap.recorded), complete=False, unrepaired_since=iso_us(gap.since_us),
                unrepaired_until=iso_us(end), reason="the job stopped first",
                attempts=gap.attempts)))


def backfills_for(feed: Any, exchange: str, max_span_s: float) -> dict[str, Backfiller]:
    """The backfills a feed's histories allow (table -> backfill), sharing one pace."""
    streams = []
    if feed.trade_history is not None and feed.trade_symbols:
        streams.append((trade_stream(feed.trade_history), feed.trade_symbols))
    if feed.candle_history is not None and feed.candle_lanes:
        streams.append((candle_stream(feed.candle_history), feed.candle_lanes))
    if not streams:
        return {}
    pacer = Pacer(max(s.min_interval for s, _ in streams))
    return {s.table: Backfiller(exchange, s, lanes, max_span_us=int(max_span_s * 1_000_000),
                                pacer=pacer) for s, lanes in streams}
