"""Kraken WebSocket API v1: subscribe requests and pure frame -> row parsing.

Raw message shapes (v1 puts every decimal in a string; the channel name and pair come last):

    {"connectionID":1823...,"event":"systemStatus","status":"online","version":"1.8.3"}
    {"channelID":1664,"channelName":"book-1000","event":"subscriptionStatus",
     "pair":"WAVES/EUR","status":"subscribed","subscription":{"depth":1000,"name":"book"}}
    {"event":"heartbeat"}
    [993,[["354.11000000","0.89594024","1618678142.557535","s","l",""]],"trade","XMR/USD"]
    [0,{"as":[[price,qty,ts],...],"bs":[...]},"book-10","XBT/USD"]          snapshot
    [336,{"b":[[price,qty,ts],[price,qty,ts,"r"]],"c":"3139033408"},"book-10","XBT/USD"]
    [1920,{"a":[[...]]},{"b":[[...]],"c":"4105471083"},"book-1000","SC/EUR"]  both sides
    [0,["5698.40000","5700.00000","1542057299.545897","1.01234567","0.98765432"],"spread","XBT/USD"]
    [42,["1542057314.748456","1542057360.435743",open,high,low,close,vwap,volume,2],"ohlc-5","XBT/USD"]
    [340,{"a":[price,wholeLot,lot],"b":[...],"c":[price,lot],"v":[today,24h],"p":[..],
          "t":[int,int],"l":[..],"h":[..],"o":[..]},"ticker","XBT/USD"]
"""

from __future__ import annotations

from typing import Any

import msgspec

from recorder.exchanges.kraken.common import (
    EXCHANGE,
    Control,
    Subscription,
    canonical,
    detail,
    epoch_us,
    event,
)
from recorder.exchanges.kraken.pairs import v1_name

API = "v1"
decode = msgspec.json.Decoder().decode

_SIDE_TAKER = {"b": "buy", "s": "sell"}
# channelName -> depth for the book channels Kraken offers (int(name[5:]) per frame cost
# more than the lookup).
_BOOK_DEPTHS = {f"book-{d}": d for d in (10, 25, 100, 500, 1000)}
_ORD_TYPE = {"l": "limit", "m": "market"}


def subscribe_requests(sub: Subscription, reqid: int) -> list[str]:
    """The subscribe message(s) for one configured subscription: all symbols in one request."""
    body: dict[str, Any] = {"name": _v1_channel(sub.channel)}
    if sub.channel == "book":
        body["depth"] = sub.depth or 10
    if sub.channel == "ohlc":
        body["interval"] = sub.interval or 1
    msg = {"event": "subscribe", "pair": [v1_name(s) for s in sub.symbols],
           "subscription": body, "reqid": reqid}
    return [msgspec.json.encode(msg).decode()]


def book_resync_requests(symbol: str, depth: int, reqid: int) -> list[str]:
    """Unsubscribe and resubscribe one pair's book: Kraken answers with a fresh snapshot.

    The subscribe carries ``reqid + 1``, so a refusal of the subscribe is told apart from
    a reply to the unsubscribe (e.g. "Subscription Not Found" on a retry)."""
    sub = {"name": "book", "depth": depth}
    return [msgspec.json.encode({"event": event, "pair": [v1_name(symbol)],
                                 "subscription": sub, "reqid": reqid + i}).decode()
            for i, event in enumerate(("unsubscribe", "subscribe"))]


def ping_request(reqid: int) -> str:
    return f'{{"event":"ping","reqid":{reqid}}}'


def _v1_channel(channel: str) -> str:
    return {"fills": "ownTrades"}.get(channel, channel)


def _channel_of(name: str) -> str:
    """v1 channelName -> our channel: book-10 -> book, ohlc-5 -> ohlc."""
    return name.split("-", 1)[0]


def parse(msg: Any, ts_recv: int, update_id: int, out: dict[str, list[tuple]]) -> Control | None:
    """Append the rows of one decoded v1 frame to ``out``; return a Control for non-data frames.

    ``ts_recv`` is integer microseconds; ``update_id`` numbers this frame within the
    connection so book rows of one message can be grouped.
    """
    if type(msg) is list:
        if type(msg[-1]) is not str:
            return _private(msg, ts_recv, out)
        name = msg[-2]
        symbol = canonical(msg[-1])
        depth = _BOOK_DEPTHS.get(name)
        if depth is not None or name.startswith("book"):
            _book(msg, symbol, depth or int(name[5:]), ts_recv, update_id, out["book"])
        elif name == "trade":
            rows = out["trades"]
            for t in msg[1]:
                trade_id = str(t[6]) if len(t) > 6 and t[6] is not None else None
                rows.append((EXCHANGE, symbol, epoch_us(t[2]), ts_recv, t[0], t[1],
                             _SIDE_TAKER.get(t[3]),
                             trade_id, _ORD_TYPE.get(t[4], t[4]), t[5] or None, None, "ws"))
        elif name == "spread":
            s = msg[1]
            out["spread"].append((EXCHANGE, symbol, epoch_us(s[2]), ts_recv, s[0], s[3], s[1],
                                  s[4]))
        elif name.startswith("ohlc"):
            _ohlc(msg[1], symbol, int(name[5:]), ts_recv, out["ohlc"])
        elif name == "ticker":
            _ticker(msg[1], symbol, ts_recv, out["ticker"])
        else:
            out["events"].append(event(EXCHANGE, ts_recv, "unknown_channel", symbol=symbol,
                                       channel=name,
                                       detail=detail(frame=msgspec.json.encode(msg).decode()[:500])))
        return None
    if type(msg) is dict:
        return _event(msg, ts_recv, out)
    out["events"].append(event(EXCHANGE, ts_recv, "malformed",
                               detail=detail(reason="not a JSON array or object")))
    return Control("error", "malformed")


