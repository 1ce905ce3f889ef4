"""WebSocket API v2 requests: ping, subscribe and unsubscribe, with Kraken's replies.

Every reply carries ``time_in``/``time_out`` and echoes ``req_id`` only when the request had
one; keys are in alphabetical order, as in real captures.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from recorder.exchanges.kraken.pairs import by_v2_name
from recorder.simulator.kraken.channels import Sub
from recorder.simulator.kraken.market import DEPTHS, INTERVALS
from recorder.simulator.kraken.proto_v1 import PRIVATE_ON_PUBLIC, PUBLIC_ON_PRIVATE, dumps
from recorder.simulator.kraken.session import PrivSub
from recorder.simulator.wire import iso

if TYPE_CHECKING:
    from recorder.simulator.kraken.session import Session

PUBLIC = ("book", "trade", "ticker", "ohlc", "instrument")
PRIVATE = ("executions", "balances")


def _reply(s: Session, obj: dict, req_id: object, time_in: str) -> None:
    if req_id is not None:
        obj["req_id"] = req_id
    obj["time_in"] = time_in
    obj["time_out"] = iso(time.time())
    s.send_text(dumps(obj))


def _error(
    s: Session, method: str, message: str, req_id: object, time_in: str, **extra: object
) -> None:
    _reply(s, {"error": message, "method": method, "success": False, **extra}, req_id, time_in)


async def handle(s: Session, text: str) -> None:
    time_in = iso(time.time())
    try:
        msg = json.loads(text)
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        _reply(s, {"error": "Malformed request", "success": False}, None, time_in)
        return
    method = msg.get("method")
    req_id = msg.get("req_id")
    if method == "ping":
        if "params" in msg:
            _error(s, "ping", "Unsupported field: 'params' for the given msg type: ping",
                   req_id, time_in)
        else:
            _reply(s, {"method": "pong"}, req_id, time_in)
        return
    if method not in ("subscribe", "unsubscribe"):
        _error(s, str(method), "Unsupported event", req_id, time_in)
        return
    params = msg.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
        _error(s, method, "Malformed request", req_id, time_in)
        return
    if method == "subscribe" and s.sim.faults.take_reject():
        _error(s, method, "Exceeded msg rate", req_id, time_in)
        return
    channel = params["channel"]
    if channel in PRIVATE:
        if not s.private:
            _error(s, method, PRIVATE_ON_PUBLIC, req_id, time_in)
        else:
            _private(s, method, channel, params, req_id, time_in)
        return
    if channel not in PUBLIC:
        _error(s, method, "Subscription name invalid", req_id, time_in)
        return
    if s.private:
        _error(s, method, PUBLIC_ON_PRIVATE, req_id, time_in)
        return
    if channel == "instrument":
        _instrument(s, method, params, req_id, time_in)
        return
    _public(s, method, channel, params, req_id, time_in)


def _public(
    s: Session, method: str, channel: str, params: dict, req_id: object, time_in: str
) -> None:
    sim = s.sim
    symbols = params.get("symbol")
    if not isinstance(symbols, list) or not symbols:
        _error(s, method, "Malformed request", req_id, time_in)
        return
    depth = interval = 0
    if channel == "book":
        depth = params.get("depth", 10)
        if depth not in DEPTHS or isinstance(depth, bool):
            _error(s, method, "Subscription depth not supported", req_id, time_in)
            return
    if channel == "ohlc":
        # Optional in the v2 docs (no default written there); v1 documents 1, clients that
        # omit it get one-minute candles, and so do they here.
        interval = params.get("interval", 1)
        if interval not in INTERVALS or isinstance(interval, bool):
            _error(s, method, "Subscription interval not supported", req_id, time_in)
            return
    trigger = params.get("event_trigger", "trades")
    if channel == "ticker" and trigger not in ("trades", "bbo"):
        _error(s, method, "Malformed request", req_id, time_in)
        return
    default_snapshot = channel != "trade"
    snapshot = params.get("snapshot", default_snapshot) is not False
    for name in symbols:
        if not isinstance(name, str) or "/" not in name:
            _error(s, method, f"Currency pair not in ISO 4217-A3 format {name}", req_id, time_in,
                   symbol=name)
            continue
        pair = by_v2_name(name)
        if pair is None or not sim.serves(pair.symbol, s.version):
            _error(s, method, f"Currency pair not supported {name}", req_id, time_in,
                   symbol=name)
            continue
        want = Sub(2, channel, pair.symbol, depth, interval, trigger == "bbo")
        result: dict = {"channel": channel, "symbol": name}
        if depth:
            result["depth"] = depth
        if interval:
            result["interval"] = interval
        if channel == "ticker":
            result["event_trigger"] = trigger
        current = s.subs.get(want.slot)
        if method == "subscribe":
            if current is not None:
                _error(s, method, "Already subscribed", req_id, time_in, symbol=name)
                continue
            result["snapshot"] = snapshot
            if channel == "ohlc":
                result["warnings"] = ["timestamp is deprecated, use interval_begin"]
            _reply(s, {"method": method, "result": result, "success": True}, req_id, time_in)
            s.subs[want.slot] = (want, 0)
            sim.start_public(s, want, 0, snapshot=snapshot)
        else:
            if current is None or current[0] != want:
                # Kraken names the method "subscribe" in this reply even for an unsubscribe.
                _error(s, "subscribe", "Subscription Not Found", req_id, time_in, symbol=name)
                continue
            del s.subs[want.slot]
            _reply(s, {"method": method, "result": result, "success": True}, req_id, time_in)
            sim.stop_public(s, want)


def _instrument(s: Session, method: str, params: dict, req_id: object, time_in: str) -> None:
    result = {"channel": "instrument"}
    if method == "subscribe":
        result["snapshot"] = params.get("snapshot", True) is not False
    _reply(s, {"method": method, "result": result, "success": True}, req_id, time_in)
    if method == "subscribe" and result["snapshot"]:
        s.send_text(s.sim.instrument_text(), "instrument")


def _private(
    s: Session, method: str, channel: str, params: dict, req_id: object, time_in: str
) -> None:
    sim = s.sim
    token = params.get("token")
    if not sim.auth.token_ok(token, s.conn_id):
        _error(s, method, "ESession:Invalid session", req_id, time_in, channel=channel,
               status="error")
        return
    result: dict = {"channel": channel}
    if method == "subscribe":
        if channel in s.priv:
            _error(s, method, "Already subscribed", req_id, time_in, channel=channel)
            return
        if channel == "executions":
            if params.get("ratecounter"):
                result["maxratecount"] = 180
            result["snap_orders"] = params.get("snap_orders", True) is not False
            result["snap_trades"] = bool(params.get("snap_trades", False))
            result["snapshot"] = result["snap_orders"] or result["snap_trades"]
        else:
            result["snapshot"] = params.get("snapshot", True) is not False
        sim.auth.bind(token, s.conn_id)
        ps = s.priv[channel] = PrivSub(channel, token, options=dict(params))
        _reply(s, {"method": method, "result": result, "success": True}, req_id, time_in)
        sim.private_snapshot(s, ps, snapshot=result["snapshot"])
    else:
        if channel not in s.priv:
            _error(s, "subscribe", "Subscription Not Found", req_id, time_in, channel=channel)
            return
        del s.priv[channel]
        _reply(s, {"method": method, "result": result, "success": True}, req_id, time_in)
