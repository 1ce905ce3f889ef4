"""One collector = one subscription set kept on one live connection for as long as the job runs.

The connection lifecycle lives here and only here, for every exchange: prepare (the
exchange's hook, which may fetch a token over REST), connect, wait for the exchange's ready
signal, subscribe, receive, stamp ``ts_recv``, hand frames to the exchange's parser, keep the
books verified by the exchange's integrity rule, resync one symbol (by WebSocket requests or
a REST snapshot fetched off the receive loop), ping at the exchange's cadence with a pong
deadline, watch for a stale connection, replace an old connection before the exchange cuts
it (make-before-break), reconnect with capped exponential backoff and jitter, and record
every disconnect and reconnect in ``events`` so each gap has a start and an end. Exchange
packages only describe the exchange (recorder/exchanges/base.py).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import websocket

from recorder.capture import wsclient
from recorder.capture.backfill import backfills_for
from recorder.capture.book import BookKeeper
from recorder.capture.redundancy import RecentKeys
from recorder.capture.resync import PendingResync, ResyncTracker
from recorder.capture.wsclient import ConnectionClosed, FrameReader, ProtocolError
from recorder.core.backoff import Backoff
from recorder.core.events import detail, event, new_rows, short_error, with_conn_id
from recorder.core.schema import TABLES, column_index
from recorder.core.secrets import CredentialError
from recorder.core.times import iso_us
from recorder.exchanges.base import ConnectPlan, Feed, IntegrityFailure

log = logging.getLogger("recorder.collector")

# How often the receive loop wakes up when no frame arrives, to tick the sink, send pings
# and notice a stop request or a stale connection.
_POLL_SECONDS = 0.2
_FLUSH_SECONDS = 0.1
_HEARTBEAT_SECONDS = 5.0
# The exchange refusing the key this many times in a row when (re)connecting means the key
# was revoked or lost its permission: the collector stops with ``failure`` set instead of
# retrying forever (a single refusal may be the exchange's own hiccup).
CREDENTIAL_REFUSALS_FATAL = 3
# A replacement connection that has not had every subscription acknowledged by then is
# given up (the old one goes on; the rotation is tried again later).
_ROTATION_TIMEOUT = 30.0
_ROTATION_RETRY = 60.0
# After a switch, rows identical to what the old connection delivered last are dropped for
# this long: the new connection may deliver its copies a moment after the old one.
_SETTLE_SECONDS = 3.0
# Both connections are read for this long after the replacement's last acknowledgement
# before the switch: a trade the exchange sent the old connection just before it
# subscribed the new one may reach us after the new one's acknowledgement (two TCP
# connections, maybe two servers). The old one's rows of that time are recorded; the new
# one's copies are dropped at the switch.
_OVERLAP_SECONDS = 1.5
# Tables whose rows a rotation's overlap may deliver twice; a row's content without its
# receive time tells the copies apart. (Book rows are not among them: the new connection's
# rows start with a snapshot, which replaces the book.)
_DEDUPED_TABLES = ("trades", "spread", "ohlc", "ticker", "fills", "orders")
_TS_RECV = {t: column_index(t, "ts_recv") for t in _DEDUPED_TABLES}
_BOOK_UPDATE_ID = column_index("book", "update_id")
_MALFORMED = (msgspec.DecodeError, KeyError, IndexError, TypeError, ValueError,
              AttributeError)


def _content(table: str, row: tuple) -> tuple:
    i = _TS_RECV[table]
    return row[:i] + row[i + 1:]


@dataclass
class _Conn:
    """One live connection and its per-connection state."""

    conn_id: int
    plan: ConnectPlan
    ws: websocket.WebSocket
    reader: FrameReader
    parse: Any
    books: BookKeeper
    rows: dict[str, list[tuple]]
    opened: float
    ready: bool = False
    acks: int = 0
    acked_at: float | None = None  # when the last expected acknowledgement arrived
    last_frame: float = 0.0
    last_ping: float = 0.0
    pong_due: float | None = None
    frames: int = 0
    # Requests waiting for the exchange's uplink limit (see ConnectPlan).
    outbox: list[str] = field(default_factory=list)
    next_send: float = 0.0
    extra: dict = field(default_factory=dict)


class Collector:
    """Record one connection of a config until stopped or ``duration`` elapses."""

    def __init__(self, config: Any, sink: Any, feed: Feed, *,
                 duration: float | None = None, heartbeat_path: Path | None = None,
                 mirror_feed: Feed | None = None) -> None:
        self.config = config
        self.sink = sink
        self.feed = feed
        self.adapter = feed  # the name earlier versions used
        self.exchange = feed.exchange
        self.url = feed.url
        self.duration = duration
        self.stop_event = threading.Event()
        self.backoff = Backoff(config.backoff_initial, config.backoff_max)
        self.conn_id = 0
        self._conn_seq = 0  # ids handed out: a replacement opens while conn_id records
        # update_id groups the rows of one message; seeding it with the start time in µs
        # keeps it unique and increasing across restarts of the process.
        self.update_id = time.time_ns() // 1000 * 1000
        self.frames = 0
        self.ws: websocket.WebSocket | None = None
        self.conn: _Conn | None = None
        self.rows = new_rows()
        self.books = BookKeeper(feed.book_rule)
        self.resyncs = 0
        self.rotations = 0
        self.pending_resyncs = ResyncTracker(config.resync_timeout, config.resync_attempts,
                                             config.backoff_initial, config.backoff_max)
        # `recorder status` reads this file to tell a connected collector from a stuck one
        # and to show the sink's trouble (a full disk) next to the data's age.
        self.heartbeat_path = heartbeat_path
        self._next_heartbeat = 0.0
        self._reqid = 1000
        self.failure: str | None = None  # why the collector gave up, for a non-zero exit
        self._refusals = 0
        # Book checkpoints are taken at flush time, between frames, never per frame.
        self._checkpoint_every = config.book_checkpoint_seconds
        self._next_checkpoint = time.monotonic() + self._checkpoint_every
        self.max_age = float(getattr(config, "max_connection_age", 0) or 0)
        # REST snapshots are fetched on worker threads; their answers come back here and
        # are parsed on the receive loop like frames.
        self._snapshots: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: ThreadPoolExecutor | None = None
        self._rotation: _Conn | None = None
        self._next_rotation_try = 0.0
        # Rows the old connection delivered while its replacement opened (see _switch).
        self._overlap_seen: dict[str, list[tuple]] = {}
        # After a switch, the new connection may still deliver, a moment later, rows the
        # old one delivered last: they are dropped until then (see _flush).
        self._settling: set | None = None
        self._settle_until = 0.0
        self._late_duplicates = 0
        # Trades and candles a gap left out, repaired from the exchange's REST history
        # (backfill.py): table -> its backfill.
        self.backfills = backfills_for(feed, self.exchange, getattr(
            config, "backfill_max_span", 86_400))
        # [connection] redundancy = 2: a second connection for the trades (redundancy.py).
        self.mirror_feed = mirror_feed
        self.mirror: _Conn | None = None
        self._mirror_next_try = 0.0
        self._mirror_backoff = Backoff(config.backoff_initial, config.backoff_max)
        self._recent = RecentKeys(partial(_content, "trades")) if mirror_feed is not None \
            else None
        self._trades_live = False
        # While the recorded connection is down and the mirror carries the trades alone.
        self._covering: dict | None = None

    # -- public -----------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        # The receive loop creates a tuple per row: hundreds of thousands a second. With
        # the default thresholds the cyclic GC runs a young collection every 700 of them
        # and rescans what is alive; the modules loaded so far never become garbage. Rows
        # live until the sink has converted them to Arrow (a tenth of a second or so): a
        # young generation that large lets most of them die before a collection looks.
        gc.freeze()
        gc.set_threshold(300_000, 50, 100)
        deadline = time.monotonic() + self.duration if self.duration else None
        try:
            while not self.stop_event.is_set():
                if deadline and time.monotonic() >= deadline:
                    break
                gap_started = self._connection(deadline)
                if self.stop_event.is_set() or (deadline and time.monotonic() >= deadline):
                    break
                delay = self.backoff.next_delay()
                if deadline:
                    delay = min(delay, max(0.0, deadline - time.monotonic()))
                log.warning("reconnecting in %.1f s", delay)
                self._event("reconnect_wait", detail(delay_s=round(delay, 3),
                                                     gap_started_us=gap_started))
                self._wait(delay)
        finally:
            self._close_mirror(None)
            if self.feed.poll is not None:
                try:
                    self.feed.poll(self.rows, True)
                except Exception:  # noqa: BLE001 - stopping must finish the files anyway
                    log.exception("the feed's last poll failed")
            for bf in self.backfills.values():
                bf.poll(self.rows, stopping=True)
            self._flush()
            if self._workers is not None:
                self._workers.shutdown(wait=False, cancel_futures=True)
            # Bounded, so a broken disk cannot keep SIGTERM from ending the process.
            if not self.sink.close(timeout=4.0):
                log.error("the sink could not finish every file in time; the journal keeps "
                          "the rows and the next start recovers them")

    # -- opening a connection ---------------------------------------------------------

    def _open(self, rows: dict[str, list[tuple]], *, replacing: bool = False,
              feed: Feed | None = None) -> _Conn | str:
        """Prepare (the exchange's hook) and connect; a _Conn, or why it failed. A
        replacement (``replacing``) or a redundant connection (``feed``) leaves ``conn_id``,
        the recorded connection's, alone."""
        feed = feed or self.feed
        self._conn_seq += 1
        if not replacing and feed is self.feed:
            self.conn_id = self._conn_seq
        try:
            plan = feed.prepare()
            self._refusals = 0
        except CredentialError as e:
            self._credentials_refused(e)
            return f"credentials refused: {short_error(e)}"
        except Exception as e:  # noqa: BLE001 - e.g. a token fetch failed: retry later
            self._event("connect_failed", detail(url=self.url, error=short_error(e)))
            log.warning("cannot prepare the connection to %s: %s", self.url, short_error(e))
            return short_error(e)
        url = plan.url
        try:
            ws = wsclient.connect(url, timeout=10)
        except Exception as e:  # noqa: BLE001 - any failure to connect means: retry later
            self._event("connect_failed", detail(url=_safe_url(url), error=short_error(e)))
            log.warning("cannot connect to %s: %s", _safe_url(url), short_error(e))
            return short_error(e)
        reader = FrameReader(ws)
        now = time.monotonic()
        conn = _Conn(self._conn_seq, plan, ws, reader, plan.parse or feed.parse,
                     BookKeeper(feed.book_rule), rows, now, last_frame=now, last_ping=now)
        if self.config.raw:
            ts = time.time_ns() // 1000
            for endpoint, text in plan.raw_records:
                rows["raw"].append((self.exchange, ts, conn.conn_id, endpoint, text))
        for table, prepared in plan.rows.items():
            rows[table].extend(prepared)
        if plan.ready_kind is None:
            try:
                self._subscribe(conn)
            except (OSError, websocket.WebSocketException) as e:
                # Closed by the server between the handshake and the last request.
                reader.close(timeout=0.1)
                self._event("connect_failed", detail(url=_safe_url(url),
                                                     error=f"while subscribing: {short_error(e)}"))
                log.warning("connection to %s closed while subscribing: %s", _safe_url(url),
                            short_error(e))
                return short_error(e)
        return conn

    def _subscribe(self, conn: _Conn) -> None:
        conn.ready = True
        conn.outbox.extend(conn.plan.requests)
        self._send_due(conn, time.monotonic())

    def _send_due(self, conn: _Conn, now: float) -> None:
        """Send queued requests, no faster than the exchange's uplink limit."""
        rate = conn.plan.max_messages_per_second
        outbox = conn.outbox
        if not rate:
            for req in outbox:
                conn.ws.send(req)
            outbox.clear()
            return
        while outbox and now >= conn.next_send:
            conn.ws.send(outbox.pop(0))
            conn.next_send = max(conn.next_send, now - 1.0) + 1.0 / rate

    # -- one connection ---------------------------------------------------------------

    def _connection(self, deadline: float | None) -> int | None:
        """Connect, subscribe and receive until the connection ends; return when it ended."""
        opened = self._open(self.rows)
        if isinstance(opened, str):
            return None
        conn = opened
        self._adopt(conn)
        log.info("connected to %s (connection %d)", _safe_url(conn.plan.url), conn.conn_id)
        self._event("connected", detail(url=_safe_url(conn.plan.url),
                                        attempt=self.backoff.attempts))
        self._stream_live(primary=True)
        self.pending_resyncs.clear()
        reason = "closed"
        try:
            reason = self._receive(deadline)
        except (ConnectionClosed, websocket.WebSocketConnectionClosedException):
            reason = "closed by peer without a close frame"
        except (OSError, websocket.WebSocketException, ProtocolError) as e:
            reason = f"error: {short_error(e)}"
        finally:
            ended = time.time_ns() // 1000
            conn = self.conn
            self.ws = None
            self._next_heartbeat = 0.0
            if conn is not None:
                conn.reader.close(timeout=0.5)
            stopping = self.stop_event.is_set() or (deadline and time.monotonic() >= deadline)
            if stopping:
                self._drop_rotation()  # not a failure: the job ends
            else:
                self._abandon_rotation("the connection it was to replace ended")
        self._flush()
        if not stopping:
            self._stream_live(primary=False)
        kind = "stopped" if stopping else "disconnected"
        self._event(kind, detail(reason=reason, frames=self.frames))
        if not stopping:
            log.warning("connection %d ended: %s", self.conn_id, reason)
        return ended

    def _adopt(self, conn: _Conn) -> None:
        """Make ``conn`` the connection whose rows are recorded."""
        self.conn = conn
        self.conn_id = conn.conn_id
        self.ws = conn.ws
        self.books = conn.books
        self.url = _safe_url(conn.plan.url)
        self._next_heartbeat = 0.0  # say so at the next flush, not up to 5 s later
        self._next_rotation_try = conn.opened + self.max_age if self.max_age else 0.0

    def _receive(self, deadline: float | None) -> str:
        """Receive until the connection should end; return why."""
        stop = self.stop_event
        started = last_flush = time.monotonic()
        timeout = None
        while True:
            conn = self.conn
            reader = conn.reader
            # While a replacement opens, wake up often enough to read it too.
            wanted = _POLL_SECONDS if self._rotation is None and self.mirror_feed is None \
                else 0.02
            if wanted != timeout or conn.extra.get("timeout") != wanted:
                reader.settimeout(wanted)
                timeout = conn.extra["timeout"] = wanted
            try:
                frames = reader.read()
            except TimeoutError:
                now = time.monotonic()
                why = self._tick(conn, now, deadline)
                if why:
                    return why
                last_flush = now
                continue
            # Frames that arrived in one read share the time they were read off the socket.
            ts_recv = time.time_ns() // 1000
            why = self._frames(conn, frames, ts_recv)
            if why:
                return why
            if reader.close_frame is not None:
                code, text = reader.close_frame
                return f"closed by peer (code {code}{': ' + text if text else ''})"
            now = time.monotonic()
            conn.last_frame = now
            if self.backoff.attempts and now - started > 5:
                self.backoff.reset()
            if now - last_flush > _FLUSH_SECONDS:
                if stop.is_set():
                    return "stop requested"
                why = self._tick(conn, now, deadline)
                if why:
                    return why
                last_flush = now

    def _tick(self, conn: _Conn, now: float, deadline: float | None) -> str | None:
        """Between frames: stop, staleness, pings, resyncs, rotation, flush."""
        if self.stop_event.is_set():
            return "stop requested"
        if deadline and now >= deadline:
            return "duration reached"
        why = self._watch(conn, now)
        if why:
            self._event("stale", detail(silent_s=round(now - conn.last_frame, 3),
                                        reason=why))
            return why
        self._drain_snapshots()
        if self.feed.poll is not None:
            self.feed.poll(self.rows, False)  # e.g. fills reconciled from REST history
        for bf in self.backfills.values():
            bf.poll(self.rows)
        if self.pending_resyncs.pending:
            failed = self._drive_resyncs(conn.ws, now)
            if failed:
                return failed
        if self.max_age:
            self._drive_rotation(now)
        if self.mirror_feed is not None:
            self._drive_mirror(now)
        self._flush()
        return None

    def _watch(self, conn: _Conn, now: float) -> str | None:
        """Why the connection is dead (no frames, no pong, no welcome), or None; sends the
        ping that is due."""
        plan = conn.plan
        if not conn.ready:
            if now - conn.opened > plan.ready_timeout:
                return f"no {plan.ready_kind} within {plan.ready_timeout:.0f} s"
            return None
        if now - conn.last_frame > self.config.stale_after:
            return f"stale: no frame for {now - conn.last_frame:.1f} s"
        if conn.pong_due is not None and now > conn.pong_due:
            return f"no pong within {plan.pong_timeout:.1f} s"
        if conn.outbox:
            self._send_due(conn, now)
        ping_every = plan.ping_interval or self.config.ping_interval
        if plan.ping_interval:
            # The exchange's cadence may be slower than our stale watchdog (KuCoin: 18 s):
            # its pongs keep a quiet connection from looking stale, two per stale period.
            ping_every = min(ping_every, self.config.stale_after / 2)
        if now - conn.last_ping > ping_every:
            ping = self.feed.ping(int(now))
            if ping:
                conn.ws.send(ping)
                if plan.pong_timeout and conn.pong_due is None:
                    conn.pong_due = now + plan.pong_timeout
            conn.last_ping = now
        return None

    def _frames(self, conn: _Conn, frames: list[bytes], ts_recv: int) -> str | None:
        """Parse one read's frames into ``conn.rows``; why to reconnect, or None."""
        rows = conn.rows
        decode, parse = self.feed.decode, conn.parse
        raw = self.config.raw
        books = conn.books
        book_rows = rows["book"]
        conn_id = conn.conn_id
        endpoint = self.url
        exchange = self.exchange
        # The message counter lives in a local while frames are parsed (an attribute
        # update per frame is measurable at full speed); it is written back before
        # anything that reads or advances it runs.
        uid = self.update_id
        self.frames += len(frames)
        for data in frames:
            uid += 1
            if raw:
                rows["raw"].append((exchange, ts_recv, conn_id, endpoint,
                                    data.decode("utf-8", "replace")))
            book_start = len(book_rows)
            try:
                control = parse(decode(data), ts_recv, uid, rows)
                if len(book_rows) > book_start:
                    failures = books.process(book_rows, book_start)
                    if failures or books.snapshots:
                        self.update_id = uid
                        if failures:
                            if conn is self.conn:
                                self._resync(conn.ws, failures, ts_recv)
                            else:
                                self._failed_while_opening(conn, failures, ts_recv)
                        if books.snapshots:
                            self._snapshotted(conn, ts_recv)
            except _MALFORMED as e:
                rows["events"].append(event(
                    exchange, ts_recv, "malformed", conn_id=conn_id,
                    detail=detail(error=short_error(e),
                                  frame=data[:300].decode("utf-8", "replace"))))
                continue
            if control is not None:
                self.update_id = uid
                why = self._control(conn, control, ts_recv)
                uid = self.update_id
                if why:
                    return why
        self.update_id = uid
        return None

    def _control(self, conn: _Conn, control: Any, ts_recv: int) -> str | None:
        kind = control.kind
        if kind == "heartbeat":
            return None
        if kind == "pong":
            conn.pong_due = None
            return None
        if not conn.ready and kind == conn.plan.ready_kind:
            self._subscribe(conn)
            return None
        if kind == "subscribed":
            conn.acks += 1
            if conn is self.conn and conn.acks == conn.plan.acks_expected and \
                    self.mirror_feed is not None:
                self._stream_live()  # the recorded connection carries the trades again
            return None
        feed = self.feed
        if kind == "status":
            if control.value != "online":
                conn.extra["offline"] = True
            elif conn.extra.pop("offline", False):
                # Back from maintenance: books and streams may have moved on while the
                # engine was down, so start over with fresh snapshots.
                return "status back online after maintenance"
        elif kind == "resubscribe":
            # e.g. a private sequence gap: a new subscription brings a new snapshot.
            return f"resubscribe: {control.value}"
        elif kind in ("snapshot_needed", "resync"):
            # The exchange's parser knows the book needs a (fresh) snapshot: the first one
            # of a symbol synced by sequence, or after a sequence gap it recorded.
            if conn is self.conn:
                if kind == "resync":
                    self.resyncs += 1
                self._begin_resync(conn.ws, control.symbol, now=time.monotonic(),
                                   why=control.value or kind)
            elif control.symbol is not None:
                # A replacement still opening: its books get their snapshots once it is the
                # recorded connection (its parser buffers their updates until then).
                conn.extra.setdefault("snapshots_wanted", {})[control.symbol] = (
                    control.value or kind)
        elif kind in ("subscribe_error", "error"):
            if kind == "subscribe_error":
                log.warning("subscription refused: %s %s: %s", control.channel or "",
                            control.symbol or "", control.value)
            if feed.session_invalid(control.value):
                # The token was refused: reconnect, which fetches a fresh one.
                return "invalid session"
            # Kraken v1 refuses a rate-limited subscribe with a bare error naming the reqid.
            if self.pending_resyncs.pending and self._resync_refused(
                    control.extra.get("reqid"), control.value, ts_recv):
                return None
            if feed.refused_for_now(control.value):
                # A subscription of this connection refused by a rate limit or a busy
                # engine would stay silent until the next reconnect: make it now, after the
                # backoff, which sends every subscription again.
                return f"subscription refused for now: {control.value}"
        return None

    # -- resyncs ----------------------------------------------------------------------

    def _resync(self, ws: Any, failures: list[IntegrityFailure], ts_recv: int) -> None:
        """Fetch a fresh snapshot of each failed symbol only; the rest keeps flowing."""
        now = time.monotonic()
        for f in failures:
            self.resyncs += 1
            self.rows["events"].append(event(
                self.exchange, ts_recv, f.kind, symbol=f.symbol, channel="book",
                conn_id=self.conn_id,
                detail=detail(**f.detail, update_id=f.update_id, resyncs=self.resyncs)))
            log.warning("book %s on %s (%s): resyncing", f.kind.replace("_", " "), f.symbol,
                        ", ".join(f"{k} {v}" for k, v in f.detail.items()))
            self._begin_resync(ws, f.symbol, now)

    def _failed_while_opening(self, conn: _Conn, failures: list[IntegrityFailure],
                              ts_recv: int) -> None:
        """A replacement still opening found a book wrong: the event now, with its own rows,
        and the resync once it is the recorded connection (see _switch)."""
        for f in failures:
            conn.rows["events"].append(event(
                self.exchange, ts_recv, f.kind, symbol=f.symbol, channel="book",
                conn_id=conn.conn_id, detail=detail(**f.detail, update_id=f.update_id)))
            conn.extra.setdefault("snapshots_wanted", {})[f.symbol] = "mismatch"

    def _begin_resync(self, ws: Any, symbol: str | None, now: float,
                      why: str = "mismatch") -> None:
        if symbol is None:
            return
        depth = (self.feed.book_depths.get(symbol) or self.books.depth_of(symbol) or 0)
        entry = self.pending_resyncs.begin(symbol, depth, now)
        if not entry.attempts:  # a resync already under way goes on at its own pace
            entry.why = why
            self._send_resync(ws, entry, now)

    def _drive_resyncs(self, ws: Any, now: float) -> str | None:
        """Send the resync requests whose time has come; a reason to reconnect when a
        symbol has used up its attempts."""
        tracker = self.pending_resyncs
        for entry in tracker.due(now):
            if tracker.exhausted(entry):
                self._event("resync_failed", detail(attempts=entry.attempts, last=entry.why),
                            entry.symbol, "book")
                log.warning("no fresh %s book after %d resync attempts: reconnecting",
                            entry.symbol, entry.attempts)
                return f"resync of {entry.symbol} failed after {entry.attempts} attempts"
            if entry.attempts:
                self._event("resync_retry", detail(attempt=entry.attempts + 1, after=entry.why),
                            entry.symbol, "book")
            self._send_resync(ws, entry, now)
        return None

    def _send_resync(self, ws: Any, entry: PendingResync, now: float) -> None:
        feed = self.feed
        if feed.book_resync is not None:
            # Two ids: the unsubscribe's and the subscribe's (reqid + 1), which a refusal
            # names.
            self._reqid += 2
            for req in feed.book_resync(entry.symbol, entry.depth, self._reqid):
                ws.send(req)
            self.pending_resyncs.sent(entry, self._reqid + 1, now)
        elif feed.fetch_snapshot is not None:
            self._reqid += 1
            self.pending_resyncs.sent(entry, self._reqid, now)
            if self._workers is None:
                self._workers = ThreadPoolExecutor(2, thread_name_prefix="snapshot")
            self._workers.submit(self._fetch_snapshot, entry.symbol, entry.depth,
                                 self.conn_id, self._reqid)

    def _fetch_snapshot(self, symbol: str, depth: int, conn_id: int, reqid: int) -> None:
        """On a worker thread: the REST snapshot, handed back to the receive loop."""
        try:
            endpoint, text = self.feed.fetch_snapshot(symbol, depth)
            self._snapshots.put((conn_id, reqid, symbol, endpoint, text, None))
        except Exception as e:  # noqa: BLE001 - any failure is retried by the tracker
            self._snapshots.put((conn_id, reqid, symbol, None, None, short_error(e)))

    def _drain_snapshots(self) -> None:
        """Parse the REST snapshots that arrived, on the receive loop, like frames."""
        conn = self.conn
        while True:
            try:
                conn_id, reqid, symbol, endpoint, text, error = self._snapshots.get_nowait()
            except queue.Empty:
                return
            if conn is None or conn_id != conn.conn_id:
                continue  # fetched for a connection that is gone: its book went with it
            ts_recv = time.time_ns() // 1000
            if error is not None:
                entry = self.pending_resyncs.refused(reqid, time.monotonic())
                self.rows["events"].append(event(
                    self.exchange, ts_recv, "snapshot_failed", symbol=symbol, channel="book",
                    conn_id=conn_id, detail=detail(error=error, retry_in_s=round(
                        entry.due - time.monotonic(), 3) if entry else None)))
                log.warning("book snapshot of %s failed: %s", symbol, error)
                continue
            saved = self.url
            self.url = endpoint
            try:
                self._frames(conn, [text.encode()], ts_recv)
            finally:
                self.url = saved

    def _resync_refused(self, reqid: int | None, why: str | None, ts_recv: int) -> bool:
        """The refusal of a resync's subscribe (retried by the tracker): True if it was."""
        entry = self.pending_resyncs.refused(reqid, time.monotonic())
        if entry is not None:
            self.rows["events"].append(event(
                self.exchange, ts_recv, "resync_refused", symbol=entry.symbol, channel="book",
                conn_id=self.conn_id,
                detail=detail(attempt=entry.attempts, error=why,
                              retry_in_s=round(entry.due - time.monotonic(), 3))))
        return entry is not None

    def _snapshotted(self, conn: _Conn, ts_recv: int) -> None:
        """Books whose snapshot just arrived: a pending resync of theirs is over."""
        books = conn.books
        recovered = set(books.recovered)
        for symbol in books.snapshots:
            entry: PendingResync | None = self.pending_resyncs.done(symbol)
            if symbol in recovered or (entry is not None and entry.why != "initial"
                                       and entry.why != "snapshot_needed"):
                self.rows["events"].append(event(
                    self.exchange, ts_recv, "resynced", symbol=symbol, channel="book",
                    conn_id=conn.conn_id,
                    detail=detail(update_id=self.update_id,
                                  attempts=entry.attempts if entry else None)))
        books.snapshots.clear()
        books.recovered.clear()

    # -- connection rotation (make-before-break) --------------------------------------

    def _drive_rotation(self, now: float) -> None:
        rot = self._rotation
        if rot is None:
            if self._next_rotation_try and now >= self._next_rotation_try:
                self._start_rotation(now)
            return
        why = self._read_waiting(rot)
        if why:
            self._abandon_rotation(why)
            return
        why = self._watch(rot, now) if rot.ready else None
        if why:
            self._abandon_rotation(why)
        elif rot.ready and rot.acks >= rot.plan.acks_expected:
            if rot.acked_at is None:
                rot.acked_at = now
            if now - rot.acked_at >= _OVERLAP_SECONDS:
                self._switch(rot)
        else:
            rate = rot.plan.max_messages_per_second
            limit = _ROTATION_TIMEOUT + (len(rot.plan.requests) / rate if rate else 0.0)
            if now - rot.opened > limit:
                self._abandon_rotation(f"{rot.acks} of {rot.plan.acks_expected} subscriptions "
                                       f"acknowledged after {limit:.0f} s")

    def _read_waiting(self, conn: _Conn) -> str | None:
        """Parse what a connection other than the recorded one has received so far, without
        waiting; why it ended, or None."""
        try:
            while True:
                conn.reader.settimeout(0.0)
                try:
                    frames = conn.reader.read()
                except (BlockingIOError, TimeoutError):
                    return None
                conn.last_frame = time.monotonic()
                why = self._frames(conn, frames, time.time_ns() // 1000)
                if why or conn.reader.close_frame is not None:
                    return why or "closed by peer"
        except (ConnectionClosed, OSError, websocket.WebSocketException, ProtocolError) as e:
            return short_error(e)

    def _start_rotation(self, now: float) -> None:
        log.info("connection %d is %.0f s old: opening its replacement", self.conn_id,
                 now - self.conn.opened)
        self._overlap_seen = {}
        opened = self._open(new_rows(), replacing=True)
        if isinstance(opened, str):
            self._next_rotation_try = now + _ROTATION_RETRY
            self._event("rotation_failed", detail(error=opened, old_conn_id=self.conn_id))
            return
        self._rotation = opened

    def _drop_rotation(self) -> _Conn | None:
        rot = self._rotation
        if rot is not None:
            self._rotation = None
            self._overlap_seen = {}
            rot.reader.close(timeout=0.2)
        return rot

    def _abandon_rotation(self, why: str) -> None:
        rot = self._drop_rotation()
        if rot is None:
            return
        self._next_rotation_try = time.monotonic() + _ROTATION_RETRY
        self._event("rotation_failed", detail(error=why, new_conn_id=rot.conn_id))
        log.warning("replacement connection %d given up: %s", rot.conn_id, why)

    def _switch(self, new: _Conn) -> None:
        """Make the replacement the recorded connection and close the old one."""
        old = self.conn
        # What the old connection already received may hold rows the new one never got.
        self._read_waiting(old)
        self._flush()  # still rotating: the old connection's last rows join _overlap_seen
        self._rotation = None
        seen = {(table, _content(table, r)) for table, rows in self._overlap_seen.items()
                for r in rows}
        self._overlap_seen = {}
        kept, dropped = self._merge(new, seen)
        self._settling, self._settle_until = seen, time.monotonic() + _SETTLE_SECONDS
        self._late_duplicates = 0
        old.reader.close(timeout=0.2)
        self.rotations += 1
        new.rows = self.rows
        self._adopt(new)
        self.pending_resyncs.clear()
        now = time.monotonic()
        for symbol, why in new.extra.pop("snapshots_wanted", {}).items():
            self._begin_resync(new.ws, symbol, now, why=why)
        age = round(time.monotonic() - old.opened, 3)
        self._event("connection_rotated", detail(old_conn_id=old.conn_id,
                                                 new_conn_id=new.conn_id, age_s=age,
                                                 overlap_rows=kept, duplicates_dropped=dropped))
        log.info("connection %d replaced by %d after %.0f s (%d duplicate rows dropped)",
                 old.conn_id, new.conn_id, age, dropped)

    def _merge(self, new: _Conn, seen: set) -> tuple[int, int]:
        """Move the replacement's rows into the recorded buffer: duplicates of what the old
        connection delivered are dropped, book update ids renumbered after the old ones."""
        kept = dropped = 0
        renumber: dict[int, int] = {}
        for table, rows in new.rows.items():
            if not rows:
                continue
            if table in _DEDUPED_TABLES:
                fresh = [r for r in rows if (table, _content(table, r)) not in seen]
                dropped += len(rows) - len(fresh)
                rows = fresh
            elif table == "book":
                out = []
                for r in rows:
                    uid = r[_BOOK_UPDATE_ID]
                    new_uid = renumber.get(uid)
                    if new_uid is None:
                        self.update_id += 1
                        new_uid = renumber[uid] = self.update_id
                    out.append(r[:_BOOK_UPDATE_ID] + (new_uid,) + r[_BOOK_UPDATE_ID + 1:])
                rows = out
            elif table == "events":
                rows = [with_conn_id(r, new.conn_id) for r in rows]
            kept += len(rows)
            self.rows[table].extend(rows)
        return kept, dropped

    def _settled(self) -> None:
        """The switch's window for late duplicates is over: say how many it dropped."""
        self._settling = None
        self._event("rotation_settled", detail(late_duplicates_dropped=self._late_duplicates))

    # -- the redundant connection (redundancy.py) --------------------------------------

    def _wait(self, delay: float) -> None:
        """The reconnect backoff; the redundant connection is read all the while."""
        if self.mirror_feed is None:
            self.stop_event.wait(delay)
            return
        until = time.monotonic() + delay
        while not self.stop_event.wait(min(0.05, max(0.0, until - time.monotonic()))):
            now = time.monotonic()
            if now >= until:
                return
            self._drive_mirror(now)
            self._flush()

    def _drive_mirror(self, now: float) -> None:
        mirror = self.mirror
        if mirror is None:
            if now >= self._mirror_next_try:
                opened = self._open(new_rows(), feed=self.mirror_feed)
                if isinstance(opened, str):
                    self._mirror_next_try = now + self._mirror_backoff.next_delay()
                    return
                self.mirror = opened
                self._event("redundant_connected", detail(conn_id=opened.conn_id,
                                                          url=_safe_url(opened.plan.url)))
            return
        why = self._read_waiting(mirror)
        if why:
            self._close_mirror(why)
            return
        why = self._watch(mirror, now) if mirror.ready else None
        if why:
            self._close_mirror(why)
            return
        if mirror.acks >= mirror.plan.acks_expected and mirror.ready:
            self._mirror_backoff.reset()
            self._stream_live()
        self._take_mirror_rows(mirror)

    def _take_mirror_rows(self, mirror: _Conn) -> None:
        """The mirror's trades not recorded yet go to the sink; its events are recorded."""
        rows = mirror.rows
        trades = rows["trades"]
        if trades:
            rows["trades"] = []
            fresh = self._recent.fresh(trades) if self._recent is not None else trades
            if fresh:
                if self._covering is not None:
                    self._covering["rows"] += len(fresh)
                if "trades" in self.backfills:
                    self.backfills["trades"].observe(fresh)
                self.sink.write("trades", fresh)
        for table, pending in rows.items():
            if pending and table != "trades":
                rows[table] = []
                if table == "events":
                    pending = [with_conn_id(e, mirror.conn_id) for e in pending]
                self.rows[table].extend(pending)

    def _close_mirror(self, why: str | None) -> None:
        mirror, self.mirror = self.mirror, None
        if mirror is None:
            return
        self._take_mirror_rows(mirror)
        mirror.reader.close(timeout=0.2)
        if why is None:
            return  # the collector stops
        self._mirror_next_try = time.monotonic() + self._mirror_backoff.next_delay()
        self._event("redundant_disconnected", detail(conn_id=mirror.conn_id, reason=why))
        log.warning("redundant connection %d ended: %s", mirror.conn_id, why)
        self._stream_live()

    def _stream_live(self, primary: bool | None = None) -> None:
        """Tell the backfills when a stream's data stops and starts again (``primary``: the
        recorded connection just opened or ended). Trades count as live while either
        connection carries them; with a redundant connection, the recorded one carries
        them once its subscriptions are acknowledged."""
        if primary is not None:
            for table, bf in self.backfills.items():
                if table != "trades":
                    (bf.connected if primary else bf.disconnected)()
        conn, mirror = self.conn, self.mirror
        primary_live = self.ws is not None and conn is not None and (
            self.mirror_feed is None or conn.acks >= conn.plan.acks_expected)
        mirror_live = (mirror is not None and mirror.ready
                       and mirror.acks >= mirror.plan.acks_expected)
        if self.mirror_feed is not None:
            self._covered(primary_live, mirror_live)
        live = primary_live or mirror_live
        if live == self._trades_live:
            return
        self._trades_live = live
        bf = self.backfills.get("trades")
        if bf is not None:
            (bf.connected if live else bf.disconnected)()

    def _covered(self, primary_live: bool, mirror_live: bool) -> None:
        """While the recorded connection is down, the mirror's trades fill its gap: one
        events row says so when it is back (or when the mirror fails too)."""
        if not primary_live and mirror_live:
            if self._covering is None:
                self._covering = {"since_us": time.time_ns() // 1000, "rows": 0,
                                  "conn_id": self.mirror.conn_id if self.mirror else None}
        elif self._covering is not None:
            c, self._covering = self._covering, None
            self._event("trades_covered", detail(
                by_conn_id=c["conn_id"], rows=c["rows"], since=iso_us(c["since_us"]),
                until=iso_us(time.time_ns() // 1000), complete=primary_live))

    # -- credentials ------------------------------------------------------------------

    def _credentials_refused(self, e: CredentialError) -> None:
        self._refusals += 1
        self._event("connect_failed", detail(url=self.url, error=short_error(e)))
        if self._refusals < CREDENTIAL_REFUSALS_FATAL:
            log.warning("cannot prepare the connection to %s: %s (refusal %d of %d before "
                        "giving up)", self.url, short_error(e), self._refusals,
                        CREDENTIAL_REFUSALS_FATAL)
            return
        self.failure = (f"the credentials were refused {self._refusals} times in a row: "
                        f"{short_error(e)}")
        self._event("credentials_refused", detail(url=self.url, error=short_error(e),
                                                  refusals=self._refusals))
        log.error("%s: %s; not retrying", self.url, self.failure)
        self.stop_event.set()

    # -- helpers ----------------------------------------------------------------------

    def _flush(self) -> None:
        rows = self.rows
        if self._checkpoint_every and time.monotonic() >= self._next_checkpoint:
            self._next_checkpoint = time.monotonic() + self._checkpoint_every
            rows["book_checkpoints"].extend(self.books.checkpoint_rows())
        rotating = self._rotation is not None
        if self._settling is not None and time.monotonic() >= self._settle_until:
            self._settled()
        settling = self._settling
        for table, pending in rows.items():
            if pending:
                rows[table] = []
                if settling and table in _DEDUPED_TABLES:
                    fresh = [r for r in pending if (table, _content(table, r)) not in settling]
                    self._late_duplicates += len(pending) - len(fresh)
                    pending = fresh
                    if not pending:
                        continue
                if rotating and table in _DEDUPED_TABLES:
                    # What the old connection delivers while its replacement opens: the
                    # replacement's copies of these rows are dropped at the switch.
                    self._overlap_seen.setdefault(table, []).extend(pending)
                if table == "events":
                    # Parsers cannot know which connection a frame came on.
                    pending = [with_conn_id(e, self.conn_id) for e in pending]
                elif table == "trades" and self._recent is not None:
                    pending = self._recent.fresh(pending)  # the mirror may have had them
                    if not pending:
                        continue
                if table in self.backfills:
                    self.backfills[table].observe(pending)
                self.sink.write(table, pending)
        self.sink.tick()
        if self.heartbeat_path is not None and time.monotonic() >= self._next_heartbeat:
            self._write_heartbeat()

    def _write_heartbeat(self) -> None:
        self._next_heartbeat = time.monotonic() + _HEARTBEAT_SECONDS
        stats = self.sink.stats()
        beat = {
            "pid": os.getpid(), "updated_at": time.time(), "url": self.url,
            "exchange": self.exchange,
            "connected": self.ws is not None, "conn_id": self.conn_id, "frames": self.frames,
            "checksums_verified": self.books.verified, "books_verified": self.books.verified,
            "resyncs": self.resyncs, "rotations": self.rotations,
            "sink": {k: stats.get(k) for k in ("queued_rows", "pending_rows",
                                               "blocked_seconds", "write_error")},
        }
        path = self.heartbeat_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(beat))
            os.replace(tmp, path)
        except OSError as e:  # a full disk must not stop the recording itself
            log.debug("cannot write %s: %s", path, e)

    def _event(self, kind: str, text: str, symbol: str | None = None,
               channel: str | None = None) -> None:
        self.rows["events"].append(event(self.exchange, time.time_ns() // 1000, kind,
                                         symbol=symbol, channel=channel, detail=text,
                                         conn_id=self.conn_id))




def _safe_url(url: str) -> str:
    """The URL without its query: a token in it must not reach logs or events."""
    return url.split("?", 1)[0]


def data_dir_for(config: Any, override: str | None) -> Path:
    return Path(override) if override else config.output_path


assert set(_DEDUPED_TABLES) <= set(TABLES)
