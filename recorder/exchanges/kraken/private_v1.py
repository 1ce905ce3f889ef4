"""Kraken WebSocket API v1, private: ownTrades -> fills, openOrders -> orders.

Raw message shapes (every decimal is a string; the last element carries a sequence number
per channel that starts at 1, the snapshot, on each subscription):

    [[{"T5VKWY-X54ZN-5M7TUQ":{"cost":"45.000000","fee":"0.072000","margin":"0.000000",
       "ordertxid":"OEEGFU-I4ZZT-TUTBCS","ordertype":"limit","pair":"ATOM/USD",
       "postxid":"TKH2SE-M7IF5-CFI7LT","price":"9.000000","time":"1699987398.892228",
       "type":"buy","vol":"5.00000000"}}],"ownTrades",{"sequence":1}]
    [[{"O7AIWV-HEBBH-COCEUU":{"avg_price":"0.00000","cost":"0.00000","descr":{...,
       "ordertype":"limit","pair":"SOL/USD","price":"25.00000","price2":"0.00000",
       "type":"buy"},"opentm":"1700220661.985020","status":"pending","vol":"1.00000000",
       "vol_exec":"0.00000000",...}}],"openOrders",{"sequence":2}]
    [[{"O7AIWV-HEBBH-COCEUU":{"status":"open","userref":0}}],"openOrders",{"sequence":3}]
    [[{"O7AIWV-HEBBH-COCEUU":{"lastupdated":"1700220675.012776","status":"canceled",
       "vol_exec":"0.00000000","cost":"0.00000","fee":"0.00000","avg_price":"0.00000",
       "userref":0,"cancel_reason":"User requested"}}],"openOrders",{"sequence":4}]
    {"errorMessage":"ESession:Invalid session","event":"error"}

Kraken's v1 ``fee`` is in the pair's quote currency; ownTrades has no public trade id, so
``trade_id`` is Kraken's trade txid (the entry's key).
"""

from __future__ import annotations

from typing import Any

import msgspec

from recorder.exchanges.kraken import v1
from recorder.exchanges.kraken.common import EXCHANGE, Control, canonical, detail, epoch_us, event
from recorder.exchanges.kraken.private import (
    PrivateState,
    fill_key,
    fill_row,
    order_row,
    session_control,
)
from recorder.exchanges.reconcile import SNAPSHOT

API = "v1"
decode = msgspec.json.Decoder().decode
ping_request = v1.ping_request

_LIQUIDITY = {True: "maker", False: "taker"}
# Order columns taken from an openOrders entry; everything else goes to ``detail``.
_ORDER_FIELDS = frozenset({"status", "vol", "vol_exec", "avg_price", "descr", "lastupdated"})


def subscribe_requests(token: str, reqid: int) -> list[str]:
    """ownTrades with its snapshot (the last 50 fills) and openOrders (all open orders)."""
    return [msgspec.json.encode({"event": "subscribe", "reqid": reqid + i, "subscription": sub}
                                ).decode()
            for i, sub in enumerate((
                {"name": "ownTrades", "token": token, "snapshot": True},
                {"name": "openOrders", "token": token}))]


def parse(msg: Any, ts_recv: int, update_id: int, out: dict[str, list[tuple]],
          state: PrivateState, conn: int = 0) -> Control | None:
    """Append the rows of one decoded v1 private frame to ``out`` (``conn``: the number of
    the connection it came on)."""
    if state.notes:
        state.flush_notes(ts_recv, out)
    if (type(msg) is list and len(msg) >= 3 and type(msg[-1]) is dict
            and type(msg[-2]) is str and type(msg[0]) is list):
        name = msg[-2]
        seq = msg[-1].get("sequence")
        control = state.check_sequence(name, seq, ts_recv, out, conn)
        if name == "ownTrades":
            _own_trades(msg[0], seq == 1, ts_recv, out, state, conn)
            if seq == 1:
                state.subscribed()
        elif name == "openOrders":
            _open_orders(msg[0], seq == 1, ts_recv, out, state)
        else:
            out["events"].append(event(EXCHANGE, ts_recv, "unknown_channel", channel=name,
                                       detail=detail(frame=msgspec.json.encode(msg).decode()[:500])))
        return control
    return session_control(v1.parse(msg, ts_recv, update_id, out), state)


def _own_trades(entries: list, snapshot: bool, ts_recv: int, out: dict[str, list[tuple]],
                state: PrivateState, conn: int = 0) -> None:
    rows = out["fills"]
    received = new = 0
    for entry in entries:
        for txid, t in entry.items():
            received += 1
            symbol = canonical(t["pair"]) if t.get("pair") else None
            order_id = t.get("ordertxid")
            if order_id:
                state.learn_order(order_id, symbol, t.get("type"), t.get("ordertype"))
            if not state.is_new_fill(fill_key(symbol, txid, order_id),
                                     SNAPSHOT if snapshot else conn):
                continue
            new += 1
            maker = t.get("maker")
            rows.append(fill_row(
                exchange=EXCHANGE, symbol=symbol, ts_exchange=epoch_us(t.get("time")),
                ts_recv=ts_recv,
                order_id=order_id, trade_id=txid, side=t.get("type"), price=t.get("price"),
                qty=t.get("vol"), cost=t.get("cost"), fee=t.get("fee"),
                fee_currency=symbol.split("/")[1] if symbol else None,
                liquidity=_LIQUIDITY.get(maker) if isinstance(maker, bool) else None,
                ord_type=t.get("ordertype"), is_snapshot=snapshot))
    if snapshot or received != new:
        out["events"].append(event(EXCHANGE, ts_recv,
                                   "fills_snapshot" if snapshot else "duplicate_fill",
                                   channel="fills",
                                   detail=detail(received=received, new=new,
                                                 already_recorded=received - new)))


def _limit_price(descr: dict) -> str | None:
    # Kraken's descr: price is the limit for limit orders; for *-limit orders price is the
    # trigger and price2 the limit.
    kind = descr.get("ordertype") or ""
    if kind == "limit":
        return descr.get("price")
    if kind.endswith("-limit"):
        return descr.get("price2")
    return None


def _open_orders(entries: list, snapshot: bool, ts_recv: int, out: dict[str, list[tuple]],
                 state: PrivateState) -> None:
    rows = out["orders"]
    for entry in entries:
        for order_id, o in entry.items():
            descr = o.get("descr") or {}
            pair = descr.get("pair")
            if descr:
                state.learn_order(order_id, canonical(pair) if pair else None,
                                  descr.get("type"), descr.get("ordertype"))
            symbol, side, ord_type = state.order_info(order_id)
            status = o.get("status")
            # The time of this change: lastupdated; on a new order, its open time. A
            # snapshot entry or a bare status change carries no time of its own.
            ts = o.get("lastupdated") or (o.get("opentm") if status == "pending" else None)
            extra = {k: v for k, v in o.items() if k not in _ORDER_FIELDS}
            if descr:
                extra["descr_order"] = descr.get("order")
            rows.append(order_row(
                exchange=EXCHANGE, symbol=symbol, ts_exchange=epoch_us(ts), ts_recv=ts_recv,
                order_id=order_id, status=status, side=side, ord_type=ord_type,
                limit_price=_limit_price(descr) if descr else None, order_qty=o.get("vol"),
                filled_qty=o.get("vol_exec"), avg_price=o.get("avg_price"),
                is_snapshot=snapshot, detail=detail(snapshot=snapshot or None, **extra)))
