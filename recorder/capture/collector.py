"""One collector = one WebSocket connection, kept alive for as long as the job runs.

The connection lifecycle lives here and only here: connect, subscribe, receive, stamp
``ts_recv``, hand frames to the exchange adapter, watch for a stale connection, reconnect
with capped exponential backoff and jitter, resubscribe, and record every disconnect and
reconnect in ``events`` so each gap has a start and an end. The adapters only describe the
exchange.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import websocket

from recorder.capture import wsclient
from recorder.capture.book import BookKeeper, Mismatch
from recorder.capture.resync import PendingResync, ResyncTracker
from recorder.capture.wsclient import ConnectionClosed, FrameReader, ProtocolError
from recorder.core.backoff import Backoff
from recorder.core.config import Config
from recorder.core.secrets import CredentialError
from recorder.exchanges.kraken import v1, v2
from recorder.exchanges.kraken.common import EXCHANGE, Subscription, detail, new_rows

log = logging.getLogger("recorder.capture.collector")

# How often the receive loop wakes up when no frame arrives, to tick the sink, send pings
# and notice a stop request or a stale connection.
_POLL_SECONDS = 0.2
_FLUSH_SECONDS = 0.1
_HEARTBEAT_SECONDS = 5.0
# Kraken refusing the key this many times in a row when (re)connecting means the key was
# revoked or lost its permission: the collector stops with ``failure`` set instead of
# retrying forever (a single refusal may be Kraken's own hiccup).
CREDENTIAL_REFUSALS_FATAL = 3


@dataclass
class Adapter:
    """What a collector needs from an exchange API module.

    ``connect_requests`` is called before every (re)connection, so a private adapter can
    fetch a fresh token each time; ``url`` is the endpoint it talks to.
    """

    url: str
    decode: Callable[[bytes], Any]
    parse: Callable[[Any, int, int, dict], Any]
    connect_requests: Callable[[], list[str]]
    ping: Callable[[int], str]
    book_resync: Callable[[str, int, int], list[str]] | None = None
    book_depths: dict[str, int] = field(default_factory=dict)


def make_public_adapter(config: Config, url: str | None = None,
                        reqid_base: int = 1) -> Adapter:
    """The public-data adapter for the config's API version."""
    mod = v1 if config.api == "v1" else v2
    subs = [Subscription(s.channel, s.symbols, s.depth, s.interval)
            for s in config.public_subscriptions]
    requests: list[str] = []
    for i, sub in enumerate(subs):
        requests.extend(mod.subscribe_requests(sub, reqid_base + i))
    depths = {sym: s.depth or 10 for s in subs if s.channel == "book" for sym in s.symbols}
    if mod is v2:
        bbo = frozenset(sym for s in subs if s.channel == "spread" for sym in s.symbols)
        channels = {reqid_base + i: sub.channel for i, sub in enumerate(subs)}
        parse = partial(v2.parse, bbo_symbols=bbo, book_depths=depths, req_channels=channels)
    else:
        parse = v1.parse
    return Adapter(url or config.url, mod.decode, parse, lambda: list(requests),
                   mod.ping_request, mod.book_resync_requests, depths)