def _book(msg: list, symbol: str, depth: int, ts_recv: int, update_id: int,
          rows: list[tuple]) -> None:
    # ts_exchange stays the level's epoch text ("1618678142.557535"): the sink converts the
    # column exactly in Arrow, a Python conversion per level was a fifth of the parse.
    first = msg[1]
    append = rows.append
    if len(msg) == 4:  # one object: a snapshot, or an update of one side
        checksum = first.get("c")
        if checksum is None and ("as" in first or "bs" in first):
            for side, key in (("ask", "as"), ("bid", "bs")):
                for lv in first.get(key, ()):
                    append((EXCHANGE, symbol, lv[2], ts_recv, side, lv[0], lv[1], True,
                            update_id, None, False, depth, None, None))
            return
        parts = (first,)
    else:  # both sides: "c" is in the last object
        parts = msg[1:-2]
        checksum = parts[-1].get("c")
    crc = int(checksum) if checksum is not None else None
    # What the frame claims: verified when it carries a checksum. The book keeper compares
    # it and marks the rows False when the book does not match.
    claimed = crc is not None
    for part in parts:
        for side, key in (("ask", "a"), ("bid", "b")):
            for lv in part.get(key) or ():
                append((EXCHANGE, symbol, lv[2], ts_recv, side, lv[0], lv[1], False,
                        update_id, crc, len(lv) > 3 and lv[3] == "r", depth, None, claimed))


def _ohlc(c: list, symbol: str, interval: int, ts_recv: int, rows: list[tuple]) -> None:
    # c = [time (last update), etime (end of the interval), open, high, low, close, vwap,
    # volume, count]; the candle began one interval before its end.
    end_seconds = int(c[1].partition(".")[0])
    begin = (end_seconds - interval * 60) * 1_000_000
    rows.append((EXCHANGE, symbol, interval, begin, epoch_us(c[0]), ts_recv, c[2], c[3], c[4],
                 c[5],
                 c[6], c[7], int(c[8]), "ws"))


def _ticker(t: dict, symbol: str, ts_recv: int, rows: list[tuple]) -> None:
    # Each of v/p/l/h/o/t is [today, last 24 hours]; the 24-hour values are the main columns.
    a, b, c = t["a"], t["b"], t["c"]
    v, p, lo, hi, op, n = t["v"], t["p"], t["l"], t["h"], t["o"], t["t"]
    rows.append((EXCHANGE, symbol, None, ts_recv, b[0], b[2], a[0], a[2], c[0], c[1],
                 v[1], v[0], p[1], p[0], lo[1], lo[0], hi[1], hi[0], op[1], op[0],
                 None, None, int(n[1]), int(n[0])))


def _event(msg: dict, ts_recv: int, out: dict[str, list[tuple]]) -> Control | None:
    kind = msg.get("event")
    if kind == "heartbeat":
        return Control("heartbeat")
    if kind == "pong":
        return Control("pong")
    events = out["events"]
    if kind == "systemStatus":
        status = msg.get("status")
        events.append(event(EXCHANGE, ts_recv, "status",
                            detail=detail(status=status, version=msg.get("version"),
                                          connection_id=msg.get("connectionID"))))
        return Control("status", status)
    if kind == "subscriptionStatus":
        status = msg.get("status")
        sub = msg.get("subscription") or {}
        channel = _channel_of(msg.get("channelName") or sub.get("name") or "")
        if channel == "ownTrades":
            channel = "fills"
        pair = msg.get("pair")
        symbol = canonical(pair) if isinstance(pair, str) else None
        if status == "error":
            err = msg.get("errorMessage")
            events.append(event(EXCHANGE, ts_recv, "subscribe_error", symbol=symbol,
                                channel=channel,
                                detail=detail(error=err, reqid=msg.get("reqid"),
                                              depth=sub.get("depth"),
                                              interval=sub.get("interval"))))
            return Control("subscribe_error", err, channel, symbol,
                           {"reqid": msg.get("reqid")})
        kind = "subscribed" if status == "subscribed" else "unsubscribed"
        events.append(event(EXCHANGE, ts_recv, kind, symbol=symbol, channel=channel,
                            detail=detail(channel_name=msg.get("channelName"),
                                          channel_id=msg.get("channelID"), reqid=msg.get("reqid"))))
        return Control(kind, None, channel, symbol)
    if kind == "error":
        err = msg.get("errorMessage")
        events.append(event(EXCHANGE, ts_recv, "error",
                            detail=detail(error=err, reqid=msg.get("reqid"))))
        # e.g. "Exceeded msg rate": Kraken names no channel, only the request's reqid.
        return Control("error", err, extra={"reqid": msg.get("reqid")})
    events.append(event(EXCHANGE, ts_recv, "unknown_event",
                        detail=detail(frame=msgspec.json.encode(msg).decode()[:500])))
    return None


def _private(msg: list, ts_recv: int, out: dict[str, list[tuple]]) -> Control | None:
    # [payload, "ownTrades"|"openOrders", {"sequence": n}]: the private feeds are not
    # normalized yet; they are recorded as events so nothing disappears unseen.
    name = msg[-2] if len(msg) > 1 and isinstance(msg[-2], str) else None
    out["events"].append(event(EXCHANGE, ts_recv, "unsupported_channel", channel=name,
                               detail=detail(frame=msgspec.json.encode(msg).decode()[:500])))
    return None
