"""WebSocket API v1 requests: ping, subscribe and unsubscribe, with Kraken's replies.

Replies are JSON objects with keys in alphabetical order, as Kraken sends them; one
subscriptionStatus per pair.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from recorder.exchanges.kraken.pairs import by_v1_name
from recorder.simulator.kraken.channels import PUBLIC_CHANNELS, Sub
from recorder.simulator.kraken.market import DEPTHS, INTERVALS
from recorder.simulator.kraken.session import PrivSub

if TYPE_CHECKING:
    from recorder.simulator.kraken.session import Session

PRIVATE_CHANNELS = ("ownTrades", "openOrders")
PRIVATE_ON_PUBLIC = (
    "Private data and trading are unavailable on this endpoint. Try ws-auth.kraken.com"
)
PUBLIC_ON_PRIVATE = (
    "Public market data subscriptions are unavailable on this endpoint. Try ws.kraken.com"
)


def dumps(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _reply(s: Session, obj: dict, reqid: object) -> None:
    if reqid is not None:
        obj["reqid"] = reqid
    s.send_text(dumps(obj))


def _error(s: Session, message: str, reqid: object, sub: object, pair: str | None = None) -> None:
    obj: dict = {"errorMessage": message, "event": "subscriptionStatus", "status": "error"}
    if pair is not None:
        obj["pair"] = pair
    if sub is not None:
        obj["subscription"] = sub
    _reply(s, obj, reqid)


async def handle(s: Session, text: str) -> None:
    try:
        msg = json.loads(text)
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        s.send_text('{"errorMessage":"Malformed request","event":"error"}')
        return
    event = msg.get("event")
    reqid = msg.get("reqid")
    if event == "ping":
        _reply(s, {"event": "pong"}, reqid)
    elif event in ("subscribe", "unsubscribe"):
        _subscription(s, msg, event, reqid)
    else:
        _reply(s, {"errorMessage": "Unsupported event", "event": "error"}, reqid)


def _subscription(s: Session, msg: dict, event: str, reqid: object) -> None:
    sim = s.sim
    sub = msg.get("subscription")
    if not isinstance(sub, dict):
        _error(s, "Subscription field must be an object", reqid, sub)
        return
    name = sub.get("name")
    if event == "subscribe" and sim.faults.take_reject():
        _reply(s, {"errorMessage": "Exceeded msg rate", "event": "error"}, reqid)
        return
    if name in PRIVATE_CHANNELS:
        if not s.private:
            _error(s, PRIVATE_ON_PUBLIC, reqid, sub)
        else:
            _private(s, sub, name, event, reqid)
        return
    if name not in PUBLIC_CHANNELS:
        _error(s, "Subscription name invalid", reqid, sub)
        return
    if s.private:
        _error(s, PUBLIC_ON_PRIVATE, reqid, sub)
        return
    pairs = msg.get("pair")
    if pairs is None:
        _error(s, "Pair(s) not found", reqid, sub)
        return
    if not isinstance(pairs, list):
        _error(s, "Pair field must be an array", reqid, sub)
        return
    depth = interval = 0
    problem = None
    if name == "book":
        depth = sub.get("depth", 10)
        if not isinstance(depth, int) or isinstance(depth, bool):
            problem = "Subscription book depth must be an integer"
        elif depth not in DEPTHS:
            problem = "Subscription depth not supported"
    elif name == "ohlc":
        interval = sub.get("interval", 1)
        if not isinstance(interval, int) or isinstance(interval, bool):
            problem = "Subscription ohlc interval must be an integer"
        elif interval not in INTERVALS:
            problem = "Subscription ohlc interval not supported"
    ack_sub: dict = {"name": name}
    if depth:
        ack_sub["depth"] = depth
    if interval:
        ack_sub["interval"] = interval
    for pair_name in pairs:
        if problem:
            _error(s, problem, reqid, sub, pair_name if isinstance(pair_name, str) else None)
            continue
        if not isinstance(pair_name, str) or "/" not in pair_name:
            _error(s, f"Currency pair not in ISO 4217-A3 format {pair_name}", reqid, sub,
                   pair_name if isinstance(pair_name, str) else None)
            continue
        pair = by_v1_name(pair_name)
        if pair is None or not sim.serves(pair.symbol, s.version):
            _error(s, f"Currency pair not supported {pair_name}", reqid, sub, pair_name)
            continue
        want = Sub(1, name, pair.symbol, depth, interval)
        current = s.subs.get(want.slot)
        if event == "subscribe":
            if current is not None:
                _error(s, "Already subscribed", reqid, sub, pair_name)
                continue
            chan_id = sim.chan_ids.get(want.v1_name, pair.wsname)
            _reply(s, {
                "channelID": chan_id, "channelName": want.v1_name, "event": "subscriptionStatus",
                "pair": pair_name, "status": "subscribed", "subscription": ack_sub,
            }, reqid)
            s.subs[want.slot] = (want, chan_id)
            sim.start_public(s, want, chan_id, snapshot=bool(sub.get("snapshot", False)))
        else:
            if current is None or current[0] != want:
                _error(s, "Subscription Not Found", reqid, sub, pair_name)
                continue
            del s.subs[want.slot]
            _reply(s, {
                "channelID": current[1], "channelName": want.v1_name,
                "event": "subscriptionStatus", "pair": pair_name, "status": "unsubscribed",
                "subscription": ack_sub,
            }, reqid)
            sim.stop_public(s, want)


def _private(s: Session, sub: dict, name: str, event: str, reqid: object) -> None:
    sim = s.sim
    token = sub.get("token")
    if not sim.auth.token_ok(token, s.conn_id):
        _error(s, "ESession:Invalid session", reqid, sub)
        return
    ack_sub: dict = {"name": name}
    if name == "openOrders" and sub.get("ratecounter"):
        ack_sub["maxratecount"] = 125
    if event == "subscribe":
        if name in s.priv:
            _error(s, "Already subscribed", reqid, sub)
            return
        sim.auth.bind(token, s.conn_id)
        ps = s.priv[name] = PrivSub(name, token, options=dict(sub))
        _reply(s, {"channelName": name, "event": "subscriptionStatus", "status": "subscribed",
                   "subscription": ack_sub}, reqid)
        sim.private_snapshot(s, ps, snapshot=sub.get("snapshot", True) is not False)
    else:
        if name not in s.priv:
            _error(s, "Subscription Not Found", reqid, sub)
            return
        del s.priv[name]
        _reply(s, {"channelName": name, "event": "subscriptionStatus", "status": "unsubscribed",
                   "subscription": ack_sub}, reqid)
