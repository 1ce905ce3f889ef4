"""One client connection: sending (stalls, counters, fault triggers), the welcome, KuCoin's
limits, the connection-age cut and the idle cut, and the requests (ping, subscribe,
unsubscribe) with KuCoin's replies.

Replies, as in real captures (../shared/data/kucoin/ws-public.ndjson):
``{"id":"<connectId>","type":"welcome"}``, ``{"id":"<id>","type":"pong"}``,
``{"id":"<id>","type":"ack"}`` (ids echoed as strings), and errors
``{"id":"<id>","type":"error","code":404,"data":"topic /market/level2:XYZ-USDT is not found"}``,
``... "code":509,"data":"exceed max subscription count limitation of 100 per time"``,
``{"type":"error","code":509,"data":"exceed max permits per second"}`` (then the connection is
closed with 1000 "Bye", as one public log shows).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed

from recorder.simulator.kucoin.faults import MALFORMED_FRAME, Rule
from recorder.simulator.wire import encode

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from recorder.simulator.kucoin.server import Simulator

log = logging.getLogger("recorder.simulator")

MAX_WRITE_BUFFER = 64 * 1024 * 1024
UPLINK_WINDOW = 10.0
PERMITS_TEXT = "exceed max permits per second"
# Topics whose data flows per symbol ("...:BTC-USDT,ETH-USDT": each symbol is one topic).
SYMBOL_TOPICS = (
    "/market/match", "/market/level2", "/spotMarket/level2Depth5",
    "/spotMarket/level2Depth50", "/market/ticker", "/market/snapshot", "/market/candles",
)
PRIVATE_TOPICS = ("/spotMarket/tradeOrdersV2",)


def error_text(req_id: str | None, code: int, data: str) -> str:
    head = "" if req_id is None else f'"id":{json.dumps(req_id)},'
    return f'{{{head}"type":"error","code":{code},"data":{json.dumps(data)}}}'


class Session:
    def __init__(self, sim: Simulator, ws: ServerConnection, private: bool,
                 connect_id: str, conn_id: int) -> None:
        self.sim = sim
        self.ws = ws
        self.transport = ws.transport
        self.private = private
        self.connect_id = connect_id
        self.conn_id = conn_id
        self.opened = time.monotonic()
        self.topics: set[str] = set()
        self.sent = 0
        self.stall_until = 0.0
        self.held: list[tuple[bytes, str]] = []
        self.count_rules: list[tuple[int, Rule]] = []
        self.skip: set[str] = set()  # symbols whose next level2 message is left out
        self.closed = False
        self.welcomed = False
        self.uplink: deque[float] = deque()
        self.last_recv = time.monotonic()
        self._timers: list[asyncio.TimerHandle] = []
        self.tasks: list[asyncio.Task] = []
        # replay: the capture time of the last frame sent (see replay.py)
        self.replay_task: asyncio.Task | None = None
        self.replay_pos: float | None = None
        self.replay_done = False
        # --speed max (see fastpath.py)
        self.pump: asyncio.Task | None = None
        self.next_blob = None
        self.lap = 0
        self.build_pending = False

    # -- sending ----------------------------------------------------------------------------

    @property
    def stalled(self) -> bool:
        return self.stall_until > time.monotonic()

    def _gone(self) -> bool:
        if not self.closed and self.transport.is_closing():
            self.closed = True
        return self.closed

    def _write(self, data: bytes) -> bool:
        try:
            self.transport.write(data)
        except RuntimeError:  # "Cannot call write() after write_eof()": the peer closed
            self.closed = True
            return False
        return True

    def send_text(self, text: str, channel: str = "control") -> None:
        self.send(encode(text), channel)

    def send(self, frame: bytes, channel: str = "control", count: int = 1) -> None:
        if self._gone():
            return
        if self.stall_until:
            if self.stalled:
                self.held.append((frame, channel))
                return
            # The stall is over but its timer has not run yet (a busy event loop): what it
            # held goes out first, or this frame would overtake it (a sequence gap).
            self._unstall()
        if not self._write(frame):
            return
        self.sent += count
        self.sim.stats.count(channel, count)
        if self.count_rules and self.sent >= self.count_rules[0][0]:
            self._fire_count_rules()
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("conn %s: client not reading, dropping it", self.conn_id)
            self.abort()

    def send_chunk(self, data: bytes, n: int, counts: dict[str, int]) -> None:
        """Many pre-encoded frames at once (--speed max); fault triggers fire per chunk."""
        if self._gone() or not self._write(data):
            return
        self.sent += n
        for channel, k in counts.items():
            self.sim.stats.count(channel, k)
        if self.count_rules and self.sent >= self.count_rules[0][0]:
            self._fire_count_rules()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def close(self, mode: str = "close", code: int = 1000, reason: str = "") -> None:
        """abort: TCP reset; eof: TCP FIN without a close frame; close: a close frame."""
        if self.closed:
            return
        if mode == "abort":
            self.abort()
        elif mode == "eof":
            self.closed = True
            self.transport.close()
        else:
            self.closed = True
            task = asyncio.ensure_future(self.ws.close(code, reason))
            self.tasks.append(task)

    # -- faults -----------------------------------------------------------------------------

    def arm(self, rule: Rule) -> None:
        if rule.after_messages is not None:
            self.count_rules.append((self.sent + rule.after_messages, rule))
            self.count_rules.sort(key=lambda item: item[0])
            if self.sent >= self.count_rules[0][0]:
                self._fire_count_rules()
        elif rule.after_seconds is not None:
            self.later(rule.after_seconds, self.fire, rule)
        else:
            self.fire(rule)

    def later(self, delay: float, fn, *args) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(delay, fn, *args))

    def _fire_count_rules(self) -> None:
        while self.count_rules and self.sent >= self.count_rules[0][0]:
            _, rule = self.count_rules.pop(0)
            self.fire(rule)

    def fire(self, rule: Rule) -> None:
        if self.closed:
            return
        log.info("conn %s: fault %s", self.conn_id, rule.kind)
        self.sim.stats.fault(rule.kind)
        if rule.kind == "drop":
            self.close(rule.mode, rule.code, "simulated close")
        elif rule.kind == "stall":
            self.stall_until = time.monotonic() + rule.seconds
            self.later(rule.seconds, self._unstall)
        elif rule.kind == "malformed":
            if self._write(encode(MALFORMED_FRAME)):
                self.sent += 1
        elif rule.kind == "skip_level2" and rule.symbol:
            self.skip.add(rule.symbol.upper().replace("/", "-"))
        elif rule.kind == "limit_error":
            self._permits_exceeded()

    def _unstall(self) -> None:
        if self.stalled:
            return
        self.stall_until = 0.0
        held, self.held = self.held, []
        for frame, channel in held:
            self.send(frame, channel)

    def _permits_exceeded(self) -> None:
        self.send_text(error_text(None, 509, PERMITS_TEXT))
        self.close("close", 1000, "Bye")

    def take_skip(self, symbol: str) -> bool:
        """True once for a level2 message of ``symbol`` that a skip_level2 fault leaves out."""
        if symbol in self.skip:
            self.skip.discard(symbol)
            self.sim.stats.skipped_level2 += 1
            log.info("conn %s: left out one level2 message of %s", self.conn_id, symbol)
            return True
        return False

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        sim = self.sim
        cfg = sim.cfg
        delay = sim.faults.take_welcome_delay()
        if delay > 0:
            log.info("conn %s: welcome delayed by %.1fs", self.conn_id, delay)
            sim.stats.fault("slow_welcome")
            self.later(delay, self._welcome)
        else:
            self._welcome()
        for rule in sim.faults.persistent:
            if rule.matches(self.private):
                self.arm(rule)
        if sim.max_connection_age > 0:
            self.later(sim.max_connection_age, self._age_cut)
        watchdog = asyncio.create_task(self._idle_watchdog())
        try:
            while True:
                try:
                    message = await self.ws.recv()
                except ConnectionClosed:
                    break
                if self.closed:
                    break
                self.last_recv = time.monotonic()
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                self._handle(message, cfg)
        finally:
            self.closed = True
            watchdog.cancel()
            for t in self._timers:
                t.cancel()
            for task in (self.pump, self.replay_task):
                if task is not None:
                    task.cancel()

    def _welcome(self) -> None:
        if self.closed:
            return
        self.welcomed = True
        self.send_text(f'{{"id":{json.dumps(self.connect_id)},"type":"welcome"}}')

    def _age_cut(self) -> None:
        """KuCoin's daily cut, at the age the simulator's current setting says (a control-API
        change re-arms open connections; a timer that is early or no longer wanted waits or
        does nothing)."""
        limit = self.sim.max_connection_age
        if self.closed or limit <= 0:
            return
        left = limit - (time.monotonic() - self.opened)
        if left > 0.01:
            self.later(left, self._age_cut)
            return
        log.info("conn %s: cut after %.1fs (connection age)", self.conn_id,
                 time.monotonic() - self.opened)
        self.sim.stats.fault("age_cut")
        self.close(self.sim.cfg.age_cut_mode, 1000, "")

    async def _idle_watchdog(self) -> None:
        """KuCoin drops a client that sends nothing (no ping) for too long."""
        limit = self.sim.cfg.idle_timeout
        if limit <= 0:
            return
        while not self.closed:
            await asyncio.sleep(min(1.0, limit / 4))
            if time.monotonic() - self.last_recv > limit and not self.closed:
                log.info("conn %s: no client message for %.0fs, dropping it", self.conn_id,
                         limit)
                self.sim.stats.fault("idle_cut")
                self.close("close", 1000, "")

    # -- requests ---------------------------------------------------------------------------

    def _handle(self, text: str, cfg) -> None:
        if not self.welcomed:
            # "Only when the welcome message is received will the connection be available."
            log.info("conn %s: message before the welcome ignored", self.conn_id)
            return
        if cfg.uplink_limit > 0:
            now = time.monotonic()
            up = self.uplink
            up.append(now)
            while up and now - up[0] > UPLINK_WINDOW:
                up.popleft()
            if len(up) > cfg.uplink_limit:
                log.info("conn %s: more than %d messages in %.0fs", self.conn_id,
                         cfg.uplink_limit, UPLINK_WINDOW)
                self.sim.stats.fault("uplink_limit")
                self._permits_exceeded()
                return
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            # Not confirmed from a real capture.
            self.send_text(error_text(None, 400, "message must be a JSON object"))
            return
        raw_id = msg.get("id")
        req_id = None if raw_id is None else str(raw_id)
        kind = msg.get("type")
        if kind == "ping":
            if req_id is None:  # an id-less ping: a pong with a µs timestamp (one public log)
                self.send_text(f'{{"type":"pong","timestamp":{time.time_ns() // 1000}}}')
            else:
                self.send_text(f'{{"id":{json.dumps(req_id)},"type":"pong"}}')
        elif kind in ("subscribe", "unsubscribe"):
            self._subscribe(msg, req_id, kind == "subscribe", cfg)
        else:
            # Not confirmed from a real capture.
            self.send_text(error_text(req_id, 404, f"type {kind} is not supported"))

    def _subscribe(self, msg: dict, req_id: str | None, subscribe: bool, cfg) -> None:
        sim = self.sim
        topic = msg.get("topic")
        response = msg.get("response") is True
        if not isinstance(topic, str) or not topic:
            self.send_text(error_text(req_id, 404, f"topic {topic} is not found"))
            return
        if subscribe and sim.faults.take_reject():
            sim.stats.fault("reject_subscribes")
            self.send_text(error_text(req_id, 509, PERMITS_TEXT))
            return
        prefix, sep, rest = topic.partition(":")
        if prefix in PRIVATE_TOPICS:
            if sep:
                self.send_text(error_text(req_id, 404, f"topic {topic} is not found"))
                return
            if not self.private or msg.get("privateChannel") is not True:
                # Wording not confirmed from a real capture.
                self.send_text(error_text(
                    req_id, 401, f"topic {topic} needs privateChannel true on a connection "
                    "made with a bullet-private token"))
                return
            wanted = [topic]
        elif prefix in SYMBOL_TOPICS and rest:
            wanted = [f"{prefix}:{arg.strip()}" for arg in rest.split(",") if arg.strip()]
        else:
            self.send_text(error_text(req_id, 404, f"topic {topic} is not found"))
            return
        if len(wanted) > cfg.topics_per_request:
            sim.stats.fault("topic_limit")
            self.send_text(error_text(req_id, 509, "exceed max subscription count limitation "
                                                   f"of {cfg.topics_per_request} per time"))
            return
        known = [t for t in wanted if sim.topic_exists(t)]
        if subscribe:
            if len(self.topics | set(known)) > cfg.topics_per_session:
                sim.stats.fault("topic_limit")
                self.send_text(error_text(req_id, 509, "exceed max subscription count "
                                          f"limitation of {cfg.topics_per_session} per session"))
                return
            for t in wanted:
                if t not in known:
                    self.send_text(error_text(req_id, 404, f"topic {t} is not found"))
            new = [t for t in known if t not in self.topics]
            for t in new:
                sim.subscribe(self, t)
            if response and known:
                self.send_text(f'{{"id":{json.dumps(req_id)},"type":"ack"}}')
            if new:
                sim.on_subscribed(self, new)
        else:
            gone = [t for t in wanted if t in self.topics]
            for t in gone:
                sim.unsubscribe(self, t)
            if response:
                self.send_text(f'{{"id":{json.dumps(req_id)},"type":"ack"}}')
            if gone:
                sim.on_unsubscribed(self, gone)