class Collector:
    """Record one connection of a config until stopped or ``duration`` elapses."""

    def __init__(self, config: Config, sink: Any, adapter: Adapter, *,
                 duration: float | None = None, heartbeat_path: Path | None = None) -> None:
        self.config = config
        self.sink = sink
        self.adapter = adapter
        self.url = adapter.url
        self.duration = duration
        self.stop_event = threading.Event()
        self.backoff = Backoff(config.backoff_initial, config.backoff_max)
        self.conn_id = 0
        # update_id groups the rows of one message; seeding it with the start time in µs
        # keeps it unique and increasing across restarts of the process.
        self.update_id = time.time_ns() // 1000 * 1000
        self.frames = 0
        self.ws: websocket.WebSocket | None = None
        self.rows = new_rows()
        self.books = BookKeeper()
        self.resyncs = 0
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

    # -- public -----------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        # The receive loop creates a tuple per row: hundreds of thousands a second. With
        # the default thresholds the cyclic GC runs a young collection every 700 of them
        # and rescans what is alive; the modules loaded so far never become garbage.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
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
                self.stop_event.wait(delay)
        finally:
            self._flush()
            # Bounded, so a broken disk cannot keep SIGTERM from ending the process.
            if not self.sink.close(timeout=4.0):
                log.error("the sink could not finish every file in time; the journal keeps "
                          "the rows and the next start recovers them")

    # -- one connection ---------------------------------------------------------------

    def _connection(self, deadline: float | None) -> int | None:
        """Connect, subscribe and receive until the connection ends; return when it ended."""
        self.conn_id += 1
        try:
            requests = self.adapter.connect_requests()
            self._refusals = 0
        except CredentialError as e:
            self._credentials_refused(e)
            return None
        except Exception as e:  # noqa: BLE001 - e.g. a token fetch failed: retry later
            self._event("connect_failed", detail(url=self.url, error=_short(e)))
            log.warning("cannot prepare the connection to %s: %s", self.url, _short(e))
            return None
        try:
            ws = wsclient.connect(self.url, timeout=10)
        except Exception as e:  # noqa: BLE001 - any failure to connect means: retry later
            self._event("connect_failed", detail(url=self.url, error=_short(e)))
            log.warning("cannot connect to %s: %s", self.url, _short(e))
            return None
        self.ws = ws
        reader = FrameReader(ws)
        reader.settimeout(_POLL_SECONDS)
        log.info("connected to %s (connection %d)", self.url, self.conn_id)
        self._event("connected", detail(url=self.url, attempt=self.backoff.attempts))
        self._next_heartbeat = 0.0  # say so at the next flush, not up to 5 s later
        self.books.reset()
        self.pending_resyncs.clear()
        reason = "closed"
        try:
            for req in requests:
                ws.send(req)
            reason = self._receive(ws, reader, deadline)
        except (ConnectionClosed, websocket.WebSocketConnectionClosedException):
            reason = "closed by peer without a close frame"
        except (OSError, websocket.WebSocketException, ProtocolError) as e:
            reason = f"error: {_short(e)}"
        finally:
            ended = time.time_ns() // 1000
            self.ws = None
            self._next_heartbeat = 0.0
            reader.close(timeout=0.5)
        self._flush()
        stopping = self.stop_event.is_set() or (deadline and time.monotonic() >= deadline)
        kind = "stopped" if stopping else "disconnected"
        self._event(kind, detail(reason=reason, frames=self.frames))
        if not stopping:
            log.warning("connection %d ended: %s", self.conn_id, reason)
        return ended

    def _receive(self, ws: websocket.WebSocket, reader: FrameReader,
                 deadline: float | None) -> str:
        """Receive until the connection should end; return why."""
        rows = self.rows
        decode, parse = self.adapter.decode, self.adapter.parse
        raw = self.config.raw
        stale_after = self.config.stale_after
        ping_every = self.config.ping_interval
        now = time.monotonic()
        last_frame = last_flush = last_ping = started = now
        stop = self.stop_event
        status_online = True
        endpoint = self.url
        books = self.books
        conn_id = self.conn_id
        while True:
            try:
                frames = reader.read()
            except TimeoutError:
                now = time.monotonic()
                if stop.is_set():
                    return "stop requested"
                if deadline and now >= deadline:
                    return "duration reached"
                if now - last_frame > stale_after:
                    self._event("stale", detail(silent_s=round(now - last_frame, 3)))
                    return f"stale: no frame for {now - last_frame:.1f} s"
                if now - last_ping > ping_every:
                    ws.send(self.adapter.ping(int(now)))
                    last_ping = now
                if self.pending_resyncs.pending:
                    failed = self._drive_resyncs(ws, now)
                    if failed:
                        return failed
                self._flush()
                last_flush = now
                continue
            # Frames that arrived in one read share the time they were read off the socket.
            ts_recv = time.time_ns() // 1000
            book_rows = rows["book"]
            for data in frames:
                self.frames += 1
                self.update_id += 1
                if raw:
                    rows["raw"].append((EXCHANGE, ts_recv, conn_id, endpoint,
                                        data.decode("utf-8", "replace")))
                book_start = len(book_rows)
                try:
                    control = parse(decode(data), ts_recv, self.update_id, rows)
                    if len(book_rows) > book_start:
                        mismatches = books.process(book_rows, book_start)
                        if mismatches:
                            self._resync(ws, mismatches, ts_recv)
                        if books.recovered:
                            self._recovered(ts_recv)
                except (msgspec.DecodeError, KeyError, IndexError, TypeError, ValueError,
                        AttributeError) as e:
                    rows["events"].append((EXCHANGE, ts_recv, "malformed", None, None,
                                           detail(error=_short(e),
                                                  frame=data[:300].decode("utf-8", "replace")),
                                           conn_id))
                    continue
                if control is None or control.kind in ("heartbeat", "pong"):
                    continue
                kind = control.kind
                if kind == "status":
                    if control.value != "online":
                        status_online = False
                    elif not status_online:
                        # Back from maintenance: books and streams may have moved on while
                        # the engine was down, so start over with fresh snapshots.
                        return "status back online after maintenance"
                elif kind == "resubscribe":
                    # e.g. a private sequence gap: a new subscription brings a new snapshot.
                    return f"resubscribe: {control.value}"
                elif kind in ("subscribe_error", "error"):
                    if kind == "subscribe_error":
                        log.warning("subscription refused: %s %s: %s", control.channel or "",
                                    control.symbol or "", control.value)
                        if control.value and "Invalid session" in control.value:
                            # The token was refused: reconnect, which fetches a fresh one.
                            return "invalid session"
                    # v1 refuses a rate-limited subscribe with a bare error naming the reqid.
                    if self.pending_resyncs.pending and self._resync_refused(
                            control.extra.get("reqid"), control.value, ts_recv):
                        continue
                    if refused_for_now(control.value):
                        # A subscription of this connection refused by a rate limit or a
                        # busy engine would stay silent until the next reconnect: make it
                        # now, after the backoff, which sends every subscription again.
                        return f"subscription refused for now: {control.value}"
            if reader.close_frame is not None:
                code, why = reader.close_frame
                return f"closed by peer (code {code}{': ' + why if why else ''})"
            now = time.monotonic()
            last_frame = now
            if self.backoff.attempts and now - started > 5:
                self.backoff.reset()
            if now - last_flush > _FLUSH_SECONDS:
                if stop.is_set():
                    return "stop requested"
                if deadline and now >= deadline:
                    return "duration reached"
                if self.pending_resyncs.pending:
                    failed = self._drive_resyncs(ws, now)
                    if failed:
                        return failed
                self._flush()
                last_flush = now
                if now - last_ping > ping_every:
                    ws.send(self.adapter.ping(int(now)))
                    last_ping = now

    def _resync(self, ws: websocket.WebSocket, mismatches: list[Mismatch], ts_recv: int) -> None:
        """Fetch a fresh snapshot of each mismatched symbol only; the rest keeps flowing."""
        now = time.monotonic()
        for m in mismatches:
            self.resyncs += 1
            self.rows["events"].append((EXCHANGE, ts_recv, "checksum_mismatch", m.symbol, "book",
                                        detail(expected=m.expected, computed=m.computed,
                                               update_id=m.update_id, resyncs=self.resyncs),
                                        self.conn_id))
            log.warning("book checksum mismatch on %s (expected %d, computed %d): resyncing",
                        m.symbol, m.expected, m.computed)
            depth = self.adapter.book_depths.get(m.symbol) or self.books.books[m.symbol].depth
            entry = self.pending_resyncs.begin(m.symbol, depth, now)
            if not entry.attempts:  # a resync already under way goes on at its own pace
                self._send_resync(ws, entry, now)

    def _drive_resyncs(self, ws: websocket.WebSocket, now: float) -> str | None:
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

    def _send_resync(self, ws: websocket.WebSocket, entry: PendingResync, now: float) -> None:
        if self.adapter.book_resync is None:
            return
        # Two ids: the unsubscribe's and the subscribe's (reqid + 1), which a refusal names.
        self._reqid += 2
        for req in self.adapter.book_resync(entry.symbol, entry.depth, self._reqid):
            ws.send(req)
        self.pending_resyncs.sent(entry, self._reqid + 1, now)

    def _resync_refused(self, reqid: int | None, why: str | None, ts_recv: int) -> bool:
        """The refusal of a resync's subscribe (retried by the tracker): True if it was."""
        entry = self.pending_resyncs.refused(reqid, time.monotonic())
        if entry is not None:
            self.rows["events"].append((EXCHANGE, ts_recv, "resync_refused", entry.symbol,
                                        "book", detail(attempt=entry.attempts, error=why,
                                                       retry_in_s=round(entry.due
                                                                        - time.monotonic(), 3)),
                                        self.conn_id))
        return entry is not None

    def _recovered(self, ts_recv: int) -> None:
        """Books whose fresh snapshot just arrived: the resync is over."""
        books = self.books
        for symbol in books.recovered:
            entry: PendingResync | None = self.pending_resyncs.done(symbol)
            self.rows["events"].append((EXCHANGE, ts_recv, "resynced", symbol, "book",
                                        detail(update_id=self.update_id,
                                               attempts=entry.attempts if entry else None),
                                        self.conn_id))
        books.recovered.clear()

    def _credentials_refused(self, e: CredentialError) -> None:
        self._refusals += 1
        self._event("connect_failed", detail(url=self.url, error=_short(e)))
        if self._refusals < CREDENTIAL_REFUSALS_FATAL:
            log.warning("cannot prepare the connection to %s: %s (refusal %d of %d before "
                        "giving up)", self.url, _short(e), self._refusals,
                        CREDENTIAL_REFUSALS_FATAL)
            return
        self.failure = f"the credentials were refused {self._refusals} times in a row: {_short(e)}"
        self._event("credentials_refused", detail(url=self.url, error=_short(e),
                                                  refusals=self._refusals))
        log.error("%s: %s; not retrying", self.url, self.failure)
        self.stop_event.set()

    # -- helpers ----------------------------------------------------------------------

    def _flush(self) -> None:
        rows = self.rows
        if self._checkpoint_every and time.monotonic() >= self._next_checkpoint:
            self._next_checkpoint = time.monotonic() + self._checkpoint_every
            rows["book_checkpoints"].extend(self.books.checkpoint_rows())
        for table, pending in rows.items():
            if pending:
                rows[table] = []
                if table == "events":
                    # Adapters cannot know which connection a frame came on.
                    pending = [e if e[6] is not None else e[:6] + (self.conn_id,)
                               for e in pending]
                self.sink.write(table, pending)
        self.sink.tick()
        if self.heartbeat_path is not None and time.monotonic() >= self._next_heartbeat:
            self._write_heartbeat()

    def _write_heartbeat(self) -> None:
        self._next_heartbeat = time.monotonic() + _HEARTBEAT_SECONDS
        stats = self.sink.stats()
        beat = {
            "pid": os.getpid(), "updated_at": time.time(), "url": self.url,
            "connected": self.ws is not None, "conn_id": self.conn_id, "frames": self.frames,
            "checksums_verified": self.books.verified, "resyncs": self.resyncs,
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
        self.rows["events"].append((EXCHANGE, time.time_ns() // 1000, kind, symbol, channel,
                                    text, self.conn_id))


# Kraken's refusals that say "not now" rather than "never" (a pair it does not list, a depth
# it does not support): its WS rate limit and a busy or unavailable engine.
_REFUSED_FOR_NOW = ("Exceeded msg rate", "EService:Unavailable", "EService:Busy",
                    "EGeneral:Temporary lockout", "Rate limit exceeded")


def refused_for_now(why: str | None) -> bool:
    return bool(why) and any(text in why for text in _REFUSED_FOR_NOW)


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 300 else text[:300] + "..."


def data_dir_for(config: Config, override: str | None) -> Path:
    return Path(override) if override else config.output_path
