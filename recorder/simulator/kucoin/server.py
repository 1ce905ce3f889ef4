"""The KuCoin simulator process: the WebSocket endpoint, REST, the market, and fault control.

One asyncio loop owns all state. The WebSocket endpoint (``/``) takes public and private
connections alike: the bullet token in the connect URL decides which they are. REST and the
/_sim/ control API have their own port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import time
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from recorder.simulator.kucoin import account as acct
from recorder.simulator.kucoin import fastpath, render, replay
from recorder.simulator.kucoin.account import Account
from recorder.simulator.kucoin.auth import Auth
from recorder.simulator.kucoin.config import KucoinConfig
from recorder.simulator.kucoin.faults import (
    RULE_KINDS,
    FaultError,
    FaultState,
    parse_rest_error,
    parse_rule,
)
from recorder.simulator.kucoin.market import CANDLE_TYPES, BookEvent, Event, Market, PairMarket
from recorder.simulator.kucoin.rest import RestApi, RestServer
from recorder.simulator.kucoin.session import PRIVATE_TOPICS, Session, error_text
from recorder.simulator.kucoin.symbols import SYMBOLS, Symbol
from recorder.simulator.wire import encode

log = logging.getLogger("recorder.simulator")

WS_PATHS = ("/", "/endpoint")
TOKEN_EXPIRED = error_text(None, 401, "token is expired")
PERIOD = 0.1  # depth5/50 and ticker pushes (times --speed)
SNAPSHOT_PERIODS = 20  # /market/snapshot every 2 s


class Stats:
    def __init__(self) -> None:
        self.messages: dict[str, int] = defaultdict(int)
        self.total = 0
        self.connections_total = 0
        self.faults: dict[str, int] = defaultdict(int)
        self.replay_finished = 0
        self.skipped_level2 = 0
        self.rest_requests = 0
        self.tokens_issued = 0

    def count(self, channel: str, n: int = 1) -> None:
        self.messages[channel] += n
        self.total += n

    def fault(self, kind: str) -> None:
        self.faults[kind] += 1


class Simulator:
    def __init__(self, cfg: KucoinConfig, capture: replay.Capture | None = None) -> None:
        self.cfg = cfg
        self.market = Market(cfg.symbols, cfg.seed, weights=cfg.weights,
                             book_levels=cfg.book_levels)
        self.account = Account(cfg.seed, cfg.fill_rate, self.market.order_id)
        self.market.on_trade = self.account.on_trade
        self.auth = Auth(cfg.api_key, cfg.api_secret, cfg.api_passphrase, cfg.token_ttl,
                         cfg.key_version)
        self.faults = FaultState(list(cfg.rules), cfg.reject_subscribes, cfg.slow_welcome,
                                 -1 if cfg.slow_welcome > 0 else 0, list(cfg.rest_errors))
        self.max_connection_age = cfg.max_connection_age
        self.capture = capture
        self.sessions: set[Session] = set()
        self.subscribers: dict[str, set[Session]] = defaultdict(set)
        self.stats = Stats()
        self.conn_rng = random.Random()
        self.ws_url = ""
        self.last_pushed: dict[str, str] = {}
        # --speed max (fastpath)
        self.cycle: fastpath.Cycle | None = None
        self.fast_lap = 0
        self._symbols = {sym.name: sym for sym in self.served_symbols()}

    # -- what exists ------------------------------------------------------------------------

    def served_symbols(self) -> list[Symbol]:
        """The synthetic market's symbols; in a replay, the table's symbols the capture has
        (its other topics are served too, see topic_exists)."""
        if self.capture is None:
            return [pm.sym for pm in self.market.pairs.values()]
        names = {t.partition(":")[2].rsplit("_", 1)[0] if t.startswith("/market/candles:")
                 else t.partition(":")[2] for t in self.capture.topics}
        return [SYMBOLS[n] for n in sorted(names) if n in SYMBOLS]

    def topic_exists(self, topic: str) -> bool:
        if topic in PRIVATE_TOPICS:
            return True
        if self.capture is not None and topic in self.capture.topics:
            return True
        prefix, _, arg = topic.partition(":")
        symbols = self._symbols
        if prefix == "/market/candles":
            sym, _, kind = arg.rpartition("_")
            return sym in symbols and kind in CANDLE_TYPES
        if prefix == "/market/ticker" and arg == "all":
            return True
        if prefix == "/market/snapshot" and arg in {s.market for s in symbols.values()}:
            return True
        return arg in symbols

    def book_sequence(self, pm: PairMarket) -> int:
        """The sequence of the book as REST shows it now (see fastpath for --speed max)."""
        cycle = self.cycle
        if cycle is None:
            return pm.seq
        return cycle.seq0[pm.name] + (self.fast_lap + 1) * cycle.seq_per_lap[pm.name]

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, s: Session, topic: str) -> None:
        s.topics.add(topic)
        self.subscribers[topic].add(s)

    def unsubscribe(self, s: Session, topic: str) -> None:
        s.topics.discard(topic)
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.discard(s)
            if not subs:
                del self.subscribers[topic]

    def on_subscribed(self, s: Session, topics: list[str]) -> None:
        if self.capture is not None:
            replay.on_subscribe(self, s, topics)
        elif self.cfg.max_speed and any(t not in PRIVATE_TOPICS for t in topics):
            fastpath.restart_pump(self, s)

    def on_unsubscribed(self, s: Session, topics: list[str]) -> None:
        if self.capture is None and self.cfg.max_speed:
            fastpath.restart_pump(self, s)

    # -- the synthetic market in real time --------------------------------------------------

    def publish(self, events: list[Event]) -> None:
        subs = self.subscribers
        for ev in events:
            pm = ev.pm
            name = pm.name
            if isinstance(ev, BookEvent):
                targets = subs.get(f"/market/level2:{name}")
                if targets:
                    frame = encode(render.l2update(ev))
                    for s in list(targets):
                        if s.skip and s.take_skip(name):
                            continue
                        s.send(frame, "level2")
                continue
            targets = subs.get(f"/market/match:{name}")
            if targets:
                for t in ev.trades:
                    frame = encode(render.match(pm, t))
                    for s in list(targets):
                        s.send(frame, "match")
            time_ns = ev.trades[-1].time_ns
            for kind in pm.candles:
                targets = subs.get(f"/market/candles:{name}_{kind}")
                if targets:
                    frame = encode(render.candle(pm, kind, time_ns))
                    for s in list(targets):
                        s.send(frame, "candles")
        pending = self.account.take_pending()
        if pending:
            targets = subs.get(acct.TOPIC)
            if targets:
                for text in pending:
                    frame = encode(text)
                    for s in list(targets):
                        s.send(frame, "orders")

    def push_periodic(self, snapshots: bool) -> None:
        """The 100 ms topics, each pushed only when its content changed; and every 2 s the
        market snapshots."""
        now_ms = int(time.time() * 1000)
        pairs = self.market.pairs
        for topic, targets in list(self.subscribers.items()):
            if not targets:
                continue
            prefix, _, arg = topic.partition(":")
            if prefix in ("/spotMarket/level2Depth5", "/spotMarket/level2Depth50"):
                pm = pairs.get(arg)
                if pm is None:
                    continue
                n = 5 if prefix.endswith("5") else 50
                levels = render.depth_levels(pm, n)
                if self.last_pushed.get(topic) != levels:
                    self.last_pushed[topic] = levels
                    self._push(targets, render.depth(pm, n, levels, now_ms), f"depth{n}")
            elif prefix == "/market/ticker":
                for pm in (pairs.values() if arg == "all" else [pairs.get(arg)]):
                    if pm is None:
                        continue
                    key = f"{topic}|{pm.name}"
                    fields = render.ticker_fields(pm)
                    if self.last_pushed.get(key) != fields:
                        self.last_pushed[key] = fields
                        self._push(targets, render.ticker(pm, fields, now_ms, arg == "all"),
                                   "ticker")
            elif prefix == "/market/snapshot" and snapshots:
                for pm in pairs.values():
                    if arg in (pm.name, pm.sym.market):
                        self._push(targets, render.snapshot(pm, topic, now_ms), "snapshot")

    @staticmethod
    def _push(targets: set[Session], text: str, channel: str) -> None:
        frame = encode(text)
        for s in list(targets):
            s.send(frame, channel)

    async def feed_loop(self) -> None:
        """--rate market steps per second, times --speed; also with no client connected."""
        rate = self.cfg.rate * self.cfg.speed
        tick = 0.01
        budget = 0.0
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            next_t += tick
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            if loop.time() - next_t > 1.0:  # the loop was blocked: do not burst to catch up
                next_t = loop.time()
            budget += rate * tick
            while budget >= 1.0:
                budget -= 1.0
                try:
                    self.publish(self.market.step())
                except Exception:  # one bad message must not stop the market
                    log.exception("feed step failed")

    async def periodic_loop(self) -> None:
        period = PERIOD / self.cfg.speed
        n = 0
        while True:
            await asyncio.sleep(period)
            n += 1
            try:
                self.push_periodic(n % SNAPSHOT_PERIODS == 0)
            except Exception:
                log.exception("periodic push failed")

    # -- connections ------------------------------------------------------------------------

    def _route(self, connection: ServerConnection, request: Request):
        if urlsplit(request.path).path not in WS_PATHS:
            return connection.respond(404, "Unknown endpoint\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        token = (query.get("token") or [None])[-1]
        connect_id = (query.get("connectId") or [None])[-1]
        info = self.auth.take(token)
        self.stats.connections_total += 1
        if info is None:
            # KuCoin's reply to a used, expired or unknown token; then the connection ends
            # without a close frame (cryptofeed#1023: "no close frame received or sent").
            self.stats.fault("token_refused")
            log.info("connection refused: token is expired (or used, or unknown)")
            await ws.send(TOKEN_EXPIRED)
            ws.transport.close()
            return
        if not connect_id:
            connect_id = f"{self.conn_rng.getrandbits(96):024x}"
        s = Session(self, ws, info.private, connect_id, self.conn_rng.randrange(1, 2**63))
        self.sessions.add(s)
        log.info("conn %s: open (%s)", s.conn_id, "private" if s.private else "public")
        try:
            await s.run()
        finally:
            self.sessions.discard(s)
            for topic in list(s.topics):
                self.unsubscribe(s, topic)
            log.info("conn %s: closed", s.conn_id)

    # -- faults -----------------------------------------------------------------------------

    def apply_fault(self, spec: dict) -> dict:
        kind = spec.get("kind")
        f = self.faults
        if kind in RULE_KINDS:
            rule = parse_rule(spec)
            targets = [s for s in list(self.sessions) if not s.closed and rule.matches(s.private)]
            for s in targets:
                s.arm(rule)
            if spec.get("persistent"):
                f.persistent.append(rule)
            return {"armed": len(targets)}
        if kind == "slow_welcome":
            f.slow_welcome = float(spec.get("seconds", 5.0))
            f.slow_welcome_count = int(spec.get("count", 1))
            if f.slow_welcome < 0 or f.slow_welcome_count < -1:
                raise FaultError("seconds must not be negative; count >= 1, or -1 for every "
                                 "connection")
            return {"slow_welcome": f.slow_welcome, "count": f.slow_welcome_count}
        if kind == "rest_error":
            err = parse_rest_error(spec)
            f.rest_errors.append(err)
            return {"code": err.code, "count": err.count}
        if kind == "reject_subscribes":
            f.reject_subscribes = int(spec.get("count", 1))
            return {"reject_subscribes": f.reject_subscribes}
        if kind == "max_connection_age":
            seconds = float(spec.get("seconds", 0))
            if seconds < 0:
                raise FaultError("seconds must not be negative (0 = never)")
            self.max_connection_age = seconds
            if seconds > 0:
                now = time.monotonic()
                for s in list(self.sessions):
                    s.later(max(0.0, seconds - (now - s.opened)), s._age_cut)
            return {"max_connection_age": seconds}
        if kind == "invalidate_tokens":
            return {"invalidated": self.auth.invalidate_all()}
        if kind == "key":
            a = self.auth
            if "ip_whitelist" in spec:
                wl = spec["ip_whitelist"] or []
                if not isinstance(wl, list) or not all(isinstance(x, str) for x in wl):
                    raise FaultError("ip_whitelist must be a list of addresses")
                a.ip_whitelist = list(wl)
            if "access_denied" in spec:
                a.access_denied = bool(spec["access_denied"])
            if "version" in spec:
                if spec["version"] not in (1, 2, 3):
                    raise FaultError("version must be 1, 2 or 3")
                a.key_version = int(spec["version"])
            return {"ip_whitelist": a.ip_whitelist, "access_denied": a.access_denied,
                    "version": a.key_version}
        if kind == "limits":
            cfg = self.cfg
            for name, attr in (("uplink", "uplink_limit"), ("per_request", "topics_per_request"),
                               ("per_session", "topics_per_session")):
                if name in spec:
                    value = int(spec[name])
                    if value < 0:
                        raise FaultError(f"{name} must not be negative")
                    setattr(cfg, attr, value)
            return {"uplink": cfg.uplink_limit, "per_request": cfg.topics_per_request,
                    "per_session": cfg.topics_per_session}
        if kind == "clear":
            f.persistent.clear()
            f.reject_subscribes = 0
            f.slow_welcome, f.slow_welcome_count = 0.0, 0
            f.rest_errors.clear()
            self.auth.ip_whitelist = []
            self.auth.access_denied = False
            return {}
        raise FaultError(f"unknown fault kind {kind!r}")

    def stats_dict(self) -> dict:
        open_sessions = [s for s in self.sessions if not s.closed]
        return {
            "exchange": "kucoin",
            "mode": "replay" if self.capture else "synthetic",
            "connections": len(open_sessions),
            "private_connections": sum(s.private for s in open_sessions),
            "connections_total": self.stats.connections_total,
            "messages_total": self.stats.total,
            "messages": dict(self.stats.messages),
            "faults": dict(self.stats.faults),
            "tokens_issued": self.stats.tokens_issued,
            "rest_requests": self.stats.rest_requests,
            "replay_finished": self.stats.replay_finished,
            "skipped_level2": self.stats.skipped_level2,
            "sequences": {name: self.book_sequence(pm) for name, pm in self.market.pairs.items()},
            "trade_sequences": {name: pm.trade_seq for name, pm in self.market.pairs.items()},
            "fills": len(self.account.fills),
            "fast_lap": self.fast_lap,
        }

    async def scheduled(self) -> None:
        if self.cfg.invalidate_tokens_after is not None:
            await asyncio.sleep(self.cfg.invalidate_tokens_after)
            log.info("invalidated %d unused token(s)", self.auth.invalidate_all())


async def serve_forever(cfg: KucoinConfig, capture: replay.Capture | None = None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the URL line: a caller may stop at once
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator(cfg, capture)
    ws_server = await serve(
        sim._handler, cfg.host, cfg.port, process_request=sim._route, compression=None,
        ping_interval=None, max_size=2**20, write_limit=2**20,
    )
    ws_port = ws_server.sockets[0].getsockname()[1]
    rest_port = cfg.port + 1 if cfg.port else 0
    rest = RestServer(RestApi(sim), loop, cfg.host, rest_port)
    rest.start()
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    sim.ws_url = f"ws://{host}:{ws_port}/"
    urls = {"exchange": "kucoin", "rest": f"http://{host}:{rest.port}", "ws": sim.ws_url}
    print(json.dumps(urls), flush=True)
    log.info("serving %s", f"replay of {cfg.replay}" if capture else
             f"synthetic {','.join(s.name for s in cfg.symbols)} at {cfg.rate:g} msg/s x "
             f"{cfg.speed:g}")
    tasks = [asyncio.create_task(sim.scheduled())]
    if capture is None and not cfg.max_speed:
        tasks += [asyncio.create_task(sim.feed_loop()), asyncio.create_task(sim.periodic_loop())]
    for t in tasks:
        t.add_done_callback(_log_crash)
    await stop.wait()
    log.info("stopping")
    for t in tasks:
        t.cancel()
    ws_server.close(close_connections=False)
    for s in list(sim.sessions):
        s.abort()
    rest.stop()


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
