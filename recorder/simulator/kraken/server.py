"""The simulator process: WebSocket endpoints, REST, the synthetic feed, and fault control.

One asyncio loop owns all state. The four WebSocket endpoints share one port and are told
apart by path; REST (with the /_sim/ control API) has its own port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import time
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from recorder.exchanges.kraken.pairs import find_pair
from recorder.simulator.kraken.account import Account, Update
from recorder.simulator.kraken.channels import (
    ChannelIds,
    Sub,
    event_frame,
    render_event,
    snapshot_texts,
)
from recorder.simulator.kraken.config import SimConfig
from recorder.simulator.kraken.faults import (
    STATUSES,
    FaultError,
    FaultState,
    Rule,
    parse_rest_error,
    parse_rule,
)
from recorder.simulator.kraken.market import BookEvent, Event, Market, TradeEvent, apply_undo
from recorder.simulator.kraken.replay import Capture
from recorder.simulator.kraken.rest import RestApi, RestServer
from recorder.simulator.kraken.session import PrivSub, Session
from recorder.simulator.kraken.tokens import Auth

from . import account as acct
from . import fastpath, proto_v1, proto_v2, replay_feed

log = logging.getLogger("recorder.simulator")

V1_VERSION = "1.9.1"
V2_VERSION = "2.0.10"
PATHS = {
    "/v1": "ws_v1", "/": "ws_v1", "/v2": "ws_v2",
    "/auth/v1": "ws_auth_v1", "/auth": "ws_auth_v1", "/auth/v2": "ws_auth_v2",
}
URL_PATHS = {"ws_v1": "/v1", "ws_v2": "/v2", "ws_auth_v1": "/auth/v1", "ws_auth_v2": "/auth/v2"}


class Stats:
    def __init__(self) -> None:
        self.messages: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.total = 0
        self.connections_total = 0
        self.faults: dict[str, int] = {}
        self.replay_finished = 0

    def count(self, endpoint: str, channel: str, n: int = 1) -> None:
        self.messages[endpoint][channel] += n
        self.total += n


class Simulator:
    def __init__(self, cfg: SimConfig, capture: Capture | None = None) -> None:
        self.cfg = cfg
        self.market = Market(cfg.pairs, cfg.seed, weights=cfg.weights)
        self.account = Account(cfg.seed, self.market.pairs, cfg.fill_rate)
        self.auth = Auth(cfg.api_key, cfg.api_secret, cfg.token_ttl)
        self.faults = FaultState(list(cfg.rules), cfg.reject_subscribes)
        self.capture = capture
        self.chan_ids = ChannelIds()
        if capture is not None:
            for stream in capture.streams():
                for (name, wsname), cid in stream.chan_ids.items():
                    self.chan_ids.preset(name, wsname, cid)
        self.sessions: set[Session] = set()
        self.status = "online"
        self.fill_task: asyncio.Task | None = None
        self.stats = Stats()
        self.conn_rng = random.Random()
        self.proto_v1 = proto_v1.handle
        self.proto_v2 = proto_v2.handle

    # -- what is served ---------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """The market stands still in maintenance (Kraken's other statuses only limit trading)."""
        return self.status == "maintenance"

    def serves(self, symbol: str, version: int) -> bool:
        if self.capture is not None:
            stream = self.capture.stream(version)
            return stream is not None and symbol in stream.symbols
        return symbol in self.market.pairs

    def status_text(self, s: Session) -> str:
        if s.version == 1:
            return (f'{{"connectionID":{s.conn_id},"event":"systemStatus",'
                    f'"status":"{self.status}","version":"{V1_VERSION}"}}')
        return (f'{{"channel":"status","type":"update","data":[{{"version":"{V2_VERSION}",'
                f'"system":"{self.status}","api_version":"v2","connection_id":{s.conn_id}}}]}}')

    def instrument_text(self) -> str:
        pairs = []
        assets: dict[str, int] = {}
        for symbol in self.market.pairs:
            p = find_pair(symbol)
            assets[p.base] = assets[p.quote] = 8
            step = f"0.{'0' * (p.price_decimals - 1)}1" if p.price_decimals else "1"
            pairs.append(
                f'{{"symbol":"{p.symbol}","base":"{p.base}","quote":"{p.quote}",'
                f'"status":"online","qty_precision":{p.qty_decimals},'
                f'"qty_increment":0.{"0" * (p.qty_decimals - 1)}1,'
                f'"price_precision":{p.price_decimals},"cost_precision":5,'
                f'"marginable":false,"has_index":true,"cost_min":0.50,'
                f'"tick_size":{step},"price_increment":{step},"qty_min":{p.ordermin}}}'
            )
        asset_rows = [
            f'{{"id":"{a}","status":"enabled","precision":{d},"precision_display":{min(d, 5)},'
            f'"borrowable":false,"collateral_value":1.00,"margin_rate":0.025000}}'
            for a, d in sorted(assets.items())
        ]
        return ('{"channel":"instrument","type":"snapshot","data":{"assets":['
                + ",".join(asset_rows) + '],"pairs":[' + ",".join(pairs) + "]}}")

    # -- public channels --------------------------------------------------------------------

    def start_public(self, s: Session, sub: Sub, chan_id: int, snapshot: bool) -> None:
        if self.capture is not None:
            replay_feed.on_subscribe(self, s, sub)
            return
        pm = self.market.pairs[sub.symbol]
        snap = snapshot or (sub.version == 1 and sub.channel == "trade" and
                            self.cfg.trade_snapshot_v1)
        for text in snapshot_texts(sub, pm, chan_id, time.time(), snap):
            s.send_text(text, sub.channel)
        if self.cfg.max_speed:
            fastpath.restart_synthetic_pump(self, s)

    def stop_public(self, s: Session, sub: Sub) -> None:
        if self.capture is not None:
            replay_feed.on_unsubscribe(self, s, sub)
        elif self.cfg.max_speed:
            fastpath.restart_synthetic_pump(self, s)

    def publish(self, events: list[Event]) -> None:
        sessions = [s for s in self.sessions if s.subs and not s.closed]
        for ev in events:
            symbol = ev.pm.pair.symbol
            for s in sessions:
                for sub, cid in s.subs.values():
                    if sub.symbol != symbol:
                        continue
                    if (s.corrupt and symbol in s.corrupt and sub.channel == "book"
                            and isinstance(ev, BookEvent)):
                        text = render_event(sub, ev, cid, corrupt=True)
                        if text is not None:
                            s.corrupt.discard(symbol)
                            s.send_text(text, "book")
                            continue
                    frame = event_frame(sub, ev, cid)
                    if frame is not None:
                        s.send(frame, sub.channel)
            if isinstance(ev, TradeEvent):
                self.fill(ev)

    # -- private channels -------------------------------------------------------------------

    def private_snapshot(self, s: Session, ps: PrivSub, snapshot: bool) -> None:
        self._start_fills()
        a = self.account
        if ps.name == "ownTrades":
            if snapshot:
                entries = [acct.v1_trade_entry(f) for f in list(a.fills)[-50:]]
                s.send_text(acct.v1_frame(entries, "ownTrades", ps.next_seq()), "ownTrades")
        elif ps.name == "openOrders":
            if snapshot:
                entries = [acct.v1_order_full(o, "open") for o in a.orders.values()]
                s.send_text(acct.v1_frame(entries, "openOrders", ps.next_seq()), "openOrders")
        elif ps.name == "executions":
            if snapshot:
                entries = []
                if ps.options.get("snap_orders", True) is not False:
                    entries += [acct.v2_order_entry(o, "new", "new", o.opentm)
                                for o in a.orders.values()]
                if ps.options.get("snap_trades"):
                    entries += [acct.v2_trade_entry(f) for f in list(a.fills)[-50:]]
                s.send_text(acct.v2_frame("executions", "snapshot", entries, ps.next_seq()),
                            "executions")
        elif ps.name == "balances" and snapshot:
            s.send_text(acct.v2_frame("balances", "snapshot", acct.v2_balance_snapshot(a),
                                      ps.next_seq()), "balances")

    def _start_fills(self) -> None:
        """Where publish() does not run, trades reach the demo account another way."""
        if self.fill_task is not None:
            return
        if self.capture is not None:
            self.fill_task = asyncio.create_task(replay_feed.drive_fills(self))
        elif self.cfg.max_speed:
            self.fill_task = asyncio.create_task(self.account_loop())
        else:
            return
        self.fill_task.add_done_callback(_log_crash)

    def fill(self, trades: TradeEvent) -> None:
        update = self.account.on_trades(trades)
        if update is not None:
            self.publish_private(update)

    async def account_loop(self) -> None:
        """--speed max: the public streams are pre-built loops, so the demo account trades on
        a clock of its own, --rate market steps per second from the first private
        subscription on, connected or not (an outage has fills to catch up). Each step's
        book changes are undone at once: the books stay where every looped cycle expects
        them."""
        tick = 0.05
        budget = 0.0
        while True:
            await asyncio.sleep(tick)
            if self.paused:
                continue
            budget += self.cfg.rate * tick
            while budget >= 1.0:
                budget -= 1.0
                events = self.market.step()
                for ev in reversed(events):
                    if isinstance(ev, BookEvent):
                        apply_undo(ev, ev.time)
                for ev in events:
                    if isinstance(ev, TradeEvent):
                        self.fill(ev)

    def publish_private(self, u: Update) -> None:
        for s in self.sessions:
            if not s.priv or s.closed:
                continue
            for ps in list(s.priv.values()):
                if ps.name in ("ownTrades", "openOrders"):
                    for body in acct.v1_messages(u, ps.name):
                        s.send_text(acct.v1_frame([body], ps.name, ps.next_seq()), ps.name)
                elif ps.name == "executions":
                    for batch in acct.v2_execution_batches(u):
                        s.send_text(acct.v2_frame("executions", "update", batch, ps.next_seq()),
                                    "executions")
                elif ps.name == "balances":
                    entries = acct.v2_balance_entries(self.account, u)
                    s.send_text(acct.v2_frame("balances", "update", entries, ps.next_seq()),
                                "balances")

    # -- faults and status ------------------------------------------------------------------

    def set_status(self, status: str) -> None:
        if status not in STATUSES:
            raise FaultError(f"status must be one of {', '.join(STATUSES)}")
        log.info("system status -> %s", status)
        self.status = status
        for s in list(self.sessions):
            if not s.closed:
                s.send_text(self.status_text(s), "status")

    def invalidate_tokens(self, kick: bool) -> int:
        n = self.auth.invalidate_all()
        log.info("invalidated %d token(s)%s", n, " and dropped private connections" if kick else "")
        if kick:
            for s in list(self.sessions):
                if s.private and s.priv and not s.closed:
                    if s.version == 1:
                        s.send_text('{"errorMessage":"ESession:Invalid session","event":"error"}')
                    else:
                        s.send_text('{"error":"ESession:Invalid session","method":"subscribe",'
                                    '"status":"error","success":false}')
                    s.abort()
        return n

    def apply_fault(self, spec: dict) -> dict:
        kind = spec.get("kind")
        if kind == "status":
            self.set_status(spec.get("status", "maintenance"))
            return {"status": self.status}
        if kind == "invalidate_tokens":
            return {"invalidated": self.invalidate_tokens(bool(spec.get("kick", False)))}
        if kind == "reject_subscribes":
            self.faults.reject_subscribes = int(spec.get("count", 1))
            return {"reject_subscribes": self.faults.reject_subscribes}
        if kind == "rest_error":
            err = parse_rest_error(spec)
            self.faults.rest_errors.append(err)
            return {"error": err.error, "count": err.count}
        if kind == "clear":
            self.faults.persistent.clear()
            self.faults.reject_subscribes = 0
            self.faults.rest_errors.clear()
            return {}
        rule: Rule = parse_rule(spec)
        targets = [s for s in list(self.sessions) if not s.closed and rule.matches(s.endpoint)]
        only = spec.get("only")
        if only is not None:
            # One connection of a client that keeps several (e.g. a redundant one).
            if only not in ("oldest", "newest"):
                raise FaultError("only must be oldest or newest")
            targets = sorted(targets, key=lambda s: s.opened)
            targets = targets[:1] if only == "oldest" else targets[-1:]
        for s in targets:
            s.arm(rule)
        if spec.get("persistent"):
            self.faults.persistent.append(rule)
        return {"armed": len(targets)}

    def stats_dict(self) -> dict:
        open_by: dict[str, int] = defaultdict(int)
        for s in self.sessions:
            if not s.closed:
                open_by[s.endpoint] += 1
        return {
            "status": self.status,
            "mode": "replay" if self.capture else "synthetic",
            "connections": sum(open_by.values()),
            "connections_by_endpoint": dict(open_by),
            "connections_total": self.stats.connections_total,
            "messages_total": self.stats.total,
            "messages": {k: dict(v) for k, v in self.stats.messages.items()},
            "faults": dict(self.stats.faults),
            "tokens_issued": len(self.auth.tokens),
            "replay_finished": self.stats.replay_finished,
            "trade_ids": {sym: pm.trade_id for sym, pm in self.market.pairs.items()},
            "fills": len(self.account.fills),
        }

    # -- serving ----------------------------------------------------------------------------

    def _route(self, connection: ServerConnection, request: Request):
        if request.path.split("?")[0] not in PATHS:
            return connection.respond(404, "Unknown endpoint\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        endpoint = PATHS[ws.request.path.split("?")[0]]
        s = Session(self, ws, endpoint)
        self.sessions.add(s)
        self.stats.connections_total += 1
        log.info("conn %s: open on %s", s.conn_id, endpoint)
        try:
            await s.run()
        finally:
            self.sessions.discard(s)
            self.auth.release(s.conn_id)
            log.info("conn %s: closed", s.conn_id)

    async def feed_loop(self) -> None:
        """Synthetic market in real time: --rate messages per second, times --speed."""
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
            if self.paused:
                continue
            budget += rate * tick
            while budget >= 1.0:
                budget -= 1.0
                try:
                    self.publish(self.market.step())
                except Exception:  # one bad message must not stop the market
                    log.exception("feed step failed")

    async def _scheduled(self) -> None:
        cfg = self.cfg
        jobs = []
        if cfg.maintenance_after is not None:
            jobs.append((cfg.maintenance_after, lambda: self.set_status("maintenance")))
            jobs.append((cfg.maintenance_after + cfg.maintenance_seconds,
                         lambda: self.set_status("online")))
        if cfg.invalidate_tokens_after is not None:
            jobs.append((cfg.invalidate_tokens_after, lambda: self.invalidate_tokens(False)))
        start = time.monotonic()
        for at, job in sorted(jobs, key=lambda j: j[0]):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            job()


async def serve_forever(cfg: SimConfig, capture: Capture | None = None) -> None:
    loop = asyncio.get_running_loop()
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
    urls = {name: f"ws://{host}:{ws_port}{path}" for name, path in URL_PATHS.items()}
    urls["rest"] = f"http://{host}:{rest.port}"
    print(json.dumps(urls), flush=True)
    log.info("serving %s", "replay of " + str(cfg.replay) if capture else
             f"synthetic {','.join(cfg.pairs)} at {cfg.rate:g} msg/s x {cfg.speed:g}")

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(sim._scheduled())]
    if capture is None and not cfg.max_speed:
        tasks.append(asyncio.create_task(sim.feed_loop()))
    for t in tasks:
        t.add_done_callback(_log_crash)
    await stop.wait()
    log.info("stopping")
    for t in tasks + ([sim.fill_task] if sim.fill_task else []):
        t.cancel()
    ws_server.close(close_connections=False)
    for s in list(sim.sessions):
        s.abort()
    rest.stop()


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
