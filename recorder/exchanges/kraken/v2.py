"""Kraken WebSocket API v2: subscribe requests and pure frame -> row parsing.

Raw message shapes (numbers are bare JSON numbers that keep the pair's precision, e.g.
``0.00100000``; they are decoded to their exact text, never to floats):

    {"channel":"status","type":"update","data":[{"api_version":"v2","connection_id":1826...,
     "system":"online","version":"2.0.10"}]}
    {"channel":"heartbeat"}
    {"method":"subscribe","req_id":11,"result":{"channel":"book","depth":10,"snapshot":true,
     "symbol":"BTC/USD"},"success":true,"time_in":"...","time_out":"..."}
    {"error":"Currency pair not supported XBT/USD","method":"subscribe","success":false,
     "symbol":"XBT/USD","time_in":"...","time_out":"..."}
    {"channel":"book","type":"snapshot"|"update","data":[{"symbol":"BTC/USD",
     "bids":[{"price":63501.6,"qty":0.63889204}],"asks":[...],"checksum":423379305,
     "timestamp":"2026-07-07T23:00:03.947173Z"}]}
    {"channel":"trade","type":"update","data":[{"symbol":"ETH/USD","side":"buy",
     "price":1774.14,"qty":0.00147959,"ord_type":"limit","trade_id":64175815,
     "timestamp":"2026-07-07T23:00:04.585581Z"}]}
    {"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD","bid":83744.2,
     "bid_qty":0.56251979,"ask":83744.3,"ask_qty":0.00044780,"last":83744.3,
     "volume":3156.84782110,"vwap":84174.6,"low":83163.6,"high":85247.4,"change":-429.3,
     "change_pct":-0.51,"trades":135262,"timestamp":"2026-09-25T17:48:26.844359Z"}]}
    {"channel":"ohlc","type":"update","timestamp":"2026-09-25T17:48:26.844359566Z",
     "data":[{"symbol":"BTC/USD","open":83729.5,"high":83745.2,"low":83729.4,"close":83744.3,
     "trades":33,"volume":0.21155628,"vwap":83736.4,"interval_begin":"2026-09-25T17:48:00Z",
     "interval":1,"timestamp":"2026-09-25T17:49:00.000000Z"}]}

On v2 the ``spread`` channel is the ticker with ``event_trigger: "bbo"``: its rows go to the
spread table. Kraken keeps one ticker stream per symbol and connection, so a connection
records a symbol's ticker either as spread or as ticker, never both (config validation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from recorder.exchanges.kraken.common import EXCHANGE, Control, Subscription, detail, event

API = "v2"
# float_hook=str keeps each JSON number's exact text ("0.00100000"), which both the exact
# decimal columns and the book checksum need.
decode = msgspec.json.Decoder(float_hook=str).decode


def subscribe_requests(sub: Subscription, req_id: int) -> list[str]:
    """The subscribe message for one configured subscription: all symbols in one request."""
    params: dict[str, Any] = {"symbol": list(sub.symbols)}
    if sub.channel == "book":
        params.update(channel="book", depth=sub.depth or 10, snapshot=True)
    elif sub.channel == "ohlc":
        params.update(channel="ohlc", interval=sub.interval or 1, snapshot=True)
    elif sub.channel == "spread":
        params.update(channel="ticker", event_trigger="bbo", snapshot=True)
    elif sub.channel == "ticker":
        params.update(channel="ticker", snapshot=True)
    elif sub.channel == "trade":
        params.update(channel="trade", snapshot=False)
    else:
        raise ValueError(f"not a public v2 channel: {sub.channel}")
    params = {"channel": params.pop("channel"), **params}
    return [msgspec.json.encode({"method": "subscribe", "params": params,
                                 "req_id": req_id}).decode()]


def book_resync_requests(symbol: str, depth: int, req_id: int) -> list[str]:
    """Unsubscribe and resubscribe one symbol's book: Kraken answers with a fresh snapshot.

    The subscribe carries ``req_id + 1``: Kraken names the method "subscribe" even in its
    error reply to an unsubscribe, so only the id tells a refused subscribe apart."""
    return [msgspec.json.encode({"method": method, "params": {
        "channel": "book", "symbol": [symbol], "depth": depth, **extra}, "req_id": req_id + i}
    ).decode() for i, (method, extra) in enumerate((("unsubscribe", {}),
                                                   ("subscribe", {"snapshot": True})))]


def ping_request(req_id: int) -> str:
    return f'{{"method":"ping","req_id":{req_id}}}'


def _text(v: Any) -> str | None:
    # Integers decode as int (a price of 1774 at precision 0); their text is exact too.
    return v if v is None or type(v) is str else str(v)


def parse(msg: Any, ts_recv: int, update_id: int, out: dict[str, list[tuple]],
          bbo_symbols: frozenset[str] = frozenset(),
          book_depths: dict[str, int] | None = None,
          req_channels: dict[int, str] | None = None) -> Control | None:
    """Append the rows of one decoded v2 frame to ``out``; return a Control for non-data frames.

    ``bbo_symbols`` are the symbols whose ticker stream is a spread subscription;
    ``book_depths`` the subscribed book depth per symbol (v2 book messages do not say);
    ``req_channels`` the channel of each subscribe request by ``req_id`` (Kraken's error
    replies name the symbol and the request, not the channel).
    """
    if type(msg) is not dict:
        out["events"].append(event(EXCHANGE, ts_recv, "malformed",
                                   detail=detail(reason="not a JSON object")))
        return Control("error", "malformed")
    channel = msg.get("channel")
    if channel == "book":
        _book(msg, ts_recv, update_id, out["book"], book_depths or {})
        return None
    if channel == "trade":
        _trades(msg, ts_recv, out["trades"])
        return None
    if channel == "ticker":
        for t in msg["data"]:
            if t["symbol"] in bbo_symbols:
                out["spread"].append((EXCHANGE, t["symbol"], t.get("timestamp"), ts_recv,
                                      _text(t["bid"]), _text(t["bid_qty"]), _text(t["ask"]),
                                      _text(t["ask_qty"])))
            else:
                _ticker(t, ts_recv, out["ticker"])
        return None
    if channel == "ohlc":
        rows = out["ohlc"]
        ts = msg.get("timestamp")
        for c in msg["data"]:
            rows.append((EXCHANGE, c["symbol"], int(c["interval"]), c["interval_begin"], ts,
                         ts_recv, _text(c["open"]), _text(c["high"]), _text(c["low"]),
                         _text(c["close"]), _text(c["vwap"]), _text(c["volume"]),
                         int(c["trades"]), "ws"))
        return None
    if channel == "heartbeat":
        return Control("heartbeat")
    if channel == "status":
        info = (msg.get("data") or [{}])[0]
        system = info.get("system")
        out["events"].append(event(EXCHANGE, ts_recv, "status",
                                   detail=detail(status=system, version=info.get("version"),
                                                 connection_id=info.get("connection_id"))))
        return Control("status", system)
    method = msg.get("method")
    if method is not None:
        return _method_reply(msg, method, ts_recv, out, req_channels)
    out["events"].append(event(EXCHANGE, ts_recv, "unknown_event", channel=channel,
                               detail=detail(frame=msgspec.json.encode(msg).decode()[:500])))
    return None


def parser(bbo_symbols: frozenset[str] = frozenset(),
           book_depths: dict[str, int] | None = None,
           req_channels: dict[int, str] | None = None
           ) -> Callable[[Any, int, int, dict[str, list[tuple]]], Control | None]:
    """``parse`` with a connection's settings bound, for the receive loop: book and trade
    frames go straight to their row builders (a ``partial`` with keywords cost more than
    the trade rows it made)."""
    depths = book_depths or {}

    def parse_frame(msg: Any, ts_recv: int, update_id: int,
                    out: dict[str, list[tuple]]) -> Control | None:
        if msg.__class__ is dict:
            channel = msg.get("channel")
            if channel == "book":
                _book(msg, ts_recv, update_id, out["book"], depths)
                return None
            if channel == "trade":
                _trades(msg, ts_recv, out["trades"])
                return None
        return parse(msg, ts_recv, update_id, out, bbo_symbols, depths, req_channels)

    return parse_frame


def _book(msg: dict, ts_recv: int, update_id: int, rows: list[tuple],
          depths: dict[str, int]) -> None:
    snapshot = msg.get("type") == "snapshot"
    append = rows.append
    for d in msg["data"]:
        symbol = d["symbol"]
        depth = depths.get(symbol)
        ts = d.get("timestamp")
        crc = d.get("checksum")
        # What the frame claims: verified when it carries a checksum. The book keeper
        # compares it and marks the rows False when the book does not match.
        claimed = crc is not None
        for side, key in (("bid", "bids"), ("ask", "asks")):
            for lv in d.get(key) or ():
                price, qty = lv["price"], lv["qty"]
                if price.__class__ is not str or qty.__class__ is not str:
                    price, qty = _text(price), _text(qty)
                append((EXCHANGE, symbol, ts, ts_recv, side, price, qty, snapshot, update_id,
                        crc, False, depth, None, claimed))


def _trades(msg: dict, ts_recv: int, rows: list[tuple]) -> None:
    for t in msg["data"]:
        rows.append((EXCHANGE, t["symbol"], t.get("timestamp"), ts_recv, _text(t["price"]),
                     _text(t["qty"]), t.get("side"), _text(t.get("trade_id")),
                     t.get("ord_type"), None, None, "ws"))


def _ticker(t: dict, ts_recv: int, rows: list[tuple]) -> None:
    g = t.get
    rows.append((EXCHANGE, t["symbol"], g("timestamp"), ts_recv, _text(g("bid")),
                 _text(g("bid_qty")), _text(g("ask")), _text(g("ask_qty")), _text(g("last")),
                 None, _text(g("volume")), None, _text(g("vwap")), None, _text(g("low")), None,
                 _text(g("high")), None, None, None, _text(g("change")),
                 _text(g("change_pct")), g("trades"), None))


def _method_reply(msg: dict, method: str, ts_recv: int, out: dict[str, list[tuple]],
                  req_channels: dict[int, str] | None) -> Control | None:
    if method == "pong":
        return Control("pong")
    result = msg.get("result") or {}
    channel = result.get("channel") or msg.get("channel")
    if channel is None and req_channels:
        channel = req_channels.get(msg.get("req_id"))
    if channel == "ticker" and result.get("event_trigger") == "bbo":
        channel = "spread"
    if channel == "executions":
        channel = "fills"
    symbol = result.get("symbol") or msg.get("symbol")
    if msg.get("success"):
        kind = "subscribed" if method == "subscribe" else "unsubscribed"
        out["events"].append(event(EXCHANGE, ts_recv, kind, symbol=symbol, channel=channel,
                                   detail=detail(req_id=msg.get("req_id"),
                                                 depth=result.get("depth"),
                                                 interval=result.get("interval"),
                                                 warnings=result.get("warnings"))))
        return Control(kind, None, channel, symbol)
    err = msg.get("error")
    kind = "subscribe_error" if method in ("subscribe", "unsubscribe") else "error"
    out["events"].append(event(EXCHANGE, ts_recv, kind, symbol=symbol, channel=channel,
                               detail=detail(error=err, method=method,
                                             req_id=msg.get("req_id"))))
    return Control("subscribe_error" if method == "subscribe" else "error", err, channel, symbol,
                   {"reqid": msg.get("req_id")})
